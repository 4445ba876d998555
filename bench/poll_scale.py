"""Benchmark: one full OME poll of 10,000 streams, against the floor, and /metrics over them.

The OME simulator (1 vhost x 50 apps x 200 streams by default) runs in its own process on
loopback, so its CPU is not counted as ours. Printed:
- wall time and CPU seconds of one full poll by the daemon (median of --rounds);
- the floor: a bare aiohttp loop with the same concurrency fetching exactly the same URLs,
  reading the bodies and nothing more, and the ratio poll / floor;
- the time to serve /metrics over HTTP and its size; the daemon's RSS.

Run: python bench/poll_scale.py   (targets: ratio <= 1.5, /metrics <= 300 ms, RSS <= 200 MB)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

TOKEN = "bench-token"

SIM_PROCESS = """
import asyncio, sys
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve

async def main():
    sim = OmeSim.with_layout(sys.argv[1], vhosts=1, apps=int(sys.argv[2]), streams_per_app=int(sys.argv[3]),
                             connections={"llhls": 3, "webrtc": 1})
    async with serve(sim.app()) as url:
        print(url, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


SCRAPER_PROCESS = """
import gzip, sys, time, urllib.request
for _ in sys.stdin:
    started = time.perf_counter()
    request = urllib.request.Request(sys.argv[1], headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request) as response:
        body = response.read()
        if response.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
    print(time.perf_counter() - started, len(body), body.count(b"\\n"), flush=True)
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def floor_poll(url: str, concurrency: int) -> tuple[float, float, int]:
    """The same requests the OME source makes, in the same order of discovery, with no
    parsing beyond what is needed to discover the next level."""
    headers = {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()}
    connector = aiohttp.TCPConnector(limit=concurrency)
    requests = 0
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:

        async def fetch(method: str, path: str) -> bytes:
            nonlocal requests
            requests += 1
            async with session.request(method, path, json={} if method == "POST" else None) as resp:
                return await resp.read()

        async def pool(items, func):
            feed = iter(items)

            async def worker():
                for item in feed:
                    await func(item)

            await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))

        started, cpu = time.perf_counter(), time.process_time()
        vhosts = json.loads(await fetch("GET", "/v1/vhosts"))["response"]
        apps: list[tuple[str, str]] = []
        for vhost in vhosts:
            await fetch("GET", f"/v1/stats/current/vhosts/{vhost}")
            apps += [
                (vhost, a)
                for a in json.loads(await fetch("GET", f"/v1/vhosts/{vhost}/apps"))["response"]
            ]
        streams: list[tuple[str, str, str]] = []

        async def app_part(key):
            vhost, app = key
            await fetch("GET", f"/v1/stats/current/vhosts/{vhost}/apps/{app}")
            names = json.loads(await fetch("GET", f"/v1/vhosts/{vhost}/apps/{app}/streams"))[
                "response"
            ]
            await fetch("POST", f"/v1/vhosts/{vhost}/apps/{app}:pushes")
            await fetch("POST", f"/v1/vhosts/{vhost}/apps/{app}:records")
            streams.extend((vhost, app, s) for s in names)

        await pool(apps, app_part)

        async def stream_part(key):
            vhost, app, stream = key
            await fetch("GET", f"/v1/stats/current/vhosts/{vhost}/apps/{app}/streams/{stream}")
            await fetch("GET", f"/v1/vhosts/{vhost}/apps/{app}/streams/{stream}")

        await pool(streams, stream_part)
        return time.perf_counter() - started, time.process_time() - cpu, requests


async def run(args: argparse.Namespace, url: str) -> None:
    from monitor.daemon import Daemon

    with tempfile.TemporaryDirectory() as state:
        config = Path(state) / "bench.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nstate_dir: {state}\nrule_files: []\nsources:\n  ome:\n"
            f"    - {{name: bench, url: {url}, access_token: {TOKEN}, interval: 1h, timeout: 30s, "
            f"concurrency: {args.concurrency}, stream_info_every: {args.stream_info_every}}}\n"
        )
        daemon = Daemon(config)
        await daemon.start(schedule=False)
        # The scraper is another process, as Prometheus is: the 26 MB of text it decompresses
        # must not count as the daemon's memory.
        scraper = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SCRAPER_PROCESS,
            f"{daemon.url}/metrics",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert scraper.stdin is not None and scraper.stdout is not None

        async def scrape() -> tuple[float, int, int]:
            scraper.stdin.write(b"scrape\n")
            await scraper.stdin.drain()
            took, size, lines = (await scraper.stdout.readline()).split()
            return float(took), int(size), int(lines)

        try:
            polls, cpus, renders, scrapes = [], [], [], []
            for round_ in range(args.rounds + 1):
                started, cpu = time.perf_counter(), time.process_time()
                [snapshot] = await daemon.poll_all()
                wall, used = time.perf_counter() - started, time.process_time() - cpu
                assert snapshot.ok, snapshot.failure
                if round_ == 0:
                    await scrape()  # a scraper appears: from now on polls pre-render
                started = time.perf_counter()
                # The daemon renders each new snapshot in a worker thread after the poll; this
                # waits for that render (or does it, if none is running).
                await daemon.exporter.warm_soon()
                render = time.perf_counter() - started
                took, size, lines = await scrape()
                if round_:  # the first round opens the connections
                    polls.append(wall)
                    cpus.append(used)
                    renders.append(render)
                    scrapes.append(took)
            # The daemon's own footprint, before the floor loop below adds its garbage.
            rss = rss_mb()
            floors, floor_cpus = [], []
            for round_ in range(args.rounds + 1):
                wall, used, requests = await floor_poll(url, args.concurrency)
                if round_:
                    floors.append(wall)
                    floor_cpus.append(used)
            streams = sum(1 for e in snapshot.entities if e.kind == "ome.stream")
            poll, floor = statistics.median(polls), statistics.median(floors)
            print(
                f"streams={streams} requests/poll={requests} concurrency={args.concurrency} "
                f"rounds={args.rounds} stream_info_every={args.stream_info_every}"
            )
            print(f"poll:     wall {poll:.2f} s   cpu {statistics.median(cpus):.2f} s")
            print(f"floor:    wall {floor:.2f} s   cpu {statistics.median(floor_cpus):.2f} s")
            print(f"ratio poll/floor: {poll / floor:.2f}")
            print(
                f"/metrics: scrape {statistics.median(scrapes) * 1000:.0f} ms (gzip, by another process); "
                f"render after each poll {statistics.median(renders) * 1000:.0f} ms in a worker thread; "
                f"{size / 1e6:.1f} MB, {lines} lines"
            )
            print(f"RSS:      {rss:.0f} MB")
        finally:
            scraper.kill()
            await scraper.wait()
            await daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--streams-per-app", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--stream-info-every",
        type=int,
        default=1,
        help="the source's stream_info_every: 1 (default) fetches every stream's info on every "
        "poll, the same URLs as the floor; the daemon's own default is 10",
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sim = subprocess.Popen(
        [sys.executable, "-c", SIM_PROCESS, TOKEN, str(args.apps), str(args.streams_per_app)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        asyncio.run(run(args, sim.stdout.readline().strip()))
    finally:
        sim.terminate()
        sim.wait(timeout=10)


if __name__ == "__main__":
    main()
