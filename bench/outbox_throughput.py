"""Benchmark: 10,000 transitions through the outbox (the saved transition stream).

Measures, in a temporary state directory (removed afterwards):
  - engine: `AlertEngine.on_snapshot` producing and saving the transitions (N/2 streams fire in one
    evaluation, then resolve in the next: two rounds of N/2 transitions each, alert rows included);
  - save: `Store.save_alerts` with the same real `Transition.to_json()` bodies, in batches of
    `--batch` transitions per transaction (an evaluation round's worth; no alert rows);
  - drain: `monitor.outbox.Outbox` with one, then two consumers that only return the ids they are
    given (the time until every consumer has acknowledged every transition).
Prints transitions/s for each. Run: python bench/outbox_throughput.py [--count 10000] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor.alerting.engine import AlertEngine
from monitor.alerting.rules import load_rule_files
from monitor.alerting.silences import Silencer
from monitor.alerting.transitions import Transition
from monitor.model import Entity, Snapshot, SourceRef
from monitor.outbox import Outbox
from monitor.sources import ENTITY_KINDS
from monitor.store import Store

RULES = """
groups:
  - name: bench
    rules:
      - alert: IngestStalled
        kind: ome.stream
        expr: present and age(last_recv) > 10
        for: 0s
        labels: {severity: critical}
        annotations: {summary: "{{ app }}/{{ stream }} stalled"}
        actions:
          - id3_event: {frames: [{frameType: TXXX, info: streamwatch, data: "{{ alertname }}"}]}
          - restart: {after: 30s}
"""

OME = SourceRef("ome", "bench")


def snapshot(now: float, streams: int, stalled: bool) -> Snapshot:
    last_recv = now - 60 if stalled else now
    entities = [
        Entity(
            "ome.stream",
            {"server": "bench", "vhost": "default", "app": "live", "stream": f"s{i:05d}"},
            {"last_recv": last_recv},
        )
        for i in range(streams)
    ]
    return Snapshot.of(OME, now, entities)


def through_engine(tmp: Path, count: int) -> tuple[float, list[Transition]]:
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    store = Store(tmp / "engine.sqlite3")
    try:
        engine = AlertEngine(
            load_rule_files([str(rules)], kinds=ENTITY_KINDS),
            store=store,
            silencer=Silencer(store),
        )
        streams = count // 2
        now = time.time()
        fire, resolve = snapshot(now, streams, True), snapshot(now + 1, streams, False)
        start = time.perf_counter()
        engine.on_snapshot(fire)
        engine.on_snapshot(resolve)
        elapsed = time.perf_counter() - start
        saved = [Transition.from_json(e.body, e.id) for e in store.outbox_entries(0, count * 2)]
        assert len(saved) == streams * 2, len(saved)
        return elapsed, saved
    finally:
        store.close()


def through_store(store: Store, transitions: Sequence[Transition], batch: int) -> float:
    rows = [(t.at, t.kind.value, t.rule, t.fingerprint, t.to_json()) for t in transitions]
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        store.save_alerts([], [], rows[i : i + batch])
    return time.perf_counter() - start


class Returner:
    def __init__(self, name: str, expected: int):
        self.name = name
        self.expected = expected
        self.handled = 0
        self.done = asyncio.Event()

    async def handle(self, transitions: Sequence[Transition]) -> Sequence[int]:
        self.handled += len(transitions)
        if self.handled >= self.expected:
            self.done.set()
        return [t.id for t in transitions if t.id is not None]


async def drain(store: Store, consumers: Sequence[Returner]) -> float:
    outbox = Outbox(store, consumers, CollectorRegistry())
    start = time.perf_counter()
    async with outbox.running():
        await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in consumers)), 600)
    elapsed = time.perf_counter() - start
    assert all(n == 0 for n in store.outbox_depth().values()), store.outbox_depth()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    n = args.count

    def line(what: str, seconds: float, count: int = n) -> None:
        print(f"{what:<44} {seconds * 1000:9.1f} ms  {count / seconds:10,.0f} transitions/s")

    with tempfile.TemporaryDirectory(prefix="streamwatch-bench-") as name:
        tmp = Path(name)
        engine_s, transitions = through_engine(tmp, n)
        line("save via AlertEngine (2 rounds of N/2)", engine_s, len(transitions))
        for consumers in (1, 2):
            store = Store(tmp / f"outbox-{consumers}.sqlite3")
            try:
                names = [f"bench-{i}" for i in range(consumers)]
                for consumer in names:
                    store.register_consumer(consumer, time.time())
                save_s = through_store(store, transitions, args.batch)
                if consumers == 1:
                    line(f"save via Store.save_alerts (batches of {args.batch})", save_s)
                drain_s = drain(store, [Returner(c, len(transitions)) for c in names])
                drain_s = asyncio.run(drain_s)
                line(f"drain, {consumers} consumer(s) (each sees all)", drain_s)
            finally:
                store.close()


if __name__ == "__main__":
    main()
