"""The OME simulator over real HTTP on loopback, driven by a fake clock (no sleeps to wait for state)."""

from __future__ import annotations

import asyncio
import base64
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import FakeClock

from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve

TOKEN = "ome-access-token"
AUTH = {"Authorization": "Basic b21lLWFjY2Vzcy10b2tlbg=="}  # the example from Server.xml
T0 = 1_700_000_000.0
STREAM = "/v1/vhosts/default/apps/app/streams/stream"
STREAM_STATS = "/v1/stats/current/vhosts/default/apps/app/streams/stream"
APP = "/v1/vhosts/default/apps/app"
NEW_KEYS = {"webrtc", "llhls", "ovt", "file", "push", "thumbnail", "hlsv3", "srt"}
OLD_KEYS = {
    "webrtc",
    "lldash",
    "hls",
    "llhls",
    "dash",
    "ovt",
    "file",
    "rtmppush",
    "mpegtspush",
    "thumbnail",
}


@dataclass
class Reply:
    status: int
    body: Any
    text: str
    headers: Mapping[str, str]


class Client:
    """One ClientSession against one running simulator, authenticated unless told otherwise."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: str | None = None,
        headers: Mapping[str, str] | None = AUTH,
    ) -> Reply:
        async with self.session.request(
            method, path, json=body, data=data, headers=dict(headers or {})
        ) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            return Reply(resp.status, parsed, text, resp.headers)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await self.call("POST", path, body, **kwargs)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        reply = await self.call(method, path, body)
        assert reply.status == 200, reply.text
        return reply.body.get("response")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sim(clock: FakeClock) -> OmeSim:
    sim = OmeSim(TOKEN, clock=clock)
    sim.add_stream("default/app/stream", bitrate=2_500_000, connections={"llhls": 2})
    return sim


@pytest.fixture
async def client(sim: OmeSim) -> AsyncIterator[Client]:
    async with serve(sim.app()) as base_url, aiohttp.ClientSession(base_url) as session:
        yield Client(session)


def basic(credential: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credential.encode()).decode()}


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def error(status: int, message: str) -> dict[str, Any]:
    return {"statusCode": status, "message": f"[HTTP] {message} ({status})"}


# ---- auth and envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Authorization header is required to call API"),
        ({"Authorization": "Basic"}, "Invalid authorization header"),
        ({"Authorization": "Basic a b"}, "Invalid authorization header"),
        ({"Authorization": "Bearer abc"}, "Not supported credential type: Bearer"),
        ({"Authorization": "Basic !!not-base64!!"}, "Invalid credential format"),
        (basic("wrong-token"), "Invalid credential"),
        (basic(f"user:{TOKEN}"), "Invalid credential"),
    ],
)
async def test_every_auth_failure_is_a_documented_401(
    client: Client, headers: dict[str, str], message: str
) -> None:
    reply = await client.get("/v1/vhosts", headers=headers)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="OvenMediaEngine"'
    assert reply.body == error(401, message)


async def test_auth_runs_before_routing_and_scheme_is_case_insensitive(client: Client) -> None:
    assert (await client.get("/nowhere", headers={})).status == 401
    lower = {"Authorization": AUTH["Authorization"].replace("Basic", "basic")}
    assert (await client.get("/v1/vhosts", headers=lower)).status == 200


async def test_envelope_content_type_and_listings(client: Client) -> None:
    reply = await client.get("/v1/version")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert reply.body == {
        "statusCode": 200,
        "message": "OK",
        "response": {"gitVersion": "v0.20.0", "version": "0.20.0"},
    }
    assert await client.ok("GET", "/v1/vhosts") == ["default"]
    assert (await client.ok("GET", "/v1/vhosts/default"))["name"] == "default"
    assert await client.ok("GET", "/v1/vhosts/default/apps") == ["app"]
    app = await client.ok("GET", APP)
    assert app["name"] == "app" and "llhls" in app["publishers"]
    assert await client.ok("GET", f"{APP}/streams") == ["stream"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/vhosts/nope", "Could not find the virtual host: [nope]"),
        ("/v1/vhosts/nope/apps", "Could not find the virtual host: [nope]"),
        ("/v1/vhosts/default/apps/nope", "Could not find the application: [default/nope]"),
        ("/v1/vhosts/default/apps/nope/streams", "Could not find the application: [default/nope]"),
        (f"{APP}/streams/nosuch", "Could not find the stream: [default/#default#app/nosuch]"),
        ("/v1/stats/current/vhosts/nope", "Could not find the virtual host: [nope]"),
        (
            "/v1/stats/current/vhosts/default/apps/nope",
            "Could not find the application: [default/nope]",
        ),
        (
            "/v1/stats/current/vhosts/default/apps/app/streams/nosuch",
            "Could not find the stream: [default/#default#app/nosuch]",
        ),
        ("/v1/nothing", "Controller not found"),
        (f"{APP}:bogus", "Controller not found"),
        ("/v2/vhosts", "Controller not found"),
    ],
)
async def test_not_found_bodies(client: Client, path: str, message: str) -> None:
    reply = await client.get(path)
    assert reply.status == 404
    assert reply.body == error(404, message)


async def test_wrong_method_is_controller_not_found(client: Client) -> None:
    reply = await client.call("PUT", "/v1/vhosts")
    assert reply.body == error(404, "Controller not found")


# ---- stream info and versions ----------------------------------------------------------------------


async def test_stream_info_of_an_rtmp_input_on_0_20(client: Client, clock: FakeClock) -> None:
    info = await client.ok("GET", STREAM)
    assert info["name"] == "stream"
    source = info["input"]
    assert source["sourceType"] == "Rtmp"
    assert source["sourceUrl"].startswith("TCP://127.0.0.1:")
    assert ts(source["createdTime"]) == pytest.approx(T0, abs=0.001)
    video, audio, data = source["tracks"]
    assert data == {"id": 2, "name": "Data", "type": "Data"}
    assert video["type"] == "Video" and audio["type"] == "Audio"
    v = video["video"]
    assert (v["codec"], v["width"], v["height"], v["framerate"]) == ("H264", 1280, 720, 30.0)
    assert v["bitrate"] == v["bitrateConf"] == v["bitrateAvg"] == v["bitrateLatest"] == 2_500_000
    assert v["keyFrameInterval"] == 60 and v["hasBframes"] is False
    assert {"framerateAvg", "keyFrameIntervalAvg", "timebase"} <= v.keys()
    a = audio["audio"]
    assert (a["codec"], a["samplerate"], a["channel"], a["bitrate"]) == ("AAC", 48000, 2, 128_000)
    (output,) = info["outputs"]
    assert output["name"] == "stream"
    assert [t["name"] for t in output["tracks"]] == ["bypass_video", "aac", "opus"]
    assert output["playlists"][0]["fileName"] == "llhls"


async def test_bitrates_are_strings_before_0_19(clock: FakeClock) -> None:
    sim = OmeSim(TOKEN, clock=clock, version="0.18.2")
    sim.add_stream("default/app/stream", bitrate=2_500_000)
    async with serve(sim.app()) as base_url, aiohttp.ClientSession(base_url) as session:
        client = Client(session)
        video = (await client.ok("GET", STREAM))["input"]["tracks"][0]["video"]
        assert video["bitrate"] == "2500000" and video["bitrateConf"] == "2500000"
        stats = await client.ok("GET", STREAM_STATS)
        assert set(stats["connections"]) == NEW_KEYS


@pytest.mark.parametrize(
    ("version", "keys"),
    [
        ("0.16.5", OLD_KEYS),
        ("0.17.2", {"webrtc", "llhls", "ovt", "file", "push", "thumbnail"}),
        ("0.20.0", NEW_KEYS),
    ],
)
async def test_connection_keys_follow_the_version_zeros_included(
    clock: FakeClock, version: str, keys: set[str]
) -> None:
    sim = OmeSim(TOKEN, clock=clock, version=version)
    sim.add_stream("default/app/stream", connections={"llhls": 3})
    async with serve(sim.app()) as base_url, aiohttp.ClientSession(base_url) as session:
        client = Client(session)
        for path in ("/v1/stats/current", "/v1/stats/current/vhosts/default", STREAM_STATS):
            stats = await client.ok("GET", path)
            assert set(stats["connections"]) == keys
            assert stats["connections"]["llhls"] == 3
            assert sum(stats["connections"].values()) == stats["totalConnections"] == 3


def test_connection_keys_of_another_version_are_refused(clock: FakeClock) -> None:
    sim = OmeSim(TOKEN, clock=clock, version="0.16.5")
    with pytest.raises(ValueError, match="hlsv3"):
        sim.add_stream("default/app/stream", connections={"hlsv3": 1})


async def test_old_versions_lack_late_fields_and_endpoints(clock: FakeClock) -> None:
    sim = OmeSim(TOKEN, clock=clock, version="0.12.0")
    sim.add_stream("default/app/stream")
    async with serve(sim.app()) as base_url, aiohttp.ClientSession(base_url) as session:
        client = Client(session)
        missing = await client.get("/v1/stats/current")
        assert missing.body == error(404, "Controller not found")
        stats = await client.ok("GET", STREAM_STATS)
        assert "avgThroughputIn" not in stats and "lastThroughputIn" not in stats
        video = (await client.ok("GET", STREAM))["input"]["tracks"][0]["video"]
        assert "bitrateAvg" not in video


# ---- counters and the clock -------------------------------------------------------------------------


async def test_counters_grow_with_the_clock(client: Client, clock: FakeClock) -> None:
    before = await client.ok("GET", STREAM_STATS)
    assert before["totalBytesIn"] == 0 and before["avgThroughputIn"] == 0
    clock.advance(10)
    stats = await client.ok("GET", STREAM_STATS)
    assert stats["totalBytesIn"] == 2_500_000 // 8 * 10
    assert stats["totalBytesOut"] == 2 * 2_500_000 // 8 * 10  # two viewers
    assert stats["avgThroughputIn"] == stats["maxThroughputIn"] == 2_500_000
    assert stats["lastThroughputIn"] == 2_500_000 // 8
    assert stats["avgThroughputOut"] == 5_000_000
    assert stats["totalConnections"] == stats["maxTotalConnections"] == 2
    assert ts(stats["lastRecvTime"]) == pytest.approx(clock.now, abs=0.001)
    assert ts(stats["createdTime"]) == pytest.approx(T0, abs=0.001)


async def test_stall_freezes_bytes_and_recv_time_but_not_throughput(
    client: Client, sim: OmeSim, clock: FakeClock
) -> None:
    clock.advance(10)
    sim.stall("default/app/stream")
    stalled_at = clock.now
    clock.advance(30)
    sim.set_bitrate("default/app/stream", 1_000_000)  # no sample while nothing arrives
    stats = await client.ok("GET", STREAM_STATS)
    assert stats["totalBytesIn"] == 3_125_000
    assert ts(stats["lastRecvTime"]) == pytest.approx(stalled_at, abs=0.001)
    assert stats["avgThroughputIn"] == 2_500_000  # OME keeps the last sample (#1368)
    assert stats["lastThroughputIn"] == 312_500
    sim.resume("default/app/stream")
    clock.advance(8)
    stats = await client.ok("GET", STREAM_STATS)
    assert stats["totalBytesIn"] == 3_125_000 + 1_000_000
    assert stats["avgThroughputIn"] == 1_000_000
    assert stats["maxThroughputIn"] == 2_500_000


async def test_app_vhost_and_server_stats_are_sums_that_survive_a_republish(
    client: Client, sim: OmeSim, clock: FakeClock
) -> None:
    sim.add_stream("default/app/other", bitrate=1_000_000, connections={"webrtc": 1})
    clock.advance(8)
    app_path = "/v1/stats/current/vhosts/default/apps/app"
    app = await client.ok("GET", app_path)
    assert app["totalBytesIn"] == 2_500_000 + 1_000_000
    assert app["totalBytesOut"] == 2 * 2_500_000 + 1_000_000
    assert app["connections"]["llhls"] == 2 and app["connections"]["webrtc"] == 1
    assert app["avgThroughputIn"] == 3_500_000
    for path in ("/v1/stats/current/vhosts/default", "/v1/stats/current"):
        assert (await client.ok("GET", path))["totalBytesIn"] == app["totalBytesIn"]

    deleted = await client.call("DELETE", STREAM)
    assert deleted.body == {"statusCode": 200, "message": "OK"}
    clock.advance(8)
    sim.add_stream("default/app/stream", bitrate=2_500_000)
    clock.advance(8)
    stream = await client.ok("GET", STREAM_STATS)
    assert stream["totalBytesIn"] == 2_500_000  # counters restart with the new publish
    assert ts(stream["createdTime"]) == pytest.approx(T0 + 16, abs=0.001)
    app = await client.ok("GET", app_path)
    # the app keeps the first publish's bytes: 8 s + 8 s of `stream`, 24 s of `other`
    assert app["totalBytesIn"] == 2 * 2_500_000 + 3 * 1_000_000
    assert app["maxTotalConnections"] == 3 and app["totalConnections"] == 1


async def test_app_throughput_freezes_once_nothing_arrives(
    client: Client, sim: OmeSim, clock: FakeClock
) -> None:
    clock.advance(5)
    sim.remove_stream("default/app/stream")
    clock.advance(20)
    app = await client.ok("GET", "/v1/stats/current/vhosts/default/apps/app")
    assert app["avgThroughputIn"] == 2_500_000
    assert app["totalBytesIn"] == 2_500_000 // 8 * 5


# ---- faults -------------------------------------------------------------------------------------------


async def test_vanished_stream_is_listed_but_has_no_info_or_stats(
    client: Client, sim: OmeSim
) -> None:
    sim.vanish("default/app/stream")
    assert await client.ok("GET", f"{APP}/streams") == ["stream"]
    gone = error(404, "Could not find the stream: [default/#default#app/stream]")
    assert (await client.get(STREAM)).body == gone
    assert (await client.get(STREAM_STATS)).body == gone
    sim.vanish("default/app/stream", vanished=False)
    assert (await client.get(STREAM_STATS)).status == 200


async def test_delete_then_the_encoder_reconnects(clock: FakeClock) -> None:
    sim = OmeSim(TOKEN, clock=clock)
    sim.add_stream("default/app/stream", reconnect_after=5, connections={"webrtc": 1})
    async with serve(sim.app()) as base_url, aiohttp.ClientSession(base_url) as session:
        client = Client(session)
        clock.advance(10)
        assert (await client.call("DELETE", STREAM)).status == 200
        assert (await client.get(STREAM)).status == 404
        assert await client.ok("GET", f"{APP}/streams") == []
        clock.advance(4.9)
        assert (await client.get(STREAM_STATS)).status == 404
        clock.advance(3.1)  # back at +15, read at +18
        stats = await client.ok("GET", STREAM_STATS)
        assert ts(stats["createdTime"]) == pytest.approx(T0 + 15, abs=0.001)
        assert stats["totalBytesIn"] == 2_500_000 // 8 * 3
        assert stats["connections"]["webrtc"] == 1
        assert [(c.method, c.path, c.status) for c in sim.calls.mutating()] == [
            ("DELETE", STREAM, 200)
        ]


async def test_fail_burst_limited_by_count_and_path(client: Client, sim: OmeSim) -> None:
    sim.fail(count=2, path="/v1/stats/*")
    assert (await client.get("/v1/vhosts")).status == 200
    for _ in range(2):
        reply = await client.get(STREAM_STATS)
        assert reply.status == 500
        assert reply.body == error(500, "Internal Server Error")
    assert (await client.get(STREAM_STATS)).status == 200


async def test_fail_until_cleared(client: Client, sim: OmeSim) -> None:
    sim.fail(count=None)
    for _ in range(3):
        assert (await client.get("/v1/vhosts")).status == 500
    sim.clear_faults()
    assert (await client.get("/v1/vhosts")).status == 200


async def test_forced_401_and_bad_json(client: Client, sim: OmeSim) -> None:
    sim.unauthorized()
    reply = await client.get("/v1/vhosts")
    assert reply.status == 401 and reply.body == error(401, "Invalid credential")
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="OvenMediaEngine"'
    sim.bad_json(path="/v1/vhosts")
    reply = await client.get("/v1/vhosts")
    assert reply.status == 200 and reply.body is None
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.text)
    assert (await client.get("/v1/vhosts")).body["response"] == ["default"]


async def test_delay_holds_the_answer(client: Client, sim: OmeSim) -> None:
    sim.delay(0.5)
    with pytest.raises(asyncio.TimeoutError):
        async with client.session.get(
            "/v1/vhosts", headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.05)
        ) as resp:
            await resp.read()
    assert (await client.get("/v1/vhosts")).status == 200  # the one delayed request is spent


async def test_schedule_applies_each_fault_at_its_own_time(
    client: Client, sim: OmeSim, clock: FakeClock
) -> None:
    sim.schedule(20, "stall", stream="default/app/stream")
    sim.schedule(30, "fail")
    clock.advance(19)
    assert (await client.get(STREAM_STATS)).status == 200
    assert sim.pending()[0]["action"] == "stall"
    clock.advance(16)  # both due; the stall happened at +20, not now
    assert (await client.get(STREAM_STATS)).status == 500
    stats = await client.ok("GET", STREAM_STATS)
    assert ts(stats["lastRecvTime"]) == pytest.approx(T0 + 20, abs=0.001)
    assert stats["totalBytesIn"] == 2_500_000 // 8 * 20
    assert sim.pending() == []


def test_unknown_actions_are_refused(sim: OmeSim) -> None:
    with pytest.raises(ValueError, match="unknown action"):
        sim.schedule(0, "explode")
    with pytest.raises(KeyError):
        sim.stall("default/app/nosuch")


async def test_http_controls_drive_the_same_faults(
    client: Client, sim: OmeSim, clock: FakeClock
) -> None:
    controls = {"headers": None}
    reply = await client.post("/_sim/actions/stall", {"stream": "default/app/stream"}, **controls)
    assert reply.status == 200 and reply.body["ok"] is True
    assert sim.find_stream("default/app/stream").stalled
    reply = await client.post(
        "/_sim/actions/set_connections",
        {"stream": "default/app/stream", "connections": {"webrtc": 4}},
        **controls,
    )
    assert reply.status == 200
    reply = await client.post(
        "/_sim/schedule", {"in": 5, "action": "fail", "kwargs": {"count": 1}}, **controls
    )
    assert reply.status == 201 and reply.body["at"] == 5
    missing = await client.post("/_sim/actions/stall", {"stream": "default/app/nosuch"}, **controls)
    assert missing.status == 404
    unknown = await client.post("/_sim/actions/explode", {}, **controls)
    assert unknown.status == 404 and "unknown action" in unknown.body["error"]
    bad_kwargs = await client.post(
        "/_sim/actions/stall", {"stream": "x/y/z", "nope": 1}, **controls
    )
    assert bad_kwargs.status == 400
    clock.advance(6)
    assert (await client.get("/v1/vhosts")).status == 500
    state = await client.get("/_sim/state", headers=None)
    assert state.body["streams"]["default/app/stream"]["stalled"] is True
    assert state.body["version"] == "0.20.0" and state.body["elapsed"] == 6
    stats = await client.ok("GET", STREAM_STATS)
    assert stats["connections"]["webrtc"] == 4 and stats["connections"]["llhls"] == 0


async def test_call_log_keeps_every_request(client: Client, sim: OmeSim) -> None:
    await client.get("/v1/vhosts")
    body = {"eventFormat": "id3v2", "events": [{"frameType": "TIT2", "data": "x"}]}
    await client.post(f"{STREAM}:sendEvent", body)
    await client.post(f"{APP}:pushes", {})
    calls = (await client.get("/_sim/calls", headers=None)).body["calls"]
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("GET", "/v1/vhosts", 200),
        ("POST", f"{STREAM}:sendEvent", 200),
        ("POST", f"{APP}:pushes", 200),
    ]
    assert calls[1]["body"] == body and calls[1]["time"] == T0
    assert calls[0]["body"] is None
    await client.call("DELETE", "/_sim/calls", headers=None)
    assert not sim.calls


# ---- pushes and records ---------------------------------------------------------------------------------


PUSH = {
    "id": "yt",
    "stream": {"name": "stream", "variantNames": []},
    "protocol": "rtmp",
    "url": "rtmp://push.example.com/live/",
    "streamKey": "key",
}
PUSH_KEYS = {
    "id",
    "state",
    "vhost",
    "app",
    "stream",
    "protocol",
    "url",
    "streamKey",
    "sentBytes",
    "sentTime",
    "sequence",
    "totalsentBytes",
    "totalsentTime",
    "createdTime",
    "startTime",
    "finishTime",
    "isConfig",
}


async def test_push_lifecycle(client: Client, sim: OmeSim, clock: FakeClock) -> None:
    started = await client.ok("POST", f"{APP}:startPush", PUSH)
    assert started.keys() >= PUSH_KEYS
    assert started["state"] == "ready"
    assert started["url"] == "rtmp://push.example.com/live"
    assert started["stream"] == {"name": "stream", "trackIds": [], "variantNames": []}
    assert (started["vhost"], started["app"]) == ("default", "app")
    clock.advance(4)
    (push,) = await client.ok("GET", f"{APP}:pushes")
    assert push["state"] == "pushing"
    assert push["sentBytes"] == push["totalsentBytes"] == 2_500_000 // 8 * 4
    assert push["sentTime"] == 4000
    assert await client.ok("POST", f"{APP}:pushes", {"id": "other"}) == []

    sim.set_push_state("default/app", "yt", "error")
    (push,) = await client.ok("POST", f"{APP}:pushes", {"id": "yt"})
    assert push["state"] == "error"
    assert ts(push["finishTime"]) == pytest.approx(clock.now, abs=0.001)
    sim.set_push_state("default/app", "yt", None)

    stopped = await client.post(f"{APP}:stopPush", {"id": "yt"})
    assert stopped.body == {"statusCode": 200, "message": "OK"}
    (push,) = await client.ok("POST", f"{APP}:pushes", {})
    assert push["state"] == "stopping"
    clock.advance(1)
    assert await client.ok("POST", f"{APP}:pushes", {}) == []


async def test_push_waits_for_its_stream_and_follows_republishes(
    client: Client, sim: OmeSim, clock: FakeClock
) -> None:
    await client.ok("POST", f"{APP}:startPush", {**PUSH, "stream": {"name": "later"}})
    clock.advance(3)
    (push,) = await client.ok("GET", f"{APP}:pushes")
    assert push["state"] == "ready" and push["sentBytes"] == 0
    sim.add_stream("default/app/later", bitrate=800_000)
    clock.advance(5)
    (push,) = await client.ok("GET", f"{APP}:pushes")
    assert push["state"] == "pushing" and push["sentBytes"] == 500_000
    sim.remove_stream("default/app/later")
    sim.add_stream("default/app/later", bitrate=800_000)
    clock.advance(1)
    (push,) = await client.ok("GET", f"{APP}:pushes")
    assert push["sequence"] == 1
    assert push["sentBytes"] == 100_000 and push["totalsentBytes"] == 600_000


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({**PUSH, "protocol": "hls"}, 400, "Could not find protocol 'hls': [default/app]"),
        ({"protocol": "rtmp"}, 400, "There is no required parameter [ id stream.name url]"),
        ({**PUSH, "url": "http://x/y"}, 400, "Unsupported protocol"),
    ],
)
async def test_start_push_validation(
    client: Client, body: dict[str, Any], status: int, message: str
) -> None:
    reply = await client.post(f"{APP}:startPush", body)
    assert (reply.status, reply.body) == (status, error(status, message))


async def test_push_duplicates_and_unknown_ids(client: Client) -> None:
    await client.ok("POST", f"{APP}:startPush", PUSH)
    duplicate = await client.post(f"{APP}:startPush", PUSH)
    assert duplicate.body == error(400, "Duplicate ID")
    unknown = await client.post(f"{APP}:stopPush", {"id": "nosuch"})
    assert unknown.body == error(404, "Could not find id 'nosuch': [default/app]")
    no_id = await client.post(f"{APP}:stopPush", {})
    assert no_id.body == error(400, "There is no required parameter [ id]")


async def test_apps_without_push_or_file_answer_404(client: Client, sim: OmeSim) -> None:
    sim.add_app("default/plain", publishers=("webrtc", "llhls"))
    for action in ("pushes", "records", "startRecord", "stopPush"):
        reply = await client.post(f"/v1/vhosts/default/apps/plain:{action}", {"id": "x"})
        assert reply.body == error(404, "Could not find application: [default/plain]")
    reply = await client.get("/v1/vhosts/default/apps/plain:pushes")
    assert reply.status == 404


async def test_record_lifecycle(client: Client, sim: OmeSim, clock: FakeClock) -> None:
    body = {"id": "rec", "stream": {"name": "stream"}, "interval": 60000}
    started = await client.ok("POST", f"{APP}:startRecord", body)
    assert started["state"] == "recording"
    assert started["interval"] == 60000 and started["segmentationRule"] == "discontinuity"
    assert {"id", "vhost", "app", "stream", "createdTime", "filePath", "infoPath"} <= started.keys()
    duplicate = await client.post(f"{APP}:startRecord", body)
    assert duplicate.body == error(400, "Duplicate ID already exists")
    clock.advance(90)
    (record,) = await client.ok("POST", f"{APP}:records", {})
    assert record["totalRecordBytes"] == 2_500_000 // 8 * 90
    assert record["totalRecordTime"] == 90_000
    assert record["sequence"] == 1 and record["recordTime"] == 30_000
    assert (await client.ok("GET", f"{APP}:records"))[0]["id"] == "rec"

    sim.set_record_state("default/app", "rec", "error")
    (record,) = await client.ok("POST", f"{APP}:records", {"id": "rec"})
    assert record["state"] == "error" and "finishTime" in record
    sim.set_record_state("default/app", "rec", None)

    stopped = await client.ok("POST", f"{APP}:stopRecord", {"id": "rec"})
    assert stopped["state"] == "stopping"
    assert await client.ok("POST", f"{APP}:records", {}) == []
    unknown = await client.post(f"{APP}:stopRecord", {"id": "rec"})
    assert unknown.body == error(404, "There is no record information related to the ID [rec]")


async def test_record_of_a_missing_stream_is_ready(client: Client) -> None:
    started = await client.ok("POST", f"{APP}:startRecord", {"id": "r", "stream": {"name": "no"}})
    assert started["state"] == "ready"
    both = {"id": "r2", "stream": {"name": "stream"}, "interval": 1000, "schedule": "0 */1 *"}
    reply = await client.post(f"{APP}:startRecord", both)
    assert reply.body == error(400, "[Interval] and [Schedule] cannot be used at the same time")


async def test_action_bodies_must_be_json(client: Client) -> None:
    reply = await client.post(f"{APP}:pushes", data="not json")
    assert reply.status == 400 and reply.body["message"].startswith("[HTTP] * Line 1, Column 1")


# ---- :sendEvent -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": []}, "eventFormat(string) and events(array) are required"),
        ({"eventFormat": "id3v2"}, "eventFormat(string) and events(array) are required"),
        (
            {"eventFormat": "id3v2", "events": {}},
            "eventFormat(string) and events(array) are required",
        ),
        ({"eventFormat": "nope", "events": [{}]}, "eventFormat is not supported: [nope]"),
        ({"eventFormat": "id3v2", "events": []}, "events is empty"),
        ({"eventFormat": "id3v2", "events": [{"data": "x"}]}, "frameType is required in events"),
        (
            {"eventFormat": "id3v2", "events": [{"frameType": "APIC"}]},
            "frameType is not supported: [APIC]",
        ),
        (
            {"eventFormat": "id3v2", "eventType": "text", "events": [{"frameType": "TXXX"}]},
            "eventType is not supported: [text]",
        ),
    ],
)
async def test_send_event_validation(client: Client, sim: OmeSim, body: Any, message: str) -> None:
    reply = await client.post(f"{STREAM}:sendEvent", body)
    assert reply.body == error(400, message)
    assert sim.events == []


async def test_send_event_accepts_and_records(client: Client, sim: OmeSim) -> None:
    body = {
        "eventFormat": "id3v2",
        "eventType": "video",
        "urgent": True,
        "events": [
            {"frameType": "TXXX", "info": "streamwatch", "data": "OmeIngestStalled"},
            {"frameType": "PRIV", "info": "owner", "data": "x"},
        ],
    }
    reply = await client.post(f"{STREAM}:sendEvent", body)
    assert reply.body == {"statusCode": 200, "message": "OK"}
    (event,) = sim.events
    assert (event.stream, event.event_type, event.urgent) == ("default/app/stream", "video", True)
    assert event.events == body["events"]
    events = (await client.get("/_sim/events", headers=None)).body
    assert events[0]["stream"] == "default/app/stream"


async def test_send_event_body_and_stream_errors(client: Client) -> None:
    not_json = await client.post(f"{STREAM}:sendEvent", data="{")
    assert not_json.status == 400
    body = {"eventFormat": "id3v2", "events": [{"frameType": "TIT2", "data": "x"}]}
    missing = await client.post(f"{APP}/streams/nosuch:sendEvent", body)
    assert missing.body == error(404, "Could not find the stream: [default/#default#app/nosuch]")


# ---- HLS dump -------------------------------------------------------------------------------------------


def read_info(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


async def test_hls_dump_writes_files_and_info(
    client: Client, clock: FakeClock, tmp_path: Path
) -> None:
    out, info = tmp_path / "dump", tmp_path / "info" / "dump.xml"
    start = {
        "id": "d1",
        "outputStreamName": "stream",
        "outputPath": str(out),
        "playlist": ["llhls.m3u8"],
        "infoFile": str(info),
        "userData": "incident-42",
    }
    reply = await client.post(f"{STREAM}:startHlsDump", start)
    assert reply.body == {"statusCode": 200, "message": "OK"}
    root = read_info(info)
    assert root.tag == "DumpInfo"
    assert root.findtext("UserData") == "incident-42"
    assert root.findtext("Stream") == "stream"
    assert root.findtext("Status") == "Running"
    items = root.findall("Items/Item")
    assert [item.findtext("Seq") for item in items] == [str(n) for n in range(len(items))]
    files = [Path(item.findtext("File") or "") for item in items]
    assert all(f.is_absolute() and f.exists() for f in files)
    assert all(item.findtext("Time") for item in items)
    chunklists = sorted(out.glob("chunklist_*.m3u8"))
    assert chunklists and "#EXT-X-ENDLIST" not in chunklists[0].read_text()
    assert (out / "llhls.m3u8").exists()

    listed = await client.ok("POST", f"{STREAM}:hlsDumps", {"outputStreamName": "stream"})
    assert listed == [
        {
            "id": "d1",
            "outputStreamName": "stream",
            "outputPath": str(out),
            "infoFile": str(info),
            "userData": "incident-42",
            "enabled": True,
            "playlist": ["llhls.m3u8"],
        }
    ]
    duplicate = await client.post(f"{STREAM}:startHlsDump", start)
    assert duplicate.body == error(500, "Could not start dump: [default/app/stream] (Duplicate ID)")

    clock.advance(30)
    stop = {"outputStreamName": "stream", "id": "d1"}
    assert (await client.post(f"{STREAM}:stopHlsDump", stop)).status == 200
    assert read_info(info).findtext("Status") == "Completed"
    assert chunklists[0].read_text().rstrip().endswith("#EXT-X-ENDLIST")
    assert (await client.post(f"{STREAM}:stopHlsDump", stop)).status == 200  # again: still 200
    listed = await client.ok("POST", f"{STREAM}:hlsDumps", {"outputStreamName": "stream"})
    assert listed[0]["enabled"] is False


async def test_hls_dump_errors(client: Client, tmp_path: Path) -> None:
    base = {"id": "d", "outputStreamName": "stream", "outputPath": str(tmp_path / "o")}
    for field in ("id", "outputStreamName", "outputPath"):
        reply = await client.post(f"{STREAM}:startHlsDump", {**base, field: ""})
        assert reply.body == error(400, "id, outputStreamName and outputPath are required")
    unknown = await client.post(f"{STREAM}:startHlsDump", {**base, "outputStreamName": "x"})
    assert unknown.body == error(404, "Could not find output stream: [default/app/x]")
    existing = tmp_path / "exists.xml"
    existing.write_text("<DumpInfo/>")
    taken = await client.post(f"{STREAM}:startHlsDump", {**base, "infoFile": str(existing)})
    assert taken.status == 500
    stop = await client.post(f"{STREAM}:stopHlsDump", {"outputStreamName": "stream", "id": "no"})
    assert stop.body == error(
        500, "Could not stop dump: [default/app/stream] (Could not find dump info)"
    )
    no_output = await client.post(f"{STREAM}:hlsDumps", {})
    assert no_output.body == error(400, "outputStreamName is required")


async def test_hls_dump_of_a_deleted_stream_ends_in_error(
    client: Client, sim: OmeSim, tmp_path: Path
) -> None:
    info = tmp_path / "info.xml"
    start = {
        "id": "d",
        "outputStreamName": "stream",
        "outputPath": str(tmp_path / "o"),
        "infoFile": str(info),
    }
    assert (await client.post(f"{STREAM}:startHlsDump", start)).status == 200
    sim.remove_stream("default/app/stream")
    assert read_info(info).findtext("Status") == "Error"


# ---- layouts ----------------------------------------------------------------------------------------------


async def test_ten_thousand_stream_layout(clock: FakeClock) -> None:
    sim = OmeSim.with_layout(TOKEN, clock=clock, connections={"llhls": 1})
    assert len(sim.stream_paths()) == 10_000
    async with serve(sim.app()) as base_url, aiohttp.ClientSession(base_url) as session:
        client = Client(session)
        assert len(await client.ok("GET", "/v1/vhosts/default/apps")) == 50
        assert len(await client.ok("GET", "/v1/vhosts/default/apps/app7/streams")) == 200
        clock.advance(1)
        path = "/v1/stats/current/vhosts/default/apps/app7/streams/stream199"
        assert (await client.ok("GET", path))["totalBytesIn"] == 312_500
        server = await client.ok("GET", "/v1/stats/current")
        assert server["totalBytesIn"] == 10_000 * 312_500
        assert server["totalConnections"] == 10_000
