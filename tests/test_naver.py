"""NaverSource against the Live Station simulator over loopback HTTP, with injected clocks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import FakeClock
from prometheus_client import CollectorRegistry, generate_latest

from monitor.demo import demo_naver
from monitor.logs import fields as log_fields
from monitor.model import Entity, SourceRef
from monitor.sim.naver import NaverSim
from monitor.sim.serve import serve
from monitor.sources.base import SourceContext, SourceError, SourceMetrics
from monitor.sources.naver import source as naver_source
from monitor.sources.naver.client import sign_v2
from monitor.sources.naver.config import NaverSourceConfig
from monitor.sources.naver.source import CHANNEL_STATUSES, NaverSource
from monitor.store import Store

AK = "AKtest-9f3c2b1a"
SK = "SKtest-7d6e5f4a3b2c1d0e"
TOKEN = "cbtok-5a4b3c2d1e0f"
T0 = 1_750_000_000.0
MS = int(T0 * 1000)


@dataclass(frozen=True)
class HookContext(SourceContext):
    """A context with the daemon's refresh hook (whether or not base.py declares it)."""

    request_refresh: Callable[[SourceRef], None] | None = None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sim(clock: FakeClock) -> NaverSim:
    return NaverSim(AK, SK, clock)


@pytest.fixture
async def base_url(sim: NaverSim) -> AsyncIterator[str]:
    async with serve(sim.app()) as url:
        yield url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.sqlite3")
    yield s
    s.close()


def make_source(
    url: str,
    clock: Callable[[], float],
    store: Store | None = None,
    *,
    refresh: Callable[[SourceRef], None] | None = None,
    registry: CollectorRegistry | None = None,
    **overrides: Any,
) -> NaverSource:
    settings: dict[str, Any] = {
        "name": "kr",
        "url": url,
        "access_key": AK,
        "secret_key": SK,
        "callback_token": TOKEN,
        "timeout": "5s",
        **overrides,
    }
    context = HookContext(
        metrics=SourceMetrics(registry or CollectorRegistry()),
        clock=clock,
        store=store,
        request_refresh=refresh,
    )
    return NaverSource(NaverSourceConfig(**settings), context)


@pytest.fixture
async def source(base_url: str, clock: FakeClock, store: Store) -> AsyncIterator[NaverSource]:
    src = make_source(base_url, clock, store)
    await src.open()
    yield src
    await src.close()


def channels(entities: list[Entity]) -> dict[str, Entity]:
    return {e.labels["channel"]: e for e in entities if e.kind == "naver.channel"}


def counted(channel: Entity) -> dict[str, int]:
    """The channel's event counts that are not zero (every documented code starts at 0)."""
    return {code: n for code, n in channel.fields["events"].items() if n}


def events(entities: list[Entity]) -> list[Entity]:
    return [e for e in entities if e.kind == "naver.event"]


async def poll_error(source: NaverSource) -> SourceError:
    with pytest.raises(SourceError) as info:
        await source.poll()
    return info.value


# -- signature -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "uri", "ts", "ak", "sk", "expected"),
    [
        (
            "GET",
            "/api/v2/channels?pageNo=1&pageSizeNo=10",
            "1521787414578",
            "ACCESSKEY0000000000",
            "SECRETKEY000000000000000000000000000000000",
            "tC8J1+iNGSp9/Lk3gjdwsfMi/aEWj5EuQFZ8TOrXMK0=",
        ),
        (
            "PUT",
            "/api/v2/channels/ls-20200326194008-jk9ld/on",
            "1700000000000",
            "AK_EXAMPLE",
            "SK_EXAMPLE",
            "8sgRgQ9puAuxohxa3YlFZeQidYwg75bw7eqUSXFvg/o=",
        ),
        (
            "GET",
            "/api/v2/events/callbackEndpoint",
            "1700000000000",
            "AK_EXAMPLE",
            "SK_EXAMPLE",
            "m+alYvuH6XP1U5voPfHknF458plVaIR04C1+UCilNZE=",
        ),
    ],
)
def test_sign_v2_worked_examples(
    method: str, uri: str, ts: str, ak: str, sk: str, expected: str
) -> None:
    assert sign_v2(method, uri, ts, ak, sk) == expected


