"""What every source's config shares, whichever the upstream: the name, the response body
cap, the Retry-After cap, the poll's safety bound, and the bounded durations that `interval`
and `timeout` are made of. Each vendor's `config.py` builds its model on `SourceConfig`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, model_validator

from monitor.schema import SourceName, Strict, format_duration, parse_duration
from monitor.sources.http import DEFAULT_MAX_BODY, parse_byte_size

# A byte count: an int, or a string such as `64MiB`, `512KiB`, `10MB` (see parse_byte_size).
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]

# The bounds of every source's durations, in seconds.
INTERVAL_BOUNDS = (1.0, 86400.0)  # polling more often than every second is a typo
TIMEOUT_BOUNDS = (0.1, 300.0)
MAX_RETRY_AFTER_BOUNDS = (1.0, 86400.0)
MAX_POLL_TIME_BOUNDS = (1.0, 86400.0)
DEFAULT_MAX_RETRY_AFTER = 300.0


def bounded_duration(low: float, high: float) -> Any:
    """A duration in [low, high]. A bare number is refused with a hint that never suggests a
    value the bounds would then refuse."""
    span = f"between {format_duration(low)} and {format_duration(high)}"

    def parse(value: Any) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if low <= value <= high:
                raise ValueError(f"a duration needs a unit, like '{value:g}s'")
            raise ValueError(f"a duration needs a unit (ms, s, m, h or d) and must be {span}")
        return parse_duration(value)

    def check(seconds: float) -> float:
        if not low <= seconds <= high:
            raise ValueError(f"{format_duration(seconds)} is out of range: {span}")
        return seconds

    return Annotated[float, BeforeValidator(parse), AfterValidator(check)]


# Each vendor model declares `interval` and `timeout` with its own default, of these types.
Interval = bounded_duration(*INTERVAL_BOUNDS)
Timeout = bounded_duration(*TIMEOUT_BOUNDS)
RetryAfterCap = bounded_duration(*MAX_RETRY_AFTER_BOUNDS)
PollTimeBound = bounded_duration(*MAX_POLL_TIME_BOUNDS)


class SourceConfig(Strict):
    name: SourceName
    # A larger response fails the request as bad_response: a broken or hostile upstream
    # cannot make the daemon buffer without bound.
    max_body: ByteSize = DEFAULT_MAX_BODY
    # A Retry-After (or a 429's hold) longer than this, or not a sane number, is cut to this:
    # one answer cannot stop polling for good.
    max_retry_after: RetryAfterCap = DEFAULT_MAX_RETRY_AFTER
    # The safety bound on one whole poll. None: max(interval + timeout, 10 x interval).
    max_poll_time: PollTimeBound | None = None

    @model_validator(mode="after")
    def _poll_time_fits_a_request(self) -> SourceConfig:
        timeout = getattr(self, "timeout", None)
        if self.max_poll_time is not None and timeout is not None and timeout > self.max_poll_time:
            raise ValueError(
                f"timeout ({format_duration(timeout)}) must not exceed max_poll_time "
                f"({format_duration(self.max_poll_time)}): not even one request could finish"
            )
        return self
