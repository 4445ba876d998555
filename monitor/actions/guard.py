"""The guard: every action, from a rule or from outside, passes this one chain of small stages

    supported → silenced → dry-run → cooldown → budget → backoff → concurrency + timeout → execute → verify → audit

Each stage either lets the attempt through or ends it with the value of the `result` label of
`streamwatch_actions_total` (skipped_silenced, dry_run, skipped_cooldown, skipped_budget,
skipped_backoff; then ok, failed or timeout). Cooldown, budget and backoff are counted from the
audit trail in SQLite, never from memory, and an attempt is saved as `started` before its first
upstream call: a daemon killed mid-action neither forgets it nor repeats it blindly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.actions.audit import ActionLog, target_key
from monitor.actions.config import GuardConfig
from monitor.actions.metrics import ActionMetrics
from monitor.actions.peers import Peers
from monitor.model import Target
from monitor.sources import registry
from monitor.sources.base import SourceError
from monitor.sources.verbs import VerbResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One action on one target, as the guard sees it."""

    action: str
    target: Target
    params: Mapping[str, Any]
    guard: GuardConfig
    dry_run: bool = False
    silenced_by: tuple[str, ...] = ()
    requested_by: str = "rule"
    fingerprint: str | None = None
    alertname: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    fired_at: float | None = None
    job_id: int | None = None

    @property
    def key(self) -> str:
        return target_key(self.target)

    def describe(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.target.labels.items()))
        return f"{self.action} {self.target.kind}{{{labels}}} of {self.target.source}"


@dataclass(frozen=True)
class Outcome:
    result: str
    detail: str
    attempt_id: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "detail": self.detail,
            "attempt": self.attempt_id,
            "error": self.error,
        }


Skip = tuple[str, str] | None  # (result, detail) ends the chain; None passes on