def test_sign_v2_matches_an_independent_hmac() -> None:
    uri = "/api/v2/channels?pageNo=2&pageSizeNo=3&channelName=%ED%95%9C"
    message = f"GET {uri}\n1750000000123\n{AK}".encode()
    expected = base64.b64encode(hmac.new(SK.encode(), message, hashlib.sha256).digest()).decode()
    assert sign_v2("GET", uri, "1750000000123", AK, SK) == expected
    assert sign_v2("get", uri, "1750000000123", AK, SK) == expected  # method upper-cased
    assert sign_v2("GET", uri, "1750000000124", AK, SK) != expected


async def test_requests_carry_documented_headers_signed_over_the_raw_uri(
    clock: FakeClock,
) -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def capture(request: web.Request) -> web.Response:
        seen.append((request.method, request.raw_path, dict(request.headers)))
        return web.json_response({"content": [], "total": 0})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", capture)
    async with serve(app) as url:
        source = make_source(url, clock, None, page_size=7, region="FKR")
        try:
            assert await source.poll() == []
        finally:
            await source.close()
    assert [(m, p) for m, p, _ in seen] == [
        ("GET", "/api/v2/channels?pageNo=1&pageSizeNo=7"),
        ("GET", "/api/v2/events"),
    ]
    for method, raw_path, headers in seen:
        assert headers["x-ncp-apigw-timestamp"] == str(MS)
        assert headers["x-ncp-iam-access-key"] == AK
        assert headers["x-ncp-region_code"] == "FKR"
        assert headers["Content-Type"] == "application/json"
        message = f"{method} {raw_path}\n{MS}\n{AK}".encode()
        digest = hmac.new(SK.encode(), message, hashlib.sha256).digest()
        assert headers["x-ncp-apigw-signature-v2"] == base64.b64encode(digest).decode()


# -- channels ------------------------------------------------------------------------------


async def test_channel_list_is_read_across_all_pages(sim: NaverSim, base_url: str, clock) -> None:
    for n in range(7):
        sim.add_channel(f"ls-page-{n}", f"ch{n}")
    source = make_source(base_url, clock, None, page_size=3, events=False)
    try:
        entities = await source.poll()
    finally:
        await source.close()
    assert sorted(channels(entities)) == [f"ls-page-{n}" for n in range(7)]
    assert [(r.path, r.query) for r in sim.calls] == [
        ("/api/v2/channels", {"pageNo": str(page), "pageSizeNo": "3"}) for page in (1, 2, 3)
    ]


async def test_exact_multiple_of_page_size_stops_at_total(
    sim: NaverSim, base_url: str, clock
) -> None:
    for n in range(6):
        sim.add_channel(f"ls-six-{n}")
    source = make_source(base_url, clock, None, page_size=3, events=False)
    try:
        assert len(channels(await source.poll())) == 6
    finally:
        await source.close()
    assert len(sim.calls) == 2


async def test_channel_fields_and_statuses_including_unknown(
    sim: NaverSim, source: NaverSource, clock: FakeClock
) -> None:
    live = sim.add_channel("ls-live", "live one", "READY", cdn_status="RUNNING")
    sim.set_status("ls-live", "PUBLISHING")
    live["totalPublishSeconds"] = 125
    live["isRecording"] = True
    sim.add_channel("ls-old", "old spelling", "PUBLISH")
    sim.add_channel("ls-new", "future", "HIBERNATING")
    got = channels(await source.poll())
    entity = got["ls-live"]
    assert entity.labels == {"channel": "ls-live"}
    assert entity.fields["channel_name"] == "live one"
    assert entity.fields["status"] == "PUBLISHING"
    assert entity.fields["status_raw"] == "PUBLISHING"
    assert entity.fields["is_recording"] is True
    assert entity.fields["cdn_status"] == "RUNNING"
    assert entity.fields["recent_publish_start_time"] == T0
    assert entity.fields["total_publish_seconds"] == 125
    assert entity.fields["created_time"] == T0
    assert entity.fields["present"] is True
    assert (got["ls-old"].fields["status"], got["ls-old"].fields["status_raw"]) == (
        "PUBLISHING",
        "PUBLISH",
    )
    assert got["ls-new"].fields["status"] == "HIBERNATING"
    assert "HIBERNATING" not in CHANNEL_STATUSES
    assert {"READY", "PUBLISHING", "BLOCK", "FORCE_BLOCK"} <= set(CHANNEL_STATUSES)
    assert got["ls-new"].fields["recent_publish_start_time"] is None


