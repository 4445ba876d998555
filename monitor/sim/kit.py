"""The control kit the three simulators share: faults, a schedule and a call log, kept by
`Controls`. `monitor.sim.control.Simulator` adds the HTTP side (the `/_sim` API and `app()`).

Faults (`Fault`, added with `fail`, `unauthorized`, `delay`, `bad_json`, `truncate`,
`reset_connection`, or `POST /_sim/faults`):

- `path` is an fnmatch glob, case-sensitive, matched against the request path as sent (percent
  escapes kept, no query string); `*` also crosses `/`. None matches every path.
- `method` is one HTTP method, or None for every method.
- `count` is how many matching requests the fault takes: 1 unless told, None until cleared.
- Kinds: `status` answers the vendor's documented error body for `status` / `code` (with
  `Retry-After` when `retry_after` is set); `delay` holds the request `seconds` (at most
  `MAX_DELAY`; cut short when the app shuts down) and then lets it go on; `bad_json` answers what
  the simulator would have answered with its body cut in half; `truncate` announces the whole
  body and closes the connection halfway through it; `reset` resets the connection (TCP RST)
  without answering (HTTP clients such as aiohttp retry an idempotent request once when a
  kept-alive connection is reset, so `count=2` is what such a client sees as one failure).
- Faults are tried in the order they were added, before authentication (a failing server fails
  whatever the credentials). Delays add up; the first other matching fault decides the answer.
  `/_sim/...` requests are never faulted and never logged.

Schedule: `schedule(at, action, **kwargs)` runs the named action (a fault verb or one of the
simulator's `ACTIONS`) once `at` seconds have passed since the simulator was built
(`started_at`, read from the injected clock). Due entries run in time order when the next request
arrives or `tick()` is called; nothing runs in the background, so a test moves its clock and
sends a request.

Call log: every other request as a `Call` (time, method, path, query, status, body), newest last,
bounded to `call_log_size` entries.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)

Clock = Callable[[], float]

FAULT_KINDS = ("status", "delay", "bad_json", "truncate", "reset")
FAULT_ACTIONS = (
    "fail",
    "unauthorized",
    "delay",
    "bad_json",
    "truncate",
    "reset_connection",
    "clear_faults",
)
MAX_DELAY = 300.0
CALL_LOG_SIZE = 10_000
NO_ANSWER = 0  # the status logged for a request whose connection was reset


class UnknownAction(ValueError):
    """An action name the simulator does not have."""


@dataclass(eq=False)
class Fault:
    """One injected failure; see the module docstring for the rules."""

    kind: str
    count: int | None = 1
    path: str | None = None
    method: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if self.count is not None:
            if isinstance(self.count, bool) or int(self.count) < 1:
                raise ValueError("count must be at least 1, or null for until cleared")
            self.count = int(self.count)
        if self.path is not None and not isinstance(self.path, str):
            raise TypeError("path must be a glob string or null")
        if self.method is not None:
            self.method = str(self.method).upper()
        if self.status is not None:
            self.status = int(self.status)
            if not 100 <= self.status <= 599:
                raise ValueError("status must be an HTTP status (100..599)")
        self.seconds = float(self.seconds)
        if not 0 <= self.seconds <= MAX_DELAY:
            raise ValueError(f"seconds must be between 0 and {MAX_DELAY:g}")
        if self.retry_after is not None:
            self.retry_after = float(self.retry_after)
            if self.retry_after < 0:
                raise ValueError("retry_after must be >= 0")

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def take(self) -> None:
        if self.count is not None:
            self.count -= 1

    @property
    def spent(self) -> bool:
        return self.count is not None and self.count <= 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the simulator saw it. `status` is 0 when the connection was reset."""

    time: float
    method: str
    path: str
    query: dict[str, str]
    status: int
    body: Any = None  # the JSON body of a request other than GET/HEAD, if it had one

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CallLog(deque[Call]):
    """The newest `maxlen` calls, oldest first."""

    def __init__(self, maxlen: int = CALL_LOG_SIZE) -> None:
        super().__init__((), maxlen)

    def mutating(self) -> list[Call]:
        """The calls other than GET and HEAD."""
        return [call for call in self if call.method not in ("GET", "HEAD")]


@dataclass(order=True, frozen=True)
class Scheduled:
    at: float  # seconds since the simulator started
    seq: int
    action: str = field(compare=False)
    kwargs: dict[str, Any] = field(compare=False, default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "action": self.action, "kwargs": self.kwargs}


