"""The SmartSTREAM source against the simulator over loopback HTTP, with one fake clock for both
(its sleep advances time, so rate-limit waits and restart waits cost nothing real)."""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import asynccontextmanager
from datetime import datetime

import pytest
from aiohttp import web
from conftest import FakeClock
from prometheus_client import CollectorRegistry

from monitor.logs import fields as log_fields
from monitor.sim.serve import serve
from monitor.sim.smartstream import (
    ENCODE_STATUS_ERROR,
    ENCODE_STATUS_PENDING,
    ENCODE_STATUS_RUNNING,
    ENCODE_STATUS_STOPPED,
    JOB_FAILED,
    SmartstreamSim,
)
from monitor.sources.base import SourceContext, SourceError, SourceMetrics
from monitor.sources.smartstream.config import SmartstreamSourceConfig
from monitor.sources.smartstream.source import (
    JOB_ENCODE_STATUSES,
    LIVE_EVENT_ENCODE_STATUSES,
    RestartError,
    SmartstreamSource,
)

M = "nttsmc"
KEY = "key-Zq81-secret"
TOKEN = "token-Xy77-secret"
MAIL = "ops@example.com"
PASSWORD = "pw-Vb42-secret"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry) -> SourceMetrics:
    return SourceMetrics(registry)


def make_sim(clock: FakeClock, **kwargs) -> SmartstreamSim:
    kwargs.setdefault("static_tokens", (TOKEN,))
    return SmartstreamSim(
        merchant_id=M, api_key=KEY, mail_address=MAIL, password=PASSWORD, clock=clock, **kwargs
    )


@pytest.fixture
def sim(clock) -> SmartstreamSim:
    return make_sim(clock)


def make_config(url: str, **overrides) -> SmartstreamSourceConfig:
    data = {"name": "main", "url": url, "merchant_id": M, "api_key": KEY, "token": TOKEN}
    data.update(overrides)
    return SmartstreamSourceConfig.model_validate({k: v for k, v in data.items() if v is not None})


@pytest.fixture
def connect(sim, clock, metrics):
    """`async with connect(**config) as source`: a source opened against the simulator."""

    @asynccontextmanager
    async def connect(app_sim: SmartstreamSim | None = None, source_kwargs=None, **overrides):
        async with serve((app_sim or sim).app()) as base:
            source = SmartstreamSource(
                make_config(base, **overrides),
                SourceContext(metrics=metrics, clock=clock),
                sleep=clock.sleep,
                **(source_kwargs or {}),
            )
            await source.open()
            try:
                yield source
            finally:
                await source.close()

    return connect


def list_pages(sim: SmartstreamSim, resource: str) -> list[tuple[str, str]]:
    return [
        (r.query.get("page"), r.query.get("limit"))
        for r in sim.calls
        if r.path.endswith("/" + resource)
    ]


