"""The action runner: an outbox consumer that saves a firing alert's actions as jobs (and
acknowledges the transition in the same SQLite transaction), and a worker task that runs the
jobs when due, in the rule's order, each through the guard.

    firing    → one job per action, due at `at + after`; run in order, one after the other
    resolved  → the alert's jobs not yet run are dropped; `id3_event` with `on_resolve` runs
    start-up  → attempts a killed daemon left `started` are verified, never repeated
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monitor.actions.audit import ON_RESOLVE_SEQ, ActionLog, Job, target_key
from monitor.actions.config import ActionsConfig
from monitor.actions.dumps import Dumps
from monitor.actions.guard import Attempt, Calls, Guard
from monitor.actions.metrics import ActionMetrics
from monitor.actions.peers import Peers
from monitor.actions.perform import Performer
from monitor.alerting.rules import ACTION_PARAMS
from monitor.alerting.transitions import AlertState, Transition, TransitionKind
from monitor.model import Entity, SourceRef, Target
from monitor.sources.base import Source
from monitor.store import Store

log = logging.getLogger(__name__)

CONSUMER = "actions"
REMEDIATION_KIND = "streamwatch.remediation"
REMEDIATION_SOURCE = SourceRef("streamwatch", "actions")
# A restart is tried again while its alert fires, when the guard allows, until the budget
# says stop; these results lead to another try.
RETRIED = ("ok", "failed", "timeout", "skipped_cooldown", "skipped_backoff")
TICK = 1.0  # the worker looks at the jobs at least this often
AUDIT_RETENTION = 30 * 86400.0  # attempts are kept this long (budget windows are ≤ 7 days)
PRUNE_EVERY = 3600.0
RECOVER_TIMEOUT = 300.0  # an interrupted attempt whose source never runs again is given up


class ActionRunner:
    """Consumer of the outbox (`name`, `handle`) and owner of the worker (`run`)."""

    name = CONSUMER

    def __init__(
        self,
        store: Store,
        config: ActionsConfig,
        *,
        registry: Any,
        source_of: Callable[[Target], Source | None],
        dumps_root: Path,
        push: Callable[[SourceRef, list[Entity]], None] | None = None,
        alert_state: Callable[[str, str], AlertState | None] = lambda rule, fp: None,
        mutes: Callable[[Mapping[str, str], float], Sequence[str]] = lambda labels, now: (),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ):
        self.store = store
        self.config = config
        self.clock = clock
        self.push = push
        self.alert_state = alert_state
        self.mutes = mutes
        self.source_of = source_of
        self.audit = ActionLog(store)
        self._dump_counts: dict[str, int] = {}
        self.metrics = ActionMetrics(registry, lambda: self._dump_counts)
        self.performer = Performer(
            self.audit, lambda a: source_of(a.target), dumps_root, clock=clock, sleep=sleep
        )
        self.guard = Guard(
            self.audit,
            self.metrics,
            self.performer,
            concurrency=config.concurrency,
            clock=clock,
            on_exhausted=self._exhausted,
            peers=Peers(config.ha),
        )
        self.dumps = Dumps(self.audit, config.dumps, dumps_root, source_of, clock=clock)
        # Attempts a daemon that died mid-action left `started`: verified, not redone.
        self._interrupted = self.audit.interrupted()
        self._interrupted_since = clock()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._pruned_at = 0.0
        self._wake = asyncio.Event()
        self.refresh_counts()

    # -- the outbox consumer ------------------------------------------------------------------

    async def handle(self, transitions: Sequence[Transition]) -> Sequence[int]:
        ids = [t.id for t in transitions if t.id is not None]
        released = False
        with self.store.transaction():
            for t in transitions:
                if t.id is None:
                    continue
                if t.kind == TransitionKind.FIRING:
                    self._on_firing(t)
                elif t.kind == TransitionKind.RESOLVED:
                    released |= self._on_resolved(t)
            self.store.outbox_ack(self.name, ids, self.clock())
        if released:
            self.publish()
        self.wake()
        return ids

    def _on_firing(self, t: Transition) -> None:
        self.audit.mark_unhealthy(target_key(t.target), t.at, self.config.guard.reset_after)
        jobs = [
            self._job(t, seq, action, t.at + float(action.get("params", {}).get("after") or 0))
            for seq, action in enumerate(t.actions)
        ]
        self.audit.add_jobs(jobs)

    def _on_resolved(self, t: Transition) -> bool:
        self.audit.drop_jobs(t.rule, t.fingerprint)
        self.audit.mark_healthy(target_key(t.target), t.at)
        on_resolve = [
            self._job(t, ON_RESOLVE_SEQ + seq, action, t.at)
            for seq, action in enumerate(t.actions)
            if action.get("action") == "id3_event" and action.get("params", {}).get("on_resolve")
        ]
        self.audit.add_jobs(on_resolve)
        released = False
        for row in self.audit.exhausted():
            if row.exhausted and row.target == t.target:
                released |= self.audit.set_exhausted(row.action, row.target, False, t.at)
        return released

    @staticmethod
    def _job(t: Transition, seq: int, action: Mapping[str, Any], due_at: float) -> dict[str, Any]:
        return {
            "transition_id": t.id,
            "seq": seq,
            "rule": t.rule,
            "fingerprint": t.fingerprint,
            "alertname": t.alertname,
            "action": action.get("action"),
            "params": dict(action.get("params") or {}),
            "target": t.target,
            "labels": t.labels,
            "dry_run": t.dry_run,
            "silenced": t.silenced,
            "fired_at": t.fired_at if t.fired_at is not None else t.at,
            "due_at": due_at,
        }

    # -- the worker ---------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Forever: recover, run due jobs, stop due dumps, release budgets, then wait for a
        wake-up or the next due time (at most TICK)."""
        self.publish()
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("action worker failed")
            delay = TICK
            upcoming = self.next_due()
            if upcoming is not None:
                delay = min(TICK, max(0.0, upcoming - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def tick(self) -> None:
        now = self.clock()
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self.audit.prune(now - AUDIT_RETENTION)
        await self.recover()
        self.spawn_due()
        try:
            await self.dumps.stop_due()
        finally:
            self.release_budgets()
            self.refresh_counts()

    async def run_due(self) -> None:
        """Run every job due now to its end, and what becomes due meanwhile (for tests and
        `streamwatch once`-like callers; the worker does the same without waiting)."""
        await self.recover()
        while True:
            self.spawn_due()
            if not self._tasks:
                break
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        await self.dumps.stop_due()
        self.release_budgets()
        self.refresh_counts()

    def next_due(self) -> float | None:
        due = [j.due_at for j in self.audit.ready_jobs() if j.id not in self._tasks]
        stop = self.dumps.next_stop()
        times = [t for t in (*due, stop) if t is not None]
        return min(times, default=None)

    def spawn_due(self) -> int:
        now = self.clock()
        spawned = 0
        for job in self.audit.ready_jobs():
            if job.due_at > now or job.id in self._tasks:
                continue
            task = asyncio.get_running_loop().create_task(
                self._run_job(job), name=f"action:{job.id}"
            )
            self._tasks[job.id] = task
            task.add_done_callback(lambda _t, id=job.id: self._done(id))
            spawned += 1
        return spawned

    def _done(self, job_id: int) -> None:
        self._tasks.pop(job_id, None)
        self.wake()

    async def _run_job(self, job: Job) -> None:
        try:
            if job.seq < ON_RESOLVE_SEQ:
                state = self.alert_state(job.rule, job.fingerprint)
                if state is not None and state != AlertState.FIRING:
                    # `after:` ran out on an alert that is no longer firing
                    self.audit.drop_job(job.id)
                    return
            attempt = self._attempt(job)
            outcome = await self.guard.run(attempt)
            if (
                job.action == "restart"
                and job.seq < ON_RESOLVE_SEQ
                and outcome.result in RETRIED
                and self.alert_state(job.rule, job.fingerprint) == AlertState.FIRING
            ):
                due = self.guard.next_allowed(attempt, self.clock())
                self.audit.follow_up(job, due)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("action job failed", extra={"job": job.id, "action": job.action})
            self.audit.finish_job(job.id)

    def _attempt(self, job: Job) -> Attempt:
        now = self.clock()
        silenced = tuple(self.mutes(job.labels, now)) or (("(at firing)",) if job.silenced else ())
        params = job.params
        return Attempt(
            action=job.action,
            target=job.target,
            params=params,
            guard=self.config.guard.merged(params),
            dry_run=bool(self.config.dry_run or job.dry_run or params.get("dry_run")),
            silenced_by=silenced,
            requested_by=f"rule:{job.rule}",
            fingerprint=job.fingerprint,
            alertname=job.alertname,
            labels=job.labels,
            fired_at=job.fired_at,
            job_id=job.id,
        )

    # -- start-up: attempts a killed daemon left behind -------------------------------------

    async def recover(self) -> None:
        """Each attempt left `started` is verified (a restart) or closed as unknown, once its
        source runs again; none is repeated. Its budget was spent when it started."""
        pending = []
        for row in self._interrupted:
            target = Target.from_json(row["target"])
            if (
                self.source_of(target) is None
                and self.clock() - self._interrupted_since < RECOVER_TIMEOUT
            ):
                pending.append(row)
                continue
            await self._recover(row, target)
        self._interrupted = pending

    async def _recover(self, row: Mapping[str, Any], target: Target) -> None:
        attempt = Attempt(
            action=row["action"],
            target=target,
            params=row["params"],
            guard=self.config.guard.merged(row["params"]),
            requested_by=row["requestedBy"],
            fingerprint=row["fingerprint"],
            alertname=row["alertname"],
            job_id=row["job"],
        )
        calls = Calls()
        note = "interrupted by a stop of the daemon; not repeated"
        started = time.monotonic()
        if row["action"] == "restart" and self.source_of(target) is not None:
            try:
                async with asyncio.timeout(attempt.guard.timeout):
                    verdict = await self.performer.verify(attempt, calls)
                result, detail = (
                    ("ok" if verdict.ok else "failed"),
                    f"{note}; verified: {verdict.detail}",
                )
            except TimeoutError:
                result, detail = "timeout", f"{note}; verification timed out"
            except Exception as exc:  # an upstream error or a vanished entity
                result, detail = "failed", f"{note}; verification failed: {exc}"
        else:
            result, detail = "failed", f"{note}; its effect is unknown"
        log.warning("interrupted action recovered", extra={"attempt": row["id"], "result": result})
        self.guard.finish(
            attempt, row["id"], result, detail, None, calls, time.monotonic() - started
        )

    # -- exhausted budgets: the StreamwatchRemediationExhausted alert ------------------------

    def _exhausted(self, attempt: Attempt) -> None:
        guard = attempt.guard
        if self.audit.set_exhausted(
            attempt.action, attempt.target, True, self.clock(), guard.budget, guard.budget_window
        ):
            self.publish()

    def release_budgets(self) -> None:
        now = self.clock()
        released = False
        for row in self.audit.exhausted():
            if not row.exhausted:
                continue
            used = self.audit.executed_since(
                row.action, target_key(row.target), now - row.budget_window
            )
            if len(used) < row.budget:
                released |= self.audit.set_exhausted(row.action, row.target, False, now)
        if released:
            self.publish()

    def remediation_entities(self) -> list[Entity]:
        return [
            Entity(
                REMEDIATION_KIND,
                {
                    **row.target.labels,
                    "action": row.action,
                    "target_kind": row.target.kind,
                    "source": str(row.target.source),
                },
                {
                    "exhausted": row.exhausted,
                    "since": row.since,
                    "budget": row.budget,
                    "budget_window": row.budget_window,
                },
            )
            for row in self.audit.exhausted()
        ]

    def publish(self) -> None:
        """Every remediation entity, exhausted or not (a partial snapshot judges only the
        entities it carries: those left out would read as gone)."""
        entities = self.remediation_entities()
        if entities and self.push is not None:
            self.push(REMEDIATION_SOURCE, entities)

    def refresh_counts(self) -> None:
        self._dump_counts = self.audit.dump_counts()

    # -- requests from outside the rules (API, MQTT, Alertmanager) ---------------------------

    async def request(self, request: Any) -> Mapping[str, Any]:
        """An ActionRequest through the same guard, at once (no `after`). ValueError when the
        action or its parameters are wrong."""
        model = ACTION_PARAMS.get(request.action)
        if model is None:
            raise ValueError(
                f"unknown action {request.action!r} (known: {', '.join(ACTION_PARAMS)})"
            )
        params = model.model_validate(dict(request.params)).model_dump(mode="json")
        target: Target = request.target
        dry_run = bool(self.config.dry_run or request.dry_run or params.get("dry_run"))
        now = self.clock()
        attempt = Attempt(
            action=request.action,
            target=target,
            params=params,
            guard=self.config.guard.merged(params),
            dry_run=dry_run,
            silenced_by=tuple(self.mutes(dict(target.labels), now)),
            requested_by=request.requested_by or "api",
            alertname=request.reason or None,
            labels=dict(target.labels),
        )
        outcome = await self.guard.run(attempt)
        self.refresh_counts()
        return outcome.to_json()
