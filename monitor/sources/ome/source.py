"""An OME server as a source: one poll walks vhosts → apps → streams (and push and record
tasks) through `OmeClient` and maps the answers to entities, version quirks included."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import sys
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from monitor.model import Entity
from monitor.sources import values as parse
from monitor.sources.base import Source, SourceContext
from monitor.sources.ome.client import NotFound, OmeClient
from monitor.sources.ome.config import OmeSourceConfig

log = logging.getLogger(__name__)

KIND_VHOST = "ome.vhost"
KIND_APP = "ome.app"
KIND_STREAM = "ome.stream"
KIND_PUSH = "ome.push"
KIND_RECORD = "ome.record"
ENTITY_KINDS = (KIND_VHOST, KIND_APP, KIND_STREAM, KIND_PUSH, KIND_RECORD)

# Push and record task states: the documented ones plus those a real OME 0.20 reports.
TASK_STATES = ("ready", "started", "pushing", "recording", "stopping", "stopped", "error")

# Reasons an item of an answer is skipped (`streamwatch_source_items_skipped_total{reason}`).
BAD_NAME = "bad_name"  # a vhost, app or stream name that is not text or cannot be encoded
BAD_TEXT = "bad_text"  # statistics, info or a task holding text that cannot be encoded

T = TypeVar("T")
R = TypeVar("R")
StreamKey = tuple[str, str, str]


def _first_number(obj: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        number = parse.number(obj.get(key))
        if number is not None:
            return number
    return None


def stats_fields(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The statistics object, which is the same at server, vhost, app and stream scope."""
    connections = stats.get("connections")
    if not isinstance(connections, Mapping):
        connections = {}
    return {
        # Interned: 10,000 streams share eight protocol names instead of holding 80,000 copies.
        "connections": {
            text(k): float(v) for k, v in connections.items() if parse.number(v) is not None
        },
        "total_connections": parse.number(stats.get("totalConnections")),
        "max_total_connections": parse.number(stats.get("maxTotalConnections")),
        "bytes_in": parse.number(stats.get("totalBytesIn")),
        "bytes_out": parse.number(stats.get("totalBytesOut")),
        # avgThroughput* is bits/s over the last ~1 s window despite its name.
        "throughput_in": parse.number(stats.get("avgThroughputIn")),
        "throughput_out": parse.number(stats.get("avgThroughputOut")),
        "max_throughput_in": parse.number(stats.get("maxThroughputIn")),
        "max_throughput_out": parse.number(stats.get("maxThroughputOut")),
        "created_at": parse.iso_epoch(stats.get("createdTime")),
        "last_updated": parse.iso_epoch(stats.get("lastUpdatedTime")),
        "last_recv": parse.iso_epoch(stats.get("lastRecvTime")),
        "last_sent": parse.iso_epoch(stats.get("lastSentTime")),
    }


def track_fields(track: Mapping[str, Any]) -> dict[str, Any] | None:
    """One input track. Tracks without a `video`/`audio` object (RTMP's Data track) carry no
    codec fields and are skipped. Measured values are preferred over configured ones."""
    track_type = str(track.get("type", "")).lower()
    detail = track.get(track_type)
    if track_type not in ("video", "audio") or not isinstance(detail, Mapping):
        return None
    fields: dict[str, Any] = {
        "type": sys.intern(track_type),
        "codec": text(detail.get("codec") or "unknown"),
        "bitrate": _first_number(detail, "bitrateLatest", "bitrateAvg", "bitrate", "bitrateConf"),
        "bitrate_conf": _first_number(detail, "bitrateConf", "bitrate"),
    }
    if track_type == "video":
        fields |= {
            "framerate": _first_number(detail, "framerateLatest", "framerateAvg", "framerate"),
            # keyFrameInterval is the GOP size in frames, as OME reports it.
            "keyframe_interval": _first_number(
                detail, "keyFrameIntervalLatest", "keyFrameIntervalAvg", "keyFrameInterval"
            ),
            "width": parse.number(detail.get("width")),
            "height": parse.number(detail.get("height")),
            "has_bframes": bool(detail.get("hasBframes", False)),
        }
    else:
        fields |= {
            "samplerate": parse.number(detail.get("samplerate")),
            "channels": parse.number(detail.get("channel")),
        }
    return fields


