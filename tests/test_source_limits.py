"""Limits on what an upstream can do to a source, and what each source says about itself:
failure classes apart from vendor codes, connection errors that name the host, Retry-After
caps, the effective interval when a poll does not fit its interval or its rate budget, quiet
draining at shutdown, skipped bad items, bounded NAVER callbacks, and config bounds."""

from __future__ import annotations

import itertools
import socket
from typing import Any

import pytest
from conftest import FakeClock
from prometheus_client import CollectorRegistry

from monitor.sim.serve import serve
from monitor.sim.smartstream import SmartstreamSim
from monitor.sources.base import SourceContext, SourceError, SourceMetrics
from monitor.sources.ome.config import OmeSourceConfig
from monitor.sources.ome.source import OmeSource
from monitor.sources.poller import SourcePoller
from monitor.sources.smartstream.config import SmartstreamSourceConfig
from monitor.sources.smartstream.source import SmartstreamSource

OME_TOKEN = "ome-limits-token-0042"
M = "nttsmc"
KEY = "key-limits-secret"
SS_TOKEN = "token-limits-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ome_source(url: str, clock: Any, registry: CollectorRegistry, **overrides: Any) -> OmeSource:
    config = OmeSourceConfig(name="origin", url=url, access_token=OME_TOKEN, **overrides)
    return OmeSource(config, SourceContext(metrics=SourceMetrics(registry), clock=clock))


def smartstream_source(
    url: str, clock: FakeClock, registry: CollectorRegistry, **overrides: Any
) -> SmartstreamSource:
    data = {"name": "main", "url": url, "merchant_id": M, "api_key": KEY, "token": SS_TOKEN}
    config = SmartstreamSourceConfig.model_validate({**data, **overrides})
    context = SourceContext(metrics=SourceMetrics(registry), clock=clock)
    return SmartstreamSource(config, context, sleep=clock.sleep)


def smartstream_sim(clock: FakeClock, **kwargs: Any) -> SmartstreamSim:
    return SmartstreamSim(
        merchant_id=M,
        api_key=KEY,
        mail_address="ops@example.com",
        password="pw",
        clock=clock,
        static_tokens=(SS_TOKEN,),
        **kwargs,
    )


def poll_errors(registry: CollectorRegistry, kind: str, source: str, **labels: str) -> float:
    value = registry.get_sample_value(
        "streamwatch_source_poll_errors_total", {"kind": kind, "source": source, **labels}
    )
    return value or 0.0


# -- item 19: the failure class and the vendor's code are two labels -------------------------


async def test_poll_errors_carry_the_class_and_the_vendor_code_apart(clock):
    registry = CollectorRegistry()
    sim = smartstream_sim(clock)
    async with serve(sim.app()) as url:
        source = smartstream_source(url, clock, registry, api_key="not-the-key")
        poller = SourcePoller(source, source.context.metrics, clock=clock)
        try:
            snapshot = await poller.refresh()
            sim.fail(500, count=None)
            clock.advance(30)
            await poller.refresh()
        finally:
            await source.close()
    assert snapshot is not None and snapshot.failure is not None
    assert (snapshot.failure.reason, snapshot.failure.code) == ("unauthorized", "UNAUTHORIZED")
    assert (
        poll_errors(registry, "smartstream", "main", reason="unauthorized", code="UNAUTHORIZED")
        == 1
    )
    # `rate(...{reason="unauthorized"})` finds the vendor-coded failures too.
    assert (
        poll_errors(registry, "smartstream", "main", reason="unauthorized:UNAUTHORIZED", code="")
        == 0
    )
    (code_500,) = [
        s.labels["code"]
        for m in registry.collect()
        if m.name == "streamwatch_source_poll_errors"
        for s in m.samples
        if s.name.endswith("_total") and s.labels["reason"] == "http_5xx"
    ]
    assert poll_errors(registry, "smartstream", "main", reason="http_5xx", code=code_500) == 1


def test_a_code_that_is_no_code_is_left_out_of_the_label():
    assert SourceError("http_4xx", "m", code="NOT_FOUND").metric_code == "NOT_FOUND"
    assert SourceError("http_4xx", "m", code="x" * 65).metric_code == ""
    assert SourceError("http_4xx", "m", code="two words").metric_code == ""
    assert SourceError("http_4xx", "m").metric_code == ""


# -- item 21: a connection error names the host and the OS error, never the URL ---------------


async def test_a_refused_connection_names_host_port_and_os_error(clock):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    source = ome_source(url, clock, CollectorRegistry())
    try:
        with pytest.raises(SourceError) as caught:
            await source.poll()
    finally:
        await source.close()
    assert caught.value.reason == "connect"
    assert (
        caught.value.message
        == f"GET /v1/vhosts: cannot connect to 127.0.0.1:{port}: connection refused"
    )


