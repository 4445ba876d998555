"""Alertmanager, both ways.

Push (`AlertmanagerPusher`, one per configured Alertmanager): what fires is posted to
`/api/v2/alerts` and posted again every `resend_interval` with `endsAt` = now + 4 *
resend_interval, as Prometheus does, so an Alertmanager that lost its state (restart, new
cluster member) learns it again and an alert whose sender died expires by itself. A resolve is
posted with its resolve time, until one post of it succeeded. The alerts to post live in the
`notify_am_alert` table, filed from the outbox exactly once (filing and acknowledgement in one
SQLite transaction); posts are idempotent in Alertmanager, so a repeat after a crash is harmless.

Receive (`receive_route`): `POST /api/v1/alertmanager` takes an Alertmanager webhook (version 4)
and turns each firing alert into an action through the same guard as a rule's action:

- the action is the alert's `action` label, or else its `streamwatch_action` annotation;
- its parameters, optionally, a JSON object in the `streamwatch_params` annotation;
- the target is the entity whose identity labels the alert carries, found through the source
  manager (of the kind in the alert's `kind` label, or else of any kind the sources report).

Resolved alerts and alerts without an action are answered `ignored`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from monitor.alerting.transitions import Transition, iso
from monitor.component import ActionRequest, Deps
from monitor.model import Target
from monitor.notify.common import (
    NotifyMetrics,
    am_alert,
    backoff,
    describe,
    notifies,
    retryable,
    status_of,
)
from monitor.notify.config import AlertmanagerConfig
from monitor.store import Store

log = logging.getLogger(__name__)

CHUNK = 1000  # alerts per POST
MAX_ALERTS = 100  # alerts taken from one incoming webhook
ACTION_LABEL = "action"
ACTION_ANNOTATION = "streamwatch_action"
PARAMS_ANNOTATION = "streamwatch_params"


class AlertmanagerPusher:
    def __init__(
        self,
        config: AlertmanagerConfig,
        store: Store,
        session: aiohttp.ClientSession,
        metrics: NotifyMetrics,
        *,
        clock: Callable[[], float] = time.time,
        base_url: Callable[[], str | None] = lambda: None,
    ):
        self.config = config
        self.store = store
        self.session = session
        self.metrics = metrics
        self.clock = clock
        self.base_url = base_url
        self._wake = asyncio.Event()
        self._failing = False

    @property
    def name(self) -> str:
        return f"alertmanager:{self.config.url}"

    async def handle(self, transitions: Sequence[Transition]) -> Sequence[int]:
        now = self.clock()
        with self.store.transaction():
            for t in transitions:
                if not notifies(t):
                    continue
                self.store.execute(
                    "INSERT INTO notify_am_alert VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (am, fingerprint) DO UPDATE SET tid = excluded.tid, "
                    "status = excluded.status, body = excluded.body",
                    (
                        self.config.url,
                        t.fingerprint,
                        t.id,
                        status_of(t),
                        json.dumps(am_alert(t, self.base_url)),
                    ),
                )
            ids = [t.id for t in transitions if t.id is not None]
            self.store.outbox_ack(self.name, ids, now)
        self._wake.set()
        return ids

    def postable(self, body: Mapping[str, Any], now: float) -> dict[str, Any]:
        alert = {
            "labels": body["labels"],
            "annotations": body["annotations"],
            "startsAt": body["startsAt"],
            "endsAt": body["endsAt"]
            if body["status"] == "resolved"
            else iso(now + 4 * self.config.resend_interval),
        }
        if body.get("generatorURL"):
            alert["generatorURL"] = body["generatorURL"]
        return alert

    async def push(self) -> bool:
        """Post every alert this Alertmanager should know of; False if a post failed."""
        rows = self.store.query(
            "SELECT fingerprint, tid, status, body FROM notify_am_alert WHERE am = ? "
            "ORDER BY fingerprint",
            (self.config.url,),
        )
        now = self.clock()
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            body = json.dumps([self.postable(json.loads(r[3]), now) for r in chunk]).encode()
            if not await self._post(body):
                return False
            with self.store.transaction():
                for fp, tid, status, _ in chunk:
                    if status == "resolved":
                        self.store.execute(
                            "DELETE FROM notify_am_alert WHERE am = ? AND fingerprint = ? "
                            "AND tid = ?",
                            (self.config.url, fp, tid),
                        )
        return True

    async def _post(self, body: bytes) -> bool:
        started = time.monotonic()
        fields: dict[str, Any] = {"alertmanager": self.config.url}
        try:
            async with self.session.post(
                self.config.url + "/api/v2/alerts",
                data=body,
                headers={"Content-Type": "application/json", "User-Agent": "streamwatch"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as response:
                status = response.status
                await response.content.read(4096)
            error = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, error = 0, describe(exc)
        finally:
            self.metrics.duration.labels(self.name).observe(time.monotonic() - started)
        if 200 <= status < 300:
            self.metrics.notifications.labels(self.name, "sent").inc()
            if self._failing:
                log.info("alertmanager push recovered", extra=fields)
            self._failing = False
            return True
        if status and not retryable(status):
            # Alertmanager refused the alerts themselves: sending them again will not help.
            self.metrics.notifications.labels(self.name, "dropped_4xx").inc()
            log.error("alertmanager refused alerts", extra={**fields, "status": status})
            return True
        self.metrics.notifications.labels(self.name, "failed").inc()
        if not self._failing:
            log.warning("alertmanager push failed", extra={**fields, "error": error})
        self._failing = True
        return False

    async def run(self) -> None:
        attempt = 0
        while True:
            self._wake.clear()
            try:
                ok = await self.push()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alertmanager push failed", extra={"error": describe(exc)})
                ok = False
            attempt = 0 if ok else attempt + 1
            delay = self.config.resend_interval if ok else backoff(attempt)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, self.config.resend_interval)):
                    await self._wake.wait()


# -- receive ---------------------------------------------------------------------------------


def find_target(deps: Deps, labels: Mapping[str, str]) -> Target | None:
    """The entity whose identity labels `labels` carries: of the kind in the `kind` label, or
    of any kind the running sources report."""
    if labels.get("kind"):
        kinds = [labels["kind"]]
    else:
        seen: dict[str, None] = {}
        for poller in deps.sources.pollers():
            snapshot = poller.last_good
            for entity in snapshot.entities if snapshot is not None else ():
                seen.setdefault(entity.kind)
        kinds = list(seen)
    for kind in kinds:
        found = deps.sources.find(kind, labels)
        if found is not None:
            source, entity = found
            return Target.of(source.ref, entity)
    return None


async def request_action(
    deps: Deps,
    action: str,
    target: Target,
    params: Mapping[str, Any],
    requested_by: str,
    reason: str,
) -> dict[str, Any]:
    """Through the gate; the answer as the caller reports it."""
    try:
        record = await deps.actions(
            ActionRequest(
                action=action,
                target=target,
                params=params,
                requested_by=requested_by,
                reason=reason,
            )
        )
    except LookupError as exc:
        return {"result": "unavailable", "detail": str(exc)}
    except Exception as exc:  # the runner's own failure: reported, not a 500 for every alert
        log.warning("action request failed", extra={"by": requested_by, "error": describe(exc)})
        return {"result": "error", "detail": describe(exc)}
    return {"result": str(record.get("result", "done")), "record": dict(record)}


async def _one_alert(deps: Deps, alert: Any, receiver: str) -> dict[str, Any]:
    if not isinstance(alert, Mapping) or not isinstance(alert.get("labels"), Mapping):
        return {"result": "invalid", "detail": "an alert needs labels"}
    labels = {str(k): str(v) for k, v in alert["labels"].items()}
    annotations = alert.get("annotations") or {}
    answer: dict[str, Any] = {
        "fingerprint": alert.get("fingerprint", ""),
        "alertname": labels.get("alertname", ""),
    }
    if alert.get("status") != "firing":
        return {**answer, "result": "ignored", "detail": "resolved"}
    action = labels.get(ACTION_LABEL) or (
        annotations.get(ACTION_ANNOTATION) if isinstance(annotations, Mapping) else None
    )
    if not action:
        return {
            **answer,
            "result": "ignored",
            "detail": f"no {ACTION_LABEL!r} label or {ACTION_ANNOTATION!r} annotation",
        }
    answer["action"] = action
    params: Any = {}
    if isinstance(annotations, Mapping) and annotations.get(PARAMS_ANNOTATION):
        try:
            params = json.loads(annotations[PARAMS_ANNOTATION])
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return {
                **answer,
                "result": "invalid",
                "detail": f"{PARAMS_ANNOTATION}: not a JSON object",
            }
    target = find_target(deps, labels)
    if target is None:
        return {**answer, "result": "not_found", "detail": "no running source has this entity"}
    answer["target"] = target.to_json()
    outcome = await request_action(
        deps, action, target, params, f"alertmanager:{receiver}", labels.get("alertname", "")
    )
    return {**answer, **outcome}


def receive_route(deps: Deps) -> web.RouteDef:
    from monitor.web import require_token

    async def receive(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"status": "error", "error": "body is not JSON"}, status=400)
        if not isinstance(body, Mapping) or not isinstance(body.get("alerts"), list):
            return web.json_response(
                {"status": "error", "error": "expected an Alertmanager webhook (alerts: [...])"},
                status=400,
            )
        receiver = str(body.get("receiver", ""))[:128]
        results = [await _one_alert(deps, a, receiver) for a in body["alerts"][:MAX_ALERTS]]
        return web.json_response(
            {"status": "success", "data": {"results": results}},
            dumps=functools.partial(json.dumps, default=str),
        )

    return web.post("/api/v1/alertmanager", require_token(receive))
