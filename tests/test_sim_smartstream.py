"""The SmartSTREAM simulator over real loopback HTTP, checked against the reference documents."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import aiohttp
import pytest
from conftest import FakeClock

from monitor.sim.serve import serve
from monitor.sim.smartstream import (
    ENCODE_STATUS_ERROR,
    ENCODE_STATUS_PENDING,
    ENCODE_STATUS_RUNNING,
    ENCODE_STATUS_STOPPED,
    JOB_FAILED,
    SmartstreamSim,
)

KEY = "sim-key-1234"
TOKEN = "sim-token-5678"
M = "nttsmc"


def make_sim(clock: FakeClock, **kwargs) -> SmartstreamSim:
    kwargs.setdefault("static_tokens", (TOKEN,))
    return SmartstreamSim(
        merchant_id=M,
        api_key=KEY,
        mail_address="ops@example.com",
        password="pw-secret",
        clock=clock,
        **kwargs,
    )


class Api:
    """A bare HTTP helper: the simulator is checked without the real client."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def call(self, method, path, *, key=KEY, token=TOKEN, json=None, params=None):
        headers = {}
        if key is not None:
            headers["X-Streaks-Api-Key"] = key
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{self.base}/v1/merchants/{M}{path}"
        async with self.http.request(
            method, url, headers=headers, json=json, params=params
        ) as response:
            text = await response.text()
            try:
                body = await response.json(content_type=None) if text else None
            except ValueError:
                body = text
            return response.status, body, response.headers

    async def sim(self, action, /, **kwargs):
        """Run a simulator action now: POST /_sim/actions/<action>."""
        return await self.control("POST", f"/_sim/actions/{action}", kwargs)

    async def control(self, method, path, body=None):
        async with self.http.request(method, f"{self.base}{path}", json=body) as response:
            return response.status, await response.json()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def sim(clock) -> SmartstreamSim:
    return make_sim(clock)


@pytest.fixture
async def api(sim):
    async with serve(sim.app()) as base, aiohttp.ClientSession() as http:
        yield Api(http, base)


async def test_missing_or_wrong_credentials_get_the_documented_401(api):
    for kwargs in ({"key": None}, {"key": "wrong"}, {"token": None}, {"token": "wrong"}):
        status, body, _ = await api.call("GET", "/live_events", **kwargs)
        assert status == 401, kwargs
        assert body == {"code": "UNAUTHORIZED", "message": "Authentication failed"}
    status, body, _ = await api.call("GET", "/live_events")
    assert status == 200 and body == {"count": 0, "live_events": []}


async def test_auth_token_issues_a_token_that_expires(api, sim, clock):
    creds = {"mail_address": "ops@example.com", "password": "pw-secret"}
    status, body, _ = await api.call("POST", "/auth-token/", token=None, json=creds)
    assert status == 200
    expires = datetime.fromisoformat(body["expiration"])
    assert body["expiration"].endswith("Z")
    assert expires.timestamp() == pytest.approx(clock.now + sim.token_ttl, abs=0.001)
    status, _, _ = await api.call("GET", "/live_events", token=body["token"])
    assert status == 200
    clock.now += sim.token_ttl
    status, body2, _ = await api.call("GET", "/live_events", token=body["token"])
    assert (status, body2["code"]) == (401, "UNAUTHORIZED")


async def test_auth_token_rejects_bad_credentials_and_bad_bodies(api):
    wrong = {"mail_address": "ops@example.com", "password": "nope"}
    status, body, _ = await api.call("POST", "/auth-token/", token=None, json=wrong)
    assert (status, body["code"]) == (401, "UNAUTHORIZED")
    status, body, _ = await api.call("POST", "/auth-token/", token=None, json={"x": 1})
    assert (status, body["code"]) == (400, "BAD_REQUEST")
    right = {"mail_address": "ops@example.com", "password": "pw-secret"}
    status, _, _ = await api.call("POST", "/auth-token/", key="wrong", token=None, json=right)
    assert status == 401


async def test_paging_with_limit_and_page(api, sim, clock):
    for n in range(7):
        sim.add_live_event(name=f"ev{n}", created_at=clock.now + n)
    pages = []
    for page in (1, 2, 3, 4):
        status, body, _ = await api.call("GET", "/live_events", params={"limit": 3, "page": page})
        assert status == 200 and body["count"] == 7
        pages.append([e["name"] for e in body["live_events"]])
    assert pages == [["ev0", "ev1", "ev2"], ["ev3", "ev4", "ev5"], ["ev6"], []]
    status, body, _ = await api.call(
        "GET", "/live_events", params={"limit": 2, "sort": "created_at", "order": "DESC"}
    )
    assert [e["name"] for e in body["live_events"]] == ["ev6", "ev5"]
    for bad in ({"limit": 0}, {"page": "x"}, {"order": "SIDEWAYS"}, {"sort": "password"}):
        status, body, _ = await api.call("GET", "/live_events", params=bad)
        assert (status, body["code"]) == (400, "BAD_REQUEST"), bad


