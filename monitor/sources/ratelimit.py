"""An asyncio token bucket: a request budget shared by everything that calls one upstream.

Callers take tokens before each request. A caller that would have to wait longer than it can
afford is told so (RateLimitExceeded) and nothing is taken, so it can leave a request out
instead of stalling. Waiting callers hold a reservation (the balance goes negative), so they are
served in the order they asked and a later caller sees the queue in front of it.

The clock and the sleep are injected: tests drive the bucket with a fake clock and no real wait.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


class RateLimitExceeded(Exception):
    """Taking `cost` tokens would have meant waiting `wait` seconds, more than allowed."""

    def __init__(self, wait: float, cost: float) -> None:
        super().__init__(f"rate limit: {cost:g} token(s) need a wait of {wait:.1f}s")
        self.wait = wait
        self.cost = cost


class TokenBucket:
    """`capacity` tokens at most, refilled at `rate` tokens per second.

    In any window of W seconds at most `capacity + rate * W` tokens are taken; `per_window`
    builds a bucket whose bound equals a given limit.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = clock()

    @classmethod
    def per_window(
        cls,
        limit: int,
        window: float = 60.0,
        *,
        burst: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> TokenBucket:
        """A bucket that never allows more than `limit` tokens in any `window` seconds.

        `burst` tokens are available at once (default a fifth of the limit) and the rest of the
        limit trickles in over the window, so burst + refill over one window == limit. A plain
        bucket with capacity == limit would allow almost twice the limit in a sliding window.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if limit == 1:
            return cls(1.0 / window, 1, clock=clock, sleep=sleep)
        burst = max(1, limit // 5) if burst is None else burst
        burst = min(max(1, burst), limit - 1)
        return cls((limit - burst) / window, burst, clock=clock, sleep=sleep)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)  # a clock stepping back refills nothing
        self._stamp = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)

    @property
    def available(self) -> float:
        """Tokens that can be taken now (negative while callers wait on reservations)."""
        self._refill()
        return self._tokens

    def wait_time(self, cost: float = 1) -> float:
        """Seconds until `cost` tokens could be taken, counting reservations already made."""
        self._refill()
        return max(0.0, (cost - self._tokens) / self.rate)

    def try_acquire(self, cost: float = 1) -> bool:
        """Take `cost` tokens if they are there now; never waits."""
        self._check_cost(cost)
        if self.wait_time(cost) > 0:
            return False
        self._tokens -= cost
        return True

    async def acquire(self, cost: float = 1, *, max_wait: float | None = None) -> float:
        """Take `cost` tokens, waiting for them if needed; returns the seconds waited.

        Raises RateLimitExceeded (and takes nothing) when the wait would exceed `max_wait`
        (None: wait as long as needed). A cancelled wait gives its reservation back.
        """
        self._check_cost(cost)
        wait = self.wait_time(cost)
        if max_wait is not None and wait > max_wait:
            raise RateLimitExceeded(wait, cost)
        self._tokens -= cost
        if wait > 0:
            try:
                await self._sleep(wait)
            except BaseException:
                self._tokens += cost
                raise
        return wait

    def hold(self, seconds: float) -> None:
        """Make the next token available no sooner than `seconds` from now (an upstream said
        "retry after"). Never shortens a wait already due. Callers cap `seconds`; a value
        that is no delay (inf, nan) would stop the bucket for good and is refused."""
        if not math.isfinite(seconds):
            raise ValueError(f"hold needs a finite number of seconds, got {seconds!r}")
        self._refill()
        self._tokens = min(self._tokens, 1 - max(0.0, seconds) * self.rate)

    def _check_cost(self, cost: float) -> None:
        if cost <= 0 or cost > self.capacity:
            raise ValueError(f"cost must be in (0, {self.capacity:g}]")

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:.4g}/s, capacity={self.capacity:g})"
