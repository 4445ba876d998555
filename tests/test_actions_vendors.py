"""Restarts of SmartSTREAM live events and NAVER channels through the guard, against their
simulators: reset before start, FORCE_* refused, every attempt audited."""

from __future__ import annotations

from pathlib import Path

from conftest import FakeClock
from prometheus_client import CollectorRegistry

from monitor.actions.config import ActionsConfig
from monitor.actions.runner import ActionRunner
from monitor.component import ActionRequest
from monitor.model import Target
from monitor.sim.naver import NaverSim
from monitor.sim.serve import serve
from monitor.sim.smartstream import SmartstreamSim
from monitor.sources.base import Source, SourceContext, SourceMetrics
from monitor.sources.naver.config import NaverSourceConfig
from monitor.sources.naver.source import NaverSource
from monitor.sources.smartstream.config import SmartstreamSourceConfig
from monitor.sources.smartstream.source import SmartstreamSource
from monitor.store import Store


def runner(tmp_path: Path, clock: FakeClock, source: Source, registry: CollectorRegistry):
    return ActionRunner(
        Store(tmp_path / "state.sqlite3"),
        ActionsConfig(),
        registry=registry,
        source_of=lambda target: source if target.source == source.ref else None,
        dumps_root=tmp_path / "dumps",
        clock=clock,
        sleep=clock.sleep,
    )


async def test_smartstream_restart_resets_before_start_and_is_verified(
    tmp_path: Path, clock: FakeClock
):
    sim = SmartstreamSim(
        merchant_id="m1", api_key="k", mail_address="a@b.c", password="p",
        static_tokens=("t",), clock=clock,
    )  # fmt: skip
    sim.add_live_event(id="ev", encode_status="encode_status_error")
    sim.set_start_delay(12)
    registry = CollectorRegistry()
    async with serve(sim.app()) as url:
        config = SmartstreamSourceConfig(
            name="main", url=url, merchant_id="m1", api_key="k", token="t"
        )
        ctx = SourceContext(metrics=SourceMetrics(registry), clock=clock)
        source = SmartstreamSource(config, ctx, sleep=clock.sleep)
        await source.open()
        try:
            r = runner(tmp_path, clock, source, registry)
            target = Target(
                source.ref, "smartstream.live_event", {"merchant": "m1", "live_event": "ev"}
            )
            outcome = await r.request(ActionRequest("restart", target, requested_by="test"))
            again = await r.request(ActionRequest("restart", target, requested_by="test"))
        finally:
            await source.close()
    assert outcome["result"] == "ok", outcome
    assert "stop → reset → start → wait" in outcome["detail"]
    assert again["result"] == "skipped_cooldown"
    steps = [c.path.rsplit("/", 1)[-1] for c in sim.calls.mutating()]
    assert steps == ["stop", "reset", "start"], "reset between stop and start, and only once"
    total = "streamwatch_actions_total"
    labels = {"action": "restart", "kind": "smartstream.live_event"}
    assert registry.get_sample_value(total, {**labels, "result": "ok"}) == 1
    assert registry.get_sample_value(total, {**labels, "result": "skipped_cooldown"}) == 1
    [_, first] = r.audit.attempts()
    assert [c["call"] for c in first["calls"]] == ["restart", "verify"]


async def test_naver_restart_refuses_a_force_blocked_channel(tmp_path: Path, clock: FakeClock):
    sim = NaverSim("AK", "SK", clock)
    sim.add_channel("ls-blocked", "blocked", "FORCE_BLOCK")
    sim.add_channel("ls-ok", "fine", "PUBLISHING")
    registry = CollectorRegistry()
    async with serve(sim.app()) as url:
        config = NaverSourceConfig(name="kr", url=url, access_key="AK", secret_key="SK")
        source = NaverSource(config, SourceContext(metrics=SourceMetrics(registry), clock=clock))
        await source.open()
        try:
            r = runner(tmp_path, clock, source, registry)
            blocked = Target(source.ref, "naver.channel", {"channel": "ls-blocked"})
            refused = await r.request(ActionRequest("restart", blocked))
            fine = Target(source.ref, "naver.channel", {"channel": "ls-ok"})
            done = await r.request(ActionRequest("restart", fine))
        finally:
            await source.close()
    assert refused["result"] == "failed"
    assert "FORCE_BLOCK" in refused["detail"] and "refused" in refused["detail"]
    assert done["result"] == "ok", done
    assert [(c.method, c.path) for c in sim.calls.mutating()] == [
        ("PUT", "/api/v2/channels/ls-ok/off"),
        ("PUT", "/api/v2/channels/ls-ok/on"),
    ], "nothing was sent for the blocked channel"
