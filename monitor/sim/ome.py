"""Simulator of the OvenMediaEngine REST API v1, answering as reference/ovenmediaengine.md says OME does.

The state lives in an `OmeSim`; `build_ome_app(sim)` serves it (run it with `monitor.sim.serve.serve`).
Every counter is a function of the injected clock, evaluated when a request arrives: there are no
background tasks and no sleeps, except in the `delay` fault, whose whole point is to be slow. Faults
and a clock-driven schedule can be driven from Python or, for another process (demo, bench), through
the unauthenticated JSON routes under `/_sim/`.

Where the notes and the gitbook seed disagree, the behaviour observed on a running OME 0.20 wins.
Nothing here is shared with `monitor.sources`: the simulator answers from the documents only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import heapq
import itertools
import json
import logging
import math
import re
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Version = tuple[int, int, int]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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

_EVENT_FORMATS: Mapping[str, Version] = {
    "ID3V2": (0, 0, 0),
    "CUE": (0, 18, 0),
    "SCTE35": (0, 19, 0),
}
_EVENT_TYPES = frozenset({"EVENT", "VIDEO", "AUDIO"})
_PUSH_PROTOCOLS: Mapping[str, tuple[str, ...]] = {
    "rtmp": ("rtmp://", "rtmps://"),
    "srt": ("srt://",),
    "mpegts": ("udp://", "tcp://"),
}
PUSH_STATES = frozenset({"ready", "started", "pushing", "stopping", "stopped", "error"})
RECORD_STATES = frozenset({"ready", "started", "recording", "stopping", "stopped", "error"})
DEFAULT_PUBLISHERS = frozenset({"webrtc", "llhls", "ovt", "push", "file", "thumbnail"})
_APP_ACTIONS = frozenset(
    {"records", "startRecord", "stopRecord", "pushes", "startPush", "stopPush"}
)
_STREAM_ACTIONS = frozenset({"sendEvent", "startHlsDump", "stopHlsDump", "hlsDumps"})
_FAULT_KINDS = frozenset({"fail", "delay", "malformed", "unauthorized"})
_SEGMENT_SECONDS = 6  # OME's default LL-HLS segment duration
_MAX_DUMP_SEGMENTS = 1000  # keeps dump files small whatever the clock does
_PUSH_REMOVAL_SECONDS = 1.0  # OME's push control thread drops a stopped push on its next 1 s pass


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


def _split(path: str, parts: int) -> list[str]:
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


def _controller_not_found() -> OmeError:
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
class _Task:
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
class Push(_Task):
    protocol: str = ""
    url: str = ""
    stream_key: str = ""


@dataclass(eq=False)
class Record(_Task):
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
class Call:
    """A non-GET API request, for tests to assert on."""

    method: str
    path: str
    body: Any
    time: float
    status: int


@dataclass(frozen=True, slots=True)
class SentEvent:
    """An event accepted by `:sendEvent`."""

    time: float
    stream: str
    event_format: str
    event_type: str
    urgent: bool
    events: list[Any]


@dataclass(eq=False)
class HttpFault:
    """A fault on the HTTP layer: `remaining` requests (None = until cleared) whose path matches."""

    kind: str
    remaining: int | None = None
    path: str | None = None
    seconds: float = 0.0

    def take(self, path: str) -> bool:
        if self.path is not None and not fnmatch.fnmatchcase(path, self.path):
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.remaining,
            "path": self.path,
            "seconds": self.seconds,
        }


class OmeSim:
    """The state of one simulated OME server and the fault controls that act on it.

    Paths name things as `"vhost/app/stream"` (streams) and `"vhost/app"` (apps). Every public
    mutator first applies schedule entries that are due, then acts at the current clock time.
    """

    def __init__(
        self, access_token: str, clock: Clock = time.time, version: str = "0.20.0"
    ) -> None:
        self.access_token = access_token
        self.clock = clock
        self.version_text = version
        self.version = parse_version(version)
        self.connection_keys = connection_keys(self.version)
        self.server = Meter.start(clock(), self.connection_keys)
        self.vhosts: dict[str, Vhost] = {}
        self.calls: list[Call] = []
        self.events: list[SentEvent] = []
        self.faults: list[HttpFault] = []
        self._schedule: list[tuple[float, int, str, dict[str, Any]]] = []
        self._sequence = itertools.count()
        self._actions: dict[str, Callable[..., None]] = {
            "add_app": self._add_app,
            "add_stream": self._add_stream,
            "remove_stream": self._remove_stream,
            "stall": self._stall,
            "resume": self._resume,
            "vanish": self._vanish,
            "set_connections": self._set_connections,
            "set_bitrate": self._set_bitrate,
            "add_push": self._add_push,
            "add_record": self._add_record,
            "set_push_state": self._set_push_state,
            "set_record_state": self._set_record_state,
            "fail": self._fail,
            "delay": self._delay,
            "malformed": self._malformed,
            "unauthorized": self._unauthorized,
            "clear_faults": self._clear_faults,
        }

    # ---- layouts ---------------------------------------------------------------------------------

    @classmethod
    def with_layout(
        cls,
        access_token: str,
        vhosts: int = 1,
        apps: int = 50,
        streams_per_app: int = 200,
        clock: Clock = time.time,
        version: str = "0.20.0",
        **spec: Any,
    ) -> OmeSim:
        """A server of vhosts x apps x streams_per_app streams (`default`/`vhostN`, `appN`, `streamN`)."""
        sim = cls(access_token, clock, version)
        now = sim.tick()
        stream_spec = StreamSpec.from_kwargs(spec)
        sim._check_viewers(dict(stream_spec.connections))
        for v in range(vhosts):
            vhost = "default" if v == 0 else f"vhost{v}"
            for a in range(apps):
                app = sim._ensure_app(now, vhost, f"app{a}")
                for s in range(streams_per_app):
                    sim._publish(now, app, f"stream{s}", stream_spec)
        return sim

    @classmethod
    def demo(cls, access_token: str, clock: Clock = time.time, version: str = "0.20.0") -> OmeSim:
        """A small server whose faults unfold within the first minute and a half.

        +20 s `default/live/second` stalls (resumes at +90 s unless restarted: it reconnects 5 s
        after a DELETE); +25 s push `youtube` goes to error (back at +100 s); +30 s
        `default/live/news` disappears and reconnects at +90 s; +40 s five requests answer 500.
        """
        sim = cls(access_token, clock, version)
        t0 = clock()
        sim.add_app("default/live")
        sim.add_app("default/backup", publishers=("webrtc", "llhls", "ovt"))
        sim.add_stream(
            "default/live/main",
            bitrate=4_000_000,
            width=1920,
            height=1080,
            connections={"llhls": 12, "webrtc": 3},
            reconnect_after=5,
        )
        sim.add_stream("default/live/second", connections={"llhls": 4}, reconnect_after=5)
        sim.add_stream(
            "default/live/sports",
            bitrate=6_000_000,
            width=1920,
            height=1080,
            framerate=60,
            keyframe_interval=120,
            connections={"llhls": 25, "webrtc": 8},
            reconnect_after=5,
        )
        sim.add_stream("default/live/news", bitrate=2_000_000, connections={"llhls": 2})
        sim.add_stream("default/backup/main", source_type="SRT", source_url="SRT://127.0.0.1:9999")
        sim.add_stream("default/backup/second", bitrate=1_500_000, width=854, height=480)
        sim.add_push(
            "default/live",
            id="youtube",
            stream="main",
            url="rtmp://a.rtmp.youtube.com/live2",
            stream_key="demo-key",
        )
        sim.add_record("default/live", id="archive", stream="sports", interval=60_000)
        sim.schedule(t0 + 20, "stall", stream="default/live/second")
        sim.schedule(t0 + 25, "set_push_state", app="default/live", id="youtube", state="error")
        sim.schedule(t0 + 30, "remove_stream", stream="default/live/news", reconnect_after=60)
        sim.schedule(t0 + 40, "fail", count=5)
        sim.schedule(t0 + 90, "resume", stream="default/live/second")
        sim.schedule(t0 + 100, "set_push_state", app="default/live", id="youtube", state=None)
        return sim

    # ---- public controls (each is also an action for `schedule`, `apply` and POST /_sim/<action>) ----

    def add_app(self, app: str, publishers: Iterable[str] | None = None) -> None:
        """Create an app (or change its publishers). Without `push`/`file`, :pushes/:records 404."""
        self._run("add_app", app=app, publishers=publishers)

    def add_stream(self, stream: str, **spec: Any) -> None:
        """Publish a stream; `spec` are `StreamSpec` fields, `connections` a {publisher: viewers} map."""
        self._run("add_stream", stream=stream, **spec)

    def remove_stream(self, stream: str, reconnect_after: float | None = None) -> None:
        """End a publish (the stream is gone); it publishes again `reconnect_after` seconds later."""
        self._run("remove_stream", stream=stream, reconnect_after=reconnect_after)

    def stall(self, stream: str) -> None:
        """Ingest stops while the stream stays listed: bytes and lastRecvTime freeze, throughput too."""
        self._run("stall", stream=stream)

    def resume(self, stream: str) -> None:
        self._run("resume", stream=stream)

    def vanish(self, stream: str, vanished: bool = True) -> None:
        """Still listed, but info, stats and actions answer 404 (gone between list and stats)."""
        self._run("vanish", stream=stream, vanished=vanished)

    def set_connections(self, stream: str, connections: Mapping[str, int]) -> None:
        self._run("set_connections", stream=stream, connections=connections)

    def set_bitrate(self, stream: str, bitrate: int) -> None:
        self._run("set_bitrate", stream=stream, bitrate=bitrate)

    def add_push(
        self,
        app: str,
        id: str,
        stream: str,
        url: str,
        protocol: str = "rtmp",
        stream_key: str = "",
        variant_names: Iterable[str] = (),
    ) -> None:
        """Start a push as `:startPush` would (`stream` is the output stream name)."""
        self._run(
            "add_push",
            app=app,
            id=id,
            stream=stream,
            url=url,
            protocol=protocol,
            stream_key=stream_key,
            variant_names=list(variant_names),
        )

    def add_record(self, app: str, id: str, stream: str, **options: Any) -> None:
        """Start a record as `:startRecord` would; options: interval, schedule, segmentation_rule,
        file_path, info_path, metadata."""
        self._run("add_record", app=app, id=id, stream=stream, **options)

    def set_push_state(self, app: str, id: str, state: str | None) -> None:
        """Force a push's state (e.g. "error"); None lets it follow its stream again."""
        self._run("set_push_state", app=app, id=id, state=state)

    def set_record_state(self, app: str, id: str, state: str | None) -> None:
        self._run("set_record_state", app=app, id=id, state=state)

    def fail(self, count: int | None = None, path: str | None = None) -> None:
        """Answer 500 to the next `count` requests (None: until cleared) whose path matches the glob."""
        self._run("fail", count=count, path=path)

    def delay(self, seconds: float, count: int | None = None, path: str | None = None) -> None:
        self._run("delay", seconds=seconds, count=count, path=path)

    def malformed(self, count: int | None = 1, path: str | None = None) -> None:
        """Answer 200 with a truncated, unparseable JSON body."""
        self._run("malformed", count=count, path=path)

    def unauthorized(self, count: int | None = None, path: str | None = None) -> None:
        """Answer 401 `Invalid credential` whatever the credentials."""
        self._run("unauthorized", count=count, path=path)

    def clear_faults(self, kind: str | None = None) -> None:
        self._run("clear_faults", kind=kind)

    def apply(self, action: str, **kwargs: Any) -> None:
        """Run a named action now (what POST /_sim/<action> does)."""
        if action not in self._actions:
            raise ValueError(f"unknown action {action!r}; known: {sorted(self._actions)}")
        self._run(action, **kwargs)

    def schedule(self, at: float, action: str, **kwargs: Any) -> None:
        """Apply `action` once the clock has passed `at` (checked whenever a request arrives)."""
        if action not in self._actions:
            raise ValueError(f"unknown action {action!r}; known: {sorted(self._actions)}")
        heapq.heappush(self._schedule, (at, next(self._sequence), action, dict(kwargs)))

    def pending(self) -> list[dict[str, Any]]:
        return [{"at": at, "action": a, "kwargs": kw} for at, _, a, kw in sorted(self._schedule)]

    def tick(self) -> float:
        """Apply due schedule entries, each at its own time, and return the clock."""
        now = self.clock()
        while self._schedule and self._schedule[0][0] <= now:
            at, _, action, kwargs = heapq.heappop(self._schedule)
            try:
                self._actions[action](at, **kwargs)
            except (KeyError, ValueError, TypeError) as exc:
                # a scheduled fault whose target is gone must not break the request that tripped it
                log.warning("scheduled %s %s at %.3f not applied: %s", action, kwargs, at, exc)
        return now

    def stream_paths(self) -> list[str]:
        return [
            stream.path
            for vhost in self.vhosts.values()
            for app in vhost.apps.values()
            for stream in app.streams.values()
        ]

    def authorize(self, header: str | None) -> None:
        """Check `Authorization` exactly as OME's root controller does; raise a 401 OmeError."""
        if not header:
            raise OmeError(401, "Authorization header is required to call API")
        tokens = header.split(" ")
        if len(tokens) != 2:
            raise OmeError(401, "Invalid authorization header")
        scheme, credential = tokens
        if scheme.upper() != "BASIC":
            raise OmeError(401, f"Not supported credential type: {scheme}")
        try:
            decoded = base64.b64decode(credential, validate=True)
        except (binascii.Error, ValueError):
            raise OmeError(401, "Invalid credential format") from None
        if decoded != self.access_token.encode():
            raise OmeError(401, "Invalid credential")

    def take_fault(self, kind: str, path: str) -> HttpFault | None:
        """Consume one use of the first matching fault of `kind`, if any."""
        for fault in self.faults:
            if fault.kind == kind and fault.take(path):
                if fault.remaining is not None and fault.remaining <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    # ---- lookups (KeyError for the Python API; the HTTP layer has its own 404s) ------------------

    def find_app(self, app: str) -> App:
        vhost_name, app_name = _split(app, 2)
        vhost = self.vhosts.get(vhost_name)
        if vhost is None or app_name not in vhost.apps:
            raise KeyError(f"no app {app}")
        return vhost.apps[app_name]

    def find_stream(self, stream: str) -> Stream:
        vhost, app, name = _split(stream, 3)
        found = self.find_app(f"{vhost}/{app}").streams.get(name)
        if found is None:
            raise KeyError(f"no stream {stream}")
        return found

    # ---- actions: (now, **kwargs) ----------------------------------------------------------------

    def _run(self, action: str, **kwargs: Any) -> None:
        self._actions[action](self.tick(), **kwargs)

    def _add_app(self, now: float, app: str, publishers: Iterable[str] | None = None) -> None:
        vhost_name, app_name = _split(app, 2)
        self._ensure_app(now, vhost_name, app_name, publishers)

    def _ensure_app(
        self, now: float, vhost_name: str, app_name: str, publishers: Iterable[str] | None = None
    ) -> App:
        vhost = self.vhosts.get(vhost_name)
        if vhost is None:
            vhost = self.vhosts[vhost_name] = Vhost(
                vhost_name, Meter.start(now, self.connection_keys)
            )
        app = vhost.apps.get(app_name)
        if app is None:
            meter = Meter.start(now, self.connection_keys)
            app = vhost.apps[app_name] = App(vhost, app_name, DEFAULT_PUBLISHERS, meter)
        if publishers is not None:
            app.publishers = frozenset(publishers)
        return app

    def _add_stream(self, now: float, stream: str, **spec: Any) -> None:
        vhost_name, app_name, name = _split(stream, 3)
        stream_spec = StreamSpec.from_kwargs(spec)
        self._check_viewers(dict(stream_spec.connections))
        self._publish(now, self._ensure_app(now, vhost_name, app_name), name, stream_spec)

    def _publish(self, now: float, app: App, name: str, spec: StreamSpec) -> Stream:
        if name in app.streams:
            raise ValueError(f"stream {app.path}/{name} already exists")
        meter = Meter.start(now, self.connection_keys)
        stream = Stream(app, name, spec, meter, bitrate=spec.bitrate)
        taken = [out for out in stream.outputs if out in app.outputs]
        if taken:
            raise ValueError(f"output stream(s) {taken} already exist in {app.path}")
        app.streams[name] = stream
        for out in stream.outputs:
            app.outputs[out] = stream
        self._update(now, stream, viewers=dict(spec.connections), begin=True)
        return stream

    def _update(
        self,
        now: float,
        stream: Stream,
        *,
        stalled: bool | None = None,
        bitrate: int | None = None,
        viewers: Mapping[str, int] | None = None,
        begin: bool = False,
        end: bool = False,
    ) -> None:
        """Change a stream and carry the rate and viewer deltas up to app, vhost and server.

        `begin` marks a new publish: nothing of it has been counted anywhere yet.
        """
        old_in, old_out = (0, 0) if begin else stream.rates()
        old_viewers = {} if begin else dict(stream.viewers)
        if stalled is not None:
            stream.stalled = stalled
        if bitrate is not None:
            stream.bitrate = bitrate
        if viewers is not None:
            stream.viewers = {key: count for key, count in viewers.items() if count}
        if end:
            stream.ended_at = now
            stream.viewers = {}
        new_in, new_out = stream.rates()
        d_viewers = {
            key: stream.viewers.get(key, 0) - old_viewers.get(key, 0)
            for key in old_viewers.keys() | stream.viewers.keys()
        }
        d_viewers = {key: delta for key, delta in d_viewers.items() if delta}
        for meter in (stream.meter, stream.app.meter, stream.app.vhost.meter, self.server):
            meter.change(now, new_in - old_in, new_out - old_out, d_viewers)

    def _unpublish(self, now: float, stream: Stream, reconnect_after: float | None = None) -> None:
        """End a publish; with `reconnect_after`, the encoder publishes the same spec again."""
        app = stream.app
        self._update(now, stream, end=True)
        del app.streams[stream.name]
        for out in stream.outputs:
            if app.outputs.get(out) is stream:
                del app.outputs[out]
        for dumps in stream.dumps.values():
            for dump in dumps.values():
                if dump.enabled:
                    # the LL-HLS stream under the dump is gone: the dump cannot complete
                    dump.enabled = False
                    _finish_dump_files(dump, now, "Error")
        if reconnect_after is not None:
            again = stream.spec.kwargs()
            self.schedule(now + reconnect_after, "add_stream", stream=stream.path, **again)

    def _remove_stream(self, now: float, stream: str, reconnect_after: float | None = None) -> None:
        self._unpublish(now, self.find_stream(stream), reconnect_after)

    def _stall(self, now: float, stream: str) -> None:
        self._update(now, self.find_stream(stream), stalled=True)

    def _resume(self, now: float, stream: str) -> None:
        self._update(now, self.find_stream(stream), stalled=False)

    def _vanish(self, now: float, stream: str, vanished: bool = True) -> None:
        self.find_stream(stream).vanished = bool(vanished)

    def _set_connections(self, now: float, stream: str, connections: Mapping[str, int]) -> None:
        self._check_viewers(connections)
        self._update(now, self.find_stream(stream), viewers=connections)

    def _set_bitrate(self, now: float, stream: str, bitrate: int) -> None:
        if int(bitrate) < 0:
            raise ValueError("bitrate must be >= 0")
        self._update(now, self.find_stream(stream), bitrate=int(bitrate))

    def _check_viewers(self, viewers: Mapping[str, int]) -> None:
        unknown = sorted(set(viewers) - set(self.connection_keys))
        if unknown:
            raise ValueError(
                f"connection keys {unknown} do not exist in OME {self.version_text}; "
                f"use {list(self.connection_keys)}"
            )
        if any(int(count) < 0 for count in viewers.values()):
            raise ValueError("connection counts must be >= 0")

    def _add_push(
        self,
        now: float,
        app: str,
        id: str,
        stream: str,
        url: str,
        protocol: str = "rtmp",
        stream_key: str = "",
        variant_names: Iterable[str] = (),
    ) -> None:
        body = {
            "id": id,
            "stream": {"name": stream, "variantNames": list(variant_names)},
            "protocol": protocol,
            "url": url,
            "streamKey": stream_key,
        }
        try:
            _start_push(self, self.find_app(app), body, now)
        except OmeError as err:
            raise ValueError(err.message) from None

    def _add_record(self, now: float, app: str, id: str, stream: str, **options: Any) -> None:
        names = {
            "interval": "interval",
            "schedule": "schedule",
            "segmentation_rule": "segmentationRule",
            "file_path": "filePath",
            "info_path": "infoPath",
            "metadata": "metadata",
        }
        unknown = set(options) - set(names)
        if unknown:
            raise TypeError(f"unknown record options {sorted(unknown)}")
        body = {"id": id, "stream": {"name": stream}}
        body.update({names[key]: value for key, value in options.items() if value is not None})
        try:
            _start_record(self, self.find_app(app), body, now)
        except OmeError as err:
            raise ValueError(err.message) from None

    def _set_push_state(self, now: float, app: str, id: str, state: str | None) -> None:
        self._force_state(now, self.find_app(app).pushes, id, state, PUSH_STATES)

    def _set_record_state(self, now: float, app: str, id: str, state: str | None) -> None:
        self._force_state(now, self.find_app(app).records, id, state, RECORD_STATES)

    @staticmethod
    def _force_state(
        now: float, tasks: Mapping[str, _Task], id: str, state: str | None, allowed: frozenset[str]
    ) -> None:
        if state is not None and state not in allowed:
            raise ValueError(f"state must be one of {sorted(allowed)} or null")
        task = tasks.get(id)
        if task is None:
            raise KeyError(f"no task {id!r}")
        task.forced_state, task.forced_at = state, now

    def _add_fault(
        self, kind: str, count: int | None, path: str | None, seconds: float = 0.0
    ) -> None:
        if count is not None and int(count) < 1:
            raise ValueError("count must be >= 1 or null (until cleared)")
        self.faults.append(HttpFault(kind, None if count is None else int(count), path, seconds))

    def _fail(self, now: float, count: int | None = None, path: str | None = None) -> None:
        self._add_fault("fail", count, path)

    def _delay(
        self, now: float, seconds: float, count: int | None = None, path: str | None = None
    ) -> None:
        if float(seconds) < 0:
            raise ValueError("seconds must be >= 0")
        self._add_fault("delay", count, path, float(seconds))

    def _malformed(self, now: float, count: int | None = 1, path: str | None = None) -> None:
        self._add_fault("malformed", count, path)

    def _unauthorized(self, now: float, count: int | None = None, path: str | None = None) -> None:
        self._add_fault("unauthorized", count, path)

    def _clear_faults(self, now: float, kind: str | None = None) -> None:
        if kind is not None and kind not in _FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(_FAULT_KINDS)}")
        self.faults = [fault for fault in self.faults if kind is not None and fault.kind != kind]


