"""The coordinator around one source: overlapping polls are skipped quietly, and a poll that
outlasts its interval stretches the effective interval, which is said once."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from monitor.model import Entity
from monitor.sources.base import Source, SourceContext, SourceMetrics
from monitor.sources.poller import SourcePoller


class Slow(Source):
    """Each poll waits for `release`, then lasts `takes` seconds of the fake clock."""

    kind = "ome"

    def __init__(self, context: SourceContext, clock):
        super().__init__("slow", 1.0, 1.0, context)
        self.release = asyncio.Event()
        self.polls = 0
        self.takes = 0.0
        self.fake = clock

    async def poll(self) -> list[Entity]:
        self.polls += 1
        await self.release.wait()
        self.fake.advance(self.takes)
        return []


def effective(metrics: SourceMetrics) -> float:
    return metrics.effective_interval.labels("ome", "slow")._value.get()


async def test_an_overrun_is_quiet_said_once_as_a_stretch_and_polls_never_overlap(caplog, clock):
    caplog.set_level(logging.DEBUG, logger="monitor.sources.poller")
    metrics = SourceMetrics(CollectorRegistry())
    source = Slow(SourceContext(metrics=metrics, clock=clock), clock)
    poller = SourcePoller(source, metrics, clock=clock, timer=clock)
    assert effective(metrics) == 1.0
    source.takes = 2.5
    first = asyncio.ensure_future(poller.refresh(scheduled=True))
    await asyncio.sleep(0)  # the first poll takes the lock and waits
    assert [await poller.refresh(scheduled=True) for _ in range(3)] == [None, None, None]
    assert await poller.refresh(requested=True) is None
    source.release.set()
    assert (await first) is not None and source.polls == 1
    skipped = [r for r in caplog.records if r.getMessage() == "poll skipped"]
    assert [r.levelname for r in skipped] == ["DEBUG"] * 4
    # 2.5 s of a 1 s interval: the next tick that finds the poll done is 3 s after its start.
    assert effective(metrics) == 3.0 and poller.effective_interval == 3.0
    (stretched,) = [r for r in caplog.records if r.getMessage() == "effective interval stretched"]
    assert stretched.levelname == "WARNING"
    assert (stretched.interval_s, stretched.effective_interval_s, stretched.poll_duration_s) == (
        1.0,
        3.0,
        2.5,
    )
    assert stretched.cause == "slow_poll"
    # The next tick after the poll ended polls (a stretch from a slow poll needs no wait).
    source.release.clear()
    source.takes = 4.0
    second = asyncio.ensure_future(poller.refresh(scheduled=True))
    await asyncio.sleep(0)
    assert source.polls == 2
    source.release.set()
    assert (await second) is not None
    assert effective(metrics) == 4.0
    said = [r for r in caplog.records if r.getMessage() == "effective interval stretched"]
    assert len(said) == 1, "a stretch is said once, not at every overrunning poll"
    # Fast polls again: the effective interval is the interval.
    source.takes = 0.2
    clock.advance(4)
    assert await poller.refresh(scheduled=True) is not None
    assert effective(metrics) == 1.0
