"""MQTT (aiomqtt): alert states, events, source health and a command topic.

Topics (`<p>` is the configured prefix):

- `<p>/alerts/<alertname>/<fingerprint>`: the alert as JSON, retained while it fires; an empty
  retained message on resolve clears it.
- `<p>/events`: every transition that notifies (silenced ones do not), not retained.
- `<p>/sources/<kind>/<name>/up`: `1` or `0`, retained, published when it changes.
- `<p>/status`: `online`, retained; the broker publishes the last will `offline` when the
  connection is lost, and the daemon publishes `offline` itself on a clean stop.
- `<p>/commands/actions` (subscribed): `{"token": <api token>, "action": ..., "target":
  {"source", "kind", "labels"}` or `"labels": {...}` to find the entity, optional `"params"`,
  `"id"`}; the answer, with the same `id`, on `<p>/commands/results`.

What is guaranteed: a transition is acknowledged to the outbox only after the broker
acknowledged its messages at the configured QoS (PUBACK for QoS 1; for QoS 0, after they were
written to the socket). While the broker is away, transitions stay in the persistent outbox
(nothing lost across a restart or `kill -9`; a crash between PUBACK and acknowledgement publishes
them again: at least once) and go out in order on reconnect. Source states are kept as the
latest value per topic (coalesced, bounded by the number of sources) and all are published again
on every connect, so the retained state is right after a broker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiomqtt

from monitor.alerting.transitions import Transition, TransitionKind
from monitor.component import Deps
from monitor.model import SourceRef, Target
from monitor.notify.alertmanager import find_target, request_action
from monitor.notify.common import NotifyMetrics, am_alert, backoff, describe, notifies
from monitor.notify.config import MqttConfig

log = logging.getLogger(__name__)

CONNECT_WAIT = 5.0  # how long a batch waits for the broker before it is handed back
STATE_INTERVAL = 1.0  # seconds between looks at the sources' health (a dict compare)
RECONNECT_MAX = 30.0
PUBLISH_TIMEOUT = 10.0
MAX_COMMAND = 64 * 1024


class MqttNotifier:
    name = "mqtt"

    def __init__(self, config: MqttConfig, deps: Deps, metrics: NotifyMetrics):
        self.config = config
        self.deps = deps
        self.metrics = metrics
        self.prefix = config.prefix.rstrip("/")
        self.client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._states: dict[str, str] = {}  # retained source states: latest per topic
        self._published: dict[str, str] = {}  # what this connection has published
        self._state_wake = asyncio.Event()
        self.state_interval = STATE_INTERVAL
        self.connect_wait = CONNECT_WAIT
        # The retained alert states this daemon published (firing ones; bounded by the alerts
        # the engine holds), published again on every reconnect: right after a broker restart
        # that lost its retained messages.
        self._alerts: dict[str, bytes] = {}
        self.connects = 0

    # -- the outbox consumer -------------------------------------------------------------------

    def messages(self, t: Transition) -> list[tuple[str, bytes, bool]]:
        alert = am_alert(t, self.deps.base_url)
        event = {
            **alert,
            "transition": t.kind.value,
            "id": t.id,
            "at": t.at,
            "value": t.value,
            "target": t.target.to_json(),
        }
        topic = f"{self.prefix}/alerts/{_part(t.alertname)}/{t.fingerprint}"
        if t.kind == TransitionKind.RESOLVED:
            state = (topic, b"", True)
        else:
            state = (
                topic,
                json.dumps({k: v for k, v in event.items() if k != "transition"}).encode(),
                True,
            )
        return [(f"{self.prefix}/events", json.dumps(event).encode(), False), state]

    async def handle(self, transitions: Sequence[Transition]) -> Sequence[int]:
        """Publish, in order; return the ids whose messages the broker acknowledged. Without a
        broker (after CONNECT_WAIT) nothing is done and the outbox hands them again."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.connect_wait):
                await self._connected.wait()
        done: list[int] = []
        client = self.client
        if client is None:
            return done
        for t in transitions:
            if notifies(t):
                try:
                    for topic, payload, retain in self.messages(t):
                        await client.publish(
                            topic,
                            payload,
                            qos=self.config.qos,
                            retain=retain,
                            timeout=PUBLISH_TIMEOUT,
                        )
                except aiomqtt.MqttError as exc:
                    self.metrics.notifications.labels(self.name, "failed").inc()
                    log.warning("mqtt publish failed", extra={"error": describe(exc)})
                    break
                self.metrics.notifications.labels(self.name, "sent").inc()
            if t.id is not None:
                done.append(t.id)
        return done

    # -- source states -------------------------------------------------------------------------

    def refresh_states(self) -> None:
        for poller in self.deps.sources.pollers():
            ref: SourceRef = poller.ref
            if poller.up is None:
                continue  # not polled yet: unknown is not down
            topic = f"{self.prefix}/sources/{_part(ref.kind)}/{_part(ref.name)}/up"
            self._states[topic] = "1" if poller.up else "0"

    async def _publish_states(self, client: aiomqtt.Client) -> None:
        self.refresh_states()
        for topic, value in list(self._states.items()):
            if self._published.get(topic) != value:
                await client.publish(
                    topic, value, qos=self.config.qos, retain=True, timeout=PUBLISH_TIMEOUT
                )
                self._published[topic] = value

    async def _states_loop(self, client: aiomqtt.Client) -> None:
        while True:
            self._state_wake.clear()
            await self._publish_states(client)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.state_interval):
                    await self._state_wake.wait()

    # -- commands ------------------------------------------------------------------------------

    async def _commands_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            answer = await self.command(message.payload)
            await client.publish(
                f"{self.prefix}/commands/results",
                json.dumps(answer, default=str),
                qos=self.config.qos,
                timeout=PUBLISH_TIMEOUT,
            )

    async def command(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_COMMAND:
            return {"result": "invalid", "detail": "payload must be JSON of at most 64 KiB"}
        try:
            body = json.loads(payload)
        except ValueError:
            return {"result": "invalid", "detail": "payload is not JSON"}
        if not isinstance(body, Mapping):
            return {"result": "invalid", "detail": "payload must be a JSON object"}
        answer: dict[str, Any] = {"id": body.get("id")}
        expected = self.deps.api_token()
        if not expected:
            return {**answer, "result": "forbidden", "detail": "set api.token to allow commands"}
        token = body.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), expected.encode()):
            log.warning("mqtt command refused", extra={"reason": "wrong token"})
            return {**answer, "result": "unauthorized", "detail": "missing or wrong token"}
        action, params = body.get("action"), body.get("params") or {}
        if not isinstance(action, str) or not action or not isinstance(params, Mapping):
            return {**answer, "result": "invalid", "detail": "action (string) is required"}
        answer["action"] = action
        try:
            if isinstance(body.get("target"), Mapping):
                target: Target | None = Target.from_json(body["target"])
            elif isinstance(body.get("labels"), Mapping):
                target = find_target(self.deps, {str(k): str(v) for k, v in body["labels"].items()})
            else:
                return {**answer, "result": "invalid", "detail": "target or labels is required"}
        except (KeyError, ValueError, TypeError):
            return {**answer, "result": "invalid", "detail": "target: {source, kind, labels}"}
        if target is None:
            return {**answer, "result": "not_found", "detail": "no running source has this entity"}
        answer["target"] = target.to_json()
        outcome = await request_action(self.deps, action, target, params, "mqtt", "mqtt command")
        return {**answer, **outcome}

    # -- the connection ------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        host, port = cfg.host_port
        tls_context = None
        if cfg.tls:
            tls_context = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.cert_file:
                tls_context.load_cert_chain(cfg.cert_file, cfg.key_file)
            if cfg.tls_insecure:
                tls_context.check_hostname = False
        return aiomqtt.Client(
            host,
            port,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            identifier=cfg.client_id,
            will=aiomqtt.Will(f"{self.prefix}/status", "offline", qos=1, retain=True),
            tls_context=tls_context,
            keepalive=int(cfg.keepalive),
            timeout=10,
            max_queued_incoming_messages=1000,
            max_queued_outgoing_messages=self.config.max_queue,
        )

    async def run(self) -> None:
        """Connect, and reconnect with backoff, for as long as the daemon runs."""
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                async with self._client() as client:
                    await client.publish(
                        f"{self.prefix}/status",
                        "online",
                        qos=1,
                        retain=True,
                        timeout=PUBLISH_TIMEOUT,
                    )
                    if self.config.commands:
                        await client.subscribe(f"{self.prefix}/commands/actions", qos=1)
                    self._published = {}
                    await self._publish_states(client)
                    for topic, payload in list(self._alerts.items()):
                        await client.publish(
                            topic,
                            payload,
                            qos=self.config.qos,
                            retain=True,
                            timeout=PUBLISH_TIMEOUT,
                        )
                    self.client = client
                    self.connects += 1
                    self.metrics.connected.set(1)
                    self._connected.set()
                    log.info("mqtt connected", extra={"broker": self._broker()})
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._states_loop(client))
                        tasks.create_task(self._commands_loop(client))
            except* Exception as group:
                error = describe(group.exceptions[0])
                if attempt == 0:
                    log.warning(
                        "mqtt disconnected", extra={"broker": self._broker(), "error": error}
                    )
            finally:
                self.client = None
                self._connected.clear()
                self.metrics.connected.set(0)
            attempt = 1 if time.monotonic() - started > RECONNECT_MAX else attempt + 1
            await asyncio.sleep(min(RECONNECT_MAX, backoff(attempt)))

    async def stop(self) -> None:
        """A clean stop says `offline` itself (the will is for unclean ones)."""
        client = self.client
        if client is not None:
            with contextlib.suppress(Exception):
                await client.publish(
                    f"{self.prefix}/status", "offline", qos=1, retain=True, timeout=2
                )

    def _broker(self) -> str:
        host, port = self.config.host_port
        return f"{host}:{port}"


def _part(text: str) -> str:
    """A topic level: MQTT's wildcards and separators replaced."""
    return "".join("_" if c in "/+#\x00" else c for c in text) or "_"
