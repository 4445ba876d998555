"""What the notifiers share: their metrics, the alert as Alertmanager writes it, retry timing."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.alerting.transitions import Transition, TransitionKind, iso

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end" endsAt
BACKOFF_MIN = 1.0
BACKOFF_MAX = 300.0


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.notifications = Counter(
            "streamwatch_notifications_total",
            "Notification attempts by notifier and result (sent, failed, dropped_4xx, "
            "queued, dropped_queue_full, skipped).",
            ["notifier", "result"],
            registry=registry,
        )
        self.duration = Histogram(
            "streamwatch_notification_duration_seconds",
            "Time one notification request took, by notifier.",
            ["notifier"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.pending = Gauge(
            "streamwatch_notification_pending",
            "Notifications waiting to be sent (groups due or retrying, queued MQTT messages).",
            ["notifier"],
            registry=registry,
        )
        self.connected = Gauge(
            "streamwatch_mqtt_connected",
            "1 while the MQTT client is connected to the broker.",
            registry=registry,
        )


def notifies(t: Transition) -> bool:
    """A transition someone hears of: an alert that started or stopped firing, not silenced.
    An alert unsilenced while firing is announced as firing then."""
    if t.silenced:
        return False
    if t.kind in (TransitionKind.FIRING, TransitionKind.RESOLVED):
        return True
    return t.kind == TransitionKind.UNSILENCED and t.to_state.value == "firing"


def status_of(t: Transition) -> str:
    return "resolved" if t.kind == TransitionKind.RESOLVED else "firing"


def generator_url(base_url: Callable[[], str | None], fingerprint: str) -> str:
    base = base_url()
    return f"{base.rstrip('/')}/api/v1/alerts?fingerprint={fingerprint}" if base else ""


def am_alert(t: Transition, base_url: Callable[[], str | None]) -> dict[str, Any]:
    """The alert as an Alertmanager webhook carries it."""
    resolved = t.kind == TransitionKind.RESOLVED
    return {
        "status": status_of(t),
        "labels": dict(t.labels),
        "annotations": dict(t.annotations),
        "startsAt": iso(t.starts_at),
        "endsAt": iso(t.resolved_at if t.resolved_at is not None else t.at)
        if resolved
        else ZERO_TIME,
        "generatorURL": generator_url(base_url, t.fingerprint),
        "fingerprint": t.fingerprint,
    }


def backoff(attempt: int) -> float:
    """Full-jitter exponential backoff for the `attempt`-th retry (1, 2, ...)."""
    high = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, attempt - 1))
    return random.uniform(high / 2, high)


def retryable(status: int) -> bool:
    """Alertmanager's rule: 5xx and 408/429 are retried, any other 4xx is not."""
    return status >= 500 or status in (408, 429)


def describe(exc: BaseException) -> str:
    """An error for a log line, without the URL (it may carry a token)."""
    return type(exc).__name__ + (f": {exc.strerror}" if getattr(exc, "strerror", None) else "")
