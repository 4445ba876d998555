"""Webhooks on real HTTP over loopback: grouping on a fake clock, signing checked by an
independent HMAC, failures retried with the same delivery id, 4xx dropped, kill -9 between
the receiver's answer and the record."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import FakeClock, log_lines, saved_transitions
from prometheus_client import CollectorRegistry

from monitor.alerting.transitions import AlertState, Transition, TransitionKind
from monitor.model import SourceRef, Target
from monitor.notify.common import NotifyMetrics
from monitor.notify.config import NotifyConfig
from monitor.notify.tables import MIGRATIONS
from monitor.notify.webhook import WebhookNotifier
from monitor.store import Store

SECRET = "s3cret-webhook-key"


class Receiver:
    """An HTTP endpoint that records what it gets and answers the statuses it is told to."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answered in order, then 200
        self.arrived = asyncio.Condition()
        self.on_request = None  # called with each request before answering
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if self.on_request is not None:
            await self.on_request(request, body)
        async with self.arrived:
            self.arrived.notify_all()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def wait_for(self, count: int, within: float = 20) -> None:
        async with asyncio.timeout(within):
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.requests) >= count)

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
async def receiver():
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


def transition(n: int, kind=TransitionKind.FIRING, alertname="StreamDown", at=None, **labels):
    at = float(n) if at is None else at
    resolved = kind == TransitionKind.RESOLVED
    return Transition(
        kind,
        f"g/{alertname}",
        alertname,
        f"fp{n}",
        AlertState.FIRING if resolved else AlertState.PENDING,
        AlertState.INACTIVE if resolved else AlertState.FIRING,
        at,
        {"alertname": alertname, "stream": f"s{n}", **labels},
        {"summary": f"stream s{n} is down"},
        Target(SourceRef("ome", "o"), "ome.stream", {"stream": f"s{n}"}),
        at - 60,
        fired_at=at,
        resolved_at=at if resolved else None,
    )


def save(store: Store, *transitions: Transition) -> list[Transition]:
    before = saved_transitions(store)
    last = before[-1].id if before else 0
    store.save_alerts(
        [], [], [(t.at, t.kind.value, t.rule, t.fingerprint, t.to_json()) for t in transitions]
    )
    return saved_transitions(store, last)


def webhook_config(url: str, **overrides):
    hook = {
        "name": "ops",
        "url": url,
        "group_by": ["alertname"],
        "group_wait": "10s",
        "group_interval": "1m",
        "repeat_interval": "1h",
        **overrides,
    }
    return NotifyConfig.model_validate({"webhooks": [hook]}).webhooks[0]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state.sqlite3")
    s.migrate_part("notify", MIGRATIONS)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def notifier(store, session, url, clock, registry=None, **overrides):
    return WebhookNotifier(
        webhook_config(url, **overrides),
        store,
        session,
        NotifyMetrics(registry or CollectorRegistry()),
        clock=clock,
        base_url=lambda: "http://127.0.0.1:9108",
    )