async def test_a_connection_error_never_shows_the_query(clock):
    port = free_port()
    # SmartSTREAM's list requests carry a query (limit, page): only host and port may appear.
    source = smartstream_source(f"http://127.0.0.1:{port}", clock, CollectorRegistry())
    try:
        with pytest.raises(SourceError) as caught:
            await source.poll()
    finally:
        await source.close()
    text = str(caught.value)
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in text
    assert "?" not in text and "limit=" not in text and "http://" not in text


# -- item 18: every source's interval and timeout have bounds, and say them -------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"interval": "1ms"}, "interval: 1ms is out of range: between 1s and 1d"),
        ({"interval": "2d"}, "interval: 2d is out of range: between 1s and 1d"),
        ({"timeout": "1h"}, "timeout: 1h is out of range: between 100ms and 5m"),
        ({"timeout": "10ms"}, "timeout: 10ms is out of range: between 100ms and 5m"),
        ({"interval": 5}, "interval: a duration needs a unit, like '5s'"),
        # Never a hint that the bounds then refuse: no '0s', no '0.5s' for an interval.
        (
            {"interval": 0},
            "interval: a duration needs a unit (ms, s, m, h or d) and must be between 1s and 1d",
        ),
        (
            {"interval": 0.5},
            "interval: a duration needs a unit (ms, s, m, h or d) and must be between 1s and 1d",
        ),
        ({"max_retry_after": "0s"}, "max_retry_after: 0s is out of range: between 1s and 1d"),
        (
            {"max_poll_time": "2s", "timeout": "3s"},
            "timeout (3s) must not exceed max_poll_time (2s)",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["ome", "smartstream", "naver"])
def test_source_durations_are_bounded_with_messages_that_say_the_bounds(kind, settings, message):
    from pydantic import ValidationError

    from monitor.schema import describe_error, error_path
    from monitor.sources.registry import upstreams

    required = {
        "ome": {"url": "http://127.0.0.1:1", "access_token": "t"},
        "smartstream": {"merchant_id": "m", "api_key": "k", "token": "t"},
        "naver": {"access_key": "a", "secret_key": "s"},
    }[kind]
    model = {u.kind: u.config_model for u in upstreams()}[kind]
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"name": "n", **required, **settings})
    said = [
        ".".join(str(p) for p in error_path(e)) + ": " + describe_error(e)
        if error_path(e)
        else describe_error(e)
        for e in caught.value.errors()
    ]
    assert any(message in line for line in said), said


def test_a_bare_zero_is_never_told_to_be_0s():
    from monitor.schema import parse_duration

    with pytest.raises(ValueError) as caught:
        parse_duration(0)
    assert "'0s'" not in str(caught.value) and "unit" in str(caught.value)
    with pytest.raises(ValueError, match="like '5s'"):
        parse_duration(5)


def test_source_duration_defaults_and_limits_are_accepted():
    config = OmeSourceConfig(name="o", url="http://127.0.0.1:1", access_token="t")
    assert (config.interval, config.timeout, config.max_retry_after, config.max_poll_time) == (
        5.0,
        3.0,
        300.0,
        None,
    )
    edge = OmeSourceConfig(
        name="o", url="http://127.0.0.1:1", access_token="t", interval="1s", timeout="100ms"
    )
    assert (edge.interval, edge.timeout) == (1.0, 0.1)


# -- item 1: a Retry-After defers a source for at most max_retry_after ------------------------


def capped(registry: CollectorRegistry, kind: str, source: str) -> float:
    value = registry.get_sample_value(
        "streamwatch_source_retry_after_capped_total", {"kind": kind, "source": source}
    )
    return value or 0.0


async def test_a_huge_retry_after_defers_polling_for_max_retry_after_only(clock, caplog):
    from monitor.sim.ome import OmeSim

    registry = CollectorRegistry()
    sim = OmeSim(OME_TOKEN, clock=clock)
    sim.add_stream("default/live/main")
    sim.fail(503, retry_after=99_999_999)
    async with serve(sim.app()) as url:
        source = ome_source(url, clock, registry, max_retry_after="2m")
        poller = SourcePoller(source, source.context.metrics, clock=clock)
        try:
            failed = await poller.refresh()
            assert failed is not None and failed.failure is not None
            assert poller.not_before == clock.now + 120
            clock.advance(119)
            assert await poller.refresh() is None  # still deferred
            clock.advance(1)
            recovered = await poller.refresh()
        finally:
            await source.close()
    assert recovered is not None and recovered.ok
    assert capped(registry, "ome", "origin") == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "retry-after capped"]
    assert (record.source, record.retry_after, record.capped_to_s) == (
        "ome/origin",
        "99999999.0",
        120.0,
    )


