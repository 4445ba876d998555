"""NAVER Cloud Live Station over HTTP: the only place its URLs, the API Gateway's signature
v2, the region header, both error bodies (the gateway's and Live Station's) and the paged
channel list live (reference/naver-live-station.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import yarl
from pydantic import SecretStr

from monitor.sources import values as parse
from monitor.sources.base import Clock
from monitor.sources.http import (
    BAD_RESPONSE,
    DEFAULT_MAX_BODY,
    RATE_LIMITED,
    UNAUTHORIZED,
    HttpSession,
    Page,
    Redactor,
    Response,
    SourceError,
    collect_pages,
    reason_for_status,
)

log = logging.getLogger(__name__)

API_PREFIX = "/api/v2"

# API Gateway codes (error.errorCode, a string) that mean the credentials were refused, and
# those that mean a quota or throttle; Live Station errorNames that mean "not allowed".
GATEWAY_AUTH_CODES = frozenset({"200", "210", "230"})
GATEWAY_RATE_CODES = frozenset({"400", "410", "420"})
AUTH_ERROR_NAMES = frozenset({"UNAUTHORIZED", "OPEN_API_UNAUTHORIZED", "POLICY_CHECK_FAILED"})


def sign_v2(
    method: str, uri_with_query: str, timestamp_ms: str, access_key: str, secret_key: str
) -> str:
    """API Gateway signature v2: base64(HMAC-SHA256(secret, "METHOD URI\\nTIMESTAMP\\nACCESSKEY")).

    `uri_with_query` is the path and query exactly as sent (no scheme, no host)."""
    message = f"{method.upper()} {uri_with_query}\n{timestamp_ms}\n{access_key}"
    digest = hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _error_from_response(response: Response, reason: str | None = None) -> SourceError:
    """Map an error answer to a SourceError, reading both documented bodies:
    Live Station `{"error":{"errorCode":250004,"errorName":"NOT_FOUND","message":...}}` and the
    gateway's `{"error":{"errorCode":"200","message":"Authentication Failed",...}}`."""
    status = response.status
    reason = reason or reason_for_status(status)
    code: str | None = None
    detail = ""
    try:
        data = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        name = parse.text(error.get("errorName"))
        number = parse.text(error.get("errorCode"))
        detail = parse.text(error.get("message")) or ""
        if name:
            code = name.strip().upper()
            if code in AUTH_ERROR_NAMES:
                reason = UNAUTHORIZED
        elif number:
            code = number.strip()
            if code in GATEWAY_AUTH_CODES:
                reason = UNAUTHORIZED
            elif code in GATEWAY_RATE_CODES:
                reason = RATE_LIMITED
    # The detail is redacted (and then cut) by the HTTP layer.
    message = f"{response.what}: HTTP {status}" + (f" {detail}" if detail else "")
    rate_limited = status == 429 or reason == RATE_LIMITED
    return SourceError(
        reason,
        message,
        status=status,
        code=code,
        retry_after=response.retry_after if rate_limited else None,
    )


def _read(response: Response) -> dict[str, Any]:
    """The decoded JSON object of a success, or the error the answer stands for."""
    status, what = response.status, response.what
    if status >= 400:
        raise _error_from_response(response)
    if status == 204 or not 200 <= status < 300:
        raise SourceError(BAD_RESPONSE, f"{what}: unexpected HTTP {status}", status=status)
    body = response.json()
    if not isinstance(body, dict):
        raise SourceError(BAD_RESPONSE, f"{what}: expected a JSON object", status=status)
    if "error" in body and "content" not in body:
        # An error body with a 2xx status: not what a success looks like.
        raise _error_from_response(response, reason=BAD_RESPONSE)
    return body