def throttled(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value(
        "streamwatch_source_requests_throttled_total", {"kind": "smartstream", "source": "main"}
    )
    return value or 0.0


# --- poll


async def test_poll_follows_every_page(sim, clock, connect):
    for n in range(7):
        sim.add_live_event(name=f"ev{n}", created_at=clock.now + n)
    async with connect(page_size=3, jobs=False) as source:
        entities = await source.poll()
    assert sorted(e.fields["name"] for e in entities) == [f"ev{n}" for n in range(7)]
    assert list_pages(sim, "live_events") == [("1", "3"), ("2", "3"), ("3", "3")]
    assert not list_pages(sim, "jobs")


async def test_poll_reads_a_last_empty_page_when_items_fill_the_pages(sim, connect):
    for n in range(6):
        sim.add_live_event(name=f"ev{n}")
    async with connect(page_size=3, jobs=False) as source:
        assert len(await source.poll()) == 6
    assert [p for p, _ in list_pages(sim, "live_events")] == ["1", "2", "3"]


async def test_poll_does_not_trust_count(clock, connect):
    sim = make_sim(clock, count_mode="page")  # count = items in this page
    for n in range(7):
        sim.add_live_event(name=f"ev{n}")
    async with connect(sim, page_size=3, jobs=False) as source:
        assert len(await source.poll()) == 7


async def test_live_event_entity_fields(sim, clock, connect):
    sim.add_live_event(
        id="ea74ba39162f49d89221daebd02c215a",
        ref_id="test_live01",
        name="Test Live",
        encode_status=ENCODE_STATUS_RUNNING,
        input_sources=["rtmp://a/live/1", "rtmp://b/live/1"],
        media_id="6dd29e197f0f4a2ab7161db94b44b8c6",
        live_encode_start_at=clock.now - 60.5,
        enable_live_to_file_flag=True,
    )
    sim.add_live_event(id="plain", ref_id="", media_id="", encode_status="encode_status_new")
    async with connect(jobs=False) as source:
        entities = {e.labels["live_event"]: e for e in await source.poll()}
    e = entities["ea74ba39162f49d89221daebd02c215a"]
    assert e.kind == "smartstream.live_event"
    assert dict(e.labels) == {"merchant": M, "live_event": "ea74ba39162f49d89221daebd02c215a"}
    assert e.fields["ref_id"] == "test_live01"
    assert e.fields["name"] == "Test Live"
    assert e.fields["encode_status"] == ENCODE_STATUS_RUNNING
    assert e.fields["running"] is True
    assert e.fields["input_sources"] == 2
    assert e.fields["media_id"] == "6dd29e197f0f4a2ab7161db94b44b8c6"
    assert e.fields["live_encode_start_at"] == pytest.approx(clock.now - 60.5, abs=0.001)
    assert e.fields["live_encode_end_at"] is None
    assert e.fields["created_at"] == pytest.approx(clock.now, abs=0.001)
    assert e.fields["updated_at"] == pytest.approx(clock.now, abs=0.001)
    assert e.fields["live_to_file"] is True and e.fields["ad_insertion"] is False
    assert isinstance(e.fields["live_event_profile_id"], str)
    assert e.present
    plain = entities["plain"]
    assert plain.fields["ref_id"] is None and plain.fields["media_id"] is None
    assert plain.fields["encode_status"] == "encode_status_new"  # unknown values pass raw
    assert plain.fields["running"] is False


async def test_job_entity_fields(sim, clock, connect):
    sim.add_job(id="j1", ref_id="up-1", encode_status=1, source_type="url", media_id="m1")
    async with connect() as source:
        (job,) = [e for e in await source.poll() if e.kind == "smartstream.job"]
        sim.set_job_status("j1", JOB_FAILED)
        again = await source.get_job("ref:up-1")
    assert dict(job.labels) == {"merchant": M, "job": "j1"}
    assert job.fields["ref_id"] == "up-1" and job.fields["media_id"] == "m1"
    assert job.fields["encode_status"] == 1 and job.fields["source_type"] == "url"
    assert job.fields["created_at"] == pytest.approx(clock.now, abs=0.001)
    assert job.fields["observed_at"] == clock.now
    assert again.fields["encode_status"] == JOB_FAILED


def test_known_status_tables():
    assert "encode_status_running" in LIVE_EVENT_ENCODE_STATUSES
    assert "encode_status_pending" in LIVE_EVENT_ENCODE_STATUSES
    assert JOB_ENCODE_STATUSES == ()


# --- auth


async def test_wrong_api_key_is_unauthorized(connect):
    async with connect(api_key="not-the-key") as source:
        with pytest.raises(SourceError) as info:
            await source.poll()
    assert info.value.reason == "unauthorized"
    assert info.value.label == "unauthorized:UNAUTHORIZED"


async def test_wrong_fixed_token_is_unauthorized_without_retry(sim, connect):
    async with connect(token="not-the-token") as source:
        with pytest.raises(SourceError) as info:
            await source.poll()
    assert info.value.reason == "unauthorized"
    assert len(sim.calls) == 1  # a fixed token cannot be renewed: no retry


async def test_token_is_fetched_and_renewed_before_it_expires(clock, connect):
    sim = make_sim(clock, token_ttl=600)
    sim.add_live_event(name="a")
    async with connect(sim, token=None, mail_address=MAIL, password=PASSWORD) as source:
        await source.poll()
        assert sim.tokens_issued == 1
        clock.now += 530  # renew 60 s before the expiration
        await source.poll()
        assert sim.tokens_issued == 1
        clock.now += 15
        await source.poll()
        assert sim.tokens_issued == 2
    token_calls = [r for r in sim.calls if r.path.endswith("/auth-token/")]
    assert [r.status for r in token_calls] == [200, 200]
    assert all(r.status == 200 for r in sim.calls)  # never used an expired token


async def test_token_is_renewed_on_401_and_the_call_retried_once(sim, connect):
    sim.add_live_event(name="a")
    async with connect(token=None, mail_address=MAIL, password=PASSWORD) as source:
        await source.poll()
        sim.revoke_tokens()
        entities = await source.poll()
        assert len(entities) == 1 and sim.tokens_issued == 2

        sim.unauthorized(count=2, path="*/live_events")
        with pytest.raises(SourceError) as info:
            await source.poll()
    assert info.value.reason == "unauthorized"
    tail = [(r.path.rsplit("/", 2)[-2:], r.status) for r in sim.calls][-3:]
    assert [status for _, status in tail] == [401, 200, 401]  # GET, auth-token, GET: no 3rd try


async def test_wrong_password_is_unauthorized(connect):
    async with connect(token=None, mail_address=MAIL, password="wrong") as source:
        with pytest.raises(SourceError) as info:
            await source.poll()
    assert info.value.label == "unauthorized:UNAUTHORIZED"
    assert "auth-token" in str(info.value)


# --- failure classes


@pytest.mark.parametrize(
    ("fault", "label", "status"),
    [
        ({"status": 500, "code": "SERVER_ERROR"}, "http_5xx:SERVER_ERROR", 500),
        ({"status": 400, "code": "BAD_REQUEST"}, "http_4xx:BAD_REQUEST", 400),
        ({"status": 403, "code": "FORBIDDEN"}, "unauthorized:FORBIDDEN", 403),
    ],
)
async def test_http_errors_carry_the_documented_code(sim, connect, fault, label, status):
    sim.fail(**fault)
    async with connect() as source:
        with pytest.raises(SourceError) as info:
            await source.poll()
    assert info.value.label == label
    assert info.value.status == status
    assert str(info.value).startswith(f"{label}: GET live_events page 1: HTTP {status}")


async def test_vanished_live_event_is_a_4xx_with_its_code(sim, connect):
    sim.add_live_event(id="ev", ref_id="show")
    async with connect() as source:
        assert (await source.get_live_event("ref:show")).labels["live_event"] == "ev"
        sim.vanish("ev")
        assert await source.poll() == []  # gone from the list: not an error
        with pytest.raises(SourceError) as info:
            await source.get_live_event("ev")
    assert info.value.label == "http_4xx:LIVE_EVENT_NOT_FOUND"


async def test_bad_json_is_bad_response(sim, connect):
    sim.bad_json()
    async with connect() as source:
        with pytest.raises(SourceError) as info:
            await source.poll()
    assert info.value.label == "bad_response"


async def test_json_of_the_wrong_shape_is_bad_response(clock, metrics):
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"count": 1, "items": []})

    app = web.Application()
    app.router.add_get("/v1/merchants/{m}/live_events", handler)
    async with serve(app) as base:
        source = SmartstreamSource(make_config(base), SourceContext(metrics, clock))
        try:
            with pytest.raises(SourceError) as info:
                await source.poll()
        finally:
            await source.close()
    assert info.value.reason == "bad_response" and "live_events" in info.value.message


