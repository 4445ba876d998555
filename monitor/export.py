"""/metrics over the latest snapshots.

The entity families are rendered from the last good snapshot of each source that is up, so a
vanished entity's series disappear with the next poll and a down source exports only its
health. Each upstream declares its families in a table (name, type, entity kind, extra labels,
value function: the shape of Home Assistant's sensor descriptions) in its own `families.py`;
the exporter takes them from the registry and knows no vendor. No I/O happens here.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from monitor.model import Entity, Snapshot, SourceRef
from monitor.sources.families import Family
from monitor.sources.registry import families as upstream_families

# Every upstream's families, in registry order.
FAMILIES: tuple[Family, ...] = upstream_families()


class SourceStatus(Protocol):
    """What the exporter reads of one configured source (the poller has these)."""

    @property
    def ref(self) -> SourceRef: ...

    @property
    def up(self) -> bool | None: ...

    @property
    def last_good(self) -> Snapshot | None: ...


Statuses = Callable[[], Sequence[SourceStatus]]


class SourceHealthCollector(Collector):
    """`streamwatch_source_up` for every configured source."""

    def __init__(self, statuses: Statuses):
        self._statuses = statuses

    def describe(self) -> list[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamwatch_source_up",
            "1 when the last poll of the source succeeded, 0 when it failed or has not finished yet.",
            labels=["kind", "source"],
        )

    def collect(self) -> list[Metric]:
        up = self._family()
        for status in self._statuses():
            up.add_metric([status.ref.kind, status.ref.name], 1.0 if status.up else 0.0)
        return [up]


def _escape_label(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass
class Rendered:
    """The entity families of one set of snapshots in one format, in the forms scrapers have
    asked for: the plain text (chunks), and the gzip text plus the compressor's state, so that
    each gzip scrape only compresses the daemon's own few lines after it. Prometheus asks for
    gzip, so usually only the gzip form (2.5 MB for 10,000 streams, not 26 MB) is ever held."""

    sources: tuple[Any, ...]
    chunks: list[bytes] | None = None
    gzip_body: bytes | None = None
    gzip_state: Any = None  # zlib compressobj positioned after the entity text


class EntityExposition:
    """Renders the entity families of the sources that are up, in the Prometheus text format
    or OpenMetrics, and keeps the result until a source's snapshot changes.

    Rendering here rather than through prometheus_client's generic writer is a measured
    choice: for 10,000 streams (~230,000 samples) the generic path builds a Sample object and
    re-escapes the shared labels for every sample (2.5 s a scrape); here each entity's
    identity labels are escaped once, and a scrape between two polls renders nothing.
    """

    def __init__(self, statuses: Statuses, families: Sequence[Family] = FAMILIES):
        self._statuses = statuses
        self._families = tuple(families)
        self._cache: dict[bool, Rendered] = {}
        # Scrapes and the post-poll warm-up render in worker threads: one renders, the other
        # waits for it and takes the result.
        self._lock = threading.Lock()

    def text(self, openmetrics: bool = False) -> list[bytes]:
        """The plain text of the current snapshots, in chunks."""
        with self._lock:
            rendered = self._current(openmetrics)
            if rendered.chunks is None:
                rendered.chunks = list(self._render(rendered.sources, openmetrics))
            return rendered.chunks

    def gzipped(self, openmetrics: bool = False) -> tuple[bytes, Any]:
        """The gzip text of the current snapshots and a compressor positioned after it (copy it
        before use). Rendered straight into the compressor: the plain text is never held whole."""
        with self._lock:
            rendered = self._current(openmetrics)
            if rendered.gzip_state is None:
                compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: ~10x, fast
                pieces = rendered.chunks or self._render(rendered.sources, openmetrics)
                body = b"".join(compressor.compress(piece) for piece in pieces)
                rendered.gzip_body, rendered.gzip_state = body, compressor
            return rendered.gzip_body, rendered.gzip_state  # type: ignore[return-value]

    def _current(self, openmetrics: bool) -> Rendered:
        """The cache entry of the current snapshots (a new, empty one when a snapshot changed).
        Call with the lock held."""
        sources = tuple((s.ref, s.last_good if s.up else None) for s in self._statuses())
        cached = self._cache.get(openmetrics)
        if cached is None or not _same(cached.sources, sources):
            cached = self._cache[openmetrics] = Rendered(sources)
        return cached

    def _render(self, sources: Sequence[tuple[Any, Any]], openmetrics: bool) -> Iterator[bytes]:
        """The exposition in pieces of at most ~8,000 lines, encoded as they are made, so that
        neither the whole text nor one large family's lines exist at once."""
        by_kind: dict[str, list[Entity]] = {}
        for _, snapshot in sources:
            if snapshot is None:
                continue  # a down source exports no entity series: no stale numbers
            for entity in snapshot.entities:
                by_kind.setdefault(entity.kind, []).append(entity)
        # Each entity's identity labels are escaped once and shared by all its families.
        prefixes: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for family in self._families:
            members = by_kind.get(family.kind, ())
            key = (family.kind, family.labels)
            if key not in prefixes:
                prefixes[key] = [
                    ",".join(f'{n}="{_escape_label(e.labels.get(n, ""))}"' for n in family.labels)
                    for e in members
                ]
            name = self._sample_name(family)
            base = family.name.removesuffix("_total") if family.type == "counter" else family.name
            declared = base if openmetrics or family.type != "counter" else name
            lines = [
                f"# HELP {declared} {_escape_help(family.help)}\n# TYPE {declared} {family.type}\n"
            ]
            append = lines.append
            extra_names = family.extra_labels
            single = extra_names[0] if len(extra_names) == 1 else None
            # Extra label values repeat (protocols, states): escape each distinct one once.
            escaped: dict[str, str] = {}
            values = family.values
            for entity, prefix in zip(members, prefixes[key], strict=True):
                for extra, value in values(entity):
                    text = (
                        str(int(value))
                        if value.is_integer() and -1e15 < value < 1e15
                        else _format_value(value)
                    )
                    if single is not None:
                        label = escaped.get(extra[0])
                        if label is None:
                            label = escaped[extra[0]] = f'{single}="{_escape_label(extra[0])}"'
                        append(f"{name}{{{prefix},{label}}} {text}\n")
                    elif extra:
                        pairs = "".join(
                            f',{n}="{_escape_label(v)}"'
                            for n, v in zip(extra_names, extra, strict=True)
                        )
                        append(f"{name}{{{prefix}{pairs}}} {text}\n")
                    else:
                        append(f"{name}{{{prefix}}} {text}\n")
                if len(lines) >= 8192:
                    yield "".join(lines).encode()
                    lines.clear()
            if lines:
                yield "".join(lines).encode()

    @staticmethod
    def _sample_name(family: Family) -> str:
        if family.type == "counter":
            return family.name.removesuffix("_total") + "_total"
        return family.name


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] is y[1] for x, y in zip(a, b, strict=True)
    )