@pytest.mark.parametrize("header", ["inf", "nan", "-5", "1e400", "99999999"])
def test_retry_after_values_that_are_no_sane_delay_are_unbounded_until_capped(header):
    import math

    from monitor.sources.http import parse_retry_after

    seconds = parse_retry_after(header)
    assert seconds is not None and seconds > 86400
    assert parse_retry_after("120") == 120 and math.isinf(parse_retry_after("inf"))
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


class Deferring(OmeSource):
    """An OME source whose poll fails with whatever Retry-After the test sets."""

    retry_after: float = 0.0

    async def poll(self):
        raise SourceError("http_5xx", "busy", retry_after=self.retry_after)


@pytest.mark.parametrize("retry_after", [float("inf"), float("nan"), -1.0, 1e12])
async def test_the_poller_caps_any_deferral_that_is_no_sane_delay(clock, retry_after):
    registry = CollectorRegistry()
    config = OmeSourceConfig(name="origin", url="http://127.0.0.1:1", access_token="t")
    source = Deferring(config, SourceContext(metrics=SourceMetrics(registry), clock=clock))
    source.retry_after = retry_after
    poller = SourcePoller(source, source.context.metrics, clock=clock)
    await poller.refresh()
    assert poller.not_before == clock.now + 300  # the default max_retry_after, 5m
    assert capped(registry, "ome", "origin") == 1
    source.retry_after = 30.0
    clock.advance(300)
    await poller.refresh()
    assert poller.not_before == clock.now + 30  # a sane one is honoured as sent
    assert capped(registry, "ome", "origin") == 1


async def test_a_smartstream_429_holds_the_budget_for_max_retry_after_at_most(clock):
    registry = CollectorRegistry()
    sim = smartstream_sim(clock)
    sim.fail(429, code="TOO_MANY_REQUESTS", retry_after=99_999_999)
    async with serve(sim.app()) as url:
        source = smartstream_source(url, clock, registry, max_retry_after="1m")
        try:
            with pytest.raises(SourceError) as caught:
                await source.poll()
        finally:
            await source.close()
    assert caught.value.reason == "rate_limited"
    assert 0 < source.bucket.wait_time() <= 60


# -- item 6: a new cause while down is said once ----------------------------------------------


async def test_a_changed_failure_cause_while_down_is_logged_once(clock, caplog):
    from monitor.sim.ome import OmeSim

    sim = OmeSim(OME_TOKEN, clock=clock)
    sim.add_stream("default/live/main")
    registry = CollectorRegistry()
    async with serve(sim.app()) as url:
        source = ome_source(url, clock, registry)
        poller = SourcePoller(source, source.context.metrics, clock=clock)
        try:
            sim.fail(500, count=2)
            await poller.refresh()
            clock.advance(5)
            await poller.refresh()  # the same cause: nothing new to say
            sim.unauthorized(count=2)
            clock.advance(5)
            await poller.refresh()
            clock.advance(5)
            await poller.refresh()
        finally:
            await source.close()
    said = [
        (r.getMessage(), r.reason, getattr(r, "previous_reason", None))
        for r in caplog.records
        if r.getMessage() in ("source down", "source failure changed")
    ]
    assert said == [
        ("source down", "http_5xx", None),
        ("source failure changed", "unauthorized", "http_5xx"),
    ]


# -- item 3: a slow poll is not a down upstream -------------------------------------------------


async def test_a_poll_longer_than_its_interval_succeeds_and_stretches_the_interval(clock, caplog):
    from monitor.sim.ome import OmeSim

    sim = OmeSim(OME_TOKEN, clock=clock)
    for name in ("a", "b", "c"):
        sim.add_stream(f"default/live/{name}")
    # Every request answers within its timeout, but the poll (about 9 requests in a row) takes
    # longer than interval + timeout, the whole-poll deadline before.
    sim.delay(0.15, count=None, path="/v1/*")
    registry = CollectorRegistry()
    async with serve(sim.app()) as url:
        source = ome_source(url, clock, registry, interval="1s", timeout="200ms")
        poller = SourcePoller(source, source.context.metrics, clock=clock)
        try:
            snapshot = await poller.refresh()
        finally:
            await source.close()
    assert snapshot is not None and snapshot.ok, snapshot
    assert snapshot.duration > source.interval + source.timeout
    assert source.poll_deadline == 10.0  # max(interval + timeout, 10 x interval)
    gauge = registry.get_sample_value(
        "streamwatch_source_effective_interval_seconds", {"kind": "ome", "source": "origin"}
    )
    assert gauge is not None and gauge >= 2.0 and gauge == poller.effective_interval
    (record,) = [r for r in caplog.records if r.getMessage() == "effective interval stretched"]
    assert record.cause == "slow_poll" and record.interval_s == 1.0


