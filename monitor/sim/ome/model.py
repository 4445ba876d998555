"""The OME simulator's model: versions and their features, the stats meter, streams, apps,
vhosts, pushes, records and dumps. Plain state: the HTTP side is in `views`, `tasks`, `dumps`
and `routes`; the controls in `state`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

Version = tuple[int, int, int]

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
AUTH_CHALLENGE = 'Basic realm="OvenMediaEngine"'

# `connections` keys per OME version (notes §4), newest first.
_CONNECTION_KEYS: tuple[tuple[Version, tuple[str, ...]], ...] = (
    ((0, 18, 0), ("webrtc", "llhls", "ovt", "file", "push", "thumbnail", "hlsv3", "srt")),
    ((0, 16, 6), ("webrtc", "llhls", "ovt", "file", "push", "thumbnail")),
    (
        (0, 0, 0),
        (
            "webrtc",
            "lldash",
            "hls",
            "llhls",
            "dash",
            "ovt",
            "file",
            "rtmppush",
            "mpegtspush",
            "thumbnail",
        ),
    ),
)

# First version with each feature (notes §4-§7).
V_STATS_SERVER: Version = (0, 12, 8)
V_HLS_DUMP: Version = (0, 14, 11)
V_SEND_EVENT: Version = (0, 14, 17)
V_AVG_THROUGHPUT: Version = (0, 15, 2)
V_MAX_THROUGHPUT: Version = (0, 15, 8)
V_LAST_THROUGHPUT: Version = (0, 15, 13)
V_OBJECT_TASK_RESPONSE: Version = (0, 15, 4)  # start/stop answered a one-item array before this
V_MEASURED_TRACKS: Version = (0, 16, 6)  # *Conf/*Avg/*Latest track fields and output playlists
V_INT_BITRATE: Version = (0, 19, 0)

EVENT_FORMATS: Mapping[str, Version] = {
    "ID3V2": (0, 0, 0),
    "CUE": (0, 18, 0),
    "SCTE35": (0, 19, 0),
}
EVENT_TYPES = frozenset({"EVENT", "VIDEO", "AUDIO"})
PUSH_PROTOCOLS: Mapping[str, tuple[str, ...]] = {
    "rtmp": ("rtmp://", "rtmps://"),
    "srt": ("srt://",),
    "mpegts": ("udp://", "tcp://"),
}
PUSH_STATES = frozenset({"ready", "started", "pushing", "stopping", "stopped", "error"})
RECORD_STATES = frozenset({"ready", "started", "recording", "stopping", "stopped", "error"})
DEFAULT_PUBLISHERS = frozenset({"webrtc", "llhls", "ovt", "push", "file", "thumbnail"})
APP_ACTIONS = frozenset({"records", "startRecord", "stopRecord", "pushes", "startPush", "stopPush"})
STREAM_ACTIONS = frozenset({"sendEvent", "startHlsDump", "stopHlsDump", "hlsDumps"})
SEGMENT_SECONDS = 6  # OME's default LL-HLS segment duration
MAX_DUMP_SEGMENTS = 1000  # keeps dump files small whatever the clock does
PUSH_REMOVAL_SECONDS = 1.0  # OME's push control thread drops a stopped push on its next 1 s pass


def parse_version(text: str) -> Version:
    """`"0.20.0"` → `(0, 20, 0)`; missing parts count as 0, suffixes are ignored."""
    numbers = [int(part) for part in re.findall(r"\d+", text)[:3]]
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


def connection_keys(version: Version) -> tuple[str, ...]:
    return next(keys for since, keys in _CONNECTION_KEYS if version >= since)


def iso8601(ts: float) -> str:
    """Server-local time with offset and milliseconds, as `ov::Converter::ToISO8601String` writes it."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def split_path(path: str, parts: int) -> list[str]:
    names = path.split("/")
    if len(names) != parts or not all(names):
        shape = "vhost/app/stream" if parts == 3 else "vhost/app"
        raise ValueError(f"expected {shape}, got {path!r}")
    return names


