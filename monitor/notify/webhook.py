"""Webhooks in Alertmanager's format (version "4"), grouped like an Alertmanager route.

Two halves, as in Alertmanager (dispatch, then notify):

- `handle` (the outbox consumer) files each transition into its group's current alerts in the
  `notify_webhook_alert` table and acknowledges it in the same SQLite transaction: filing is
  exactly once.
- `flush_due` (run by one task per webhook) sends every group whose time has come (group_wait
  after the group's first alert, then every group_interval when something changed, and every
  repeat_interval while something fires), and records the send in `notify_webhook_group` and
  `notify_log` only after the receiver answered 2xx.

The delivery id (`X-Streamwatch-Delivery`) is derived from the receiver, the group key, the
group's count of sends and the alerts' (fingerprint, status, transition id): a resend after a
crash between the receiver's answer and the record carries the same id, so a receiver that
drops ids it already has sees each notification once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from monitor.alerting.transitions import Transition
from monitor.notify.common import (
    NotifyMetrics,
    am_alert,
    backoff,
    describe,
    notifies,
    retryable,
    status_of,
)
from monitor.notify.config import WebhookConfig
from monitor.store import Store

log = logging.getLogger(__name__)

MAX_GROUP = 1000  # alerts kept per group; more are counted as dropped
MAX_GROUPS = 10_000  # groups per webhook
LOG_RETENTION = 30 * 86400.0  # the notification log keeps what was sent for 30 days


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookNotifier:
    """One configured webhook: an outbox consumer plus the sender of its groups."""

    def __init__(
        self,
        config: WebhookConfig,
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
        return f"webhook:{self.config.name}"

    # -- dispatch: the outbox consumer ---------------------------------------------------------

    def group_of(self, t: Transition) -> tuple[str, dict[str, str]]:
        labels = {k: t.labels.get(k, "") for k in self.config.group_by if k in t.labels}
        inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
        return f"{{}}/{self.config.name}:{{{inner}}}", labels

    def matches(self, t: Transition) -> bool:
        return all(m.matches(t.labels) for m in self.config.match)

    async def handle(self, transitions: Sequence[Transition]) -> Sequence[int]:
        now = self.clock()
        receiver = self.config.name
        with self.store.transaction():
            for t in transitions:
                if not notifies(t) or not self.matches(t):
                    continue
                key, labels = self.group_of(t)
                alert = am_alert(t, self.base_url)
                existing = self.store.query(
                    "SELECT 1 FROM notify_webhook_group WHERE receiver = ? AND group_key = ?",
                    (receiver, key),
                )
                if not existing:
                    if status_of(t) == "resolved":
                        continue  # resolving an alert nobody was told of (or already sent)
                    (count,) = self.store.query(
                        "SELECT COUNT(*) FROM notify_webhook_group WHERE receiver = ?", (receiver,)
                    )[0]
                    if count >= MAX_GROUPS:
                        self.metrics.notifications.labels(self.name, "dropped_limit").inc()
                        continue
                    self.store.execute(
                        "INSERT INTO notify_webhook_group (receiver, group_key, group_labels, "
                        "created, next_flush) VALUES (?, ?, ?, ?, ?)",
                        (receiver, key, json.dumps(labels), now, now + self.config.group_wait),
                    )
                changed = self.store.execute(
                    "UPDATE notify_webhook_alert SET tid = ?, status = ?, body = ? "
                    "WHERE receiver = ? AND group_key = ? AND fingerprint = ?",
                    (t.id, status_of(t), json.dumps(alert), receiver, key, t.fingerprint),
                )
                if not changed:
                    (size,) = self.store.query(
                        "SELECT COUNT(*) FROM notify_webhook_alert "
                        "WHERE receiver = ? AND group_key = ?",
                        (receiver, key),
                    )[0]
                    if size >= MAX_GROUP:
                        self.metrics.notifications.labels(self.name, "dropped_limit").inc()
                        continue
                    self.store.execute(
                        "INSERT INTO notify_webhook_alert VALUES (?, ?, ?, ?, ?, ?)",
                        (receiver, key, t.fingerprint, t.id, status_of(t), json.dumps(alert)),
                    )
            ids = [t.id for t in transitions if t.id is not None]
            self.store.outbox_ack(self.name, ids, now)
        self._wake.set()
        return ids

    # -- notify: the sender --------------------------------------------------------------------

    def next_due(self) -> float | None:
        (due,) = self.store.query(
            "SELECT MIN(next_flush) FROM notify_webhook_group WHERE receiver = ?",
            (self.config.name,),
        )[0]
        return due

    async def flush_due(self) -> None:
        """Send every group whose time has come (one attempt each)."""
        now = self.clock()
        rows = self.store.query(
            "SELECT group_key, group_labels, last_sent, sent_hash, seq, attempts "
            "FROM notify_webhook_group WHERE receiver = ? AND next_flush <= ? ORDER BY next_flush",
            (self.config.name, now),
        )
        pending = 0
        for key, group_labels, last_sent, sent_hash, seq, attempts in rows:
            if not await self._flush_group(
                key, json.loads(group_labels), last_sent, sent_hash, seq, attempts
            ):
                pending += 1
        self.metrics.pending.labels(self.name).set(pending)

    async def _flush_group(
        self,
        key: str,
        group_labels: dict[str, str],
        last_sent: float | None,
        sent_hash: str | None,
        seq: int,
        attempts: int,
    ) -> bool:
        """One attempt for one group; False when it must be retried."""
        cfg, receiver, now = self.config, self.config.name, self.clock()
        rows = self.store.query(
            "SELECT fingerprint, tid, status, body FROM notify_webhook_alert "
            "WHERE receiver = ? AND group_key = ? ORDER BY fingerprint",
            (receiver, key),
        )
        firing = [r for r in rows if r[2] == "firing"]
        payload_rows = rows if cfg.send_resolved else firing
        state = json.dumps(
            {
                "firing": sorted(r[0] for r in firing),
                "resolved": sorted(r[0] for r in payload_rows if r[2] == "resolved"),
            }
        )
        if not payload_rows or not self.needs_update(firing, payload_rows, sent_hash, last_sent):
            self._after_send(key, rows, now)
            return True
        alerts = [json.loads(body) for _, _, _, body in payload_rows]
        shown = alerts[: cfg.max_alerts] if cfg.max_alerts else alerts
        delivery = hashlib.sha256(
            json.dumps(
                [receiver, key, seq, [(fp, tid, st) for fp, tid, st, _ in payload_rows]]
            ).encode()
        ).hexdigest()[:32]
        body = json.dumps(self.payload(key, group_labels, alerts, shown)).encode()
        result = await self._post(body, delivery)
        if result == "retry":
            attempts += 1
            self.store.execute(
                "UPDATE notify_webhook_group SET attempts = ?, next_flush = ? "
                "WHERE receiver = ? AND group_key = ?",
                (attempts, now + backoff(attempts), receiver, key),
            )
            return False
        with self.store.transaction():
            self.store.execute(
                "INSERT OR IGNORE INTO notify_log VALUES (?, ?, ?, ?, ?)",
                (receiver, delivery, key, self.clock(), result),
            )
            self.store.execute(
                "UPDATE notify_webhook_group SET seq = seq + 1, sent_hash = ?, last_sent = ? "
                "WHERE receiver = ? AND group_key = ?",
                (state, now, receiver, key),
            )
            self._after_send(key, rows, now)
        return True

    def needs_update(
        self,
        firing: list[tuple[Any, ...]],
        payload_rows: list[tuple[Any, ...]],
        sent: str | None,
        last_sent: float | None,
    ) -> bool:
        """Alertmanager's dedup stage: notify when an alert fires that the last notification
        did not show as firing, when one resolved that it did not show as resolved (with
        send_resolved), when everything resolved, or when repeat_interval has passed."""
        if sent is None or last_sent is None:
            return True
        before = json.loads(sent)
        fired, resolved = set(before["firing"]), set(before["resolved"])
        now_firing = {r[0] for r in firing}
        if now_firing - fired:
            return True
        if {r[0] for r in payload_rows if r[2] == "resolved"} - resolved:
            return True
        if fired and not now_firing:
            return True  # all resolved (without send_resolved the group just ends)
        return bool(firing) and self.clock() >= last_sent + self.config.repeat_interval

    def _after_send(self, key: str, rows: list[tuple[Any, ...]], now: float) -> None:
        """Forget resolved alerts that were in this round (a newer transition of the same
        alert replaced its row's tid, so it stays), drop the group when nothing is left, and
        schedule the next look."""
        receiver = self.config.name
        with self.store.transaction():
            for fp, tid, status, _body in rows:
                if status == "resolved":
                    self.store.execute(
                        "DELETE FROM notify_webhook_alert WHERE receiver = ? AND group_key = ? "
                        "AND fingerprint = ? AND tid = ?",
                        (receiver, key, fp, tid),
                    )
            (left,) = self.store.query(
                "SELECT COUNT(*) FROM notify_webhook_alert WHERE receiver = ? AND group_key = ?",
                (receiver, key),
            )[0]
            if left:
                self.store.execute(
                    "UPDATE notify_webhook_group SET attempts = 0, next_flush = ? "
                    "WHERE receiver = ? AND group_key = ?",
                    (now + self.config.group_interval, receiver, key),
                )
            else:
                self.store.execute(
                    "DELETE FROM notify_webhook_group WHERE receiver = ? AND group_key = ?",
                    (receiver, key),
                )

    def payload(
        self,
        key: str,
        group_labels: dict[str, str],
        alerts: list[dict[str, Any]],
        shown: list[dict[str, Any]],
    ) -> dict[str, Any]:
        def common(field: str) -> dict[str, str]:
            first = dict(alerts[0][field])
            for alert in alerts[1:]:
                first = {k: v for k, v in first.items() if alert[field].get(k) == v}
            return first

        firing = any(a["status"] == "firing" for a in alerts)
        return {
            "version": "4",
            "groupKey": key,
            "truncatedAlerts": len(alerts) - len(shown),
            "status": "firing" if firing else "resolved",
            "receiver": self.config.name,
            "groupLabels": group_labels,
            "commonLabels": common("labels"),
            "commonAnnotations": common("annotations"),
            "externalURL": self.base_url() or "",
            "alerts": shown,
        }

    async def _post(self, body: bytes, delivery: str) -> str:
        """sent, dropped_4xx or retry."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "streamwatch",
            "X-Streamwatch-Delivery": delivery,
        }
        if self.config.hmac_secret is not None:
            ts = int(self.clock())
            headers["X-Streamwatch-Timestamp"] = str(ts)
            headers["X-Streamwatch-Signature"] = sign(
                self.config.hmac_secret.get_secret_value(), ts, body
            )
        started = time.monotonic()
        fields = {"receiver": self.config.name, "delivery": delivery}
        try:
            async with self.session.post(
                self.config.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as response:
                status = response.status
                await response.content.read(4096)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, error = 0, describe(exc)
        else:
            error = ""
        finally:
            self.metrics.duration.labels(self.name).observe(time.monotonic() - started)
        if 200 <= status < 300:
            self.metrics.notifications.labels(self.name, "sent").inc()
            if self._failing:
                log.info("webhook recovered", extra=fields)
            self._failing = False
            return "sent"
        if status and not retryable(status):
            self.metrics.notifications.labels(self.name, "dropped_4xx").inc()
            log.error("webhook refused notification", extra={**fields, "status": status})
            return "dropped_4xx"
        self.metrics.notifications.labels(self.name, "failed").inc()
        if not self._failing:
            log.warning(
                "webhook failed",
                extra={**fields, "status": status or "", "error": error or f"HTTP {status}"},
            )
        self._failing = True
        return "retry"

    def prune(self) -> None:
        self.store.execute(
            "DELETE FROM notify_log WHERE receiver = ? AND sent_at < ?",
            (self.config.name, self.clock() - LOG_RETENTION),
        )

    async def run(self) -> None:
        """The sender task: flush what is due, sleep until the next due time or a wake."""
        pruned = 0.0
        while True:
            self._wake.clear()
            try:
                if self.clock() - pruned > 3600:
                    self.prune()
                    pruned = self.clock()
                await self.flush_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database error: try again later
                log.warning(
                    "webhook flush failed",
                    extra={"receiver": self.config.name, "error": describe(exc)},
                )
            due = self.next_due()
            delay = 60.0 if due is None else min(60.0, max(0.0, due - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