@dataclass
class Calls:
    """Each upstream step of an attempt and its answer, for the audit trail."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, call: str, ok: bool, detail: str) -> None:
        self.steps.append({"call": call, "ok": ok, "detail": detail[:1000]})


# An action's work once the guard let it through: the verb, and the verification.
Execute = Callable[[Attempt, int, Calls], Awaitable[VerbResult]]


class Guard:
    def __init__(
        self,
        audit: ActionLog,
        metrics: ActionMetrics,
        execute: Execute,
        *,
        concurrency: int,
        clock: Callable[[], float] = time.time,
        on_exhausted: Callable[[Attempt], None] = lambda attempt: None,
        peers: Peers | None = None,
    ):
        self.audit = audit
        self.metrics = metrics
        self.execute = execute
        self.clock = clock
        self.on_exhausted = on_exhausted
        self.peers = peers
        self.semaphore = asyncio.Semaphore(concurrency)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.stages: Sequence[Callable[[Attempt, float], Skip]] = (
            self.supported,
            self.silenced,
            self.dry_run,
            self.cooldown,
            self.budget,
            self.backoff,
        )

    async def run(self, attempt: Attempt) -> Outcome:
        # One attempt per (action, target) at a time: the stages read what the last one wrote.
        lock = self._locks.setdefault((attempt.action, attempt.key), asyncio.Lock())
        async with lock:
            now = self.clock()
            for stage in self.stages:
                skip = stage(attempt, now)
                if skip is not None:
                    return self._skipped(attempt, now, *skip)
            skip = await self.peer(attempt, now)
            if skip is not None:
                return self._skipped(attempt, self.clock(), *skip)
            async with self.semaphore:
                return await self._execute(attempt)

    # -- the stages before any upstream call ---------------------------------------------------

    def supported(self, attempt: Attempt, now: float) -> Skip:
        """An action the target's kind has no verb for fails here, spending no budget."""
        if registry.verb(attempt.target.kind, attempt.action) is None:
            return "failed", f"{attempt.target.kind} has no {attempt.action} action"
        return None

    def silenced(self, attempt: Attempt, now: float) -> Skip:
        if attempt.silenced_by:
            return "skipped_silenced", f"silenced by {', '.join(attempt.silenced_by)}"
        return None

    def dry_run(self, attempt: Attempt, now: float) -> Skip:
        if attempt.dry_run:
            return "dry_run", f"dry run: would {attempt.describe()}"
        return None

    def cooldown(self, attempt: Attempt, now: float) -> Skip:
        cooldown = attempt.guard.cooldown
        recent = self.audit.executed_since(attempt.action, attempt.key, now - cooldown)
        if cooldown > 0 and recent:
            return (
                "skipped_cooldown",
                f"last attempt {now - recent[0]:.0f}s ago; cooldown {cooldown:g}s",
            )
        return None

    def budget(self, attempt: Attempt, now: float) -> Skip:
        guard = attempt.guard
        used = self.audit.executed_since(attempt.action, attempt.key, now - guard.budget_window)
        if len(used) >= guard.budget:
            self.on_exhausted(attempt)
            return (
                "skipped_budget",
                f"{len(used)} attempts within {guard.budget_window:g}s (budget {guard.budget}); "
                "the target is left alone",
            )
        return None

    def backoff(self, attempt: Attempt, now: float) -> Skip:
        guard = attempt.guard
        floor = self.audit.backoff_floor(attempt.key, now, guard.reset_after)
        streak = self.audit.executed_since(attempt.action, attempt.key, floor)
        if not streak or guard.backoff <= 0:
            return None
        wait = min(guard.backoff * 2 ** (len(streak) - 1), guard.backoff_max)
        if now - streak[0] < wait:
            return (
                "skipped_backoff",
                f"{len(streak)} attempt(s) in a row; next one not before {wait:g}s after the last",
            )
        return None

    async def peer(self, attempt: Attempt, now: float) -> Skip:
        """In an HA group: wait this daemon's turn, then leave the alert to a peer that has
        acted on it within the cooldown (see monitor/actions/peers.py). Only rule actions (an
        alert's fingerprint) are settled this way; a manual request is meant for this daemon."""
        if self.peers is None or not self.peers.enabled or attempt.fingerprint is None:
            return None
        await self.peers.wait_turn()
        since = now - max(attempt.guard.cooldown, self.peers.config.peer_timeout)
        peer = await self.peers.acted(attempt.action, attempt.fingerprint, since)
        if peer is not None:
            return "skipped_peer", f"{peer} acted on this alert already"
        return None

    def next_allowed(self, attempt: Attempt, now: float) -> float:
        """The earliest time cooldown and backoff let this attempt through again."""
        guard = attempt.guard
        last = self.audit.executed_since(attempt.action, attempt.key, 0.0)
        if not last:
            return now
        floor = self.audit.backoff_floor(attempt.key, now, guard.reset_after)
        streak = [t for t in last if t > floor]
        wait = guard.cooldown
        if streak and guard.backoff > 0:
            wait = max(wait, min(guard.backoff * 2 ** (len(streak) - 1), guard.backoff_max))
        return max(now, last[0] + wait)

    # -- execute, verify, audit ----------------------------------------------------------------

    def _skipped(self, attempt: Attempt, now: float, result: str, detail: str) -> Outcome:
        attempt_id = self.audit.skipped(
            now=now,
            action=attempt.action,
            target=attempt.target,
            params=attempt.params,
            requested_by=attempt.requested_by,
            result=result,
            detail=detail,
            fingerprint=attempt.fingerprint,
            alertname=attempt.alertname,
            job_id=attempt.job_id,
        )
        self.metrics.count(attempt.action, attempt.target.kind, result)
        log.info(
            "action skipped",
            extra={**_fields(attempt), "result": result, "detail": detail, "attempt": attempt_id},
        )
        return Outcome(result, detail, attempt_id)

    async def _execute(self, attempt: Attempt) -> Outcome:
        attempt_id = self.audit.start_attempt(
            now=self.clock(),
            action=attempt.action,
            target=attempt.target,
            params=attempt.params,
            requested_by=attempt.requested_by,
            fingerprint=attempt.fingerprint,
            alertname=attempt.alertname,
            job_id=attempt.job_id,
        )
        log.info("action started", extra={**_fields(attempt), "attempt": attempt_id})
        calls = Calls()
        started = time.monotonic()
        error: str | None = None
        try:
            async with asyncio.timeout(attempt.guard.timeout):
                verdict = await self.execute(attempt, attempt_id, calls)
            result, detail = ("ok" if verdict.ok else "failed"), verdict.detail
        except TimeoutError:
            result, detail = "timeout", f"no answer within {attempt.guard.timeout:g}s"
            error = detail
        except SourceError as exc:
            result, detail, error = "failed", f"upstream refused: {exc}", str(exc)
        except (ValueError, TypeError, LookupError) as exc:
            result, detail, error = "failed", str(exc), str(exc)
        duration = time.monotonic() - started
        return self.finish(attempt, attempt_id, result, detail, error, calls, duration)

    def finish(
        self,
        attempt: Attempt,
        attempt_id: int,
        result: str,
        detail: str,
        error: str | None,
        calls: Calls,
        duration: float,
    ) -> Outcome:
        self.audit.finish_attempt(
            attempt_id,
            now=self.clock(),
            result=result,
            detail=detail,
            error=error,
            calls=calls.steps,
            duration=duration,
            job_id=attempt.job_id,
        )
        self.metrics.count(attempt.action, attempt.target.kind, result)
        self.metrics.duration.labels(attempt.action, attempt.target.kind).observe(duration)
        level = logging.INFO if result == "ok" else logging.WARNING
        log.log(
            level,
            "action finished",
            extra={**_fields(attempt), "result": result, "detail": detail, "attempt": attempt_id},
        )
        return Outcome(result, detail, attempt_id, error)


def _fields(attempt: Attempt) -> dict[str, Any]:
    return {
        "action": attempt.action,
        "kind": attempt.target.kind,
        "source": str(attempt.target.source),
        "target": ",".join(f"{k}={v}" for k, v in sorted(attempt.target.labels.items())),
        "alertname": attempt.alertname or "",
        "requested_by": attempt.requested_by,
    }
