"""The saved transition stream: alert state and transitions in one transaction, consumers that
drain it at their own pace, and what happens when the disk is full."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import log_lines, saved_transitions
from prometheus_client import CollectorRegistry

from monitor.alerting.engine import AlertEngine
from monitor.alerting.rules import load_rule_files
from monitor.alerting.silences import Silencer
from monitor.alerting.transitions import Transition, TransitionKind
from monitor.model import Entity, Snapshot, SourceRef
from monitor.outbox import ConsumerRunner, Outbox, OutboxMetrics
from monitor.sources import ENTITY_KINDS
from monitor.store import Store

OME = SourceRef("ome", "origin")
# A name long enough that the alert's rows cannot fit in a page the database already has, so a
# database capped at its current size refuses the write, as a full disk would.
LONG = "s" * 9000

RULES = """
groups:
  - name: ome
    rules:
      - alert: Stalled
        kind: ome.stream
        expr: age(last_recv) > 10
        for: 10s
        labels: {severity: critical}
        annotations: {summary: "stalled {{ stream | length }}"}
        actions:
          - restart: {after: 30s}
          - hls_dump: {duration: 60s, output_path: "/dumps/{{ app }}/{{ fired_at_str }}"}
"""


@pytest.fixture
def engine_and_store(tmp_path: Path, clock):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    store = Store(tmp_path / "state.sqlite3")
    engine = AlertEngine(
        load_rule_files([str(rules)], kinds=ENTITY_KINDS),
        store=store,
        silencer=Silencer(store),
        clock=clock,
    )
    yield engine, store
    store.close()


def stalled(clock, name: str = LONG) -> Snapshot:
    labels = {"server": "origin", "vhost": "default", "app": "live", "stream": name}
    return Snapshot.of(OME, clock(), [Entity("ome.stream", labels, {"last_recv": clock() - 60})])


def test_transition_carries_target_and_rendered_actions(engine_and_store, clock):
    engine, store = engine_and_store
    engine.on_snapshot(stalled(clock, "cam1"))
    clock.advance(10)
    engine.on_snapshot(stalled(clock, "cam1"))
    pending, firing = saved_transitions(store)
    assert (pending.kind, firing.kind) == (TransitionKind.PENDING, TransitionKind.FIRING)
    assert (firing.from_state, firing.to_state) == ("pending", "firing")
    assert firing.target.source == OME
    assert firing.target.kind == "ome.stream"
    assert dict(firing.target.labels) == {
        "server": "origin",
        "vhost": "default",
        "app": "live",
        "stream": "cam1",
    }
    restart, dump = firing.actions
    assert restart == {"action": "restart", "params": {"after": 30.0, "verify_timeout": 60.0}}
    assert dump["params"]["output_path"].startswith("/dumps/live/")
    assert dump["params"]["output_path"] != "/dumps/live/", "fired_at_str was rendered"
    assert pending.id is not None and firing.id == pending.id + 1


def test_full_disk_logs_counts_retries_and_saves_each_transition_once(
    engine_and_store, clock, caplog
):
    caplog.set_level(logging.INFO)
    engine, store = engine_and_store
    store.limit_size(store.size_bytes())  # the disk is full from now on
    engine.on_snapshot(stalled(clock))
    clock.advance(10)
    engine.on_snapshot(stalled(clock))
    assert engine.write_failing and engine.write_errors == 2
    assert engine.unsaved == 2
    assert saved_transitions(store) == [], "nothing reached the outbox"
    logged = [r for r in caplog.records if r.getMessage() == "alert transition"]
    assert [r.transition for r in logged] == ["pending", "firing"], "logged while unsaved"
    assert [r.getMessage() for r in caplog.records].count("state write failed") == 1
    [(alert, _)] = engine.active_alerts()
    assert alert.state == "firing", "the API shows what the engine decided"

    assert engine.flush() is False, "still full: the retry fails and keeps everything"
    store.limit_size(None)  # space returns
    assert engine.flush() is True
    assert not engine.write_failing and engine.unsaved == 0
    saved = saved_transitions(store)
    assert [t.kind for t in saved] == ["pending", "firing"]
    assert engine.flush() is True
    clock.advance(5)
    engine.on_snapshot(stalled(clock))
    assert saved_transitions(store) == saved, "each transition exactly once"
    assert "state write recovered" in [r.getMessage() for r in caplog.records]
    assert "transition=firing alertname=Stalled" in log_lines(caplog), "fields are fields"


def test_restart_while_disk_full_announces_the_change_once_after_restart(tmp_path, clock):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("for: 10s", "for: 0s"))
    groups = load_rule_files([str(rules)], kinds=ENTITY_KINDS)
    store = Store(tmp_path / "state.sqlite3")
    engine = AlertEngine(groups, store=store, silencer=Silencer(store), clock=clock)
    store.limit_size(store.size_bytes())
    engine.on_snapshot(stalled(clock))
    assert engine.unsaved == 1
    store.close()  # the process dies before the disk has room again

    store = Store(tmp_path / "state.sqlite3")
    engine = AlertEngine(groups, store=store, silencer=Silencer(store), clock=clock)
    assert engine.active_alerts() == [], "neither the state nor the transition was saved"
    engine.on_snapshot(stalled(clock))
    assert [t.kind for t in saved_transitions(store)] == ["firing"]
    store.close()


class Recorder:
    """A consumer that records what it handled; it can be told to fail or to hang."""

    def __init__(self, name: str):
        self.name = name
        self.handled: list[int] = []
        self.fail = False
        self.hang = asyncio.Event()
        self.hang.set()
        self.called = asyncio.Event()
        self.done = asyncio.Event()

    async def handle(self, transitions: Sequence[Transition]) -> Sequence[int]:
        self.called.set()
        await self.hang.wait()
        if self.fail:
            raise RuntimeError("receiver down")
        ids = [t.id for t in transitions if t.id is not None]
        self.handled += ids
        self.done.set()
        return ids


async def test_consumers_drain_at_their_own_pace_and_ack_only_after_success(
    engine_and_store, clock
):
    engine, store = engine_and_store
    fast, slow = Recorder("fast"), Recorder("slow")
    slow.hang.clear()
    metrics = OutboxMetrics(CollectorRegistry())
    runners = {c.name: ConsumerRunner(store, c, metrics, clock=clock) for c in (fast, slow)}
    for runner in runners.values():
        store.register_consumer(runner.name, clock())
    engine.on_snapshot(stalled(clock, "a"))
    ids = [t.id for t in saved_transitions(store)]

    assert await runners["fast"].drain_once() == 1
    assert fast.handled == ids
    assert store.outbox_pending("fast") == []

    # The slow consumer hangs inside handle(): the engine and the fast consumer go on.
    hung = asyncio.create_task(runners["slow"].drain_once())
    await asyncio.wait_for(slow.called.wait(), 5)
    clock.advance(10)
    engine.on_snapshot(stalled(clock, "a"))
    assert await runners["fast"].drain_once() == 1
    assert len(fast.handled) == 2
    assert [e.id for e in store.outbox_pending("slow")] == fast.handled, "slow acked nothing"

    slow.fail = True
    slow.hang.set()
    with pytest.raises(RuntimeError):
        await hung
    assert len(store.outbox_pending("slow")) == 2, "a failed batch is not acknowledged"
    slow.fail = False
    assert await runners["slow"].drain_once() == 2
    assert slow.handled == fast.handled, "same transitions, same ids, same order"
    assert store.outbox_depth() == {"fast": 0, "slow": 0}


async def test_outbox_runs_consumers_and_wakes_them_on_save(engine_and_store, clock):
    engine, store = engine_and_store
    recorder = Recorder("hook")
    outbox = Outbox(store, [recorder], CollectorRegistry(), clock=clock)
    engine.on_saved = outbox.wake
    store.register_consumer("hook", clock())  # as the runner does first; idempotent
    async with outbox.running():
        engine.on_snapshot(stalled(clock, "a"))
        await asyncio.wait_for(recorder.done.wait(), 5)
    assert recorder.handled == [t.id for t in saved_transitions(store)]
    outbox.refresh_depth()
    assert store.outbox_depth() == {"hook": 0}


def test_a_new_consumer_starts_from_now_and_prune_keeps_what_is_unhandled(engine_and_store, clock):
    engine, store = engine_and_store
    store.register_consumer("old", clock())
    engine.on_snapshot(stalled(clock, "a"))
    assert store.register_consumer("new", clock()) is True
    assert store.outbox_pending("new") == [], "history is not replayed to a new consumer"
    assert len(store.outbox_pending("old")) == 1
    assert store.prune_outbox(clock() + 1, ["old", "new"]) == 0, "old has not handled it"
    store.outbox_ack("old", [e.id for e in store.outbox_pending("old")], clock())
    assert store.prune_outbox(clock() + 1, ["old", "new"]) == 1


def test_acks_out_of_order_move_the_floor_only_over_a_gapless_run(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.register_consumer("c", 0)
    ids = store.save_alerts([], [], [(float(i), "firing", "g/r", "fp", "{}") for i in range(4)])
    store.outbox_ack("c", [ids[1], ids[3]], 0)
    assert [e.id for e in store.outbox_pending("c")] == [ids[0], ids[2]]
    store.outbox_ack("c", [ids[0]], 0)
    assert [e.id for e in store.outbox_pending("c")] == [ids[2]]
    store.outbox_ack("c", [ids[2]], 0)
    assert store.outbox_pending("c") == []
    store.close()


def test_components_version_their_own_tables(tmp_path):
    from monitor.store import StateError

    store = Store(tmp_path / "s.sqlite3")
    store.migrate_part("log", ["CREATE TABLE sent (id INTEGER PRIMARY KEY)"])
    store.execute("INSERT INTO sent (id) VALUES (?)", (7,))
    store.migrate_part(
        "log", ["CREATE TABLE sent (id INTEGER PRIMARY KEY)", "ALTER TABLE sent ADD COLUMN at REAL"]
    )
    assert store.query("SELECT id, at FROM sent") == [(7, None)], "applied once, in order"
    with pytest.raises(StateError, match="the log tables are at version 2, newer"):
        store.migrate_part("log", ["CREATE TABLE sent (id INTEGER PRIMARY KEY)"])
    store.close()