class Controls:
    """Faults, schedule and call log of one simulator.

    Hooks for a subclass: `ACTIONS` (its methods reachable by name), `advance` (time-driven
    state), `run_scheduled` (how a due entry runs), `default_status` (the HTTP status of one of
    its error codes) and `vendor_state` (its keys in `state()`).
    """

    ACTIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, clock: Clock = time.time, *, call_log_size: int = CALL_LOG_SIZE) -> None:
        self.clock = clock
        self.started_at = clock()
        self.faults: list[Fault] = []
        self.calls = CallLog(call_log_size)
        self._schedule: list[Scheduled] = []
        self._schedule_seq = itertools.count()
        self._ticking = False

    # ---- time ------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the simulator started: the time base of `schedule`."""
        return self.clock() - self.started_at

    def schedule(self, at: float, action: str, **kwargs: Any) -> Scheduled:
        """Run `action(**kwargs)` once `at` seconds have passed since the simulator started."""
        self._check_action(action)
        entry = Scheduled(float(at), next(self._schedule_seq), action, dict(kwargs))
        heapq.heappush(self._schedule, entry)
        return entry

    def pending(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in sorted(self._schedule)]

    def tick(self) -> float:
        """Apply the schedule entries that are due, each at its own time; return the clock."""
        now = self.clock()
        if self._ticking:  # an action that ticks again must not run later entries first
            return now
        self._ticking = True
        try:
            while self._schedule and self.started_at + self._schedule[0].at <= now:
                entry = heapq.heappop(self._schedule)
                try:
                    self.run_scheduled(entry.action, self.started_at + entry.at, entry.kwargs)
                except (KeyError, ValueError, TypeError) as exc:
                    # a scheduled fault whose target is gone must not break the request
                    log.warning(
                        "scheduled action not applied",
                        extra={"action": entry.action, "due": entry.at, "error": str(exc)},
                    )
            self.advance(now)
        finally:
            self._ticking = False
        return now

    def run_scheduled(self, action: str, when: float, kwargs: dict[str, Any]) -> None:
        """Run a due entry (`when` is the clock time it was due at)."""
        getattr(self, action)(**kwargs)

    def advance(self, now: float) -> None:
        """Hook: bring time-driven state up to `now`."""

    # ---- actions ---------------------------------------------------------------------------

    def actions(self) -> tuple[str, ...]:
        return FAULT_ACTIONS + self.ACTIONS

    def _check_action(self, action: str) -> None:
        if action not in self.actions():
            raise UnknownAction(f"unknown action {action!r}; one of {', '.join(self.actions())}")

    def apply(self, action: str, **kwargs: Any) -> Any:
        """Run a named action now (what `POST /_sim/actions/<action>` does)."""
        self._check_action(action)
        self.tick()
        return getattr(self, action)(**kwargs)

    # ---- faults ----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        if fault.kind == "status" and fault.status is None:
            fault.status = self.default_status(fault.code)
        self.faults.append(fault)
        return fault

    def fail(
        self,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        path: str | None = None,
        method: str | None = None,
        count: int | None = 1,
    ) -> Fault:
        """Answer `status` with the vendor's documented error body for it (or for `code`, a
        vendor error code; without a status, the code's own status or 500)."""
        return self.add_fault(
            Fault("status", count, path, method, status, code, message, retry_after)
        )

    def unauthorized(
        self, *, path: str | None = None, method: str | None = None, count: int | None = 1
    ) -> Fault:
        """Answer 401 with the vendor's body, whatever the credentials."""
        return self.fail(401, path=path, method=method, count=count)

    def delay(
        self,
        seconds: float,
        *,
        path: str | None = None,
        method: str | None = None,
        count: int | None = 1,
    ) -> Fault:
        """Hold matching requests `seconds` (real time: a client's timeout is real) first."""
        return self.add_fault(Fault("delay", count, path, method, seconds=seconds))

    def bad_json(
        self, *, path: str | None = None, method: str | None = None, count: int | None = 1
    ) -> Fault:
        """Answer with the body cut in half: complete HTTP, unparseable JSON."""
        return self.add_fault(Fault("bad_json", count, path, method))

    def truncate(
        self, *, path: str | None = None, method: str | None = None, count: int | None = 1
    ) -> Fault:
        """Announce the whole body, send half of it and close the connection."""
        return self.add_fault(Fault("truncate", count, path, method))

    def reset_connection(
        self, *, path: str | None = None, method: str | None = None, count: int | None = 1
    ) -> Fault:
        """Reset the connection without answering."""
        return self.add_fault(Fault("reset", count, path, method))

    def clear_faults(self, kind: str | None = None) -> int:
        """Remove every fault (or every fault of one kind); returns how many were removed."""
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        kept = [f for f in self.faults if kind is not None and f.kind != kind]
        removed = len(self.faults) - len(kept)
        self.faults = kept
        return removed

    def take_faults(self, method: str, path: str) -> tuple[list[Fault], Fault | None]:
        """Consume the faults a request meets: the delays, then the one that answers it."""
        delays: list[Fault] = []
        answer: Fault | None = None
        for fault in self.faults:
            if not fault.matches(method, path):
                continue
            fault.take()
            if fault.kind != "delay":
                answer = fault
                break
            delays.append(fault)
        self.faults = [f for f in self.faults if not f.spent]
        return delays, answer

    # ---- hooks and state -------------------------------------------------------------------

    def default_status(self, code: str | None) -> int:
        """The HTTP status that goes with a vendor error code (500 when unknown)."""
        return 500

    def vendor_state(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, Any]:
        """What `GET /_sim/state` answers: the shared keys, then the vendor's."""
        now = self.tick()
        return {
            "now": now,
            "started_at": self.started_at,
            "elapsed": now - self.started_at,
            "faults": [fault.to_json() for fault in self.faults],
            "schedule": self.pending(),
            "calls": len(self.calls),
            **self.vendor_state(),
        }
