"""Hardening found in review: credentials never follow a redirect, error-code labels stay a
small set, rule kinds are checked, stores are pruned."""

from __future__ import annotations

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.alerting.rules import RuleError, load_rule_files
from monitor.alerting.silences import EXPIRED_RETENTION, Silencer
from monitor.labels import Matcher
from monitor.sim.serve import serve
from monitor.sources import ENTITY_KINDS
from monitor.sources.base import HTTP_4XX, SourceContext, SourceError, SourceMetrics
from monitor.sources.naver.config import NaverSourceConfig
from monitor.sources.naver.source import NaverSource
from monitor.sources.ome.config import OmeSourceConfig
from monitor.sources.ome.source import OmeSource
from monitor.sources.smartstream.config import SmartstreamSourceConfig
from monitor.sources.smartstream.source import SmartstreamSource
from monitor.store import Store


@pytest.fixture
async def elsewhere():
    """Another origin that records what reaches it, and a server that redirects there."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append({**request.headers, "body": await request.text()})
        return web.json_response({"statusCode": 200, "message": "OK", "response": []})

    thief = web.Application()
    thief.router.add_route("*", "/{tail:.*}", record)
    async with serve(thief) as thief_url:

        async def bounce(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(thief_url + request.path_qs)

        redirector = web.Application()
        redirector.router.add_route("*", "/{tail:.*}", bounce)
        async with serve(redirector) as url:
            yield url, seen


def context(clock) -> SourceContext:
    return SourceContext(metrics=SourceMetrics(CollectorRegistry()), clock=clock)


async def test_ome_credentials_do_not_follow_a_redirect(elsewhere, clock):
    url, seen = elsewhere
    source = OmeSource(
        OmeSourceConfig(name="o", url=url, access_token="ome-secret"), context(clock)
    )
    await source.open()
    try:
        with pytest.raises(SourceError) as caught:
            await source.poll()
    finally:
        await source.close()
    assert caught.value.reason == "bad_response" and "redirect" in caught.value.message
    assert seen == []


async def test_smartstream_api_key_and_password_do_not_follow_a_redirect(elsewhere, clock):
    url, seen = elsewhere
    config = SmartstreamSourceConfig(
        name="s",
        url=url,
        merchant_id="m",
        api_key="ss-api-key",
        mail_address="a@b.c",
        password="ss-password",
    )
    source = SmartstreamSource(config, context(clock))
    await source.open()
    try:
        with pytest.raises(SourceError) as caught:
            await source.poll()
    finally:
        await source.close()
    assert caught.value.reason == "bad_response"
    assert seen == [], "the other origin saw the API key or the password"


async def test_naver_signed_headers_do_not_follow_a_redirect(elsewhere, clock):
    url, seen = elsewhere
    config = NaverSourceConfig(name="n", url=url, access_key="nv-access", secret_key="nv-secret")
    source = NaverSource(config, context(clock))
    await source.open()
    try:
        with pytest.raises(SourceError) as caught:
            await source.poll()
    finally:
        await source.close()
    assert caught.value.reason == "bad_response" and "redirect" in caught.value.message
    assert seen == [], "the other origin saw the access key and a signature"


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("NOT_FOUND", "http_4xx:NOT_FOUND"),
        ("250004", "http_4xx:250004"),
        ("Some echoed text, 42 chars", "http_4xx"),
        ("x" * 65, "http_4xx"),
    ],
)
def test_error_code_labels_stay_a_small_set(code, label):
    assert SourceError(HTTP_4XX, "m", code=code).label == label


def test_unknown_rule_kind_is_an_error(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: Typo\n        kind: ome.streams\n        expr: present\n"
    )
    with pytest.raises(RuleError) as caught:
        load_rule_files([str(path)], kinds=ENTITY_KINDS)
    [problem] = caught.value.problems
    assert f"{path}:5: rule 'Typo': groups[0].rules[0].kind: unknown kind 'ome.streams'" in problem
    assert "ome.stream," in problem


def test_expired_silences_and_old_event_keys_are_pruned(tmp_path, clock):
    store = Store(tmp_path / "state.sqlite3")
    silencer = Silencer(store)
    now = clock()
    kept = silencer.create([Matcher.parse('a="1"')], now, now + 60, "ops", "short", now)
    gone = silencer.create([Matcher.parse('a="2"')], now, now + 60, "ops", "short", now)
    silencer.expire(gone.id, now)
    assert silencer.prune(now + 30) == 0, "an expired silence stays listed for a while"
    assert silencer.prune(now + 61 + EXPIRED_RETENTION) == 2
    assert silencer.get(kept.id) is None and Silencer(store).list(now) == []
    assert store.remember_events("naver/kr", ["k1"], now) == ["k1"]
    store.forget_events_before(now + 1)
    assert store.remember_events("naver/kr", ["k1"], now + 2) == ["k1"], "the key was forgotten"
    store.close()
