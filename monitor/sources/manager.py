"""The running sources: builds them from the config, schedules their polls, applies reload
diffs, and answers "which running source owns this entity / this target?".

It knows sources only through the registry (kind → descriptor) and hands every snapshot to one
callback (the pipeline); it never looks at what is inside a snapshot except to find an entity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pydantic import BaseModel

from monitor.model import Entity, Snapshot, SourceRef, Target
from monitor.sources.base import Clock, Source, SourceContext, SourceMetrics
from monitor.sources.poller import SourcePoller
from monitor.sources.registry import build_source, source_configs

log = logging.getLogger(__name__)

SourceKey = tuple[str, str]

# How long close() lets polls in flight finish before it cancels them (SIGTERM's drain).
DRAIN_SECONDS = 5.0


class SourceManager:
    def __init__(
        self,
        metrics: SourceMetrics,
        *,
        on_snapshot: Callable[[Snapshot], None],
        on_removed: Callable[[SourceRef], None],
        clock: Clock = time.time,
        store: Any = None,
        drain_seconds: float = DRAIN_SECONDS,
    ):
        self.metrics = metrics
        self.clock = clock
        self.store = store
        self.drain_seconds = drain_seconds
        self._on_snapshot = on_snapshot
        self._on_removed = on_removed
        self._pollers: dict[SourceKey, SourcePoller] = {}
        self._configs: dict[SourceKey, BaseModel] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._closing = False

    # -- what others may ask ------------------------------------------------------------------

    def pollers(self) -> list[SourcePoller]:
        return list(self._pollers.values())

    def source(self, ref: SourceRef) -> Source | None:
        poller = self._pollers.get((ref.kind, ref.name))
        return poller.source if poller is not None else None

    def callback_receivers(self, kind: str) -> list[Any]:
        """Running sources of `kind` that accept pushed events (e.g. NAVER callbacks)."""
        return [p.source for p in self._pollers.values() if p.ref.kind == kind]

    def find(self, kind: str, labels: Mapping[str, str]) -> tuple[Source, Entity] | None:
        """The running source whose last good snapshot holds the entity of this kind whose
        identity labels are all among `labels` (an alert's labels carry the entity's labels
        plus the rule's), and that entity. For receivers that know only labels (an
        Alertmanager webhook, an MQTT command)."""
        for poller in self._pollers.values():
            snapshot = poller.last_good
            if snapshot is None:
                continue
            for entity in snapshot.entities:
                if entity.kind == kind and all(
                    labels.get(k) == v for k, v in entity.labels.items()
                ):
                    return poller.source, entity
        return None

    def owner(self, target: Target) -> Source | None:
        """The running source a target belongs to: the one it names, if it still runs."""
        return self.source(target.source)

    # -- lifecycle ----------------------------------------------------------------------------

    def schedule_with(self, scheduler: AsyncIOScheduler) -> None:
        """Poll every source on its interval from now on (and every source added later)."""
        self._scheduler = scheduler
        for key, poller in self._pollers.items():
            self._schedule(key, poller)

    async def apply(self, sources: Any) -> None:
        """Make the running sources match `sources` (the config's `sources` section): keep
        unchanged ones (their state and sessions survive), replace changed ones (carrying
        their snapshot, health and budgets over), start new ones and close removed ones
        (their alerts resolve, their series go)."""
        wanted = source_configs(sources)
        replaced: dict[SourceKey, SourcePoller] = {}
        for key in [k for k in self._pollers if wanted.get(k) != self._configs.get(k)]:
            poller = await self._remove(key, forget=key not in wanted)
            if key in wanted:
                replaced[key] = poller
        for key, config in wanted.items():
            if key in self._pollers:
                continue
            source = build_source(key[0], config, self._context())
            old = replaced.get(key)
            if old is not None:
                source.inherit(old.source)
            await source.open()
            poller = SourcePoller(source, self.metrics, clock=self.clock)
            poller.listeners.append(lambda snapshot, p=poller: self._publish(p, snapshot))
            if old is not None:
                poller.inherit(old)
            self._pollers[key] = poller
            self._configs[key] = config
            if self._scheduler is not None:
                self._schedule(key, poller)

    async def close(self) -> None:
        """Stop scheduling, let running polls finish (and publish) for `drain_seconds`, cancel
        the rest quietly (each is logged once at info, and publishes nothing) and close every
        session. The scheduler may already be shut down: polls run in tasks of their own."""
        self._closing = True
        for key in self._pollers:
            self._unschedule(key)
        running = [t for t in self._tasks if not t.done()]
        if running:
            _, pending = await asyncio.wait(running, timeout=self.drain_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for poller in self._pollers.values():
            await poller.source.close()
        self._pollers.clear()

    async def _remove(self, key: SourceKey, *, forget: bool) -> SourcePoller:
        poller = self._pollers.pop(key)
        self._configs.pop(key, None)
        self._unschedule(key)
        await poller.cancel()
        await poller.source.close()
        if forget:
            self.metrics.forget(poller.ref)
            self._on_removed(poller.ref)
        return poller

    # -- polling ------------------------------------------------------------------------------

    async def poll_all(self) -> list[Snapshot]:
        """One poll of every source, now (for `streamwatch once` and tests)."""
        # A poll cancelled because a reload removed its source yields no snapshot, not an error.
        results = await asyncio.gather(
            *(p.refresh() for p in self._pollers.values()), return_exceptions=True
        )
        return [s for s in results if isinstance(s, Snapshot)]

    def refresh_now(self, ref: SourceRef) -> None:
        """Poll a source at once (a callback said something changed)."""
        poller = self._pollers.get((ref.kind, ref.name))
        if poller is not None and not self._closing:
            self._spawn(self._poll(poller, requested=True))

    def push(self, ref: SourceRef, entities: list[Entity]) -> None:
        """Entities an upstream pushed (callback events) go on at once, as a partial snapshot;
        /metrics takes them from the next poll."""
        if (ref.kind, ref.name) not in self._pollers:
            return
        self._on_snapshot(
            Snapshot(source=ref, taken_at=self.clock(), entities=tuple(entities), partial=True)
        )

    def _publish(self, poller: SourcePoller, snapshot: Snapshot) -> None:
        if self._pollers.get((poller.ref.kind, poller.ref.name)) is not poller:
            return  # a poll of a source that a reload has just replaced or removed
        self._on_snapshot(snapshot)

    def _context(self) -> SourceContext:
        return SourceContext(
            metrics=self.metrics,
            clock=self.clock,
            store=self.store,
            request_refresh=self.refresh_now,
            push=self.push,
        )

    @staticmethod
    def _job_id(key: SourceKey) -> str:
        return f"poll:{key[0]}/{key[1]}"

    def _schedule(self, key: SourceKey, poller: SourcePoller) -> None:
        assert self._scheduler is not None
        # A random sub-second offset keeps many sources from polling in lockstep.
        first = datetime.now(UTC) + timedelta(
            seconds=random.uniform(0, min(1.0, poller.source.interval))
        )
        self._scheduler.add_job(
            self._poll_job,
            "interval",
            seconds=poller.source.interval,
            args=[key],
            id=self._job_id(key),
            next_run_time=first,
            # Two, so that a tick during an overrunning poll reaches the poller, which skips
            # it (its lock keeps polls from overlapping) and says so once, where APScheduler
            # would warn on every tick.
            max_instances=2,
            coalesce=True,
            misfire_grace_time=max(1, int(poller.source.interval)),
        )

    def _unschedule(self, key: SourceKey) -> None:
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                self._scheduler.remove_job(self._job_id(key))

    async def _poll_job(self, key: SourceKey) -> None:
        """What the scheduler runs on each tick. The poll itself runs
        in a task of the manager's, shielded: APScheduler cancels its jobs when it shuts down,
        and logs a cancelled job as an ERROR with a traceback, while a poll in flight at
        SIGTERM should finish within `drain_seconds` (close() waits for it). So this wrapper
        never raises."""
        poller = self._pollers.get(key)
        if poller is None or self._closing:
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            poll = self._spawn(self._poll(poller, requested=False))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(poll)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _poll(self, poller: SourcePoller, requested: bool) -> None:
        try:
            await poller.refresh(requested=requested, scheduled=not requested)
        except asyncio.CancelledError:
            # Cut short by close() after the drain, or by a reload removing the source: the
            # poll publishes nothing (its snapshot never reached the listeners).
            if self._closing:
                log.info("poll cancelled at shutdown", extra={"source": str(poller.ref)})
            raise
        except Exception:
            # A listener's bug (the pipeline): said here, once, with its traceback; the next
            # tick polls again.
            log.exception("poll failed", extra={"source": str(poller.ref)})

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def configured_sources(sources: Any) -> Sequence[SourceRef]:
    """Every source the config's `sources` section names."""
    return [SourceRef(kind, name) for kind, name in source_configs(sources)]