def _task_fields(task: Mapping[str, Any]) -> dict[str, Any]:
    stream = task.get("stream") if isinstance(task.get("stream"), Mapping) else {}
    # url and streamKey are left out on purpose: a push target's key is a credential.
    return {
        "state": text(str(task.get("state", "unknown")).lower()),
        "stream": text(stream.get("name", ""), intern=False),
        "protocol": None if task.get("protocol") is None else text(task["protocol"]),
        "sent_bytes": parse.number(task.get("sentBytes")),
        "sent_time": parse.number(task.get("sentTime")),
        "total_sent_bytes": parse.number(task.get("totalsentBytes")),
        "total_sent_time": parse.number(task.get("totalsentTime")),
        "sequence": parse.number(task.get("sequence")),
        "created_at": parse.iso_epoch(task.get("createdTime")),
        "start_time": parse.iso_epoch(task.get("startTime")),
        "finish_time": parse.iso_epoch(task.get("finishTime")),
    }


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: an escape, or a byte that was not UTF-8
        return False
    return True


class Unreadable(ValueError):
    """A text an entity would carry cannot be encoded: bytes that were not UTF-8 upstream,
    or a lone surrogate. The item holding it is skipped and counted."""


def text(value: Any, *, intern: bool = True) -> str:
    """A string for an entity's label or field, checked as it is made (a poll makes
    hundreds of thousands; walking every answer again afterwards cost a tenth of a poll).
    Interned by default: 10,000 streams share a few protocol and codec names."""
    made = value if value.__class__ is str else str(value)
    if not made.isascii() and not _encodable(made):
        raise Unreadable(made)
    return sys.intern(made) if intern else made


async def map_bounded(
    func: Callable[[T], Awaitable[R]], items: Iterable[T], concurrency: int
) -> list[R]:
    """Run `func` over `items` with at most `concurrency` in flight, results in input order.

    A few long-lived workers pulling from one iterator cost far less than one task per item
    when a poll makes 20,000 requests. The first failure cancels the rest.
    """
    indexed = list(enumerate(items))
    results: list[Any] = [None] * len(indexed)
    feed = iter(indexed)

    async def worker() -> None:
        for index, item in feed:
            results[index] = await func(item)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(indexed)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # The first error is the poll's error: stop the other workers and re-raise it as is
        # (a TaskGroup would wrap it in an ExceptionGroup).
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results


def info_fields(info: Mapping[str, Any]) -> dict[str, Any]:
    """The fields stream info gives a stream: its source type, its input tracks, and the first
    video and audio track's figures as `video_*` / `audio_*` (what rules usually read)."""
    fields: dict[str, Any] = {}
    source = info.get("input") if isinstance(info.get("input"), Mapping) else {}
    fields["source_type"] = text(source.get("sourceType", "Unknown"))
    raw_tracks = source.get("tracks") if isinstance(source.get("tracks"), list) else []
    # Tracks ride on their stream rather than being entities of their own: 10,000 streams
    # are then 10,000 entities, not 30,000 (a third of a snapshot's memory).
    tracks: list[Mapping[str, Any]] = []
    for index, track in enumerate(raw_tracks):
        described = track_fields(track) if isinstance(track, Mapping) else None
        if described is None:
            continue
        described["track"] = text(track.get("id", index), intern=False)
        tracks.append(MappingProxyType(described))
        kind = described["type"]
        # The first track of each type summarises the stream for rules.
        if f"{kind}_codec" not in fields:
            for name in ("codec", "bitrate", "framerate", "keyframe_interval", "width", "height"):
                if name in described:
                    fields[f"{kind}_{name}"] = described[name]
    fields["track_count"] = len(raw_tracks)
    fields["tracks"] = tuple(tracks)
    return fields


