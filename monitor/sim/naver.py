"""A NAVER Cloud Live Station simulator: an aiohttp app factory over one `NaverSim` state object.

Answers from reference/naver-live-station.md and the seed, not from monitor.sources (so the two
sides cannot share a bug; the signature check is written again here):

* API Gateway auth on every `/api/...` request: the three signature headers must be present,
  the access key known, the timestamp within 5 minutes of the injected clock, and the
  signature v2 equal to the one recomputed from the secret over the raw path and query. Failures
  answer the gateway body `{"error":{"errorCode":"200","message":"Authentication Failed",...}}`
  with 401. A missing `x-ncp-region_code` is Live Station's 400 `REQUIRED_HEADER`.
* `GET /api/v2/channels` (pageNo, pageSizeNo, channelStatus, id, channelName; `content`+`total`),
  `GET /api/v2/channels/{id}`, `PUT .../{off,on,startRecord,stopRecord}`,
  `GET /api/v2/events[?channelId=]`, `GET /api/v2/channels/{id}/events`, `.../publish-log`,
  `GET|POST /api/v2/events/callbackEndpoint`.
* Events are made on demand (`add_event`, `set_status`, the actions) and POSTed as callbacks
  `{id, logLevel, channelId, event, timestamp}` to the channel's or the default callback URL when
  `await sim.deliver_callbacks()` runs (or every `callback_interval` seconds in the background).
* Faults (5xx, delay, bad JSON, 401, 429, any error body) as methods and as `/_sim/faults`;
  a clock-driven schedule (`sim.schedule(at, action, **kwargs)`) applied lazily on each request.
* `/_sim/...` routes (no auth, JSON) let another process drive all of it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

Clock = Callable[[], float]

MAX_SKEW_MS = 5 * 60 * 1000
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

# API Gateway errors: code → (HTTP status, message). Body errorCode is a string.
GATEWAY_ERRORS: dict[str, tuple[int, str]] = {
    "100": (400, "Bad Request Exception"),
    "200": (401, "Authentication Failed"),
    "210": (401, "Permission Denied"),
    "230": (403, "Forbidden"),
    "300": (404, "Not Found Exception"),
    "430": (413, "Request Entity Too Large"),
    "400": (429, "Quota Exceeded"),
    "410": (429, "Throttle Limited"),
    "420": (429, "Rate Limited"),
    "500": (503, "Endpoint Error"),
    "510": (504, "Endpoint Timeout"),
    "900": (500, "Unexpected Error"),
}

# Live Station errors: errorName → errorCode (a number in the documented example).
LIVE_STATION_CODES: dict[str, int] = {
    "EXCEPTION": 250000,
    "CUSTOM_MESSAGE": 250001,
    "INVALID_FORMAT": 250002,
    "REQUIRED_HEADER": 250003,
    "NOT_FOUND": 250004,
    "NOT_AVAILABLE": 250005,
    "UNAUTHORIZED": 250006,
    "CONNECTION_FAILED": 250007,
    "REQUEST_FAILED": 250008,
    "THIRD_SERVER_EXCEPTION": 250009,
    "POLICY_CHECK_FAILED": 250010,
    "NEED_VALUE": 250011,
    "JSON_PARSE_GENERAL_ERROR": 250012,
    "INTERNAL_SERVER_ERROR": 250016,
    "OPEN_API_INVALID_REGION_CODE": 250020,
}

EVENT_DESCRIPTIONS = {
    "STREAM_RESERVE": "{name} channel has been created.",
    "STREAM_UPDATE": "{name} channel settings have been changed.",
    "PUBLISH_START": "{name} channel publishing has started.",
    "PUBLISH_END": "{name} channel publishing has ended.",
    "ONAIR_START": "{name} channel recording has started.",
    "ONAIR_END": "{name} channel recording has ended.",
}

ACTIONS_LOGGED = {"off", "on", "startRecord", "stopRecord"}


def _gateway_error(code: str, details: str | None = None) -> web.Response:
    status, message = GATEWAY_ERRORS[code]
    error: dict[str, Any] = {"errorCode": code, "message": message}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)


def _live_station_error(status: int, name: str, message: str) -> web.Response:
    body = {
        "error": {
            "errorCode": LIVE_STATION_CODES.get(name, 250000),
            "message": message,
            "errorName": name,
        }
    }
    return web.json_response(body, status=status)


def _is_publishing(status: str) -> bool:
    return status in ("PUBLISHING", "PUBLISH")


@dataclass
class Fault:
    """One injected failure. `count` None = until cleared; `path` a prefix of request.path."""

    kind: str
    count: int | None = None
    path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, path: str) -> bool:
        return (self.count is None or self.count > 0) and (
            self.path is None or path.startswith(self.path)
        )

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "path": self.path, **self.params}


@dataclass(order=True)
class _Scheduled:
    at: float
    seq: int
    action: Any = field(compare=False)
    kwargs: dict[str, Any] = field(compare=False, default_factory=dict)


class NaverSim:
    """State of one simulated Live Station account; `make_app()` serves it."""

    # Names usable as `schedule(at, "<name>", ...)` and in `/_sim/schedule`.
    SCHEDULABLE = (
        "add_channel",
        "remove_channel",
        "set_status",
        "set_recording",
        "set_cdn_status",
        "add_event",
        "server_error",
        "http_error",
        "gateway_error",
        "unauthorized",
        "rate_limit",
        "bad_json",
        "delay",
        "clear_faults",
        "set_callback_url",
    )
    FAULT_KINDS = (
        "server_error",
        "http_error",
        "gateway_error",
        "unauthorized",
        "rate_limit",
        "bad_json",
        "delay",
    )

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        clock: Clock = time.time,
        *,
        callback_url: str | None = None,
        callback_interval: float | None = None,
        callback_as_strings: bool = False,
        region: str = "KR",
    ):
        self._access_key = access_key
        self._secret_key = secret_key
        self.clock = clock
        self.region = region
        self.callback_url = callback_url
        self.callback_interval = callback_interval
        self.callback_as_strings = callback_as_strings
        self.callback_timeout = 5.0
        self.channels: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # each with a private "_id"
        self.faults: list[Fault] = []
        self.calls: list[dict[str, Any]] = []  # mutating API calls that passed auth
        self.requests: deque[dict[str, Any]] = deque(maxlen=2000)  # every /api request
        self.callback_log: deque[dict[str, Any]] = deque(maxlen=2000)
        self._outbox: list[tuple[str, dict[str, Any]]] = []
        self._schedule: list[_Scheduled] = []
        self._seq = itertools.count(1)
        self._event_ids = itertools.count(1000)
        self._wake: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<NaverSim channels={len(self.channels)} events={len(self.events)}>"

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- state verbs --------------------------------------------------------------------------

    def add_channel(
        self,
        channel_id: str | None = None,
        name: str | None = None,
        status: str = "READY",
        *,
        is_recording: bool = False,
        cdn_status: str = "RUNNING",
        callback_endpoint: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a live channel; returns its API object (the sim's own, mutable)."""
        seq = next(self._seq)
        now_ms = self.now_ms()
        if channel_id is None:
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now_ms / 1000))
            channel_id = f"ls-{stamp}-{seq:05d}"
        if channel_id in self.channels:
            raise ValueError(f"channel {channel_id} exists")
        channel: dict[str, Any] = {
            "channelId": channel_id,
            "channelName": name or f"channel{seq:03d}",
            "instanceNo": 10000 + seq,
            "qualitySetId": 1,
            "qualitySetName": "Basic 720p",
            "outputProtocol": "HLS",
            "channelStatus": status,
            "isRecording": is_recording,
            "useDVR": False,
            "immediateOnAir": True,
            "timemachineMin": 0,
            "uploadPath": "",
            "record": {
                "format": "MP4",
                "type": "MANUAL_UPLOAD",
                "bucketName": "sim-bucket",
                "filePath": "/records",
                "accessControl": "PRIVATE",
            },
            "cdn": {
                "cdnType": "GLOBAL_EDGE",
                "instanceNo": 20000 + seq,
                "profileId": 300 + seq,
                "statusName": cdn_status,
                "serviceName": f"sim-edge-{seq}",
                "cdnDomain": f"{channel_id}.edge.example",
                "regionType": "KOREA",
            },
            "publishUrl": "rtmp://rtmp-ls2-k1.video.media.ntruss.com:8080/relay",
            "globalPublishUrl": "rtmp://global-rtmp.livestation.example:8080/relay",
            "streamKey": f"sk-sim-{seq:05d}",
            "recentPublishStartTime": now_ms if _is_publishing(status) else None,
            "createdTime": now_ms,
            "totalPublishSeconds": 0,
            "alertOn": False,
            "envType": "REAL",
            "callbackEndpoint": callback_endpoint,
        }
        channel.update(extra)
        self.channels[channel_id] = channel
        return channel

    def remove_channel(self, channel_id: str) -> None:
        self._channel(channel_id)
        del self.channels[channel_id]

    def set_status(
        self,
        channel_id: str,
        status: str,
        *,
        event: str | None = "auto",
        description: str | None = None,
    ) -> dict[str, Any] | None:
        """Change `channelStatus` to any string (unknown ones too). `event="auto"` adds
        PUBLISH_START / PUBLISH_END when publishing starts / stops; None adds nothing; any other
        value is the event code to add. Returns the event added, if any."""
        channel = self._channel(channel_id)
        old = str(channel["channelStatus"])
        now_ms = self.now_ms()
        channel["channelStatus"] = status
        if _is_publishing(status) and not _is_publishing(old):
            channel["recentPublishStartTime"] = now_ms
        if _is_publishing(old) and not _is_publishing(status):
            started = channel.get("recentPublishStartTime") or now_ms
            channel["totalPublishSeconds"] += max(0, (now_ms - started) // 1000)
            channel["isRecording"] = False
        code = event
        if event == "auto":
            code = None
            if _is_publishing(status) and not _is_publishing(old):
                code = "PUBLISH_START"
            elif _is_publishing(old) and not _is_publishing(status):
                code = "PUBLISH_END"
        if code:
            return self.add_event(channel_id, code, description=description)
        return None

    def set_recording(self, channel_id: str, is_recording: bool) -> None:
        self._channel(channel_id)["isRecording"] = bool(is_recording)

    def set_cdn_status(self, channel_id: str, status_name: str) -> None:
        self._channel(channel_id)["cdn"]["statusName"] = status_name

    def add_event(
        self,
        channel_id: str,
        code: str,
        *,
        log_level: str = "INFO",
        description: str | None = None,
        timestamp: float | None = None,
        callback: bool = True,
    ) -> dict[str, Any]:
        """Add an event (the channel need not exist). `timestamp` in epoch seconds, default now.
        With `callback`, it is queued for the callback URL in effect now."""
        ts_ms = int(timestamp * 1000) if timestamp is not None else self.now_ms()
        name = self.channels.get(channel_id, {}).get("channelName", channel_id)
        if description is None:
            description = EVENT_DESCRIPTIONS.get(code, "{name} " + code).format(name=name)
        event = {
            "_id": next(self._event_ids),
            "logLevel": log_level,
            "eventCode": code,
            "description": description,
            "timestamp": ts_ms,
            "channelId": channel_id,
        }
        self.events.append(event)
        if callback:
            url = self.channels.get(channel_id, {}).get("callbackEndpoint") or self.callback_url
            if url:
                self._outbox.append((url, self._callback_payload(event)))
        return self._public_event(event)

    def set_callback_url(self, url: str | None) -> None:
        self.callback_url = url

    # -- faults -------------------------------------------------------------------------------

    def server_error(
        self, count: int | None = None, *, status: int = 500, path: str | None = None
    ) -> Fault:
        """Live Station's `EXCEPTION` body with a 5xx status."""
        return self._add_fault("server_error", count, path, status=status)

    def http_error(
        self,
        status: int,
        error_name: str,
        message: str | None = None,
        count: int | None = None,
        *,
        path: str | None = None,
    ) -> Fault:
        """Any Live Station error body (`errorName` from the documented list)."""
        return self._add_fault(
            "http_error",
            count,
            path,
            status=status,
            error_name=error_name,
            message=message or f"{error_name} (simulated)",
        )

    def gateway_error(
        self,
        code: str,
        count: int | None = None,
        *,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> Fault:
        """An API Gateway error (`code` from GATEWAY_ERRORS, e.g. "230" for 403 Forbidden)."""
        code = str(code)
        if code not in GATEWAY_ERRORS:
            raise ValueError(f"unknown gateway code {code!r}")
        return self._add_fault("gateway_error", count, path, code=code, retry_after=retry_after)

    def unauthorized(self, count: int | None = None, *, path: str | None = None) -> Fault:
        return self._add_fault("gateway_error", count, path, code="200", retry_after=None)

    def rate_limit(
        self,
        count: int | None = None,
        *,
        retry_after: float | None = 30,
        code: str = "420",
        path: str | None = None,
    ) -> Fault:
        return self.gateway_error(code, count, path=path, retry_after=retry_after)

    def bad_json(self, count: int | None = None, *, path: str | None = None) -> Fault:
        return self._add_fault("bad_json", count, path)

    def delay(self, seconds: float, count: int | None = None, *, path: str | None = None) -> Fault:
        """Answer late (the only real sleep; cut short when the app shuts down)."""
        return self._add_fault("delay", count, path, seconds=float(seconds))

    def clear_faults(self) -> None:
        self.faults.clear()

    def _add_fault(self, kind: str, count: int | None, path: str | None, **params: Any) -> Fault:
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1 (or None for until cleared)")
        fault = Fault(kind, None if count is None else int(count), path, params)
        self.faults.append(fault)
        return fault

    # -- schedule -----------------------------------------------------------------------------

    def schedule(self, at: float, action: str | Callable[..., Any], **kwargs: Any) -> None:
        """Run `action` (a name from SCHEDULABLE, or a callable) with `kwargs` on the first
        request at or after clock time `at` (epoch seconds)."""
        if isinstance(action, str) and action not in self.SCHEDULABLE:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(self.SCHEDULABLE)}")
        if not isinstance(action, str) and not callable(action):
            raise TypeError("action must be a name or a callable")
        self._schedule.append(_Scheduled(float(at), next(self._seq), action, kwargs))
        self._schedule.sort()

    def apply_schedule(self) -> int:
        """Run every scheduled action that is due; returns how many ran."""
        now = self.clock()
        ran = 0
        while self._schedule and self._schedule[0].at <= now:
            item = self._schedule.pop(0)
            action = getattr(self, item.action) if isinstance(item.action, str) else item.action
            try:
                action(**item.kwargs)
            except Exception:
                log.exception("scheduled action failed action=%s", item.action)
            ran += 1
        return ran

    # -- callbacks ----------------------------------------------------------------------------

    @property
    def pending_callbacks(self) -> int:
        return len(self._outbox)

    def _callback_payload(self, event: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "id": event["_id"],
            "logLevel": event["logLevel"],
            "channelId": event["channelId"],
            "event": event["eventCode"],
            "timestamp": event["timestamp"],
        }
        if self.callback_as_strings:  # the 2024 doc types every field as String
            payload = {k: str(v) for k, v in payload.items()}
        return payload

    async def deliver_callbacks(self) -> int:
        """POST every queued callback; returns how many were answered 2xx. Failed ones stay
        queued for the next delivery."""
        self.apply_schedule()
        batch, self._outbox = self._outbox, []
        if not batch:
            return 0
        failed: list[tuple[str, dict[str, Any]]] = []
        delivered = 0
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.callback_timeout)
        ) as session:
            for url, payload in batch:
                status: int | None = None
                try:
                    async with session.post(url, json=payload) as response:
                        status = response.status
                        await response.read()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    log.debug("callback delivery failed error=%s", type(exc).__name__)
                # The URL carries the receiver's token: it is not logged.
                self.callback_log.append({"at": self.clock(), "payload": payload, "status": status})
                if status is not None and 200 <= status < 300:
                    delivered += 1
                else:
                    failed.append((url, payload))
        self._outbox = failed + self._outbox
        return delivered

    # -- HTTP ---------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """A fresh aiohttp app over this state (an app can be run once; the state lives on)."""
        app = web.Application(middlewares=[self._middleware()])
        app[NAVER_SIM] = self
        app.cleanup_ctx.append(self._lifetime)
        app.on_shutdown.append(self._on_shutdown)
        api = "/api/v2"
        app.router.add_get(f"{api}/channels", self._list_channels)
        app.router.add_get(f"{api}/channels/{{channel_id}}", self._get_channel)
        app.router.add_put(
            f"{api}/channels/{{channel_id}}/{{action:off|on|startRecord|stopRecord}}",
            self._channel_action,
        )
        app.router.add_get(f"{api}/channels/{{channel_id}}/events", self._channel_events)
        app.router.add_get(f"{api}/channels/{{channel_id}}/publish-log", self._publish_log)
        app.router.add_get(f"{api}/events", self._list_events)
        app.router.add_get(f"{api}/events/callbackEndpoint", self._get_callback_endpoint)
        app.router.add_post(f"{api}/events/callbackEndpoint", self._set_callback_endpoint)
        app.router.add_get("/_sim/state", self._sim_state)
        app.router.add_get("/_sim/calls", self._sim_calls)
        app.router.add_get("/_sim/requests", self._sim_requests)
        app.router.add_post("/_sim/channels", self._sim_add_channel)
        app.router.add_delete("/_sim/channels/{channel_id}", self._sim_remove_channel)
        app.router.add_post("/_sim/channels/{channel_id}/status", self._sim_set_status)
        app.router.add_post("/_sim/events", self._sim_add_event)
        app.router.add_post("/_sim/faults", self._sim_add_fault)
        app.router.add_delete("/_sim/faults", self._sim_clear_faults)
        app.router.add_post("/_sim/schedule", self._sim_schedule)
        app.router.add_post("/_sim/callbacks/deliver", self._sim_deliver)
        app.router.add_put("/_sim/callback-url", self._sim_callback_url)
        return app

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        self._wake = asyncio.Event()
        task = None
        if self.callback_interval:
            task = asyncio.get_running_loop().create_task(self._deliver_forever())
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._wake is not None:
            self._wake.set()  # release handlers held by a delay fault

    async def _deliver_forever(self) -> None:
        assert self.callback_interval
        while True:
            await asyncio.sleep(self.callback_interval)
            try:
                await self.deliver_callbacks()
            except Exception:
                log.exception("callback delivery crashed")

    def _middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            self.apply_schedule()
            if not request.path.startswith("/api/"):
                return await handler(request)
            response = await self._fault_response(request)
            if response is None:
                response = self._check_auth(request)
            if response is None:
                try:
                    response = await handler(request)
                except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
                    response = _gateway_error("300")
            self.requests.append(
                {
                    "at": self.clock(),
                    "method": request.method,
                    "path": request.raw_path,
                    "status": response.status,
                }
            )
            return response

        return middleware

    async def _fault_response(self, request: web.Request) -> web.StreamResponse | None:
        for fault in self.faults:
            if not fault.matches(request.path):
                continue
            if fault.count is not None:
                fault.count -= 1
            if fault.kind == "delay":
                if self._wake is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), fault.params["seconds"])
                continue  # a delay slows the answer; it does not replace it
            self.faults = [f for f in self.faults if f.count is None or f.count > 0]
            params = fault.params
            if fault.kind == "server_error":
                return _live_station_error(
                    params["status"], "EXCEPTION", "Unexpected error occurred."
                )
            if fault.kind == "http_error":
                return _live_station_error(
                    params["status"], params["error_name"], params["message"]
                )
            if fault.kind == "gateway_error":
                response = _gateway_error(params["code"], "simulated")
                if params.get("retry_after") is not None:
                    response.headers["Retry-After"] = str(int(params["retry_after"]))
                return response
            if fault.kind == "bad_json":
                return web.Response(
                    status=200, text='{"content": [', content_type="application/json"
                )
        self.faults = [f for f in self.faults if f.count is None or f.count > 0]
        return None

    def _check_auth(self, request: web.Request) -> web.Response | None:
        headers = request.headers
        names = ("x-ncp-apigw-timestamp", "x-ncp-iam-access-key", "x-ncp-apigw-signature-v2")
        for name in names:
            if not headers.get(name):
                return _gateway_error("200", f"missing header {name}")
        timestamp = headers["x-ncp-apigw-timestamp"]
        access_key = headers["x-ncp-iam-access-key"]
        signature = headers["x-ncp-apigw-signature-v2"]
        if not timestamp.isdigit():
            return _gateway_error("200", "invalid timestamp")
        if abs(self.now_ms() - int(timestamp)) >= MAX_SKEW_MS:
            return _gateway_error("200", "timestamp is out of the allowed range")
        if not hmac.compare_digest(access_key.encode(), self._access_key.encode()):
            return _gateway_error("200", "unknown access key")
        string_to_sign = (
            request.method + " " + request.raw_path + "\n" + timestamp + "\n" + access_key
        )
        expected = base64.b64encode(
            hmac.new(self._secret_key.encode(), string_to_sign.encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return _gateway_error("200", "signature mismatch")
        region = headers.get("x-ncp-region_code")
        if not region:
            return _live_station_error(
                400, "REQUIRED_HEADER", "Required header x-ncp-region_code is missing."
            )
        if region != self.region:
            return _live_station_error(
                400, "OPEN_API_INVALID_REGION_CODE", f"Invalid region code {region}."
            )
        return None

    # -- API handlers -------------------------------------------------------------------------

    def _channel(self, channel_id: str) -> dict[str, Any]:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise KeyError(f"channel {channel_id} not found") from None

    @staticmethod
    def _not_found(channel_id: str) -> web.Response:
        return _live_station_error(404, "NOT_FOUND", f"channel {channel_id} not found.")

    @staticmethod
    def _public_event(event: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in event.items() if not k.startswith("_")}

    async def _list_channels(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            page = int(query.get("pageNo", "1"))
            size = int(query.get("pageSizeNo", str(DEFAULT_PAGE_SIZE)))
        except ValueError:
            return _live_station_error(400, "INVALID_FORMAT", "pageNo/pageSizeNo must be numbers.")
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return _live_station_error(
                400, "INVALID_FORMAT", f"pageNo >= 1 and 1 <= pageSizeNo <= {MAX_PAGE_SIZE}."
            )
        channels = list(self.channels.values())
        if "channelStatus" in query:
            channels = [c for c in channels if c["channelStatus"] == query["channelStatus"]]
        if "id" in query:
            channels = [c for c in channels if query["id"] in c["channelId"]]
        if "channelName" in query:
            channels = [c for c in channels if query["channelName"] in c["channelName"]]
        start = (page - 1) * size
        return web.json_response(
            {"content": channels[start : start + size], "total": len(channels)}
        )

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        channel = self.channels.get(channel_id)
        if channel is None:
            return self._not_found(channel_id)
        return web.json_response({"content": channel})

    async def _channel_action(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        action = request.match_info["action"]
        response = self._do_action(channel_id, action)
        self.calls.append(
            {
                "at": self.clock(),
                "method": request.method,
                "path": request.path,
                "channelId": channel_id,
                "action": action,
                "status": response.status,
            }
        )
        return response

    def _do_action(self, channel_id: str, action: str) -> web.Response:
        channel = self.channels.get(channel_id)
        if channel is None:
            return self._not_found(channel_id)
        status = str(channel["channelStatus"])
        if action == "off":
            if status not in ("READY", "PUBLISHING", "PUBLISH"):
                return _not_available(f"channel {channel_id} cannot be stopped in {status}.")
            self.set_status(channel_id, "BLOCK")
            return web.json_response({"content": channel})
        if action == "on":
            if status not in ("BLOCK", "READY"):
                return _not_available(f"channel {channel_id} cannot be enabled in {status}.")
            if status == "BLOCK":
                self.set_status(channel_id, "READY")
            return web.json_response({"content": channel})
        if action == "startRecord":
            if not _is_publishing(status) or channel["isRecording"]:
                return _not_available(f"channel {channel_id} cannot start recording now.")
            channel["isRecording"] = True
            self.add_event(channel_id, "ONAIR_START")
            return web.json_response({"content": channel})
        # stopRecord
        if not channel["isRecording"]:
            return _not_available(f"channel {channel_id} is not recording.")
        channel["isRecording"] = False
        self.add_event(channel_id, "ONAIR_END")
        record_id = f"rec-{next(self._seq)}"
        return web.json_response(
            {
                "content": {
                    "recordList": {
                        record_id: {
                            "recordType": channel["record"]["format"],
                            "channelId": channel_id,
                            "status": "PROCESSING",
                            "recordSeq": 1,
                            "streamSeq": 1,
                        }
                    }
                }
            }
        )

    def _events_json(self, events: list[dict[str, Any]]) -> web.Response:
        # Newest first; the docs do not say, so a client must not rely on any order.
        ordered = sorted(events, key=lambda e: (e["timestamp"], e["_id"]), reverse=True)
        content = [self._public_event(e) for e in ordered]
        return web.json_response({"content": content, "total": len(content)})

    async def _list_events(self, request: web.Request) -> web.Response:
        channel_id = request.query.get("channelId")
        events = [e for e in self.events if channel_id is None or e["channelId"] == channel_id]
        return self._events_json(events)

    async def _channel_events(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        if channel_id not in self.channels:
            return self._not_found(channel_id)
        return self._events_json([e for e in self.events if e["channelId"] == channel_id])

    async def _publish_log(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        if channel_id not in self.channels:
            return self._not_found(channel_id)
        return self._events_json(
            [
                e
                for e in self.events
                if e["channelId"] == channel_id and e["eventCode"].startswith("PUBLISH")
            ]
        )

    async def _get_callback_endpoint(self, request: web.Request) -> web.Response:
        return web.json_response({"content": {"callbackUrl": self.callback_url}})

    async def _set_callback_endpoint(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        url = body.get("callbackUrl") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            response = _live_station_error(400, "INVALID_FORMAT", "callbackUrl is required.")
        else:
            self.callback_url = url
            response = web.json_response({"content": {"callbackUrl": url}})
        self.calls.append(
            {
                "at": self.clock(),
                "method": "POST",
                "path": request.path,
                "channelId": None,
                "action": "callbackEndpoint",
                "status": response.status,
            }
        )
        return response

    # -- /_sim handlers -----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "now": self.clock(),
            "channels": list(self.channels.values()),
            "events": [self._public_event(e) for e in self.events],
            "faults": [f.to_json() for f in self.faults],
            "schedule": [
                {"at": s.at, "action": s.action if isinstance(s.action, str) else repr(s.action)}
                for s in self._schedule
            ],
            "callbackUrlSet": self.callback_url is not None,
            "pendingCallbacks": len(self._outbox),
        }

    async def _sim_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _sim_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": self.calls})

    async def _sim_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": list(self.requests)})

    async def _sim_add_channel(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            channel = self.add_channel(
                body.get("channelId"),
                body.get("channelName"),
                body.get("channelStatus", "READY"),
                is_recording=bool(body.get("isRecording", False)),
                cdn_status=body.get("cdnStatus", "RUNNING"),
                callback_endpoint=body.get("callbackEndpoint"),
            )
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        return web.json_response({"content": channel}, status=201)

    async def _sim_remove_channel(self, request: web.Request) -> web.Response:
        try:
            self.remove_channel(request.match_info["channel_id"])
        except KeyError as exc:
            raise _not_found(str(exc)) from None
        return web.json_response({"ok": True})

    async def _sim_set_status(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        status = body.get("status")
        if not isinstance(status, str) or not status:
            raise _bad_request("status (a string) is required")
        try:
            event = self.set_status(
                request.match_info["channel_id"],
                status,
                event=body.get("event", "auto"),
                description=body.get("description"),
            )
        except KeyError as exc:
            raise _not_found(str(exc)) from None
        channel = self.channels[request.match_info["channel_id"]]
        return web.json_response({"content": channel, "event": event})

    async def _sim_add_event(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        channel_id, code = body.get("channelId"), body.get("eventCode")
        if not isinstance(channel_id, str) or not isinstance(code, str):
            raise _bad_request("channelId and eventCode (strings) are required")
        event = self.add_event(
            channel_id,
            code,
            log_level=body.get("logLevel", "INFO"),
            description=body.get("description"),
            timestamp=body.get("timestamp"),
            callback=bool(body.get("callback", True)),
        )
        return web.json_response({"content": event}, status=201)

    async def _sim_add_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        kind = body.pop("kind", None)
        if kind not in self.FAULT_KINDS:
            raise _bad_request(f"kind must be one of {', '.join(self.FAULT_KINDS)}")
        try:
            fault = getattr(self, kind)(**body)
        except (TypeError, ValueError) as exc:
            raise _bad_request(f"{kind}: {exc}") from None
        return web.json_response({"fault": fault.to_json()}, status=201)

    async def _sim_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"ok": True})

    async def _sim_schedule(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        kwargs = body.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise _bad_request("kwargs must be an object")
        if "at" in body:
            at = body["at"]
        elif "in" in body:
            at = self.clock() + float(body["in"])
        else:
            raise _bad_request("give at (clock time) or in (seconds from now)")
        action = body.get("action")
        if not isinstance(action, str):
            raise _bad_request("action (a name) is required")
        try:
            self.schedule(float(at), action, **kwargs)
        except (TypeError, ValueError) as exc:
            raise _bad_request(str(exc)) from None
        return web.json_response({"at": float(at), "action": action}, status=201)

    async def _sim_deliver(self, request: web.Request) -> web.Response:
        delivered = await self.deliver_callbacks()
        return web.json_response({"delivered": delivered, "pending": len(self._outbox)})

    async def _sim_callback_url(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        url = body.get("url")
        if url is not None and not isinstance(url, str):
            raise _bad_request("url must be a string or null")
        self.callback_url = url
        return web.json_response({"ok": True})

    # -- demo ---------------------------------------------------------------------------------

    @classmethod
    def demo(
        cls,
        access_key: str,
        secret_key: str,
        clock: Clock = time.time,
        callback_url: str | None = None,
    ) -> NaverSim:
        """Four channels and a script: `news` stops publishing (PUBLISHING → READY with a
        PUBLISH_END event) at +20 s, `sports` is force-blocked (FORCE_BLOCK, no event) at +35 s.
        `legacy` reports the older spelling PUBLISH. Callbacks, when a URL is given, are
        delivered every second."""
        sim = cls(
            access_key,
            secret_key,
            clock,
            callback_url=callback_url,
            callback_interval=1.0 if callback_url else None,
        )
        start = clock()
        news = sim.add_channel("ls-20260101090000-news1", "news", "PUBLISHING")
        sports = sim.add_channel("ls-20260101090000-sprt2", "sports", "PUBLISHING")
        sports["isRecording"] = True
        archive = sim.add_channel("ls-20260101090000-arch3", "archive", "READY")
        legacy = sim.add_channel("ls-20260101090000-lgcy4", "legacy", "PUBLISH")
        for channel in (news, sports, archive, legacy):
            channel["createdTime"] = int((start - 86400) * 1000)
            sim.add_event(
                channel["channelId"], "STREAM_RESERVE", timestamp=start - 86400, callback=False
            )
        for channel in (news, sports, legacy):
            channel["recentPublishStartTime"] = int((start - 1800) * 1000)
            sim.add_event(
                channel["channelId"], "PUBLISH_START", timestamp=start - 1800, callback=False
            )
        sim.schedule(start + 20, "set_status", channel_id=news["channelId"], status="READY")
        sim.schedule(
            start + 35,
            "set_status",
            channel_id=sports["channelId"],
            status="FORCE_BLOCK",
            event=None,
        )
        return sim


NAVER_SIM = web.AppKey("naver_sim", NaverSim)


def _not_available(message: str) -> web.Response:
    return _live_station_error(400, "NOT_AVAILABLE", message)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _bad_request("body is not JSON") from None
    if not isinstance(body, dict):
        raise _bad_request("body must be a JSON object")
    return body


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")