async def test_a_page_that_repeats_is_bad_response(clock, metrics):
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"count": 2, "live_events": [{"id": "a"}, {"id": "b"}]})

    app = web.Application()
    app.router.add_get("/v1/merchants/{m}/live_events", handler)
    async with serve(app) as base:
        source = SmartstreamSource(make_config(base, page_size=2), SourceContext(metrics, clock))
        try:
            with pytest.raises(SourceError) as info:
                await source.poll()
        finally:
            await source.close()
    assert info.value.reason == "bad_response" and "page 2" in info.value.message


async def test_429_is_rate_limited_with_retry_after_and_holds_the_budget(sim, clock, connect):
    sim.set_rate_limit(1, window=60)
    async with connect(jobs=False) as source:
        await source.poll()
        clock.now += 15
        with pytest.raises(SourceError) as info:
            await source.poll()
        assert info.value.label == "rate_limited:TOO_MANY_REQUESTS"
        assert info.value.retry_after == 45
        # Nobody calls again before the upstream's window has passed.
        assert source.bucket.wait_time() == pytest.approx(45, abs=0.01)


async def test_timeout(sim, connect):
    sim.delay(0.3)
    async with connect(timeout="100ms") as source:
        with pytest.raises(SourceError) as info:
            await source.poll()
    assert info.value.label == "timeout"


async def test_connect_failure(clock, metrics):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = SmartstreamSource(
        make_config(f"http://127.0.0.1:{port}"), SourceContext(metrics, clock)
    )
    try:
        with pytest.raises(SourceError) as info:
            await source.poll()
    finally:
        await source.close()
    assert info.value.label == "connect"


