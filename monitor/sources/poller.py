"""The coordinator around one source: polls it, keeps the last good snapshot, tracks health.

Shaped like Home Assistant's DataUpdateCoordinator: a failure never erases the last good data,
health flips are logged once (down, then recovered), not on every poll, and a Retry-After from
the upstream postpones the next poll once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    ):
        self.source = source
        self.metrics = metrics
        self.clock = clock
        self.listeners = list(listeners)
        self.latest: Snapshot | None = None
        self.last_good: Snapshot | None = None
        self.up: bool | None = None  # None until the first poll has finished
        self.down_since: float | None = None
        self.not_before: float = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[object] | None = None
        self._overrun_logged = False

    def inherit(self, old: SourcePoller) -> None:
        """Take over what a poller replaced by a reload knew: the last good snapshot (so series
        and /readyz do not blink), health, and a pending Retry-After."""
        self.latest, self.last_good = old.latest, old.last_good
        self.up, self.down_since, self.not_before = old.up, old.down_since, old.not_before

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

    async def refresh(self, *, requested: bool = False) -> Snapshot | None:
        """Poll once. Returns None when a poll of this source is still running (polls of one
        source never overlap) or a Retry-After has not passed yet. A skipped scheduled poll is
        a warning (the source is slower than its interval); a skipped extra poll (`requested`,
        e.g. after a callback) is not: the running one will bring the news."""
        if self._lock.locked():
            # Said once per overrun, not on every skipped tick; an extra poll (`requested`)
            # that finds one running is normal and only debug.
            loud = not requested and not self._overrun_logged
            log.log(
                logging.WARNING if loud else logging.DEBUG,
                "poll skipped",
                extra={"source": str(self.ref), "reason": "previous_poll_still_running"},
            )
            self._overrun_logged = self._overrun_logged or loud
            return None
        if self.clock() < self.not_before:
            return None
        async with self._lock:
            self._task = asyncio.current_task()
            try:
                snapshot = await self._poll_once()
            finally:
                self._task = None
                self._overrun_logged = False
        self._record(snapshot)
        for listener in self.listeners:
            listener(snapshot)
        return snapshot

    async def _poll_once(self) -> Snapshot:
        taken_at = self.clock()
        started = time.perf_counter()
        deadline = self.source.poll_deadline
        try:
            scope = asyncio.timeout(deadline)
            try:
                async with scope:
                    entities = await self.source.poll()
            except TimeoutError as exc:
                if not scope.expired():
                    raise SourceError(TIMEOUT, "poll timed out") from exc
                # Per-request timeouts cannot bound a poll of thousands of requests; this does,
                # so a hung poll fails and the next one starts on time instead of being skipped.
                raise SourceError(TIMEOUT, f"poll did not finish within {deadline:g}s") from exc
        except SourceError as exc:
            failure = PollFailure(exc.reason, exc.message, exc.metric_code)
            retry_after = exc.retry_after
        except Exception as exc:  # a source bug must not kill the daemon
            if self.up is not False:  # the traceback once, not on every poll
                log.exception("poll crashed", extra={"source": str(self.ref)})
            failure, retry_after = PollFailure(BAD_RESPONSE, type(exc).__name__), None
        else:
            duration = time.perf_counter() - started
            return Snapshot.of(self.ref, taken_at, entities, duration)
        duration = time.perf_counter() - started
        if retry_after:
            self.not_before = self.clock() + retry_after
        return Snapshot.failed(self.ref, taken_at, failure, duration)

    def _record(self, snapshot: Snapshot) -> None:
        ref = self.ref
        self.metrics.poll_duration.labels(ref.kind, ref.name).observe(snapshot.duration)
        self.latest = snapshot
        if snapshot.failure is not None:
            failure = snapshot.failure
            self.metrics.poll_errors.labels(ref.kind, ref.name, failure.reason, failure.code).inc()
            if self.up is not False:
                log.warning(
                    "source down",
                    extra={
                        "source": str(ref),
                        "reason": failure.reason,
                        "code": failure.code,
                        "error": failure.message,
                    },
                )
                self.down_since = snapshot.taken_at
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
        self.last_good = snapshot