class Exporter:
    """/metrics: the daemon's own registry (prometheus_client's writer) followed by the entity
    families (EntityExposition), in the format the scraper asked for."""

    def __init__(
        self,
        registry: CollectorRegistry,
        statuses: Statuses,
        families: Sequence[Family] | None = None,
    ):
        self.registry = registry
        registry.register(SourceHealthCollector(statuses))
        self.entities = EntityExposition(statuses, FAMILIES if families is None else families)
        self.last_scrape: tuple[str, str, float] | None = None
        # One thread renders, always the same one: renders are serialised by a lock anyway,
        # and the memory a render churns then stays in one malloc arena rather than spreading
        # over the arenas of a pool's threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamwatch-metrics")

    async def payload(
        self, accept: str, accept_encoding: str
    ) -> tuple[list[bytes], str, str | None]:
        """render_payload, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self.render_payload, accept, accept_encoding
        )

    async def warm_soon(self) -> bool:
        """warm, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.warm)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def render_payload(
        self, accept: str = "", accept_encoding: str = ""
    ) -> tuple[list[bytes], str, str | None]:
        """(body chunks, content type, content encoding). The entity text comes first and the
        daemon's own metrics after it, so a gzip body is the cached compressed entity text
        continued with a copy of the compressor: one gzip stream, compressed once per poll."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        own = encoder(self.registry)
        if openmetrics:
            # One `# EOF` may end an OpenMetrics exposition, and it must be last.
            own = own.removesuffix(b"# EOF\n") + b"# EOF\n"
        self.last_scrape = (accept, accept_encoding, time.monotonic())
        if "gzip" in accept_encoding.lower():
            body, state = self.entities.gzipped(openmetrics)
            compressor = state.copy()
            return [body, compressor.compress(own), compressor.flush()], content_type, "gzip"
        return [*self.entities.text(openmetrics), own], content_type, None

    def warm(self, within: float = 600.0) -> bool:
        """Render (and gzip) the latest snapshots the way the last scraper wanted them, if
        anyone scraped in the last `within` seconds. Called after each poll, in a worker
        thread, so that scrapes find the text ready instead of waiting for it."""
        if self.last_scrape is None or time.monotonic() - self.last_scrape[2] > within:
            return False
        accept, accept_encoding, _ = self.last_scrape
        _, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        if "gzip" in accept_encoding.lower():
            self.entities.gzipped(openmetrics)
        else:
            self.entities.text(openmetrics)
        return True

    def render(self, accept: str = "") -> tuple[bytes, str]:
        chunks, content_type, _ = self.render_payload(accept)
        return b"".join(chunks), content_type