SIM_KEY = web.AppKey("ome_sim", OmeSim)
NOW_KEY = web.RequestKey("ome_now", float)  # the clock reading a request is answered at


# --------------------------------------------------------------------------------------------------
# JSON views
# --------------------------------------------------------------------------------------------------


def _bitrate(version: Version, value: int) -> int | str:
    # strings up to 0.18.x, integers from 0.19.0 (notes §5)
    return value if version >= V_INT_BITRATE else str(value)


def _video_json(sim: OmeSim, stream: Stream, now: float) -> dict[str, Any]:
    spec = stream.spec
    bitrate = _bitrate(sim.version, stream.bitrate)
    framerate = float(spec.framerate)
    video: dict[str, Any] = {
        "bypass": False,
        "codec": spec.video_codec,
        "width": spec.width,
        "height": spec.height,
        "bitrate": bitrate,
        "framerate": framerate,
        "timebase": {"num": 1, "den": 1000 if spec.source_type == "Rtmp" else 90000},
        "hasBframes": spec.has_bframes,
        "keyFrameInterval": spec.keyframe_interval,
    }
    if sim.version >= V_MEASURED_TRACKS:
        received = stream.meter.last_recv_at(now) - stream.meter.created_at
        frames = int(received * framerate)
        video.update(
            bitrateConf=_bitrate(sim.version, spec.bitrate),
            bitrateAvg=bitrate,
            bitrateLatest=bitrate,
            framerateConf=framerate,
            framerateAvg=framerate,
            framerateLatest=framerate,
            keyFrameIntervalConf=float(spec.keyframe_interval),
            keyFrameIntervalAvg=float(spec.keyframe_interval),
            keyFrameIntervalLatest=spec.keyframe_interval,
            deltaFramesSinceLastKeyFrame=frames % max(1, spec.keyframe_interval),
        )
    return video


