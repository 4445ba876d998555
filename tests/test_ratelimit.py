"""The token bucket, driven by a fake clock whose sleep advances time (no real waits)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import FakeClock

from monitor.sources.ratelimit import RateLimitExceeded, TokenBucket


def bucket(rate: float, capacity: float, clock: FakeClock) -> TokenBucket:
    return TokenBucket(rate, capacity, clock=clock, sleep=clock.sleep)


async def test_capacity_is_free_then_acquire_waits_for_refill():
    clock = FakeClock(1000.0)
    b = bucket(rate=0.5, capacity=3, clock=clock)
    assert [await b.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert clock.slept == []
    waited = await b.acquire()
    assert waited == pytest.approx(2.0)  # one token at 0.5/s
    assert clock.slept == [pytest.approx(2.0)]


async def test_max_wait_exceeded_takes_nothing():
    clock = FakeClock(1000.0)
    b = bucket(rate=1, capacity=1, clock=clock)
    await b.acquire()
    with pytest.raises(RateLimitExceeded) as info:
        await b.acquire(max_wait=0.5)
    assert info.value.wait == pytest.approx(1.0)
    clock.now += 1.0
    assert b.try_acquire()  # the refused call left the token in place


async def test_refill_is_capped_at_capacity():
    clock = FakeClock(1000.0)
    b = bucket(rate=10, capacity=2, clock=clock)
    await b.acquire(2)
    clock.now += 3600
    assert b.available == pytest.approx(2)
    assert b.try_acquire() and b.try_acquire() and not b.try_acquire()


async def test_a_queued_reservation_counts_against_later_callers():
    clock = FakeClock(1000.0)
    never = asyncio.Event()

    async def blocked_sleep(seconds: float) -> None:
        await never.wait()

    b = TokenBucket(1, 1, clock=clock, sleep=blocked_sleep)
    await b.acquire()
    first = asyncio.ensure_future(b.acquire())  # waits 1 s for the next token
    await asyncio.sleep(0)
    assert b.wait_time() == pytest.approx(2.0)
    with pytest.raises(RateLimitExceeded) as info:
        await b.acquire(max_wait=1.5)
    assert info.value.wait == pytest.approx(2.0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_reservations_serialise_concurrent_callers():
    clock = FakeClock(1000.0)
    b = TokenBucket(1, 1, clock=clock, sleep=lambda s: asyncio.sleep(0))  # time stands still
    waits = await asyncio.gather(*(b.acquire() for _ in range(4)))
    assert waits == [0.0, pytest.approx(1.0), pytest.approx(2.0), pytest.approx(3.0)]


async def test_cancelled_wait_gives_its_reservation_back():
    clock = FakeClock(1000.0)
    never = asyncio.Event()

    async def blocked_sleep(seconds: float) -> None:
        await never.wait()

    b = TokenBucket(1, 1, clock=clock, sleep=blocked_sleep)
    await b.acquire()
    task = asyncio.ensure_future(b.acquire())
    await asyncio.sleep(0)
    assert b.available == pytest.approx(-1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.available == pytest.approx(0)


async def test_hold_delays_the_next_token():
    clock = FakeClock(1000.0)
    b = bucket(rate=1, capacity=5, clock=clock)
    b.hold(30)
    assert b.wait_time() == pytest.approx(30)
    assert await b.acquire() == pytest.approx(30)
    b.hold(0)  # never shortens anything, never adds a wait when tokens are due
    assert b.wait_time() == pytest.approx(1.0)


def test_per_window_never_exceeds_the_limit_in_any_window():
    clock = FakeClock(1000.0)
    limit, window = 50, 60.0
    b = TokenBucket.per_window(limit, window, clock=clock)
    taken: list[float] = []
    # A greedy caller checks every 0.1 s for 10 minutes.
    for _ in range(6000):
        while b.try_acquire():
            taken.append(clock.now)
        clock.now += 0.1
    worst = max(sum(1 for t in taken if start - window < t <= start) for start in taken)
    assert worst <= limit
    # ...and still uses most of it over the long run.
    assert len(taken) >= (limit - limit // 5) * 10


def test_per_window_shapes():
    b = TokenBucket.per_window(50)
    assert (b.capacity, b.rate) == (10, pytest.approx(40 / 60))
    one = TokenBucket.per_window(1)
    assert (one.capacity, one.rate) == (1, pytest.approx(1 / 60))
    with pytest.raises(ValueError):
        TokenBucket.per_window(0)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0.5)
    b = TokenBucket(1, 2)
    with pytest.raises(ValueError):
        b.try_acquire(3)