async def test_groups_wait_then_interval_then_resolve_on_a_fake_clock(store, session, receiver):
    clock = FakeClock(1_800_000_000.0)
    hook = notifier(store, session, receiver.url, clock, hmac_secret=SECRET)
    t0 = clock.now
    await hook.handle(save(store, transition(1, at=t0), transition(2, at=t0)))
    await hook.handle(save(store, transition(3, alertname="Other", at=t0)))

    clock.advance(9.9)
    await hook.flush_due()
    assert receiver.requests == [], "group_wait not over"
    clock.advance(0.1)
    await hook.flush_due()
    assert len(receiver.requests) == 2, "one notification per group"
    by_key = {b["groupKey"]: b for b in receiver.bodies()}
    down = by_key['{}/ops:{alertname="StreamDown"}']
    assert down["version"] == "4" and down["status"] == "firing" and down["receiver"] == "ops"
    assert down["groupLabels"] == {"alertname": "StreamDown"}
    assert down["commonLabels"] == {"alertname": "StreamDown"}
    assert down["truncatedAlerts"] == 0 and down["externalURL"] == "http://127.0.0.1:9108"
    assert sorted(a["fingerprint"] for a in down["alerts"]) == ["fp1", "fp2"]
    alert = down["alerts"][0]
    assert set(alert) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == "http://127.0.0.1:9108/api/v1/alerts?fingerprint=fp1"

    # Signed: verified here with an independent implementation of the documented scheme.
    headers, body = receiver.requests[0]
    ts = headers["X-Streamwatch-Timestamp"]
    expected = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Streamwatch-Signature"] == f"sha256={expected}"
    assert len(headers["X-Streamwatch-Delivery"]) == 32

    # A new alert in a notified group waits for group_interval (1m after the send).
    clock.advance(20)
    await hook.handle(save(store, transition(4, at=clock.now)))
    await hook.flush_due()
    assert len(receiver.requests) == 2
    clock.advance(40)
    await hook.flush_due()
    assert len(receiver.requests) == 3
    assert sorted(a["fingerprint"] for a in receiver.bodies()[2]["alerts"]) == ["fp1", "fp2", "fp4"]

    # Nothing changed: no notification at the next interval (repeat_interval is 1h).
    clock.advance(60)
    await hook.flush_due()
    assert len(receiver.requests) == 3

    # A resolve goes out at the next interval, then the resolved alert is forgotten.
    await hook.handle(save(store, transition(1, TransitionKind.RESOLVED, at=clock.now)))
    clock.advance(60)
    await hook.flush_due()
    assert len(receiver.requests) == 4
    last = receiver.bodies()[3]
    assert last["status"] == "firing"
    statuses = {a["fingerprint"]: a["status"] for a in last["alerts"]}
    assert statuses == {"fp1": "resolved", "fp2": "firing", "fp4": "firing"}
    resolved = next(a for a in last["alerts"] if a["fingerprint"] == "fp1")
    assert resolved["endsAt"] != "0001-01-01T00:00:00Z"

    # repeat_interval: the same firing set is sent again once an hour has passed.
    clock.advance(60)
    await hook.flush_due()
    assert len(receiver.requests) == 4, "the resolved alert left: no change to tell"
    clock.advance(3600)
    await hook.flush_due()
    assert len(receiver.requests) == 6, "both groups repeated"
    repeats = {b["groupKey"]: b for b in receiver.bodies()[4:]}
    assert {a["fingerprint"] for a in repeats[down["groupKey"]]["alerts"]} == {"fp2", "fp4"}
    deliveries = [h["X-Streamwatch-Delivery"] for h, _ in receiver.requests]
    assert len(set(deliveries)) == 6, "every notification has its own id"


async def test_match_silenced_send_resolved_and_max_alerts(store, session, receiver):
    clock = FakeClock()
    hook = notifier(
        store,
        session,
        receiver.url,
        clock,
        match=['severity="critical"'],
        send_resolved=False,
        max_alerts=2,
        group_wait="0s",
    )
    critical = [transition(n, at=clock.now, severity="critical") for n in range(1, 5)]
    silenced = Transition(**{**critical[0].__dict__, "fingerprint": "fp9", "silenced_by": ("s",)})
    warning = transition(8, at=clock.now, severity="warning")
    await hook.handle(save(store, *critical, silenced, warning))
    await hook.flush_due()
    (body,) = receiver.bodies()
    assert body["truncatedAlerts"] == 2 and len(body["alerts"]) == 2
    assert {a["labels"]["severity"] for a in body["alerts"]} == {"critical"}
    # send_resolved false: resolving all of them sends nothing and closes the group.
    await hook.handle(
        save(
            store,
            *[
                transition(n, TransitionKind.RESOLVED, at=clock.now, severity="critical")
                for n in range(1, 5)
            ],
        )
    )
    clock.advance(60)
    await hook.flush_due()
    assert len(receiver.requests) == 1
    assert store.query("SELECT COUNT(*) FROM notify_webhook_group") == [(0,)]


async def test_failures_retry_with_the_same_id_and_a_4xx_is_dropped_once(
    store, session, receiver, caplog
):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    registry = CollectorRegistry()
    hook = notifier(
        store, session, receiver.url, clock, registry, group_wait="0s", hmac_secret=SECRET
    )
    receiver.statuses = [503, 429]
    await hook.handle(save(store, transition(1, at=clock.now)))
    await hook.flush_due()
    await hook.flush_due()  # not due again yet: backoff
    assert len(receiver.requests) == 1
    for _ in range(2):
        clock.advance(400)  # past any backoff
        await hook.flush_due()
    assert len(receiver.requests) == 3
    ids = {h["X-Streamwatch-Delivery"] for h, _ in receiver.requests}
    assert len(ids) == 1, "a retry is the same notification"
    sent = registry.get_sample_value
    assert (
        sent("streamwatch_notifications_total", {"notifier": "webhook:ops", "result": "failed"})
        == 2
    )
    assert (
        sent("streamwatch_notifications_total", {"notifier": "webhook:ops", "result": "sent"}) == 1
    )

    # A 400 is not retried; logged once.
    receiver.statuses = [400]
    await hook.handle(save(store, transition(2, at=clock.now)))
    clock.advance(60)
    await hook.flush_due()
    clock.advance(400)
    await hook.flush_due()
    assert len(receiver.requests) == 4
    assert (
        sent(
            "streamwatch_notifications_total", {"notifier": "webhook:ops", "result": "dropped_4xx"}
        )
        == 1
    )
    lines = log_lines(caplog)
    assert lines.count("webhook refused notification") == 1
    assert lines.count("webhook failed") == 1, "a failing streak is logged once"
    assert SECRET not in lines and receiver.url not in lines