def _audio_json(
    version: Version, codec: str, samplerate: int, channels: int, bitrate: int, den: int
) -> dict[str, Any]:
    audio: dict[str, Any] = {
        "bypass": False,
        "codec": codec,
        "samplerate": samplerate,
        "channel": channels,
        "bitrate": _bitrate(version, bitrate),
        "timebase": {"num": 1, "den": den},
    }
    if version >= V_MEASURED_TRACKS:
        value = _bitrate(version, bitrate)
        audio.update(bitrateConf=value, bitrateAvg=value, bitrateLatest=value)
    return audio


def _input_json(sim: OmeSim, stream: Stream, now: float) -> dict[str, Any]:
    spec = stream.spec
    rtmp = spec.source_type == "Rtmp"
    audio = _audio_json(
        sim.version,
        spec.audio_codec,
        spec.samplerate,
        spec.channels,
        spec.audio_bitrate,
        1000 if rtmp else spec.samplerate,
    )
    tracks: list[dict[str, Any]] = [
        {"id": 0, "name": "Video", "type": "Video", "video": _video_json(sim, stream, now)},
        {"id": 1, "name": "Audio", "type": "Audio", "audio": audio},
    ]
    if rtmp:
        # observed on OME 0.20: RTMP inputs carry a data track without a type-named object
        tracks.append({"id": 2, "name": "Data", "type": "Data"})
    body: dict[str, Any] = {
        "createdTime": iso8601(stream.meter.created_at),
        "sourceType": spec.source_type,
        "tracks": tracks,
    }
    source_url = spec.source_url
    if source_url is None and rtmp:
        port = 40000 + zlib.crc32(stream.path.encode()) % 20000  # stable per stream path
        source_url = f"TCP://127.0.0.1:{port}"
    if source_url:
        body["sourceUrl"] = source_url
    return body


