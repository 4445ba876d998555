"""The NAVER Live Station simulator, driven over raw HTTP with a signer written in this file."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from conftest import FakeClock

from monitor.sim.naver import NaverSim
from monitor.sim.serve import serve

AK = "sim-access-key"
SK = "sim-secret-key"
T0 = 1_750_000_000.0


def signed_headers(
    method: str, uri: str, ts_ms: int, *, ak: str = AK, sk: str = SK
) -> dict[str, str]:
    message = f"{method} {uri}\n{ts_ms}\n{ak}".encode()
    signature = base64.b64encode(hmac.new(sk.encode(), message, hashlib.sha256).digest()).decode()
    return {
        "x-ncp-apigw-timestamp": str(ts_ms),
        "x-ncp-iam-access-key": ak,
        "x-ncp-apigw-signature-v2": signature,
        "x-ncp-region_code": "KR",
        "Content-Type": "application/json",
    }


class Api:
    """A tiny signed client for the tests (sends the URI exactly as signed)."""

    def __init__(self, base: str, session: aiohttp.ClientSession, clock: FakeClock):
        self.base, self.session, self.clock = base, session, clock

    async def call(
        self,
        method: str,
        uri: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        sign_uri: str | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        if headers is None:
            headers = signed_headers(method, sign_uri or uri, int(self.clock() * 1000))
        async with self.session.request(
            method, yarl.URL(self.base + uri, encoded=True), headers=headers, json=json_body
        ) as response:
            text = await response.text()
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = text
            return response.status, body, response.headers

    async def sim(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body) as response:
            return response.status, await response.json(content_type=None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sim(clock: FakeClock) -> NaverSim:
    return NaverSim(AK, SK, clock)


@pytest.fixture
async def api(sim: NaverSim, clock: FakeClock) -> AsyncIterator[Api]:
    async with serve(sim.app()) as base, aiohttp.ClientSession() as session:
        yield Api(base, session, clock)


async def test_signed_request_lists_channels_with_paging(sim: NaverSim, api: Api) -> None:
    for n in range(7):
        sim.add_channel(f"ls-test-{n}", f"ch{n}")
    status, body, _ = await api.call("GET", "/api/v2/channels?pageNo=3&pageSizeNo=3")
    assert status == 200
    assert body["total"] == 7
    assert [c["channelId"] for c in body["content"]] == ["ls-test-6"]
    status, body, _ = await api.call("GET", "/api/v2/channels?pageNo=1&pageSizeNo=3")
    assert [c["channelId"] for c in body["content"]] == ["ls-test-0", "ls-test-1", "ls-test-2"]
    channel = body["content"][0]
    for key in ("channelName", "channelStatus", "isRecording", "cdn", "createdTime"):
        assert key in channel


async def test_channel_list_filters_and_rejects_bad_page_size(sim: NaverSim, api: Api) -> None:
    sim.add_channel("ls-a", "alpha", "PUBLISHING")
    sim.add_channel("ls-b", "beta", "READY")
    status, body, _ = await api.call("GET", "/api/v2/channels?channelStatus=PUBLISHING")
    assert status == 200 and [c["channelId"] for c in body["content"]] == ["ls-a"]
    status, body, _ = await api.call("GET", "/api/v2/channels?pageSizeNo=101")
    assert status == 400 and body["error"]["errorName"] == "INVALID_FORMAT"


@pytest.mark.parametrize(
    "missing", ["x-ncp-apigw-timestamp", "x-ncp-iam-access-key", "x-ncp-apigw-signature-v2"]
)
async def test_missing_auth_header_is_gateway_401(api: Api, clock: FakeClock, missing: str) -> None:
    headers = signed_headers("GET", "/api/v2/channels", int(clock() * 1000))
    del headers[missing]
    status, body, _ = await api.call("GET", "/api/v2/channels", headers=headers)
    assert status == 401
    assert body["error"]["errorCode"] == "200"
    assert body["error"]["message"] == "Authentication Failed"


async def test_missing_region_header_is_live_station_required_header(
    api: Api, clock: FakeClock
) -> None:
    headers = signed_headers("GET", "/api/v2/channels", int(clock() * 1000))
    del headers["x-ncp-region_code"]
    status, body, _ = await api.call("GET", "/api/v2/channels", headers=headers)
    assert status == 400
    assert body["error"] == {
        "errorCode": 250003,
        "message": "Required header x-ncp-region_code is missing.",
        "errorName": "REQUIRED_HEADER",
    }


async def test_wrong_secret_and_wrong_access_key_rejected(api: Api, clock: FakeClock) -> None:
    ts = int(clock() * 1000)
    for headers in (
        signed_headers("GET", "/api/v2/channels", ts, sk="not-the-secret"),
        signed_headers("GET", "/api/v2/channels", ts, ak="other-key"),
    ):
        status, body, _ = await api.call("GET", "/api/v2/channels", headers=headers)
        assert (status, body["error"]["errorCode"]) == (401, "200")


async def test_signature_covers_the_query_as_sent(api: Api) -> None:
    # Signed with the parameters in one order, sent in the other: refused.
    status, _, _ = await api.call(
        "GET",
        "/api/v2/channels?pageSizeNo=10&pageNo=1",
        sign_uri="/api/v2/channels?pageNo=1&pageSizeNo=10",
    )
    assert status == 401
    # And the method is part of it.
    headers = signed_headers("PUT", "/api/v2/channels", int(api.clock() * 1000))
    status, _, _ = await api.call("GET", "/api/v2/channels", headers=headers)
    assert status == 401


async def test_timestamp_skew_of_five_minutes_rejected(api: Api, clock: FakeClock) -> None:
    ts = int(clock() * 1000)
    clock.now += 299
    status, _, _ = await api.call(
        "GET", "/api/v2/events", headers=signed_headers("GET", "/api/v2/events", ts)
    )
    assert status == 200
    clock.now += 1
    status, body, _ = await api.call(
        "GET", "/api/v2/events", headers=signed_headers("GET", "/api/v2/events", ts)
    )
    assert status == 401 and body["error"]["errorCode"] == "200"
    # A timestamp from the future is as bad as an old one.
    future = int((clock() + 400) * 1000)
    status, _, _ = await api.call(
        "GET", "/api/v2/events", headers=signed_headers("GET", "/api/v2/events", future)
    )
    assert status == 401


async def test_unknown_api_path_is_gateway_404(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/v2/nothing-here")
    assert status == 404 and body["error"]["errorCode"] == "300"


async def test_status_changes_make_events_newest_first(
    sim: NaverSim, api: Api, clock: FakeClock
) -> None:
    sim.add_channel("ls-x", "x", "READY")
    sim.set_status("ls-x", "PUBLISHING")
    clock.now += 5
    sim.set_status("ls-x", "READY")
    sim.set_status("ls-x", "SOMETHING_NEW", event=None)
    status, body, _ = await api.call("GET", "/api/v2/events")
    assert status == 200 and body["total"] == 2
    assert [(e["eventCode"], e["timestamp"]) for e in body["content"]] == [
        ("PUBLISH_END", int((T0 + 5) * 1000)),
        ("PUBLISH_START", int(T0 * 1000)),
    ]
    assert set(body["content"][0]) == {
        "logLevel",
        "eventCode",
        "description",
        "timestamp",
        "channelId",
    }
    assert sim.channels["ls-x"]["totalPublishSeconds"] == 5
    assert sim.channels["ls-x"]["channelStatus"] == "SOMETHING_NEW"
    status, body, _ = await api.call("GET", "/api/v2/channels/ls-x/publish-log")
    assert status == 200 and body["total"] == 2


async def test_actions_follow_the_documented_state_rules(sim: NaverSim, api: Api) -> None:
    sim.add_channel("ls-p", "p", "PUBLISHING")
    status, body, _ = await api.call("PUT", "/api/v2/channels/ls-p/startRecord")
    assert status == 200 and body["content"]["isRecording"] is True
    status, body, _ = await api.call("PUT", "/api/v2/channels/ls-p/stopRecord")
    assert status == 200 and "recordList" in body["content"]
    status, body, _ = await api.call("PUT", "/api/v2/channels/ls-p/off")
    assert status == 200 and body["content"]["channelStatus"] == "BLOCK"
    status, body, _ = await api.call("PUT", "/api/v2/channels/ls-p/startRecord")
    assert status == 400 and body["error"]["errorName"] == "NOT_AVAILABLE"
    status, body, _ = await api.call("PUT", "/api/v2/channels/ls-p/on")
    assert status == 200 and body["content"]["channelStatus"] == "READY"
    status, body, _ = await api.call("PUT", "/api/v2/channels/ls-nope/on")
    assert status == 404 and body["error"]["errorName"] == "NOT_FOUND"
    assert [(c.path.rsplit("/", 1)[-1], c.status) for c in sim.calls.mutating()] == [
        ("startRecord", 200),
        ("stopRecord", 200),
        ("off", 200),
        ("startRecord", 400),
        ("on", 200),
        ("on", 404),
    ]
    codes = [e["eventCode"] for e in sim.events]
    assert codes == ["ONAIR_START", "ONAIR_END", "PUBLISH_END"]
    sim.set_status("ls-p", "FORCE_BLOCK", event=None)
    status, _, _ = await api.call("PUT", "/api/v2/channels/ls-p/on")
    assert status == 400


async def test_fault_methods_with_counts_and_paths(sim: NaverSim, api: Api) -> None:
    sim.fail(500)
    status, body, _ = await api.call("GET", "/api/v2/channels")
    assert status == 500 and body["error"]["errorName"] == "EXCEPTION"
    assert body["error"]["errorCode"] == 250000
    status, _, _ = await api.call("GET", "/api/v2/channels")
    assert status == 200
    sim.fail(429, retry_after=7, path="/api/v2/events", count=None)
    status, _, _ = await api.call("GET", "/api/v2/channels")
    assert status == 200
    status, body, headers = await api.call("GET", "/api/v2/events")
    assert status == 429 and body["error"]["errorCode"] == "420"
    assert headers["Retry-After"] == "7"
    sim.clear_faults()
    sim.bad_json()
    status, body, _ = await api.call("GET", "/api/v2/events")
    assert status == 200 and isinstance(body, str)
    sim.unauthorized()
    status, body, _ = await api.call("GET", "/api/v2/events")
    assert status == 401 and body["error"]["errorCode"] == "200"
    sim.fail(code="230")
    status, body, _ = await api.call("GET", "/api/v2/events")
    assert status == 403 and body["error"]["errorCode"] == "230"
    sim.fail(404, "NOT_FOUND")
    status, body, _ = await api.call("GET", "/api/v2/events")
    assert status == 404 and body["error"]["errorCode"] == 250004
    sim.delay(0.001)
    status, _, _ = await api.call("GET", "/api/v2/events")
    assert status == 200
    assert sim.faults == []


async def test_sim_routes_drive_everything_without_auth(
    sim: NaverSim, api: Api, clock: FakeClock
) -> None:
    status, body = await api.sim(
        "POST", "/_sim/channels", {"channelId": "ls-r", "channelStatus": "PUBLISHING"}
    )
    assert status == 201 and body["content"]["channelId"] == "ls-r"
    status, body = await api.sim("POST", "/_sim/channels/ls-r/status", {"status": "READY"})
    assert status == 200 and body["event"]["eventCode"] == "PUBLISH_END"
    status, _ = await api.sim("POST", "/_sim/events", {"channelId": "ls-r", "eventCode": "X_Y"})
    assert status == 201
    status, body = await api.sim("POST", "/_sim/faults", {"kind": "status", "status": 500})
    assert status == 201 and body["fault"]["count"] == 1
    status, body = await api.sim("POST", "/_sim/faults", {"kind": "explode"})
    assert status == 400
    status, _, _ = await api.call("GET", "/api/v2/channels")
    assert status == 500
    await api.sim("POST", "/_sim/faults", {"kind": "status", "status": 429, "retry_after": 3})
    status, body = await api.sim("GET", "/_sim/state")
    assert [(f["kind"], f["status"]) for f in body["faults"]] == [("status", 429)]
    assert [e["eventCode"] for e in body["events"]] == ["PUBLISH_END", "X_Y"]
    status, _ = await api.sim("DELETE", "/_sim/faults")
    assert status == 200 and sim.faults == []
    status, body = await api.sim(
        "POST",
        "/_sim/schedule",
        {"in": 10, "action": "set_status", "kwargs": {"channel_id": "ls-r", "status": "BLOCK"}},
    )
    assert status == 201
    status, body = await api.sim("GET", "/_sim/state")
    assert body["channels"][0]["channelStatus"] == "READY"
    clock.now += 10
    status, body = await api.sim("GET", "/_sim/state")
    assert body["channels"][0]["channelStatus"] == "BLOCK"
    await api.call("PUT", "/api/v2/channels/ls-r/on")
    status, body = await api.sim("GET", "/_sim/calls")
    assert [(c["method"], c["path"], c["status"]) for c in body["calls"]] == [
        ("GET", "/api/v2/channels", 500),
        ("PUT", "/api/v2/channels/ls-r/on", 200),
    ]


async def test_schedule_applies_lazily_on_the_next_request(
    sim: NaverSim, api: Api, clock: FakeClock
) -> None:
    sim.schedule(30, "fail")
    status, _, _ = await api.call("GET", "/api/v2/channels")
    assert status == 200
    clock.now = T0 + 30
    assert sim.faults == []  # nothing happens until a request arrives
    status, _, _ = await api.call("GET", "/api/v2/channels")
    assert status == 500
    with pytest.raises(ValueError):
        sim.schedule(0, "no_such_action")


async def test_callbacks_posted_when_delivered(sim: NaverSim, clock: FakeClock) -> None:
    received: list[dict[str, Any]] = []
    answer = {"status": 200}

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({}, status=answer["status"])

    receiver = web.Application()
    receiver.router.add_post("/cb/{token}", receive)
    async with serve(receiver) as receiver_url:
        sim.add_event("ls-before", "STREAM_UPDATE")  # no URL yet: never sent
        sim.set_callback_url(f"{receiver_url}/cb/tok")
        sim.add_channel("ls-c", "c", "READY")
        sim.set_status("ls-c", "PUBLISHING")
        assert sim.pending_callbacks == 1
        assert received == []  # nothing is sent until delivery is awaited
        answer["status"] = 500
        assert await sim.deliver_callbacks() == 0
        assert sim.pending_callbacks == 1  # kept for the next delivery
        answer["status"] = 200
        assert await sim.deliver_callbacks() == 1
        assert sim.pending_callbacks == 0
    assert received[-1] == {
        "id": received[-1]["id"],
        "logLevel": "INFO",
        "channelId": "ls-c",
        "event": "PUBLISH_START",
        "timestamp": int(T0 * 1000),
    }
    assert isinstance(received[-1]["id"], int)
    assert [entry["status"] for entry in sim.callback_log] == [500, 200]


async def test_callback_endpoint_api_sets_the_url(sim: NaverSim, api: Api) -> None:
    status, body, _ = await api.call(
        "POST", "/api/v2/events/callbackEndpoint", json_body={"callbackUrl": "http://x.test/cb"}
    )
    assert status == 200 and sim.callback_url == "http://x.test/cb"
    status, body, _ = await api.call("GET", "/api/v2/events/callbackEndpoint")
    assert body == {"content": {"callbackUrl": "http://x.test/cb"}}
    assert (sim.calls[-1].method, sim.calls[-1].path) == ("GET", "/api/v2/events/callbackEndpoint")
    assert sim.calls.mutating()[-1].body == {"callbackUrl": "http://x.test/cb"}
