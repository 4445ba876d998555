"""SmartSTREAM (NTT Smart Connect): Live API live events and Ingest API jobs.

All SmartSTREAM HTTP lives here: URLs, the `X-Streaks-Api-Key` and bearer headers, the
auth-token call and its renewal, paging, the documented error body, and the request budget
(the account allows 50 requests a minute by default; polls and actions share one token bucket).

`SmartstreamClient` speaks HTTP and answers with the API's JSON; `SmartstreamSource` turns that
into entities (`smartstream.live_event`, `smartstream.job`) and offers the actions (get, start,
stop, reset, restart) in terms of live event ids or `ref:<ref_id>`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from monitor.config import SmartstreamSourceConfig
from monitor.model import Entity
from monitor.sources import values as parse
from monitor.sources.base import (
    BAD_RESPONSE,
    RATE_LIMITED,
    TIMEOUT,
    UNAUTHORIZED,
    Clock,
    Source,
    SourceContext,
    SourceError,
    classify_exception,
    decode_json,
    parse_retry_after,
    reason_for_status,
)
from monitor.sources.ratelimit import RateLimitExceeded, TokenBucket

log = logging.getLogger(__name__)

LIVE_EVENT_KIND = "smartstream.live_event"
JOB_KIND = "smartstream.job"

API_KEY_HEADER = "X-Streaks-Api-Key"
ENCODE_STATUS_PENDING = "encode_status_pending"
ENCODE_STATUS_RUNNING = "encode_status_running"
# The only values the documents show. Others exist (stopped, error, ...) but are unpublished;
# they pass through raw in `encode_status`.
LIVE_EVENT_ENCODE_STATUSES: tuple[str, ...] = (ENCODE_STATUS_PENDING, ENCODE_STATUS_RUNNING)
# Job encode_status is an integer whose meanings are not published.
JOB_ENCODE_STATUSES: tuple[str, ...] = ()

RATE_WINDOW = 60.0  # the account's limit is per minute
_MAX_PAGES = 1000
_MESSAGE_LIMIT = 200
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TARGET = re.compile(r"^(ref:)?[^/?#\s]+$")

Sleep = Callable[[float], Awaitable[object]]


class BudgetExhausted(SourceError):
    """A request was left out: waiting for the rate limit would have taken too long."""

    def __init__(self, what: str, wait: float, limit: int) -> None:
        super().__init__(
            RATE_LIMITED,
            f"{what}: left out, request budget of {limit}/min is spent (next in {wait:.1f}s)",
            retry_after=wait,
        )


@dataclass
class _Tally:
    """What the rate limit did to one poll (for its one log line), and how much longer the
    poll may still wait for it in all."""

    allowance: float | None = None  # None: no total bound
    delayed: int = 0
    waited: float = 0.0
    left_out: list[str] = field(default_factory=list)

    def bound(self, max_wait: float | None) -> float | None:
        if self.allowance is None:
            return max_wait
        remaining = max(0.0, self.allowance - self.waited)
        return remaining if max_wait is None else min(max_wait, remaining)


@dataclass
class _Token:
    value: str = field(repr=False)
    renew_at: float | None  # None: renewed on a 401 only


class _Redactor:
    """Replaces every known secret in a text that may reach a log line or an error."""

    def __init__(self, *secrets: str | None) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if secret:
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


class SmartstreamClient:
    """HTTP to one merchant: headers, token, budget, error mapping. Raises SourceError."""

    def __init__(
        self,
        config: SmartstreamSourceConfig,
        *,
        bucket: TokenBucket,
        clock: Clock,
        timeout: float,
        on_throttled: Callable[[int], None],
        renew_before: float = 60.0,
        label: str = "",
    ) -> None:
        self.config = config
        self.bucket = bucket
        self._clock = clock
        self._timeout = timeout
        self._on_throttled = on_throttled
        self._renew_before = renew_before
        self._label = label or f"smartstream/{config.name}"
        self._base = f"{config.url}/v1/merchants/{quote(config.merchant_id, safe='')}"
        self._api_key = config.api_key.get_secret_value()
        self._fixed = config.token.get_secret_value() if config.token else None
        self._password = config.password.get_secret_value() if config.password else None
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.redact = _Redactor(self._api_key, self._fixed, self._password)

    def __repr__(self) -> str:
        return f"SmartstreamClient({self._label}, merchant={self.config.merchant_id!r})"

    # --- lifecycle

    async def open(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- resources

    async def list_live_events(
        self, *, max_wait: float | None, tally: _Tally | None = None
    ) -> list[dict[str, Any]]:
        return await self._list_all("live_events", max_wait=max_wait, tally=tally)

    async def list_jobs(
        self, *, max_wait: float | None, tally: _Tally | None = None
    ) -> list[dict[str, Any]]:
        # The seed shows no example answer for the job list; `jobs` follows the other lists.
        return await self._list_all("jobs", max_wait=max_wait, tally=tally)

    async def live_event(
        self, method: str, target: str, action: str = "", *, max_wait: float | None
    ) -> Any:
        """`GET live_events/<target>` or `POST live_events/<target>/<action>`; the JSON answer
        (None for an empty body, as `reset` answers)."""
        path = f"/live_events/{_target_path(target)}" + (f"/{action}" if action else "")
        return await self._request(method, path, f"{method} {path.lstrip('/')}", max_wait=max_wait)

    async def get_job(self, target: str, *, max_wait: float | None) -> Any:
        path = f"/jobs/{_target_path(target)}"
        return await self._request("GET", path, f"GET {path.lstrip('/')}", max_wait=max_wait)

    async def _list_all(
        self, resource: str, *, max_wait: float | None, tally: _Tally | None
    ) -> list[dict[str, Any]]:
        """Every item, page after page until a page comes back short (`count` is not trusted:
        the documents do not say whether it is the total or the page size)."""
        limit = self.config.page_size
        items: dict[str, dict[str, Any]] = {}
        for page in range(1, _MAX_PAGES + 1):
            what = f"GET {resource} page {page}"
            params = {"limit": limit, "page": page, "sort": "created_at", "order": "ASC"}
            body = await self._request(
                "GET", f"/{resource}", what, params=params, max_wait=max_wait, tally=tally
            )
            batch = body.get(resource) if isinstance(body, dict) else None
            if not isinstance(batch, list) or not all(isinstance(i, dict) for i in batch):
                raise SourceError(BAD_RESPONSE, f"{what}: answer has no '{resource}' list")
            new = 0
            for item in batch:
                item_id = item.get("id")
                if not isinstance(item_id, str | int) or isinstance(item_id, bool) or item_id == "":
                    raise SourceError(BAD_RESPONSE, f"{what}: an item has no id")
                new += str(item_id) not in items
                items[str(item_id)] = item
            if len(batch) < limit:
                return list(items.values())
            if new == 0:
                raise SourceError(BAD_RESPONSE, f"{what}: repeats earlier pages, paging is ignored")
        raise SourceError(BAD_RESPONSE, f"GET {resource}: more than {_MAX_PAGES} pages")

    # --- requests

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        max_wait: float | None,
        tally: _Tally | None = None,
        auth: bool = True,
    ) -> Any:
        renewable = auth and self._fixed is None
        for attempt in (1, 2):
            headers = {
                API_KEY_HEADER: self._api_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
            token = await self._bearer(max_wait, tally) if auth else None
            if token is not None:
                headers["Authorization"] = "Bearer " + token.value
            await self._spend(what, max_wait, tally)
            status, raw, response_headers = await self._send(
                method, path, what, params, json_body, headers
            )
            if status == 401 and renewable and attempt == 1:
                log.info(
                    "token refused, renewing, retrying source=%s request=%r", self._label, what
                )
                if self._token is token:  # unless a concurrent call renewed it already
                    self._token = None
                continue
            if status >= 400:
                raise self._http_error(what, status, raw, response_headers)
            if 300 <= status < 400:
                raise SourceError(BAD_RESPONSE, f"{what}: unexpected redirect (HTTP {status})")
            if not raw.strip():
                return None
            return decode_json(raw, what)
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        headers: dict[str, str],
    ) -> tuple[int, bytes, Mapping[str, str]]:
        await self.open()
        assert self._session is not None
        try:
            # No redirects: aiohttp would carry X-Streaks-Api-Key (and a re-posted password)
            # to whatever origin a 3xx names.
            async with self._session.request(
                method,
                self._base + path,
                params=params,
                json=json_body,
                headers=headers,
                allow_redirects=False,
            ) as response:
                return response.status, await response.read(), response.headers
        except Exception as exc:
            raise classify_exception(exc, what) from exc

    async def _spend(self, what: str, max_wait: float | None, tally: _Tally | None) -> None:
        if tally is not None:
            max_wait = tally.bound(max_wait)
        try:
            waited = await self.bucket.acquire(1, max_wait=max_wait)
        except RateLimitExceeded as exc:
            self._on_throttled(1)
            if tally is not None:
                tally.left_out.append(what)
            raise BudgetExhausted(what, exc.wait, self.config.rate_limit) from None
        if waited > 0:
            self._on_throttled(1)
            if tally is not None:
                tally.delayed += 1
                tally.waited += waited
            else:
                log.info(
                    "request delayed by rate limit source=%s request=%r waited=%.1fs",
                    self._label,
                    what,
                    waited,
                )

    def _http_error(
        self, what: str, status: int, raw: bytes, headers: Mapping[str, str]
    ) -> SourceError:
        code, message = _error_body(raw)
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429:
            # Nobody may call until the upstream's window has passed: polls and actions alike.
            self.bucket.hold(retry_after if retry_after is not None else RATE_WINDOW)
        text = f"{what}: HTTP {status}" + (f" {code}" if code else "")
        if message:
            text += ": " + self.redact(message)[:_MESSAGE_LIMIT]
        return SourceError(
            reason_for_status(status),
            text,
            status=status,
            code=code,
            retry_after=retry_after if status in (429, 503) else None,
        )

    # --- token

    async def _bearer(self, max_wait: float | None, tally: _Tally | None) -> _Token:
        if self._fixed is not None:
            return _Token(self._fixed, None)
        async with self._token_lock:
            token = self._token
            if token is None or (token.renew_at is not None and self._clock() >= token.renew_at):
                token = self._token = await self._fetch_token(max_wait, tally)
            return token

    async def _fetch_token(self, max_wait: float | None, tally: _Tally | None) -> _Token:
        what = "POST auth-token"
        credentials = {"mail_address": self.config.mail_address, "password": self._password}
        body = await self._request(
            "POST",
            "/auth-token/",
            what,
            json_body=credentials,
            max_wait=max_wait,
            tally=tally,
            auth=False,
        )
        value = body.get("token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise SourceError(BAD_RESPONSE, f"{what}: answer has no token")
        self.redact.add(value)
        now = self._clock()
        expires = parse.iso_epoch(body.get("expiration"))
        if expires is None:
            log.warning("token expiration unreadable, renewing on 401 only source=%s", self._label)
            return _Token(value, None)
        lifetime = max(0.0, expires - now)
        renew_at = expires - min(self._renew_before, lifetime / 2)
        log.info("token fetched source=%s valid_for=%.0fs", self._label, lifetime)
        return _Token(value, renew_at)


@dataclass(frozen=True)
class RestartStep:
    """One step of a restart: what was called, whether it worked, what the event said."""

    step: str  # stop | reset | start | wait
    ok: bool
    at: float
    encode_status: str | None = None
    error: str | None = None  # SourceError text (no secret)


@dataclass(frozen=True)
class RestartResult:
    live_event: str
    ok: bool
    steps: tuple[RestartStep, ...]
    encode_status: str | None  # the last one seen
    started_at: float
    finished_at: float

    @property
    def failed_step(self) -> str | None:
        return None if self.ok else self.steps[-1].step


class RestartError(SourceError):
    """A restart ended badly at `step`; `result` holds every step up to there."""

    def __init__(self, step: str, cause: SourceError, result: RestartResult) -> None:
        super().__init__(
            cause.reason,
            f"restart {result.live_event}: {step} failed: {cause}",
            status=cause.status,
            code=cause.code,
            retry_after=cause.retry_after,
        )
        self.step = step
        self.result = result


class SmartstreamSource(Source):
    """Polls one merchant's live events (and ingest jobs) and carries out live event actions."""

    kind = "smartstream"

    def __init__(
        self,
        config: SmartstreamSourceConfig,
        context: SourceContext,
        *,
        sleep: Sleep = asyncio.sleep,
        bucket: TokenBucket | None = None,
        poll_max_wait: float | None = None,
        action_max_wait: float = 30.0,
        renew_before: float = 60.0,
    ) -> None:
        super().__init__(config.name, config.interval, config.timeout, context)
        self.config = config
        self._clock = context.clock
        self._sleep = sleep
        self.bucket = bucket or TokenBucket.per_window(
            config.rate_limit, RATE_WINDOW, clock=context.clock, sleep=sleep
        )
        # A poll may wait for the budget up to one interval in all; job pages never wait.
        self.poll_max_wait = self.interval if poll_max_wait is None else poll_max_wait
        self.action_max_wait = action_max_wait
        self.client = SmartstreamClient(
            config,
            bucket=self.bucket,
            clock=context.clock,
            timeout=self.timeout,
            on_throttled=self._count_throttled,
            renew_before=renew_before,
            label=str(self.ref),
        )
        self._jobs: list[Entity] = []

    def inherit(self, old: Source) -> None:
        # The account's budget outlives a reload: a fresh, full bucket could overspend it.
        if isinstance(old, SmartstreamSource) and (
            old.config.url,
            old.config.merchant_id,
            old.config.rate_limit,
        ) == (
            self.config.url,
            self.config.merchant_id,
            self.config.rate_limit,
        ):
            self.bucket = self.client.bucket = old.bucket
            same_credentials = (
                old.config.api_key,
                old.config.token,
                old.config.mail_address,
                old.config.password,
            ) == (
                self.config.api_key,
                self.config.token,
                self.config.mail_address,
                self.config.password,
            )
            if same_credentials:
                # A fetched token stays valid across a reload; fetching another spends budget.
                self.client._token = old.client._token

    def __repr__(self) -> str:
        return f"SmartstreamSource({self.ref}, merchant={self.config.merchant_id!r})"

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    def _count_throttled(self, n: int) -> None:
        self.context.metrics.requests_throttled.labels(self.ref.kind, self.ref.name).inc(n)

    # --- poll

    async def poll(self) -> list[Entity]:
        tally = _Tally(allowance=self.poll_max_wait)
        try:
            events = await self.client.list_live_events(max_wait=None, tally=tally)
            entities = [self._live_event_entity(item) for item in events]
            if self.config.jobs:
                entities += await self._poll_jobs(tally)
        finally:
            self._log_throttling(tally)
        return entities

    async def _poll_jobs(self, tally: _Tally) -> list[Entity]:
        """Jobs are secondary: when the budget is short their listing is left out and the last
        complete job list is reported again (its `observed_at` tells how old it is)."""
        try:
            jobs = await self.client.list_jobs(max_wait=0.0, tally=tally)
        except BudgetExhausted:
            return list(self._jobs)
        now = self._clock()
        self._jobs = [self._job_entity(item, now) for item in jobs]
        return list(self._jobs)

    def _log_throttling(self, tally: _Tally) -> None:
        if not (tally.delayed or tally.left_out):
            return
        log.warning(
            "poll throttled source=%s rate_limit=%d/min delayed=%d waited=%.1fs left_out=%r",
            self.ref,
            self.config.rate_limit,
            tally.delayed,
            tally.waited,
            ", ".join(tally.left_out),
        )

    def _live_event_entity(self, item: Mapping[str, Any]) -> Entity:
        status = parse.text(item.get("encode_status"))
        sources = item.get("input_sources")
        return Entity(
            LIVE_EVENT_KIND,
            {"merchant": self.config.merchant_id, "live_event": str(item["id"])},
            {
                "ref_id": parse.text(item.get("ref_id")),
                "name": parse.text(item.get("name")) or "",
                "encode_status": status,
                "running": status == ENCODE_STATUS_RUNNING,
                "live_encode_start_at": parse.iso_epoch(item.get("live_encode_start_at")),
                "live_encode_end_at": parse.iso_epoch(item.get("live_encode_end_at")),
                "created_at": parse.iso_epoch(item.get("created_at")),
                "updated_at": parse.iso_epoch(item.get("updated_at")),
                "input_sources": len(sources) if isinstance(sources, list) else 0,
                "media_id": parse.text(item.get("media_id")),
                "live_event_profile_id": parse.text(item.get("live_event_profile_id")),
                "ad_insertion": item.get("enable_ad_insertion_flag") is True,
                "live_to_file": item.get("enable_live_to_file_flag") is True,
            },
        )

    def _job_entity(self, item: Mapping[str, Any], observed_at: float) -> Entity:
        return Entity(
            JOB_KIND,
            {"merchant": self.config.merchant_id, "job": str(item["id"])},
            {
                "ref_id": parse.text(item.get("ref_id")),
                "name": parse.text(item.get("name")) or "",
                "media_id": parse.text(item.get("media_id")),
                "encode_status": parse.integer(item.get("encode_status")),
                "source_type": parse.text(item.get("source_type")),
                "job_profile_id": parse.text(item.get("job_profile_id")),
                "created_at": parse.iso_epoch(item.get("created_at")),
                "updated_at": parse.iso_epoch(item.get("updated_at")),
                "observed_at": observed_at,
            },
        )

    # --- actions (target: a live event id or `ref:<ref_id>`)

    async def get_live_event(self, target: str) -> Entity:
        body = await self.client.live_event("GET", target, max_wait=self.action_max_wait)
        return self._event_or_raise(body, f"GET live_events/{target}")

    async def start_live_event(self, target: str) -> Entity | None:
        return self._event_or_none(await self._action(target, "start"))

    async def stop_live_event(self, target: str) -> Entity | None:
        return self._event_or_none(await self._action(target, "stop"))

    async def reset_live_event(self, target: str) -> None:
        await self._action(target, "reset")

    async def get_job(self, target: str) -> Entity:
        body = await self.client.get_job(target, max_wait=self.action_max_wait)
        if not isinstance(body, dict) or "id" not in body:
            raise SourceError(BAD_RESPONSE, f"GET jobs/{target}: answer is not a job")
        return self._job_entity(body, self._clock())

    async def _action(self, target: str, action: str) -> Any:
        body = await self.client.live_event("POST", target, action, max_wait=self.action_max_wait)
        log.info(
            "live event action done source=%s live_event=%s action=%s", self.ref, target, action
        )
        return body

    def _event_or_raise(self, body: Any, what: str) -> Entity:
        event = self._event_or_none(body)
        if event is None:
            raise SourceError(BAD_RESPONSE, f"{what}: answer is not a live event")
        return event

    def _event_or_none(self, body: Any) -> Entity | None:
        if isinstance(body, dict) and isinstance(body.get("id"), str | int):
            return self._live_event_entity(body)
        return None

    async def restart_live_event(
        self,
        target: str,
        *,
        poll_interval: float = 5.0,
        deadline: float = 120.0,
        until: Iterable[str] = (ENCODE_STATUS_RUNNING,),
    ) -> RestartResult:
        """stop → reset → start (the API refuses a start after a stop without a reset), then
        read the event every `poll_interval` s until its encode_status is one of `until`, for
        at most `deadline` s. A stop the API refuses (already stopped) does not end the
        restart; any other failure does, with RestartError saying at which step."""
        wanted = frozenset(until)
        started_at = self._clock()
        steps: list[RestartStep] = []
        status: str | None = None

        def result(ok: bool) -> RestartResult:
            return RestartResult(target, ok, tuple(steps), status, started_at, self._clock())

        def fail(step: str, cause: SourceError) -> RestartError:
            steps.append(RestartStep(step, False, self._clock(), status, str(cause)))
            log.warning(
                "restart failed source=%s live_event=%s step=%s error=%r",
                self.ref,
                target,
                step,
                str(cause),
            )
            return RestartError(step, cause, result(False))

        for step in ("stop", "reset", "start"):
            try:
                event = self._event_or_none(await self._action(target, step))
            except SourceError as exc:
                if step == "stop" and exc.status == 400:
                    steps.append(RestartStep(step, False, self._clock(), status, str(exc)))
                    continue
                raise fail(step, exc) from exc
            status = _status_of(event, status)
            steps.append(RestartStep(step, True, self._clock(), status))

        wait_until = self._clock() + deadline
        while status not in wanted:
            remaining = wait_until - self._clock()
            if remaining <= 0:
                cause = SourceError(
                    TIMEOUT,
                    f"encode_status still {status} after {deadline:g}s, wanted {sorted(wanted)}",
                )
                raise fail("wait", cause)
            await self._sleep(min(poll_interval, remaining))
            budget = min(self.action_max_wait, max(0.0, wait_until - self._clock()))
            try:
                body = await self.client.live_event("GET", target, max_wait=budget)
                status = _status_of(self._event_or_none(body), status)
            except SourceError as exc:
                if exc.reason == UNAUTHORIZED or exc.status == 404:
                    raise fail("wait", exc) from exc
                log.info(
                    "restart status read failed source=%s live_event=%s error=%r",
                    self.ref,
                    target,
                    str(exc),
                )
        steps.append(RestartStep("wait", True, self._clock(), status))
        log.info("restart done source=%s live_event=%s encode_status=%s", self.ref, target, status)
        return result(True)


def _status_of(event: Entity | None, default: str | None) -> str | None:
    if event is None:
        return default
    value = event.fields.get("encode_status")
    return value if isinstance(value, str) else default


def _target_path(target: str) -> str:
    if not isinstance(target, str) or not _TARGET.match(target):
        raise ValueError(f"not a live event id or ref:<ref_id>: {target!r}")
    return quote(target, safe=":")


def _error_body(raw: bytes) -> tuple[str | None, str | None]:
    """The documented error body is `{"code": ..., "message": ...}`; read it leniently (also
    `error` as the code, or nested under `error`)."""
    try:
        body = decode_json(raw, "error body")
    except SourceError:
        return None, None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    if code is None and isinstance(body.get("error"), str):
        code = body["error"]
    code = str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None
    if code is not None and not _CODE.match(code):
        code = None  # never put arbitrary text into a metric label
    message = body.get("message")
    return code, (message if isinstance(message, str) and message else None)
