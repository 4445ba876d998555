"""Alertmanager both ways against a real prometheus-alertmanager started here: our pushes are in
its /api/v2/alerts (endsAt ahead while firing, gone once resolved), and its webhooks to
/api/v1/alertmanager become action requests through the gate, with the bearer token checked."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from test_notify_mqtt import FakeSources, free_port
from test_notify_webhook import save, transition

from monitor.alerting.transitions import TransitionKind
from monitor.component import ActionGate, Deps
from monitor.notify import component
from monitor.notify.alertmanager import AlertmanagerPusher
from monitor.notify.config import NotifyConfig
from monitor.store import Store
from monitor.web import VIEWS

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
TOKEN = "am-receive-token"


class Alertmanager:
    def __init__(self, tmp: Path, webhook_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tmp / f"am-{self.port}"
        self.dir.mkdir()
        self.config = self.dir / "alertmanager.yml"
        self.config.write_text(
            f"""
route:
  receiver: streamwatch
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: streamwatch
    webhook_configs:
      - url: {webhook_url}
        send_resolved: false
        http_config:
          authorization: {{type: Bearer, credentials: {TOKEN}}}
"""
        )
        self.process: asyncio.subprocess.Process | None = None
        self.cluster = ["--cluster.listen-address="]  # alone unless told otherwise

    async def start(self) -> None:
        path = shutil.which(ALERTMANAGER) or shutil.which("prometheus-alertmanager")
        if path is None:
            pytest.fail(
                "prometheus-alertmanager is not installed: apt-get install prometheus-alertmanager"
            )
        self.process = await asyncio.create_subprocess_exec(
            path,
            f"--config.file={self.config}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *self.cluster,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        # Alertmanager announces readiness only on /-/ready: polled, bounded.
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/-/ready") as resp:
                        if resp.status == 200:
                            return
                if self.process.returncode is not None or time.monotonic() > deadline:
                    pytest.fail("prometheus-alertmanager did not become ready")
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:  # a cluster member takes its time leaving the cluster
                await asyncio.wait_for(self.process.wait(), 2)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def alerts(self) -> list[dict]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/api/v2/alerts") as resp:
            assert resp.status == 200
            return await resp.json()


@contextlib.asynccontextmanager
async def serve_routes(routes, api_token, port=0):
    """The component's routes in an app that has what `require_token` reads."""
    app = web.Application()
    app[VIEWS] = SimpleNamespace(api_token=api_token)  # type: ignore[misc]
    app.router.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state.sqlite3")
    try:
        yield s
    finally:
        s.close()


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_push_and_receive_through_a_real_alertmanager(tmp_path, store):
    gate = ActionGate()
    asked: list = []
    arrived = asyncio.Event()

    async def runner(request):
        asked.append(request)
        arrived.set()
        return {"result": "ok", "detail": "restarted", "id": 7}

    token = {"value": TOKEN}
    webhook_port = free_port()
    am = Alertmanager(tmp_path, f"http://127.0.0.1:{webhook_port}/api/v1/alertmanager")
    config = NotifyConfig.model_validate(
        {"alertmanagers": [{"url": am.url, "resend_interval": "1m"}]}
    )
    deps = Deps(
        config=SimpleNamespace(notify=config),
        store=store,
        registry=CollectorRegistry(),
        engine=None,  # type: ignore[arg-type]
        sources=FakeSources(),  # type: ignore[arg-type]
        api_token=lambda: token["value"],
        base_url=lambda: "http://127.0.0.1:9108",
        actions=gate,
    )
    await am.start()
    try:
        async with component(deps) as parts:
            (pusher,) = parts.consumers
            assert isinstance(pusher, AlertmanagerPusher)
            store.register_consumer(pusher.name, 0)
            await _push_then_resolve(am, pusher, store)
            async with serve_routes(parts.routes, deps.api_token, webhook_port) as base:
                await _receive(
                    am, f"{base}/api/v1/alertmanager", gate, runner, asked, arrived, token
                )
    finally:
        await am.stop()


async def _push_then_resolve(am: Alertmanager, pusher: AlertmanagerPusher, store: Store) -> None:
    firing = save(store, transition(1, at=time.time()), transition(2, at=time.time()))
    assert await pusher.handle(firing) == [t.id for t in firing]
    assert await pusher.push()
    alerts = {a["fingerprint"]: a for a in await am.alerts()}
    got = sorted(a["labels"]["stream"] for a in alerts.values())
    assert got == ["s1", "s2"]
    one = next(a for a in alerts.values() if a["labels"]["stream"] == "s1")
    assert one["generatorURL"] == "http://127.0.0.1:9108/api/v1/alerts?fingerprint=fp1"
    assert one["status"]["state"] == "active"
    ahead = when(one["endsAt"]) - time.time()
    assert 200 < ahead <= 240, "endsAt = now + 4 x resend_interval"

    resolved = save(store, transition(1, TransitionKind.RESOLVED, at=time.time()))
    await pusher.handle(resolved)
    assert await pusher.push()
    assert [a["labels"]["stream"] for a in await am.alerts()] == ["s2"]
    assert store.query("SELECT fingerprint FROM notify_am_alert") == [("fp2",)], (
        "a resolve is forgotten once it reached Alertmanager"
    )


