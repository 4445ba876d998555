"""Consumers of the saved transition stream, each draining the outbox at its own pace.

A consumer (a notifier, the action runner) gets the transitions it has not acknowledged, in
order, in batches, and returns the ids it has handled; only those are acknowledged, and only
after `handle` returned. So a crash (even `kill -9`) between handling and acknowledging hands
the same transitions, with the same ids, to the consumer again after the restart: delivery is
at least once, and the stable id (`Transition.id`) lets the consumer or its receiver drop the
repeat (Alertmanager's notification log works the same way: a send is recorded only after it
succeeded). A consumer whose effect lives in the state database can make it exactly once by
saving its effect and calling `store.outbox_ack` inside one `store.transaction()`.

Each consumer runs in its own task: one that fails or hangs delays only itself, never the
evaluation or another consumer. A failing batch is retried with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.alerting.transitions import Transition
from monitor.store import Store

log = logging.getLogger(__name__)

BATCH = 100
IDLE_RECHECK = 5.0  # seconds between looks at the outbox when nobody woke the consumer
BACKOFF_MIN = 1.0
BACKOFF_MAX = 300.0


class Consumer(Protocol):
    """Something that acts on transitions. `name` is its saved position's key: keep it stable
    (a renamed consumer starts afresh from the newest transition)."""

    @property
    def name(self) -> str: ...

    async def handle(self, transitions: Sequence[Transition]) -> Sequence[int]:
        """Handle transitions (oldest first); return the ids that are done. Ids not returned
        come again in the next batch; raising retries the whole batch after a backoff."""
        ...


class ConsumerRunner:
    """Drains the outbox for one consumer."""

    def __init__(
        self,
        store: Store,
        consumer: Consumer,
        metrics: OutboxMetrics,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = asyncio.sleep,
    ):
        self.store = store
        self.consumer = consumer
        self.metrics = metrics
        self.clock = clock
        self._sleep = sleep
        self._wake = asyncio.Event()
        self.failing = False

    @property
    def name(self) -> str:
        return self.consumer.name

    def wake(self) -> None:
        self._wake.set()

    async def drain_once(self) -> int:
        """Hand one batch to the consumer and acknowledge what it did. Returns how many
        transitions were acknowledged; raises what the consumer raised."""
        entries = self.store.outbox_pending(self.name, BATCH)
        if not entries:
            return 0
        transitions = [Transition.from_json(e.body, e.id) for e in entries]
        done = list(await self.consumer.handle(transitions))
        if done:
            self.store.outbox_ack(self.name, done, self.clock())
        return len(done)

    async def run(self) -> None:
        self.store.register_consumer(self.name, self.clock())
        backoff = BACKOFF_MIN
        while True:
            self._wake.clear()
            try:
                handled = await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.errors.labels(self.name).inc()
                if not self.failing:
                    log.warning(
                        "outbox consumer failed",
                        extra={"consumer": self.name, "error": _describe(exc)},
                    )
                self.failing = True
                # Full jitter: consumers that failed together do not retry together.
                await self._sleep(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if self.failing:
                log.info("outbox consumer recovered", extra={"consumer": self.name})
            self.failing, backoff = False, BACKOFF_MIN
            if handled:
                self.metrics.handled.labels(self.name).inc(handled)
                continue  # there may be more
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_RECHECK):
                    await self._wake.wait()


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.handled = Counter(
            "streamwatch_outbox_handled_total",
            "Transitions a consumer handled and acknowledged.",
            ["consumer"],
            registry=registry,
        )
        self.errors = Counter(
            "streamwatch_outbox_consumer_errors_total",
            "Batches a consumer failed to handle (each is retried with backoff).",
            ["consumer"],
            registry=registry,
        )


class Outbox:
    """The consumers of one daemon: started and stopped together, woken when the engine saved
    new transitions."""

    def __init__(
        self,
        store: Store,
        consumers: Sequence[Consumer],
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.metrics = OutboxMetrics(registry)
        self._clock = clock
        self.runners = [ConsumerRunner(store, c, self.metrics, clock=clock) for c in consumers]
        self._depth: dict[str, int] = {}
        registry.register(_DepthCollector(lambda: self._depth))

    def add(self, consumers: Sequence[Consumer]) -> None:
        """More consumers, before `running()`."""
        self.runners += [
            ConsumerRunner(self.store, c, self.metrics, clock=self._clock) for c in consumers
        ]

    def wake(self) -> None:
        for runner in self.runners:
            runner.wake()

    def refresh_depth(self) -> None:
        """Unacknowledged transitions per consumer, for /metrics (read there, not queried
        from the scrape thread)."""
        try:
            depth = self.store.outbox_depth()
        except sqlite3.Error:
            return
        self._depth = {runner.name: depth.get(runner.name, 0) for runner in self.runners}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Outbox]:
        tasks = [asyncio.create_task(r.run(), name=f"outbox:{r.name}") for r in self.runners]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class _DepthCollector(Collector):
    def __init__(self, depth: Callable[[], dict[str, int]]):
        self._depth = depth

    def describe(self) -> list[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamwatch_outbox_pending",
            "Saved transitions a consumer has not handled yet.",
            labels=["consumer"],
        )

    def collect(self) -> list[Metric]:
        family = self._family()
        for name, depth in sorted(self._depth().items()):
            family.add_metric([name], depth)
        return [family]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
