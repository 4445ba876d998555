"""The actions component as the daemon runs it: the runner over the daemon's store, sources,
engine and registry; its worker task lives exactly as long as the component."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from monitor.actions.api import routes
from monitor.actions.config import ActionsConfig
from monitor.actions.runner import ActionRunner
from monitor.alerting.transitions import AlertState
from monitor.component import Deps, Parts
from monitor.model import Entity, Snapshot, SourceRef


def dumps_root(config: ActionsConfig, state_dir: Path) -> Path:
    root = Path(config.dumps.root) if config.dumps.root else Path("dumps")
    return root if root.is_absolute() else Path(state_dir) / root


def build_runner(deps: Deps, **kwargs: object) -> ActionRunner:
    config: ActionsConfig = deps.config.actions
    engine = deps.engine

    def alert_state(rule: str, fingerprint: str) -> AlertState | None:
        alert = engine.alerts.get(rule, {}).get(fingerprint)
        return alert.state if alert is not None else None

    def push(ref: SourceRef, entities: list[Entity]) -> None:
        # The source manager's push only knows configured sources; this pseudo-source's
        # entities go to the rules directly, as a partial snapshot.
        engine.on_snapshot(Snapshot(ref, deps.clock(), tuple(entities), partial=True))

    return ActionRunner(
        deps.store,
        config,
        registry=deps.registry,
        source_of=deps.sources.owner,
        dumps_root=dumps_root(config, Path(deps.config.state_dir)),
        push=push,
        alert_state=alert_state,
        mutes=engine.silencer.mutes if engine.silencer is not None else (lambda labels, now: ()),
        clock=deps.clock,
        **kwargs,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def actions_component(deps: Deps) -> AsyncIterator[Parts]:
    runner = build_runner(deps)
    deps.actions.plug(runner.request)
    task = asyncio.create_task(runner.run(), name="actions:worker")
    try:
        yield Parts(
            consumers=[runner],
            routes=routes(runner, deps.sources),
            recent_actions=lambda: runner.audit.attempts(limit=20),
        )
    finally:
        task.cancel()
        await asyncio.gather(task, *runner._tasks.values(), return_exceptions=True)
        runner.metrics.close()
