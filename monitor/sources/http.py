"""The HTTP layer every upstream client shares.

One keep-alive `ClientSession` per source; redirects are never followed (every upstream call
carries credentials, and aiohttp would carry them to whatever origin a 3xx names, so a 3xx is
`bad_response`); the failure classes a call can end in; secret redaction of every error text;
a cap on the response body (`max_body`), read incrementally; and the one paging loop.

Vendor clients keep what is theirs: URLs, headers, signatures, tokens and the reading of their
answers. They read an answer inside `HttpSession.request` (its `read` callback), so that every
SourceError built from an upstream's words passes through the source's redactor.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import aiohttp
import yarl

T = TypeVar("T")

# The failure classes a poll or an action can end in; each is a value of the `reason` label.
TIMEOUT = "timeout"
CONNECT = "connect"
UNAUTHORIZED = "unauthorized"
HTTP_4XX = "http_4xx"
HTTP_5XX = "http_5xx"
BAD_RESPONSE = "bad_response"
RATE_LIMITED = "rate_limited"
REASONS = (TIMEOUT, CONNECT, UNAUTHORIZED, HTTP_4XX, HTTP_5XX, BAD_RESPONSE, RATE_LIMITED)
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

DEFAULT_MAX_BODY = 64 * 1024 * 1024
MAX_PAGES = 1000
# An error message is cut to this length, after redaction (a cut first could leave half a secret).
MESSAGE_LIMIT = 400
REDACTED = "[redacted]"


class SourceError(Exception):
    """A poll or a call to an upstream failed. `reason` is one of REASONS; `code` is the
    vendor's documented error code when the body carried one. The message never holds a secret."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def metric_code(self) -> str:
        """The value of `streamwatch_source_poll_errors_total{code}`: the vendor's code, or ""
        when it sent none. A code that does not look like one (an upstream echoing text) is
        left out: label values must stay a small set."""
        if self.code and _CODE.fullmatch(self.code):
            return self.code
        return ""

    @property
    def label(self) -> str:
        """The class and the vendor's code after a colon when it sent one
        (`http_4xx:LIVE_EVENT_NOT_FOUND`), for messages; the metric has them apart."""
        code = self.metric_code
        return f"{self.reason}:{code}" if code else self.reason

    def redact(self, redactor: Callable[[str], str]) -> SourceError:
        """Cut secrets out of this error's message (then cut it to MESSAGE_LIMIT) and drop a
        code that held one, in place; returns self."""
        # Text from an upstream may hold lone surrogates (undecodable bytes): escaped, so that a
        # log line or an API answer can always be written as UTF-8.
        message = redactor(self.message).encode("utf-8", "backslashreplace").decode("utf-8")
        if len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 3] + "..."
        self.message = message
        self.args = (message,)
        if self.code is not None and redactor(self.code) != self.code:
            self.code = None
        return self

    def __str__(self) -> str:
        return f"{self.label}: {self.message}"


def reason_for_status(status: int) -> str:
    if status in (401, 403):
        return UNAUTHORIZED
    if status == 429:
        return RATE_LIMITED
    if 400 <= status < 500:
        return HTTP_4XX
    return HTTP_5XX


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (the delta-seconds form); None when absent or not a
    number. A value that is no sane delay (negative, `inf`, `nan`) is `math.inf`: whoever
    honours it caps it (`max_retry_after`), so it cannot stop a source for good."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return math.inf
    return seconds


def _os_error_text(error: BaseException | None) -> str:
    """`connection refused`, `name or service not known`: the OS's words for an error, lower
    case, without the address Python appends to some of them."""
    if error is None:
        return "unknown error"
    number = getattr(error, "errno", None)
    if isinstance(number, int) and number > 0 and number in errno.errorcode:
        text = os.strerror(number)
    else:
        text = getattr(error, "strerror", None) or type(error).__name__
    return text[:1].lower() + text[1:]


