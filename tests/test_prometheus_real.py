"""A real Prometheus scrapes the daemon, and promtool lints what we expose.

Both come from Debian's `prometheus` package, which `.ci/run` installs: these tests fail rather
than skip when it is missing, because then CI is not testing what users run.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from monitor.daemon import Daemon
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve

TOKEN = "prometheus-test-token"
# The contract keeps OME's unit in these names (DESIGN.md, metrics contract); promtool's lint
# prefers bytes, so these and only these lines are expected from it.
BITS_NAMES = {
    "ome_stream_throughput_in_bits_per_second",
    "ome_stream_throughput_out_bits_per_second",
    "ome_app_throughput_in_bits_per_second",
    "ome_app_throughput_out_bits_per_second",
    "ome_vhost_throughput_in_bits_per_second",
    "ome_vhost_throughput_out_bits_per_second",
    "ome_stream_track_bitrate_bits_per_second",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: apt-get install prometheus (.ci/run does)"
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    sim = OmeSim(TOKEN, clock=time.time)
    sim.add_stream("default/live/main", bitrate=2_000_000, connections={"llhls": 7})
    sim.add_push("default/live", "cdn", "main", "rtmp://127.0.0.1/live")
    async with serve(sim.app()) as url:
        config = tmp_path / "streamwatch.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nstate_dir: {tmp_path / 'state'}\nrule_files: []\nsources:\n  ome:\n"
            f"    - {{name: origin, url: {url}, access_token: {TOKEN}, interval: 1s, "
            "expected_streams: [default/live/main, default/live/absent]}\n"
        )
        running = Daemon(config)
        first = asyncio.Event()
        running.snapshot_listeners.append(lambda snapshot: first.set())
        await running.start()
        await asyncio.wait_for(first.wait(), 10)
        try:
            yield running
        finally:
            await running.stop()


async def test_promtool_finds_nothing_but_the_mandated_bit_units(daemon, tmp_path):
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as resp:
        text = await resp.text()
    process = await asyncio.create_subprocess_exec(
        tool("promtool"), "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(text.encode()), 30)
    problems = [line for line in output.decode().splitlines() if line.strip()]
    unexpected = [p for p in problems if p.split()[0] not in BITS_NAMES]
    assert unexpected == [], unexpected
    assert problems, "promtool said nothing at all: was the output empty?"


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[dict]:
    async with http.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


async def test_a_real_prometheus_scrapes_us(daemon, tmp_path):
    port = free_port()
    target = daemon.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: streamwatch\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    process = await asyncio.create_subprocess_exec(
        tool("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=DEVNULL,
        stderr=DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            # Prometheus is another process: its first scrape can only be polled for.
            deadline = time.monotonic() + 60
            while True:
                try:
                    up = await query(http, base, 'up{job="streamwatch"}')
                except aiohttp.ClientError:
                    up = []
                if up and up[0]["value"][1] == "1":
                    break
                assert time.monotonic() < deadline, (
                    "Prometheus never scraped streamwatch successfully"
                )
                await asyncio.sleep(0.25)
            [present] = await query(http, base, 'ome_stream_present{stream="absent"}')
            assert present["value"][1] == "0"
            [viewers] = await query(
                http, base, 'ome_stream_connections{stream="main",protocol="llhls"}'
            )
            assert viewers["value"][1] == "7"
            [source] = await query(http, base, "streamwatch_source_up")
            assert source["metric"]["kind"] == "ome" and source["value"][1] == "1"
            bytes_in = await query(http, base, 'ome_stream_bytes_in_total{stream="main"}')
            assert float(bytes_in[0]["value"][1]) > 0
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
