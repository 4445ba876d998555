"""MQTT against a real mosquitto started here: alert states retained and cleared, events, source
health, commands through the action gate, a broker restart mid-run (nothing lost, retained
state right after), the offline status on a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import uuid
from pathlib import Path
from types import SimpleNamespace

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry
from test_notify_webhook import save, transition

from monitor.alerting.transitions import TransitionKind
from monitor.component import ActionGate, Deps
from monitor.model import Entity, SourceRef
from monitor.notify.common import NotifyMetrics
from monitor.notify.config import NotifyConfig
from monitor.notify.mqtt import MqttNotifier
from monitor.store import Store

MOSQUITTO = "/usr/sbin/mosquitto"
TOKEN = "mqtt-api-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A broker on a loopback port, without persistence: a restart forgets every retained
    message, so what is retained after one is what the daemon published again."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            "log_type information\n"
        )
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        path = shutil.which("mosquitto") or shutil.which(MOSQUITTO)
        if path is None:
            pytest.fail("mosquitto is not installed: apt-get install mosquitto (tests need it)")
        self.process = await asyncio.create_subprocess_exec(
            path, "-c", str(self.conf), stderr=asyncio.subprocess.PIPE
        )
        assert self.process.stderr is not None
        seen = []
        async with asyncio.timeout(10):
            while True:
                line = await self.process.stderr.readline()
                if not line:
                    pytest.fail(f"mosquitto exited: {b''.join(seen).decode(errors='replace')}")
                seen.append(line)
                if b"Opening ipv4 listen socket" in line:
                    break
        self._drain = asyncio.create_task(self._read(self.process.stderr))

    @staticmethod
    async def _read(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        if self._drain is not None:
            await self._drain
        self.process = None


@pytest.fixture
async def broker(tmp_path):
    server = Mosquitto(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def retained(port: int, pattern: str) -> dict[str, bytes]:
    """The retained messages under `pattern`, as a new subscriber gets them. A marker published
    after subscribing arrives after them: no waiting for 'probably all'."""
    marker = f"probe/{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    async with asyncio.timeout(10), aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(pattern, qos=1)
        await client.subscribe(marker, qos=1)
        await client.publish(marker, b"x", qos=1)
        async for message in client.messages:
            if str(message.topic) == marker:
                return found
            found[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]
    return found


class Listener:
    """A live subscriber collecting messages, awaitable by a predicate."""

    def __init__(self, port: int, pattern: str):
        self.port, self.pattern = port, pattern
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Condition()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.subscribe(self.pattern, qos=1)
            self._ready.set()
            async for message in client.messages:
                self.messages.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]
                async with self._changed:
                    self._changed.notify_all()

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task

    async def wait(self, predicate, within: float = 10) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: predicate(self.messages))

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p in self.messages if t == topic]


class FakeSources:
    def __init__(self) -> None:
        self.entity = Entity("ome.stream", {"stream": "s1"})
        self.poller = SimpleNamespace(
            ref=SourceRef("ome", "o1"), up=True, last_good=SimpleNamespace(entities=[self.entity])
        )

    def pollers(self):
        return [self.poller]

    def find(self, kind, labels):
        if kind == self.entity.kind and labels.get("stream") == "s1":
            return SimpleNamespace(ref=self.poller.ref), self.entity
        return None


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state.sqlite3")
    try:
        yield s
    finally:
        s.close()


def mqtt_notifier(port: int, gate: ActionGate, sources: FakeSources) -> MqttNotifier:
    config = NotifyConfig.model_validate(
        {"mqtt": {"url": f"mqtt://127.0.0.1:{port}", "prefix": "sw", "qos": 1}}
    ).mqtt
    deps = Deps(
        config=None,
        store=None,  # type: ignore[arg-type]
        registry=CollectorRegistry(),
        engine=None,  # type: ignore[arg-type]
        sources=sources,  # type: ignore[arg-type]
        api_token=lambda: TOKEN,
        base_url=lambda: "http://127.0.0.1:9108",
        actions=gate,
    )
    assert config is not None
    notifier = MqttNotifier(config, deps, NotifyMetrics(deps.registry))
    notifier.connect_wait = 0.5
    return notifier


@contextlib.asynccontextmanager
async def running(notifier: MqttNotifier):
    task = asyncio.create_task(notifier.run())
    try:
        async with asyncio.timeout(10):
            await notifier._connected.wait()
        yield notifier
    finally:
        await notifier.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_alerts_events_sources_and_a_broker_restart(broker, store):
    sources = FakeSources()
    notifier = mqtt_notifier(broker.port, ActionGate(), sources)
    async with running(notifier), Listener(broker.port, "sw/#") as live:
        firing = save(store, transition(1), transition(2))
        assert await notifier.handle(firing) == [t.id for t in firing]
        await live.wait(lambda m: len([1 for t, _ in m if t == "sw/events"]) == 2)
        event = json.loads(live.on("sw/events")[0])
        assert event["transition"] == "firing" and event["fingerprint"] == "fp1"
        assert event["labels"]["stream"] == "s1"

        resolved = save(store, transition(1, TransitionKind.RESOLVED))
        assert await notifier.handle(resolved) == [resolved[0].id]
        state = await retained(broker.port, "sw/#")
        assert set(state) == {
            "sw/status",
            "sw/alerts/StreamDown/fp2",
            "sw/sources/ome/o1/up",
        }, "fp1 cleared by its resolve"
        assert state["sw/status"] == b"online" and state["sw/sources/ome/o1/up"] == b"1"
        assert json.loads(state["sw/alerts/StreamDown/fp2"])["status"] == "firing"

        # A source goes down: published at the next look (woken here instead of waiting).
        sources.poller.up = False
        notifier._state_wake.set()
        await live.wait(lambda m: ("sw/sources/ome/o1/up", b"0") in m)

        # The broker goes away: transitions stay in the outbox (nothing acknowledged) ...
        await broker.stop()
        later = save(store, transition(3), transition(2, TransitionKind.RESOLVED))
        assert await notifier.handle(later) == []
        # ... and go out in order once it is back, with the retained state published again.
        await broker.start()
        async with asyncio.timeout(20):
            await notifier._connected.wait()
        assert await notifier.handle(later) == [t.id for t in later]
        state = await retained(broker.port, "sw/#")
        assert set(state) == {"sw/status", "sw/alerts/StreamDown/fp3", "sw/sources/ome/o1/up"}
        assert state["sw/status"] == b"online" and state["sw/sources/ome/o1/up"] == b"0"
        assert notifier.connects == 2

    # A clean stop says offline itself.
    state = await retained(broker.port, "sw/status")
    assert state == {"sw/status": b"offline"}


async def test_commands_go_through_the_gate_and_are_answered(broker):
    gate = ActionGate()
    notifier = mqtt_notifier(broker.port, gate, FakeSources())
    asked = []

    async def runner(request):
        asked.append(request)
        return {"result": "ok", "detail": "restarted"}

    async with (
        running(notifier),
        Listener(broker.port, "sw/commands/results") as results,
        aiomqtt.Client("127.0.0.1", broker.port) as client,
    ):

        async def command(body: dict) -> dict:
            count = len(results.messages)
            await client.publish("sw/commands/actions", json.dumps(body), qos=1)
            await results.wait(lambda m: len(m) > count)
            return json.loads(results.messages[count][1])

        answer = await command({"id": 1, "token": "wrong", "action": "restart", "labels": {}})
        assert answer == {"id": 1, "result": "unauthorized", "detail": "missing or wrong token"}

        answer = await command(
            {"id": 2, "token": TOKEN, "action": "restart", "labels": {"stream": "s1"}}
        )
        assert answer["result"] == "unavailable", "actions not running: said so"

        gate.plug(runner)
        answer = await command(
            {"id": 3, "token": TOKEN, "action": "restart", "labels": {"stream": "s1"}}
        )
        assert answer["result"] == "ok" and answer["target"]["source"] == "ome/o1"
        target = {"source": "ome/o1", "kind": "ome.stream", "labels": {"stream": "s9"}}
        answer = await command(
            {
                "id": 4,
                "token": TOKEN,
                "action": "hls_dump",
                "target": target,
                "params": {"a": 1},
            }
        )
        assert answer["result"] == "ok"
        answer = await command(
            {"id": 5, "token": TOKEN, "action": "restart", "labels": {"stream": "nope"}}
        )
        assert answer["result"] == "not_found"
        answer = await command({"id": 6, "token": TOKEN})
        assert answer["result"] == "invalid"
    assert [(r.action, r.requested_by) for r in asked] == [
        ("restart", "mqtt"),
        ("hls_dump", "mqtt"),
    ]
    assert dict(asked[1].params) == {"a": 1} and dict(asked[1].target.labels) == {"stream": "s9"}


async def test_daemon_publishes_online_and_the_broker_its_will_after_kill9(broker, tmp_path):
    import signal

    from test_kill9 import OME_TOKEN, _daemon, _write_config

    from monitor.sim.ome import OmeSim
    from monitor.sim.serve import serve

    sim = OmeSim.with_layout(OME_TOKEN, vhosts=1, apps=1, streams_per_app=1)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - {alert: Listed, kind: ome.stream, expr: present, labels: {severity: info}}\n"
    )
    async with serve(sim.app()) as url, Listener(broker.port, "sw/#") as live:
        config = _write_config(tmp_path, url, rules)
        config.write_text(
            config.read_text()
            + f"notify:\n  mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', prefix: sw}}\n"
        )
        process, _base = await _daemon(config)
        try:
            await live.wait(lambda m: ("sw/status", b"online") in m, within=20)
            await live.wait(lambda m: ("sw/sources/ome/origin/up", b"1") in m, within=20)
            await live.wait(
                lambda m: any(t.startswith("sw/alerts/Listed/") and p for t, p in m), within=20
            )
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        # The broker sees the connection drop and publishes the will.
        await live.wait(lambda m: m[-1] == ("sw/status", b"offline"), within=20)
    state = await retained(broker.port, "sw/#")
    assert state["sw/status"] == b"offline"
    assert any(t.startswith("sw/alerts/Listed/") for t in state), "the alert state stays"
