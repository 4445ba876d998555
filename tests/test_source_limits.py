"""Limits on what an upstream can do to a source, and what each source says about itself:
failure classes apart from vendor codes, connection errors that name the host, Retry-After
caps, the effective interval when a poll does not fit its interval or its rate budget, quiet
draining at shutdown, skipped bad items, bounded NAVER callbacks, and config bounds."""

from __future__ import annotations

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