async def test_max_poll_time_still_ends_a_poll_that_goes_on(clock):
    from monitor.sim.ome import OmeSim

    sim = OmeSim(OME_TOKEN, clock=clock)
    for name in ("a", "b", "c"):
        sim.add_stream(f"default/live/{name}")
    sim.delay(0.15, count=None, path="/v1/*")
    registry = CollectorRegistry()
    async with serve(sim.app()) as url:
        source = ome_source(
            url, clock, registry, interval="1s", timeout="200ms", max_poll_time="1s"
        )
        poller = SourcePoller(source, source.context.metrics, clock=clock)
        try:
            snapshot = await poller.refresh()
        finally:
            await source.close()
    assert snapshot is not None and snapshot.failure is not None
    assert (snapshot.failure.reason, snapshot.failure.message) == (
        "timeout",
        "poll did not finish within 1s",
    )


def test_every_source_exports_its_effective_interval_from_the_start(clock):
    registry = CollectorRegistry()
    source = ome_source("http://127.0.0.1:1", clock, registry, interval="7s")
    SourcePoller(source, source.context.metrics, clock=clock)
    assert (
        registry.get_sample_value(
            "streamwatch_source_effective_interval_seconds", {"kind": "ome", "source": "origin"}
        )
        == 7.0
    )


# -- item 2: SmartSTREAM's own budget stretches the interval, it never fails a poll -----------


async def test_a_full_poll_that_does_not_fit_the_budget_stretches_the_interval(clock, caplog):
    registry = CollectorRegistry()
    # The upstream enforces its own 50/min; the source budgets under the same limit.
    sim = smartstream_sim(clock, rate_limit=50)
    for n in range(250):
        sim.add_live_event(name=f"ev{n}")
    sim.add_job(id="j1", encode_status=1)
    async with serve(sim.app()) as url:
        source = smartstream_source(
            url, clock, registry, interval="1s", rate_limit=50, page_size=100
        )
        poller = SourcePoller(source, source.context.metrics, clock=clock, timer=clock)
        snapshots = []
        try:
            for _ in range(120):  # two minutes of scheduler ticks, one a second
                snapshot = await poller.refresh(scheduled=True)
                if snapshot is not None:
                    snapshots.append(snapshot)
                clock.advance(1)
        finally:
            await source.close()
    assert snapshots and all(s.ok for s in snapshots), [s.failure for s in snapshots]
    for snapshot in snapshots:
        kinds = [e.kind for e in snapshot.entities]
        assert kinds.count("smartstream.live_event") == 250
        assert kinds.count("smartstream.job") == 1
    assert all(call.status == 200 for call in sim.calls), "the upstream never said 429"
    # 3 event pages + 1 job page a poll; 50/min is 40/min at the steady rate: one poll per 6 s.
    assert source.requests_per_poll == 4
    assert poller.effective_interval == 6.0
    gauge = registry.get_sample_value(
        "streamwatch_source_effective_interval_seconds", {"kind": "smartstream", "source": "main"}
    )
    assert gauge == 6.0
    starts = [s.taken_at for s in snapshots]
    assert all(b - a >= 6 for a, b in itertools.pairwise(starts))
    assert 18 <= len(snapshots) <= 21  # 120 s / 6 s, give or take the first polls' burst
    (record,) = [r for r in caplog.records if r.getMessage() == "effective interval stretched"]
    assert record.levelname == "WARNING" and record.cause == "rate_budget"
    assert (record.requests_per_poll, record.rate_limit, record.effective_interval_s) == (
        4,
        50,
        6.0,
    )
    assert poll_errors(registry, "smartstream", "main", reason="rate_limited", code="") == 0


async def test_only_the_upstreams_429_fails_a_smartstream_poll(clock):
    registry = CollectorRegistry()
    sim = smartstream_sim(clock)
    sim.add_live_event(name="ev")
    sim.fail(429, code="TOO_MANY_REQUESTS", retry_after=20)
    async with serve(sim.app()) as url:
        source = smartstream_source(url, clock, registry, rate_limit=5, page_size=1)
        poller = SourcePoller(source, source.context.metrics, clock=clock, timer=clock)
        try:
            failed = await poller.refresh()
            clock.advance(20)
            ok = await poller.refresh()
        finally:
            await source.close()
    assert failed is not None and failed.failure is not None
    assert (failed.failure.reason, failed.failure.code) == ("rate_limited", "TOO_MANY_REQUESTS")
    assert ok is not None and ok.ok


# -- item 3: stream info is fetched when new, republished, or due, not every poll -------------


