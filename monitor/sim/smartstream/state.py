"""A SmartSTREAM Live API (and Ingest API jobs) simulator, written from the reference documents.

It answers from `reference/seeds/000` (Live API), `002` (Ingest jobs) and
`reference/smartstream.md`, never from `monitor.sources`, so client and simulator cannot share
a misreading. What the documents leave open is decided here and marked "[sim]".

Documented behaviour reproduced:
- every `/v1` call needs `X-Streaks-Api-Key` and `Authorization: Bearer <token>`; a wrong or
  missing one is `401 {"code": "UNAUTHORIZED", "message": "Authentication failed"}`;
- `POST /v1/merchants/:merchant_id/auth-token/` with `{"mail_address", "password"}` issues
  `{"token", "expiration"}` (ISO 8601 UTC); the token stops working at `expiration`;
- lists page with `limit` and `page` (1-based) and answer `{"count", "live_events"|"jobs"}`;
- live events by id or `ref:<ref_id>`; start / stop / reset / cancel; after a stop the event
  must be reset before it starts again (`400 FAILED_TO_START` otherwise); `start` answers
  `encode_status_pending`;
- error bodies `{"code", "message"}` with the documented codes.

[sim] choices: a started event turns `encode_status_running` after `start_delay` seconds; the
stopped and error values (not published) default to `encode_status_stopped` and
`encode_status_error` and can be changed; an event in the error state also needs stop → reset
→ start; reset does not change encode_status; job encode_status integers mean
0 queued, 1 encoding, 2 complete, 3 failed; `count` is the total (or the page size, with
`count_mode="page"`); a wrong merchant in the path is 401; the auth-token call also needs the
API key; 429 beyond the request limit carries `Retry-After` and `{"code": "TOO_MANY_REQUESTS"}`.

`SmartstreamSim` holds the state and its controls (its `ACTIONS`, also reachable as
`POST /_sim/actions/<name>`); `sim.app()` serves it. Faults, the schedule, the call log and the
rest of `/_sim` come from the shared kit. Time comes from the injected clock.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from typing import Any

from aiohttp import web

from monitor.sim.control import Handler, Simulator
from monitor.sim.kit import Clock, Fault
from monitor.sim.smartstream.model import (
    ENCODE_STATUS_ERROR,
    ENCODE_STATUS_PENDING,
    ENCODE_STATUS_RUNNING,
    ENCODE_STATUS_STOPPED,
    JOB_QUEUED,
    Job,
    LiveEvent,
    SimError,
    hex_id,
    status_of,
)
from monitor.sim.smartstream.routes import add_routes


class SmartstreamSim(Simulator):
    """State and behaviour of one simulated merchant account. `app()` serves it."""

    ACTIONS = (
        "revoke_tokens",
        "set_rate_limit",
        "set_start_delay",
        "set_encode_status",
        "set_job_status",
        "vanish",
        "add_live_event",
        "add_job",
    )

    def __init__(
        self,
        *,
        merchant_id: str,
        api_key: str,
        mail_address: str,
        password: str,
        static_tokens: tuple[str, ...] = (),
        token_ttl: float = 3600.0,
        clock: Clock = time.time,
        rate_limit: int | None = None,
        rate_window: float = 60.0,
        start_delay: float = 5.0,
        stopped_status: str = ENCODE_STATUS_STOPPED,
        error_status: str = ENCODE_STATUS_ERROR,
        default_limit: int = 30,
        max_limit: int | None = None,
        count_mode: str = "total",
    ) -> None:
        super().__init__(clock)
        self.merchant_id = merchant_id
        self.api_key = api_key
        self.mail_address = mail_address
        self.password = password
        self.token_ttl = token_ttl
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.start_delay = start_delay
        self.stopped_status = stopped_status
        self.error_status = error_status
        self.default_limit = default_limit
        self.max_limit = max_limit
        self.count_mode = count_mode
        self.live_events: dict[str, LiveEvent] = {}
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, float | None] = dict.fromkeys(static_tokens)
        self.tokens_issued = 0
        self._ids = 0
        self._recent: deque[float] = deque()

    # ------------------------------------------------------------------ data

    def add_live_event(
        self,
        *,
        id: str | None = None,
        ref_id: str | None = None,
        name: str = "Live",
        encode_status: str | None = None,
        created_at: float | None = None,
        input_sources: list[str] | None = None,
        media_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        now = self.clock()
        self._ids += 1
        event_id = id or hex_id(f"live:{self._ids}:{name}:{now}")
        created = now if created_at is None else created_at
        event = LiveEvent(
            id=event_id,
            ref_id=ref_id if ref_id is not None else "",
            name=name,
            encode_status=encode_status or self.stopped_status,
            created_at=created,
            updated_at=created,
            input_sources=(
                input_sources
                if input_sources is not None
                else [f"rtmp://203.0.113.10:1935/live/{event_id}"]
            ),
            media_id=media_id if media_id is not None else hex_id(f"media:{event_id}"),
            **extra,
        )
        self.live_events[event_id] = event
        return event.to_json(self.merchant_id)

    def add_job(
        self,
        *,
        id: str | None = None,
        ref_id: str | None = None,
        name: str = "job",
        encode_status: int = JOB_QUEUED,
        created_at: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        now = self.clock()
        self._ids += 1
        job_id = id or hex_id(f"job:{self._ids}:{name}:{now}")
        created = now if created_at is None else created_at
        extra.setdefault("media_id", hex_id(f"media:{job_id}"))
        job = Job(
            id=job_id,
            ref_id=ref_id if ref_id is not None else "",
            name=name,
            encode_status=int(encode_status),
            created_at=created,
            updated_at=created,
            **extra,
        )
        self.jobs[job_id] = job
        return job.to_json(self.merchant_id)

    def find_live_event(self, target: str) -> LiveEvent | None:
        if target.startswith("ref:"):
            ref = target[4:]
            return next((e for e in self.live_events.values() if e.ref_id == ref), None)
        return self.live_events.get(target)

    def find_job(self, target: str) -> Job | None:
        if target.startswith("ref:"):
            ref = target[4:]
            return next((j for j in self.jobs.values() if j.ref_id == ref), None)
        return self.jobs.get(target)

    def set_encode_status(self, live_event: str, encode_status: str) -> None:
        """Put a live event into any status; the error status also requires a reset."""
        event = self._event_or_raise(live_event)
        event.encode_status = encode_status
        event.updated_at = self.clock()
        event.pending_since = self.clock() if encode_status == ENCODE_STATUS_PENDING else None
        if encode_status in (self.stopped_status, self.error_status):
            event.needs_reset = True

    def set_job_status(self, job: str, encode_status: int) -> None:
        found = self.find_job(job)
        if found is None:
            raise KeyError(f"no job {job!r}")
        found.encode_status = int(encode_status)
        found.updated_at = self.clock()

    def vanish(self, live_event: str) -> None:
        """The live event disappears (deleted elsewhere): lists skip it, calls answer 404."""
        event = self._event_or_raise(live_event)
        del self.live_events[event.id]

    def _event_or_raise(self, target: str) -> LiveEvent:
        event = self.find_live_event(target)
        if event is None:
            raise KeyError(f"no live event {target!r}")
        return event

    # ------------------------------------------------------------------ auth, limits

    def issue_token(self, ttl: float | None = None) -> tuple[str, float]:
        token = secrets.token_urlsafe(24)
        expires = self.clock() + (self.token_ttl if ttl is None else ttl)
        self.tokens[token] = expires
        self.tokens_issued += 1
        return token, expires

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (static ones too)."""
        self.tokens.clear()

    def set_rate_limit(self, limit: int | None, window: float = 60.0) -> None:
        self.rate_limit = limit
        self.rate_window = window
        self._recent.clear()

    def set_start_delay(self, seconds: float) -> None:
        self.start_delay = seconds

    def _token_valid(self, token: str) -> bool:
        if token not in self.tokens:
            return False
        expires = self.tokens[token]
        return expires is None or self.clock() < expires

    def check_rate(self) -> None:
        """Count one request against the rate limit; SimError 429 beyond it."""
        if self.rate_limit is None:
            return
        now = self.clock()
        while self._recent and self._recent[0] <= now - self.rate_window:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit:
            frees_at = (
                self._recent[0] + self.rate_window if self._recent else now + self.rate_window
            )
            retry = max(1, math.ceil(frees_at - now))
            raise SimError(429, "TOO_MANY_REQUESTS", headers={"Retry-After": str(retry)})
        self._recent.append(now)

    def check_credentials(self, request: web.Request) -> None:
        """The API key, the merchant in the path and (except for auth-token) the bearer token."""
        if request.headers.get("X-Streaks-Api-Key") != self.api_key:
            raise SimError(401, "UNAUTHORIZED")
        if request.match_info.get("merchant_id") != self.merchant_id:
            raise SimError(401, "UNAUTHORIZED")
        if not request.path.endswith("/auth-token/"):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not self._token_valid(token.strip()):
                raise SimError(401, "UNAUTHORIZED")

    # ------------------------------------------------------------------ live event state rules

    def start_event(self, event: LiveEvent) -> dict[str, Any]:
        active = event.encode_status in (ENCODE_STATUS_PENDING, ENCODE_STATUS_RUNNING)
        if active or event.needs_reset:
            raise SimError(400, "FAILED_TO_START")
        event.encode_status = ENCODE_STATUS_PENDING
        event.pending_since = event.updated_at = self.clock()
        return event.to_json(self.merchant_id)

    def stop_event(self, event: LiveEvent) -> dict[str, Any]:
        if event.encode_status == self.stopped_status:
            raise SimError(400, "FAILED_TO_STOP")
        event.encode_status = self.stopped_status
        event.pending_since = None
        event.needs_reset = True
        event.updated_at = self.clock()
        return event.to_json(self.merchant_id)

    def reset_event(self, event: LiveEvent) -> None:
        if event.encode_status in (ENCODE_STATUS_PENDING, ENCODE_STATUS_RUNNING):
            raise SimError(400, "FAILED_TO_RESET")
        event.needs_reset = False
        event.updated_at = self.clock()

    def cancel_event(self, event: LiveEvent) -> None:
        if event.encode_status == ENCODE_STATUS_RUNNING:
            raise SimError(400, "FAILED_TO_CANCEL")
        if event.encode_status == ENCODE_STATUS_PENDING:
            event.encode_status = self.stopped_status
            event.pending_since = None
            event.needs_reset = True
            event.updated_at = self.clock()

    # ------------------------------------------------------------------ the kit's hooks

    def advance(self, now: float) -> None:
        """A started event turns running `start_delay` seconds after its start."""
        for event in self.live_events.values():
            since = event.pending_since
            pending = event.encode_status == ENCODE_STATUS_PENDING and since is not None
            if pending and now >= since + self.start_delay:
                event.encode_status = ENCODE_STATUS_RUNNING
                event.updated_at = since + self.start_delay
                event.pending_since = None

    def default_status(self, code: str | None) -> int:
        return status_of(code)

    def error_body(self, fault: Fault) -> web.Response:
        status = fault.status or 500
        code = fault.code or ("UNAUTHORIZED" if status == 401 else _code_for(status))
        return SimError(status, code, fault.message).response()

    async def answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        try:
            self.check_rate()
            self.check_credentials(request)
            return await handler(request)
        except SimError as exc:
            return exc.response()

    def setup(self, app: web.Application) -> None:
        add_routes(app)

    def vendor_state(self) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "live_events": [e.to_json(self.merchant_id) for e in self.live_events.values()],
            "jobs": [j.to_json(self.merchant_id) for j in self.jobs.values()],
            "rate_limit": {"limit": self.rate_limit, "window": self.rate_window},
            "tokens_issued": self.tokens_issued,
        }


def _code_for(status: int) -> str:
    if status == 429:
        return "TOO_MANY_REQUESTS"
    return "BAD_REQUEST" if status < 500 else "SERVER_ERROR"
