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

Control without auth, as Python methods or as `POST /_sim/<method>` with the keyword arguments
as a JSON object (see CONTROLS); `GET /_sim/state`, `GET /_sim/calls`, `GET /_sim/requests`.
Time comes from the injected clock; the only real sleep is the `delay` fault.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Clock = Callable[[], float]

ENCODE_STATUS_PENDING = "encode_status_pending"
ENCODE_STATUS_RUNNING = "encode_status_running"
ENCODE_STATUS_STOPPED = "encode_status_stopped"  # [sim] value not published
ENCODE_STATUS_ERROR = "encode_status_error"  # [sim] value not published

JOB_QUEUED, JOB_ENCODING, JOB_COMPLETE, JOB_FAILED = 0, 1, 2, 3  # [sim] meanings not published

DEMO_MERCHANT = "demo"
DEMO_API_KEY = "demo-api-key"
DEMO_TOKEN = "demo-token"
DEMO_MAIL = "ops@example.com"
DEMO_PASSWORD = "demo-password"

MESSAGES = {
    "BAD_REQUEST": "Invalid request parameters",
    "UNAUTHORIZED": "Authentication failed",
    "LIVE_EVENT_NOT_FOUND": "The specified live event does not exist",
    "JOB_NOT_FOUND": "The specified job does not exist",
    "FAILED_TO_START": "Failed to start",
    "FAILED_TO_STOP": "Failed to stop",
    "FAILED_TO_RESET": "Failed to reset",
    "FAILED_TO_CANCEL": "Failed to cancel",
    "FAILED_TO_SAVE": "Failed to save",
    "FAILED_TO_UPDATE": "Failed to update",
    "FAILED_TO_DELETE": "Failed to delete",
    "SERVER_ERROR": "An unexpected error has occurred",
    "TOO_MANY_REQUESTS": "Too many requests",
}

# Methods reachable as POST /_sim/<name> and through schedule().
CONTROLS = (
    "fail",
    "delay",
    "bad_json",
    "unauthorized",
    "clear_faults",
    "revoke_tokens",
    "set_rate_limit",
    "set_start_delay",
    "set_encode_status",
    "set_job_status",
    "vanish",
    "add_live_event",
    "add_job",
    "schedule",
)

_JST = timezone(timedelta(hours=9))
_LIVE_SORT = ("created_at", "updated_at", "name", "id", "ref_id", "encode_status")
_JOB_SORT = ("created_at", "updated_at", "name", "id", "ref_id", "encode_status")


class SimError(Exception):
    """An API error the handler answers with the documented body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message or MESSAGES.get(code, code)
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(
            {"code": self.code, "message": self.message}, status=self.status, headers=self.headers
        )


def _iso(epoch: float | None, tz: timezone = _JST) -> str | None:
    """Epoch → the documents' format, e.g. `2018-03-14T14:42:04.632+09:00`."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz).isoformat(timespec="milliseconds")


