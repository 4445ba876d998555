"""The whole daemon against the simulators: HTTP endpoints, scheduling, callbacks, restarts,
the shipped rules firing on the simulators' scheduled faults, and secrets kept out of sight."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from conftest import FakeClock, log_lines, outbox_mark, sample, saved_transitions
from prometheus_client.parser import text_string_to_metric_families

from monitor import __version__
from monitor.daemon import Daemon
from monitor.demo import Simulators, simulators
from monitor.model import Snapshot
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve

SHIPPED_RULES = str(Path(__file__).parent.parent / "monitor" / "rules" / "*.yaml")
OME_TOKEN = "ome-daemon-test-token"
API_TOKEN = "api-bearer-token-0815"
CALLBACK_TOKEN = "naver-callback-token-1234"


def write_config(
    tmp_path: Path,
    sims: Simulators | None,
    *,
    ome_url: str | None = None,
    extra: str = "",
    interval: str = "1s",
) -> Path:
    lines = [
        "listen: 127.0.0.1:0",
        f"state_dir: {tmp_path / 'state'}",
        f'rule_files: ["{SHIPPED_RULES}"]',
        f"api: {{token: {API_TOKEN}}}",
        "sources:",
    ]
    if sims is not None:
        lines += [
            "  ome:",
            f"    - {{name: origin, url: {sims.ome_url}, access_token: {sims.ome_token}, interval: {interval}, expected_streams: [default/live/main, default/live/news]}}",
            "  smartstream:",
            f"    - {{name: demo, url: {sims.smartstream_url}, merchant_id: demo, api_key: demo-api-key, mail_address: ops@example.com, password: demo-password, interval: {interval}}}",
            "  naver:",
            f"    - {{name: kr, url: {sims.naver_url}, access_key: {sims.naver_access_key}, secret_key: {sims.naver_secret_key}, interval: {interval}, callback_token: {CALLBACK_TOKEN}}}",
        ]
    else:
        lines += [
            "  ome:",
            f"    - {{name: origin, url: {ome_url}, access_token: {OME_TOKEN}, interval: {interval}, timeout: 2s}}",
        ]
    path = tmp_path / "streamwatch.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture
def real_clock() -> FakeClock:
    # The NAVER simulator rejects signatures more than 5 minutes off its clock, so the test
    # clock starts at the real time and is then moved by hand.
    return FakeClock(start=time.time())


@pytest.fixture
async def sims(real_clock) -> AsyncIterator[Simulators]:
    async with simulators(clock=real_clock) as running:
        yield running


async def test_shipped_rules_fire_on_the_simulators_scheduled_faults(
    sims, real_clock, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    daemon = Daemon(write_config(tmp_path, sims), clock=real_clock)
    await daemon.start(serve=False, schedule=False)
    assert daemon.store is not None
    mark = outbox_mark(daemon.store)
    try:
        for _ in range(24):  # two simulated minutes, a poll of every source each 5 s
            real_clock.advance(5)
            await daemon.poll_all()
        firing_now = {
            a.labels["alertname"] for a, _ in daemon.engine.active_alerts() if a.state == "firing"
        }
        for name in firing_now:
            assert (
                sample(daemon.exporter, "streamwatch_alerts", alertname=name, state="firing") >= 1
            )
        seen = saved_transitions(daemon.store, mark)
    finally:
        await daemon.stop()
    fired = {t.labels["alertname"] for t in seen if t.kind == "firing"}
    assert {
        "OmeIngestStalled",
        "OmePushFailed",
        "OmeExpectedStreamMissing",
        "SmartstreamLiveEventEncodeError",
        "SmartstreamJobFailed",
        "NaverStreamDisconnected",
        "NaverChannelAbnormal",
    } <= fired
    # The OME simulator's 500 burst took one poll down: frozen, not resolved, not a SourceDown.
    assert "StreamwatchSourceDown" not in fired
    assert any(
        r.getMessage() == "alert transition"
        and getattr(r, "transition", None) == "firing"
        and getattr(r, "alertname", None) == "OmeIngestStalled"
        and getattr(r, "source", None) == "ome/origin"
        for r in caplog.records
    ), "transitions are logged, with their fields as fields"
    stalled = next(
        t for t in seen if t.kind == "firing" and t.labels["alertname"] == "OmeIngestStalled"
    )
    assert stalled.labels["stream"] == "second"
    assert stalled.annotations["summary"].startswith("No input on default/live/second for ")


@pytest.fixture
async def ome(clock) -> AsyncIterator[tuple[OmeSim, str]]:
    sim = OmeSim(OME_TOKEN, clock=time.time)
    sim.add_stream("default/live/main", bitrate=2_000_000)
    async with serve(sim.app()) as url:
        yield sim, url


def waiter(daemon: Daemon, count: int = 1) -> tuple[asyncio.Event, list[Snapshot]]:
    """An event set once `count` snapshots have arrived, and the list they arrive in."""
    arrived: list[Snapshot] = []
    done = asyncio.Event()

    def listener(snapshot: Snapshot) -> None:
        arrived.append(snapshot)
        if len(arrived) >= count:
            done.set()

    daemon.snapshot_listeners.append(listener)
    return done, arrived


async def test_http_endpoints_and_secrets_stay_out(ome, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    _sim, url = ome
    daemon = Daemon(write_config(tmp_path, None, ome_url=url))
    done, _ = waiter(daemon)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{daemon.url}/healthz") as resp:
                assert resp.status == 200
            await asyncio.wait_for(done.wait(), 10)
            async with http.get(f"{daemon.url}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{daemon.url}/metrics") as resp:
                text = await resp.text()
                assert resp.headers["Content-Type"].startswith("text/plain")
            async with http.get(
                f"{daemon.url}/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            ) as resp:
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await resp.text()).endswith("# EOF\n")
            async with http.get(f"{daemon.url}/api/v1/sources") as resp:
                sources = await resp.text()
            async with http.get(f"{daemon.url}/api/v1/rules") as resp:
                rules = await resp.json()
            async with http.get(f"{daemon.url}/api/v1/status") as resp:
                status = (await resp.json())["data"]
    finally:
        await daemon.stop()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "ome_stream_bytes_in",
        "streamwatch_source_up",
        "streamwatch_build_info",
        "streamwatch_alerts",
        "streamwatch_config_last_reload_successful",
    } <= names
    assert any(
        r["name"] == "StreamwatchSourceDown" for g in rules["data"]["groups"] for r in g["rules"]
    )
    for haystack in (text, sources, log_lines(caplog)):
        assert OME_TOKEN not in haystack and API_TOKEN not in haystack
    assert status["version"] == __version__ and status["configFile"].endswith("streamwatch.yaml")
    assert re.fullmatch(r"\d+ rules in \d+ files?", status["rules"]) and status["startedAt"]
    [origin] = json.loads(sources)["data"]
    assert origin["up"] is True and origin["lastErrorCode"] is None
    assert origin["intervalSeconds"] == origin["effectiveIntervalSeconds"] == 1.0


async def test_readyz_waits_for_the_first_poll(ome, tmp_path):
    sim, url = ome
    sim.delay(0.5, count=1)
    daemon = Daemon(write_config(tmp_path, None, ome_url=url))
    done, _ = waiter(daemon)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{daemon.url}/readyz") as resp:
                assert resp.status == 503 and "ome/origin" in await resp.text()
            await asyncio.wait_for(done.wait(), 10)
            async with http.get(f"{daemon.url}/readyz") as resp:
                assert resp.status == 200
    finally:
        await daemon.stop()


async def test_polls_of_one_source_never_overlap_and_a_slow_source_delays_no_other(ome, tmp_path):
    sim, url = ome
    sim.delay(2.5, count=None, path="/v1/vhosts")  # each poll of origin outlasts its 1s
    fast = OmeSim(OME_TOKEN, clock=time.time)
    fast.add_stream("default/live/fast")
    async with serve(fast.app()) as fast_url:
        config = write_config(tmp_path, None, ome_url=url, interval="1s")
        config.write_text(
            config.read_text()
            + f"    - {{name: fast, url: {fast_url}, access_token: {OME_TOKEN}, interval: 1s}}\n"
        )
        daemon = Daemon(config)
        _done, arrived = waiter(daemon, count=1)
        slow_done = asyncio.Event()
        daemon.snapshot_listeners.append(
            lambda s: (
                s.source.name == "origin"
                and len([a for a in arrived if a.source.name == "origin"]) >= 2
                and slow_done.set()
            )
        )
        await daemon.start(serve=False)
        try:
            await asyncio.wait_for(slow_done.wait(), 20)
        finally:
            await daemon.stop()
    slow = [s for s in arrived if s.source.name == "origin"]
    for before, after in itertools.pairwise(slow):
        assert after.taken_at >= before.taken_at + before.duration, (
            "a poll started before the previous one ended"
        )
    first_slow_done = slow[0].taken_at + slow[0].duration
    fast_meanwhile = [
        s for s in arrived if s.source.name == "fast" and s.taken_at < first_slow_done
    ]
    assert len(fast_meanwhile) >= 2, "the fast source waited for the slow one"


async def test_sighup_style_reload_keeps_old_config_on_error(ome, tmp_path, caplog):
    _sim, url = ome
    path = write_config(tmp_path, None, ome_url=url)
    daemon = Daemon(path)
    await daemon.start(serve=False, schedule=False)
    try:
        good = path.read_text()
        path.write_text(good.replace("interval: 1s", "interval: 1 second"))
        assert await daemon.reload() is False
        assert daemon.registry.get_sample_value("streamwatch_config_last_reload_successful") == 0
        rejected = [r for r in caplog.records if r.getMessage() == "reload rejected"]
        assert any("sources.ome[0].interval" in r.problem for r in rejected)
        assert [p.ref.name for p in daemon.pollers()] == ["origin"]
        path.write_text(good.replace("name: origin", "name: renamed"))
        assert await daemon.reload() is True
        assert daemon.registry.get_sample_value("streamwatch_config_last_reload_successful") == 1
        assert [p.ref.name for p in daemon.pollers()] == ["renamed"]
    finally:
        await daemon.stop()


async def test_naver_callback_route_dedup_and_cursor_across_restart(
    sims, real_clock, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    path = write_config(tmp_path, sims)
    daemon = Daemon(path, clock=real_clock)
    # The callback itself triggers a poll (request_refresh), so every snapshot is collected.
    refreshed, arrived = waiter(daemon, count=2)
    await daemon.start(schedule=False)
    try:
        await daemon.poll_all()
        channel = next(iter(sims.naver.channels))
        event = sims.naver.add_event(channel, "PUBLISH_END", callback=False)
        payload = {
            "id": 99,
            "logLevel": "INFO",
            "channelId": channel,
            "event": "PUBLISH_END",
            "timestamp": event["timestamp"],
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{daemon.url}/callbacks/naver/wrong-token", json=payload) as resp:
                assert resp.status == 404
            async with http.post(
                f"{daemon.url}/callbacks/naver/{CALLBACK_TOKEN}", json=payload
            ) as resp:
                assert resp.status == 200 and (await resp.json())["new"] == 1
            async with http.post(
                f"{daemon.url}/callbacks/naver/{CALLBACK_TOKEN}", data=b"{not json"
            ) as resp:
                assert resp.status == 400
        assert (
            daemon.registry.get_sample_value(
                "streamwatch_callback_requests_total",
                {"receiver": "naver", "source": "", "result": "rejected_token"},
            )
            == 1
        )
        assert (
            daemon.registry.get_sample_value(
                "streamwatch_callback_requests_total",
                {"receiver": "naver", "source": "kr", "result": "bad_request"},
            )
            == 1
        )
        await asyncio.wait_for(refreshed.wait(), 10)
        await daemon.poll_all()
        events = [
            e
            for snapshot in arrived
            for e in snapshot.entities
            if e.kind == "naver.event"
            and e.labels["event"] == "PUBLISH_END"
            and e.labels["channel"] == channel
        ]
        assert len(events) == 1, "the same event by callback and by poll is counted once"
        assert events[0].fields["via"] == "callback"
        first_id = events[0].labels["event_id"]
        counted = sample(
            daemon.exporter, "naver_channel_events_total", channel=channel, event="PUBLISH_END"
        )
        exposed = daemon.exporter.render()[0].decode() + log_lines(caplog)
        assert CALLBACK_TOKEN not in exposed and sims.naver_secret_key not in exposed
        assert counted == 1
    finally:
        await daemon.stop()
    # An event while the daemon is down, then a restart on the same state: counted once, not lost.
    real_clock.advance(30)
    sims.naver.add_event(channel, "PUBLISH_START", callback=False)
    daemon = Daemon(path, clock=real_clock)
    await daemon.start(serve=False, schedule=False)
    try:
        real_clock.advance(5)
        snapshots = await daemon.poll_all()
        naver = next(s for s in snapshots if s.source.kind == "naver")
        after = {
            e.labels["event_id"]: e.labels["event"]
            for e in naver.entities
            if e.kind == "naver.event"
        }
        assert "PUBLISH_START" in after.values(), (
            "an event from while the daemon was down is not lost"
        )
        assert first_id not in after, "an event seen before the restart is not counted again"
    finally:
        await daemon.stop()


async def test_alerts_survive_a_restart_and_silences_need_the_token(sims, real_clock, tmp_path):
    path = write_config(tmp_path, sims)
    daemon = Daemon(path, clock=real_clock)
    await daemon.start(schedule=False)
    try:
        for _ in range(10):
            real_clock.advance(5)
            await daemon.poll_all()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{daemon.url}/api/v1/alerts") as resp:
                before = {
                    a["fingerprint"]: a
                    for a in (await resp.json())["data"]
                    if a["state"] == "firing"
                }
            silence = {
                "matchers": [{"name": "alertname", "value": "OmePushFailed", "isRegex": False}],
                "endsAt": "2099-01-01T00:00:00Z",
                "createdBy": "test",
                "comment": "maintenance",
            }
            async with http.post(f"{daemon.url}/api/v1/silences", json=silence) as resp:
                assert resp.status == 401
            auth = {"Authorization": f"Bearer {API_TOKEN}"}
            async with http.post(
                f"{daemon.url}/api/v1/silences", json=silence, headers=auth
            ) as resp:
                assert resp.status == 200
                silence_id = (await resp.json())["data"]["silenceID"]
    finally:
        await daemon.stop()
    assert before, "some alerts fire after 50 s of the demo schedule"
    daemon = Daemon(path, clock=real_clock)
    await daemon.start(schedule=False)
    try:
        assert daemon.store is not None
        mark = outbox_mark(daemon.store)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{daemon.url}/api/v1/alerts") as resp:
                after = {a["fingerprint"]: a for a in (await resp.json())["data"]}
            for fingerprint, alert in before.items():
                assert after[fingerprint]["startsAt"] == alert["startsAt"]
                assert after[fingerprint]["state"] == "firing"
            push = next(a for a in after.values() if a["labels"]["alertname"] == "OmePushFailed")
            assert push["silenced"] is True and push["silencedBy"] == [silence_id]
            async with http.delete(
                f"{daemon.url}/api/v1/silences/{silence_id}",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as resp:
                assert (
                    resp.status == 200
                    and (await resp.json())["data"]["status"]["state"] == "expired"
                )
        real_clock.advance(1)
        await daemon.poll_all()
        seen = saved_transitions(daemon.store, mark)
        assert not [t for t in seen if t.kind == "firing" and t.fingerprint in before], (
            "restored alerts do not fire again"
        )
        assert any(
            t.kind == "unsilenced" and t.labels["alertname"] == "OmePushFailed" for t in seen
        )
    finally:
        await daemon.stop()


async def _line_matching(stream: asyncio.StreamReader, needle: str, within: float = 15) -> str:
    async def read() -> str:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"process ended before logging {needle!r}")
            if needle in line:
                return line

    return await asyncio.wait_for(read(), within)


async def test_real_process_sighup_with_bad_config_then_sigterm(ome, tmp_path):
    _sim, url = ome
    path = write_config(tmp_path, None, ome_url=url)
    good = path.read_text()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "run", "-c", str(path), stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        started = await _line_matching(process.stderr, "streamwatch started")
        base = re.search(r"listen=(http://\S+)", started).group(1)  # type: ignore[union-attr]
        path.write_text(good.replace("interval: 1s", "interval: 1x"))
        process.send_signal(signal.SIGHUP)
        rejected = await _line_matching(process.stderr, "reload rejected")
        assert "sources.ome[0].interval" in rejected
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        assert "streamwatch_config_last_reload_successful 0.0" in text
        assert 'streamwatch_source_up{kind="ome",source="origin"}' in text, (
            "the old config keeps running"
        )
        path.write_text(good)
        process.send_signal(signal.SIGHUP)
        await _line_matching(process.stderr, "configuration reloaded")
        process.send_signal(signal.SIGTERM)
        await _line_matching(process.stderr, "streamwatch stopped")
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_reload_with_a_bad_rule_file_keeps_the_old_rules(ome, tmp_path, caplog):
    _sim, url = ome
    rules = tmp_path / "extra.yaml"
    rules.write_text(
        "groups:\n  - name: extra\n    rules:\n      - {alert: Listed, kind: ome.stream, expr: present}\n"
    )
    path = write_config(tmp_path, None, ome_url=url)
    path.write_text(
        path.read_text().replace(f'rule_files: ["{SHIPPED_RULES}"]', f'rule_files: ["{rules}"]')
    )
    daemon = Daemon(path)
    await daemon.start(serve=False, schedule=False)
    try:
        assert daemon.engine is not None
        before = set(daemon.engine.rules)
        rules.write_text(rules.read_text().replace("expr: present", "expr: present and"))
        assert await daemon.reload() is False
        assert any(f"{rules}:4: rule 'Listed'" in getattr(r, "problem", "") for r in caplog.records)
        assert set(daemon.engine.rules) == before
        assert daemon.registry.get_sample_value("streamwatch_config_last_reload_successful") == 0
        await daemon.poll_all()
        assert [a.labels["alertname"] for a, _ in daemon.engine.active_alerts()] == ["Listed"]
    finally:
        await daemon.stop()


async def test_simulate_command_prints_urls_and_stops_on_sigint():
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "simulate",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        ome_line = await _line_matching(process.stdout, "OME ")
        url = re.search(r"(http://127\.0\.0\.1:\d+)", ome_line).group(1)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/vhosts") as resp:
            assert resp.status == 401, "the simulator checks auth like OME"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_reload_that_removes_a_source_resolves_its_alerts_for_good(ome, tmp_path):
    _sim, url = ome
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: Listed, kind: ome.stream, expr: present}\n"
    )
    path = write_config(tmp_path, None, ome_url=url)
    good = path.read_text().replace(f'rule_files: ["{SHIPPED_RULES}"]', f'rule_files: ["{rules}"]')
    path.write_text(good)
    daemon = Daemon(path)
    await daemon.start(serve=False, schedule=False)
    try:
        assert daemon.engine is not None and daemon.store is not None
        mark = outbox_mark(daemon.store)
        await daemon.poll_all()
        assert [t.kind for t in saved_transitions(daemon.store, mark)] == ["firing"]
        path.write_text(good.replace("name: origin", "name: renamed"))
        assert await daemon.reload()
        seen = saved_transitions(daemon.store, mark)
        assert [(t.kind, str(t.target.source)) for t in seen[1:]] == [("resolved", "ome/origin")]
        assert "ome/origin" not in daemon.engine.sources()
    finally:
        await daemon.stop()
    daemon = Daemon(path)
    await daemon.start(serve=False, schedule=False)
    try:
        assert daemon.engine is not None
        assert "ome/origin" not in daemon.engine.sources(), "not restored after a restart either"
    finally:
        await daemon.stop()


async def test_reload_that_changes_a_source_keeps_its_snapshot_and_health(ome, tmp_path):
    _sim, url = ome
    path = write_config(tmp_path, None, ome_url=url)
    daemon = Daemon(path)
    await daemon.start(serve=False, schedule=False)
    try:
        await daemon.poll_all()
        [before] = daemon.pollers()
        path.write_text(path.read_text().replace("interval: 1s", "interval: 2s"))
        assert await daemon.reload()
        [after] = daemon.pollers()
        assert after is not before and after.source.interval == 2.0
        assert after.up is True and after.last_good is before.last_good
        assert (
            sample(
                daemon.exporter,
                "ome_stream_present",
                server="origin",
                vhost="default",
                app="live",
                stream="main",
            )
            == 1
        )
    finally:
        await daemon.stop()


async def test_reloads_in_quick_succession_end_with_the_last_config(ome, tmp_path):
    sim, url = ome
    path = write_config(tmp_path, None, ome_url=url)
    good = path.read_text()
    daemon = Daemon(path)
    await daemon.start(serve=False, schedule=False)
    try:
        # A poll in flight makes the first reload wait while it cancels it: the window in which
        # an unserialised second reload would interleave its own diff.
        sim.delay(1, count=1)
        polling = asyncio.ensure_future(daemon.poll_all())
        await asyncio.sleep(0)  # one turn of the loop: the poll takes its lock, then waits on HTTP
        await asyncio.sleep(0)
        assert daemon.pollers()[0].busy
        path.write_text(good.replace("name: origin", "name: third"))
        first = asyncio.ensure_future(daemon.reload())
        await asyncio.sleep(0)  # let the first reload begin before the file changes again
        path.write_text(good.replace("name: origin", "name: fourth"))
        second = asyncio.ensure_future(daemon.reload())
        assert await asyncio.gather(first, second) == [True, True]
        assert [p.ref.name for p in daemon.pollers()] == ["fourth"]
        assert await polling == [], "the cancelled poll published nothing"
    finally:
        await daemon.stop()


async def test_a_poll_that_outlasts_max_poll_time_fails_as_a_timeout(ome, tmp_path, caplog):
    sim, url = ome
    path = write_config(tmp_path, None, ome_url=url, interval="1s")
    path.write_text(path.read_text().replace("timeout: 2s", "timeout: 500ms, max_poll_time: 1s"))
    # Every request answers within the request timeout, but the poll as a whole does not.
    sim.add_stream("default/live/second")
    sim.add_stream("default/live/third")
    sim.delay(0.3, count=None, path="/v1/*")
    daemon = Daemon(path)
    await daemon.start(serve=False, schedule=False)
    try:
        [snapshot] = await daemon.poll_all()
    finally:
        await daemon.stop()
    assert snapshot.failure is not None
    assert (snapshot.failure.reason, snapshot.failure.message) == (
        "timeout",
        "poll did not finish within 1s",
    )


async def test_callback_events_reach_the_rules_while_the_api_is_down(sims, real_clock, tmp_path):
    daemon = Daemon(write_config(tmp_path, sims), clock=real_clock)
    await daemon.start(schedule=False)
    try:
        assert daemon.store is not None
        mark = outbox_mark(daemon.store)
        await daemon.poll_all()
        channel = next(iter(sims.naver.channels))
        sims.naver.fail(500, count=None)  # Live Station's API fails from now on
        payload = {
            "id": 7,
            "logLevel": "INFO",
            "channelId": channel,
            "event": "PUBLISH_END",
            "timestamp": int(real_clock() * 1000),
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{daemon.url}/callbacks/naver/{CALLBACK_TOKEN}", json=payload) as resp,
        ):
            assert resp.status == 200
        seen = saved_transitions(daemon.store, mark)
        fired = [
            t
            for t in seen
            if t.kind == "firing" and t.labels["alertname"] == "NaverStreamDisconnected"
        ]
        assert [t.labels["channel"] for t in fired] == [channel]
        # The failing polls that follow neither fire it again nor resolve it early.
        for _ in range(3):
            real_clock.advance(5)
            snapshots = await daemon.poll_all()
            assert not next(s for s in snapshots if s.source.kind == "naver").ok
        seen = saved_transitions(daemon.store, mark)
        assert [t.kind for t in seen if t.labels["alertname"] == "NaverStreamDisconnected"] == [
            "firing"
        ]
    finally:
        await daemon.stop()


async def test_a_source_deferred_by_retry_after_still_raises_source_down_on_time(
    ome, tmp_path, clock
):
    sim, url = ome
    sim.fail(503, retry_after=240, count=None)
    daemon = Daemon(write_config(tmp_path, None, ome_url=url), clock=clock)
    await daemon.start(serve=False, schedule=False)
    try:
        assert daemon.engine is not None and daemon.store is not None
        [failed] = await daemon.poll_all()
        assert not failed.ok
        clock.advance(61)
        assert await daemon.poll_all() == [], "no poll during the Retry-After"
        assert [a.alertname for a, _ in daemon.engine.active_alerts()] == ["StreamwatchSourceDown"]
        assert daemon.engine.active_alerts()[0][0].state == "pending"
        daemon.housekeeping()  # the daemon's timer
        [(alert, _)] = daemon.engine.active_alerts()
        assert alert.state == "firing"
    finally:
        await daemon.stop()


async def test_hostile_callback_bodies_are_400s(sims, real_clock, tmp_path, caplog):
    daemon = Daemon(write_config(tmp_path, sims), clock=real_clock)
    await daemon.start(schedule=False)
    try:
        url = f"{daemon.url}/callbacks/naver/{CALLBACK_TOKEN}"
        channel = next(iter(sims.naver.channels))
        ms = int(real_clock() * 1000)
        bodies = [
            b"[" * 200_000 + b"]" * 200_000,  # nested 200k deep
            json.dumps({"channelId": channel, "event": "X" * 100_000, "timestamp": ms}).encode(),
            b"\xff\xfe not utf-8",
        ]
        async with aiohttp.ClientSession() as http:
            for body in bodies:
                async with http.post(url, data=body) as resp:
                    assert resp.status == 400, body[:40]
    finally:
        await daemon.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "X" * 1000 not in log_lines(caplog), "a hostile code is not logged whole"


async def test_silence_api_refuses_what_alertmanager_would(ome, tmp_path):
    _sim, url = ome
    daemon = Daemon(write_config(tmp_path, None, ome_url=url))
    await daemon.start(schedule=False)
    good = {
        "matchers": [{"name": "alertname", "value": "X", "isRegex": False}],
        "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": "ops",
        "comment": "maintenance",
    }
    bad = [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ({**good, "matchers": [{"name": "a", "value": "", "isRegex": False}]}, "empty string"),
        ({**good, "matchers": [{"name": "a", "value": "x", "isRegex": "false"}]}, "isRegex"),
        ({**good, "createdBy": {"name": "ops"}}, "createdBy"),
        ({**good, "endsAt": "9999-12-31T23:59:59+14:00"}, "years ahead"),
    ]
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        async with aiohttp.ClientSession() as http:
            for body, message in bad:
                data = body if isinstance(body, str) else json.dumps(body)
                async with http.post(
                    f"{daemon.url}/api/v1/silences", data=data, headers=auth
                ) as resp:
                    assert resp.status == 400, message
                    assert message in (await resp.json())["error"]
            async with http.post(f"{daemon.url}/api/v1/silences", json=good, headers=auth) as resp:
                assert resp.status == 200
            async with http.get(f"{daemon.url}/api/v1/silences") as resp:
                assert resp.status == 200 and len((await resp.json())["data"]) == 1
    finally:
        await daemon.stop()
