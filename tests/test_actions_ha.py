"""An HA pair of daemons with one config acts once per incident (the peer at position 1 waits
its turn and finds that position 0 has acted), and still acts when its peer is down."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp

from monitor.daemon import Daemon
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve

TOKEN = "ha-ome-token"
RULES = """
groups:
  - name: ha
    rules:
      - alert: Listed
        kind: ome.stream
        expr: present and stream == "main"
        actions:
          - restart: {verify_timeout: 1s}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(tmp_path: Path, name: str, url: str, port: int, position: int, peer: int) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"listen: 127.0.0.1:{port}\nstate_dir: {tmp_path / name}\nrule_files: ['{rules}']\n"
        f"sources:\n  ome:\n    - {{name: origin, url: {url}, access_token: {TOKEN}, interval: 1s}}\n"
        f"actions:\n  ha: {{position: {position}, peers: ['http://127.0.0.1:{peer}'],"
        " peer_timeout: 1s}\n"
    )
    return path


async def attempts(base: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v1/actions") as resp:
        return (await resp.json())["data"]


async def until_attempted(base: str) -> list[dict]:
    # Two real daemons polling on their own schedule: no event crosses to the test, so the
    # test reads their API, a bounded number of times.
    for _ in range(150):
        rows = await attempts(base)
        if rows:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"{base}: no attempt")


async def test_an_ha_pair_acts_once_per_incident(tmp_path):
    sim = OmeSim(TOKEN)
    sim.add_stream("default/live/main")
    port_a, port_b = free_port(), free_port()
    async with serve(sim.app()) as url:
        a = Daemon(config(tmp_path, "a", url, port_a, position=0, peer=port_b))
        b = Daemon(config(tmp_path, "b", url, port_b, position=1, peer=port_a))
        await a.start()
        await b.start()
        try:
            [acted] = await until_attempted(a.url)
            [left] = await until_attempted(b.url)
        finally:
            await b.stop()
            await a.stop()
    deletes = [c for c in sim.calls if c.method == "DELETE"]
    assert len(deletes) == 1, "one restart for the pair"
    assert acted["executed"] and acted["fingerprint"] == left["fingerprint"]
    assert left["result"] == "skipped_peer" and f"127.0.0.1:{port_a}" in left["detail"]


async def test_the_second_of_a_pair_acts_when_the_first_is_down(tmp_path):
    sim = OmeSim(TOKEN)
    sim.add_stream("default/live/main")
    port_b, nobody = free_port(), free_port()
    async with serve(sim.app()) as url:
        b = Daemon(config(tmp_path, "b", url, port_b, position=1, peer=nobody))
        await b.start()
        try:
            [row] = await until_attempted(b.url)
        finally:
            await b.stop()
    assert row["executed"], "its peer did not answer: it acted after its turn"
    assert len([c for c in sim.calls if c.method == "DELETE"]) == 1