async def _receive(am, base, gate, runner, asked, arrived, token) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json={"alerts": []}) as resp:
            assert resp.status == 401
        token["value"] = None
        async with http.post(
            base, json={"alerts": []}, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 403
        token["value"] = TOKEN

        # Without the actions component the answer says so, per alert.
        body = {
            "receiver": "x",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "A", "stream": "s1", "action": "restart"},
                },
                {"status": "firing", "labels": {"alertname": "B", "stream": "s1"}},
                {"status": "resolved", "labels": {"alertname": "C", "action": "restart"}},
                {
                    "status": "firing",
                    "labels": {"alertname": "D", "stream": "zz"},
                    "annotations": {"streamwatch_action": "restart"},
                },
            ],
        }
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(base, json=body, headers=headers) as resp:
            assert resp.status == 200
            results = (await resp.json())["data"]["results"]
        assert [r["result"] for r in results] == ["unavailable", "ignored", "ignored", "not_found"]

        # Alertmanager routes an alert that names an action to us; it becomes a request.
        gate.plug(runner)
        alert = {
            "labels": {"alertname": "StreamStalled", "stream": "s1", "action": "restart"},
            "annotations": {"streamwatch_params": '{"after": "5s"}'},
        }
        async with http.post(f"{am.url}/api/v2/alerts", json=[alert]) as resp:
            assert resp.status == 200
        async with asyncio.timeout(20):
            await arrived.wait()
    (request,) = asked
    assert request.action == "restart" and request.requested_by == "alertmanager:streamwatch"
    assert str(request.target.source) == "ome/o1" and dict(request.target.labels) == {
        "stream": "s1"
    }
    assert dict(request.params) == {"after": "5s"} and request.reason == "StreamStalled"


async def test_ha_pair_two_clustered_alertmanagers_notify_once(tmp_path):
    """Two streamwatch instances with one config push the same alert to both members of an
    Alertmanager cluster on loopback; the cluster's notification log lets one notification
    per group reach the receiver."""
    from test_notify_webhook import Receiver

    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    hook = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    gossip = [free_port(), free_port()]
    members = [Alertmanager(tmp_path, hook) for _ in gossip]
    for i, member in enumerate(members):
        member.cluster = [
            f"--cluster.listen-address=127.0.0.1:{gossip[i]}",
            f"--cluster.advertise-address=127.0.0.1:{gossip[i]}",
            f"--cluster.peer=127.0.0.1:{gossip[1 - i]}",
            "--cluster.peer-timeout=500ms",
            "--cluster.gossip-interval=50ms",
            "--cluster.pushpull-interval=1s",
        ]
        member.config.write_text(
            member.config.read_text().replace("group_wait: 0s", "group_wait: 1s")
        )
    stores = [Store(tmp_path / f"state{i}.sqlite3") for i in range(2)]
    try:
        await asyncio.gather(*(m.start() for m in members))
        config = NotifyConfig.model_validate(
            {"alertmanagers": [{"url": m.url, "resend_interval": "1m"} for m in members]}
        )
        at = time.time()
        for store in stores:  # two daemons, one config, the same alert
            deps = Deps(
                config=SimpleNamespace(notify=config),
                store=store,
                registry=CollectorRegistry(),
                engine=None,  # type: ignore[arg-type]
                sources=FakeSources(),  # type: ignore[arg-type]
            )
            async with component(deps) as parts:
                for pusher in parts.consumers:
                    assert isinstance(pusher, AlertmanagerPusher)
                    store.register_consumer(pusher.name, 0)
                    firing = save(store, transition(1, at=at))
                    await pusher.handle(firing)
                    assert await pusher.push()
        for member in members:
            assert [a["labels"]["stream"] for a in await member.alerts()] == ["s1"]
        await receiver.wait_for(1, within=20)
        # No event marks "the other member decided not to send": wait several peer timeouts.
        await asyncio.sleep(2.5)
        assert len(receiver.requests) == 1, "one notification per group from the HA pair"
        assert receiver.bodies()[0]["alerts"][0]["labels"]["stream"] == "s1"
    finally:
        await asyncio.gather(*(m.stop() for m in members))
        for store in stores:
            store.close()
        await app_runner.cleanup()


async def test_resent_every_interval_so_a_restarted_alertmanager_learns_it_again(tmp_path, store):
    am = Alertmanager(tmp_path, "http://127.0.0.1:1/unused")
    config = NotifyConfig.model_validate(
        {"alertmanagers": [{"url": am.url, "resend_interval": "1s"}]}
    ).alertmanagers[0]
    from monitor.notify.common import NotifyMetrics
    from monitor.notify.tables import MIGRATIONS

    store.migrate_part("notify", MIGRATIONS)
    registry = CollectorRegistry()
    await am.start()
    try:
        async with aiohttp.ClientSession() as session:
            pusher = AlertmanagerPusher(config, store, session, NotifyMetrics(registry))
            await pusher.handle(save(store, transition(1, at=time.time())))
            task = asyncio.create_task(pusher.run())
            try:
                await _until_alerts(am, 1)
                # Alertmanager keeps alerts in memory only: a restart forgets them ...
                await am.stop()
                await am.start()
                await _until_alerts(am, 1)  # ... and the next resend brings the alert back
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await am.stop()
    sent = registry.get_sample_value(
        "streamwatch_notifications_total",
        {"notifier": f"alertmanager:{am.url}", "result": "sent"},
    )
    assert sent is not None and sent >= 2


async def _until_alerts(am: Alertmanager, count: int, within: float = 10) -> None:
    # Alertmanager has no event for "an alert arrived": its API is polled, bounded.
    deadline = time.monotonic() + within
    while len(await am.alerts()) < count:
        assert time.monotonic() < deadline, "the alert did not reach Alertmanager"
        await asyncio.sleep(0.05)
