"""Silences and maintenance windows: both answer "is this label set muted now?".

As in Alertmanager, a silence is an immutable record of matchers plus start and end; its
state (pending, active, expired) is computed from the clock, never stored, and expiring one
moves its end to now instead of deleting it. Maintenance windows come from the config: a cron
schedule plus a duration, or a fixed start and end.

A silence from the API is validated as Alertmanager does, and bounded: at least one matcher
must not match the empty string (else it would mute everything); at most MAX_MATCHERS matchers;
createdBy and comment are non-empty strings of at most MAX_TEXT characters; startsAt and endsAt
lie between EARLIEST (2000-01-01) and MAX_AHEAD (100 years) from now; at most
MAX_ACTIVE_SILENCES are active or pending at once, and at most MAX_SILENCES are kept (the oldest
expired ones are forgotten first). Each is a ValueError (TypeError for a wrong type) whose
message says the rule, which the API returns as a 400.

`mutes` reads an index of the silences that are active or pending, refreshed when one is saved
and when the earliest end in it passes, so expired silences cost a mute check nothing.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from monitor.labels import Matcher, matches_all
from monitor.store import Store, StoredSilence

log = logging.getLogger(__name__)

EXPIRED_RETENTION = 5 * 86400.0  # expired silences stay listed this long, as in Alertmanager
MAX_ACTIVE_SILENCES = 1000  # active and pending at once
MAX_SILENCES = 10_000  # kept in all, expired ones included
MAX_MATCHERS = 100  # per silence
MAX_TEXT = 1000  # characters of createdBy and of comment
EARLIEST = 946_684_800.0  # 2000-01-01T00:00:00Z: no silence starts or ends before
MAX_AHEAD = 100 * 365.25 * 86400  # nor more than 100 years after now


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float

    def state(self, now: float) -> str:
        if now >= self.ends_at:
            return "expired"
        if now < self.starts_at:
            return "pending"
        return "active"

    def to_api(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [m.to_api() for m in self.matchers],
            "startsAt": _iso(self.starts_at),
            "endsAt": _iso(self.ends_at),
            "updatedAt": _iso(self.updated_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            "status": {"state": self.state(now)},
        }


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring (cron + duration) or one-off (start, end) window from the config."""

    name: str
    matchers: tuple[Matcher, ...]
    trigger: CronTrigger | None = None
    duration: float = 0.0
    starts_at: float | None = None
    ends_at: float | None = None

    @classmethod
    def cron(
        cls,
        name: str,
        matchers: Sequence[Matcher],
        schedule: str,
        duration: float,
        timezone: str = "UTC",
    ) -> MaintenanceWindow:
        trigger = CronTrigger.from_crontab(schedule, timezone=ZoneInfo(timezone))
        return cls(name, tuple(matchers), trigger=trigger, duration=duration)

    def active(self, now: float) -> bool:
        if self.trigger is None:
            return (
                self.starts_at is not None
                and self.ends_at is not None
                and self.starts_at <= now < self.ends_at
            )
        # Inside a window iff some scheduled start lies in (now - duration, now]; the
        # microsecond keeps the window half-open, so it ends exactly `duration` after it opens.
        window_open = datetime.fromtimestamp(now - self.duration + 1e-6, UTC)
        start = self.trigger.get_next_fire_time(None, window_open)
        return start is not None and start.timestamp() <= now