class OmeError(Exception):
    """An error OME reports as `{"statusCode": N, "message": "[HTTP] <message> (N)"}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"statusCode": self.status, "message": f"[HTTP] {self.message} ({self.status})"}


def controller_not_found() -> OmeError:
    return OmeError(404, "Controller not found")


# --------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Meter:
    """One stats scope (stream, app, vhost or server), kept the way OME's CommonMetrics keeps it.

    Rates are constant between events, so bytes are accumulated up to `seg_start` and extrapolated
    on read; an event first folds the running segment in. Reads are O(1) at every level.
    """

    created_at: float
    seg_start: float
    connections: dict[str, int]
    in_bps: int = 0
    out_bps: int = 0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    last_in_bps: int = 0
    last_out_bps: int = 0
    max_in_bps: int = 0
    max_out_bps: int = 0
    last_recv: float = 0.0
    last_sent: float = 0.0
    updated_at: float = 0.0
    max_connections: int = 0
    max_connections_at: float = 0.0

    @classmethod
    def start(cls, now: float, keys: Iterable[str]) -> Meter:
        return cls(
            created_at=now,
            seg_start=now,
            connections=dict.fromkeys(keys, 0),
            last_recv=now,
            last_sent=now,
            updated_at=now,
            max_connections_at=now,
        )

    def fold(self, now: float) -> None:
        now = max(now, self.seg_start)
        elapsed = now - self.seg_start
        if elapsed > 0:
            self.bytes_in += self.in_bps * elapsed / 8
            self.bytes_out += self.out_bps * elapsed / 8
            if self.in_bps > 0:
                # OME samples throughput only when ingest bytes arrive: this is the value that
                # stays frozen once ingest stops (OvenMediaEngine#1368).
                self.last_in_bps, self.last_out_bps = self.in_bps, self.out_bps
                self.max_in_bps = max(self.max_in_bps, self.in_bps)
                self.max_out_bps = max(self.max_out_bps, self.out_bps)
                self.last_recv = now
            if self.out_bps > 0:
                self.last_sent = now
        self.seg_start = now

    def change(self, now: float, d_in: int, d_out: int, d_connections: Mapping[str, int]) -> None:
        self.fold(now)
        self.in_bps += d_in
        self.out_bps += d_out
        for key, delta in d_connections.items():
            self.connections[key] = self.connections.get(key, 0) + delta
        total = sum(self.connections.values())
        if total > self.max_connections:
            self.max_connections, self.max_connections_at = total, self.seg_start
        self.updated_at = max(self.updated_at, self.seg_start)

    def bytes_in_at(self, now: float) -> float:
        return self.bytes_in + self.in_bps * max(0.0, now - self.seg_start) / 8

    def last_recv_at(self, now: float) -> float:
        receiving = self.in_bps > 0 and now > self.seg_start
        return now if receiving else self.last_recv

    def snapshot(self, now: float, version: Version) -> dict[str, Any]:
        """The stats object of notes §4, as it reads at `now`."""
        now = max(now, self.seg_start)
        elapsed = now - self.seg_start
        receiving = self.in_bps > 0 and elapsed > 0
        avg_in = self.in_bps if receiving else self.last_in_bps
        avg_out = self.out_bps if receiving else self.last_out_bps
        last_recv = now if receiving else self.last_recv
        last_sent = now if self.out_bps > 0 and elapsed > 0 else self.last_sent
        stats: dict[str, Any] = {
            "createdTime": iso8601(self.created_at),
            "lastUpdatedTime": iso8601(max(self.updated_at, last_recv, last_sent)),
            "lastRecvTime": iso8601(last_recv),
            "lastSentTime": iso8601(last_sent),
            "totalBytesIn": int(self.bytes_in + self.in_bps * elapsed / 8),
            "totalBytesOut": int(self.bytes_out + self.out_bps * elapsed / 8),
            "totalConnections": sum(self.connections.values()),
            "maxTotalConnections": self.max_connections,
            "maxTotalConnectionTime": iso8601(self.max_connections_at),
            "connections": dict(self.connections),
        }
        if version >= V_AVG_THROUGHPUT:
            stats["avgThroughputIn"] = avg_in
            stats["avgThroughputOut"] = avg_out
        if version >= V_MAX_THROUGHPUT:
            stats["maxThroughputIn"] = max(self.max_in_bps, avg_in)
            stats["maxThroughputOut"] = max(self.max_out_bps, avg_out)
        if version >= V_LAST_THROUGHPUT:
            # bytes of the last ~1 s window, not bits (notes §4)
            stats["lastThroughputIn"] = avg_in // 8
            stats["lastThroughputOut"] = avg_out // 8
        return stats


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """How an encoder publishes a stream; kept so that a reconnect publishes the same again.

    `bitrate` (bits/s) is both the video track's bitrate and the ingest rate that drives
    `totalBytesIn`; `keyframe_interval` is in frames (the docs: "keyFrameInterval is GOP size").
    """

    bitrate: int = 2_500_000
    width: int = 1280
    height: int = 720
    framerate: float = 30.0
    keyframe_interval: int = 60
    video_codec: str = "H264"
    audio_codec: str = "AAC"
    audio_bitrate: int = 128_000
    samplerate: int = 48_000
    channels: int = 2
    has_bframes: bool = False
    source_type: str = "Rtmp"
    source_url: str | None = None
    outputs: tuple[str, ...] = ()
    connections: tuple[tuple[str, int], ...] = ()
    reconnect_after: float | None = None
    # An encoder that reconnects but sends nothing: every publish of this spec starts stalled
    # (a stream that a restart cannot cure).
    stalled: bool = False

    @classmethod
    def from_kwargs(cls, spec: Mapping[str, Any]) -> StreamSpec:
        values = dict(spec)
        if "connections" in values:
            values["connections"] = tuple(sorted(dict(values["connections"] or {}).items()))
        if "outputs" in values:
            values["outputs"] = tuple(values["outputs"] or ())
        return cls(**values)

    def kwargs(self) -> dict[str, Any]:
        values = asdict(self)
        values["connections"] = dict(self.connections)
        values["outputs"] = list(self.outputs)
        return values


@dataclass(eq=False)
class Dump:
    """One `:startHlsDump` of one output stream."""

    id: str
    output_stream: str
    output_path: str
    info_file: str | None
    user_data: str | None
    playlists: list[str]
    started_at: float
    enabled: bool = True
    files: list[tuple[float, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "outputStreamName": self.output_stream,
            "outputPath": self.output_path,
            "enabled": self.enabled,
        }
        if self.info_file:
            body["infoFile"] = self.info_file
        if self.user_data:
            body["userData"] = self.user_data
        if self.playlists:
            body["playlist"] = list(self.playlists)
        return body


@dataclass(eq=False)
class Stream:
    """One publish session of an input stream: a republish is a new object, so counters restart."""

    app: App
    name: str
    spec: StreamSpec
    meter: Meter
    bitrate: int
    stalled: bool = False
    vanished: bool = False
    ended_at: float | None = None
    viewers: dict[str, int] = field(default_factory=dict)
    dumps: dict[str, dict[str, Dump]] = field(default_factory=dict)  # output name → id → dump

    @property
    def path(self) -> str:
        return f"{self.app.vhost.name}/{self.app.name}/{self.name}"

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.spec.outputs or (self.name,)

    def rates(self) -> tuple[int, int]:
        """Ingest and egress bits/s: viewers are served the ingest rate each."""
        in_bps = 0 if self.stalled or self.ended_at is not None else self.bitrate
        return in_bps, in_bps * sum(self.viewers.values())


@dataclass(eq=False)
class Task:
    """What pushes and records share: they follow the publish sessions of their target stream."""

    id: str
    vhost: str
    app: str
    stream_name: str
    track_ids: list[int]
    variant_names: list[str]
    created_at: float
    session: Stream | None = None
    base_bytes: float = 0.0
    start_at: float = 0.0
    sessions: int = 0
    done_bytes: float = 0.0
    done_ms: int = 0
    forced_state: str | None = None
    forced_at: float = 0.0
    stopped_at: float | None = None

    def follow(self, stream: Stream | None, now: float) -> None:
        if self.stopped_at is not None or stream is None or stream is self.session:
            return
        if self.session is not None:
            self.done_bytes += self.session_bytes(now)
            self.done_ms += self.session_ms(now)
        self.session = stream
        self.sessions += 1
        if stream.meter.created_at >= self.created_at:
            # the task was waiting for this publish: it takes the stream from its first byte
            self.base_bytes, self.start_at = 0.0, stream.meter.created_at
        else:
            self.base_bytes, self.start_at = stream.meter.bytes_in_at(now), now

    def _end(self, now: float) -> float:
        ends = [now]
        if self.session is not None and self.session.ended_at is not None:
            ends.append(self.session.ended_at)
        if self.stopped_at is not None:
            ends.append(self.stopped_at)
        return min(ends)

    def session_bytes(self, now: float) -> float:
        if self.session is None:
            return 0.0
        return max(0.0, self.session.meter.bytes_in_at(self._end(now)) - self.base_bytes)

    def session_ms(self, now: float) -> int:
        if self.session is None:
            return 0
        return max(0, int((self._end(now) - self.start_at) * 1000))

    def stream_json(self) -> dict[str, Any]:
        return {
            "name": self.stream_name,
            "trackIds": list(self.track_ids),
            "variantNames": list(self.variant_names),
        }


@dataclass(eq=False)
class Push(Task):
    protocol: str = ""
    url: str = ""
    stream_key: str = ""


@dataclass(eq=False)
class Record(Task):
    interval: int = 0
    schedule: str = ""
    segmentation_rule: str = "discontinuity"
    file_path: str = ""
    info_path: str = ""
    metadata: str = ""


@dataclass(eq=False)
class App:
    vhost: Vhost
    name: str
    publishers: frozenset[str]
    meter: Meter
    streams: dict[str, Stream] = field(default_factory=dict)
    outputs: dict[str, Stream] = field(default_factory=dict)  # output stream name → input stream
    pushes: dict[str, Push] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"{self.vhost.name}/{self.name}"

    def target(self, output_name: str) -> Stream | None:
        """The live input stream behind an output stream name, if any."""
        stream = self.outputs.get(output_name)
        return None if stream is None or stream.vanished else stream


@dataclass(eq=False)
class Vhost:
    name: str
    meter: Meter
    apps: dict[str, App] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SentEvent:
    """An event accepted by `:sendEvent`."""

    time: float
    stream: str
    event_format: str
    event_type: str
    urgent: bool
    events: list[Any]
