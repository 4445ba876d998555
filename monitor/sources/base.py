"""What every source shares: the interface the poller drives, what a source gets from the
daemon, the metrics a source may record, and the descriptor of an upstream. The failure classes
and SourceError live in `http` with the rest of the HTTP layer; they are re-exported here."""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel

from monitor.model import Entity, SourceRef
from monitor.sources.http import (
    BAD_RESPONSE,
    CONNECT,
    HTTP_4XX,
    HTTP_5XX,
    RATE_LIMITED,
    REASONS,
    TIMEOUT,
    UNAUTHORIZED,
    SourceError,
    classify_exception,
    decode_json,
    parse_retry_after,
    reason_for_status,
)
from monitor.sources.settings import DEFAULT_MAX_RETRY_AFTER

if TYPE_CHECKING:
    from monitor.sources.families import Family
    from monitor.sources.verbs import Verb

__all__ = [
    "BAD_RESPONSE",
    "CONNECT",
    "HTTP_4XX",
    "HTTP_5XX",
    "RATE_LIMITED",
    "REASONS",
    "TIMEOUT",
    "UNAUTHORIZED",
    "Clock",
    "Source",
    "SourceContext",
    "SourceError",
    "SourceMetrics",
    "Upstream",
    "classify_exception",
    "decode_json",
    "parse_retry_after",
    "reason_for_status",
]

Clock = Callable[[], float]

# A whole poll may take this many intervals (or interval + timeout, if longer) by default.
POLL_TIME_FACTOR = 10


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
            "Polls that failed, by failure class (reason) and the vendor's error code (code, "
            "empty when none).",
            ["kind", "source", "reason", "code"],
            registry=registry,
        )
        self.requests_throttled = Counter(
            "streamwatch_source_requests_throttled_total",
            "Requests a source delayed or left out to stay under its configured rate limit.",
            ["kind", "source"],
            registry=registry,
        )
        self.effective_interval = Gauge(
            "streamwatch_source_effective_interval_seconds",
            "Time between the starts of two polls of a source: its interval, or longer when a "
            "poll takes longer than the interval or a full poll does not fit its rate budget.",
            ["kind", "source"],
            registry=registry,
        )
        self.retry_after_capped = Counter(
            "streamwatch_source_retry_after_capped_total",
            "Retry-After values (or rate-limit holds) cut to the source's max_retry_after.",
            ["kind", "source"],
            registry=registry,
        )
        self.items_skipped = Counter(
            "streamwatch_source_items_skipped_total",
            "Items of an upstream's answer skipped because they could not be read (the rest of "
            "the poll is kept), by reason.",
            ["kind", "source", "reason"],
            registry=registry,
        )

    def forget(self, ref: SourceRef) -> None:
        """Drop the series of a source that a reload removed."""
        for metric in (
            self.poll_duration,
            self.requests_throttled,
            self.effective_interval,
            self.retry_after_capped,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(ref.kind, ref.name)
        for counter in (self.poll_errors, self.items_skipped):
            for labels in list(counter._metrics):
                if labels[:2] == (ref.kind, ref.name):
                    counter.remove(*labels)

    def skipped(self, ref: SourceRef, reason: str, count: int = 1) -> None:
        self.items_skipped.labels(ref.kind, ref.name, reason).inc(count)


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
    """One configured upstream: its API client (polls and actions) behind one HTTP session.

    The poller calls `open()` once, `poll()` every interval and `close()` on shutdown or reload.
    `poll()` returns the entities it saw or raises SourceError; it never returns a partial
    result for a failed upstream.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        name: str,
        interval: float,
        timeout: float,
        context: SourceContext,
        *,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        max_poll_time: float | None = None,
    ):
        self.ref = SourceRef(self.kind, name)
        self.interval = interval
        self.timeout = timeout
        self.context = context
        self.max_retry_after = max_retry_after
        self.max_poll_time = max_poll_time

    @classmethod
    def settings(cls, config: Any) -> dict[str, Any]:
        """What every source takes from its config (a `settings.SourceConfig` with `interval`
        and `timeout`), as keyword arguments of `Source.__init__`."""
        return {
            "name": config.name,
            "interval": config.interval,
            "timeout": config.timeout,
            "max_retry_after": config.max_retry_after,
            "max_poll_time": config.max_poll_time,
        }

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def poll_deadline(self) -> float:
        """The safety bound on one whole poll: `max_poll_time`, or max(interval + timeout,
        POLL_TIME_FACTOR x interval). Per-request timeouts and errors are what fails a poll; a
        poll that takes longer than its interval while its requests progress only stretches
        the effective interval. This bound ends a poll that would go on for ever."""
        if self.max_poll_time is not None:
            return self.max_poll_time
        return max(self.interval + self.timeout, POLL_TIME_FACTOR * self.interval)

    @property
    def min_interval(self) -> float:
        """The shortest time between the starts of two polls that this source can afford by
        itself (SmartSTREAM: what its rate budget allows for one full poll); 0 when it has no
        such limit. The poller schedules no poll sooner."""
        return 0.0

    def pacing(self) -> dict[str, Any]:
        """The numbers behind `min_interval`, for the log line that says the effective
        interval stretched."""
        return {}

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


@dataclass(frozen=True)
class Upstream:
    """One upstream, as the rest of the daemon sees it: its `kind` (the key under `sources:`
    and the `kind` label), its config model, the entity kinds it emits, its metric families,
    how to build a source from one config entry, and its verbs by entity kind.

    Each vendor package exports one (`UPSTREAM`); `monitor.sources.registry` lists them.
    """

    kind: str
    config_model: type[BaseModel]
    entity_kinds: tuple[str, ...]
    families: tuple[Family, ...]
    factory: Callable[[Any, SourceContext], Source]
    verbs: Mapping[str, Mapping[str, Verb]]

    def __post_init__(self) -> None:
        prefix = self.kind + "."
        for entity_kind in self.entity_kinds:
            if not entity_kind.startswith(prefix):
                raise ValueError(f"{self.kind}: entity kind {entity_kind!r} lacks {prefix!r}")
        for family in self.families:
            if family.kind not in self.entity_kinds:
                raise ValueError(f"{self.kind}: family {family.name} is over {family.kind!r}")
        for entity_kind in self.verbs:
            if entity_kind not in self.entity_kinds:
                raise ValueError(f"{self.kind}: verbs for unknown entity kind {entity_kind!r}")