def _output_json(sim: OmeSim, stream: Stream, name: str) -> dict[str, Any]:
    """The default output profile: bypassed video, AAC (bypassed if the input is AAC) and OPUS."""
    spec = stream.spec
    if spec.audio_codec.upper() == "AAC":
        aac: dict[str, Any] = {"bypass": True}
    else:
        aac = _audio_json(sim.version, "AAC", 48_000, 2, 128_000, 48_000)
    tracks = [
        {"id": 0, "name": "bypass_video", "type": "Video", "video": {"bypass": True}},
        {"id": 1, "name": "aac", "type": "Audio", "audio": aac},
        {
            "id": 2,
            "name": "opus",
            "type": "Audio",
            "audio": _audio_json(sim.version, "OPUS", 48_000, 2, 128_000, 48_000),
        },
    ]
    body: dict[str, Any] = {"name": name, "tracks": tracks}
    if sim.version >= V_MEASURED_TRACKS:
        body["playlists"] = [
            {
                "name": "llhls",
                "fileName": "llhls",
                "options": {
                    "webrtcAutoAbr": True,
                    "hlsChunklistPathDepth": -1,
                    "enableTsPackaging": False,
                },
                "renditions": [
                    {
                        "name": "bypass",
                        "videoVariantName": "bypass_video",
                        "audioVariantName": "aac",
                    }
                ],
            }
        ]
    return body


def _stream_json(sim: OmeSim, stream: Stream, now: float) -> dict[str, Any]:
    return {
        "name": stream.name,
        "input": _input_json(sim, stream, now),
        "outputs": [_output_json(sim, stream, name) for name in stream.outputs],
    }


def _vhost_json(vhost: Vhost) -> dict[str, Any]:
    return {"name": vhost.name, "distribution": "ovenServer", "host": {"names": ["*"]}}


def _app_json(app: App) -> dict[str, Any]:
    audio = {"bitrate": 128000, "bypassIfMatch": {"codec": "eq"}, "channel": 2, "samplerate": 48000}
    profile = {
        "name": "default",
        "outputStreamName": "${OriginStreamName}",
        "encodes": {
            "videos": [{"name": "bypass_video", "bypass": True}],
            "audios": [
                {"name": "opus", "codec": "opus", **audio},
                {"name": "aac", "codec": "aac", **audio},
            ],
        },
    }
    return {
        "dynamic": False,
        "name": app.name,
        "type": "live",
        "outputProfiles": {"outputProfile": [profile]},
        "providers": {name: {} for name in ("ovt", "rtmp", "rtspPull", "srt", "webrtc")},
        "publishers": {name: {} for name in sorted(app.publishers)},
    }


