"""The one place that spells out how data travels through the daemon:

    source manager ──► Snapshot ──┬──► exporter (rendered for /metrics, off the loop)
                                  └──► rule engine ──► alert state + transitions (one SQLite
                                       transaction: the outbox) ──► consumers, each draining
                                       the outbox at its own pace (notifiers, action runner)

A source that leaves the config goes the same way: its alerts resolve through the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from monitor.alerting.engine import AlertEngine
from monitor.export import Exporter
from monitor.model import Snapshot, SourceRef
from monitor.outbox import Outbox

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        engine: AlertEngine,
        exporter: Exporter,
        outbox: Outbox | None,
        listeners: Sequence[Callable[[Snapshot], None]] = (),
    ):
        self.engine = engine
        self.exporter = exporter
        self.outbox = outbox
        # Render for /metrics after each poll only when something serves it.
        self.warm_exporter = False
        self.listeners = listeners  # observers after the engine (tests, embedding)
        self._tasks: set[asyncio.Task[Any]] = set()
        if outbox is not None:
            engine.on_saved = outbox.wake

    def on_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.ok and not snapshot.partial and self.warm_exporter:
            self._spawn(self.exporter.warm_soon())
        try:
            self.engine.on_snapshot(snapshot)
        except Exception:
            # A bug in evaluation must not stop the polls that feed /metrics.
            log.exception("evaluation failed", extra={"source": str(snapshot.source)})
        for listener in self.listeners:
            listener(snapshot)

    def on_source_removed(self, ref: SourceRef) -> None:
        self.engine.forget_source(str(ref))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