async def test_lenient_channel_values(clock: FakeClock) -> None:
    body = {
        "content": [
            {
                "channelId": "ls-s",
                "channelName": "strings",
                "channelStatus": "ready",
                "isRecording": "false",
                "recentPublishStartTime": "1750000000000",
                "totalPublishSeconds": "42",
                "useDvr": True,
                "cdn": None,
            },
            {"channelName": "no id: skipped"},
        ],
        "total": 2,
    }

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/v2/channels", handler)
    async with serve(app) as url:
        source = make_source(url, clock, None, events=False)
        try:
            got = channels(await source.poll())
        finally:
            await source.close()
    assert list(got) == ["ls-s"]
    fields = got["ls-s"].fields
    assert fields["status"] == "READY" and fields["status_raw"] == "ready"
    assert fields["is_recording"] is False
    assert fields["recent_publish_start_time"] == T0
    assert fields["total_publish_seconds"] == 42
    assert fields["use_dvr"] is True
    assert fields["cdn_status"] is None


# -- auth ----------------------------------------------------------------------------------


async def test_wrong_secret_is_unauthorized(base_url: str, clock: FakeClock) -> None:
    source = make_source(base_url, clock, None, secret_key="wrong-secret")
    try:
        error = await poll_error(source)
    finally:
        await source.close()
    assert (error.reason, error.code, error.status) == ("unauthorized", "200", 401)
    assert error.label == "unauthorized:200"


async def test_stale_timestamp_is_unauthorized(base_url: str) -> None:
    behind = FakeClock(T0 - 301)  # the source's clock is 5 min 1 s behind the gateway's
    source = make_source(base_url, behind, None)
    try:
        error = await poll_error(source)
        assert error.label == "unauthorized:200"
        behind.now = T0 - 200
        assert await source.poll() == []
    finally:
        await source.close()


async def test_missing_access_key_header_is_unauthorized(base_url: str, clock: FakeClock) -> None:
    source = make_source(base_url, clock, None, access_key="")
    try:
        error = await poll_error(source)
    finally:
        await source.close()
    assert error.label == "unauthorized:200"


# -- failure classes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inject", "label", "status"),
    [
        (lambda sim: sim.fail(500), "http_5xx:EXCEPTION", 500),
        (lambda sim: sim.fail(503), "http_5xx:EXCEPTION", 503),
        (lambda sim: sim.fail(code="500"), "http_5xx:500", 503),
        (lambda sim: sim.unauthorized(), "unauthorized:200", 401),
        (lambda sim: sim.fail(code="230"), "unauthorized:230", 403),
        (
            lambda sim: sim.fail(400, "POLICY_CHECK_FAILED"),
            "unauthorized:POLICY_CHECK_FAILED",
            400,
        ),
        (lambda sim: sim.fail(404, "NOT_FOUND"), "http_4xx:NOT_FOUND", 404),
        (lambda sim: sim.fail(400, "INVALID_FORMAT"), "http_4xx:INVALID_FORMAT", 400),
        (lambda sim: sim.fail(code="100"), "http_4xx:100", 400),
        (lambda sim: sim.bad_json(), "bad_response", None),
    ],
)
async def test_failure_classes_and_error_codes(
    sim: NaverSim, source: NaverSource, inject, label: str, status: int | None
) -> None:
    inject(sim)
    error = await poll_error(source)
    assert error.label == label
    assert error.status == status


async def test_rate_limited_carries_retry_after(sim: NaverSim, source: NaverSource) -> None:
    sim.fail(429, retry_after=12)
    error = await poll_error(source)
    assert (error.label, error.retry_after) == ("rate_limited:420", 12.0)
    sim.clear_faults()
    sim.fail(code="400")  # quota exceeded
    assert (await poll_error(source)).reason == "rate_limited"


async def test_timeout(sim: NaverSim, base_url: str, clock: FakeClock) -> None:
    sim.delay(30)  # released when the sim shuts down; the source gives up after 100 ms
    source = make_source(base_url, clock, None, timeout="100ms")
    try:
        error = await poll_error(source)
    finally:
        await source.close()
    assert error.reason == "timeout"