def _host_port(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def classify_exception(exc: BaseException, what: str) -> SourceError:
    """Map a transport exception to a SourceError. `what` names the call without secrets
    (e.g. `GET /v1/vhosts`); aiohttp's own messages may carry full URLs, so they are not used."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return SourceError(TIMEOUT, f"{what}: timed out")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        where = _host_port(exc.host, exc.port)
        return SourceError(CONNECT, f"{what}: cannot connect to {where}: certificate refused")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The host and port only: never the URL, which may carry credentials or a query.
        where = _host_port(exc.host, exc.port)
        os_error = getattr(exc, "os_error", None)
        return SourceError(
            CONNECT, f"{what}: cannot connect to {where}: {_os_error_text(os_error)}"
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return SourceError(CONNECT, f"{what}: the server closed the connection")
    if isinstance(exc, aiohttp.ClientPayloadError | json.JSONDecodeError | UnicodeDecodeError):
        return SourceError(BAD_RESPONSE, f"{what}: unreadable body ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        return SourceError(CONNECT, f"{what}: {_os_error_text(exc)}")
    if isinstance(exc, aiohttp.ClientError):
        return SourceError(CONNECT, f"{what}: {type(exc).__name__}")
    return SourceError(BAD_RESPONSE, f"{what}: {type(exc).__name__}")


def decode_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(BAD_RESPONSE, f"{what}: body is not JSON") from exc


# -- byte sizes (the `max_body` setting) ----------------------------------------------------

_BYTE_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_byte_size(value: Any) -> int:
    """`64MiB` → 67108864. An int is bytes; a string is a number and a unit, B, KB, MB, GB
    (powers of 1000) or KiB, MiB, GiB (powers of 1024), any case; `1.5MiB` is allowed."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _BYTE_SIZE.fullmatch(value.strip())):
        factor = _BYTE_UNITS.get(match.group(2).lower())
        if factor is None:
            raise ValueError(f"unknown byte unit in {value!r}: use B, KB, MB, GB, KiB, MiB or GiB")
        size = int(float(match.group(1)) * factor)
    else:
        raise ValueError(f"expected a byte size such as 64MiB, 512KiB or 10MB, got {value!r}")
    if size < 1:
        raise ValueError(f"a byte size must be at least 1 byte, got {value!r}")
    return size


# -- redaction -----------------------------------------------------------------------------


class Redactor:
    """Replaces every known secret (and its percent-encoded form) in a text that may reach an
    error, a log line or a label. A source adds secrets it learns later (a fetched token)."""

    def __init__(self, *secrets: str | None) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        for secret in secrets:
            if not secret:
                continue
            for form in (secret, quote(secret, safe="")):
                if form not in self._secrets:
                    self._secrets.append(form)
        # Longest first, so that a secret containing another is cut out whole.
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secret form(s))"


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """One answer, fully read (within max_body). `what` names the call, without secrets."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    what: str

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))

    def json(self) -> Any:
        return decode_json(self.body, self.what)


class HttpSession:
    """One source's HTTP: a keep-alive session opened once, requests without redirects, the
    body cap, and redaction of every SourceError a request ends in."""

    def __init__(
        self,
        *,
        timeout: float,
        max_body: int = DEFAULT_MAX_BODY,
        redact: Redactor | None = None,
        headers: Mapping[str, str] | None = None,
        connections: int = 100,
    ) -> None:
        self.timeout = timeout
        self.max_body = max_body
        self.redact = redact or Redactor()
        self._headers = dict(headers or {})
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpSession(timeout={self.timeout:g}s, max_body={self.max_body})"

    async def open(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self._headers,
                raise_for_status=False,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str | yarl.URL,
        what: str,
        read: Callable[[Response], T],
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, str]] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """Send one request and hand the answer to `read`, the vendor's reading of it (status,
        error body, envelope). Raises SourceError, always redacted: a transport failure, a
        redirect, a body over max_body, or whatever `read` raised."""
        try:
            response = await self._send(method, url, what, params, json_body, headers)
            return read(response)
        except SourceError as exc:
            raise exc.redact(self.redact) from None

    async def _send(
        self,
        method: str,
        url: str | yarl.URL,
        what: str,
        params: Mapping[str, Any] | Sequence[tuple[str, str]] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
    ) -> Response:
        await self.open()
        assert self._session is not None
        try:
            async with self._session.request(
                method, url, params=params, json=json_body, headers=headers, allow_redirects=False
            ) as resp:
                body = await self._read_body(resp, what)
                status, response_headers = resp.status, resp.headers
        except Exception as exc:
            raise classify_exception(exc, what) from None
        if 300 <= status < 400:
            raise SourceError(
                BAD_RESPONSE, f"{what}: unexpected redirect (HTTP {status})", status=status
            )
        return Response(status, body, response_headers, what)

    async def _read_body(self, resp: aiohttp.ClientResponse, what: str) -> bytes:
        """The whole body, or SourceError once it passes max_body. A body of known length is
        read at once (the parser stops at Content-Length); any other (chunked, compressed: the
        cap is on the decoded bytes) is read piece by piece and given up on at the cap."""
        limit = self.max_body
        length = resp.content_length
        encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if length is not None and not encoded:
            if length > limit:
                raise _too_big(what, limit)
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise _too_big(what, limit)
            chunks.append(chunk)
        return b"".join(chunks)


def _too_big(what: str, limit: int) -> SourceError:
    return SourceError(BAD_RESPONSE, f"{what}: response body exceeds max_body ({limit} bytes)")


# -- paging --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its items keyed by identity, in the order sent; `size`, how many
    items the API sent (default len(items); items the client skipped still count toward a
    full page); `total`, the API's total when the client trusts it."""

    items: Sequence[tuple[str, T]]
    size: int | None = None
    total: int | None = None


async def collect_pages(
    fetch: Callable[[int], Awaitable[Page[T]]],
    *,
    what: str,
    page_size: int,
    max_pages: int = MAX_PAGES,
) -> list[T]:
    """Every item of a paged list: pages 1, 2, ... until one comes back short (or `total` is
    reached). An item seen on two pages (the list moved while it was read) is kept once, as
    first seen. A full page with the same items as the one before (an API that ignores the
    page number) and a list longer than `max_pages` pages both end in bad_response."""
    items: dict[str, T] = {}
    previous: list[str] | None = None
    for number in range(1, max_pages + 1):
        page = await fetch(number)
        keys = [key for key, _ in page.items]
        if keys and keys == previous:
            raise SourceError(
                BAD_RESPONSE,
                f"{what} page {number}: same items as page {number - 1}, paging is ignored",
            )
        previous = keys
        for key, item in page.items:
            items.setdefault(key, item)
        size = len(page.items) if page.size is None else page.size
        if size < page_size:
            return list(items.values())
        if page.total is not None and number * page_size >= page.total:
            return list(items.values())
    raise SourceError(BAD_RESPONSE, f"{what}: more than max_pages ({max_pages}) pages")
