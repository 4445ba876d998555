"""The action runner against the OME simulator: a stalled stream's remediation in order, the
budget and the exhausted alert, dry-run, and dumps stopped on time across a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from actions_harness import STREAM, TOKEN, Harness
from conftest import FakeClock

from monitor.alerting.transitions import TransitionKind
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve

REMEDIATE = """
groups:
  - name: ome
    rules:
      - alert: OmeIngestStalled
        kind: ome.stream
        expr: age(last_recv) > 10
        keep_firing_for: 2m
        actions:
          - id3_event: {frames: [{frameType: TXXX, info: streamwatch, data: "{{ alertname }}"}]}
          - hls_dump: {duration: 60s}
          - restart: {after: 30s, verify_timeout: 20s}
"""


@pytest.fixture
def sim(clock: FakeClock) -> OmeSim:
    return OmeSim(TOKEN, clock=clock)


@pytest.fixture
async def url(sim: OmeSim) -> AsyncIterator[str]:
    async with serve(sim.app()) as url:
        yield url


async def harness(tmp_path: Path, clock: FakeClock, url: str, rules: str, actions=None) -> Harness:
    h = Harness(tmp_path, clock, url, rules, actions or {})
    await h.open()
    return h


def mutating(sim: OmeSim) -> list[str]:
    calls = [f"{c.method} {c.path.rsplit('/', 1)[-1]}" for c in sim.calls.mutating()]
    return [c for c in calls if not c.endswith((":pushes", ":records"))]  # the polls' reads


async def test_a_stalled_stream_gets_marker_dump_restart_in_order(
    tmp_path: Path, clock: FakeClock, sim: OmeSim, url: str
):
    sim.add_stream("default/live/main", reconnect_after=3)
    h = await harness(tmp_path, clock, url, REMEDIATE)
    try:
        await h.poll()
        sim.stall("default/live/main")
        clock.advance(15)
        await h.poll()  # fires: marker and dump at once, the restart 30 s later
        assert mutating(sim) == ["POST main:sendEvent", "POST main:startHlsDump"]
        clock.advance(29)
        await h.poll()
        assert len(mutating(sim)) == 2, "the restart waits for its `after`"
        clock.advance(1)
        await h.poll()
        assert mutating(sim) == ["POST main:sendEvent", "POST main:startHlsDump", "DELETE main"]
        results = [(a["action"], a["result"]) for a in h.attempts()]
        assert results == [("id3_event", "ok"), ("hls_dump", "ok"), ("restart", "ok")]
        restart = h.attempts(action="restart")[0]
        assert [c["call"] for c in restart["calls"]] == ["restart", "verify"]
        assert "input moving" in restart["calls"][1]["detail"]
        dump = h.attempts(action="hls_dump")[0]
        assert dump["params"]["duration"] == 60.0
        # the dump is stopped after its 60 s (the stream it dumped was restarted meanwhile)
        clock.advance(60)
        await h.poll()
        [row] = h.runner.audit.dumps()
        assert row.state in ("stopped", "ended") and row.stopped_at is not None
        assert str(tmp_path / "dumps") in row.output_path
    finally:
        await h.close()


NEVER_RECOVERS = """
groups:
  - name: ome
    rules:
      - alert: OmeIngestStalled
        kind: ome.stream
        expr: age(last_recv) > 10
        keep_firing_for: 10m
        actions:
          - restart: {budget: 2, cooldown: 0s, backoff: 10s, verify_timeout: 5s}