async def test_connect_failure(clock: FakeClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = make_source(f"http://127.0.0.1:{port}", clock, None)
    try:
        error = await poll_error(source)
    finally:
        await source.close()
    assert error.reason == "connect"


async def test_non_object_and_bad_content_are_bad_response(clock: FakeClock) -> None:
    answers = iter([[1, 2], {"content": {"not": "a list"}}])

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(next(answers))

    app = web.Application()
    app.router.add_get("/api/v2/channels", handler)
    async with serve(app) as url:
        source = make_source(url, clock, None)
        try:
            assert (await poll_error(source)).reason == "bad_response"
            assert (await poll_error(source)).reason == "bad_response"
        finally:
            await source.close()


# -- events --------------------------------------------------------------------------------


async def test_first_start_reports_recent_events_only(
    sim: NaverSim, source: NaverSource, clock: FakeClock
) -> None:
    sim.add_channel("ls-e", "e", "READY")
    sim.add_event("ls-e", "STREAM_RESERVE", timestamp=T0 - 86400)  # history
    sim.add_event("ls-e", "PUBLISH_START", timestamp=T0 - 30)
    entities = await source.poll()
    assert [(e.labels["event"], e.fields["timestamp"]) for e in events(entities)] == [
        ("PUBLISH_START", T0 - 30)
    ]
    assert counted(channels(entities)["ls-e"]) == {"PUBLISH_START": 1}


async def test_events_reported_once_and_counted(
    sim: NaverSim, source: NaverSource, clock: FakeClock
) -> None:
    sim.add_channel("ls-e", "e", "READY")
    assert events(await source.poll()) == []
    clock.now += 10
    sim.set_status("ls-e", "PUBLISHING")
    first = await source.poll()
    (event,) = events(first)
    assert event.labels == {
        "channel": "ls-e",
        "event": "PUBLISH_START",
        "event_id": f"ls-e:PUBLISH_START:{MS + 10_000}",
    }
    assert event.fields["via"] == "poll"
    assert event.fields["log_level"] == "INFO"
    assert event.fields["timestamp"] == T0 + 10
    assert event.fields["description"] == "e channel publishing has started."
    assert event.fields["channel_name"] == "e"
    clock.now += 10
    second = await source.poll()
    assert events(second) == []  # instantaneous: only in the first snapshot
    assert counted(channels(second)["ls-e"]) == {"PUBLISH_START": 1}
    sim.set_status("ls-e", "READY")
    clock.now += 1
    sim.set_status("ls-e", "PUBLISHING")
    third = await source.poll()  # in time order, whatever order the list had
    assert [e.labels["event"] for e in events(third)] == ["PUBLISH_END", "PUBLISH_START"]
    assert counted(channels(third)["ls-e"]) == {"PUBLISH_START": 2, "PUBLISH_END": 1}


async def test_failed_poll_loses_no_event(sim: NaverSim, source: NaverSource, clock) -> None:
    sim.add_channel("ls-f")
    await source.poll()
    sim.add_event("ls-f", "STREAM_UPDATE")
    sim.fail(500, path="/api/v2/events")
    await poll_error(source)
    assert [e.labels["event"] for e in events(await source.poll())] == ["STREAM_UPDATE"]


async def test_event_cursor_survives_a_restart(
    sim: NaverSim, base_url: str, clock: FakeClock, store: Store
) -> None:
    sim.add_channel("ls-r", "r", "READY")
    first = make_source(base_url, clock, store)
    try:
        await first.poll()
        clock.now += 10
        sim.set_status("ls-r", "PUBLISHING")  # PUBLISH_START at +10
        assert [e.labels["event"] for e in events(await first.poll())] == ["PUBLISH_START"]
    finally:
        await first.close()

    # Down for an hour; meanwhile two events, one of them older than the first one seen
    # ("late" in the list) but never reported.
    clock.now += 3600
    sim.set_status("ls-r", "READY")  # PUBLISH_END at +3610
    sim.add_event("ls-r", "THUMBNAIL_CREATE", timestamp=T0 + 5)

    second = make_source(base_url, clock, store)  # same Store file: a daemon restart
    try:
        after = await second.poll()
        assert sorted(e.labels["event"] for e in events(after)) == [
            "PUBLISH_END",
            "THUMBNAIL_CREATE",
        ]
        assert counted(channels(after)["ls-r"]) == {"PUBLISH_END": 1, "THUMBNAIL_CREATE": 1}
        assert events(await second.poll()) == []
    finally:
        await second.close()

    third = make_source(base_url, clock, Store(store.path))
    try:
        assert events(await third.poll()) == []
        assert counted(channels(await third.poll())["ls-r"]) == {}
    finally:
        await third.close()


async def test_restart_is_safe_even_if_seen_events_were_pruned(
    sim: NaverSim, base_url: str, clock: FakeClock, store: Store
) -> None:
    sim.add_channel("ls-p")
    first = make_source(base_url, clock, store)
    try:
        await first.poll()
        sim.add_event("ls-p", "STREAM_UPDATE")
        assert len(events(await first.poll())) == 1
    finally:
        await first.close()
    clock.now += 86400 * 3
    store.forget_events_before(clock() + 1)  # the daemon's retention cleanup ran
    second = make_source(base_url, clock, store)
    try:
        assert events(await second.poll()) == []
    finally:
        await second.close()


# -- callbacks -----------------------------------------------------------------------------


async def test_callback_and_poll_are_counted_once(
    sim: NaverSim, base_url: str, clock: FakeClock, store: Store
) -> None:
    refreshed: list[SourceRef] = []
    source = make_source(base_url, clock, store, refresh=refreshed.append)
    try:
        sim.add_channel("ls-cb", "cb", "READY")
        await source.poll()
        clock.now += 5
        sim.set_status("ls-cb", "PUBLISHING")  # in the event list now
        payload = {
            "id": "1234",
            "logLevel": "INFO",
            "channelId": "ls-cb",
            "event": "publish_start",
            "timestamp": str(MS + 5000),
        }
        assert source.accept_callback(payload) == 1
        assert refreshed == [SourceRef("naver", "kr")]
        assert source.accept_callback(payload) == 0  # a retried delivery
        assert refreshed == [SourceRef("naver", "kr")]
        entities = await source.poll()
        (event,) = events(entities)
        assert event.fields["via"] == "callback"
        assert event.fields["callback_id"] == "1234"
        assert event.labels["event_id"] == f"ls-cb:PUBLISH_START:{MS + 5000}"
        assert counted(channels(entities)["ls-cb"]) == {"PUBLISH_START": 1}
        assert events(await source.poll()) == []
    finally:
        await source.close()
    # The poll saw it first: a late callback for the same event is not new, even after a restart.
    again = make_source(base_url, clock, store)
    try:
        payload["timestamp"] = MS + 5000
        assert again.accept_callback(payload) == 0
    finally:
        await again.close()


async def test_callback_posted_by_the_sim_reaches_the_source(
    sim: NaverSim, source: NaverSource, clock: FakeClock
) -> None:
    """End to end: the sim POSTs to a receiver (web.py's job, stood in for here)."""

    async def receive(request: web.Request) -> web.Response:
        if not source.check_callback_token(request.match_info["token"]):
            return web.Response(status=404)
        try:
            fresh = source.accept_callback(await request.json())
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"new": fresh})

    receiver = web.Application()
    receiver.router.add_post("/callbacks/naver/{token}", receive)
    sim.callback_as_strings = True  # the 2024 doc's typing
    async with serve(receiver) as receiver_url:
        sim.add_channel("ls-push", "push", "READY")
        await source.poll()
        sim.set_callback_url(f"{receiver_url}/callbacks/naver/wrong-token")
        sim.set_status("ls-push", "PUBLISHING")
        assert await sim.deliver_callbacks() == 0  # 404 from the receiver
        sim.set_callback_url(f"{receiver_url}/callbacks/naver/{TOKEN}")
        sim.set_status("ls-push", "READY")
        assert await sim.deliver_callbacks() == 1
    entities = await source.poll()
    got = {(e.labels["event"], e.fields["via"]) for e in events(entities)}
    assert got == {("PUBLISH_START", "poll"), ("PUBLISH_END", "callback")}
    assert counted(channels(entities)["ls-push"]) == {"PUBLISH_START": 1, "PUBLISH_END": 1}


