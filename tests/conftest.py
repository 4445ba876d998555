"""Shared test helpers: a clock the test moves by hand, and small factories."""

from __future__ import annotations

import asyncio

import pytest


class FakeClock:
    """A `Callable[[], float]` clock that moves only when the test says so.

    `sleep` is an async stand-in for `asyncio.sleep` that moves the clock instead of waiting
    (it still yields once to the loop); every call is kept in `slept`."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def scrape(exporter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an Exporter's text output, parsed back by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = exporter.render()[0].decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(exporter, name: str, **labels: str) -> float | None:
    return scrape(exporter).get((name, frozenset(labels.items())))


def outbox_mark(store) -> int:
    """The id of the newest saved transition (0 when there is none)."""
    entries = store.outbox_entries(0, 1_000_000)
    return entries[-1].id if entries else 0


def saved_transitions(store, after: int = 0) -> list:
    """The transitions in the outbox after `after`, oldest first, as consumers read them."""
    from monitor.alerting.transitions import Transition

    return [Transition.from_json(e.body, e.id) for e in store.outbox_entries(after, 1_000_000)]


def log_lines(caplog) -> str:
    """The captured records as the daemon writes them (logfmt, fields included), so a test
    that looks for a secret or a value sees what an operator's journal would hold."""
    from monitor.logs import LogfmtFormatter

    formatter = LogfmtFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)
