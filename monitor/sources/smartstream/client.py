"""SmartSTREAM (NTT Smart Connect) Live API and Ingest API over HTTP: the only place its URLs,
the `X-Streaks-Api-Key` and bearer headers, the auth-token call and its renewal, paging, the
documented error body and the request budget live (reference/smartstream.md). The account
allows 50 requests a minute by default; polls and actions share one token bucket.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from monitor.sources import values as parse
from monitor.sources.base import Clock
from monitor.sources.http import (
    BAD_RESPONSE,
    RATE_LIMITED,
    HttpSession,
    Page,
    Redactor,
    Response,
    SourceError,
    collect_pages,
    decode_json,
    reason_for_status,
)
from monitor.sources.ratelimit import RateLimitExceeded, TokenBucket
from monitor.sources.smartstream.config import SmartstreamSourceConfig

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-Streaks-Api-Key"
RATE_WINDOW = 60.0  # the account's limit is per minute
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TARGET = re.compile(r"^(ref:)?[^/?#\s]+$")
_RENEW = object()  # a 401 that renewing the token may cure


class BudgetExhausted(SourceError):
    """A request was left out: waiting for the rate limit would have taken too long."""

    def __init__(self, what: str, wait: float, limit: int) -> None:
        super().__init__(
            RATE_LIMITED,
            f"{what}: left out, request budget of {limit}/min is spent (next in {wait:.1f}s)",
            retry_after=wait,
        )


@dataclass
class Tally:
    """What the rate limit did to one poll (for its one log line), and how much longer the
    poll may still wait for it in all."""

    allowance: float | None = None  # None: no total bound
    spent: int = 0  # requests that got their token
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
        self._on_throttled = on_throttled
        self._renew_before = renew_before
        self._label = label or f"smartstream/{config.name}"
        self._base = f"{config.url}/v1/merchants/{quote(config.merchant_id, safe='')}"
        self._api_key = config.api_key.get_secret_value()
        self._fixed = config.token.get_secret_value() if config.token else None
        self._password = config.password.get_secret_value() if config.password else None
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self.http = HttpSession(
            timeout=timeout,
            max_body=config.max_body,
            redact=Redactor(self._api_key, self._fixed, self._password),
        )

    def __repr__(self) -> str:
        return f"SmartstreamClient({self._label}, merchant={self.config.merchant_id!r})"

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.http.close()

    # --- resources

    async def list_live_events(
        self, *, max_wait: float | None, tally: Tally | None = None
    ) -> list[dict[str, Any]]:
        return await self._list_all("live_events", max_wait=max_wait, tally=tally)

    async def list_jobs(
        self, *, max_wait: float | None, tally: Tally | None = None
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
        self, resource: str, *, max_wait: float | None, tally: Tally | None
    ) -> list[dict[str, Any]]:
        """Every item, page after page until a page comes back short (`count` is not trusted:
        the documents do not say whether it is the total or the page size)."""
        limit = self.config.page_size

        async def fetch(page: int) -> Page[dict[str, Any]]:
            what = f"GET {resource} page {page}"
            params = {"limit": limit, "page": page, "sort": "created_at", "order": "ASC"}
            body = await self._request(
                "GET", f"/{resource}", what, params=params, max_wait=max_wait, tally=tally
            )
            batch = body.get(resource) if isinstance(body, dict) else None
            if not isinstance(batch, list) or not all(isinstance(i, dict) for i in batch):
                raise SourceError(BAD_RESPONSE, f"{what}: answer has no '{resource}' list")
            keyed = []
            for item in batch:
                item_id = item.get("id")
                if not isinstance(item_id, str | int) or isinstance(item_id, bool) or item_id == "":
                    raise SourceError(BAD_RESPONSE, f"{what}: an item has no id")
                keyed.append((str(item_id), item))
            return Page(keyed)

        return await collect_pages(fetch, what=f"GET {resource}", page_size=limit)

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
        tally: Tally | None = None,
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
            body = await self.http.request(
                method,
                self._base + path,
                what,
                functools.partial(self._read, renewable and attempt == 1),
                params=params,
                json_body=json_body,
                headers=headers,
            )
            if body is _RENEW:
                log.info("token refused, renewing", extra={"source": self._label, "request": what})
                if self._token is token:  # unless a concurrent call renewed it already
                    self._token = None
                continue
            return body
        raise AssertionError("unreachable")

    def _read(self, renewable: bool, response: Response) -> Any:
        if response.status == 401 and renewable:
            return _RENEW
        if response.status >= 400:
            raise self._http_error(response)
        if not response.body.strip():
            return None
        return response.json()

    async def _spend(self, what: str, max_wait: float | None, tally: Tally | None) -> None:
        if tally is not None:
            max_wait = tally.bound(max_wait)
        try:
            waited = await self.bucket.acquire(1, max_wait=max_wait)
        except RateLimitExceeded as exc:
            self._on_throttled(1)
            if tally is not None:
                tally.left_out.append(what)
            raise BudgetExhausted(what, exc.wait, self.config.rate_limit) from None
        if tally is not None:
            tally.spent += 1
        if waited > 0:
            self._on_throttled(1)
            if tally is not None:
                tally.delayed += 1
                tally.waited += waited
            else:
                log.info(
                    "request delayed by rate limit",
                    extra={"source": self._label, "request": what, "waited_s": round(waited, 3)},
                )

    def _http_error(self, response: Response) -> SourceError:
        status, what = response.status, response.what
        code, message = _error_body(response.body)
        retry_after = response.retry_after
        if status == 429:
            # Nobody may call until the upstream's window has passed: polls and actions alike.
            # Held for at most max_retry_after: an absurd Retry-After (inf, days) must not
            # stop every call for good (the poller caps and logs the poll's deferral too).
            hold = retry_after if retry_after is not None else RATE_WINDOW
            self.bucket.hold(min(hold, self.config.max_retry_after))
        text = f"{what}: HTTP {status}" + (f" {code}" if code else "")
        if message:
            text += ": " + message  # redacted (and then cut) by the HTTP layer
        return SourceError(
            reason_for_status(status),
            text,
            status=status,
            code=code,
            retry_after=retry_after if status in (429, 503) else None,
        )

    # --- token

    async def _bearer(self, max_wait: float | None, tally: Tally | None) -> _Token:
        if self._fixed is not None:
            return _Token(self._fixed, None)
        async with self._token_lock:
            token = self._token
            if token is None or (token.renew_at is not None and self._clock() >= token.renew_at):
                token = self._token = await self._fetch_token(max_wait, tally)
            return token

    async def _fetch_token(self, max_wait: float | None, tally: Tally | None) -> _Token:
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
        self.http.redact.add(value)
        now = self._clock()
        expires = parse.iso_epoch(body.get("expiration"))
        if expires is None:
            log.warning(
                "token expiration unreadable, renewing on 401 only",
                extra={"source": self._label},
            )
            return _Token(value, None)
        lifetime = max(0.0, expires - now)
        renew_at = expires - min(self._renew_before, lifetime / 2)
        log.info("token fetched", extra={"source": self._label, "valid_for_s": round(lifetime)})
        return _Token(value, renew_at)


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