async def test_callback_events_wait_through_a_failed_poll(
    sim: NaverSim, source: NaverSource, clock: FakeClock
) -> None:
    payload = {"id": 1, "logLevel": "INFO", "channelId": "ls-q", "event": "X", "timestamp": MS}
    assert source.accept_callback(payload) == 1
    sim.fail(500)
    await poll_error(source)
    assert [e.labels["event"] for e in events(await source.poll())] == ["X"]


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ([], "JSON object"),
        ("text", "JSON object"),
        ({"event": "PUBLISH_END", "timestamp": MS}, "channelId"),
        ({"channelId": "", "event": "PUBLISH_END", "timestamp": MS}, "channelId"),
        ({"channelId": "ls-1", "timestamp": MS}, "event"),
        ({"channelId": "ls-1", "event": 7, "timestamp": MS}, "event"),
        ({"channelId": "ls-1", "event": "PUBLISH_END"}, "timestamp"),
        ({"channelId": "ls-1", "event": "PUBLISH_END", "timestamp": "yesterday"}, "timestamp"),
        ({"channelId": "ls-1", "event": "PUBLISH_END", "timestamp": True}, "timestamp"),
        ({"channelId": "ls-1", "event": "PUBLISH_END", "timestamp": -5}, "timestamp"),
    ],
)
async def test_malformed_callback_is_refused(
    source: NaverSource, payload: Any, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        source.accept_callback(payload)
    assert events(await source.poll()) == []


def test_callback_token_check(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(naver_source.hmac, "compare_digest", spy)
    source = make_source("http://127.0.0.1:9", clock)
    assert source.check_callback_token(TOKEN) is True
    assert source.check_callback_token(TOKEN + "x") is False
    assert source.check_callback_token(TOKEN[:-1] + "Z") is False
    assert source.check_callback_token("") is False
    assert len(calls) == 4  # every answer came from the constant-time comparison
    unconfigured = make_source("http://127.0.0.1:9", clock, callback_token=None)
    assert unconfigured.check_callback_token("") is False
    assert unconfigured.check_callback_token(TOKEN) is False
    empty = make_source("http://127.0.0.1:9", clock, callback_token="")
    assert empty.check_callback_token("") is False


# -- actions -------------------------------------------------------------------------------


async def test_actions_change_the_sim_and_are_logged(sim: NaverSim, source: NaverSource) -> None:
    sim.add_channel("ls-act", "act", "PUBLISHING")
    entity = await source.start_recording("ls-act")
    assert entity is not None and entity.fields["is_recording"] is True
    assert sim.channels["ls-act"]["isRecording"] is True
    assert await source.stop_recording("ls-act") is None
    assert sim.channels["ls-act"]["isRecording"] is False
    entity = await source.stop_channel("ls-act")
    assert entity is not None and entity.fields["status"] == "BLOCK"
    assert sim.channels["ls-act"]["channelStatus"] == "BLOCK"
    entity = await source.remove_suspension("ls-act")
    assert entity is not None and entity.fields["status"] == "READY"
    assert (await source.get_channel("ls-act")).fields["status"] == "READY"
    await source.restart_channel("ls-act")
    assert [(c.method, c.path, c.status) for c in sim.calls.mutating()] == [
        ("PUT", "/api/v2/channels/ls-act/startRecord", 200),
        ("PUT", "/api/v2/channels/ls-act/stopRecord", 200),
        ("PUT", "/api/v2/channels/ls-act/off", 200),
        ("PUT", "/api/v2/channels/ls-act/on", 200),
        ("PUT", "/api/v2/channels/ls-act/off", 200),
        ("PUT", "/api/v2/channels/ls-act/on", 200),
    ]


async def test_channel_id_is_signed_exactly_as_sent(sim: NaverSim, source: NaverSource) -> None:
    # Percent-escapes an HTTP library would "normalise" (%21 → !) must reach the wire as signed.
    odd = "ls-x!y(1)'*"
    sim.add_channel(odd, "odd", "READY")
    entity = await source.stop_channel(odd)
    assert entity is not None and entity.labels["channel"] == odd
    assert sim.calls[-1].status == 200
    assert sim.calls[-1].path == "/api/v2/channels/ls-x%21y%281%29%27%2A/off"


async def test_action_errors_carry_the_live_station_code(
    sim: NaverSim, source: NaverSource
) -> None:
    sim.add_channel("ls-blocked", "b", "FORCE_BLOCK")
    with pytest.raises(SourceError) as info:
        await source.stop_channel("ls-blocked")
    assert info.value.label == "http_4xx:NOT_AVAILABLE"
    with pytest.raises(SourceError) as info:
        await source.start_recording("ls-missing")
    assert info.value.label == "http_4xx:NOT_FOUND"
    assert [c.status for c in sim.calls.mutating()] == [400, 404]
    with pytest.raises(ValueError):
        await source.stop_channel("")


# -- secrets -------------------------------------------------------------------------------


async def test_no_secret_in_logs_errors_reprs_or_metrics(
    sim: NaverSim, base_url: str, clock: FakeClock, store: Store, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = CollectorRegistry()
    source = make_source(base_url, clock, store, registry=registry)
    texts: list[str] = [repr(source), repr(source.client), str(source.__dict__)]
    sim.add_channel("ls-s", "s", "PUBLISHING")
    try:
        await source.poll()
        echo = lambda: sim.fail(500, "EXCEPTION", f"key {AK} secret {SK}")  # noqa: E731
        rate_limit = lambda: sim.fail(429, retry_after=30)  # noqa: E731
        for inject in (sim.unauthorized, sim.fail, sim.bad_json, rate_limit, echo):
            sim.clear_faults()
            inject()
            error = await poll_error(source)
            texts += [str(error), repr(error), error.message, error.label]
        sim.clear_faults()
        bad = make_source(base_url, clock, store, secret_key="wrong-" + SK)
        error = await poll_error(bad)
        texts += [str(error), repr(error)]
        await bad.close()
        source.accept_callback({"channelId": "ls-s", "event": "E", "timestamp": MS})
        with pytest.raises(ValueError) as info:
            source.accept_callback({"channelId": "ls-s"})
        texts.append(str(info.value))
        source.check_callback_token("nope")
        await source.stop_channel("ls-s")
    finally:
        await source.close()
    texts += [caplog.text, generate_latest(registry).decode()]
    texts += [str(log_fields(r)) for r in caplog.records]
    joined = "\n".join(texts)
    assert "unauthorized:200" in joined  # the texts were really collected
    assert "key [redacted] secret [redacted]" in joined  # an echoed secret is cut out
    for secret in (SK, AK, TOKEN):
        assert secret not in joined


# -- the demo script, as the daemon will see it ---------------------------------------------


async def test_demo_sim_as_seen_by_the_source(clock: FakeClock, store: Store) -> None:
    sim = demo_naver(AK, SK, clock)
    async with serve(sim.app()) as url:
        source = make_source(url, clock, store)
        try:
            start = await source.poll()
            assert events(start) == []  # the demo's history is older than the late window
            statuses = {
                e.fields["channel_name"]: e.fields["status"] for e in channels(start).values()
            }
            assert statuses == {
                "news": "PUBLISHING",
                "sports": "PUBLISHING",
                "archive": "READY",
                "legacy": "PUBLISHING",  # sent as PUBLISH
            }
            clock.now = T0 + 20
            at20 = await source.poll()
            assert [(e.fields["channel_name"], e.labels["event"]) for e in events(at20)] == [
                ("news", "PUBLISH_END")
            ]
            clock.now = T0 + 35
            at35 = await source.poll()
            assert events(at35) == []
            by_name = {e.fields["channel_name"]: e for e in channels(at35).values()}
            assert by_name["sports"].fields["status"] == "FORCE_BLOCK"
            assert counted(by_name["news"]) == {"PUBLISH_END": 1}
        finally:
            await source.close()


async def test_an_event_stamped_in_the_future_does_not_push_the_cursor_past_real_events(
    sim: NaverSim, source: NaverSource, clock: FakeClock
) -> None:
    channel = sim.add_channel(name="ch")["channelId"]
    await source.poll()
    sim.add_event(channel, "STREAM_UPDATE", timestamp=clock.now + 86400)  # a clock gone wrong
    clock.now += 5
    assert [e.labels["event"] for e in events(await source.poll())] == ["STREAM_UPDATE"]
    clock.now += 5
    sim.add_event(channel, "PUBLISH_END")
    clock.now += 5
    assert [e.labels["event"] for e in events(await source.poll())] == ["PUBLISH_END"]


async def test_every_documented_event_code_starts_at_zero(
    sim: NaverSim, source: NaverSource
) -> None:
    sim.add_channel("ls-zero", "zero")
    [channel] = [e for e in await source.poll() if e.kind == "naver.channel"]
    assert channel.fields["events"]["PUBLISH_END"] == 0
    assert len(channel.fields["events"]) >= 14