# --- rate limit


async def test_poll_delayed_by_the_budget_counts_and_logs(sim, clock, registry, connect, caplog):
    for n in range(3):
        sim.add_live_event(name=f"ev{n}")
    # rate_limit 5/min: 1 request at once, then one every 15 s.
    async with connect(rate_limit=5, page_size=1, jobs=False, interval="60s") as source:
        caplog.set_level(logging.INFO, logger="monitor.sources.smartstream")
        start = clock.now
        assert len(await source.poll()) == 3  # 4 pages: 1 free, 3 delayed
    assert clock.now - start == pytest.approx(45)
    assert throttled(registry) == 3
    (record,) = [r for r in caplog.records if r.getMessage() == "poll throttled"]
    assert (record.source, record.rate_limit) == ("smartstream/main", 5)
    assert (record.delayed, record.waited_s, record.left_out) == (3, 45.0, "")


async def test_a_poll_waits_for_its_budget_instead_of_failing(sim, clock, registry, connect):
    for n in range(3):
        sim.add_live_event(name=f"ev{n}")
    async with connect(rate_limit=5, page_size=1, jobs=False, interval="30s") as source:
        start = clock.now
        assert len(await source.poll()) == 3  # 45 s of waiting, longer than the interval
    assert clock.now - start == pytest.approx(45)
    assert throttled(registry) == 3  # three delayed, none left out
    assert len(sim.calls) == 4
    # A full poll costs 4 requests; 5/min allow 4 a minute at the steady rate.
    assert source.requests_per_poll == 4
    assert source.min_interval == pytest.approx(60)
    assert source.poll_deadline == pytest.approx(300 + 60)


async def test_jobs_are_trimmed_when_the_budget_is_short(sim, clock, registry, connect, caplog):
    sim.add_live_event(name="ev")
    sim.add_job(id="j1", encode_status=1)
    # rate_limit 10/min: 2 at once, then one every 7.5 s.
    async with connect(rate_limit=10) as source:
        caplog.set_level(logging.INFO, logger="monitor.sources.smartstream")
        first = await source.poll()
        first_observed = clock.now
        sim.set_job_status("j1", JOB_FAILED)
        second = await source.poll()  # live events wait 7.5 s; jobs may not wait: left out
    (job1,) = [e for e in first if e.kind == "smartstream.job"]
    (job2,) = [e for e in second if e.kind == "smartstream.job"]
    assert job2.fields["encode_status"] == 1  # the last complete job list, reported again
    assert job2.fields["observed_at"] == job1.fields["observed_at"] == first_observed
    assert [e.kind for e in second].count("smartstream.live_event") == 1
    assert throttled(registry) == 2  # one delayed, one left out
    assert len(list_pages(sim, "jobs")) == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "poll throttled"]
    assert (record.delayed, record.waited_s, record.left_out) == (1, 7.5, "GET jobs page 1")


async def test_budget_keeps_polls_under_the_upstream_limit(clock, connect):
    sim = make_sim(clock, rate_limit=10)
    for n in range(5):
        sim.add_live_event(name=f"ev{n}")
    async with connect(sim, rate_limit=10, page_size=2, jobs=False, interval="60s") as source:
        for _ in range(10):
            assert len(await source.poll()) == 5
            clock.now += 5
    assert len(sim.calls) == 30
    assert all(r.status == 200 for r in sim.calls)


# --- actions


async def test_start_without_reset_after_stop_fails(sim, connect):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    async with connect() as source:
        stopped = await source.stop_live_event("ev")
        assert stopped.fields["encode_status"] == ENCODE_STATUS_STOPPED
        with pytest.raises(SourceError) as info:
            await source.start_live_event("ev")
        assert info.value.label == "http_4xx:FAILED_TO_START"
        await source.reset_live_event("ev")
        started = await source.start_live_event("ev")
    assert started.fields["encode_status"] == ENCODE_STATUS_PENDING


