"""Silences and maintenance windows: both answer "is this label set muted now?".

As in Alertmanager, a silence is an immutable record of matchers plus start and end; its
state (pending, active, expired) is computed from the clock, never stored, and expiring one
moves its end to now instead of deleting it. Maintenance windows come from the config: a cron
schedule plus a duration, or a fixed start and end.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from monitor.labels import Matcher, matches_all
from monitor.store import Store, StoredSilence

EXPIRED_RETENTION = 5 * 86400.0  # expired silences stay listed this long, as in Alertmanager


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
                self._silences[stored.id] = Silence(
                    stored.id,
                    tuple(Matcher.from_api(m) for m in stored.matchers),
                    stored.starts_at,
                    stored.ends_at,
                    stored.created_by,
                    stored.comment,
                    stored.updated_at,
                )
        self._window_cache: tuple[float, tuple[MaintenanceWindow, ...]] | None = None

    def set_windows(self, windows: Sequence[MaintenanceWindow]) -> None:
        self.windows = tuple(windows)
        self._window_cache = None

    def _active_windows(self, now: float) -> tuple[MaintenanceWindow, ...]:
        # Cron arithmetic is slow next to a label match; one answer per second is plenty.
        second = float(int(now))
        if self._window_cache is None or self._window_cache[0] != second:
            self._window_cache = (second, tuple(w for w in self.windows if w.active(now)))
        return self._window_cache[1]

    def mutes(self, labels: Mapping[str, str], now: float) -> list[str]:
        """IDs of the silences and names of the windows muting `labels` at `now`."""
        muted = [
            s.id
            for s in self._silences.values()
            if s.starts_at <= now < s.ends_at and matches_all(s.matchers, labels)
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
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if ends_at <= starts_at:
            raise ValueError("endsAt must be after startsAt")
        if ends_at <= now:
            raise ValueError("endsAt is in the past")
        if silence_id is not None:
            old = self._silences.get(silence_id)
            if old is None:
                raise KeyError(silence_id)
            if old.state(now) == "expired":
                raise ValueError("an expired silence cannot be changed; create a new one")
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
        return silence

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
        if self._store is not None:
            self._store.delete_silences_ended_before(cutoff)
        return len(old)

    def get(self, silence_id: str) -> Silence | None:
        return self._silences.get(silence_id)

    def _save(self, silence: Silence) -> None:
        self._silences[silence.id] = silence
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


def _iso(ts: float) -> str:
    # Milliseconds, like every other timestamp of the HTTP API.
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    return parsed.timestamp()
