"""The guard's global concurrency cap: at most `concurrency` attempts execute at once,
whatever their targets; the others wait their turn rather than being dropped."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from monitor.actions.audit import ActionLog
from monitor.actions.config import GuardConfig
from monitor.actions.guard import Attempt, Guard
from monitor.actions.metrics import ActionMetrics
from monitor.model import SourceRef, Target
from monitor.sources.verbs import VerbResult
from monitor.store import Store


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_at_most_concurrency_attempts_run_at_once(tmp_path, concurrency):
    store = Store(tmp_path / "state.sqlite3")
    audit = ActionLog(store)
    running: list[str] = []
    most = 0
    release = asyncio.Event()
    started = asyncio.Event()

    async def execute(attempt: Attempt, attempt_id: int, calls) -> VerbResult:
        nonlocal most
        running.append(attempt.target.labels["stream"])
        most = max(most, len(running))
        if len(running) >= concurrency:
            started.set()
        await release.wait()
        running.remove(attempt.target.labels["stream"])
        return VerbResult(True, "done")

    guard = Guard(
        audit,
        ActionMetrics(CollectorRegistry(), lambda: {}),
        execute,
        concurrency=concurrency,
    )
    attempts = [
        Attempt(
            action="restart",
            target=Target(
                SourceRef("ome", "origin"),
                "ome.stream",
                {"server": "origin", "vhost": "default", "app": "live", "stream": f"s{n}"},
            ),
            params={},
            guard=GuardConfig(),
        )
        for n in range(4)
    ]
    tasks = [asyncio.create_task(guard.run(a)) for a in attempts]
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0)  # let any attempt that could slip past the cap do so
    assert len(running) == concurrency
    release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert [o.result for o in outcomes] == ["ok"] * 4, "the others waited, none was dropped"
    assert most == concurrency
    store.close()