async def test_a_stalled_receiver_times_out_and_is_retried(store, session, receiver):
    clock = FakeClock()
    hook = notifier(store, session, receiver.url, clock, group_wait="0s", timeout="200ms")
    stall = asyncio.Event()

    async def hang(request, body):
        if len(receiver.requests) == 1:
            await stall.wait()

    receiver.on_request = hang
    await hook.handle(save(store, transition(1, at=clock.now)))
    await hook.flush_due()
    stall.set()
    assert store.query("SELECT attempts FROM notify_webhook_group") == [(1,)]
    clock.advance(400)
    await hook.flush_due()
    assert store.query("SELECT result FROM notify_log") == [("sent",)]


# -- kill -9 ----------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import aiohttp
    from prometheus_client import CollectorRegistry
    from monitor.notify.common import NotifyMetrics
    from monitor.notify.config import NotifyConfig
    from monitor.notify.tables import MIGRATIONS
    from monitor.notify.webhook import WebhookNotifier
    from monitor.outbox import Outbox
    from monitor.store import Store

    state, url, want = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def main():
        store = Store(state)
        store.migrate_part("notify", MIGRATIONS)
        config = NotifyConfig.model_validate({"webhooks": [{"name": "ops", "url": url,
            "group_by": ["alertname"], "group_wait": "0s"}]}).webhooks[0]
        registry = CollectorRegistry()
        async with aiohttp.ClientSession() as session:
            hook = WebhookNotifier(config, store, session, NotifyMetrics(registry))
            store.register_consumer(hook.name, 0)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            outbox = Outbox(store, [hook], registry)
            async with outbox.running():
                task = asyncio.create_task(hook.run())
                while store.query("SELECT COUNT(*) FROM notify_log")[0][0] < want:
                    await asyncio.sleep(0.02)
                task.cancel()
        store.close()

    asyncio.run(main())
    """
)


async def _child(state: Path, url: str, want: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(state),
        url,
        str(want),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 20) == b"ready\n"
    return process


async def test_kill9_between_send_and_record_repeats_the_same_delivery_id(tmp_path, receiver):
    state = tmp_path / "state.sqlite3"
    process = await _child(state, receiver.url, 3)
    killed = asyncio.Event()

    async def kill_on_first(request, body):
        if len(receiver.requests) == 1:  # the receiver has it; the sender has not recorded it
            os.kill(process.pid, signal.SIGKILL)
            killed.set()

    receiver.on_request = kill_on_first
    store = Store(state)
    try:
        save(store, *[transition(n, alertname=f"A{n}") for n in range(1, 4)])
    finally:
        store.close()
    process.stdin.write(b"go\n")  # type: ignore[union-attr]
    try:
        await asyncio.wait_for(killed.wait(), 20)
        assert await process.wait() == -signal.SIGKILL
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    process = await _child(state, receiver.url, 3)
    process.stdin.write(b"go\n")  # type: ignore[union-attr]
    try:
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    deliveries = [h["X-Streamwatch-Delivery"] for h, _ in receiver.requests]
    assert len(deliveries) == 4, "three notifications, the first one sent again after the kill"
    assert deliveries.count(deliveries[0]) == 2
    unique = {h["X-Streamwatch-Delivery"]: json.loads(b)["groupKey"] for h, b in receiver.requests}
    assert sorted(unique.values()) == [f'{{}}/ops:{{alertname="A{n}"}}' for n in range(1, 4)]


async def test_daemon_killed_between_send_and_record_sends_the_same_delivery_again(
    tmp_path, receiver
):
    from test_kill9 import OME_TOKEN, _daemon, _write_config

    from monitor.sim.ome import OmeSim
    from monitor.sim.serve import serve

    sim = OmeSim.with_layout(OME_TOKEN, vhosts=1, apps=1, streams_per_app=1)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - {alert: Listed, kind: ome.stream, expr: present, labels: {severity: info}}\n"
    )
    current: dict[str, asyncio.subprocess.Process] = {}
    second = asyncio.Event()

    async def kill_on_first(request, body):
        if len(receiver.requests) == 1:  # received, not answered, so not recorded: kill -9
            current["daemon"].send_signal(signal.SIGKILL)
            await current["daemon"].wait()
        else:
            second.set()

    receiver.on_request = kill_on_first
    async with serve(sim.app()) as url:
        config = _write_config(tmp_path, url, rules)
        config.write_text(
            config.read_text()
            + "notify:\n  webhooks:\n"
            + f"    - {{name: ops, url: '{receiver.url}', group_wait: 0s, hmac_secret: {SECRET}}}\n"
        )
        for round_ in range(2):
            process, base = await _daemon(config)
            current["daemon"] = process
            drain = asyncio.create_task(_drain(process))
            try:
                if round_ == 0:
                    await asyncio.wait_for(process.wait(), 30)
                    assert process.returncode == -signal.SIGKILL
                else:
                    await asyncio.wait_for(second.wait(), 30)
                    # The daemon counts the send after the answer: its /metrics is polled.
                    sample = (
                        'streamwatch_notifications_total{notifier="webhook:ops",result="sent"} 1.0'
                    )
                    async with asyncio.timeout(10):
                        while True:
                            if sample in await _metrics(base):
                                break
                            await asyncio.sleep(0.05)
            finally:
                if process.returncode is None:
                    process.terminate()
                    await process.wait()
                await drain
    first, again = (h["X-Streamwatch-Delivery"] for h, _ in receiver.requests[:2])
    assert first == again, "the resend after kill -9 carries the same delivery id"
    bodies = [{k: v for k, v in b.items() if k != "externalURL"} for b in receiver.bodies()]
    assert bodies[0] == bodies[1], "the same notification (the daemon's URL changed)"
    assert len({h["X-Streamwatch-Delivery"] for h, _ in receiver.requests}) == 1
    store = Store(tmp_path / "state" / "streamwatch.sqlite3")
    try:
        assert store.query("SELECT delivery, result FROM notify_log") == [(first, "sent")]
    finally:
        store.close()


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stderr is not None
    while await process.stderr.readline():
        pass


def test_the_notify_section_of_a_config_file(tmp_path):
    from monitor.config import ConfigError, load_config

    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        f"state_dir: {tmp_path}\nrule_files: []\nnotify:\n  webhooks:\n"
        "    - {name: ops, url: 'http://127.0.0.1:5001/hook', match: ['severity=\"critical\"'],\n"
        "       group_by: [alertname, source], hmac_secret: '${WEBHOOK_SECRET}'}\n"
        "  mqtt: {url: 'mqtt://127.0.0.1:1883', username: u, password: p, prefix: sw}\n"
        "  alertmanagers: [{url: 'http://127.0.0.1:9093', resend_interval: 1m}]\n"
    )
    config = load_config(path, env={"WEBHOOK_SECRET": SECRET})
    hook = config.notify.webhooks[0]
    assert (hook.group_wait, hook.group_interval, hook.repeat_interval) == (30, 300, 14400)
    assert hook.send_resolved and hook.timeout == 10
    assert hook.hmac_secret is not None and hook.hmac_secret.get_secret_value() == SECRET
    assert SECRET not in repr(config)
    assert hook.match[0].matches({"severity": "critical"})
    assert config.notify.mqtt is not None and config.notify.mqtt.host_port == ("127.0.0.1", 1883)
    assert config.notify.alertmanagers[0].resend_interval == 60

    path.write_text(
        f"state_dir: {tmp_path}\nrule_files: []\nnotify:\n  webhooks:\n"
        "    - {name: ops, url: 'http://u:pw@127.0.0.1/hook', match: ['severity=~\"(\"']}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "notify.webhooks[0].url" in text and "credentials in the URL" in text
    assert "notify.webhooks[0].match[0]" in text and "invalid regex" in text
    assert "pw@" not in text


async def test_a_webhook_removed_from_the_config_leaves_no_groups_behind(store, session, receiver):
    from types import SimpleNamespace

    from monitor.notify import forget_unconfigured

    clock = FakeClock()
    hook = notifier(store, session, receiver.url, clock)
    await hook.handle(save(store, transition(1, at=clock.now)))
    assert store.query("SELECT COUNT(*) FROM notify_webhook_group") == [(1,)]
    forget_unconfigured(SimpleNamespace(store=store), NotifyConfig.model_validate({}))  # type: ignore[arg-type]
    assert store.query("SELECT COUNT(*) FROM notify_webhook_group") == [(0,)]
    assert store.query("SELECT COUNT(*) FROM notify_webhook_alert") == [(0,)]
    # The log is pruned after 30 days.
    store.execute("INSERT INTO notify_log VALUES ('ops', 'd1', 'k', ?, 'sent')", (clock.now,))
    clock.advance(31 * 86400)
    hook.prune()
    assert store.query("SELECT COUNT(*) FROM notify_log") == [(0,)]


async def _metrics(base: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        return await resp.text()
