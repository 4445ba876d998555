"""Benchmark: how fast streamwatch reacts to a fault, stage by stage, on the real pieces.

Each run starts the demo's simulators (`monitor.demo.simulators()`, no fault script), a local
webhook receiver (aiohttp on 127.0.0.1, port 0) and a `monitor.daemon.Daemon` with real
scheduling, polling only the OME simulator every 1 s, with one rule (ingest stalled:
`present and age(last_recv) > 2`, `for: 0s`, actions `[id3_event, restart]`) and one webhook
(`group_wait: 0s`). Once the daemon has polled the healthy stream twice, the OME simulator's
`stall(...)` freezes `default/live/second`; that instant is t0. Stages, seconds after t0:

  poll     the first snapshot (a `Daemon.snapshot_listeners` callback, wall clock) in which the
           stream's `last_recv` is not after t0: the first poll that shows the stall;
  fire     the `at` of the stream's firing transition (the engine's clock at the evaluation
           that fired it), as saved in the outbox (`GET /api/v1/transitions`);
  webhook  the receiver got the webhook (wall clock when the POST arrived);
  action   the first action call reaching the OME simulator (`sim.calls`, its own clock):
           `:sendEvent` (id3_event, the first action in the rule) or the stream's DELETE.
The rule needs age(last_recv) > 2, so `fire` includes that 2 s by design; `poll` is bounded by
the 1 s interval. Everything runs on loopback and is stopped after each run; every wait is
bounded (a stage not reached within 30 s fails the run).

Run: python bench/reaction.py [--runs 3]. Prints each run and the median per stage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from monitor.daemon import Daemon
from monitor.demo import simulators
from monitor.model import Snapshot

STREAM = "default/live/second"
LABELS = {"vhost": "default", "app": "live", "stream": "second"}
STAGE_TIMEOUT = 30.0
API_TOKEN = "bench-reaction-token"

RULES = """
groups:
  - name: bench
    rules:
      - alert: BenchIngestStalled
        kind: ome.stream
        expr: present and age(last_recv) > 2
        for: 0s
        labels: {severity: critical}
        annotations: {summary: "no input on {{ app }}/{{ stream }}"}
        actions:
          - id3_event: {frames: [{frameType: TXXX, info: streamwatch, data: "{{ alertname }}"}]}
          - restart: {}
"""


def config_yaml(tmp: Path, ome_url: str, ome_token: str, hook_url: str) -> str:
    return "\n".join(
        [
            "listen: 127.0.0.1:0",
            f"state_dir: {json.dumps(str(tmp / 'state'))}",
            f"rule_files: [{json.dumps(str(tmp / 'rules.yaml'))}]",
            f"api: {{token: {API_TOKEN}}}",
            "sources:",
            "  ome:",
            f"    - {{name: bench, url: {json.dumps(ome_url)}, access_token: "
            f"{json.dumps(ome_token.replace('$', '$$'))}, interval: 1s, timeout: 2s}}",
            "notify:",
            "  webhooks:",
            f"    - {{name: bench, url: {json.dumps(hook_url)}, group_wait: 0s, group_interval: 1s}}",
            "",
        ]
    )


def _is_stream(labels: object) -> bool:
    return isinstance(labels, dict) and all(labels.get(k) == v for k, v in LABELS.items())


async def _until(check, what: str) -> None:
    deadline = time.monotonic() + STAGE_TIMEOUT
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {STAGE_TIMEOUT:.0f} s")
        await asyncio.sleep(0.01)


async def one_run() -> dict[str, float]:
    hooks: list[float] = []
    snapshots: list[tuple[float, float | None]] = []  # (wall time, the stream's last_recv)

    async def hook(request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.json()
        if any(
            a.get("status") == "firing" and _is_stream(a.get("labels"))
            for a in body.get("alerts", [])
        ):
            hooks.append(arrived)
        return web.Response(status=200)

    def on_snapshot(snapshot: Snapshot) -> None:
        now = time.time()
        for entity in snapshot.entities:
            if entity.kind == "ome.stream" and _is_stream(dict(entity.labels)):
                last = entity.fields.get("last_recv")
                snapshots.append((now, last if isinstance(last, int | float) else None))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with tempfile.TemporaryDirectory(prefix="streamwatch-reaction-") as name:
            tmp = Path(name)
            async with simulators(faults=False) as sims:
                (tmp / "rules.yaml").write_text(RULES)
                path = tmp / "streamwatch.yaml"
                path.write_text(
                    config_yaml(tmp, sims.ome_url, sims.ome_token, f"http://127.0.0.1:{port}/hook")
                )
                daemon = Daemon(path, drain_seconds=1.0)
                daemon.snapshot_listeners.append(on_snapshot)
                await daemon.start()
                try:
                    await _until(lambda: len(snapshots) >= 2, "two healthy polls")
                    t0 = time.time()
                    sims.ome.stall(STREAM)
                    await _until(
                        lambda: any(w > t0 and (r is not None and r <= t0) for w, r in snapshots),
                        "the poll that sees the stall",
                    )
                    await _until(lambda: bool(hooks), "the webhook")
                    calls = sims.ome.calls

                    def first_action() -> float | None:
                        for call in list(calls):
                            if call.time < t0:
                                continue
                            if call.path.endswith(":sendEvent") or (
                                call.method == "DELETE" and call.path.endswith("/second")
                            ):
                                return call.time
                        return None

                    await _until(lambda: first_action() is not None, "the first action call")
                    fired = await _fired_at(daemon.url, t0)
                finally:
                    await daemon.stop()
    finally:
        await runner.cleanup()
    poll = next(w for w, r in snapshots if w > t0 and r is not None and r <= t0)
    action = first_action()
    assert action is not None
    return {
        "poll": poll - t0,
        "fire": fired - t0,
        "webhook": hooks[0] - t0,
        "action": action - t0,
    }


async def _fired_at(base: str | None, t0: float) -> float:
    assert base is not None
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{base}/api/v1/transitions", headers=headers) as response,
    ):
        response.raise_for_status()
        payload = await response.json()
    data = payload.get("data", payload)
    items = data.get("transitions", data) if isinstance(data, dict) else data
    for item in items:
        body = item.get("transition", item) if isinstance(item, dict) else item
        if isinstance(body, str):
            body = json.loads(body)
        if body.get("kind") != "firing" or not body.get("at"):
            continue
        at = datetime.fromisoformat(body["at"].replace("Z", "+00:00")).timestamp()
        target = body.get("target") or {}
        # `at` has millisecond precision: allow for the rounding
        if at >= t0 - 0.001 and (
            _is_stream(body.get("labels")) or _is_stream(target.get("labels"))
        ):
            return at
    raise RuntimeError(f"no firing transition in /api/v1/transitions: {str(payload)[:300]}")


async def main_async(runs: int) -> None:
    results: list[dict[str, float]] = []
    for index in range(runs):
        result = await one_run()
        results.append(result)
        print(
            f"run {index + 1}: "
            + "  ".join(f"{stage} {seconds * 1000:7.0f} ms" for stage, seconds in result.items()),
            flush=True,
        )
    print(f"median over {runs} run(s), seconds after the fault was injected:")
    for stage, what in (
        ("poll", "poll that sees it"),
        ("fire", "evaluation that fires"),
        ("webhook", "webhook received"),
        ("action", "first action call at OME"),
    ):
        median = statistics.median(r[stage] for r in results)
        print(f"  {what:<28} {median:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(max(1, args.runs)))


if __name__ == "__main__":
    main()
