"""The actions' own tables, and every statement over them: the audit trail of attempts (which
is also the guard's memory: cooldown, budget and backoff are counted from it), the saved jobs
(a rule's actions, delayed ones included), targets' health, HLS dumps and exhausted budgets.

Everything the guard decides from is in SQLite, so a restart (even `kill -9`) forgets no
budget, and an attempt is saved as `started` before its first upstream call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.model import Target
from monitor.store import Store

PART = "actions"
MIGRATIONS = [
    """
    CREATE TABLE actions_attempt (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at REAL NOT NULL,
        finished_at REAL,
        action TEXT NOT NULL,
        kind TEXT NOT NULL,
        target_key TEXT NOT NULL,
        target TEXT NOT NULL,
        params TEXT NOT NULL,
        fingerprint TEXT,
        alertname TEXT,
        job_id INTEGER,
        requested_by TEXT NOT NULL,
        state TEXT NOT NULL,
        executed INTEGER NOT NULL,
        result TEXT,
        detail TEXT,
        error TEXT,
        calls TEXT NOT NULL DEFAULT '[]',
        duration REAL
    );
    CREATE INDEX actions_attempt_guard ON actions_attempt (action, target_key, executed, started_at);
    CREATE INDEX actions_attempt_state ON actions_attempt (state);
    CREATE TABLE actions_job (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        transition_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        rule TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        alertname TEXT NOT NULL,
        action TEXT NOT NULL,
        params TEXT NOT NULL,
        target TEXT NOT NULL,
        labels TEXT NOT NULL,
        dry_run INTEGER,
        silenced INTEGER NOT NULL,
        fired_at REAL,
        due_at REAL NOT NULL,
        state TEXT NOT NULL,
        attempt_id INTEGER,
        UNIQUE (transition_id, seq)
    );
    CREATE INDEX actions_job_state ON actions_job (state, due_at);
    CREATE TABLE actions_health (
        target_key TEXT PRIMARY KEY,
        healthy_since REAL,
        reset_at REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE actions_dump (
        id TEXT PRIMARY KEY,
        attempt_id INTEGER,
        target TEXT NOT NULL,
        output_stream_name TEXT NOT NULL,
        output_path TEXT NOT NULL,
        info_file TEXT,
        started_at REAL NOT NULL,
        stop_at REAL NOT NULL,
        stopped_at REAL,
        state TEXT NOT NULL,
        bytes INTEGER NOT NULL DEFAULT 0,
        detail TEXT
    );
    CREATE TABLE actions_exhausted (
        action TEXT NOT NULL,
        target_key TEXT NOT NULL,
        target TEXT NOT NULL,
        exhausted INTEGER NOT NULL,
        since REAL NOT NULL,
        budget INTEGER NOT NULL DEFAULT 0,
        budget_window REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (action, target_key)
    )
    """,
]

EXECUTED_RESULTS = ("ok", "failed", "timeout")
ON_RESOLVE_SEQ = 1000  # jobs of a resolved transition come after every firing one


def target_key(target: Target) -> str:
    return json.dumps(target.to_json(), sort_keys=True)


@dataclass(frozen=True)
class Job:
    id: int
    transition_id: int
    seq: int
    rule: str
    fingerprint: str
    alertname: str
    action: str
    params: dict[str, Any]
    target: Target
    labels: dict[str, str]
    dry_run: bool | None
    silenced: bool
    fired_at: float | None
    due_at: float
    state: str
    attempt_id: int | None


_JOB_COLUMNS = (
    "id, transition_id, seq, rule, fingerprint, alertname, action, params, target, labels, "
    "dry_run, silenced, fired_at, due_at, state, attempt_id"
)


def _job(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        transition_id=row[1],
        seq=row[2],
        rule=row[3],
        fingerprint=row[4],
        alertname=row[5],
        action=row[6],
        params=json.loads(row[7]),
        target=Target.from_json(json.loads(row[8])),
        labels=json.loads(row[9]),
        dry_run=None if row[10] is None else bool(row[10]),
        silenced=bool(row[11]),
        fired_at=row[12],
        due_at=row[13],
        state=row[14],
        attempt_id=row[15],
    )


@dataclass(frozen=True)
class Dump:
    id: str
    target: Target
    output_stream_name: str
    output_path: str
    info_file: str | None
    started_at: float
    stop_at: float
    stopped_at: float | None
    state: str
    bytes: int


@dataclass(frozen=True)
class Exhausted:
    action: str
    target: Target
    exhausted: bool
    since: float
    budget: int
    budget_window: float


class ActionLog:
    """Named statements over the actions' tables."""

    def __init__(self, store: Store):
        self.store = store
        store.migrate_part(PART, MIGRATIONS)

    # -- attempts (the audit trail and the guard's memory) ------------------------------------

    def start_attempt(
        self,
        *,
        now: float,
        action: str,
        target: Target,
        params: Mapping[str, Any],
        requested_by: str,
        fingerprint: str | None = None,
        alertname: str | None = None,
        job_id: int | None = None,
    ) -> int:
        """Saved (committed) before the first upstream call: `executed`, state `started`."""
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO actions_attempt (started_at, action, kind, target_key, target, params, "
                "fingerprint, alertname, job_id, requested_by, state, executed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'started', 1)",
                (
                    now,
                    action,
                    target.kind,
                    target_key(target),
                    json.dumps(target.to_json(), sort_keys=True),
                    json.dumps(dict(params), sort_keys=True, default=str),
                    fingerprint,
                    alertname,
                    job_id,
                    requested_by,
                ),
            )
            (attempt_id,) = self.store.query("SELECT last_insert_rowid()")[0]
            if job_id is not None:
                self.store.execute(
                    "UPDATE actions_job SET state = 'running', attempt_id = ? WHERE id = ?",
                    (attempt_id, job_id),
                )
        return int(attempt_id)

    def finish_attempt(
        self,
        attempt_id: int,
        *,
        now: float,
        result: str,
        detail: str,
        error: str | None,
        calls: Sequence[Mapping[str, Any]],
        duration: float,
        job_id: int | None = None,
    ) -> None:
        with self.store.transaction():
            self.store.execute(
                "UPDATE actions_attempt SET state = 'finished', finished_at = ?, result = ?, "
                "detail = ?, error = ?, calls = ?, duration = ? WHERE id = ?",
                (
                    now,
                    result,
                    detail,
                    error,
                    json.dumps(list(calls), default=str),
                    duration,
                    attempt_id,
                ),
            )
            if job_id is not None:
                self.store.execute("UPDATE actions_job SET state = 'done' WHERE id = ?", (job_id,))

    def skipped(
        self,
        *,
        now: float,
        action: str,
        target: Target,
        params: Mapping[str, Any],
        requested_by: str,
        result: str,
        detail: str,
        fingerprint: str | None = None,
        alertname: str | None = None,
        job_id: int | None = None,
    ) -> int:
        """An attempt the guard stopped before any upstream call (or a dry run): audited, not
        counted against the budget."""
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO actions_attempt (started_at, finished_at, action, kind, target_key, "
                "target, params, fingerprint, alertname, job_id, requested_by, state, executed, "
                "result, detail, duration) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'finished', 0, ?, ?, 0)",
                (
                    now,
                    now,
                    action,
                    target.kind,
                    target_key(target),
                    json.dumps(target.to_json(), sort_keys=True),
                    json.dumps(dict(params), sort_keys=True, default=str),
                    fingerprint,
                    alertname,
                    job_id,
                    requested_by,
                    result,
                    detail,
                ),
            )
            (attempt_id,) = self.store.query("SELECT last_insert_rowid()")[0]
            if job_id is not None:
                self.store.execute(
                    "UPDATE actions_job SET state = 'done', attempt_id = ? WHERE id = ?",
                    (attempt_id, job_id),
                )
        return int(attempt_id)

    def executed_since(self, action: str, key: str, since: float) -> list[float]:
        """Start times of attempts that reached the upstream (started ones included), newest
        first."""
        rows = self.store.query(
            "SELECT started_at FROM actions_attempt WHERE action = ? AND target_key = ? "
            "AND executed = 1 AND started_at > ? ORDER BY started_at DESC",
            (action, key, since),
        )
        return [row[0] for row in rows]

    def interrupted(self) -> list[dict[str, Any]]:
        """Attempts left `started` by a daemon that died mid-action."""
        return self.attempts(where="state = 'started'", limit=10_000)

    def attempts(
        self, *, where: str = "1", params: Sequence[Any] = (), limit: int = 100
    ) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT id, started_at, finished_at, action, kind, target, params, fingerprint, "
            "alertname, job_id, requested_by, state, executed, result, detail, error, calls, "
            f"duration FROM actions_attempt WHERE {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [
            {
                "id": r[0],
                "startedAt": r[1],
                "time": r[1],  # what the status page shows
                "finishedAt": r[2],
                "action": r[3],
                "kind": r[4],
                "target": json.loads(r[5]),
                "params": json.loads(r[6]),
                "fingerprint": r[7],
                "alertname": r[8],
                "job": r[9],
                "requestedBy": r[10],
                "state": r[11],
                "executed": bool(r[12]),
                "result": r[13],
                "detail": r[14],
                "error": r[15],
                "calls": json.loads(r[16] or "[]"),
                "duration": r[17],
            }
            for r in rows
        ]

    # -- jobs: a firing alert's actions, in order, delayed ones included -----------------------

    def add_jobs(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for job in rows:
            self.store.execute(
                "INSERT OR IGNORE INTO actions_job (transition_id, seq, rule, fingerprint, "
                "alertname, action, params, target, labels, dry_run, silenced, fired_at, due_at, "
                "state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (
                    job["transition_id"],
                    job["seq"],
                    job["rule"],
                    job["fingerprint"],
                    job["alertname"],
                    job["action"],
                    json.dumps(job["params"], sort_keys=True),
                    json.dumps(job["target"].to_json(), sort_keys=True),
                    json.dumps(dict(job["labels"]), sort_keys=True),
                    None if job["dry_run"] is None else int(job["dry_run"]),
                    int(job["silenced"]),
                    job["fired_at"],
                    job["due_at"],
                ),
            )

    def drop_jobs(self, rule: str, fingerprint: str) -> int:
        """The alert resolved: its actions not yet run are dropped."""
        return self.store.execute(
            "UPDATE actions_job SET state = 'dropped' WHERE rule = ? AND fingerprint = ? "
            "AND state = 'pending'",
            (rule, fingerprint),
        )

    def drop_job(self, job_id: int) -> None:
        with self.store.transaction():
            self.store.execute(
                "UPDATE actions_job SET state = 'dropped' WHERE id = ? AND state = 'pending'",
                (job_id,),
            )

    def ready_jobs(self) -> list[Job]:
        """Pending jobs whose predecessors in their rule's list are all done or dropped,
        soonest first."""
        rows = self.store.query(
            f"SELECT {_JOB_COLUMNS} FROM actions_job j WHERE state = 'pending' AND NOT EXISTS "
            "(SELECT 1 FROM actions_job p WHERE p.transition_id = j.transition_id "
            "AND p.seq < j.seq AND p.state IN ('pending', 'running')) ORDER BY due_at, id"
        )
        return [_job(row) for row in rows]

    def follow_up(self, job: Job, due_at: float) -> bool:
        """The same action again for a target whose alert still fires (a restart that did not
        cure it), after the job's last one; False when the list is full."""
        (seq,) = self.store.query(
            "SELECT MAX(seq) FROM actions_job WHERE transition_id = ? AND seq < ?",
            (job.transition_id, ON_RESOLVE_SEQ),
        )[0]
        if seq + 1 >= ON_RESOLVE_SEQ:
            return False
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO actions_job (transition_id, seq, rule, fingerprint, alertname, "
                "action, params, target, labels, dry_run, silenced, fired_at, due_at, state) "
                "SELECT transition_id, ?, rule, fingerprint, alertname, action, params, target, "
                "labels, dry_run, silenced, fired_at, ?, 'pending' FROM actions_job WHERE id = ?",
                (seq + 1, due_at, job.id),
            )
        return True

    def job(self, job_id: int) -> Job | None:
        rows = self.store.query(f"SELECT {_JOB_COLUMNS} FROM actions_job WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def finish_job(self, job_id: int) -> None:
        with self.store.transaction():
            self.store.execute("UPDATE actions_job SET state = 'done' WHERE id = ?", (job_id,))

    def jobs(self, *, state: str | None = None) -> list[Job]:
        if state is None:
            rows = self.store.query(f"SELECT {_JOB_COLUMNS} FROM actions_job ORDER BY id")
        else:
            rows = self.store.query(
                f"SELECT {_JOB_COLUMNS} FROM actions_job WHERE state = ? ORDER BY id", (state,)
            )
        return [_job(row) for row in rows]

    # -- targets' health: backoff resets after reset_after healthy ----------------------------

    def mark_unhealthy(self, key: str, now: float, reset_after: float) -> None:
        rows = self.store.query(
            "SELECT healthy_since FROM actions_health WHERE target_key = ?", (key,)
        )
        healthy_since = rows[0][0] if rows else None
        if healthy_since is not None and now - healthy_since >= reset_after:
            self.store.execute(
                "UPDATE actions_health SET healthy_since = NULL, reset_at = ? WHERE target_key = ?",
                (now, key),
            )
        else:
            self.store.execute(
                "INSERT INTO actions_health (target_key, healthy_since) VALUES (?, NULL) "
                "ON CONFLICT (target_key) DO UPDATE SET healthy_since = NULL",
                (key,),
            )

    def mark_healthy(self, key: str, now: float) -> None:
        self.store.execute(
            "INSERT INTO actions_health (target_key, healthy_since) VALUES (?, ?) "
            "ON CONFLICT (target_key) DO UPDATE SET healthy_since = "
            "COALESCE(actions_health.healthy_since, excluded.healthy_since)",
            (key, now),
        )

    def backoff_floor(self, key: str, now: float, reset_after: float) -> float:
        """Attempts before this time do not count for backoff: the last time the target had
        stayed healthy for reset_after."""
        rows = self.store.query(
            "SELECT healthy_since, reset_at FROM actions_health WHERE target_key = ?", (key,)
        )
        if not rows:
            return 0.0
        healthy_since, reset_at = rows[0]
        if healthy_since is not None and now - healthy_since >= reset_after:
            reset_at = max(reset_at, healthy_since + reset_after)
        # `executed_since` counts attempts after its bound: one made at the reset belongs to
        # the new streak.
        return reset_at - 1e-6 if reset_at else 0.0

    def prune(self, before: float) -> None:
        """Forget finished attempts, jobs and deleted dumps older than `before`."""
        with self.store.transaction():
            self.store.execute(
                "DELETE FROM actions_attempt WHERE state = 'finished' AND started_at < ?",
                (before,),
            )
            self.store.execute(
                "DELETE FROM actions_job WHERE state IN ('done', 'dropped') AND due_at < ?",
                (before,),
            )
            self.store.execute(
                "DELETE FROM actions_dump WHERE state = 'deleted' AND started_at < ?", (before,)
            )

    # -- HLS dumps -------------------------------------------------------------------------

    def add_dump(self, dump: Dump, attempt_id: int) -> None:
        with self.store.transaction():
            self.store.execute(
                "INSERT OR REPLACE INTO actions_dump (id, attempt_id, target, output_stream_name, "
                "output_path, info_file, started_at, stop_at, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    dump.id,
                    attempt_id,
                    json.dumps(dump.target.to_json(), sort_keys=True),
                    dump.output_stream_name,
                    dump.output_path,
                    dump.info_file,
                    dump.started_at,
                    dump.stop_at,
                    dump.state,
                ),
            )

    def set_dump(self, dump_id: str, **values: Any) -> None:
        names = ", ".join(f"{k} = ?" for k in values)
        with self.store.transaction():
            self.store.execute(
                f"UPDATE actions_dump SET {names} WHERE id = ?", (*values.values(), dump_id)
            )

    def dumps(self, *, where: str = "1", params: Sequence[Any] = ()) -> list[Dump]:
        rows = self.store.query(
            "SELECT id, target, output_stream_name, output_path, info_file, started_at, stop_at, "
            f"stopped_at, state, bytes FROM actions_dump WHERE {where} ORDER BY started_at, id",
            params,
        )
        return [
            Dump(
                r[0],
                Target.from_json(json.loads(r[1])),
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
            )
            for r in rows
        ]

    def dump_counts(self) -> dict[str, int]:
        return {
            row[0]: row[1]
            for row in self.store.query("SELECT state, COUNT(*) FROM actions_dump GROUP BY state")
        }

    # -- exhausted budgets (the StreamwatchRemediationExhausted entities) -----------------------

    def set_exhausted(
        self,
        action: str,
        target: Target,
        exhausted: bool,
        now: float,
        budget: int = 0,
        budget_window: float = 0.0,
    ) -> bool:
        """True when this changed the target's state."""
        key = target_key(target)
        rows = self.store.query(
            "SELECT exhausted FROM actions_exhausted WHERE action = ? AND target_key = ?",
            (action, key),
        )
        if rows and bool(rows[0][0]) == exhausted:
            return False
        if not rows and not exhausted:
            return False
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO actions_exhausted (action, target_key, target, exhausted, since, "
                "budget, budget_window) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (action, target_key) DO UPDATE SET exhausted = excluded.exhausted, "
                "since = excluded.since, budget = MAX(excluded.budget, actions_exhausted.budget), "
                "budget_window = MAX(excluded.budget_window, actions_exhausted.budget_window)",
                (
                    action,
                    key,
                    json.dumps(target.to_json(), sort_keys=True),
                    int(exhausted),
                    now,
                    budget,
                    budget_window,
                ),
            )
        return True

    def exhausted(self) -> list[Exhausted]:
        rows = self.store.query(
            "SELECT action, target, exhausted, since, budget, budget_window "
            "FROM actions_exhausted ORDER BY action, target_key"
        )
        return [
            Exhausted(r[0], Target.from_json(json.loads(r[1])), bool(r[2]), r[3], r[4], r[5])
            for r in rows
        ]
