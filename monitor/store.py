"""SQLite state in `state_dir`: the one module that owns the connection, the schema and the SQL.

Other modules call verbs named by intent (save a cursor, remember an event, record alerts and
their transitions, read and acknowledge the outbox). Writes are a few small rows per poll, so
they run on the event loop with WAL and `synchronous=NORMAL`; nothing here is on the scrape path.

The outbox is the saved transition stream. The engine appends a transition in the same
transaction that saves the alert's new state; each consumer (a notifier, the action runner)
reads what it has not acknowledged, at its own pace, and acknowledges an entry only after it has
handled it. A consumer's position is a floor (every id at or below it is done) plus the done
ids above it, so consumers may finish entries out of order.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
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
    """
    ALTER TABLE alert ADD COLUMN target TEXT;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        rule TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX outbox_at ON outbox (at);
    CREATE TABLE outbox_consumer (
        name TEXT PRIMARY KEY,
        floor INTEGER NOT NULL,
        registered_at REAL NOT NULL
    );
    CREATE TABLE outbox_done (
        consumer TEXT NOT NULL,
        id INTEGER NOT NULL,
        done_at REAL NOT NULL,
        PRIMARY KEY (consumer, id)
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
    target: dict[str, Any] | None = None  # Target.to_json(); None in rows from before v3


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    body: str  # the transition as JSON (Transition.to_json)


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
        """Open (or create) the state database. Raises StateError, naming the file and what
        to do, when it cannot be used: a state_dir that is a file or not writable, an empty,
        corrupt, foreign or too new state file."""
        self.path = Path(path)
        if str(path) != ":memory:":
            _prepare(self.path)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(self.path, f"cannot open: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            _verify(self._db, self.path)
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(self.path, _describe_sqlite(exc)) from None
        except StateError:
            self._db.close()
            raise

    @staticmethod
    def check(state_dir: Path) -> list[str]:
        """What would stop the daemon from using `state_dir`, without changing anything: for
        `streamwatch check`, which the systemd unit runs before every start."""
        state_dir = Path(state_dir)
        path = state_dir / DB_NAME
        if state_dir.exists() and not state_dir.is_dir():
            return [f"state_dir {state_dir} exists and is not a directory"]
        existing = next((p for p in (state_dir, *state_dir.parents) if p.exists()), None)
        if existing is None or not os.access(existing, os.W_OK | os.X_OK):
            return [f"state_dir {state_dir}: not writable by this user ({existing})"]
        if not path.exists():
            return []
        if path.stat().st_size == 0:
            return [str(StateError(path, _EMPTY))]
        try:
            # immutable: a read that creates no -wal/-shm files beside a stopped daemon's state.
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error as exc:
            return [str(StateError(path, f"cannot open: {exc}"))]
        try:
            _verify(db, path)
        except StateError as exc:
            return [str(exc)]
        except sqlite3.Error as exc:
            return [str(StateError(path, _describe_sqlite(exc)))]
        finally:
            db.close()
        return []

    def limit_size(self, max_bytes: int | None) -> None:
        """Cap the database at about `max_bytes` (None: no cap). A write past it fails as on a
        full disk ("database or disk is full"), which is how the tests fill the disk."""
        (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        pages = 4_294_967_294 if max_bytes is None else max(1, max_bytes // page_size)
        self._db.execute(f"PRAGMA max_page_count = {int(pages)}")

    def size_bytes(self) -> int:
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        return int(pages * page_size)

    @staticmethod
    def copy(state_dir: Path, into: Path) -> None:
        """Copy the state database of `state_dir` into the directory `into`, reading the
        original read-only (a running daemon may be writing it; SQLite's backup is consistent).
        Nothing is copied when there is no state yet."""
        source = Path(state_dir) / DB_NAME
        if not source.exists():
            return
        problems = Store.check(Path(state_dir))
        if problems:
            raise StateError(source, problems[0].split(": ", 1)[-1])
        original = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(str(Path(into) / DB_NAME))
            try:
                original.backup(target)
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise StateError(source, _describe_sqlite(exc)) from None
        finally:
            original.close()

    @classmethod
    def in_dir(cls, state_dir: Path) -> Store:
        return cls(Path(state_dir) / DB_NAME)

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction: committed at the end of the block, rolled back if it raises.
        Inside an open transaction it joins it, so a consumer can record its own rows and its
        acknowledgement atomically."""
        if self._db.in_transaction:
            yield
            return
        # isolation_level=None leaves transactions to us.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # SQLite has already rolled back after some errors (SQLITE_FULL, SQLITE_IOERR).
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # -- components' own tables ---------------------------------------------------------------

    def migrate_part(self, part: str, migrations: Sequence[str]) -> None:
        """A component's own tables (the notification log, the action audit), versioned apart
        from the core schema as the core is with PRAGMA user_version: each entry moves `part`
        one version up. A part newer than this streamwatch knows is refused."""
        with self.transaction():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_part (name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = self._db.execute(
                "SELECT version FROM schema_part WHERE name = ?", (part,)
            ).fetchone()
            version = row[0] if row else 0
            if version > len(migrations):
                raise StateError(
                    self.path,
                    f"the {part} tables are at version {version}, newer than this streamwatch "
                    f"knows ({len(migrations)}); {_MOVE_AWAY}",
                )
            for number, script in enumerate(migrations[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO schema_part (name, version) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                    (part, number),
                )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """For a component's own tables: one statement; returns the rows it changed."""
        return self._db.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """For a component's own tables: the rows of one query."""
        return self._db.execute(sql, params).fetchall()

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
        with self.transaction():
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
        self,
        alerts: Iterable[StoredAlert],
        removed: Iterable[tuple[str, str]],
        transitions: Iterable[tuple[float, str, str, str, str]] = (),
    ) -> list[int]:
        """Alert states and the transitions that led to them, in one transaction: either both
        are saved or neither. `transitions` are (at, kind, rule, fingerprint, body); returns
        their outbox ids, in order."""
        ids: list[int] = []
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO alert (rule, fingerprint, source, state, labels, "
                "annotations, active_at, fired_at, resolved_at, last_sent_at, keep_firing_since, "
                "value, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        None if a.target is None else json.dumps(a.target, sort_keys=True),
                    )
                    for a in alerts
                ],
            )
            self._db.executemany(
                "DELETE FROM alert WHERE rule = ? AND fingerprint = ?", list(removed)
            )
            for row in transitions:
                cursor = self._db.execute(
                    "INSERT INTO outbox (at, kind, rule, fingerprint, body) VALUES (?, ?, ?, ?, ?)",
                    row,
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def load_alerts(self) -> list[StoredAlert]:
        rows = self._db.execute(
            "SELECT rule, fingerprint, source, state, labels, annotations, active_at, fired_at, "
            "resolved_at, last_sent_at, keep_firing_since, value, target FROM alert"
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
                target=json.loads(row[12]) if row[12] else None,
            )
            for row in rows
        ]

    # -- the outbox ---------------------------------------------------------------------------

    def register_consumer(self, consumer: str, now: float) -> bool:
        """Make `consumer` known. A new consumer starts after the newest entry: it hears of
        what happens from now on, not the whole history. Returns True when it was new."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox_consumer (name, floor, registered_at) "
                "VALUES (?, (SELECT COALESCE(MAX(id), 0) FROM outbox), ?)",
                (consumer, now),
            )
        return bool(cursor.rowcount)

    def consumers(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM outbox_consumer ORDER BY 1")]

    def outbox_pending(self, consumer: str, limit: int = 100) -> list[OutboxEntry]:
        """Entries `consumer` has not acknowledged, oldest first."""
        rows = self._db.execute(
            "SELECT o.id, o.body FROM outbox o, outbox_consumer c "
            "WHERE c.name = ? AND o.id > c.floor AND NOT EXISTS "
            "(SELECT 1 FROM outbox_done d WHERE d.consumer = c.name AND d.id = o.id) "
            "ORDER BY o.id LIMIT ?",
            (consumer, limit),
        ).fetchall()
        return [OutboxEntry(row[0], row[1]) for row in rows]

    def outbox_depth(self) -> dict[str, int]:
        """Unacknowledged entries per consumer."""
        rows = self._db.execute(
            "SELECT c.name, (SELECT COUNT(*) FROM outbox o WHERE o.id > c.floor AND NOT EXISTS "
            "(SELECT 1 FROM outbox_done d WHERE d.consumer = c.name AND d.id = o.id)) "
            "FROM outbox_consumer c"
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def outbox_ack(self, consumer: str, ids: Iterable[int], now: float) -> None:
        """`consumer` has handled these entries; they are never handed to it again. Joins an
        open transaction, so a consumer can save its own effect with the acknowledgement."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox_done (consumer, id, done_at) VALUES (?, ?, ?)",
                [(consumer, id, now) for id in ids],
            )
            # Move the floor up over every entry now done without a gap, and forget those marks.
            (floor,) = self._db.execute(
                "SELECT COALESCE((SELECT MIN(o.id) - 1 FROM outbox o, outbox_consumer c "
                "WHERE c.name = ?1 AND o.id > c.floor AND NOT EXISTS (SELECT 1 FROM outbox_done d "
                "WHERE d.consumer = ?1 AND d.id = o.id)), (SELECT COALESCE(MAX(id), 0) FROM outbox))",
                (consumer,),
            ).fetchone()
            self._db.execute(
                "UPDATE outbox_consumer SET floor = MAX(floor, ?) WHERE name = ?", (floor, consumer)
            )
            self._db.execute(
                "DELETE FROM outbox_done WHERE consumer = ? AND id <= ?", (consumer, floor)
            )

    def outbox_entries(self, after_id: int = 0, limit: int = 1000) -> list[OutboxEntry]:
        """The saved transitions, oldest first (what `GET /api/v1/transitions` lists)."""
        rows = self._db.execute(
            "SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        ).fetchall()
        return [OutboxEntry(row[0], row[1]) for row in rows]

    def prune_outbox(self, before: float, keep_consumers: Iterable[str]) -> int:
        """Forget entries older than `before` that every consumer in `keep_consumers` has
        done; consumers not in it (no longer configured) are dropped with their marks."""
        keep = list(keep_consumers)
        marks = ",".join("?" * len(keep))
        with self.transaction():
            self._db.execute(f"DELETE FROM outbox_consumer WHERE name NOT IN ({marks})", keep)
            self._db.execute(f"DELETE FROM outbox_done WHERE consumer NOT IN ({marks})", keep)
            (floor,) = self._db.execute(
                "SELECT COALESCE(MIN(floor), (SELECT COALESCE(MAX(id), 0) FROM outbox)) "
                "FROM outbox_consumer"
            ).fetchone()
            return self._db.execute(
                "DELETE FROM outbox WHERE id <= ? AND at < ?", (floor, before)
            ).rowcount

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


class StateError(Exception):
    """The state database cannot be used; the message names the file and the way out."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"state file {path}: {problem}")
        self.path = path


_EMPTY = (
    "is empty (0 bytes), so its alerts, silences and event cursors are lost (a full disk?); "
    "move it away to start with empty state"
)
_MOVE_AWAY = "move it away to start with empty state, or restore it from a backup"


def _prepare(path: Path) -> None:
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StateError(path, f"state_dir {directory} exists and is not a directory") from None
    except OSError as exc:
        raise StateError(path, f"cannot create state_dir {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateError(path, f"state_dir {directory} is not writable by this user")
    if path.exists() and path.stat().st_size == 0:
        raise StateError(path, _EMPTY)


def _verify(db: sqlite3.Connection, path: Path) -> None:
    """Ours, readable and not from a newer streamwatch; raises StateError otherwise."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StateError(
            path,
            f"schema version {version} is newer than this streamwatch knows "
            f"({len(MIGRATIONS)}); run the newer streamwatch, or {_MOVE_AWAY}",
        )
    if version == 0:
        tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
        if tables[0]:
            raise StateError(path, f"is an SQLite database of something else; {_MOVE_AWAY}")
    (verdict,) = db.execute("PRAGMA quick_check").fetchone()
    if verdict != "ok":
        raise StateError(path, f"is damaged ({verdict}); {_MOVE_AWAY}")


def _describe_sqlite(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"is not a readable SQLite database ({text}); {_MOVE_AWAY}"
    if "readonly" in text or "unable to open" in text:
        return f"cannot be written ({text}); check the permissions of the file and state_dir"
    return text
