"""A NAVER Cloud Live Station simulator: `NaverSim(access_key, secret_key, clock)`, served by
`sim.app()`.

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
* Faults, the schedule, the call log and `/_sim` come from the shared kit; a `status` fault with
  a gateway code ("230") answers the gateway body, with an error name ("NOT_FOUND") Live
  Station's. The vendor's own `/_sim` routes are in `routes.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from monitor.sim.control import Handler, Simulator
from monitor.sim.kit import Clock, Fault
from monitor.sim.naver.model import (
    EVENT_DESCRIPTIONS,
    MAX_SKEW_MS,
    error_for,
    gateway_error,
    is_publishing,
    live_station_error,
    status_of,
)
from monitor.sim.naver.routes import add_routes, public_event

log = logging.getLogger(__name__)


class NaverSim(Simulator):
    """State of one simulated Live Station account; `app()` serves it."""

    ACTIONS = (
        "add_channel",
        "remove_channel",
        "set_status",
        "set_recording",
        "set_cdn_status",
        "add_event",
        "set_callback_url",
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
        super().__init__(clock)
        self._access_key = access_key
        self._secret_key = secret_key
        self.region = region
        self.callback_url = callback_url
        self.callback_interval = callback_interval
        self.callback_as_strings = callback_as_strings
        self.callback_timeout = 5.0
        self.channels: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # each with a private "_id"
        self.callback_log: deque[dict[str, Any]] = deque(maxlen=2000)
        self._outbox: list[tuple[str, dict[str, Any]]] = []
        self._channel_seq = itertools.count(1)
        self._event_ids = itertools.count(1000)

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
        seq = next(self._channel_seq)
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
            "recentPublishStartTime": now_ms if is_publishing(status) else None,
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
        self.channel(channel_id)
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
        channel = self.channel(channel_id)
        old = str(channel["channelStatus"])
        now_ms = self.now_ms()
        channel["channelStatus"] = status
        if is_publishing(status) and not is_publishing(old):
            channel["recentPublishStartTime"] = now_ms
        if is_publishing(old) and not is_publishing(status):
            started = channel.get("recentPublishStartTime") or now_ms
            channel["totalPublishSeconds"] += max(0, (now_ms - started) // 1000)
            channel["isRecording"] = False
        code = event
        if event == "auto":
            code = None
            if is_publishing(status) and not is_publishing(old):
                code = "PUBLISH_START"
            elif is_publishing(old) and not is_publishing(status):
                code = "PUBLISH_END"
        if code:
            return self.add_event(channel_id, code, description=description)
        return None

    def set_recording(self, channel_id: str, is_recording: bool) -> None:
        self.channel(channel_id)["isRecording"] = bool(is_recording)

    def set_cdn_status(self, channel_id: str, status_name: str) -> None:
        self.channel(channel_id)["cdn"]["statusName"] = status_name

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
        return public_event(event)

    def set_callback_url(self, url: str | None) -> None:
        self.callback_url = url

    def next_record_number(self) -> int:
        return next(self._channel_seq)

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
        self.tick()
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
                    log.debug("callback not delivered", extra={"error": type(exc).__name__})
                # The URL carries the receiver's token: it is not logged.
                self.callback_log.append({"at": self.clock(), "payload": payload, "status": status})
                if status is not None and 200 <= status < 300:
                    delivered += 1
                else:
                    failed.append((url, payload))
        self._outbox = failed + self._outbox
        return delivered

    # -- the kit's hooks ----------------------------------------------------------------------

    def default_status(self, code: str | None) -> int:
        return status_of(code)

    def error_body(self, fault: Fault) -> web.Response:
        return error_for(fault.status or 500, fault.code, fault.message)

    async def answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        response = self.check_auth(request)
        if response is not None:
            return response
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return gateway_error("300")

    def setup(self, app: web.Application) -> None:
        add_routes(app)
        app.cleanup_ctx.append(self._deliveries)

    def vendor_state(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels.values()),
            "events": [public_event(e) for e in self.events],
            "callbackUrlSet": self.callback_url is not None,
            "pendingCallbacks": len(self._outbox),
        }

    async def _deliveries(self, app: web.Application) -> AsyncIterator[None]:
        task = None
        if self.callback_interval:
            task = asyncio.get_running_loop().create_task(self._deliver_forever())
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver_forever(self) -> None:
        assert self.callback_interval
        while True:
            await asyncio.sleep(self.callback_interval)
            try:
                await self.deliver_callbacks()
            except Exception:
                log.exception("callback delivery crashed")

    def check_auth(self, request: web.Request) -> web.Response | None:
        headers = request.headers
        names = ("x-ncp-apigw-timestamp", "x-ncp-iam-access-key", "x-ncp-apigw-signature-v2")
        for name in names:
            if not headers.get(name):
                return gateway_error("200", f"missing header {name}")
        timestamp = headers["x-ncp-apigw-timestamp"]
        access_key = headers["x-ncp-iam-access-key"]
        signature = headers["x-ncp-apigw-signature-v2"]
        if not timestamp.isdigit():
            return gateway_error("200", "invalid timestamp")
        if abs(self.now_ms() - int(timestamp)) >= MAX_SKEW_MS:
            return gateway_error("200", "timestamp is out of the allowed range")
        if not hmac.compare_digest(access_key.encode(), self._access_key.encode()):
            return gateway_error("200", "unknown access key")
        string_to_sign = (
            request.method + " " + request.raw_path + "\n" + timestamp + "\n" + access_key
        )
        expected = base64.b64encode(
            hmac.new(self._secret_key.encode(), string_to_sign.encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return gateway_error("200", "signature mismatch")
        region = headers.get("x-ncp-region_code")
        if not region:
            return live_station_error(
                400, "REQUIRED_HEADER", "Required header x-ncp-region_code is missing."
            )
        if region != self.region:
            return live_station_error(
                400, "OPEN_API_INVALID_REGION_CODE", f"Invalid region code {region}."
            )
        return None

    def channel(self, channel_id: str) -> dict[str, Any]:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise KeyError(f"channel {channel_id} not found") from None