class Silencer:
    """Holds API silences (persisted in the store) and config windows; answers `mutes`."""

    def __init__(self, store: Store | None, windows: Sequence[MaintenanceWindow] = ()):
        self._store = store
        self.windows = tuple(windows)
        self._silences: dict[str, Silence] = {}
        if store is not None:
            for stored in store.load_silences():
                try:
                    silence = Silence(
                        stored.id,
                        tuple(Matcher.from_api(m) for m in stored.matchers),
                        float(stored.starts_at),
                        float(stored.ends_at),
                        str(stored.created_by),
                        str(stored.comment),
                        float(stored.updated_at),
                    )
                except (TypeError, ValueError) as exc:  # written by an older, laxer version
                    log.warning(
                        "stored silence ignored", extra={"silence_id": stored.id, "error": str(exc)}
                    )
                    continue
                self._silences[stored.id] = silence
        self._window_cache: tuple[float, tuple[MaintenanceWindow, ...]] | None = None
        # The index `mutes` reads: silences whose end was after `_live_at`, and the earliest
        # of their ends (when it passes, the index drops what ended).
        self._live: dict[str, Silence] = {}
        self._live_at = -math.inf
        self._live_next_end = math.inf
        self._rebuild(self._silences.values(), -math.inf)

    def set_windows(self, windows: Sequence[MaintenanceWindow]) -> None:
        self.windows = tuple(windows)
        self._window_cache = None

    def _active_windows(self, now: float) -> tuple[MaintenanceWindow, ...]:
        # Cron arithmetic is slow next to a label match; one answer per second is plenty.
        second = float(int(now))
        if self._window_cache is None or self._window_cache[0] != second:
            self._window_cache = (second, tuple(w for w in self.windows if w.active(now)))
        return self._window_cache[1]

    def live(self, now: float) -> list[Silence]:
        """The silences a mute check at `now` looks at: those active or pending (from the index,
        without scanning expired ones)."""
        return list(self._live_silences(now))

    def _live_silences(self, now: float) -> Collection[Silence]:
        if now < self._live_at:  # the clock went back: what ended may be live again
            self._rebuild(self._silences.values(), now)
        elif now >= self._live_next_end:
            self._rebuild(self._live.values(), now)
        self._live_at = now
        return self._live.values()

    def _rebuild(self, silences: Iterable[Silence], now: float) -> None:
        self._live = {s.id: s for s in silences if s.ends_at > now}
        self._live_next_end = min((s.ends_at for s in self._live.values()), default=math.inf)

    def mutes(self, labels: Mapping[str, str], now: float) -> list[str]:
        """IDs of the silences and names of the windows muting `labels` at `now`."""
        muted = [
            s.id
            for s in self._live_silences(now)
            if s.starts_at <= now and matches_all(s.matchers, labels)
        ]
        muted += [
            f"window:{w.name}" for w in self._active_windows(now) if matches_all(w.matchers, labels)
        ]
        return muted

    def create(
        self,
        matchers: Sequence[Matcher],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        now: float,
        silence_id: str | None = None,
    ) -> Silence:
        if silence_id is not None and not isinstance(silence_id, str):
            raise TypeError("id must be a string")
        _check_text("createdBy", created_by)
        _check_text("comment", comment)
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if len(matchers) > MAX_MATCHERS:
            raise ValueError(f"a silence has at most {MAX_MATCHERS} matchers (MAX_MATCHERS)")
        if all(m.matches_empty() for m in matchers):
            raise ValueError(
                "at least one matcher must not match the empty string "
                f"({', '.join(map(str, matchers))} would silence every alert)"
            )
        _check_time("startsAt", starts_at, now)
        _check_time("endsAt", ends_at, now)
        if ends_at <= starts_at:
            raise ValueError("endsAt must be after startsAt")
        if ends_at <= now:
            raise ValueError("endsAt is in the past")
        live = self._live_silences(now)
        if silence_id is not None:
            old = self._silences.get(silence_id)
            if old is None:
                raise KeyError(silence_id)
            if old.state(now) == "expired":
                raise ValueError("an expired silence cannot be changed; create a new one")
        elif len(live) >= MAX_ACTIVE_SILENCES:
            raise ValueError(
                f"{MAX_ACTIVE_SILENCES} silences are already active or pending "
                "(MAX_ACTIVE_SILENCES); expire some first"
            )
        silence = Silence(
            silence_id or str(uuid.uuid4()),
            tuple(matchers),
            max(starts_at, now) if silence_id is None else starts_at,
            ends_at,
            created_by,
            comment,
            now,
        )
        self._save(silence)
        self._forget_oldest(now)
        return silence

    def _forget_oldest(self, now: float) -> None:
        """Keep at most MAX_SILENCES: the expired ones that ended first go before their time."""
        excess = len(self._silences) - MAX_SILENCES
        if excess <= 0:
            return
        ended = sorted(s.ends_at for s in self._silences.values() if s.ends_at <= now)
        if not ended:
            return
        cutoff = ended[min(excess, len(ended)) - 1]
        for sid in [sid for sid, s in self._silences.items() if s.ends_at <= cutoff]:
            del self._silences[sid]
            self._live.pop(sid, None)
        if self._store is not None:
            self._store.delete_silences_ended_before(math.nextafter(cutoff, math.inf))

    def expire(self, silence_id: str, now: float) -> Silence:
        silence = self._silences.get(silence_id)
        if silence is None:
            raise KeyError(silence_id)
        if silence.state(now) == "expired":
            return silence
        expired = replace(
            silence, ends_at=now, starts_at=min(silence.starts_at, now), updated_at=now
        )
        self._save(expired)
        return expired

    def list(self, now: float) -> list[Silence]:
        return sorted(
            (s for s in self._silences.values() if s.ends_at > now - EXPIRED_RETENTION),
            key=lambda s: (s.state(now) != "active", s.starts_at),
        )

    def prune(self, now: float) -> int:
        """Forget silences that expired longer than EXPIRED_RETENTION ago (they no longer show
        in the list either); keeps `mutes` and the table from growing forever."""
        cutoff = now - EXPIRED_RETENTION
        old = [sid for sid, s in self._silences.items() if s.ends_at < cutoff]
        for sid in old:
            del self._silences[sid]
            self._live.pop(sid, None)
        if self._store is not None:
            self._store.delete_silences_ended_before(cutoff)
        return len(old)

    def get(self, silence_id: str) -> Silence | None:
        return self._silences.get(silence_id)

    def _save(self, silence: Silence) -> None:
        self._silences[silence.id] = silence
        self._live.pop(silence.id, None)
        if silence.ends_at > self._live_at:
            self._live[silence.id] = silence
            self._live_next_end = min(self._live_next_end, silence.ends_at)
        if self._store is not None:
            self._store.save_silence(
                StoredSilence(
                    silence.id,
                    [m.to_api() for m in silence.matchers],
                    silence.starts_at,
                    silence.ends_at,
                    silence.created_by,
                    silence.comment,
                    silence.updated_at,
                )
            )


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    if not value.strip():
        raise ValueError(f"{name} is required")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{name} is longer than {MAX_TEXT} characters")


def _check_time(name: str, ts: Any, now: float) -> None:
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise TypeError(f"{name} must be a time")
    if ts < EARLIEST:
        raise ValueError(f"{name} {_iso(ts)} is before 2000-01-01")
    if ts > now + MAX_AHEAD:
        raise ValueError(f"{name} {_iso(ts)} is more than 100 years ahead")


def _iso(ts: float) -> str:
    # Milliseconds, like every other timestamp of the HTTP API. Never raises: a time outside
    # what datetime holds (a silence saved before times were checked) is written at the edge.
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        moment = datetime.min.replace(tzinfo=UTC) if ts < 0 else datetime.max.replace(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> float:
    """RFC 3339 from the API (`2026-11-25T17:00:00Z`) → epoch seconds."""
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid timestamp {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} needs a time zone (e.g. Z)")
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError):
        raise ValueError(f"timestamp {value!r} is out of range") from None
