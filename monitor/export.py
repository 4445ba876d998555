"""/metrics over the latest snapshots.

The entity families are rendered from the last good snapshot of each source that is up, so a
vanished entity's series disappear with the next poll and a down source exports only its
health. The families are declared in one table (name, type, entity kind, extra labels, value
function), the shape of Home Assistant's sensor descriptions. No I/O happens here.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from monitor.model import Entity
from monitor.poller import SourcePoller
from monitor.sources import naver, ome, smartstream

# One sample of a family for one entity: the values of the family's extra labels, and the value.
Sample = tuple[tuple[str, ...], float]
ValueFn = Callable[[Entity], Iterable[Sample]]


@dataclass(frozen=True)
class Family:
    name: str
    type: Literal["gauge", "counter"]
    help: str
    kind: str
    labels: tuple[str, ...]  # entity identity labels, in this order
    values: ValueFn
    extra_labels: tuple[str, ...] = ()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def scalar(field: str) -> ValueFn:
    def values(entity: Entity) -> Iterator[Sample]:
        value = entity.fields.get(field)
        if _is_number(value):
            yield (), float(value)

    return values


def per_key(field: str) -> ValueFn:
    """One sample per key of an open map field (OME's `connections`), zeros included."""

    def values(entity: Entity) -> Iterator[Sample]:
        mapping = entity.fields.get(field)
        if isinstance(mapping, Mapping):
            for key, value in mapping.items():
                yield (str(key),), float(value)

    return values


def info(*fields: str) -> ValueFn:
    def values(entity: Entity) -> Iterator[Sample]:
        yield (
            tuple(
                "" if entity.fields.get(f) is None else str(entity.fields.get(f)) for f in fields
            ),
            1.0,
        )

    return values


def state_set(field: str, known: Sequence[str]) -> ValueFn:
    """1 for the current state, 0 for every other known one. An unknown current value is
    exported too (upstreams add states without telling us)."""

    def values(entity: Entity) -> Iterator[Sample]:
        current = entity.fields.get(field)
        if current is None:
            return
        current = str(current)
        for state in known:
            yield (state,), 1.0 if state == current else 0.0
        if current not in known:
            yield (current,), 1.0

    return values


def track_detail(field: str) -> ValueFn:
    """One sample per input track of a stream (its `tracks` field), labelled track, type, codec."""

    def values(entity: Entity) -> Iterator[Sample]:
        for track in entity.fields.get("tracks") or ():
            value = track.get(field)
            if _is_number(value):
                yield (track["track"], track["type"], track["codec"]), float(value)

    return values


def only_present(fn: ValueFn) -> ValueFn:
    def values(entity: Entity) -> Iterable[Sample]:
        return fn(entity) if entity.present else ()

    return values


def channel_status(entity: Entity) -> Iterator[Sample]:
    name = str(entity.fields.get("channel_name") or "")
    for (status,), value in state_set("status", naver.CHANNEL_STATUSES)(entity):
        yield (name, status), value


# fmt: off
def _stats_families(scope: str, kind: str, labels: tuple[str, ...]) -> list[Family]:
    """The statistics object is the same at vhost, app and stream scope (DESIGN: ome_app_*,
    ome_vhost_* mirror the stream families)."""
    p = f"ome_{scope}"
    return [
        Family(f"{p}_connections", "gauge", f"Current playback sessions of the {scope} by publisher protocol (OME's connections keys).", kind, labels, only_present(per_key("connections")), ("protocol",)),
        Family(f"{p}_bytes_in", "counter", f"Bytes received by the {scope} since it was created (totalBytesIn).", kind, labels, scalar("bytes_in")),
        Family(f"{p}_bytes_out", "counter", f"Bytes sent by the {scope} since it was created (totalBytesOut).", kind, labels, scalar("bytes_out")),
        Family(f"{p}_throughput_in_bits_per_second", "gauge", f"Ingest rate of the {scope} over OME's last ~1 s window (avgThroughputIn); frozen when ingest stops.", kind, labels, scalar("throughput_in")),
        Family(f"{p}_throughput_out_bits_per_second", "gauge", f"Egress rate of the {scope} over OME's last ~1 s window (avgThroughputOut).", kind, labels, scalar("throughput_out")),
        Family(f"{p}_last_recv_timestamp_seconds", "gauge", f"When the {scope} last received data (lastRecvTime), Unix time.", kind, labels, scalar("last_recv")),
        Family(f"{p}_last_sent_timestamp_seconds", "gauge", f"When the {scope} last sent data (lastSentTime), Unix time.", kind, labels, scalar("last_sent")),
        Family(f"{p}_created_timestamp_seconds", "gauge", f"When the {scope} was created (createdTime), Unix time; moves on a republish.", kind, labels, scalar("created_at")),
    ]
# fmt: on


VHOST = ("server", "vhost")
APP = ("server", "vhost", "app")
STREAM = ("server", "vhost", "app", "stream")
TASK = ("server", "vhost", "app", "id")

# fmt: off
FAMILIES: tuple[Family, ...] = (
    *_stats_families("stream", ome.KIND_STREAM, STREAM),
    Family("ome_stream_present", "gauge", "1 when OME lists the stream, 0 when it is expected (expected_streams) but absent.", ome.KIND_STREAM, STREAM, lambda e: [((), 1.0 if e.present else 0.0)]),
    Family("ome_stream_info", "gauge", "Input attributes of a stream; the value is always 1.", ome.KIND_STREAM, STREAM, only_present(info("source_type")), ("source_type",)),
    Family("ome_stream_track_bitrate_bits_per_second", "gauge", "Measured input track bitrate (bitrateLatest, else bitrateAvg, else bitrate).", ome.KIND_STREAM, STREAM, track_detail("bitrate"), ("track", "type", "codec")),
    Family("ome_stream_track_framerate", "gauge", "Measured input video framerate in frames per second.", ome.KIND_STREAM, STREAM, track_detail("framerate"), ("track", "type", "codec")),
    Family("ome_stream_track_keyframe_interval", "gauge", "Input video GOP size in frames (keyFrameInterval).", ome.KIND_STREAM, STREAM, track_detail("keyframe_interval"), ("track", "type", "codec")),
    Family("ome_stream_track_width", "gauge", "Input video width in pixels.", ome.KIND_STREAM, STREAM, track_detail("width"), ("track", "type", "codec")),
    Family("ome_stream_track_height", "gauge", "Input video height in pixels.", ome.KIND_STREAM, STREAM, track_detail("height"), ("track", "type", "codec")),
    *_stats_families("app", ome.KIND_APP, APP),
    *_stats_families("vhost", ome.KIND_VHOST, VHOST),
    Family("ome_push_state", "gauge", "State of a push publishing task (state set).", ome.KIND_PUSH, TASK, state_set("state", ome.TASK_STATES), ("state",)),
    Family("ome_push_sent_bytes", "counter", "Bytes a push task has sent (totalsentBytes).", ome.KIND_PUSH, TASK, scalar("total_sent_bytes")),
    Family("ome_record_state", "gauge", "State of a recording task (state set).", ome.KIND_RECORD, TASK, state_set("state", ome.TASK_STATES), ("state",)),
    Family("smartstream_live_event_info", "gauge", "A SmartSTREAM live event; the value is always 1.", "smartstream.live_event", ("merchant", "live_event"), info("ref_id", "name"), ("ref_id", "name")),
    Family("smartstream_live_event_encode_status", "gauge", "encode_status of a live event (state set).", "smartstream.live_event", ("merchant", "live_event"), state_set("encode_status", smartstream.LIVE_EVENT_ENCODE_STATUSES), ("status",)),
    Family("smartstream_job_encode_status", "gauge", "encode_status of an ingest job (state set; integer codes as the API sends them).", "smartstream.job", ("merchant", "job"), state_set("encode_status", tuple(str(s) for s in smartstream.JOB_ENCODE_STATUSES)), ("status",)),
    Family("naver_channel_status", "gauge", "channelStatus of a Live Station channel (state set; PUBLISH is reported as PUBLISHING).", "naver.channel", ("channel",), channel_status, ("channel_name", "status")),
    Family("naver_channel_events_total", "counter", "Live Station channel events seen by this daemon (poll and callback, each counted once).", "naver.channel", ("channel",), per_key("events"), ("event",)),
)
# fmt: on


class SourceHealthCollector(Collector):
    """`streamwatch_source_up` for every configured source."""

    def __init__(self, pollers: Callable[[], Sequence[SourcePoller]]):
        self._pollers = pollers

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
        for poller in self._pollers():
            up.add_metric([poller.ref.kind, poller.ref.name], 1.0 if poller.up else 0.0)
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

    def __init__(
        self, pollers: Callable[[], Sequence[SourcePoller]], families: Sequence[Family] = FAMILIES
    ):
        self._pollers = pollers
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
        sources = tuple((p.ref, p.last_good if p.up else None) for p in self._pollers())
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

    def __init__(self, registry: CollectorRegistry, pollers: Callable[[], Sequence[SourcePoller]]):
        self.registry = registry
        registry.register(SourceHealthCollector(pollers))
        self.entities = EntityExposition(pollers)
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
