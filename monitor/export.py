"""The Prometheus collector over the latest snapshots.

Every scrape builds the families afresh from the last good snapshot of each source that is up,
so a vanished entity's series disappear at once and a down source exports only its health.
The families are declared in one table (name, type, entity kind, extra labels, value function),
the shape of Home Assistant's sensor descriptions. No I/O happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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
    def values(entity: Entity) -> Iterator[Sample]:
        value = entity.fields.get(field)
        if _is_number(value):
            yield (
                (str(entity.fields.get("type", "")), str(entity.fields.get("codec", ""))),
                float(value),
            )

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
TRACK = ("server", "vhost", "app", "stream", "track")
TASK = ("server", "vhost", "app", "id")

# fmt: off
FAMILIES: tuple[Family, ...] = (
    *_stats_families("stream", ome.KIND_STREAM, STREAM),
    Family("ome_stream_present", "gauge", "1 when OME lists the stream, 0 when it is expected (expected_streams) but absent.", ome.KIND_STREAM, STREAM, lambda e: [((), 1.0 if e.present else 0.0)]),
    Family("ome_stream_info", "gauge", "Input attributes of a stream; the value is always 1.", ome.KIND_STREAM, STREAM, only_present(info("source_type")), ("source_type",)),
    Family("ome_stream_track_bitrate_bits_per_second", "gauge", "Measured input track bitrate (bitrateLatest, else bitrateAvg, else bitrate).", ome.KIND_TRACK, TRACK, track_detail("bitrate"), ("type", "codec")),
    Family("ome_stream_track_framerate", "gauge", "Measured input video framerate in frames per second.", ome.KIND_TRACK, TRACK, track_detail("framerate"), ("type", "codec")),
    Family("ome_stream_track_keyframe_interval", "gauge", "Input video GOP size in frames (keyFrameInterval).", ome.KIND_TRACK, TRACK, track_detail("keyframe_interval"), ("type", "codec")),
    Family("ome_stream_track_width", "gauge", "Input video width in pixels.", ome.KIND_TRACK, TRACK, track_detail("width"), ("type", "codec")),
    Family("ome_stream_track_height", "gauge", "Input video height in pixels.", ome.KIND_TRACK, TRACK, track_detail("height"), ("type", "codec")),
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


class SnapshotCollector(Collector):
    """Builds the entity families and `streamwatch_source_up` from the pollers on each scrape."""

    def __init__(
        self, pollers: Callable[[], Sequence[SourcePoller]], families: Sequence[Family] = FAMILIES
    ):
        self._pollers = pollers
        self._families = families
        self._by_kind: dict[str, list[Family]] = {}
        for family in families:
            self._by_kind.setdefault(family.kind, []).append(family)

    def describe(self) -> list[Metric]:
        return [self._new(f) for f in self._families] + [self._up()]

    @staticmethod
    def _new(family: Family) -> Metric:
        labels = [*family.labels, *family.extra_labels]
        if family.type == "counter":
            return CounterMetricFamily(family.name, family.help, labels=labels)
        return GaugeMetricFamily(family.name, family.help, labels=labels)

    @staticmethod
    def _up() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamwatch_source_up",
            "1 when the last poll of the source succeeded, 0 when it failed or has not finished yet.",
            labels=["kind", "source"],
        )

    def collect(self) -> Iterator[Metric]:
        up = self._up()
        metrics = {f.name: self._new(f) for f in self._families}
        for poller in self._pollers():
            up.add_metric([poller.ref.kind, poller.ref.name], 1.0 if poller.up else 0.0)
            if not poller.up or poller.last_good is None:
                continue  # a down source exports no entity series: no stale numbers
            for entity in poller.last_good.entities:
                for family in self._by_kind.get(entity.kind, ()):
                    identity = [entity.labels.get(name, "") for name in family.labels]
                    metric = metrics[family.name]
                    for extra, value in family.values(entity):
                        metric.add_metric([*identity, *extra], value)
        yield up
        yield from metrics.values()
