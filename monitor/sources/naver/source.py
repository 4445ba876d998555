"""A Live Station account as a source: channels and events as entities, the callbacks NAVER
POSTs, and the channel actions. HTTP and signatures are `LiveStationClient`'s.

Events are instantaneous: each one becomes a `naver.event` entity in exactly one snapshot and is
counted once in its channel's `events` map, whether it arrived by poll, by callback or both. The
event list has no paging or time range, so every poll reads it whole; what was already seen is
remembered in the Store (a cursor plus the seen-event table), so a restarted daemon neither
counts an event twice nor loses one that happened while it was down.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.model import Entity
from monitor.sources import values as parse
from monitor.sources.base import Source, SourceContext
from monitor.sources.http import Redactor
from monitor.sources.naver.client import LiveStationClient
from monitor.sources.naver.config import NaverSourceConfig

log = logging.getLogger(__name__)

KIND_CHANNEL = "naver.channel"
KIND_EVENT = "naver.event"
ENTITY_KINDS = (KIND_CHANNEL, KIND_EVENT)

# The documented live-channel statuses (state-set members). Not a closed set: anything else the
# API sends is exported as it is. RESERVED (VOD2LIVE only) and STOPPED (one doc table) are
# tolerated but not listed, so that each channel does not carry series it can never have.
CHANNEL_STATUSES: tuple[str, ...] = (
    "CREATING",
    "READY",
    "PUBLISHING",
    "BLOCK",
    "FORCE_BLOCK",
    "DELETED",
    "FORCE_DELETED",
)
# The documented event codes (reference/naver-live-station.md §5). Each channel's counter
# starts at 0 for all of them, so `increase()` sees a channel's first event of a kind too.
EVENT_CODES: tuple[str, ...] = (
    "STREAM_RESERVE",
    "STREAM_UPDATE",
    "PUBLISH_START",
    "PUBLISH_END",
    "THUMBNAIL_CREATE",
    "SIMULCAST_STATUS_CHANGE",
    "ONAIR_START",
    "ONAIR_END",
    "PUBLISH_OVER_THRESHOLD",
    "RTMP_MAIN_STREAM_ENABLED",
    "RTMP_BACKUP_STREAM_ENABLED",
    "BACKUP_SESSION_STREAMING_CONNECTED",
    "BACKUP_SESSION_STREAMING_DISCONNECTED",
    "STREAM_FINISH",
)
# Codes not in the list above (ERROR-level codes are not enumerated anywhere) are counted under
# this one label value, so that an upstream, or anyone who knows the callback URL, cannot grow
# `naver_channel_events_total` without bound. The `naver.event` entity keeps the code itself.
OTHER_EVENT = "other"
_DOCUMENTED = frozenset(EVENT_CODES)
# An event code, and a channel id, as NAVER writes them: anything else is refused (callback)
# or skipped (event list), before it can reach a label, a log line or the state.
MAX_CODE_LENGTH = 64
_CODE = re.compile(r"[A-Za-z0-9_.-]+")
MAX_CHANNEL_LENGTH = 128
_CHANNEL = re.compile(r"[A-Za-z0-9_.:-]+")
MAX_TEXT_LENGTH = 1000  # description, callback id and log level are cut to this
# A callback stamped later than now plus NAVER's signature skew is refused: it would sit in the
# event ledger until the clock caught up with it.
CALLBACK_SKEW_S = 300.0
# The newest event keys kept in the cursor (besides the late-window age bound).
MAX_RECENT_EVENTS = 10_000
# A callback body is one small JSON object; a bigger or deeper one is refused.
MAX_CALLBACK_BODY = 64 * 1024
# The `event` label values of `naver_channel_events_total`; each starts at 0 per channel.
COUNTED_CODES: tuple[str, ...] = (*EVENT_CODES, OTHER_EVENT)
# Event list items without a usable channel id, code or timestamp (items_skipped reason).
BAD_EVENT = "bad_event"
# Older doc revisions (2024) spell the streaming status PUBLISH.
STATUS_ALIASES = {"PUBLISH": "PUBLISHING"}

# How far before the newest event already seen a polled event may still appear for the first
# time (the list is not documented as ordered or complete at any instant). On the first start
# (no cursor), events older than this before "now" are history: remembered, not reported.
EVENT_LATE_WINDOW_S = 600.0
CURSOR_NAME = "events"


# -- lenient field parsing ---------------------------------------------------------------------


def _ms_to_seconds(value: Any) -> float | None:
    ms = parse.integer(value)
    return ms / 1000.0 if ms is not None and ms > 0 else None


def normalise_status(raw: Any) -> str:
    """`channelStatus` as the exporter labels it: upper-case, older spellings mapped."""
    text = parse.text(raw)
    if text is None:
        return "UNKNOWN"
    status = text.strip().upper()
    return STATUS_ALIASES.get(status, status)


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Event:
    channel: str
    code: str  # upper-cased
    ts_ms: int
    log_level: str | None
    description: str | None
    callback_id: str | None = None

    @property
    def key(self) -> str:
        """Dedup key shared by poll and callback: list items carry no id."""
        return f"{self.channel}:{self.code}:{self.ts_ms}"


def counted_code(code: str) -> str:
    """The `event` label value an event is counted under: its code if documented, else
    OTHER_EVENT."""
    return code if code in _DOCUMENTED else OTHER_EVENT


def _check_code(code: str) -> str:
    """An event code, upper-cased; ValueError when it cannot be one."""
    code = code.strip()
    if len(code) > MAX_CODE_LENGTH:
        raise ValueError(f"event code longer than {MAX_CODE_LENGTH} characters")
    if not _CODE.fullmatch(code):
        raise ValueError("event code must be letters, digits, '_', '.' or '-'")
    return code.upper()


def _check_channel(channel: str) -> str:
    channel = channel.strip()
    if len(channel) > MAX_CHANNEL_LENGTH:
        raise ValueError(f"channelId longer than {MAX_CHANNEL_LENGTH} characters")
    if not _CHANNEL.fullmatch(channel):
        raise ValueError("channelId must be letters, digits, '_', '.', ':' or '-'")
    return channel


def _cut(text: str | None) -> str | None:
    return text[:MAX_TEXT_LENGTH] if text is not None else None


def _event_from_item(item: Any) -> _Event | None:
    """One item of an event list (`eventCode`); None when it cannot be identified, or its
    code or channel id is not one."""
    if not isinstance(item, Mapping):
        return None
    channel = parse.text(item.get("channelId"))
    code = parse.text(item.get("eventCode") or item.get("event"))
    ts_ms = parse.integer(item.get("timestamp"))
    if not channel or not code or ts_ms is None or ts_ms <= 0:
        return None
    try:
        channel, code = _check_channel(channel), _check_code(code)
    except ValueError:
        return None
    return _Event(
        channel=channel,
        code=code,
        ts_ms=ts_ms,
        log_level=_cut(parse.text(item.get("logLevel"))),
        description=_cut(parse.text(item.get("description"))),
    )


def parse_callback_body(raw: bytes) -> Any:
    """The JSON of a callback request body, for the web layer (instead of `request.json()`).
    Raises ValueError (a 400) for a body that is too big, not UTF-8, not JSON, or nested too
    deep to parse (a RecursionError, which would otherwise be a 500 with a traceback)."""
    if len(raw) > MAX_CALLBACK_BODY:
        raise ValueError(f"callback body larger than {MAX_CALLBACK_BODY} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("callback body is not UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("callback body is nested too deeply") from None
    except ValueError:
        raise ValueError("callback body is not JSON") from None


def parse_callback(payload: Any) -> _Event:
    """The body NAVER POSTs: `{id, logLevel, channelId, event, timestamp}`, ints or strings.
    Raises ValueError naming what is wrong."""
    if not isinstance(payload, Mapping):
        raise ValueError("callback body must be a JSON object")
    channel = payload.get("channelId")
    if not isinstance(channel, str | int) or isinstance(channel, bool) or not str(channel).strip():
        raise ValueError("callback body: channelId is missing or not a string")
    code = payload.get("event", payload.get("eventCode"))
    if not isinstance(code, str) or not code.strip():
        raise ValueError("callback body: event is missing or not a string")
    try:
        channel, code = _check_channel(str(channel)), _check_code(code)
    except ValueError as exc:
        raise ValueError(f"callback body: {exc}") from None
    raw_ts = payload.get("timestamp")
    ts_ms = parse.integer(raw_ts)
    if ts_ms is None or ts_ms <= 0:
        raise ValueError("callback body: timestamp is missing or not epoch milliseconds")
    raw_id = payload.get("id")
    callback_id = None if raw_id is None or isinstance(raw_id, dict | list | bool) else str(raw_id)
    log_level = payload.get("logLevel")
    return _Event(
        channel=channel,
        code=code,
        ts_ms=ts_ms,
        log_level=_cut(str(log_level)) if isinstance(log_level, str | int) else None,
        description=_cut(parse.text(payload.get("description"))),
        callback_id=_cut(callback_id),
    )


class _EventLedger:
    """Which events were already reported, across restarts.

    The Store's seen-event table is the dedup authority. The cursor (one JSON value) keeps the
    newest polled timestamp and the keys of the events within the late window before it, so that
    pruning of the seen-event table cannot make an event in that window count again."""

    def __init__(self, store: Any, source: str, window_ms: int):
        self._store = store
        self._source = source
        self._window_ms = window_ms
        self._loaded = False
        self.cursor_ms: int | None = None
        self._recent: dict[str, int] = {}
        self._memory_seen: set[str] = set()  # used only without a Store

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._store is None:
            return
        raw = self._store.load_cursor(self._source, CURSOR_NAME)
        if raw is None:
            return
        try:
            data = json.loads(raw)
            cursor = data.get("ts")
            self.cursor_ms = int(cursor) if cursor is not None else None
            recent = {str(k): int(v) for k, v in dict(data.get("recent") or {}).items()}
            self._recent = dict(sorted(recent.items(), key=lambda i: i[1])[-MAX_RECENT_EVENTS:])
        except (ValueError, TypeError, AttributeError):
            log.warning("event cursor unreadable, starting afresh", extra={"source": self._source})
            self.cursor_ms, self._recent = None, {}

    def admit(self, events: Iterable[_Event], now: float, *, polled: bool) -> list[_Event]:
        """Record `events`; returns those never seen before, in order. A poll also moves the
        cursor (and ignores events older than the late window before it) and saves it; a
        callback does not rewrite the cursor (the seen-event table records its event, and
        the next poll saves the cursor with it)."""
        self._load()
        events = list(events)
        now_ms = int(now * 1000)
        base = self.cursor_ms if self.cursor_ms is not None else now_ms
        # Nothing is kept stamped later than now plus NAVER's skew: one event from a clock
        # gone wrong must neither carry the cursor (persisted) past real events still to come
        # nor stay in the kept set until the clock catches up with it.
        ceiling = now_ms + int(CALLBACK_SKEW_S * 1000)
        candidates: dict[str, _Event] = {}
        for event in events:
            if polled and event.ts_ms < base - self._window_ms:
                continue
            if event.key not in self._recent:
                candidates.setdefault(event.key, event)
        fresh_keys = set(self._remember(list(candidates), now))
        for key, event in candidates.items():
            self._recent[key] = min(event.ts_ms, ceiling)
        if polled:
            self.cursor_ms = max([base, *(min(e.ts_ms, ceiling) for e in events)])
        if self.cursor_ms is not None:
            floor = self.cursor_ms - self._window_ms
            self._recent = {k: ts for k, ts in self._recent.items() if ts >= floor}
        if len(self._recent) > MAX_RECENT_EVENTS:
            newest = sorted(self._recent.items(), key=lambda item: item[1])[-MAX_RECENT_EVENTS:]
            self._recent = dict(newest)
        if polled:
            self._save()
        fresh = [event for key, event in candidates.items() if key in fresh_keys]
        return sorted(fresh, key=lambda e: e.ts_ms)

    def _remember(self, keys: list[str], now: float) -> list[str]:
        if not keys:
            return []
        if self._store is None:
            fresh = [k for k in keys if k not in self._memory_seen]
            self._memory_seen.update(fresh)
            return fresh
        return self._store.remember_events(self._source, keys, now)

    def _save(self) -> None:
        if self._store is None:
            return
        value = json.dumps({"ts": self.cursor_ms, "recent": self._recent}, sort_keys=True)
        self._store.save_cursor(self._source, CURSOR_NAME, value)


# -- the source --------------------------------------------------------------------------------


class NaverSource(Source):
    """Polls channels and events of one Live Station account, accepts its callbacks, and runs
    the channel actions (stop, remove suspension, start/stop recording)."""

    kind = "naver"

    def __init__(self, config: NaverSourceConfig, context: SourceContext):
        super().__init__(context=context, **Source.settings(config))
        self._page_size = config.page_size
        self._events_enabled = config.events
        self._callback_token = config.callback_token
        secrets = Redactor(
            config.callback_token.get_secret_value() if config.callback_token else None
        )
        self.client = LiveStationClient(
            config.url,
            config.access_key,
            config.secret_key,
            config.region,
            config.timeout,
            context.clock,
            max_body=config.max_body,
            redact=secrets,
        )
        self._ledger = _EventLedger(context.store, str(self.ref), int(EVENT_LATE_WINDOW_S * 1000))
        self._counts: dict[str, Counter[str]] = {}
        self._counted_at: dict[str, float] = {}  # when a channel's counts last moved
        self._pending: list[tuple[_Event, str]] = []  # (event, via) waiting for the next poll
        self._names: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def inherit(self, old: Source) -> None:
        # Callback events already marked seen, and the per-channel counts, must not be lost
        # (or restart) because a reload changed, say, the interval.
        if isinstance(old, NaverSource):
            self._counts, self._counted_at = old._counts, old._counted_at
            self._pending = old._pending + self._pending

    def __repr__(self) -> str:
        return f"<NaverSource {self.ref}>"

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    # -- polling -----------------------------------------------------------------------------

    async def poll(self) -> list[Entity]:
        async with self._lock:
            started = self.context.clock()
            channels = await self.client.list_channels(self._page_size)
            items = await self.client.list_events() if self._events_enabled else []
            # Everything was read: only now is anything marked seen, so a failed poll loses nothing.
            events = []
            unreadable = 0
            for item in items:
                event = _event_from_item(item)
                if event is None:
                    unreadable += 1
                else:
                    events.append(event)
            if unreadable:
                self.context.metrics.skipped(self.ref, BAD_EVENT, unreadable)
                log.debug(
                    "event list items skipped",
                    extra={"source": str(self.ref), "count": unreadable},
                )
            fresh = self._ledger.admit(events, self.context.clock(), polled=True)
            self._take(fresh, "poll")
            self._forget_counts(channels, started)
            for channel in channels:
                name = parse.text(channel.get("channelName"))
                if name is not None:
                    self._names[str(channel["channelId"])] = name
            entities = [self._channel_entity(channel) for channel in channels]
            pending, self._pending = self._pending, []
            entities.extend(self._event_entity(event, via) for event, via in pending)
            return entities

    def _take(self, events: Iterable[_Event], via: str, *, hold: bool = True) -> int:
        count = 0
        now = self.context.clock()
        for event in events:
            self._counts.setdefault(event.channel, Counter())[counted_code(event.code)] += 1
            self._counted_at[event.channel] = now
            if hold:
                self._pending.append((event, via))
            count += 1
        return count

    def _forget_counts(self, channels: Iterable[Mapping[str, Any]], started: float) -> None:
        """Drop the counts of channels the channel list no longer has (deleted, or never
        real: a callback may name any channel id), unless they moved since this poll began
        (a channel created meanwhile)."""
        listed = {str(channel["channelId"]) for channel in channels}
        for channel in [c for c in self._counts if c not in listed]:
            if self._counted_at.get(channel, 0.0) < started:
                del self._counts[channel]
                self._counted_at.pop(channel, None)

    def _channel_entity(self, item: Mapping[str, Any]) -> Entity:
        channel_id = str(item["channelId"])
        cdn = item.get("cdn") if isinstance(item.get("cdn"), dict) else {}
        record = item.get("record") if isinstance(item.get("record"), dict) else {}
        use_dvr = item.get("useDVR", item.get("useDvr"))
        raw_status = item.get("channelStatus")
        return Entity(
            KIND_CHANNEL,
            {"channel": channel_id},
            {
                "channel_name": parse.text(item.get("channelName")) or "",
                "status": normalise_status(raw_status),
                "status_raw": "" if raw_status is None else str(raw_status),
                "is_recording": bool(parse.flag(item.get("isRecording"))),
                "cdn_status": parse.text(cdn.get("statusName")),
                "cdn_type": parse.text(cdn.get("cdnType")),
                "recent_publish_start_time": _ms_to_seconds(item.get("recentPublishStartTime")),
                "total_publish_seconds": parse.number(item.get("totalPublishSeconds")),
                "created_time": _ms_to_seconds(item.get("createdTime")),
                "output_protocol": parse.text(item.get("outputProtocol")),
                "use_dvr": parse.flag(use_dvr),
                "record_type": parse.text(record.get("type")),
                "events": dict.fromkeys(COUNTED_CODES, 0) | dict(self._counts.get(channel_id, {})),
            },
        )

    def _event_entity(self, event: _Event, via: str) -> Entity:
        return Entity(
            KIND_EVENT,
            {"channel": event.channel, "event": event.code, "event_id": event.key},
            {
                "log_level": event.log_level,
                "description": event.description,
                "timestamp": event.ts_ms / 1000.0,
                "via": via,
                "channel_name": self._names.get(event.channel),
                "callback_id": event.callback_id,
            },
        )

    # -- callbacks ---------------------------------------------------------------------------

    def check_callback_token(self, token: str) -> bool:
        """Constant-time comparison with the configured token; False when none is configured."""
        if self._callback_token is None or not isinstance(token, str):
            return False
        expected = self._callback_token.get_secret_value()
        if not expected:
            return False
        return hmac.compare_digest(token.encode(), expected.encode())

    def accept_callback_body(self, raw: bytes) -> int:
        """`accept_callback` of a raw request body, parsed within the callback's bounds."""
        return self.accept_callback(parse_callback_body(raw))

    def accept_callback(self, payload: Mapping[str, Any]) -> int:
        """Take one callback body; returns how many events were new (0 or 1). The new event
        is pushed to the rules at once (or, without a push hook, reported by the next poll).
        Raises ValueError for a malformed body: a code or channel id that is not one, or a
        timestamp later than now plus NAVER's skew."""
        event = parse_callback(payload)
        now = self.context.clock()
        if event.ts_ms > (now + CALLBACK_SKEW_S) * 1000:
            raise ValueError(
                f"callback body: timestamp is more than {CALLBACK_SKEW_S:g}s in the future"
            )
        fresh = self._ledger.admit([event], now, polled=False)
        push = getattr(self.context, "push", None)
        # With a push hook the event reaches the rules now, even while polls fail; without
        # one it waits for the next poll.
        count = self._take(fresh, "callback", hold=not callable(push))
        if count and callable(push):
            push(self.ref, [self._event_entity(e, "callback") for e in fresh])
        if count:
            log.info(
                "callback event accepted",
                extra={"source": str(self.ref), "channel": event.channel, "event": event.code},
            )
            refresh = getattr(self.context, "request_refresh", None)
            if callable(refresh):
                refresh(self.ref)
        return count

    # -- actions -----------------------------------------------------------------------------

    async def get_channel(self, channel_id: str) -> Entity | None:
        item = await self.client.channel(channel_id)
        return self._channel_entity(item) if item else None

    async def stop_channel(self, channel_id: str) -> Entity | None:
        """PUT .../off (allowed from READY or PUBLISHING; cuts a running broadcast)."""
        return await self._action(channel_id, "off")

    async def remove_suspension(self, channel_id: str) -> Entity | None:
        """PUT .../on: a stopped channel goes back to READY."""
        return await self._action(channel_id, "on")

    async def restart_channel(self, channel_id: str) -> Entity | None:
        """Stop, then remove the suspension: the channel ends READY, waiting for ingest."""
        await self.stop_channel(channel_id)
        return await self.remove_suspension(channel_id)

    async def start_recording(self, channel_id: str) -> Entity | None:
        """PUT .../startRecord (only while PUBLISHING)."""
        return await self._action(channel_id, "startRecord")

    async def stop_recording(self, channel_id: str) -> Entity | None:
        """PUT .../stopRecord. Its answer is a record list, not a channel: returns None."""
        return await self._action(channel_id, "stopRecord")

    async def _action(self, channel_id: str, action: str) -> Entity | None:
        item = await self.client.channel_action(channel_id, action)
        log.info(
            "channel action done",
            extra={"source": str(self.ref), "channel": channel_id, "action": action},
        )
        return self._channel_entity(item) if item else None
