"""A runner over a real engine, store and OME source (the simulator on loopback), with a fake
clock: what the actions tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import FakeClock, saved_transitions
from prometheus_client import CollectorRegistry

from monitor.actions.config import ActionsConfig
from monitor.actions.runner import ActionRunner
from monitor.alerting.engine import AlertEngine
from monitor.alerting.rules import load_rule_files
from monitor.alerting.silences import Silencer
from monitor.alerting.transitions import Transition
from monitor.model import Entity, Snapshot, SourceRef
from monitor.outbox import ConsumerRunner, OutboxMetrics
from monitor.sources import ENTITY_KINDS
from monitor.sources.base import SourceContext, SourceMetrics
from monitor.sources.ome.config import OmeSourceConfig
from monitor.sources.ome.source import OmeSource
from monitor.store import Store

OME = SourceRef("ome", "origin")
TOKEN = "actions-token"
STREAM = {"server": "origin", "vhost": "default", "app": "live", "stream": "main"}


class Harness:
    def __init__(
        self, tmp_path: Path, clock: FakeClock, url: str, rules: str, actions: dict[str, Any]
    ):
        self.tmp_path = tmp_path
        self.clock = clock
        self.registry = CollectorRegistry()
        rule_file = tmp_path / "rules.yaml"
        rule_file.write_text(rules)
        self.store = Store(tmp_path / "state.sqlite3")
        self.engine = AlertEngine(
            load_rule_files([str(rule_file)], kinds=(*ENTITY_KINDS, "streamwatch.remediation")),
            store=self.store,
            silencer=Silencer(self.store),
            clock=clock,
        )
        config = OmeSourceConfig(name="origin", url=url, access_token=TOKEN)
        self.ome = OmeSource(
            config, SourceContext(metrics=SourceMetrics(self.registry), clock=clock)
        )
        self.config = ActionsConfig.model_validate(actions)
        self.runner = self.new_runner()

    def new_runner(self) -> ActionRunner:
        self.store.register_consumer("actions", self.clock())
        engine = self.engine

        def push(ref: SourceRef, entities: list[Entity]) -> None:
            engine.on_snapshot(Snapshot(ref, self.clock(), tuple(entities), partial=True))

        def state(rule: str, fp: str):
            alert = engine.alerts.get(rule, {}).get(fp)
            return alert.state if alert is not None else None

        runner = ActionRunner(
            self.store,
            self.config,
            registry=CollectorRegistry(),
            source_of=lambda target: self.ome if target.source == OME else None,
            dumps_root=self.tmp_path / "dumps",
            push=push,
            alert_state=state,
            mutes=engine.silencer.mutes,
            clock=self.clock,
            sleep=self.clock.sleep,
        )
        self.consumer = ConsumerRunner(
            self.store, runner, OutboxMetrics(CollectorRegistry()), clock=self.clock
        )
        return runner

    async def open(self) -> None:
        await self.ome.open()

    async def close(self) -> None:
        await self.ome.close()
        self.store.close()

    async def poll(self) -> list[Transition]:
        """A poll of OME through the rules, the outbox drained by the runner, due jobs run."""
        entities = await self.ome.poll()
        self.engine.on_snapshot(Snapshot.of(OME, self.clock(), entities))
        await self.consumer.drain_once()
        await self.runner.run_due()
        return saved_transitions(self.store)

    def engine_transitions(self) -> list[Transition]:
        return saved_transitions(self.store)

    def attempts(self, **where: str) -> list[dict[str, Any]]:
        rows = self.runner.audit.attempts(limit=1000)
        rows = [r for r in rows if all(r[k] == v for k, v in where.items())]
        return list(reversed(rows))  # oldest first
