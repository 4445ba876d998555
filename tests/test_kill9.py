"""`kill -9` at any point: consumers of the outbox lose nothing and, deduplicating by the
transition id as receivers are told to, repeat nothing; a restarted daemon keeps its firing
alerts with their targets and announces nothing twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import textwrap
from pathlib import Path

import aiohttp
from conftest import saved_transitions

from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve
from monitor.store import Store

# A child process that appends transitions to the outbox and, at the same time, drains them
# into a file through a consumer that writes the id, fsyncs, and only then lets the runner
# acknowledge. Like a webhook receiver that keeps delivery ids, it drops an id it already has.
CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from prometheus_client import CollectorRegistry
    from monitor.alerting.transitions import AlertState, Transition, TransitionKind
    from monitor.model import SourceRef, Target
    from monitor.outbox import Outbox
    from monitor.store import Store

    state, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]

    class FileConsumer:
        name = "file"

        def __init__(self):
            text = open(out).read() if os.path.exists(out) else ""
            text = text[: text.rfind("\\n") + 1]  # a line cut by the kill is not a delivery
            open(out, "w").write(text)
            self.seen = {int(line) for line in text.split()}

        async def handle(self, transitions):
            with open(out, "a") as f:
                for t in transitions:
                    if t.id not in self.seen:
                        f.write(f"{t.id}\\n")
                        self.seen.add(t.id)
                f.flush()
                os.fsync(f.fileno())
            return [t.id for t in transitions]

    def transition(n):
        return Transition(
            TransitionKind.FIRING, "g/r", "R", f"fp{n}", AlertState.PENDING, AlertState.FIRING,
            float(n), {"alertname": "R"}, {}, Target(SourceRef("ome", "o"), "ome.stream", {}),
            float(n),
        )

    async def main():
        store = Store(state)
        store.register_consumer("file", 0)
        outbox = Outbox(store, [FileConsumer()], CollectorRegistry())
        async with outbox.running():
            print("ready", flush=True)
            n = 0
            while mode == "produce":
                rows = [(t.at, t.kind.value, t.rule, t.fingerprint, t.to_json())
                        for t in map(transition, range(n, n + 7))]
                store.save_alerts([], [], rows)
                outbox.wake()
                n += 7
                await asyncio.sleep(0.002)
            while store.outbox_pending("file"):
                outbox.wake()
                await asyncio.sleep(0.01)
        store.close()

    asyncio.run(main())
    """
)


async def _child(state: Path, out: Path, mode: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(state), str(out), mode, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 20)
    assert line == b"ready\n"
    return process


async def test_consumer_killed_at_random_points_loses_and_repeats_nothing(tmp_path):
    state, out = tmp_path / "state.sqlite3", tmp_path / "delivered"
    rng = random.Random(7)
    for _ in range(6):
        process = await _child(state, out, "produce")
        try:
            await asyncio.sleep(rng.uniform(0.05, 0.4))  # kill at an arbitrary moment
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        assert process.returncode == -signal.SIGKILL
    process = await _child(state, out, "drain")
    assert await asyncio.wait_for(process.wait(), 30) == 0

    store = Store(state)
    try:
        saved = [t.id for t in saved_transitions(store)]
        assert store.outbox_pending("file") == []
    finally:
        store.close()
    delivered = [int(line) for line in out.read_text().split()]
    assert len(saved) > 50, "the kills came while work was flowing"
    assert sorted(delivered) == saved, "every transition delivered exactly once"


OME_TOKEN = "ome-kill9-token"


async def test_daemon_killed_with_a_firing_alert_keeps_its_target(tmp_path):
    sim = OmeSim.with_layout(OME_TOKEN, vhosts=1, apps=1, streams_per_app=1)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - {alert: Listed, kind: ome.stream, expr: present, labels: {severity: info}}\n"
    )
    async with serve(sim.app()) as url:
        config = _write_config(tmp_path, url, rules)
        for round_ in range(2):
            process, base = await _daemon(config)
            try:
                if round_ == 0:
                    await _logged(process, "transition=firing")
                # After the restart the alert is restored before the daemon listens.
                alerts = await _alerts(base)
            finally:
                process.send_signal(signal.SIGKILL)
                await process.wait()
            [alert] = alerts
            assert alert["target"] == {
                "source": "ome/origin",
                "kind": "ome.stream",
                "labels": {
                    "server": "origin",
                    "vhost": "default",
                    "app": "app0",
                    "stream": "stream0",
                },
            }, f"round {round_}"
    store = Store(tmp_path / "state" / "streamwatch.sqlite3")
    try:
        firing = [t for t in saved_transitions(store) if t.kind == "firing"]
    finally:
        store.close()
    assert len(firing) == 1, "the restarted daemon did not announce the firing alert again"
    assert firing[0].target.labels["stream"] == "stream0"


def _write_config(tmp_path: Path, url: str, rules: Path) -> Path:
    config = tmp_path / "streamwatch.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\nstate_dir: {tmp_path / 'state'}\nrule_files: ['{rules}']\n"
        f"sources:\n  ome:\n    - {{name: origin, url: {url}, access_token: {OME_TOKEN},"
        " interval: 1s, timeout: 2s}\n"
    )
    return config


async def _daemon(config: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "run",
        "-c",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    line = await _logged(process, 'msg="streamwatch started"')
    return process, line.split("listen=")[1].split()[0]


async def _logged(process: asyncio.subprocess.Process, needle: str, within: float = 20) -> str:
    """The first log line of the daemon that holds `needle`."""
    assert process.stderr is not None

    async def read() -> str:
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, f"the daemon exited before logging {needle!r}"
            if needle in line:
                return line

    return await asyncio.wait_for(read(), within)


async def _alerts(base: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v1/alerts") as resp:
        return (await resp.json())["data"]


async def test_full_disk_makes_the_daemon_not_ready_and_counts_until_space_returns(tmp_path):
    from monitor.daemon import Daemon

    sim = OmeSim.with_layout(OME_TOKEN, vhosts=1, apps=1, streams_per_app=1)
    rules = tmp_path / "rules.yaml"
    # A large annotation: the alert's rows need new pages, which a full database cannot give.
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: Listed\n        kind: ome.stream\n"
        "        expr: present\n        annotations: {summary: '{{ \"x\" * 9000 }}'}\n"
    )
    async with serve(sim.app()) as url:
        config = _write_config(tmp_path, url, rules)
        daemon = Daemon(config)
        await daemon.start(schedule=False)
        try:
            assert daemon.store is not None and daemon.engine is not None
            daemon.store.limit_size(daemon.store.size_bytes())
            await daemon.poll_all()
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{daemon.url}/readyz") as resp:
                    assert resp.status == 503
                    assert "state writes are failing" in await resp.text()
                async with http.get(f"{daemon.url}/api/v1/alerts") as resp:
                    [alert] = (await resp.json())["data"]
                    assert alert["state"] == "firing"
                errors = "streamwatch_state_write_errors_total"
                assert daemon.registry.get_sample_value(errors) == 1
                daemon.housekeeping()  # the periodic retry, still full
                assert daemon.registry.get_sample_value(errors) == 2
                daemon.store.limit_size(None)
                daemon.housekeeping()
                async with http.get(f"{daemon.url}/readyz") as resp:
                    assert resp.status == 200
                async with http.get(f"{daemon.url}/api/v1/transitions") as resp:
                    saved = (await resp.json())["data"]
            assert [(t["kind"], t["alertname"]) for t in saved] == [("firing", "Listed")]
            assert saved[0]["target"]["labels"]["stream"] == "stream0"
        finally:
            await daemon.stop()
