"""Shared test helpers: a clock the test moves by hand, and small factories."""

from __future__ import annotations

import pytest


class FakeClock:
    """A `Callable[[], float]` clock that moves only when the test says so."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