async def test_restart_runs_stop_reset_start_and_waits_for_running(sim, clock, connect):
    sim.add_live_event(id="ev", ref_id="show", encode_status=ENCODE_STATUS_ERROR)
    sim.set_start_delay(12)
    async with connect() as source:
        t0 = clock.now
        result = await source.restart_live_event("ref:show", poll_interval=5, deadline=60)
    assert [(c.path.rsplit("/", 2)[-2:], c.status) for c in sim.calls.mutating()] == [
        (["ref:show", "stop"], 200),
        (["ref:show", "reset"], 200),
        (["ref:show", "start"], 200),
    ]
    assert result.ok and result.failed_step is None
    assert result.encode_status == ENCODE_STATUS_RUNNING
    assert [s.step for s in result.steps] == ["stop", "reset", "start", "wait"]
    assert result.steps[2].encode_status == ENCODE_STATUS_PENDING
    assert clock.now - t0 == pytest.approx(15)  # read at +5, +10 (pending), +15 (running)
    gets = [r for r in sim.calls if r.method == "GET" and r.path.endswith("/ref:show")]
    assert len(gets) == 3


async def test_restart_goes_on_when_stop_is_refused_for_a_stopped_event(sim, connect):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_STOPPED, needs_reset=True)
    async with connect() as source:
        result = await source.restart_live_event("ev", until=[ENCODE_STATUS_PENDING])
    assert result.ok
    assert [(s.step, s.ok) for s in result.steps] == [
        ("stop", False),
        ("reset", True),
        ("start", True),
        ("wait", True),
    ]
    assert "FAILED_TO_STOP" in result.steps[0].error
    assert not [r for r in sim.calls if r.method == "GET"]  # pending was enough: no reads


async def test_restart_failing_at_reset_says_so(sim, connect):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    sim.fail(400, "FAILED_TO_RESET", path="*/reset")
    async with connect() as source:
        with pytest.raises(RestartError) as info:
            await source.restart_live_event("ev")
    err = info.value
    assert err.step == "reset" and err.label == "http_4xx:FAILED_TO_RESET"
    assert [(s.step, s.ok) for s in err.result.steps] == [("stop", True), ("reset", False)]
    assert not err.result.ok and err.result.failed_step == "reset"
    assert "reset failed" in str(err)
    assert [(c.path.rsplit("/", 1)[-1], c.status) for c in sim.calls.mutating()] == [
        ("stop", 200),
        ("reset", 400),  # the fault answered before the sim acted
    ]


async def test_restart_of_a_vanished_event_fails_at_stop(sim, connect):
    async with connect() as source:
        with pytest.raises(RestartError) as info:
            await source.restart_live_event("ref:gone")
    assert info.value.step == "stop"
    assert info.value.label == "http_4xx:LIVE_EVENT_NOT_FOUND"


async def test_restart_wait_is_bounded(sim, clock, connect):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    sim.set_start_delay(1000)
    async with connect() as source:
        t0 = clock.now
        with pytest.raises(RestartError) as info:
            await source.restart_live_event("ev", poll_interval=4, deadline=10)
    err = info.value
    assert err.step == "wait" and err.reason == "timeout"
    assert err.result.encode_status == ENCODE_STATUS_PENDING
    assert clock.now - t0 == pytest.approx(10)
    gets = [r for r in sim.calls if r.method == "GET"]
    assert len(gets) == 3  # at +4, +8, +10


async def test_restart_wait_survives_a_transient_error(sim, clock, connect):
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    sim.set_start_delay(6)
    # Due at +1 s: the stop/reset/start calls (at +0) pass, the first status read gets a 500.
    sim.schedule(clock.now - sim.started_at + 1, "fail", status=500)
    async with connect() as source:
        result = await source.restart_live_event("ev", poll_interval=3)
    assert result.ok and result.encode_status == ENCODE_STATUS_RUNNING
    assert [r.status for r in sim.calls if r.method == "GET"] == [500, 200]


def test_bad_targets_are_refused(clock, metrics):
    source = SmartstreamSource(make_config("http://127.0.0.1:9"), SourceContext(metrics, clock))
    for target in ("", "a/b", "ev?x=1", "ref:a b"):
        with pytest.raises(ValueError):
            asyncio.run(source.get_live_event(target))


# --- secrets