def _push_state(push: Push, stream: Stream | None, now: float) -> str:
    if push.forced_state is not None:
        return push.forced_state
    if push.stopped_at is not None:
        return "stopping"
    if stream is None or stream is not push.session:
        return "ready"
    # OME's push control thread picks a new push up on its next pass, not at once
    return "pushing" if now > push.start_at else "ready"


def _push_json(sim: OmeSim, app: App, push: Push, now: float) -> dict[str, Any]:
    stream = app.target(push.stream_name)
    push.follow(stream, now)
    state = _push_state(push, stream, now)
    sent_bytes, sent_ms = int(push.session_bytes(now)), push.session_ms(now)
    finished = push.stopped_at if push.stopped_at is not None else push.forced_at
    return {
        "id": push.id,
        "vhost": push.vhost,
        "app": push.app,
        "stream": push.stream_json(),
        "state": state,
        "protocol": push.protocol,
        "url": push.url,
        "streamKey": push.stream_key,
        "sentBytes": sent_bytes,
        "sentTime": sent_ms,
        "totalsentBytes": int(push.done_bytes) + sent_bytes,
        "totalsentTime": push.done_ms + sent_ms,
        "sequence": max(0, push.sessions - 1),
        "createdTime": iso8601(push.created_at),
        "startTime": iso8601(push.start_at if push.session is not None else 0),
        "finishTime": iso8601(finished if state in ("stopped", "error") else 0),
        "isConfig": False,
    }


def _record_json(
    sim: OmeSim, app: App, record: Record, now: float, state: str | None = None
) -> dict[str, Any]:
    stream = app.target(record.stream_name)
    record.follow(stream, now)
    if state is None:
        recording = stream is not None and stream is record.session
        state = record.forced_state or ("recording" if recording else "ready")
    body: dict[str, Any] = {
        "state": state,
        "isConfig": False,
        "id": record.id,
        "vhost": record.vhost,
        "app": record.app,
        "stream": record.stream_json(),
        "filePath": record.file_path,
        "outputFilePath": "",
        "infoPath": record.info_path,
        "outputInfoPath": record.info_path,
        "segmentationRule": record.segmentation_rule,
        "createdTime": iso8601(record.created_at),
    }
    if record.metadata:
        body["metadata"] = record.metadata
    if record.interval > 0:
        body["interval"] = record.interval
    if record.schedule:
        body["schedule"] = record.schedule
    if state in ("recording", "stopping", "stopped", "error"):
        body.update(_record_counters(record, now))
    if state in ("stopped", "error"):
        finished = record.stopped_at if record.stopped_at is not None else record.forced_at
        body["finishTime"] = iso8601(finished)
    return body


def _record_counters(record: Record, now: float) -> dict[str, Any]:
    total_bytes = record.done_bytes + record.session_bytes(now)
    total_ms = record.done_ms + record.session_ms(now)
    if record.interval > 0:
        sequence = total_ms // record.interval  # a new file every `interval` ms of recording
        file_ms = total_ms - sequence * record.interval
        file_bytes = total_bytes * file_ms / total_ms if total_ms else 0.0
    else:
        sequence = max(0, record.sessions - 1)
        file_ms, file_bytes = record.session_ms(now), record.session_bytes(now)
    record_path = record.file_path.replace("${Sequence}", str(sequence))
    counters: dict[str, Any] = {"outputFilePath": record_path}
    # OME omits counters that are still zero
    for key, value in (
        ("recordBytes", int(file_bytes)),
        ("recordTime", int(file_ms)),
        ("totalRecordBytes", int(total_bytes)),
        ("totalRecordTime", int(total_ms)),
        ("sequence", int(sequence)),
    ):
        if value > 0:
            counters[key] = value
    if record.session is not None:
        counters["startTime"] = iso8601(record.start_at)
    return counters


# --------------------------------------------------------------------------------------------------
# Request helpers
# --------------------------------------------------------------------------------------------------