async def test_count_mode_page_reports_the_page_size(clock):
    sim = make_sim(clock, count_mode="page")
    for n in range(5):
        sim.add_live_event(name=f"ev{n}")
    async with serve(sim.app()) as base, aiohttp.ClientSession() as http:
        _, body, _ = await Api(http, base).call("GET", "/live_events", params={"limit": 2})
    assert body["count"] == 2


async def test_live_event_json_has_the_documented_fields(api, sim, clock):
    sim.add_live_event(id="abc", ref_id="show", name="Show", encode_status=ENCODE_STATUS_RUNNING)
    for target in ("abc", "ref:show"):
        status, body, _ = await api.call("GET", f"/live_events/{target}")
        assert status == 200
        assert body["id"] == "abc" and body["ref_id"] == "show"
        assert body["merchant_id"] == M
        assert body["encode_status"] == ENCODE_STATUS_RUNNING
        assert body["live_encode_start_at"] is None
        assert body["created_at"].endswith("+09:00")
        assert datetime.fromisoformat(body["created_at"]).timestamp() == pytest.approx(clock.now)
        assert isinstance(body["input_sources"], list) and body["input_sources"]
        assert {"description", "live_event_profile_id", "media_id", "preview"} <= set(body)
    status, body, _ = await api.call("GET", "/live_events/ref:nope")
    assert (status, body["code"]) == (404, "LIVE_EVENT_NOT_FOUND")


async def test_stop_then_start_without_reset_fails(api, sim, clock):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    status, body, _ = await api.call("POST", "/live_events/ev/stop")
    assert status == 200 and body["encode_status"] == ENCODE_STATUS_STOPPED
    status, body, _ = await api.call("POST", "/live_events/ev/start")
    assert (status, body) == (400, {"code": "FAILED_TO_START", "message": "Failed to start"})
    status, body, _ = await api.call("POST", "/live_events/ev/reset")
    assert (status, body) == (200, None)  # documented: 200 OK without a body
    status, body, _ = await api.call("POST", "/live_events/ev/start")
    assert status == 200 and body["encode_status"] == ENCODE_STATUS_PENDING
    clock.now += sim.start_delay - 0.1
    _, body, _ = await api.call("GET", "/live_events/ev")
    assert body["encode_status"] == ENCODE_STATUS_PENDING
    clock.now += 0.2
    _, body, _ = await api.call("GET", "/live_events/ev")
    assert body["encode_status"] == ENCODE_STATUS_RUNNING
    actions = [(c.path.rsplit("/", 1)[-1], c.status) for c in sim.calls.mutating()]
    assert actions == [("stop", 200), ("start", 400), ("reset", 200), ("start", 200)]


async def test_reset_of_a_running_event_and_stop_of_a_stopped_one_fail(api, sim):
    sim.add_live_event(id="on", encode_status=ENCODE_STATUS_RUNNING)
    sim.add_live_event(id="off", encode_status=ENCODE_STATUS_STOPPED)
    status, body, _ = await api.call("POST", "/live_events/on/reset")
    assert (status, body["code"]) == (400, "FAILED_TO_RESET")
    status, body, _ = await api.call("POST", "/live_events/off/stop")
    assert (status, body["code"]) == (400, "FAILED_TO_STOP")
    status, body, _ = await api.call("POST", "/live_events/gone/start")
    assert (status, body["code"]) == (404, "LIVE_EVENT_NOT_FOUND")


async def test_error_status_is_settable_and_needs_a_reset(api, sim):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    status, _ = await api.sim("set_encode_status", live_event="ev", encode_status="encode_status_x")
    assert status == 200
    assert sim.live_events["ev"].encode_status == "encode_status_x"
    sim.set_encode_status("ev", ENCODE_STATUS_ERROR)
    status, body, _ = await api.call("POST", "/live_events/ev/start")
    assert (status, body["code"]) == (400, "FAILED_TO_START")


async def test_jobs_list_and_get_with_integer_status(api, sim):
    sim.add_job(id="j1", ref_id="up-1", encode_status=1)
    status, body, _ = await api.call("GET", "/jobs", params={"limit": 10})
    assert status == 200 and body["count"] == 1
    (job,) = body["jobs"]
    assert job["encode_status"] == 1 and isinstance(job["source_type"], str)
    await api.sim("set_job_status", job="ref:up-1", encode_status=JOB_FAILED)
    _, body, _ = await api.call("GET", "/jobs/ref:up-1")
    assert body["encode_status"] == JOB_FAILED
    status, body, _ = await api.call("GET", "/jobs/nope")
    assert (status, body["code"]) == (404, "JOB_NOT_FOUND")


async def test_rate_limit_answers_429_with_retry_after(api, sim, clock):
    await api.sim("set_rate_limit", limit=3, window=60)
    for _ in range(3):
        assert (await api.call("GET", "/live_events"))[0] == 200
        clock.now += 10
    status, body, headers = await api.call("GET", "/live_events")
    assert (status, body["code"]) == (429, "TOO_MANY_REQUESTS")
    assert headers["Retry-After"] == "30"  # the first call leaves the window at +60 s
    clock.now += 30
    assert (await api.call("GET", "/live_events"))[0] == 200