class LiveStationClient:
    """Signed requests to one Live Station account. Builds each URL once, signs exactly that
    string and sends exactly that string (aiohttp is told it is already encoded)."""

    def __init__(
        self,
        url: str,
        access_key: SecretStr,
        secret_key: SecretStr,
        region: str,
        timeout: float,
        clock: Clock,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        redact: Redactor | None = None,
    ):
        parts = urlsplit(url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")  # normally empty
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._clock = clock
        redact = redact or Redactor()
        redact.add(access_key.get_secret_value(), secret_key.get_secret_value())
        self.http = HttpSession(timeout=timeout, max_body=max_body, redact=redact)

    def __repr__(self) -> str:
        return f"LiveStationClient({self._origin!r}, region={self._region!r})"

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.http.close()

    def uri(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        """The path and query as they go on the wire and into the signature."""
        uri = f"{self._base_path}{API_PREFIX}{path}"
        if query:
            uri += "?" + urlencode(list(query), quote_via=quote)
        return uri

    def headers(self, method: str, uri: str) -> dict[str, str]:
        timestamp = str(int(self._clock() * 1000))
        access_key = self._access_key.get_secret_value()
        return {
            "x-ncp-apigw-timestamp": timestamp,
            "x-ncp-iam-access-key": access_key,
            "x-ncp-apigw-signature-v2": sign_v2(
                method, uri, timestamp, access_key, self._secret_key.get_secret_value()
            ),
            "x-ncp-region_code": self._region,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    async def request(
        self, method: str, path: str, query: Sequence[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        """One signed call; returns the decoded JSON object or raises SourceError."""
        method = method.upper()
        uri = self.uri(path, query)
        return await self.http.request(
            method,
            yarl.URL(self._origin + uri, encoded=True),
            f"{method} {API_PREFIX}{path}",
            _read,
            headers=self.headers(method, uri),
        )

    # -- endpoints ---------------------------------------------------------------------------

    async def list_channels(self, page_size: int) -> list[dict[str, Any]]:
        """Every live channel, all pages (`pageNo` 1-based, `pageSizeNo`, `total`)."""
        what = f"GET {API_PREFIX}/channels"

        async def fetch(page: int) -> Page[dict[str, Any]]:
            query = [("pageNo", str(page)), ("pageSizeNo", str(page_size))]
            body = await self.request("GET", "/channels", query)
            items = _content_list(body, what)
            keyed = []
            for item in items:
                channel_id = parse.text(item.get("channelId")) if isinstance(item, dict) else None
                if channel_id is None:
                    log.debug("channel without channelId skipped")
                    continue
                keyed.append((channel_id, item))
            return Page(keyed, size=len(items), total=parse.integer(body.get("total")))

        # A channel may move to the next page while we read: the first sighting is kept.
        return await collect_pages(fetch, what=what, page_size=page_size)

    async def list_events(self) -> list[Any]:
        """The event list of all channels (no paging, no time range documented)."""
        body = await self.request("GET", "/events")
        return _content_list(body, f"GET {API_PREFIX}/events")

    async def channel(self, channel_id: str) -> dict[str, Any] | None:
        return _content_object(await self.request("GET", _channel_path(channel_id)))

    async def channel_action(self, channel_id: str, action: str) -> dict[str, Any] | None:
        """PUT /channels/{id}/{off|on|startRecord|stopRecord}; the channel when it came back."""
        return _content_object(await self.request("PUT", f"{_channel_path(channel_id)}/{action}"))


def _channel_path(channel_id: str) -> str:
    if not isinstance(channel_id, str) or not channel_id:
        raise ValueError("channel_id must be a non-empty string")
    return f"/channels/{quote(channel_id, safe='')}"


def _content_list(body: dict[str, Any], what: str) -> list[Any]:
    content = body.get("content")
    if content is None:
        return []
    if not isinstance(content, list):
        raise SourceError(BAD_RESPONSE, f"{what}: content is not a list")
    return content


def _content_object(body: dict[str, Any]) -> dict[str, Any] | None:
    content = body.get("content")
    return content if isinstance(content, dict) and content.get("channelId") else None