def _json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    # jsoncpp keeps object members in a std::map: OME's JSON has its keys sorted
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    all_headers = {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
    return web.Response(status=status, body=body, headers=all_headers)


def _ok(response: Any) -> web.Response:
    return _json_response(200, {"statusCode": 200, "message": "OK", "response": response})


def _done() -> web.Response:
    return _json_response(200, {"statusCode": 200, "message": "OK"})


def _error_response(err: OmeError) -> web.Response:
    headers = {"WWW-Authenticate": AUTH_CHALLENGE} if err.status == 401 else None
    return _json_response(err.status, err.body(), headers)


def _truncated(response: web.Response) -> web.Response:
    body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b"{}"
    return web.Response(
        status=response.status,
        body=body[: max(1, len(body) // 2)],
        headers={"Content-Type": JSON_CONTENT_TYPE},
    )


async def _json_body(request: web.Request) -> Any:
    """OME parses every POST body before anything else; a parse failure is a 400 (jsoncpp text)."""
    text = await request.text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = (
            f"* Line {exc.lineno}, Column {exc.colno}\n"
            "  Syntax error: value, object or array expected.\n"
        )
        raise OmeError(400, message) from None


def _object(body: Any) -> dict[str, Any]:
    return body if isinstance(body, dict) else {}


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    return value if isinstance(value, str) else ""


def _ints(values: Any) -> list[int]:
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _strings(values: Any) -> list[str]:
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _sim(request: web.Request) -> OmeSim:
    return request.app[SIM_KEY]


def _now(request: web.Request) -> float:
    return request.get(NOW_KEY) or _sim(request).clock()


def _require(sim: OmeSim, since: Version) -> None:
    if sim.version < since:
        raise _controller_not_found()


def _vhost(sim: OmeSim, name: str) -> Vhost:
    vhost = sim.vhosts.get(name)
    if vhost is None:
        raise OmeError(404, f"Could not find the virtual host: [{name}]")
    return vhost


def _app(sim: OmeSim, vhost_name: str, app_name: str) -> App:
    app = _vhost(sim, vhost_name).apps.get(app_name)
    if app is None:
        raise OmeError(404, f"Could not find the application: [{vhost_name}/{app_name}]")
    return app


def _stream(sim: OmeSim, vhost_name: str, app_name: str, name: str) -> Stream:
    stream = _app(sim, vhost_name, app_name).streams.get(name)
    if stream is None or stream.vanished:
        # observed on OME 0.20: the message names the app by its internal name "#vhost#app"
        internal = f"#{vhost_name}#{app_name}"
        raise OmeError(404, f"Could not find the stream: [{vhost_name}/{internal}/{name}]")
    return stream


def _matched_stream(sim: OmeSim, request: web.Request) -> Stream:
    info = request.match_info
    return _stream(sim, info["vhost"], info["app"], info["stream"])


def _require_publisher(app: App, publisher: str) -> None:
    if publisher not in app.publishers:
        raise OmeError(404, f"Could not find application: [{app.path}]")


def _task_response(sim: OmeSim, body: dict[str, Any]) -> web.Response:
    return _ok(body if sim.version >= V_OBJECT_TASK_RESPONSE else [body])


# --------------------------------------------------------------------------------------------------
# Pushes and records (`POST /v1/vhosts/{vhost}/apps/{app}:<action>`)
# --------------------------------------------------------------------------------------------------


def _purge_pushes(app: App, now: float) -> None:
    gone = [
        push.id
        for push in app.pushes.values()
        if push.stopped_at is not None and now >= push.stopped_at + _PUSH_REMOVAL_SECONDS
    ]
    for push_id in gone:
        del app.pushes[push_id]


def _missing(fields: Iterable[tuple[str, str]]) -> OmeError | None:
    absent = [name for name, value in fields if not value]
    if not absent:
        return None
    return OmeError(
        400, "There is no required parameter [" + "".join(f" {n}" for n in absent) + "]"
    )


def _pushes(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    _require_publisher(app, "push")
    _purge_pushes(app, now)
    wanted = _text(body, "id")
    pushes = [app.pushes[key] for key in sorted(app.pushes) if not wanted or key == wanted]
    return _ok([_push_json(sim, app, push, now) for push in pushes])


def _start_push(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    protocol = _text(body, "protocol")
    if protocol.lower() not in _PUSH_PROTOCOLS:
        raise OmeError(400, f"Could not find protocol '{protocol.lower()}': [{app.path}]")
    _require_publisher(app, "push")
    target = _object(body.get("stream"))
    push = Push(
        id=_text(body, "id"),
        vhost=app.vhost.name,
        app=app.name,
        stream_name=_text(target, "name"),
        track_ids=_ints(target.get("trackIds") or target.get("tracks")),
        variant_names=_strings(target.get("variantNames")),
        created_at=now,
        protocol=protocol,
        url=_text(body, "url").rstrip("/"),
        stream_key=_text(body, "streamKey"),
    )
    error = _missing(
        (
            ("id", push.id),
            ("stream.name", push.stream_name),
            ("url", push.url),
            ("protocol", protocol),
        )
    )
    if error is not None:
        raise error
    if not push.url.startswith(_PUSH_PROTOCOLS[protocol.lower()]):
        raise OmeError(400, "Unsupported protocol")
    _purge_pushes(app, now)
    if push.id in app.pushes:
        raise OmeError(400, "Duplicate ID")
    app.pushes[push.id] = push
    return _task_response(sim, _push_json(sim, app, push, now))


def _stop_push(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    _require_publisher(app, "push")
    push_id = _text(body, "id")
    if not push_id:
        raise OmeError(400, "There is no required parameter [ id]")
    _purge_pushes(app, now)
    push = app.pushes.get(push_id)
    if push is None:
        raise OmeError(404, f"Could not find id '{push_id}': [{app.path}]")
    if push.stopped_at is None:
        push.follow(app.target(push.stream_name), now)
        push.stopped_at = now
    return _done()


def _records(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    _require_publisher(app, "file")
    wanted = _text(body, "id")
    records = [rec for key, rec in app.records.items() if not wanted or key == wanted]
    return _ok([_record_json(sim, app, record, now) for record in records])


def _start_record(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    _require_publisher(app, "file")
    target = _object(body.get("stream"))
    interval = body.get("interval")
    rule = _text(body, "segmentationRule")
    record = Record(
        id=_text(body, "id"),
        vhost=app.vhost.name,
        app=app.name,
        stream_name=_text(target, "name"),
        track_ids=_ints(target.get("trackIds") or target.get("tracks")),
        variant_names=_strings(target.get("variantNames")),
        created_at=now,
        interval=interval if isinstance(interval, int) and not isinstance(interval, bool) else 0,
        schedule=_text(body, "schedule"),
        segmentation_rule=rule if rule in ("continuity", "discontinuity") else "discontinuity",
        file_path=_text(body, "filePath"),
        info_path=_text(body, "infoPath"),
        metadata=_text(body, "metadata"),
    )
    error = _missing((("id", record.id), ("stream.name", record.stream_name)))
    if error is not None:
        raise error
    if record.schedule and record.interval > 0:
        raise OmeError(400, "[Interval] and [Schedule] cannot be used at the same time")
    if record.id in app.records:
        raise OmeError(400, "Duplicate ID already exists")
    app.records[record.id] = record
    return _task_response(sim, _record_json(sim, app, record, now))


def _stop_record(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    _require_publisher(app, "file")
    record_id = _text(body, "id")
    if not record_id:
        raise OmeError(400, "There is no required parameter [ id]")
    record = app.records.get(record_id)
    if record is None:
        raise OmeError(404, f"There is no record information related to the ID [{record_id}]")
    record.follow(app.target(record.stream_name), now)
    record.stopped_at = now
    # OME answers with the task marked "stopping" and drops it from the list at once
    del app.records[record_id]
    return _task_response(sim, _record_json(sim, app, record, now, state="stopping"))


_APP_ACTION_HANDLERS: Mapping[str, Callable[[OmeSim, App, dict[str, Any], float], web.Response]] = {
    "records": _records,
    "startRecord": _start_record,
    "stopRecord": _stop_record,
    "pushes": _pushes,
    "startPush": _start_push,
    "stopPush": _stop_push,
}


# --------------------------------------------------------------------------------------------------
# Stream actions: :sendEvent and the HLS dump
# --------------------------------------------------------------------------------------------------


def _check_id3_frame(event: Any) -> None:
    frame_type = event.get("frameType") if isinstance(event, dict) else None
    if not isinstance(frame_type, str):
        raise OmeError(400, "frameType is required in events")
    upper = frame_type.upper()
    if not (upper == "TXXX" or upper.startswith("T") or upper == "PRIV"):
        raise OmeError(400, f"frameType is not supported: [{frame_type}]")


def _send_event(sim: OmeSim, stream: Stream, body: Any, now: float) -> web.Response:
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("eventFormat"), str)
        or not isinstance(body.get("events"), list)
    ):
        raise OmeError(400, "eventFormat(string) and events(array) are required")
    event_format = body["eventFormat"]
    since = _EVENT_FORMATS.get(event_format.upper())
    if since is None or sim.version < since:
        raise OmeError(400, f"eventFormat is not supported: [{event_format}]")
    events = body["events"]
    if not events:
        raise OmeError(400, "events is empty")
    if event_format.upper() == "ID3V2":
        for event in events:
            _check_id3_frame(event)
    event_type = body.get("eventType", "event")
    if not isinstance(event_type, str):
        raise OmeError(400, "eventType must be string")
    if event_type.upper() not in _EVENT_TYPES:
        raise OmeError(400, f"eventType is not supported: [{event_type}]")
    urgent = body.get("urgent") is True
    sim.events.append(SentEvent(now, stream.path, event_format, event_type, urgent, list(events)))
    # 200 means "injected into the source stream", not "delivered to an LL-HLS player"
    return _done()


def _dump_target(stream: Stream, output: str) -> str:
    return f"{stream.app.path}/{output}"


def _dump_output(stream: Stream, output: str) -> dict[str, Dump]:
    if output not in stream.outputs:
        raise OmeError(404, f"Could not find output stream: [{_dump_target(stream, output)}]")
    if "llhls" not in stream.app.publishers:
        raise OmeError(404, f"Could not find LLHLS stream: [{_dump_target(stream, output)}]")
    return stream.dumps.setdefault(output, {})


def _start_hls_dump(sim: OmeSim, stream: Stream, body: Any, now: float) -> web.Response:
    body = _object(body)
    dump = Dump(
        id=_text(body, "id"),
        output_stream=_text(body, "outputStreamName"),
        output_path=_text(body, "outputPath"),
        info_file=_text(body, "infoFile") or None,
        user_data=_text(body, "userData") or None,
        playlists=_strings(body.get("playlist")),
        started_at=now,
    )
    if not (dump.id and dump.output_stream and dump.output_path):
        raise OmeError(400, "id, outputStreamName and outputPath are required")
    dumps = _dump_output(stream, dump.output_stream)
    target = _dump_target(stream, dump.output_stream)

    def refuse(reason: str) -> OmeError:
        return OmeError(500, f"Could not start dump: [{target}] ({reason})")

    for other in dumps.values():
        if other.id == dump.id:
            raise refuse("Duplicate ID")
        if dump.info_file and other.info_file == dump.info_file:
            raise refuse("Duplicate info file")
    if dump.info_file and Path(dump.info_file).exists():
        raise refuse("Info file already exists")
    try:
        _start_dump_files(stream, dump, now)
    except OSError as exc:
        log.warning("dump %s of %s could not write: %s", dump.id, target, exc)
        raise refuse("Could not dump init segment") from None
    dumps[dump.id] = dump
    return _done()


def _stop_hls_dump(sim: OmeSim, stream: Stream, body: Any, now: float) -> web.Response:
    body = _object(body)
    output = _text(body, "outputStreamName")
    if not output:
        raise OmeError(400, "outputStreamName is required")
    dumps = _dump_output(stream, output)
    dump_id = _text(body, "id")
    if dump_id and dump_id not in dumps:
        target = _dump_target(stream, output)
        raise OmeError(500, f"Could not stop dump: [{target}] (Could not find dump info)")
    for dump in dumps.values() if not dump_id else [dumps[dump_id]]:
        if dump.enabled:
            dump.enabled = False
            _finish_dump_files(dump, now, "Completed")
    return _done()


def _hls_dumps(sim: OmeSim, stream: Stream, body: Any, now: float) -> web.Response:
    body = _object(body)
    output = _text(body, "outputStreamName")
    if not output:
        raise OmeError(400, "outputStreamName is required")
    dumps = _dump_output(stream, output)
    wanted = _text(body, "id")
    return _ok([dump.to_json() for key, dump in dumps.items() if not wanted or key == wanted])


_STREAM_ACTION_HANDLERS: Mapping[str, Callable[[OmeSim, Stream, Any, float], web.Response]] = {
    "sendEvent": _send_event,
    "startHlsDump": _start_hls_dump,
    "stopHlsDump": _stop_hls_dump,
    "hlsDumps": _hls_dumps,
}


def _chunklist_names() -> list[tuple[int, str, str]]:
    return [
        (0, "video", "chunklist_0_video_llhls.m3u8"),
        (1, "audio", "chunklist_1_audio_llhls.m3u8"),
    ]


def _chunklist(track: int, kind: str, segments: int, ended: bool) -> str:
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        f"#EXT-X-TARGETDURATION:{_SEGMENT_SECONDS}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        f'#EXT-X-MAP:URI="init_{track}_{kind}_llhls.m4s"',
    ]
    for number in range(segments):
        lines += [f"#EXTINF:{_SEGMENT_SECONDS:.3f},", f"seg_{track}_{number}_{kind}_llhls.m4s"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _master_playlist(stream: Stream) -> str:
    spec = stream.spec
    bandwidth = stream.bitrate + spec.audio_bitrate
    return (
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="aac",DEFAULT=YES,AUTOSELECT=YES,'
        'URI="chunklist_1_audio_llhls.m3u8"\n'
        f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={spec.width}x{spec.height},"
        'AUDIO="aac"\nchunklist_0_video_llhls.m3u8\n'
    )


def _start_dump_files(stream: Stream, dump: Dump, now: float) -> None:
    """Write what a fresh dump holds: master playlists, one-segment chunklists, the info file."""
    out = Path(dump.output_path).absolute()
    out.mkdir(parents=True, exist_ok=True)
    for name in dump.playlists:
        (out / name).write_text(_master_playlist(stream))
        dump.files.append((now, str(out / name)))
    for track, kind, name in _chunklist_names():
        (out / name).write_text(_chunklist(track, kind, 1, ended=False))
        dump.files.append((now, str(out / name)))
    _write_dump_info(dump, dump.output_stream, "Running")


def _finish_dump_files(dump: Dump, now: float, status: str) -> None:
    """Close the chunklists with ENDLIST and mark the info file Completed (or Error)."""
    segments = max(1, math.ceil((now - dump.started_at) / _SEGMENT_SECONDS))
    segments = min(segments, _MAX_DUMP_SEGMENTS)
    out = Path(dump.output_path).absolute()
    try:
        for track, kind, name in _chunklist_names():
            (out / name).write_text(_chunklist(track, kind, segments, ended=True))
        _write_dump_info(dump, dump.output_stream, status)
    except OSError as exc:
        log.warning("dump %s could not be finished: %s", dump.id, exc)


def _write_dump_info(dump: Dump, stream_name: str, status: str) -> None:
    if not dump.info_file:
        return
    root = ET.Element("DumpInfo")  # observed root element; the docs say HLSDumpInfo
    ET.SubElement(root, "UserData").text = dump.user_data or ""
    ET.SubElement(root, "Stream").text = stream_name
    ET.SubElement(root, "Status").text = status
    items = ET.SubElement(root, "Items")
    for seq, (written_at, path) in enumerate(dump.files):
        item = ET.SubElement(items, "Item")
        ET.SubElement(item, "Seq").text = str(seq)
        ET.SubElement(item, "Time").text = iso8601(written_at)
        ET.SubElement(item, "File").text = path
    ET.indent(root)
    info = Path(dump.info_file)
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


# --------------------------------------------------------------------------------------------------
# HTTP handlers
# --------------------------------------------------------------------------------------------------


async def _get_version(request: web.Request) -> web.Response:
    sim = _sim(request)
    return _ok({"gitVersion": f"v{sim.version_text}", "version": sim.version_text})


async def _get_vhosts(request: web.Request) -> web.Response:
    return _ok(list(_sim(request).vhosts))


async def _get_vhost(request: web.Request) -> web.Response:
    return _ok(_vhost_json(_vhost(_sim(request), request.match_info["vhost"])))


async def _get_apps(request: web.Request) -> web.Response:
    return _ok(list(_vhost(_sim(request), request.match_info["vhost"]).apps))


async def _get_app(request: web.Request) -> web.Response:
    info = request.match_info
    return _ok(_app_json(_app(_sim(request), info["vhost"], info["app"])))


async def _get_streams(request: web.Request) -> web.Response:
    info = request.match_info
    # vanished streams stay listed: that is the list/stats race the fault stands for
    return _ok(list(_app(_sim(request), info["vhost"], info["app"]).streams))


async def _get_stream(request: web.Request) -> web.Response:
    sim = _sim(request)
    return _ok(_stream_json(sim, _matched_stream(sim, request), _now(request)))


async def _delete_stream(request: web.Request) -> web.Response:
    sim = _sim(request)
    stream = _matched_stream(sim, request)
    # OME only closes the ingest connection; an encoder set to reconnect comes back by itself
    sim._unpublish(_now(request), stream, stream.spec.reconnect_after)
    return _done()


async def _post_app_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in _APP_ACTIONS:
        raise _controller_not_found()
    body = _object(await _json_body(request))
    sim = _sim(request)
    app = _app(sim, request.match_info["vhost"], request.match_info["app"])
    return _APP_ACTION_HANDLERS[action](sim, app, body, _now(request))


async def _get_app_action(request: web.Request) -> web.Response:
    # OME still serves GET for the two listing actions ("will be deprecated")
    action = request.match_info["action"]
    if action not in ("records", "pushes"):
        raise _controller_not_found()
    sim = _sim(request)
    app = _app(sim, request.match_info["vhost"], request.match_info["app"])
    return _APP_ACTION_HANDLERS[action](sim, app, {}, _now(request))


async def _post_stream_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    sim = _sim(request)
    if action not in _STREAM_ACTIONS:
        raise _controller_not_found()
    _require(sim, V_SEND_EVENT if action == "sendEvent" else V_HLS_DUMP)
    body = await _json_body(request)
    stream = _matched_stream(sim, request)
    return _STREAM_ACTION_HANDLERS[action](sim, stream, body, _now(request))


async def _get_server_stats(request: web.Request) -> web.Response:
    sim = _sim(request)
    _require(sim, V_STATS_SERVER)
    return _ok(sim.server.snapshot(_now(request), sim.version))


async def _get_vhost_stats(request: web.Request) -> web.Response:
    sim = _sim(request)
    vhost = _vhost(sim, request.match_info["vhost"])
    return _ok(vhost.meter.snapshot(_now(request), sim.version))


async def _get_app_stats(request: web.Request) -> web.Response:
    sim = _sim(request)
    app = _app(sim, request.match_info["vhost"], request.match_info["app"])
    return _ok(app.meter.snapshot(_now(request), sim.version))


async def _get_stream_stats(request: web.Request) -> web.Response:
    sim = _sim(request)
    stream = _matched_stream(sim, request)
    return _ok(stream.meter.snapshot(_now(request), sim.version))


# ---- /_sim control routes (no auth, JSON in and out) ----------------------------------------------


async def _control_body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    body = json.loads(text)
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object of keyword arguments")
    return body


async def _sim_action(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.apply(request.match_info["action"], **await _control_body(request))
    return web.json_response({"ok": True, "now": sim.clock()})


async def _sim_schedule(request: web.Request) -> web.Response:
    sim = _sim(request)
    body = await _control_body(request)
    action = body.get("action")
    if not isinstance(action, str):
        raise ValueError('"action" is required')
    if body.get("at") is not None:
        at = float(body["at"])
    else:
        at = sim.clock() + float(body.get("after") or 0)
    sim.schedule(at, action, **dict(body.get("kwargs") or {}))
    return web.json_response({"ok": True, "at": at})


async def _sim_calls(request: web.Request) -> web.Response:
    return web.json_response([asdict(call) for call in _sim(request).calls])


async def _sim_clear_calls(request: web.Request) -> web.Response:
    _sim(request).calls.clear()
    return web.json_response({"ok": True})


async def _sim_events(request: web.Request) -> web.Response:
    return web.json_response([asdict(event) for event in _sim(request).events])


async def _sim_state(request: web.Request) -> web.Response:
    sim = _sim(request)
    now = sim.tick()
    streams = {
        stream.path: {
            "stalled": stream.stalled,
            "vanished": stream.vanished,
            "bitrate": stream.bitrate,
        }
        for vhost in sim.vhosts.values()
        for app in vhost.apps.values()
        for stream in app.streams.values()
    }
    return web.json_response(
        {
            "now": now,
            "version": sim.version_text,
            "streams": streams,
            "faults": [fault.to_json() for fault in sim.faults],
            "schedule": sim.pending(),
        }
    )


# ---- middleware -------------------------------------------------------------------------------------


def _is_control(path: str) -> bool:
    return path == "/_sim" or path.startswith("/_sim/")


async def _control(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except KeyError as exc:
        return web.json_response({"error": str(exc.args[0] if exc.args else exc)}, status=404)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except web.HTTPException as exc:
        return web.json_response({"error": exc.reason}, status=exc.status)


async def _answer(sim: OmeSim, request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    try:
        if sim.take_fault("unauthorized", path) is not None:
            raise OmeError(401, "Invalid credential")
        # auth comes first, even before "Controller not found", as in OME's root controller
        sim.authorize(request.headers.get("Authorization"))
        if sim.take_fault("fail", path) is not None:
            raise OmeError(500, "Internal Server Error")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status in (404, 405):
                raise _controller_not_found() from None
            raise
    except OmeError as err:
        return _error_response(err)
    if isinstance(response, web.Response) and sim.take_fault("malformed", path) is not None:
        return _truncated(response)
    return response


async def _logged_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text())
    except json.JSONDecodeError:
        return None


@web.middleware
async def _ome_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_control(request.path):
        return await _control(request, handler)
    sim = _sim(request)
    delay = sim.take_fault("delay", request.path)
    if delay is not None:
        await asyncio.sleep(delay.seconds)  # the fault is the slowness itself
    request[NOW_KEY] = now = sim.tick()
    response = await _answer(sim, request, handler)
    if request.method not in ("GET", "HEAD"):
        body = await _logged_body(request)
        sim.calls.append(Call(request.method, request.path, body, now, response.status))
    return response


def build_ome_app(sim: OmeSim) -> web.Application:
    """The aiohttp app answering OME's REST API v1 from `sim`, plus `/_sim/` controls."""
    app = web.Application(middlewares=[_ome_middleware])
    app[SIM_KEY] = sim
    vhost, name, stream = "{vhost:[^/:]+}", "{app:[^/:]+}", "{stream:[^/:]+}"
    apps = f"/v1/vhosts/{vhost}/apps"
    streams = f"{apps}/{name}/streams"
    stats = f"/v1/stats/current/vhosts/{vhost}"
    router = app.router
    router.add_get("/v1/version", _get_version)
    router.add_get("/v1/vhosts", _get_vhosts)
    router.add_get(f"/v1/vhosts/{vhost}", _get_vhost)
    router.add_get(apps, _get_apps)
    router.add_get(f"{apps}/{name}", _get_app)
    router.add_post(f"{apps}/{name}:{{action}}", _post_app_action)
    router.add_get(f"{apps}/{name}:{{action}}", _get_app_action)
    router.add_get(streams, _get_streams)
    router.add_get(f"{streams}/{stream}", _get_stream)
    router.add_delete(f"{streams}/{stream}", _delete_stream)
    router.add_post(f"{streams}/{stream}:{{action}}", _post_stream_action)
    router.add_get("/v1/stats/current", _get_server_stats)
    router.add_get(stats, _get_vhost_stats)
    router.add_get(f"{stats}/apps/{name}", _get_app_stats)
    router.add_get(f"{stats}/apps/{name}/streams/{stream}", _get_stream_stats)
    router.add_get("/_sim/calls", _sim_calls)
    router.add_delete("/_sim/calls", _sim_clear_calls)
    router.add_get("/_sim/events", _sim_events)
    router.add_get("/_sim/state", _sim_state)
    router.add_post("/_sim/schedule", _sim_schedule)
    router.add_post("/_sim/{action}", _sim_action)
    return app
