"""The shared HTTP layer: redaction of every error text (OME's included), the response body
cap, and the one paging loop with its repeat guard. Upstreams here are small aiohttp apps on
loopback that misbehave on purpose."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from monitor.sim.serve import serve
from monitor.sources.base import Source, SourceContext, SourceMetrics
from monitor.sources.http import (
    BAD_RESPONSE,
    HTTP_5XX,
    MESSAGE_LIMIT,
    Page,
    Redactor,
    SourceError,
    collect_pages,
    parse_byte_size,
)
from monitor.sources.naver.config import NaverSourceConfig
from monitor.sources.naver.source import NaverSource
from monitor.sources.ome.config import OmeSourceConfig
from monitor.sources.ome.source import OmeSource
from monitor.sources.poller import SourcePoller
from monitor.sources.smartstream.config import SmartstreamSourceConfig
from monitor.sources.smartstream.source import SmartstreamSource

TOKEN = "ome-Tok3n-8841"
B64 = base64.b64encode(TOKEN.encode()).decode()


def context(clock) -> SourceContext:
    return SourceContext(metrics=SourceMetrics(CollectorRegistry()), clock=clock)


def ome(url: str, clock, **settings: Any) -> OmeSource:
    config = OmeSourceConfig(name="o", url=url, access_token=TOKEN, **settings)
    return OmeSource(config, context(clock))


def smartstream(url: str, clock, **settings: Any) -> SmartstreamSource:
    config = SmartstreamSourceConfig(
        name="s", url=url, merchant_id="m", api_key="ss-key-3391", token="ss-tok-7", **settings
    )
    return SmartstreamSource(config, context(clock))


def naver(url: str, clock, **settings: Any) -> NaverSource:
    config = NaverSourceConfig(
        name="n", url=url, access_key="nv-ak-1", secret_key="nv-sk-2", **settings
    )
    return NaverSource(config, context(clock))


async def poll_error(source: Source) -> SourceError:
    await source.open()
    try:
        with pytest.raises(SourceError) as caught:
            await source.poll()
    finally:
        await source.close()
    return caught.value


def app_answering(handler: Callable[[web.Request], Any]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


# -- redaction -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 500])
async def test_an_ome_error_echoing_the_authorization_header_is_redacted(clock, status, caplog):
    async def echo(request: web.Request) -> web.Response:
        header = request.headers["Authorization"]
        assert header == f"Basic {B64}"  # the client really sent what we look for
        message = f"[HTTP] bad header {header!r}, token {TOKEN}, b64 {B64} ({status})"
        return web.json_response({"statusCode": status, "message": message}, status=status)

    async with serve(app_answering(echo)) as url:
        source = ome(url, clock)
        error = await poll_error(source)
        registry = CollectorRegistry()
        poller = SourcePoller(source, SourceMetrics(registry), clock=clock)
        snapshot = await poller.refresh()
        await source.close()
    texts = [str(error), repr(error), error.message, error.label]
    assert snapshot is not None and snapshot.failure is not None
    texts += [snapshot.failure.message, snapshot.failure.reason, caplog.text]
    joined = "\n".join(texts)
    assert "bad header 'Basic [redacted]', token [redacted], b64 [redacted]" in error.message
    assert "[redacted]" in snapshot.failure.message
    for secret in (TOKEN, B64, B64.rstrip("=")):
        assert secret not in joined


async def test_a_code_that_carries_a_secret_is_dropped_from_the_label(clock):
    async def echo(request: web.Request) -> web.Response:
        key = request.headers["X-Streaks-Api-Key"]
        return web.json_response({"code": key, "message": f"no such key {key}"}, status=400)

    async with serve(app_answering(echo)) as url:
        error = await poll_error(smartstream(url, clock))
    assert error.label == "http_4xx" and error.code is None
    assert "ss-key-3391" not in str(error) and "[redacted]" in error.message


def test_redactor_cuts_every_form_longest_first_and_before_the_message_is_cut():
    redact = Redactor("abc", "abc/def", None, "")
    assert redact("x abc/def y abc%2Fdef z abc") == "x [redacted] y [redacted] z [redacted]"
    redact.add("late-token")
    assert redact("late-token") == "[redacted]"
    long = SourceError(HTTP_5XX, "GET /x: " + "." * (MESSAGE_LIMIT - 12) + "abc/def tail")
    long.redact(redact)
    assert "abc" not in long.message and len(long.message) <= MESSAGE_LIMIT
    assert str(long) == f"http_5xx: {long.message}" and long.args == (long.message,)


# -- the body cap --------------------------------------------------------------------------


def big_json(size: int) -> bytes:
    return json.dumps({"response": ["x" * size], "content": []}).encode()


@pytest.mark.parametrize("make", [ome, smartstream, naver])
async def test_every_upstream_refuses_a_body_over_max_body(clock, make):
    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=big_json(4096), content_type="application/json")

    async with serve(app_answering(huge)) as url:
        error = await poll_error(make(url, clock, max_body="2KiB"))
    assert error.reason == BAD_RESPONSE
    assert error.message.endswith("response body exceeds max_body (2048 bytes)")


async def test_a_streamed_body_is_given_up_at_the_cap_not_read_whole(clock):
    sent = [0]

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * 65536
        try:
            while sent[0] < 1 << 30:  # 1 GiB, far more than anyone should read
                await response.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async with serve(app_answering(endless)) as url:
        error = await poll_error(ome(url, clock, max_body="1MiB"))
    assert error.reason == BAD_RESPONSE
    assert "response body exceeds max_body (1048576 bytes)" in error.message
    assert sent[0] < 64 << 20, "the client kept reading long after the cap"


async def test_the_cap_is_on_the_decoded_body(clock):
    packed = gzip.compress(big_json(200_000))
    assert len(packed) < 4096

    async def bomb(request: web.Request) -> web.Response:
        return web.Response(
            body=packed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async with serve(app_answering(bomb)) as url:
        error = await poll_error(ome(url, clock, max_body="64KiB"))
        fits = ome(url, clock, max_body="1MB")
        await fits.open()
        try:
            assert await fits.client.vhosts() == ["x" * 200_000]
        finally:
            await fits.close()
    assert "exceeds max_body (65536 bytes)" in error.message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (64 * 1024 * 1024, 67108864),
        ("64MiB", 67108864),
        ("512KiB", 524288),
        ("10MB", 10_000_000),
        ("1.5 MiB", 1572864),
        ("1gib", 1 << 30),
        ("2048", 2048),
        ("100B", 100),
    ],
)
def test_byte_sizes(text, size):
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "10XB", "-1", 0, True, 1.5, "0KiB", None])
def test_bad_byte_sizes(text):
    with pytest.raises(ValueError):
        parse_byte_size(text)


def test_max_body_defaults_to_64_mib_for_every_upstream():
    configs = [
        OmeSourceConfig(name="o", url="http://h", access_token="t"),
        SmartstreamSourceConfig(name="s", merchant_id="m", api_key="k", token="t"),
        NaverSourceConfig(name="n", access_key="a", secret_key="s"),
    ]
    assert [c.max_body for c in configs] == [67108864] * 3
    with pytest.raises(ValidationError, match="byte size"):
        OmeSourceConfig(name="o", url="http://h", access_token="t", max_body="huge")


# -- paging --------------------------------------------------------------------------------


def pages(*batches: list[str], total: int | None = None):
    """A fetch function over fixed pages (the last repeated forever), and the calls it got."""
    calls: list[int] = []

    async def fetch(number: int) -> Page[str]:
        calls.append(number)
        batch = batches[min(number, len(batches)) - 1]
        return Page([(item, item.upper()) for item in batch], total=total)

    return fetch, calls


async def test_paging_stops_at_a_short_page_and_keeps_the_first_sighting():
    fetch, calls = pages(["a", "b"], ["b", "c"], ["d"])
    assert await collect_pages(fetch, what="GET things", page_size=2) == ["A", "B", "C", "D"]
    assert calls == [1, 2, 3]


async def test_paging_stops_at_the_total():
    fetch, calls = pages(["a", "b"], ["c", "d"], ["e", "f"], total=4)
    assert await collect_pages(fetch, what="GET things", page_size=2) == ["A", "B", "C", "D"]
    assert calls == [1, 2]


async def test_a_page_repeating_the_previous_one_is_bad_response():
    fetch, calls = pages(["a", "b"], ["c", "d"])  # page 3 and on: c, d again
    with pytest.raises(SourceError) as caught:
        await collect_pages(fetch, what="GET things", page_size=2)
    assert caught.value.reason == BAD_RESPONSE
    assert caught.value.message == ("GET things page 3: same items as page 2, paging is ignored")
    assert calls == [1, 2, 3]


async def test_more_pages_than_max_pages_is_bad_response_naming_the_limit():
    async def fetch(number: int) -> Page[int]:
        return Page([(str(number), number)])  # always full, always new

    with pytest.raises(SourceError) as caught:
        await collect_pages(fetch, what="GET things", page_size=1, max_pages=5)
    assert caught.value.reason == BAD_RESPONSE
    assert caught.value.message == "GET things: more than max_pages (5) pages"


async def test_naver_paging_that_ignores_page_no_is_bad_response(clock):
    async def same_page(request: web.Request) -> web.Response:
        items = [{"channelId": f"ls-{n}", "channelStatus": "READY"} for n in range(3)]
        return web.json_response({"content": items, "total": 9})

    async with serve(app_answering(same_page)) as url:
        error = await poll_error(naver(url, clock, page_size=3, events=False))
    assert error.reason == BAD_RESPONSE
    assert "page 2: same items as page 1" in error.message
