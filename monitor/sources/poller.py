"""The coordinator around one source: polls it, keeps the last good snapshot, tracks health.

Shaped like Home Assistant's DataUpdateCoordinator: a failure never erases the last good data,
health flips are logged once (down, then recovered), and so is each change of the cause while
down, not every poll. A Retry-After from the upstream postpones the next poll once, for at most
the source's `max_retry_after`.

Polls of one source never overlap. A poll that takes longer than the interval, or a source
whose own budget cannot afford a full poll every interval (`Source.min_interval`), stretches
the *effective interval*: scheduled ticks that come too early are skipped, the gauge
`streamwatch_source_effective_interval_seconds` says how far apart polls really are, and the
first stretch is logged once with its numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from monitor.model import PollFailure, Snapshot, SourceRef
from monitor.sources.base import BAD_RESPONSE, TIMEOUT, Clock, Source, SourceError, SourceMetrics

log = logging.getLogger(__name__)

SnapshotListener = Callable[[Snapshot], None]


class SourcePoller:
    def __init__(
        self,
        source: Source,
        metrics: SourceMetrics,
        *,
        clock: Clock = time.time,
        listeners: tuple[SnapshotListener, ...] = (),
        timer: Clock = time.monotonic,
    ):
        self.source = source
        self.metrics = metrics
        self.clock = clock
        # Seconds for pacing scheduled polls: the scheduler's ticks are real time, whatever
        # `clock` (the snapshots' wall time) says.
        self.timer = timer
        self.listeners = list(listeners)
        self.latest: Snapshot | None = None
        self.last_good: Snapshot | None = None
        self.up: bool | None = None  # None until the first poll has finished
        self.down_since: float | None = None
        self.not_before: float = 0.0
        self.effective_interval = source.interval
        self._started: float | None = None  # `timer` at the start of the last poll
        self._cause: tuple[str, str] | None = None  # (reason, code) of the current failure
        self._stretch_logged = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[object] | None = None
        self._set_effective_interval(source.interval)

    def inherit(self, old: SourcePoller) -> None:
        """Take over what a poller replaced by a reload knew: the last good snapshot (so series
        and /readyz do not blink), health and its cause, when the last poll started, and a
        pending Retry-After (cut to this source's `max_retry_after`)."""
        self.latest, self.last_good = old.latest, old.last_good
        self.up, self.down_since, self._cause = old.up, old.down_since, old._cause
        self.not_before = min(old.not_before, self.clock() + self.source.max_retry_after)
        self._started = old._started

    async def cancel(self) -> None:
        """Stop a poll in flight (its source is being removed); nothing is published."""
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def ref(self) -> SourceRef:
        return self.source.ref

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def due(self) -> bool:
        """Whether a scheduled tick may poll now: always, unless the effective interval is
        stretched and has not passed since the last poll started (half an interval of slack,
        so that the tick at the stretched time is not missed by a hair)."""
        if self._started is None or self.effective_interval <= self.source.interval:
            return True
        wait_until = self._started + self.effective_interval - self.source.interval / 2
        return self.timer() >= wait_until

    async def refresh(self, *, requested: bool = False, scheduled: bool = False) -> Snapshot | None:
        """Poll once. Returns None when a poll of this source is still running (polls of one
        source never overlap), a Retry-After has not passed yet, or (for a `scheduled` tick)
        the stretched effective interval has not passed yet. A skipped tick is only debug: a
        stretch is said once, when it is measured. `requested` marks an extra poll (e.g. after
        a callback)."""
        if self._lock.locked():
            log.debug(
                "poll skipped",
                extra={
                    "source": str(self.ref),
                    "reason": "previous_poll_still_running",
                    "requested": requested,
                },
            )
            return None
        if self.clock() < self.not_before:
            return None
        if scheduled and not self.due():
            log.debug(
                "poll skipped",
                extra={"source": str(self.ref), "reason": "effective_interval"},
            )
            return None
        async with self._lock:
            self._task = asyncio.current_task()
            self._started = self.timer()
            try:
                snapshot = await self._poll_once()
            finally:
                self._task = None
        self._record(snapshot)
        self._pace(snapshot)
        for listener in self.listeners:
            listener(snapshot)
        return snapshot

    async def _poll_once(self) -> Snapshot:
        taken_at = self.clock()
        started = self.timer()
        deadline = self.source.poll_deadline
        try:
            scope = asyncio.timeout(deadline)
            try:
                async with scope:
                    entities = await self.source.poll()
            except TimeoutError as exc:
                if not scope.expired():
                    raise SourceError(TIMEOUT, "poll timed out") from exc
                # The safety bound: per-request timeouts fail a poll whose upstream stops
                # answering; this ends one that goes on and on although each request answers.
                raise SourceError(TIMEOUT, f"poll did not finish within {deadline:g}s") from exc
        except SourceError as exc:
            failure = PollFailure(exc.reason, exc.message, exc.metric_code)
            retry_after = exc.retry_after
        except Exception as exc:  # a source bug must not kill the daemon
            if self.up is not False:  # the traceback once, not on every poll
                log.exception("poll crashed", extra={"source": str(self.ref)})
            failure, retry_after = PollFailure(BAD_RESPONSE, type(exc).__name__), None
        else:
            duration = self.timer() - started
            return Snapshot.of(self.ref, taken_at, entities, duration)
        duration = self.timer() - started
        if retry_after is not None:
            self.not_before = self.clock() + self._capped(retry_after)
        return Snapshot.failed(self.ref, taken_at, failure, duration)

    def _capped(self, retry_after: float) -> float:
        """A Retry-After cut to `max_retry_after`; one that is no sane delay (negative, inf,
        nan) counts as too long. Counted and logged when cut."""
        cap = self.source.max_retry_after
        if 0 <= retry_after <= cap:  # False for nan too
            return retry_after
        ref = self.ref
        self.metrics.retry_after_capped.labels(ref.kind, ref.name).inc()
        log.warning(
            "retry-after capped",
            extra={"source": str(ref), "retry_after": str(retry_after), "capped_to_s": cap},
        )
        return cap

    def _record(self, snapshot: Snapshot) -> None:
        ref = self.ref
        self.metrics.poll_duration.labels(ref.kind, ref.name).observe(snapshot.duration)
        self.latest = snapshot
        failure = snapshot.failure
        if failure is not None:
            self.metrics.poll_errors.labels(ref.kind, ref.name, failure.reason, failure.code).inc()
            cause = (failure.reason, failure.code)
            fields = {
                "source": str(ref),
                "reason": failure.reason,
                "code": failure.code,
                "error": failure.message,
            }
            if self.up is not False:
                log.warning("source down", extra=fields)
                self.down_since = snapshot.taken_at
            elif cause != self._cause:
                # Still down, for another reason (say "cannot connect", then a 401): news.
                previous_reason, previous_code = self._cause or ("", "")
                log.warning(
                    "source failure changed",
                    extra={
                        **fields,
                        "previous_reason": previous_reason,
                        "previous_code": previous_code,
                    },
                )
            self._cause = cause
            self.up = False
            return
        if self.up is False:
            log.info("source recovered", extra={"source": str(ref)})
        elif self.up is None:
            log.info(
                "source up",
                extra={
                    "source": str(ref),
                    "entities": len(snapshot.entities),
                    "duration_s": round(snapshot.duration, 3),
                },
            )
        self.up = True
        self.down_since = None
        self._cause = None
        self.last_good = snapshot

    def _pace(self, snapshot: Snapshot) -> None:
        """The effective interval after this poll: the interval, or the next whole number of
        intervals (the scheduler ticks once an interval) that covers both this poll's duration
        and the source's own minimum (its rate budget)."""
        interval = self.source.interval
        budget = self.source.min_interval
        needed = max(budget, snapshot.duration)
        effective = interval
        if needed > interval:
            effective = interval * math.ceil(needed / interval - 1e-9)
        self._set_effective_interval(effective)
        if effective > interval and not self._stretch_logged:
            self._stretch_logged = True
            log.warning(
                "effective interval stretched",
                extra={
                    "source": str(self.ref),
                    "interval_s": interval,
                    "effective_interval_s": effective,
                    "poll_duration_s": round(snapshot.duration, 3),
                    "cause": "rate_budget" if budget >= snapshot.duration else "slow_poll",
                    **self.source.pacing(),
                },
            )

    def _set_effective_interval(self, seconds: float) -> None:
        self.effective_interval = seconds
        ref = self.ref
        self.metrics.effective_interval.labels(ref.kind, ref.name).set(seconds)
