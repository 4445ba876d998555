"""SQLite state in `state_dir`: the one module that owns the connection, the schema and the SQL.

Other modules call verbs named by intent (save a cursor, remember an event, record an alert).
Writes are a few small rows per poll, so they run on the event loop with WAL and
`synchronous=NORMAL`; nothing here is on the scrape path.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_NAME = "streamwatch.sqlite3"

# Each entry moves the schema one version up; `PRAGMA user_version` says how far a file is.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE cursor (
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (source, name)
    );
    CREATE TABLE seen_event (
        source TEXT NOT NULL,
        event_key TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (source, event_key)
    );
    CREATE INDEX seen_event_age ON seen_event (seen_at);
    """,
    """
    CREATE TABLE alert (
        rule TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        active_at REAL,
        fired_at REAL,
        resolved_at REAL,
        last_sent_at REAL,
        keep_firing_since REAL,
        value TEXT,
        PRIMARY KEY (rule, fingerprint)
    );
    CREATE TABLE silence (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
)


@dataclass(frozen=True)
class StoredAlert:
    rule: str
    fingerprint: str
    source: str
    state: str
    labels: dict[str, str]
    annotations: dict[str, str]
    active_at: float | None
    fired_at: float | None
    resolved_at: float | None
    last_sent_at: float | None
    keep_firing_since: float | None
    value: str | None


@dataclass(frozen=True)
class StoredSilence:
    id: str
    matchers: list[dict[str, Any]]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    @classmethod
    def in_dir(cls, state_dir: Path) -> Store:
        return cls(Path(state_dir) / DB_NAME)

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path}: state schema version {version} is newer than this streamwatch "
                f"knows ({len(MIGRATIONS)}); refusing to touch it"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction():
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    def _transaction(self) -> sqlite3.Connection:
        # isolation_level=None leaves transactions to us; `with conn:` commits or rolls back.
        self._db.execute("BEGIN")
        return _Commit(self._db)  # type: ignore[return-value]

    def close(self) -> None:
        self._db.close()

    # -- event cursors and dedup -------------------------------------------------------------

    def load_cursor(self, source: str, name: str) -> str | None:
        row = self._db.execute(
            "SELECT value FROM cursor WHERE source = ? AND name = ?", (source, name)
        ).fetchone()
        return row[0] if row else None

    def save_cursor(self, source: str, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO cursor (source, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (source, name) DO UPDATE SET value = excluded.value",
            (source, name, value),
        )

    def remember_events(self, source: str, keys: Iterable[str], seen_at: float) -> list[str]:
        """Record event keys; returns those not seen before, in the order given."""
        fresh: list[str] = []
        with self._transaction():
            for key in keys:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO seen_event (source, event_key, seen_at) VALUES (?, ?, ?)",
                    (source, key, seen_at),
                )
                if cursor.rowcount:
                    fresh.append(key)
        return fresh

    def forget_events_before(self, seen_before: float) -> int:
        return self._db.execute("DELETE FROM seen_event WHERE seen_at < ?", (seen_before,)).rowcount

    # -- alerts -------------------------------------------------------------------------------

    def save_alerts(
        self, alerts: Iterable[StoredAlert], removed: Iterable[tuple[str, str]]
    ) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO alert (rule, fingerprint, source, state, labels, "
                "annotations, active_at, fired_at, resolved_at, last_sent_at, keep_firing_since, "
                "value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        a.rule,
                        a.fingerprint,
                        a.source,
                        a.state,
                        json.dumps(a.labels, sort_keys=True),
                        json.dumps(a.annotations, sort_keys=True),
                        a.active_at,
                        a.fired_at,
                        a.resolved_at,
                        a.last_sent_at,
                        a.keep_firing_since,
                        a.value,
                    )
                    for a in alerts
                ],
            )
            self._db.executemany(
                "DELETE FROM alert WHERE rule = ? AND fingerprint = ?", list(removed)
            )

    def load_alerts(self) -> list[StoredAlert]:
        rows = self._db.execute(
            "SELECT rule, fingerprint, source, state, labels, annotations, active_at, fired_at, "
            "resolved_at, last_sent_at, keep_firing_since, value FROM alert"
        ).fetchall()
        return [
            StoredAlert(
                rule=row[0],
                fingerprint=row[1],
                source=row[2],
                state=row[3],
                labels=json.loads(row[4]),
                annotations=json.loads(row[5]),
                active_at=row[6],
                fired_at=row[7],
                resolved_at=row[8],
                last_sent_at=row[9],
                keep_firing_since=row[10],
                value=row[11],
            )
            for row in rows
        ]

    # -- silences -----------------------------------------------------------------------------

    def save_silence(self, silence: StoredSilence) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO silence (id, matchers, starts_at, ends_at, created_by, "
            "comment, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                silence.id,
                json.dumps(silence.matchers),
                silence.starts_at,
                silence.ends_at,
                silence.created_by,
                silence.comment,
                silence.updated_at,
            ),
        )

    def load_silences(self) -> list[StoredSilence]:
        rows = self._db.execute(
            "SELECT id, matchers, starts_at, ends_at, created_by, comment, updated_at FROM silence"
        ).fetchall()
        return [
            StoredSilence(row[0], json.loads(row[1]), row[2], row[3], row[4], row[5], row[6])
            for row in rows
        ]

    def delete_silences_ended_before(self, ended_before: float) -> int:
        return self._db.execute("DELETE FROM silence WHERE ends_at < ?", (ended_before,)).rowcount


class _Commit:
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
