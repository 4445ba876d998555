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

from prometheus_client import CollectorRegistry, Counter, Histogram
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
    """One configured upstream: its API client (polls and actions) behind one HTTP session.

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