async def test_no_secret_in_logs_errors_reprs_or_metrics(clock, registry, connect, caplog):
    sim = make_sim(clock, token_ttl=120, static_tokens=())
    sim.add_live_event(id="ev", encode_status=ENCODE_STATUS_RUNNING)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    issued: set[str] = set()

    def echo_secrets() -> None:
        # An upstream that echoes credentials in its error message.
        (current,) = sim.tokens
        sim.fail(500, "SERVER_ERROR", message=f"key {KEY} pw {PASSWORD} token {current}")

    faults = [
        echo_secrets,
        lambda: sim.fail(400, "BAD_REQUEST"),
        lambda: sim.unauthorized(count=2),
        sim.bad_json,
        lambda: sim.delay(0.8),
        lambda: sim.set_rate_limit(0),
    ]
    async with connect(
        sim, token=None, mail_address=MAIL, password=PASSWORD, timeout="400ms"
    ) as source:
        texts += [repr(source), repr(source.client), repr(source.config), str(source.config)]
        for fault in faults:
            await source.poll()
            issued.update(sim.tokens)
            fault()
            with pytest.raises(SourceError) as info:
                await source.poll()
            issued.update(sim.tokens)
            texts += [str(info.value), repr(info.value), info.value.label]
            sim.clear_faults()
            sim.set_rate_limit(None)
            clock.now += 120  # past the 429 hold and the token's lifetime
        sim.fail(400, "FAILED_TO_START", path="*/start")
        with pytest.raises(RestartError) as info:
            await source.restart_live_event("ev")
        issued.update(sim.tokens)
        texts += [str(info.value), repr(info.value.result)]
    async with connect(sim, token=None, mail_address=MAIL, password="nope") as bad:
        with pytest.raises(SourceError) as info:
            await bad.poll()
        texts.append(str(info.value))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    unreachable = SmartstreamSource(
        make_config(closed, token=None, mail_address=MAIL, password=PASSWORD),
        SourceContext(SourceMetrics(CollectorRegistry()), clock),
    )
    with pytest.raises(SourceError) as info:
        await unreachable.poll()
    await unreachable.close()
    texts.append(str(info.value))
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(log_fields(r)) for r in caplog.records]
    for metric in registry.collect():
        texts += [str(sample) for sample in metric.samples]
    joined = "\n".join(texts)
    assert len(issued) >= 6
    assert "key [redacted] pw [redacted] token [redacted]" in joined  # echoed secrets cut out
    for label in (
        "timeout",
        "connect",
        "bad_response",
        "unauthorized",
        "rate_limited",
        "http_4xx:",
    ):
        assert label in joined
    for secret in [KEY, PASSWORD, "nope", *issued]:
        assert secret not in joined


def test_timestamps_parse_like_the_documents():
    from monitor.sources.values import iso_epoch as _epoch

    jst = datetime.fromisoformat("2018-03-14T14:42:04.632+09:00").timestamp()
    assert _epoch("2018-03-14T14:42:04.632+09:00") == pytest.approx(jst)
    assert _epoch("2017-10-01T00:00:00.000Z") == pytest.approx(1506816000.0)
    assert _epoch(None) is None and _epoch("") is None and _epoch("soon") is None


async def test_a_reloaded_source_keeps_the_budget_and_the_token(sim, clock, metrics):
    async with serve(sim.app()) as base:
        context = SourceContext(metrics=metrics, clock=clock)
        old = SmartstreamSource(
            make_config(base, token=None, mail_address=MAIL, password=PASSWORD),
            context,
            sleep=clock.sleep,
        )
        await old.open()
        await old.poll()
        await old.close()
        issued = sim.tokens_issued
        changed = make_config(
            base, token=None, mail_address=MAIL, password=PASSWORD, interval="60s"
        )
        new = SmartstreamSource(changed, context, sleep=clock.sleep)
        new.inherit(old)
        await new.open()
        try:
            await new.poll()
        finally:
            await new.close()
    assert new.bucket is old.bucket
    assert sim.tokens_issued == issued, "the fetched token was carried over, not fetched again"


async def test_restart_waits_for_the_shared_budget_instead_of_overspending_it(sim, clock, connect):
    """An action spends the same budget as polls: with the bucket empty, the restart's calls
    wait for tokens (on the clock) rather than going out and drawing a 429."""
    sim.add_live_event(id="ev", ref_id="show", encode_status=ENCODE_STATUS_ERROR)
    async with connect(rate_limit=10) as source:
        while source.bucket.try_acquire():
            pass  # polls have spent the whole minute's budget
        t0 = clock.now
        result = await source.restart_live_event("ref:show", poll_interval=5, deadline=120)
    assert result.ok
    assert [s.step for s in result.steps] == ["stop", "reset", "start", "wait"]
    # Four calls at about 8 tokens a minute after the burst: half a minute, not the 5 s the
    # wait for running alone would take.
    assert clock.now - t0 >= 25, "the calls waited for tokens to come back"
    assert not [c for c in sim.calls if c.status == 429], "the account's limit was never hit"
