"""The coordinator around one source: overlapping polls are skipped and said once."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from monitor.model import Entity
from monitor.sources.base import Source, SourceContext, SourceMetrics
from monitor.sources.poller import SourcePoller


class Slow(Source):
    kind = "ome"

    def __init__(self, context: SourceContext):
        super().__init__("slow", 1.0, 1.0, context)
        self.release = asyncio.Event()
        self.polls = 0

    async def poll(self) -> list[Entity]:
        self.polls += 1
        await self.release.wait()
        return []


async def test_an_overrun_is_logged_once_and_polls_never_overlap(caplog, clock):
    caplog.set_level(logging.DEBUG, logger="monitor.sources.poller")
    metrics = SourceMetrics(CollectorRegistry())
    source = Slow(SourceContext(metrics=metrics, clock=clock))
    poller = SourcePoller(source, metrics, clock=clock)
    first = asyncio.ensure_future(poller.refresh())
    await asyncio.sleep(0)  # the first poll takes the lock and waits
    assert [await poller.refresh() for _ in range(3)] == [None, None, None]
    assert await poller.refresh(requested=True) is None
    source.release.set()
    assert (await first) is not None and source.polls == 1
    skipped = [r for r in caplog.records if "poll skipped" in r.getMessage()]
    assert [r.levelname for r in skipped] == ["WARNING", "DEBUG", "DEBUG", "DEBUG"]
    # The next overrun is news again.
    source.release.clear()
    second = asyncio.ensure_future(poller.refresh())
    await asyncio.sleep(0)
    await poller.refresh()
    source.release.set()
    await second
    assert [r.levelname for r in caplog.records if "poll skipped" in r.getMessage()][
        -1
    ] == "WARNING"