def _iso_utc(epoch: float) -> str:
    """Epoch → `2017-10-01T00:00:00.000Z`, the auth-token `expiration` format."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _hex_id(seed: str) -> str:
    return hashlib.md5(seed.encode()).hexdigest()


@dataclass
class LiveEvent:
    id: str
    ref_id: str
    name: str
    encode_status: str
    created_at: float
    updated_at: float
    description: str = ""
    live_event_profile_id: str = "c2e31a9d22d9487dae8d837c38231f81"
    input_sources: list[str] = field(default_factory=list)
    media_id: str | None = None
    enable_ad_insertion_flag: bool = False
    enable_live_to_file_flag: bool = False
    live_encode_start_at: float | None = None
    live_encode_end_at: float | None = None
    needs_reset: bool = False
    pending_since: float | None = None

    def to_json(self, merchant_id: str) -> dict[str, Any]:
        return {
            "merchant_id": merchant_id,
            "id": self.id,
            "ref_id": self.ref_id,
            "name": self.name,
            "description": self.description,
            "enable_ad_insertion_flag": self.enable_ad_insertion_flag,
            "live_event_profile_id": self.live_event_profile_id,
            "input_sources": list(self.input_sources),
            "media_id": self.media_id,
            "encode_status": self.encode_status,
            "enable_live_to_file_flag": self.enable_live_to_file_flag,
            "live_encode_start_at": _iso(self.live_encode_start_at),
            "live_encode_end_at": _iso(self.live_encode_end_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "preview": {"src": f"https://vod-sim.smartstream.jp/live/preview_{self.id}_image.jpg"},
        }


@dataclass
class Job:
    id: str
    ref_id: str
    name: str
    encode_status: int
    created_at: float
    updated_at: float
    job_profile_id: str = "1"
    media_id: str | None = None
    description: str = ""
    source_type: str = "url"
    source_url: str = ""

    def to_json(self, merchant_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "ref_id": self.ref_id,
            "name": self.name,
            "merchant_id": merchant_id,
            "job_profile_id": self.job_profile_id,
            "media_id": self.media_id,
            "description": self.description,
            "encode_status": self.encode_status,
            "source_type": self.source_type,
            "source_url": self.source_url,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass
class Fault:
    kind: str  # error | delay | bad_json | unauthorized
    remaining: int | None  # None: until cleared
    match: str | None = None  # applies to paths containing this text
    status: int = 500
    code: str = "SERVER_ERROR"
    message: str | None = None
    seconds: float = 0.0
    retry_after: float | None = None

    def applies(self, path: str) -> bool:
        return self.match is None or self.match in path


@dataclass(frozen=True)
class Call:
    """A mutating call as the simulator saw it."""

    at: float
    action: str  # start, stop, reset, cancel, create, update, delete, create_job
    target: str  # the id or ref:<ref_id> from the path ("" for create)
    live_event: str | None  # the resolved id, if found
    status: int
    code: str | None = None


@dataclass(frozen=True)
class RequestRecord:
    at: float
    method: str
    path: str
    query: dict[str, str]
    status: int


class SmartstreamSim:
    """State and behaviour of one simulated merchant account. `app()` serves it."""

    def __init__(
        self,
        *,
        merchant_id: str = DEMO_MERCHANT,
        api_key: str = DEMO_API_KEY,
        mail_address: str = DEMO_MAIL,
        password: str = DEMO_PASSWORD,
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
        self.merchant_id = merchant_id
        self.api_key = api_key
        self.mail_address = mail_address
        self.password = password
        self.token_ttl = token_ttl
        self.clock = clock
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.start_delay = start_delay
        self.stopped_status = stopped_status
        self.error_status = error_status
        self.default_limit = default_limit
        self.max_limit = max_limit
        self.count_mode = count_mode
        self.started_at = clock()
        self.live_events: dict[str, LiveEvent] = {}
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, float | None] = dict.fromkeys(static_tokens)
        self.tokens_issued = 0
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.requests: deque[RequestRecord] = deque(maxlen=10_000)
        self._scheduled: list[tuple[float, int, str, dict[str, Any]]] = []
        self._seq = 0
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
        self._seq += 1
        event_id = id or _hex_id(f"live:{self._seq}:{name}:{now}")
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
            media_id=media_id if media_id is not None else _hex_id(f"media:{event_id}"),
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
        self._seq += 1
        job_id = id or _hex_id(f"job:{self._seq}:{name}:{now}")
        created = now if created_at is None else created_at
        extra.setdefault("media_id", _hex_id(f"media:{job_id}"))
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

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        status: int = 500,
        code: str = "SERVER_ERROR",
        message: str | None = None,
        *,
        count: int | None = 1,
        match: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """The next `count` matching calls answer `status` with the documented error body."""
        self._add(Fault("error", count, match, status, code, message, retry_after=retry_after))

    def delay(self, seconds: float, *, count: int | None = 1, match: str | None = None) -> None:
        """The next `count` matching calls are answered `seconds` later (a real sleep)."""
        self._add(Fault("delay", count, match, seconds=seconds))

    def bad_json(self, *, count: int | None = 1, match: str | None = None) -> None:
        """The next `count` matching calls answer 200 with a body that is not JSON."""
        self._add(Fault("bad_json", count, match))

    def unauthorized(self, *, count: int | None = 1, match: str | None = None) -> None:
        """The next `count` matching calls answer 401 whatever their credentials."""
        self._add(Fault("unauthorized", count, match, 401, "UNAUTHORIZED"))

    def clear_faults(self) -> None:
        self.faults.clear()

    def _add(self, fault: Fault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("count must be at least 1, or null for 'until cleared'")
        self.faults.append(fault)

    # ------------------------------------------------------------------ time

    def schedule(self, at: float, action: str, **kwargs: Any) -> None:
        """Run control `action(**kwargs)` once the clock reaches `started_at + at` (checked on
        each request)."""
        if action not in CONTROLS or action == "schedule":
            raise ValueError(f"unknown action {action!r}; one of {', '.join(CONTROLS)}")
        self._seq += 1
        self._scheduled.append((self.started_at + at, self._seq, action, kwargs))
        self._scheduled.sort(key=lambda item: (item[0], item[1]))

    def tick(self) -> None:
        """Apply what is due: scheduled actions, pending events that have become running."""
        now = self.clock()
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, action, kwargs = self._scheduled.pop(0)
            try:
                getattr(self, action)(**kwargs)
            except (TypeError, ValueError, KeyError) as exc:
                log.warning("scheduled sim action failed action=%s error=%r", action, str(exc))
        for event in self.live_events.values():
            since = event.pending_since
            pending = event.encode_status == ENCODE_STATUS_PENDING and since is not None
            if pending and now >= since + self.start_delay:
                event.encode_status = ENCODE_STATUS_RUNNING
                event.updated_at = since + self.start_delay
                event.pending_since = None

    def state(self) -> dict[str, Any]:
        self.tick()
        return {
            "now": self.clock(),
            "started_at": self.started_at,
            "merchant_id": self.merchant_id,
            "live_events": [e.to_json(self.merchant_id) for e in self.live_events.values()],
            "jobs": [j.to_json(self.merchant_id) for j in self.jobs.values()],
            "faults": [asdict(f) for f in self.faults],
            "scheduled": [
                {"at": at - self.started_at, "action": action, "kwargs": kwargs}
                for at, _, action, kwargs in self._scheduled
            ],
            "rate_limit": {"limit": self.rate_limit, "window": self.rate_window},
            "tokens_issued": self.tokens_issued,
        }

    # ------------------------------------------------------------------ demo

    @classmethod
    def demo(
        cls,
        *,
        clock: Clock = time.time,
        error_at: float = 20.0,
        job_fail_at: float = 30.0,
        rate_limit: int | None = 50,
        **kwargs: Any,
    ) -> SmartstreamSim:
        """A merchant with three running live events and three jobs. At +`error_at` s the event
        `ref:sports` goes to the error status; at +`job_fail_at` s the job `ref:upload-2`
        fails. Credentials: DEMO_API_KEY with DEMO_TOKEN, or DEMO_MAIL + DEMO_PASSWORD."""
        kwargs.setdefault("static_tokens", (DEMO_TOKEN,))
        sim = cls(clock=clock, rate_limit=rate_limit, **kwargs)
        t0 = sim.started_at
        for n, (ref, name) in enumerate(
            [("news", "News 24/7"), ("sports", "Sports Live"), ("music", "Music Stage")]
        ):
            sim.add_live_event(
                id=_hex_id(f"demo-live-{ref}"),
                ref_id=ref,
                name=name,
                encode_status=ENCODE_STATUS_RUNNING,
                created_at=t0 - 86400 + n,
                live_encode_start_at=t0 - 3600,
            )
        for n, status in enumerate([JOB_COMPLETE, JOB_ENCODING, JOB_ENCODING], start=1):
            sim.add_job(
                id=_hex_id(f"demo-job-{n}"),
                ref_id=f"upload-{n}",
                name=f"upload {n}",
                encode_status=status,
                created_at=t0 - 600 + n,
                source_url=f"https://media.example.com/upload-{n}.mp4",
            )
        sim.schedule(
            error_at, "set_encode_status", live_event="ref:sports", encode_status=sim.error_status
        )
        sim.schedule(job_fail_at, "set_job_status", job="ref:upload-2", encode_status=JOB_FAILED)
        return sim

    # ------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app[SIM_KEY] = self
        m = "/v1/merchants/{merchant_id}"
        app.router.add_post(m + "/auth-token/", self._auth_token)
        app.router.add_get(m + "/live_events", self._list_live_events)
        app.router.add_post(m + "/live_events", self._create_live_event)
        app.router.add_get(m + "/live_events/{target}", self._get_live_event)
        app.router.add_put(m + "/live_events/{target}", self._update_live_event)
        app.router.add_delete(m + "/live_events/{target}", self._delete_live_event)
        for action in ("start", "stop", "reset", "cancel"):
            app.router.add_post(m + "/live_events/{target}/" + action, self._live_action(action))
        app.router.add_get(m + "/jobs", self._list_jobs)
        app.router.add_post(m + "/jobs", self._create_job)
        app.router.add_get(m + "/jobs/{target}", self._get_job)
        app.router.add_get("/_sim/state", self._sim_state)
        app.router.add_get("/_sim/calls", self._sim_calls)
        app.router.add_get("/_sim/requests", self._sim_requests)
        app.router.add_post("/_sim/{action}", self._sim_control)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.tick()
        if not request.path.startswith("/v1/"):
            return await handler(request)
        try:
            response = await self._api_call(request, handler)
        except SimError as exc:
            response = exc.response()
        self.requests.append(
            RequestRecord(
                self.clock(), request.method, request.path, dict(request.query), response.status
            )
        )
        return response

    async def _api_call(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self._check_rate(request)
        fault = self._take_fault(request.path)
        if fault is not None:
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "bad_json":
                return web.Response(
                    status=200,
                    text='{"count": 1, "live_events": [',
                    content_type="application/json",
                )
            else:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(math.ceil(fault.retry_after))
                raise SimError(fault.status, fault.code, fault.message, headers)
        if request.headers.get("X-Streaks-Api-Key") != self.api_key:
            raise SimError(401, "UNAUTHORIZED")
        if request.match_info.get("merchant_id") != self.merchant_id:
            raise SimError(401, "UNAUTHORIZED")
        if not request.path.endswith("/auth-token/"):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not self._token_valid(token.strip()):
                raise SimError(401, "UNAUTHORIZED")
        return await handler(request)

    def _check_rate(self, request: web.Request) -> None:
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

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.applies(path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    # --- auth-token

    async def _auth_token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise SimError(400, "BAD_REQUEST") from None
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("mail_address", "password")
        ):
            raise SimError(400, "BAD_REQUEST")
        if (body["mail_address"], body["password"]) != (self.mail_address, self.password):
            raise SimError(401, "UNAUTHORIZED")
        token, expires = self.issue_token()
        return web.json_response({"token": token, "expiration": _iso_utc(expires)})

    # --- live events

    async def _list_live_events(self, request: web.Request) -> web.Response:
        items, count = self._page(request, list(self.live_events.values()), _LIVE_SORT)
        return web.json_response(
            {"count": count, "live_events": [e.to_json(self.merchant_id) for e in items]}
        )

    async def _get_live_event(self, request: web.Request) -> web.Response:
        event = self._event_for(request)
        return web.json_response(event.to_json(self.merchant_id))

    async def _create_live_event(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body.get("name"), str) or not isinstance(
            body.get("live_event_profile_id"), str
        ):
            self._record("create", "", None, 400, "BAD_REQUEST")
            raise SimError(400, "BAD_REQUEST")
        created = self.add_live_event(
            name=body["name"],
            ref_id=body.get("ref_id"),
            description=body.get("description", ""),
            live_event_profile_id=body["live_event_profile_id"],
            enable_ad_insertion_flag=bool(body.get("enable_ad_insertion_flag", False)),
            enable_live_to_file_flag=bool(body.get("enable_live_to_file_flag", False)),
        )
        self._record("create", "", created["id"], 200)
        return web.json_response(created)

    async def _update_live_event(self, request: web.Request) -> web.Response:
        event = self._event_for(request, "update")
        body = await _json_body(request)
        for key in ("name", "description", "ref_id", "live_event_profile_id"):
            if isinstance(body.get(key), str):
                setattr(event, key, body[key])
        for key in ("enable_ad_insertion_flag", "enable_live_to_file_flag"):
            if key in body:
                setattr(event, key, bool(body[key]))
        event.updated_at = self.clock()
        self._record("update", request.match_info["target"], event.id, 200)
        return web.json_response(event.to_json(self.merchant_id))

    async def _delete_live_event(self, request: web.Request) -> web.Response:
        event = self._event_for(request, "delete")
        if event.encode_status in (ENCODE_STATUS_PENDING, ENCODE_STATUS_RUNNING):
            event.encode_status = self.stopped_status  # "deleted after it is stopped"
        del self.live_events[event.id]
        self._record("delete", request.match_info["target"], event.id, 200)
        return web.json_response(event.to_json(self.merchant_id))

    def _live_action(self, action: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            event = self._event_for(request, action)
            target = request.match_info["target"]
            try:
                body = getattr(self, "_do_" + action)(event)
            except SimError as exc:
                self._record(action, target, event.id, exc.status, exc.code)
                raise
            self._record(action, target, event.id, 200)
            if body is None:
                return web.Response(status=200)
            return web.json_response(body)

        return handler

    def _do_start(self, event: LiveEvent) -> dict[str, Any]:
        active = event.encode_status in (ENCODE_STATUS_PENDING, ENCODE_STATUS_RUNNING)
        if active or event.needs_reset:
            raise SimError(400, "FAILED_TO_START")
        event.encode_status = ENCODE_STATUS_PENDING
        event.pending_since = event.updated_at = self.clock()
        return event.to_json(self.merchant_id)

    def _do_stop(self, event: LiveEvent) -> dict[str, Any]:
        if event.encode_status == self.stopped_status:
            raise SimError(400, "FAILED_TO_STOP")
        event.encode_status = self.stopped_status
        event.pending_since = None
        event.needs_reset = True
        event.updated_at = self.clock()
        return event.to_json(self.merchant_id)

    def _do_reset(self, event: LiveEvent) -> None:
        if event.encode_status in (ENCODE_STATUS_PENDING, ENCODE_STATUS_RUNNING):
            raise SimError(400, "FAILED_TO_RESET")
        event.needs_reset = False
        event.updated_at = self.clock()

    def _do_cancel(self, event: LiveEvent) -> None:
        if event.encode_status == ENCODE_STATUS_RUNNING:
            raise SimError(400, "FAILED_TO_CANCEL")
        if event.encode_status == ENCODE_STATUS_PENDING:
            event.encode_status = self.stopped_status
            event.pending_since = None
            event.needs_reset = True
            event.updated_at = self.clock()

    def _event_for(self, request: web.Request, action: str | None = None) -> LiveEvent:
        target = request.match_info["target"]
        event = self.find_live_event(target)
        if event is None:
            if action is not None:
                self._record(action, target, None, 404, "LIVE_EVENT_NOT_FOUND")
            raise SimError(404, "LIVE_EVENT_NOT_FOUND")
        return event

    # --- jobs

    async def _list_jobs(self, request: web.Request) -> web.Response:
        items, count = self._page(request, list(self.jobs.values()), _JOB_SORT)
        return web.json_response(
            {"count": count, "jobs": [j.to_json(self.merchant_id) for j in items]}
        )

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self.find_job(request.match_info["target"])
        if job is None:
            raise SimError(404, "JOB_NOT_FOUND")
        return web.json_response(job.to_json(self.merchant_id))

    async def _create_job(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        url = body.get("source_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            self._record("create_job", "", None, 400, "BAD_REQUEST")
            raise SimError(400, "BAD_REQUEST")
        profile = body.get("job_profile_id")
        created = self.add_job(
            name=url.rsplit("/", 1)[-1],
            source_url=url,
            job_profile_id=str(profile if profile is not None else "1"),
        )
        self._record("create_job", "", created["id"], 200)
        return web.json_response(created)

    # --- paging

    def _page(
        self, request: web.Request, items: list[Any], sortable: tuple[str, ...]
    ) -> tuple[list[Any], int]:
        query = request.query
        try:
            limit = int(query.get("limit", self.default_limit))
            page = int(query.get("page", 1))
        except ValueError:
            raise SimError(400, "BAD_REQUEST") from None
        sort = query.get("sort", "created_at")
        order = query.get("order", "ASC").upper()
        if limit < 1 or page < 1 or sort not in sortable or order not in ("ASC", "DESC"):
            raise SimError(400, "BAD_REQUEST")
        if self.max_limit is not None:
            limit = min(limit, self.max_limit)
        items.sort(key=lambda item: (getattr(item, sort), item.id), reverse=order == "DESC")
        chosen = items[(page - 1) * limit : page * limit]
        return chosen, (len(chosen) if self.count_mode == "page" else len(items))

    def _record(
        self, action: str, target: str, event_id: str | None, status: int, code: str | None = None
    ) -> None:
        self.calls.append(Call(self.clock(), action, target, event_id, status, code))

    # --- control routes

    async def _sim_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _sim_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": [asdict(c) for c in self.calls]})

    async def _sim_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": [asdict(r) for r in self.requests]})

    async def _sim_control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in CONTROLS:
            return web.json_response(
                {"error": f"unknown control {action!r}", "controls": list(CONTROLS)}, status=404
            )
        kwargs: Any = {}
        if request.can_read_body:
            try:
                kwargs = await request.json()
            except ValueError:
                return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(kwargs, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            if action == "schedule":
                kwargs = dict(kwargs)
                at = kwargs.pop("at", None)
                after = kwargs.pop("in", None)
                if (at is None) == (after is None):
                    raise ValueError("give exactly one of 'at' (since start) or 'in' (from now)")
                when = at if at is not None else self.clock() - self.started_at + after
                self.schedule(when, kwargs.pop("action", ""), **kwargs.pop("kwargs", {}))
                result = None
            else:
                result = getattr(self, action)(**kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, "result": result})


SIM_KEY = web.AppKey("smartstream_sim", SmartstreamSim)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise SimError(400, "BAD_REQUEST") from None
    if not isinstance(body, dict):
        raise SimError(400, "BAD_REQUEST")
    return body
