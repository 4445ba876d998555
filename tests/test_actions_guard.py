"""The guard's other stages and the runner's rules of order, on the OME simulator with a fake
clock: silenced alerts act on nothing, `after:` is dropped when the alert resolves, a marker
on resolve, backoff between attempts, output paths kept below the dumps root, the disk budget,
and the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from actions_harness import STREAM, TOKEN, Harness
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import FakeClock

from monitor.actions.api import routes
from monitor.labels import Matcher
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve
from monitor.web import VIEWS


@pytest.fixture
def sim(clock: FakeClock) -> OmeSim:
    sim = OmeSim(TOKEN, clock=clock)
    sim.add_stream("default/live/main")
    return sim


@pytest.fixture
async def url(sim: OmeSim) -> AsyncIterator[str]:
    async with serve(sim.app()) as url:
        yield url


def rules(actions: str, keep_firing_for: str = "0s") -> str:
    return f"""
groups:
  - name: ome
    rules:
      - alert: OmeIngestStalled
        kind: ome.stream
        expr: age(last_recv) > 10
        keep_firing_for: {keep_firing_for}
        actions: {actions}
"""


@pytest.fixture
async def make(tmp_path: Path, clock: FakeClock, url: str):
    made: list[Harness] = []

    async def build(rule_text: str, actions: dict | None = None) -> Harness:
        h = Harness(tmp_path, clock, url, rule_text, actions or {})
        await h.open()
        made.append(h)
        return h

    yield build
    for h in made:
        await h.close()


def on_disk(paths: list[str]) -> list[bool]:
    return [Path(p).exists() for p in paths]


def mutating(sim: OmeSim) -> list[str]:
    calls = [f"{c.method} {c.path.rsplit('/', 1)[-1]}" for c in sim.calls.mutating()]
    return [c for c in calls if not c.endswith((":pushes", ":records"))]


async def stall_and_fire(h: Harness, sim: OmeSim, clock: FakeClock) -> None:
    await h.poll()
    sim.stall("default/live/main")
    clock.advance(15)
    await h.poll()


async def test_a_silenced_alert_acts_on_nothing(make, sim: OmeSim, clock: FakeClock):
    h = await make(rules("[{restart: {}}]"))
    now = clock()
    h.engine.silencer.create(
        [Matcher.parse('stream="main"')], now, now + 3600, "ops", "maintenance", now
    )
    await stall_and_fire(h, sim, clock)
    assert mutating(sim) == []
    [attempt] = h.attempts()
    assert attempt["result"] == "skipped_silenced" and not attempt["executed"]


async def test_after_is_dropped_when_the_alert_resolves_and_a_marker_goes_on_resolve(
    make, sim: OmeSim, clock: FakeClock
):
    frames = "[{frameType: TXXX, info: streamwatch, data: resolved}]"
    h = await make(
        rules(
            f"[{{restart: {{after: 30s}}}}, {{id3_event: {{frames: {frames}, on_resolve: true}}}}]"
        )
    )
    await stall_and_fire(h, sim, clock)
    assert mutating(sim) == [], "the restart waits 30 s; the marker comes after it"
    sim.resume("default/live/main")
    clock.advance(5)
    await h.poll()  # resolved: the delayed restart is dropped; the marker goes on resolve
    clock.advance(60)
    await h.poll()
    assert mutating(sim) == ["POST main:sendEvent"]
    states = {j.action: j.state for j in h.runner.audit.jobs() if j.seq < 1000}
    assert states == {"restart": "dropped", "id3_event": "dropped"}
    [marker] = h.attempts()
    assert (marker["action"], marker["result"]) == ("id3_event", "ok")


async def test_backoff_doubles_between_attempts(make, sim: OmeSim, clock: FakeClock):
    sim.add_stream("default/live/other")
    guard = {"cooldown": "0s", "backoff": "1m", "backoff_max": "10m", "budget": 10}
    h = await make(rules("[]"), {"guard": guard})
    target_labels = {**STREAM}
    from actions_harness import OME

    from monitor.component import ActionRequest
    from monitor.model import Target

    target = Target(OME, "ome.stream", target_labels)
    results = []
    for _ in range(5):
        outcome = await h.runner.request(
            ActionRequest("id3_event", target, {"frames": [{"frameType": "TXXX", "data": "x"}]})
        )
        results.append(outcome["result"])
        clock.advance(61)
    # 1st at 0; 2nd at 61 (≥ 1 m); 3rd at 122 (< 2 m after 61): backed off; 4th at 183 (2 m)
    assert results == ["ok", "ok", "skipped_backoff", "ok", "skipped_backoff"]


async def test_dump_paths_stay_below_the_root_and_the_budget_deletes_the_oldest(
    make, sim: OmeSim, clock: FakeClock, tmp_path: Path
):
    from actions_harness import OME

    from monitor.component import ActionRequest
    from monitor.model import Target

    h = await make(
        rules("[]"),
        {"dumps": {"max_dumps": 2}, "guard": {"cooldown": "0s", "backoff": "0s", "budget": 100}},
    )
    target = Target(OME, "ome.stream", STREAM)
    outside = await h.runner.request(
        ActionRequest("hls_dump", target, {"output_path": "../../etc/evil", "duration": "10s"})
    )
    assert outside["result"] == "failed" and "not below the dumps root" in outside["detail"]
    mine = tmp_path / "dumps" / "not-ours"
    mine.mkdir(parents=True)
    for _ in range(3):
        outcome = await h.runner.request(ActionRequest("hls_dump", target, {"duration": "10s"}))
        assert outcome["result"] == "ok", outcome
        clock.advance(11)
        await h.runner.run_due()
    dumps = h.runner.audit.dumps()
    assert [d.state for d in dumps] == ["deleted", "stopped", "stopped"]
    assert on_disk([d.output_path for d in dumps]) == [False, True, True]
    assert on_disk([str(mine)]) == [True], "nothing the daemon did not make is deleted"
    assert [m for m in mutating(sim) if "stopHlsDump" in m] == ["POST main:stopHlsDump"] * 3


async def test_routes_list_attempts_and_trigger_behind_the_token(make, sim: OmeSim, clock):
    h = await make(rules("[]"))
    app = web.Application()
    app[VIEWS] = SimpleNamespace(api_token=lambda: "secret")  # type: ignore[assignment]
    app.add_routes(routes(h.runner, sources=None))  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        body = {
            "action": "id3_event",
            "target": {"source": "ome/origin", "kind": "ome.stream", "labels": STREAM},
            "params": {"frames": [{"frameType": "TXXX", "data": "manual"}]},
            "dry_run": True,
        }
        resp = await client.post("/api/v1/actions", json=body)
        assert resp.status == 401
        auth = {"Authorization": "Bearer secret"}
        resp = await client.post("/api/v1/actions", json=body, headers=auth)
        assert resp.status == 200
        assert (await resp.json())["data"]["result"] == "dry_run"
        resp = await client.post(
            "/api/v1/actions", json={**body, "action": "explode"}, headers=auth
        )
        assert resp.status == 400
        resp = await client.post(
            "/api/v1/actions", json={**body, "params": {"frames": []}}, headers=auth
        )
        assert resp.status == 400
        resp = await client.get("/api/v1/actions?limit=5")
        [attempt] = (await resp.json())["data"]
        assert (attempt["action"], attempt["result"], attempt["requestedBy"]) == (
            "id3_event",
            "dry_run",
            "api",
        )
        assert (await client.get("/api/v1/actions?limit=0")).status == 400
    assert mutating(sim) == []


async def test_push_and_record_restarts_keep_their_id_and_settings(make, sim: OmeSim, clock):
    from actions_harness import OME

    from monitor.model import Target

    sim.add_push("default/live", "p1", "main", "rtmp://127.0.0.1/app", stream_key="secret-key")
    sim.add_record("default/live", "r1", "main", file_path="/rec/${Stream}.ts")
    h = await make(rules("[]"))
    labels = {"server": "origin", "vhost": "default", "app": "live"}
    push = Target(OME, "ome.push", {**labels, "id": "p1"})
    record = Target(OME, "ome.record", {**labels, "id": "r1"})
    from monitor.sources.ome.actions import TASK_VERBS

    results = []
    for target in (push, record):
        verbs = TASK_VERBS[target.kind]
        params = {"_sleep": clock.sleep, "verify_timeout": 10.0}
        results.append(await verbs["restart"](h.ome, target.labels, params))
        results.append(await verbs["restart.verify"](h.ome, target.labels, params))
    assert all(r.ok for r in results), results
    calls = [(c.path.rsplit(":", 1)[-1], c.body) for c in sim.calls.mutating()]
    starts = [body for name, body in calls if name in ("startPush", "startRecord")]
    assert [name for name, _ in calls if name.startswith(("start", "stop"))] == [
        "stopPush",
        "startPush",
        "stopRecord",
        "startRecord",
    ]
    assert starts[0]["id"] == "p1" and starts[0]["streamKey"] == "secret-key"
    assert starts[0]["url"] == "rtmp://127.0.0.1/app" and starts[0]["stream"]["name"] == "main"
    assert starts[1]["id"] == "r1" and starts[1]["filePath"] == "/rec/${Stream}.ts"
    assert "secret-key" not in str(results), "a stream key is never in a detail"


async def test_a_marker_for_an_app_without_llhls_says_no_player_receives_it(
    make, sim: OmeSim, clock
):
    from actions_harness import OME

    from monitor.component import ActionRequest
    from monitor.model import Target

    sim.add_app("default/nollhls", publishers=["webrtc", "ovt"])
    sim.add_stream("default/nollhls/cam")
    h = await make(rules("[]"))
    frames = {"frames": [{"frameType": "TXXX", "data": "x"}]}
    labels = {"server": "origin", "vhost": "default", "app": "nollhls", "stream": "cam"}
    without = await h.runner.request(
        ActionRequest("id3_event", Target(OME, "ome.stream", labels), frames)
    )
    with_llhls = await h.runner.request(
        ActionRequest("id3_event", Target(OME, "ome.stream", STREAM), frames)
    )
    assert without["result"] == "ok" and "no LLHLS publisher" in without["detail"]
    assert with_llhls["result"] == "ok" and "LLHLS" not in with_llhls["detail"]


async def test_a_pull_stream_is_created_again_with_its_url(make, sim: OmeSim, clock):
    from actions_harness import OME

    from monitor.component import ActionRequest
    from monitor.model import Target

    sim.add_stream("default/live/pulled", source_type="RtspPull", source_url="rtsp://10.0.0.9/cam")
    sim.stall("default/live/pulled")
    h = await make(rules("[]"))
    labels = {"server": "origin", "vhost": "default", "app": "live", "stream": "pulled"}
    params = {"properties": {"persistent": False}, "verify_timeout": "10s"}
    outcome = await h.runner.request(
        ActionRequest("restart", Target(OME, "ome.stream", labels), params)
    )
    assert outcome["result"] == "ok", outcome
    assert "re-created" in outcome["detail"] and "input moving" in outcome["detail"]
    calls = [(c.method, c.path, c.body) for c in sim.calls.mutating()]
    assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in calls] == [
        ("DELETE", "pulled"),
        ("POST", "streams"),
    ]
    assert calls[1][2] == {
        "name": "pulled",
        "urls": ["rtsp://10.0.0.9/cam"],
        "properties": {"persistent": False},
    }


async def test_an_action_the_kind_does_not_offer_fails_without_spending_budget(make, clock):
    from actions_harness import OME

    from monitor.component import ActionRequest
    from monitor.model import Target

    h = await make(rules("[]"))
    frames = {"frames": [{"frameType": "TXXX", "data": "x"}]}
    app = Target(OME, "ome.app", {"server": "origin", "vhost": "default", "app": "live"})
    outcome = await h.runner.request(ActionRequest("id3_event", app, frames))
    assert outcome["result"] == "failed" and "ome.app has no id3_event" in outcome["detail"]
    [attempt] = h.attempts()
    assert not attempt["executed"]