"""


async def test_a_stream_that_never_recovers_stops_at_the_budget_and_the_alert_fires_once(
    tmp_path: Path, clock: FakeClock, sim: OmeSim, url: str
):
    # the encoder reconnects after each restart, but sends nothing
    sim.add_stream("default/live/main", reconnect_after=1, stalled=True)
    h = await harness(tmp_path, clock, url, NEVER_RECOVERS)
    try:
        clock.advance(15)
        for _ in range(12):
            await h.poll()
            clock.advance(15)
        restarts = [a["result"] for a in h.attempts(action="restart")]
        executed = [r for r in restarts if r in ("ok", "failed", "timeout")]
        assert executed == ["failed", "failed"], restarts
        assert "skipped_budget" in restarts
        assert [m for m in mutating(sim) if m.startswith("DELETE")] == ["DELETE main"] * 2
        transitions = h.engine_transitions()
        exhausted = [
            t
            for t in transitions
            if t.alertname == "StreamwatchRemediationExhausted" and t.kind == TransitionKind.FIRING
        ]
        assert len(exhausted) == 1
        labels = exhausted[0].labels
        assert (labels["action"], labels["target_kind"], labels["stream"]) == (
            "restart",
            "ome.stream",
            "main",
        )
        assert labels["source"] == "ome/origin"
        # an hour on, the window has room again: the alert resolves and restarts may resume
        clock.advance(3600)
        h.runner.release_budgets()
        resolved = [
            t
            for t in h.engine_transitions()
            if t.alertname == "StreamwatchRemediationExhausted"
            and t.kind == TransitionKind.RESOLVED
        ]
        assert len(resolved) == 1
    finally:
        await h.close()


async def test_dry_run_touches_no_upstream_and_is_audited(
    tmp_path: Path, clock: FakeClock, sim: OmeSim, url: str
):
    sim.add_stream("default/live/main")
    h = await harness(tmp_path, clock, url, REMEDIATE, {"dry_run": True})
    try:
        await h.poll()
        sim.stall("default/live/main")
        clock.advance(15)
        await h.poll()
        clock.advance(30)
        await h.poll()
        assert mutating(sim) == []
        results = [(a["action"], a["result"], a["executed"]) for a in h.attempts()]
        assert results == [
            ("id3_event", "dry_run", False),
            ("hls_dump", "dry_run", False),
            ("restart", "dry_run", False),
        ]
        assert "would restart ome.stream" in h.attempts(action="restart")[0]["detail"]
    finally:
        await h.close()


DUMP_ONLY = """
groups:
  - name: ome
    rules:
      - alert: OmeIngestStalled
        kind: ome.stream
        expr: age(last_recv) > 10
        keep_firing_for: 10m
        actions:
          - hls_dump: {duration: 60s}
"""


async def test_a_daemon_restarted_mid_dump_stops_the_dump_on_time(
    tmp_path: Path, clock: FakeClock, sim: OmeSim, url: str
):
    sim.add_stream("default/live/main")
    h = await harness(tmp_path, clock, url, DUMP_ONLY)
    try:
        await h.poll()
        sim.stall("default/live/main")
        clock.advance(15)
        await h.poll()
        [dump] = h.runner.audit.dumps()
        assert dump.state == "running"
        # the daemon stops (its runner is gone) and a new one starts over the same state
        h.runner = h.new_runner()
        clock.advance(59)
        await h.poll()
        assert not any("stopHlsDump" in m for m in mutating(sim))
        clock.advance(1)
        await h.poll()
        assert mutating(sim)[-1] == "POST main:stopHlsDump"
        [dump] = h.runner.audit.dumps()
        assert (
            dump.state == "stopped"
            and "Completed" in (h.runner.audit.store.query("SELECT detail FROM actions_dump")[0][0])
        )
    finally:
        await h.close()


async def test_an_attempt_that_does_not_answer_in_time_is_a_timeout(
    tmp_path: Path, clock: FakeClock, sim: OmeSim, url: str
):
    from actions_harness import OME

    from monitor.component import ActionRequest
    from monitor.model import Target

    sim.add_stream("default/live/main")
    sim.delay(seconds=30, path="/v1/vhosts/default/apps/live/streams/main", method="DELETE")
    h = await harness(tmp_path, clock, url, "groups: []\n", {"guard": {"timeout": "1s"}})
    try:
        target = Target(OME, "ome.stream", STREAM)
        outcome = await h.runner.request(ActionRequest("restart", target))
        assert outcome["result"] == "timeout"
        [attempt] = h.attempts()
        assert attempt["executed"] and attempt["state"] == "finished"
        total = h.runner.metrics.total.labels("restart", "ome.stream", "timeout")
        assert total._value.get() == 1
    finally:
        sim.clear_faults()
        await h.close()


RESET = """
groups:
  - name: ome
    rules:
      - alert: OmeIngestStalled
        kind: ome.stream
        expr: age(last_recv) > 10
        actions:
          - restart: {cooldown: 0s, backoff: 30m, reset_after: 10m, verify_timeout: 5s}
"""


@pytest.mark.parametrize(("healthy_for", "second"), [(600, "ok"), (300, "skipped_backoff")])
async def test_backoff_resets_after_the_target_stayed_healthy_for_reset_after(
    tmp_path: Path, clock: FakeClock, sim: OmeSim, url: str, healthy_for: int, second: str
):
    sim.add_stream("default/live/main", reconnect_after=1)
    h = await harness(tmp_path, clock, url, RESET)
    try:
        for _ in range(2):
            await h.poll()
            sim.stall("default/live/main")
            clock.advance(15)
            await h.poll()  # fires and restarts; the encoder comes back
            clock.advance(2)
            await h.poll()  # resolved: healthy from now
            clock.advance(healthy_for)
        results = [a["result"] for a in h.attempts(action="restart")]
        assert results == ["ok", second]
    finally:
        await h.close()