async def test_faults_via_http_controls(api, sim):
    sim.add_live_event(id="ev")
    assert (await api.sim("fail", status=503, code="SERVER_ERROR", count=2))[0] == 200
    for _ in range(2):
        status, body, _ = await api.call("GET", "/live_events")
        assert (status, body["code"]) == (503, "SERVER_ERROR")
    assert (await api.call("GET", "/live_events"))[0] == 200

    await api.sim("bad_json", path="*/jobs")
    assert (await api.call("GET", "/live_events"))[0] == 200  # not matched
    status, body, _ = await api.call("GET", "/jobs")
    assert status == 200 and isinstance(body, str)  # not JSON

    await api.sim("unauthorized")
    status, body, _ = await api.call("GET", "/live_events")
    assert (status, body["code"]) == (401, "UNAUTHORIZED")

    await api.sim("vanish", live_event="ev")
    status, body, _ = await api.call("GET", "/live_events/ev")
    assert (status, body["code"]) == (404, "LIVE_EVENT_NOT_FOUND")

    await api.sim("fail", count=None)
    assert (await api.call("GET", "/jobs"))[0] == 500
    assert (await api.call("GET", "/jobs"))[0] == 500
    await api.sim("clear_faults")
    assert (await api.call("GET", "/jobs"))[0] == 200

    status, body = await api.sim("no_such_control")
    assert status == 404 and "fail" in body["error"]
    status, body = await api.sim("fail", bogus=1)
    assert status == 400


async def test_delay_fault_really_delays(api, sim):
    sim.delay(0.2)
    timeout = aiohttp.ClientTimeout(total=0.05)
    with pytest.raises(TimeoutError):
        async with api.http.get(
            f"{api.base}/v1/merchants/{M}/live_events",
            headers={"X-Streaks-Api-Key": KEY, "Authorization": f"Bearer {TOKEN}"},
            timeout=timeout,
        ):
            pass


async def test_revoked_tokens_are_refused(api, sim):
    await api.sim("revoke_tokens")
    assert (await api.call("GET", "/live_events"))[0] == 401


async def test_schedule_is_applied_on_the_next_request(api, sim, clock):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    sim.schedule(10, "set_encode_status", live_event="ev", encode_status=ENCODE_STATUS_ERROR)
    status, _ = await api.control(
        "POST", "/_sim/schedule", {"in": 20, "action": "fail", "kwargs": {"status": 500}}
    )
    assert status == 201
    clock.now += 9
    _, body, _ = await api.call("GET", "/live_events/ev")
    assert body["encode_status"] == ENCODE_STATUS_RUNNING
    clock.now += 1
    _, body, _ = await api.call("GET", "/live_events/ev")
    assert body["encode_status"] == ENCODE_STATUS_ERROR
    clock.now += 10
    assert (await api.call("GET", "/live_events/ev"))[0] == 500
    with pytest.raises(ValueError):
        sim.schedule(1, "os.system")
    status, _ = await api.control("POST", "/_sim/schedule", {"action": "fail"})  # no at, no in
    assert status == 400


async def test_state_and_call_log_routes(api, sim):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    await api.call("POST", "/live_events/ev/stop")
    await api.call("GET", "/live_events/ev")
    status, body = await api.control("GET", "/_sim/calls")
    assert status == 200
    assert [(c["method"], c["path"], c["status"]) for c in body["calls"]] == [
        ("POST", f"/v1/merchants/{M}/live_events/ev/stop", 200),
        ("GET", f"/v1/merchants/{M}/live_events/ev", 200),
    ]
    _, state = await api.control("GET", "/_sim/state")
    assert state["live_events"][0]["encode_status"] == ENCODE_STATUS_STOPPED
    assert state["merchant_id"] == M and state["calls"] == 2


async def test_create_update_delete_live_event(api, sim):
    status, body, _ = await api.call("POST", "/live_events", json={"name": "x"})
    assert (status, body["code"]) == (400, "BAD_REQUEST")
    status, body, _ = await api.call(
        "POST", "/live_events", json={"name": "New", "live_event_profile_id": "p1", "ref_id": "n"}
    )
    assert status == 200 and body["ref_id"] == "n"
    status, body, _ = await api.call("PUT", "/live_events/ref:n", json={"name": "Renamed"})
    assert status == 200 and body["name"] == "Renamed"
    status, _, _ = await api.call("DELETE", "/live_events/ref:n")
    assert status == 200 and not sim.live_events


def test_simulator_does_not_import_the_sources():
    code = (
        "import sys, monitor.sim.smartstream\n"
        "bad = [m for m in sys.modules if m.startswith('monitor.sources')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_a_scheduled_action_that_cannot_apply_does_not_break_requests(api, sim, clock):
    sim.schedule(1, "vanish", live_event="never-existed")
    clock.now += 2
    assert (await api.call("GET", "/live_events"))[0] == 200
    with pytest.raises(ValueError):
        sim.fail(count=0)