class OmeSource(Source):
    """Polls one OME server. Its actions are the client's (`source.client`), reached through
    the verbs in `actions.py`."""

    kind = "ome"

    def __init__(self, config: OmeSourceConfig, context: SourceContext):
        super().__init__(context=context, **Source.settings(config))
        self.config = config
        self.client = OmeClient(config, timeout=self.timeout)
        # What stream info said of each stream, from the polls before: (createdTime as OME
        # sent it, the fields made from the info). The fields, not the raw answer: they are
        # shared with the entities, while 10,000 raw infos would be a hundred megabytes.
        self._info: dict[StreamKey, tuple[Any, Mapping[str, Any]]] = {}
        self._polls = 0
        # Items the poll in progress skipped (by reason, and one example of each), and the
        # reasons already logged once.
        self._skips: dict[str, int] = {}
        self._examples: dict[str, str] = {}
        self._skips_said: set[str] = set()

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    def __repr__(self) -> str:
        return f"OmeSource(name={self.name!r}, url={self.config.url!r})"

    def _app_wanted(self, vhost: str, app: str) -> bool:
        path = f"{vhost}/{app}"
        return any(fnmatch.fnmatchcase(path, g) for g in self.config.include) and not any(
            fnmatch.fnmatchcase(path, g) for g in self.config.exclude
        )

    def _vhost_wanted(self, vhost: str) -> bool:
        return any(fnmatch.fnmatchcase(vhost, g.split("/")[0]) for g in self.config.include)

    # -- items that cannot be read ------------------------------------------------------------

    def _names(self, values: Iterable[Any], what: str) -> list[str]:
        """The usable names of a list (vhosts, apps, streams): strings that are not empty and
        can be encoded (a name with bytes that are not UTF-8 could be neither requested nor
        exported). The others are skipped and counted; the rest of the poll goes on."""
        names = []
        for value in values:
            if isinstance(value, str) and value and _encodable(value):
                names.append(value)
            else:
                self._skip(BAD_NAME, f"{what} {value!a}")
        return names

    def _made(self, make: Callable[[], T], what: str) -> T | None:
        """What `make` builds, or None when a text in it cannot be encoded: that item is then
        skipped and counted (a label or a log line holding it could not be written)."""
        try:
            return make()
        except Unreadable:
            self._skip(BAD_TEXT, what)
            return None

    def _skip(self, reason: str, example: str) -> None:
        self._skips[reason] = self._skips.get(reason, 0) + 1
        self._examples.setdefault(reason, example[:200])

    def _report_skips(self) -> None:
        for reason, count in self._skips.items():
            self.context.metrics.skipped(self.ref, reason, count)
            loud = reason not in self._skips_said  # once per reason, then only the counter
            self._skips_said.add(reason)
            log.log(
                logging.WARNING if loud else logging.DEBUG,
                "items skipped",
                extra={
                    "source": str(self.ref),
                    "reason": reason,
                    "count": count,
                    "example": self._examples[reason],
                },
            )
        self._skips, self._examples = {}, {}

    # -- polling -------------------------------------------------------------------------------

    async def poll(self) -> list[Entity]:
        try:
            return await self._poll()
        finally:
            self._report_skips()

    async def _poll(self) -> list[Entity]:
        server = self.name
        listed = self._names(await self.client.vhosts(), "vhost")
        vhosts = [v for v in listed if self._vhost_wanted(v)]
        concurrency = self.config.concurrency

        async def vhost_part(vhost: str) -> tuple[list[Entity], list[tuple[str, str]]]:
            try:
                stats = await self.client.vhost_stats(vhost)
                apps = await self.client.apps(vhost)
            except NotFound:
                return [], []  # removed since the vhost list: not an error
            labels = {"server": server, "vhost": vhost}
            found = []
            fields = self._made(lambda: stats_fields(stats), f"stats of vhost {vhost}")
            if fields is not None:
                found.append(Entity(KIND_VHOST, labels, fields))
            names = self._names(apps, f"app of {vhost}")
            return found, [(vhost, a) for a in names if self._app_wanted(vhost, a)]

        vhost_results = await map_bounded(vhost_part, vhosts, concurrency)
        entities = [e for found, _ in vhost_results for e in found]
        apps = [app for _, found in vhost_results for app in found]

        app_results = await map_bounded(self._poll_app, apps, concurrency)
        streams: list[tuple[str, str, str]] = []
        for found, names in app_results:
            entities.extend(found)
            streams.extend(names)

        self._polls += 1
        infos: dict[StreamKey, tuple[Any, Mapping[str, Any]]] = {}
        poll_stream = functools.partial(self._poll_stream, infos=infos)
        stream_results = await map_bounded(poll_stream, streams, concurrency)
        self._info = infos  # streams gone since are forgotten
        seen: set[tuple[str, str, str]] = set()
        for key, found in zip(streams, stream_results, strict=True):
            if found is not None:  # None: ended between the list and now
                seen.add(key)  # a stream skipped as unreadable is there all the same
                entities.extend(found)
        for expected in self.config.expected_streams:
            vhost, app, stream = expected.split("/")
            if (vhost, app, stream) not in seen:
                labels = {"server": server, "vhost": vhost, "app": app, "stream": stream}
                entities.append(Entity(KIND_STREAM, labels, {"present": False}))
        return entities

    async def _poll_app(
        self, key: tuple[str, str]
    ) -> tuple[list[Entity], list[tuple[str, str, str]]]:
        vhost, app = key
        labels = {"server": self.name, "vhost": vhost, "app": app}
        try:
            stats = await self.client.app_stats(vhost, app)
            names = await self.client.streams(vhost, app)
        except NotFound:
            return [], []
        entities = []
        fields = self._made(lambda: stats_fields(stats), f"stats of app {vhost}/{app}")
        if fields is not None:
            entities.append(Entity(KIND_APP, labels, fields))
        for wanted, action, kind in (
            (self.config.pushes, "pushes", KIND_PUSH),
            (self.config.records, "records", KIND_RECORD),
        ):
            if not wanted:
                continue
            try:
                tasks = await self.client.tasks(vhost, app, action)
            except NotFound:
                continue  # the Push / File publisher is not enabled on this app
            for task in tasks:
                if not (isinstance(task, Mapping) and "id" in task):
                    continue
                made = self._made(
                    lambda task=task: (
                        {**labels, "id": text(task["id"], intern=False)},
                        _task_fields(task),
                    ),
                    f"{action} task of {vhost}/{app}",
                )
                if made is not None:
                    entities.append(Entity(kind, *made))
        streams = self._names(names, f"stream of {vhost}/{app}")
        return entities, [(vhost, app, name) for name in streams]

    def _info_due(self, key: StreamKey) -> bool:
        """Whether this poll refreshes the info of a known, unchanged stream: once every
        `stream_info_every` polls, at a poll that depends on the stream, so that the refreshes
        of many streams spread over the polls instead of landing on one."""
        every = self.config.stream_info_every
        offset = zlib.crc32("/".join(key).encode("utf-8", "surrogatepass")) % every
        return (self._polls + offset) % every == 0

    async def _stream_info(
        self, key: StreamKey, stats: Mapping[str, Any], infos: dict[StreamKey, Any]
    ) -> Mapping[str, Any] | None:
        """Stream info, fetched for a new stream, a republished one (its createdTime changed)
        and when due; otherwise the info of the poll before. Info changes rarely and is one
        request per stream, so this halves a large server's poll."""
        created = stats.get("createdTime")
        cached = self._info.get(key)
        if cached is not None and cached[0] == created and not self._info_due(key):
            derived = cached[1]
        else:
            info = await self.client.stream_info(*key)
            made = self._made(lambda: info_fields(info), "info of stream " + "/".join(key))
            if made is None:
                return None
            derived = made
        infos[key] = (created, derived)
        return derived

    async def _poll_stream(
        self, key: StreamKey, infos: dict[StreamKey, tuple[Any, Mapping[str, Any]]]
    ) -> list[Entity] | None:
        vhost, app, stream = key
        labels = {"server": self.name, "vhost": vhost, "app": app, "stream": stream}
        try:
            # Sequential on purpose: the workers of map_bounded already give the concurrency,
            # and a failed pair then leaves no orphan request behind.
            stats = await self.client.stream_stats(vhost, app, stream)
            fields = self._made(
                lambda: stats_fields(stats), f"stats of stream {vhost}/{app}/{stream}"
            )
            if fields is None:
                return []
            derived = await self._stream_info(key, stats, infos) if self.config.stream_info else {}
        except NotFound:
            return None  # ended between the list and now: normal, not an error
        if derived is None:
            return []  # its info could not be read: skipped and counted
        if derived:
            fields.update(derived)
        else:
            fields.update(source_type=None, track_count=0, tracks=())
        return [Entity(KIND_STREAM, labels, fields)]
