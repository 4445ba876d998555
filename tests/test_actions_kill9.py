"""`kill -9` of the daemon in the middle of a restart: the attempt was saved as started before
its call, so the restarted daemon verifies it instead of calling again, and the budget and
cooldown it spent are remembered."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve

TOKEN = "ome-actions-kill9"
API = "kill9-api-token"
STREAM_PATH = "/v1/vhosts/default/apps/live/streams/main"
RULES = """
groups:
  - name: ome
    rules:
      - alert: OmeIngestStalled
        kind: ome.stream
        expr: age(last_recv) > 2
        keep_firing_for: 10m
        actions:
          - restart: {verify_timeout: 3s}
"""


def _config(tmp_path: Path, url: str) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    config = tmp_path / "streamwatch.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\nstate_dir: {tmp_path / 'state'}\nrule_files: ['{rules}']\n"
        f"api: {{token: {API}}}\n"
        f"sources:\n  ome:\n    - {{name: origin, url: {url}, access_token: {TOKEN},"
        " interval: 1s, timeout: 2s, pushes: false, records: false}\n"
        "actions: {guard: {timeout: 1m}}\n"
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


async def _logged(process: asyncio.subprocess.Process, needle: str, within: float = 30) -> str:
    assert process.stderr is not None

    async def read() -> str:
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, f"the daemon exited before logging {needle!r}"
            if needle in line:
                return line

    return await asyncio.wait_for(read(), within)


def _deletes(sim: OmeSim) -> int:
    return sum(1 for c in sim.calls if c.method == "DELETE")


async def test_kill9_mid_restart_then_restart_verifies_and_remembers_the_budget(tmp_path):
    sim = OmeSim(TOKEN)
    sim.add_stream("default/live/main")
    sim.stall("default/live/main")
    # OME takes its time over the delete: the daemon is killed while it waits
    sim.delay(seconds=60, path=STREAM_PATH, method="DELETE", count=None)
    async with serve(sim.app()) as url:
        config = _config(tmp_path, url)
        process, _ = await _daemon(config)
        try:
            line = await _logged(process, 'msg="action started"')
            assert "action=restart" in line
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        sim.clear_faults()
        assert _deletes(sim) == 0, "the delete never completed"

        process, base = await _daemon(config)
        try:
            line = await _logged(process, 'msg="interrupted action recovered"')
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/api/v1/actions") as resp:
                    [attempt] = (await resp.json())["data"]
                assert attempt["state"] == "finished" and attempt["executed"]
                assert "not repeated" in attempt["detail"]
                assert [c["call"] for c in attempt["calls"]] == ["verify"]
                # the budget spent before the kill still counts: a manual restart is refused
                labels = {"server": "origin", "vhost": "default", "app": "live", "stream": "main"}
                target = {"source": "ome/origin", "kind": "ome.stream", "labels": labels}
                body = {"action": "restart", "target": target}
                headers = {"Authorization": f"Bearer {API}"}
                async with http.post(f"{base}/api/v1/actions", json=body, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    outcome = (await resp.json())["data"]
                assert outcome["result"] == "skipped_cooldown"
                async with http.post(f"{base}/api/v1/actions", json=body) as resp:
                    assert resp.status == 401
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()
        assert _deletes(sim) == 0, "the interrupted restart was not called again"