def info_requests(sim: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in sim.calls:
        if call.method == "GET" and call.path.startswith("/v1/vhosts/default/apps/live/streams/"):
            name = call.path.rsplit("/", 1)[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


async def test_stream_info_is_fetched_for_new_and_republished_streams_and_every_nth_poll(clock):
    from monitor.sim.ome import OmeSim

    sim = OmeSim(OME_TOKEN, clock=clock)
    sim.add_stream("default/live/a", bitrate=2_000_000, framerate=30)
    sim.add_stream("default/live/b", bitrate=1_000_000, framerate=25)
    registry = CollectorRegistry()
    async with serve(sim.app()) as url:
        source = ome_source(url, clock, registry, stream_info_every=10)
        try:
            first = await source.poll()
            assert info_requests(sim) == {"a": 1, "b": 1}
            second = await source.poll()
            for _ in range(9):  # polls 3..11: each stream's info is due once in ten polls
                clock.advance(5)
                await source.poll()
            assert info_requests(sim) == {"a": 2, "b": 2}
            # Republished: createdTime changes, so the info is fetched at the next poll.
            sim.remove_stream("default/live/a")
            clock.advance(5)
            sim.add_stream("default/live/a", bitrate=3_000_000, framerate=60)
            before = info_requests(sim)
            republished = await source.poll()
            assert info_requests(sim)["a"] == before["a"] + 1
            assert info_requests(sim)["b"] == before["b"]
        finally:
            await source.close()

    def stream(entities: list[Any], name: str) -> Any:
        (found,) = [e for e in entities if e.kind == "ome.stream" and e.labels["stream"] == name]
        return found

    # The info carried over between fetches is the one fetched.
    for name in ("a", "b"):
        for field in ("source_type", "video_codec", "video_framerate", "tracks", "track_count"):
            assert stream(second, name).fields[field] == stream(first, name).fields[field]
    assert stream(first, "a").fields["video_framerate"] == 30
    assert stream(republished, "a").fields["video_framerate"] == 60


async def test_stream_info_every_poll_when_told(clock):
    from monitor.sim.ome import OmeSim

    sim = OmeSim(OME_TOKEN, clock=clock)
    sim.add_stream("default/live/a")
    async with serve(sim.app()) as url:
        source = ome_source(url, clock, CollectorRegistry(), stream_info_every=1)
        try:
            for _ in range(3):
                await source.poll()
        finally:
            await source.close()
    assert info_requests(sim) == {"a": 3}


# -- item 8: SIGTERM drains polls in flight, then cancels quietly -----------------------------


async def stop_during_a_poll(tmp_path, caplog, *, delay: float, drain: float):
    """Start the daemon with its scheduler against an OME simulator whose vhost list answers
    after `delay` seconds, stop it (what SIGTERM does) while the first poll waits for it, and
    return the snapshots it published meanwhile."""
    import asyncio
    import logging

    from monitor.daemon import Daemon
    from monitor.sim.ome import OmeSim

    caplog.set_level(logging.DEBUG)
    sim = OmeSim(OME_TOKEN)
    sim.add_stream("default/live/main")
    sim.delay(delay, path="/v1/vhosts")
    async with serve(sim.app()) as url:
        path = tmp_path / "streamwatch.yaml"
        path.write_text(
            "listen: 127.0.0.1:0\n"
            f"state_dir: {tmp_path / 'state'}\n"
            "rule_files: []\n"
            "sources:\n"
            f"  ome:\n    - {{name: origin, url: {url}, access_token: {OME_TOKEN}, interval: 1s}}\n"
        )
        daemon = Daemon(path, drain_seconds=drain)
        published: list[Any] = []
        daemon.snapshot_listeners.append(published.append)
        await daemon.start(serve=False)
        (poller,) = daemon.pollers()
        in_flight = asyncio.Event()
        poll = poller.source.poll

        async def signalling_poll() -> Any:
            in_flight.set()
            return await poll()

        poller.source.poll = signalling_poll  # type: ignore[method-assign]
        try:
            await asyncio.wait_for(in_flight.wait(), 5)
        finally:
            await daemon.stop()
    return published


async def test_sigterm_lets_a_poll_in_flight_finish_within_the_drain(tmp_path, caplog):
    published = await stop_during_a_poll(tmp_path, caplog, delay=0.3, drain=5.0)
    assert [s.ok for s in published if s.source.name == "origin"] == [True]
    assert [r for r in caplog.records if r.levelno >= 40] == []
    assert not [r for r in caplog.records if r.getMessage() == "poll cancelled at shutdown"]


async def test_sigterm_cancels_a_poll_past_the_drain_quietly(tmp_path, caplog):
    published = await stop_during_a_poll(tmp_path, caplog, delay=5.0, drain=0.2)
    assert [s for s in published if s.source.name == "origin"] == []  # publishes nothing
    errors = [r for r in caplog.records if r.levelno >= 40 or r.exc_info]
    assert errors == [], [(r.name, r.getMessage()) for r in errors]
    (cancelled,) = [r for r in caplog.records if r.getMessage() == "poll cancelled at shutdown"]
    assert (cancelled.levelname, cancelled.source) == ("INFO", "ome/origin")


def test_the_managers_default_drain_is_5s():
    from monitor.sources.manager import SourceManager

    manager = SourceManager(
        SourceMetrics(CollectorRegistry()), on_snapshot=lambda s: None, on_removed=lambda r: None
    )
    assert manager.drain_seconds == 5.0


# -- item 14: one bad stream does not fail the whole OME poll ---------------------------------


def skipped(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value(
        "streamwatch_source_items_skipped_total",
        {"kind": "ome", "source": "origin", "reason": reason},
    )
    return value or 0.0


def rewriting(app: Any, path: str, old: bytes, new: bytes) -> Any:
    """The simulator's app with the answer to `path` rewritten byte for byte: how an upstream
    sends bytes that are not UTF-8 (the simulator itself always sends valid JSON text)."""
    from aiohttp import web

    @web.middleware
    async def rewrite(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if request.path == path and isinstance(response, web.Response) and response.body:
            body = bytes(response.body).replace(old, new)
            return web.Response(body=body, status=response.status, content_type="application/json")
        return response

    app.middlewares.append(rewrite)
    return app


async def test_a_stream_name_with_a_lone_surrogate_is_skipped_and_counted(clock, caplog):
    import logging

    from monitor.sim.ome import OmeSim

    caplog.set_level(logging.DEBUG, logger="monitor.sources.ome")

    sim = OmeSim(OME_TOKEN, clock=clock)
    for name in ("good", "bad\udc80name", "other"):
        sim.add_stream(f"default/live/{name}")
    registry = CollectorRegistry()
    async with serve(sim.app()) as url:
        source = ome_source(url, clock, registry)
        poller = SourcePoller(source, source.context.metrics, clock=clock)
        try:
            first = await poller.refresh()
            clock.advance(5)
            await poller.refresh()
        finally:
            await source.close()
    assert first is not None and first.ok, first
    streams = sorted(e.labels["stream"] for e in first.entities if e.kind == "ome.stream")
    assert streams == ["good", "other"]
    assert skipped(registry, "bad_name") == 2  # once per poll
    said = [r for r in caplog.records if r.getMessage() == "items skipped"]
    assert [r.levelname for r in said] == ["WARNING", "DEBUG"]  # said once, then counted
    assert said[0].reason == "bad_name" and "\\udc80" in said[0].example


async def test_invalid_utf8_in_the_stream_list_skips_that_name_only(clock):
    from monitor.sim.ome import OmeSim

    sim = OmeSim(OME_TOKEN, clock=clock)
    for name in ("good", "broken", "other"):
        sim.add_stream(f"default/live/{name}")
    app = rewriting(sim.app(), "/v1/vhosts/default/apps/live/streams", b'"broken"', b'"bro\xffken"')
    registry = CollectorRegistry()
    async with serve(app) as url:
        source = ome_source(url, clock, registry)
        try:
            entities = await source.poll()
        finally:
            await source.close()
    streams = sorted(e.labels["stream"] for e in entities if e.kind == "ome.stream")
    assert streams == ["good", "other"]
    assert skipped(registry, "bad_name") == 1


async def test_undecodable_text_in_one_streams_answer_costs_only_what_it_touches(clock):
    """Bytes that are not UTF-8 in a key nothing reads cost nothing; in a text the stream's
    entity would carry (a protocol name in `connections`), that stream is skipped and
    counted. Every other stream is kept either way."""
    from monitor.sim.ome import OmeSim

    sim = OmeSim(OME_TOKEN, clock=clock)
    for name in ("good", "odd", "broken"):
        sim.add_stream(f"default/live/{name}", connections={"webrtc": 1})
    app = rewriting(
        sim.app(),
        "/v1/stats/current/vhosts/default/apps/live/streams/odd",
        b'"createdTime":',
        b'"creat\xffedTime":',
    )
    app = rewriting(
        app,
        "/v1/stats/current/vhosts/default/apps/live/streams/broken",
        b'"webrtc":',
        b'"web\xffrtc":',
    )
    registry = CollectorRegistry()
    async with serve(app) as url:
        source = ome_source(url, clock, registry, expected_streams=["default/live/broken"])
        try:
            entities = await source.poll()
        finally:
            await source.close()
    streams = {e.labels["stream"]: e for e in entities if e.kind == "ome.stream"}
    # Skipped, not reported missing: it is listed, only its text cannot be carried.
    assert sorted(streams) == ["good", "odd"]
    assert streams["odd"].fields["created_at"] is None, "the unreadable key is just absent"
    assert streams["odd"].fields["connections"]["webrtc"] == 1.0
    assert skipped(registry, "bad_text") == 1
    assert any(e.kind == "ome.app" for e in entities)


# -- item 12: NAVER callbacks cannot grow labels, logs or the cursor without bound -----------

NAVER_AK = "AK-limits-0001"
NAVER_SK = "SK-limits-0002"
NAVER_T0 = 1_750_000_000.0


def naver_source(url: str, clock: Any, store: Any, registry: CollectorRegistry | None = None):
    from monitor.sources.naver.config import NaverSourceConfig
    from monitor.sources.naver.source import NaverSource

    config = NaverSourceConfig(
        name="kr", url=url, access_key=NAVER_AK, secret_key=NAVER_SK, callback_token="cb-tok"
    )
    metrics = SourceMetrics(registry or CollectorRegistry())
    return NaverSource(config, SourceContext(metrics=metrics, clock=clock, store=store))


def callback(channel: str, code: str, ts: float, **extra: Any) -> dict[str, Any]:
    return {"id": 1, "logLevel": "INFO", "channelId": channel, "event": code,
            "timestamp": int(ts * 1000), **extra}  # fmt: skip


@pytest.fixture
def naver_clock() -> FakeClock:
    return FakeClock(NAVER_T0)


@pytest.fixture
def state(tmp_path):
    from monitor.store import Store

    store = Store(tmp_path / "state.sqlite3")
    yield store
    store.close()


async def test_undocumented_event_codes_count_as_other(naver_clock, state):
    from monitor.sim.naver import NaverSim
    from monitor.sources.naver.source import EVENT_CODES

    sim = NaverSim(NAVER_AK, NAVER_SK, naver_clock)
    channel = sim.add_channel(name="ch")["channelId"]
    async with serve(sim.app()) as url:
        source = naver_source(url, naver_clock, state)
        try:
            await source.poll()
            for n in range(50):  # fifty distinct codes nobody documented
                assert source.accept_callback(callback(channel, f"VENDOR_ERROR_{n}", NAVER_T0)) == 1
            source.accept_callback(callback(channel, "publish_end", NAVER_T0))
            entities = await source.poll()
        finally:
            await source.close()
    (entity,) = [e for e in entities if e.kind == "naver.channel"]
    events = entity.fields["events"]
    assert events["other"] == 50 and events["PUBLISH_END"] == 1
    assert set(events) == {
        *EVENT_CODES,
        "other",
    }
    # Each event entity still says which code it was.
    codes = {e.labels["event"] for e in entities if e.kind == "naver.event"}
    assert "VENDOR_ERROR_7" in codes and "PUBLISH_END" in codes


def test_other_starts_at_zero_like_every_documented_code(naver_clock):
    source = naver_source("http://127.0.0.1:1", naver_clock, None)
    entity = source._channel_entity({"channelId": "ls-1", "channelName": "x"})
    assert entity.fields["events"]["other"] == 0


@pytest.mark.parametrize(
    ("code", "complaint"),
    [
        ("X" * 65, "longer than 64 characters"),
        ("X" * 900_000, "longer than 64 characters"),
        ("PUBLISH END", "letters, digits"),
        ("PUBLISH\nEND", "letters, digits"),
        ('ev{x="1"}', "letters, digits"),
        ("ÉVÉNEMENT", "letters, digits"),
    ],
    ids=["65-chars", "900k-chars", "space", "newline", "label-syntax", "non-ascii"],
)
def test_an_event_code_that_is_no_code_is_refused_with_a_clear_error(naver_clock, code, complaint):
    source = naver_source("http://127.0.0.1:1", naver_clock, None)
    with pytest.raises(ValueError, match=complaint) as caught:
        source.accept_callback(callback("ls-1", code, NAVER_T0))
    assert len(str(caught.value)) < 200
    assert source._counts == {}


def test_a_channel_id_that_is_no_id_is_refused(naver_clock):
    source = naver_source("http://127.0.0.1:1", naver_clock, None)
    with pytest.raises(ValueError, match="channelId longer than 128"):
        source.accept_callback(callback("c" * 129, "PUBLISH_END", NAVER_T0))
    with pytest.raises(ValueError, match="channelId must be"):
        source.accept_callback(callback("ls 1", "PUBLISH_END", NAVER_T0))


def test_a_callback_from_the_far_future_is_refused(naver_clock, state):
    source = naver_source("http://127.0.0.1:1", naver_clock, state)
    with pytest.raises(ValueError, match="in the future"):
        source.accept_callback(callback("ls-1", "PUBLISH_END", NAVER_T0 + 86400 * 365))
    # Within NAVER's 5 minute skew it is taken.
    assert source.accept_callback(callback("ls-1", "PUBLISH_END", NAVER_T0 + 290)) == 1


def test_callbacks_do_not_rewrite_the_cursor(naver_clock, state, monkeypatch):
    writes: list[str] = []
    real = state.save_cursor
    monkeypatch.setattr(state, "save_cursor", lambda *a: (writes.append(a[2]), real(*a))[1])
    source = naver_source("http://127.0.0.1:1", naver_clock, state)
    for n in range(100):
        assert source.accept_callback(callback("ls-1", "PUBLISH_END", NAVER_T0 - n)) == 1
    assert writes == []
    # A restart does not count them again: the seen-event table holds them.
    again = naver_source("http://127.0.0.1:1", naver_clock, state)
    assert again.accept_callback(callback("ls-1", "PUBLISH_END", NAVER_T0 - 5)) == 0


async def test_the_cursor_keeps_neither_far_future_events_for_ever_nor_more_than_a_cap(
    naver_clock, state, monkeypatch
):
    import json

    from monitor.sim.naver import NaverSim
    from monitor.sources.naver import source as naver

    monkeypatch.setattr(naver, "MAX_RECENT_EVENTS", 5)
    sim = NaverSim(NAVER_AK, NAVER_SK, naver_clock)
    channel = sim.add_channel(name="ch")["channelId"]
    sim.add_event(channel, "STREAM_UPDATE", timestamp=NAVER_T0 + 86400 * 365)  # a broken clock
    for n in range(10):
        sim.add_event(channel, "THUMBNAIL_CREATE", timestamp=NAVER_T0 - 60 + n)
    async with serve(sim.app()) as url:
        source = naver_source(url, naver_clock, state)
        try:
            await source.poll()
            saved = json.loads(state.load_cursor("naver/kr", "events"))
            assert len(saved["recent"]) == 5
            assert max(saved["recent"].values()) <= (NAVER_T0 + 300) * 1000
            # Once the late window has passed the clamped stamp, it is gone.
            naver_clock.advance(300 + 600 + 1)
            await source.poll()
            saved = json.loads(state.load_cursor("naver/kr", "events"))
        finally:
            await source.close()
    assert not any("STREAM_UPDATE" in key for key in saved["recent"])


async def test_counts_of_channels_that_do_not_exist_are_not_kept(naver_clock, state):
    from monitor.sim.naver import NaverSim

    sim = NaverSim(NAVER_AK, NAVER_SK, naver_clock)
    channel = sim.add_channel(name="ch")["channelId"]
    async with serve(sim.app()) as url:
        source = naver_source(url, naver_clock, state)
        try:
            for n in range(20):
                source.accept_callback(callback(f"ls-bogus-{n}", "PUBLISH_END", NAVER_T0))
            source.accept_callback(callback(channel, "PUBLISH_END", NAVER_T0))
            naver_clock.advance(1)
            await source.poll()
        finally:
            await source.close()
    assert set(source._counts) == {channel}


async def test_event_list_items_with_bad_codes_are_skipped_and_counted(naver_clock, state):
    from monitor.sim.naver import NaverSim

    registry = CollectorRegistry()
    sim = NaverSim(NAVER_AK, NAVER_SK, naver_clock)
    channel = sim.add_channel(name="ch")["channelId"]
    sim.add_event(channel, "X" * 100)
    sim.add_event(channel, "PUBLISH_END")
    async with serve(sim.app()) as url:
        source = naver_source(url, naver_clock, state, registry)
        try:
            entities = await source.poll()
        finally:
            await source.close()
    assert [e.labels["event"] for e in entities if e.kind == "naver.event"] == ["PUBLISH_END"]
    assert (
        registry.get_sample_value(
            "streamwatch_source_items_skipped_total",
            {"kind": "naver", "source": "kr", "reason": "bad_event"},
        )
        == 1
    )


def test_a_callback_body_nested_absurdly_deep_is_a_value_error():
    from monitor.sources.naver import parse_callback_body

    with pytest.raises(ValueError, match="nested too deeply"):
        parse_callback_body(b"[" * 20_000 + b"]" * 20_000)
    with pytest.raises(ValueError, match="larger than"):
        parse_callback_body(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_callback_body(b'{"event": "\xff"}')
    with pytest.raises(ValueError, match="not JSON"):
        parse_callback_body(b'{"event": ')
    assert parse_callback_body(b'{"channelId": "ls-1", "event": "PUBLISH_END"}') == {
        "channelId": "ls-1",
        "event": "PUBLISH_END",
    }
