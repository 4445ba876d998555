"""What every source shares: the error classes a poll can end in, the metrics a source may
record, and the interface the poller drives. Vendor HTTP details live in the vendor modules."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram

from monitor.model import Entity, SourceRef

Clock = Callable[[], float]

# The failure classes a poll or an action can end in; each is a value of the `reason` label.
TIMEOUT = "timeout"
CONNECT = "connect"
UNAUTHORIZED = "unauthorized"
HTTP_4XX = "http_4xx"
HTTP_5XX = "http_5xx"
BAD_RESPONSE = "bad_response"
RATE_LIMITED = "rate_limited"
REASONS = (TIMEOUT, CONNECT, UNAUTHORIZED, HTTP_4XX, HTTP_5XX, BAD_RESPONSE, RATE_LIMITED)
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SourceError(Exception):
    """A poll or a call to an upstream failed. `reason` is one of REASONS; `code` is the
    vendor's documented error code when the body carried one. The message never holds a secret."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def label(self) -> str:
        """The value of `streamwatch_source_poll_errors_total{reason}`: the class, and the
        vendor's code after a colon when it sent one (`http_4xx:LIVE_EVENT_NOT_FOUND`). A code
        that does not look like one (an upstream echoing text) is left out: label values
        must stay a small set."""
        if self.code and _CODE.fullmatch(self.code):
            return f"{self.reason}:{self.code}"
        return self.reason

    def __str__(self) -> str:
        return f"{self.label}: {self.message}"


def reason_for_status(status: int) -> str:
    if status in (401, 403):
        return UNAUTHORIZED
    if status == 429:
        return RATE_LIMITED
    if 400 <= status < 500:
        return HTTP_4XX
    return HTTP_5XX


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def classify_exception(exc: BaseException, what: str) -> SourceError:
    """Map a transport exception to a SourceError. `what` names the call without secrets
    (e.g. `GET /v1/vhosts`); aiohttp's own messages may carry full URLs, so they are not used."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return SourceError(TIMEOUT, f"{what}: timed out")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
        return SourceError(CONNECT, f"{what}: cannot connect ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientPayloadError | json.JSONDecodeError | UnicodeDecodeError):
        return SourceError(BAD_RESPONSE, f"{what}: unreadable body ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return SourceError(CONNECT, f"{what}: {type(exc).__name__}")
    return SourceError(BAD_RESPONSE, f"{what}: {type(exc).__name__}")


def decode_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(BAD_RESPONSE, f"{what}: body is not JSON") from exc


class SourceMetrics:
    """The daemon's own per-source metrics, registered once on the daemon's registry and
    shared by every source."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.poll_duration = Histogram(
            "streamwatch_source_poll_duration_seconds",
            "Wall time of one poll of a source.",
            ["kind", "source"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.poll_errors = Counter(
            "streamwatch_source_poll_errors_total",
            "Polls that failed, by failure class (and vendor error code after a colon).",
            ["kind", "source", "reason"],
            registry=registry,
        )
        self.requests_throttled = Counter(
            "streamwatch_source_requests_throttled_total",
            "Requests a source delayed or left out to stay under its configured rate limit.",
            ["kind", "source"],
            registry=registry,
        )

    def forget(self, ref: SourceRef) -> None:
        """Drop the series of a source that a reload removed."""
        for metric in (self.poll_duration, self.requests_throttled):
            with contextlib.suppress(KeyError):
                metric.remove(ref.kind, ref.name)
        for labels in list(self.poll_errors._metrics):
            if labels[:2] == (ref.kind, ref.name):
                self.poll_errors.remove(*labels)


@dataclass(frozen=True)
class SourceContext:
    """What a source gets from the daemon besides its own config."""

    metrics: SourceMetrics
    clock: Clock = time.time
    store: Any = None  # monitor.store.Store; typed loosely to keep sources importable alone
    # Asks the daemon to poll a source now (e.g. after a callback brought news).
    request_refresh: Callable[[SourceRef], None] | None = None
    # Hands entities an upstream pushed (callback events) to the rules at once, as a partial
    # snapshot, so they do not wait for the next successful poll.
    push: Callable[[SourceRef, list[Entity]], None] | None = None


class Source(abc.ABC):
    """One configured upstream: its API client (polls and actions) behind one aiohttp session.

    The poller calls `open()` once, `poll()` every interval and `close()` on shutdown or reload.
    `poll()` returns the entities it saw or raises SourceError; it never returns a partial
    result for a failed upstream.
    """

    kind: ClassVar[str]

    def __init__(self, name: str, interval: float, timeout: float, context: SourceContext):
        self.ref = SourceRef(self.kind, name)
        self.interval = interval
        self.timeout = timeout
        self.context = context

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def poll_deadline(self) -> float:
        """How long one whole poll may take: its interval plus one request timeout."""
        return self.interval + self.timeout

    def inherit(self, old: Source) -> None:  # noqa: B027 - optional hook
        """A reload replaces this source's predecessor (same kind and name, changed config):
        take over state that must outlive it, such as a shared request budget."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare long-lived resources (the HTTP session)."""

    @abc.abstractmethod
    async def poll(self) -> list[Entity]:
        """One full poll. Raises SourceError."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what open() made."""
