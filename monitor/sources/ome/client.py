"""OvenMediaEngine REST API v1 over HTTP: the only place OME's URLs, its Basic auth built from
the AccessToken, its response envelope and its error bodies live (reference/ovenmediaengine.md).

Answers come back as the API's JSON (the envelope's `response`); `source.py` turns them into
entities. A 404 is `NotFound`, which the poll treats as "gone since the list", not as failure.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from monitor.sources.http import (
    BAD_RESPONSE,
    HTTP_4XX,
    HttpSession,
    Redactor,
    Response,
    SourceError,
    decode_json,
    reason_for_status,
)
from monitor.sources.ome.config import OmeSourceConfig


class NotFound(SourceError):
    """OME answered 404: the vhost, app or stream is gone (normal between list and stats)."""

    def __init__(self, message: str):
        super().__init__(HTTP_4XX, message, status=404)


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _app_path(vhost: str, app: str) -> str:
    return f"/v1/vhosts/{_q(vhost)}/apps/{_q(app)}"


def _stream_tail(vhost: str, app: str, stream: str) -> str:
    return f"vhosts/{_q(vhost)}/apps/{_q(app)}/streams/{_q(stream)}"


def _stream_path(vhost: str, app: str, stream: str) -> str:
    return "/v1/" + _stream_tail(vhost, app, stream)


def _read(response: Response) -> Any:
    """The envelope's `response` (None for action calls), or the error OME sent."""
    status, what = response.status, response.what
    if status in (200, 207):
        envelope = _decode(response.body, what)
        if not isinstance(envelope, Mapping):
            raise SourceError(BAD_RESPONSE, f"{what}: response is not a JSON object")
        return envelope.get("response")
    message = _error_message(response.body) or f"HTTP {status}"
    if status == 404:
        raise NotFound(f"{what}: {message}")
    raise SourceError(
        reason_for_status(status),
        f"{what}: {message}",
        status=status,
        retry_after=response.retry_after,
    )


def _decode(raw: bytes, what: str) -> Any:
    """The JSON of an answer. Bytes that are not UTF-8 become lone surrogates instead of
    failing the whole answer: one stream with a broken name must not hide all the others (the
    source skips and counts the items whose text cannot be encoded again)."""
    try:
        return json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError as exc:
        raise SourceError(BAD_RESPONSE, f"{what}: body is not JSON") from exc


def _error_message(raw: bytes) -> str | None:
    """OME's error body is `{"statusCode": N, "message": "[HTTP] ... (N)"}`."""
    try:
        body = decode_json(raw, "")
    except SourceError:
        return None
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return body["message"]
    return None


class OmeClient:
    """HTTP to one OME server. Every method raises SourceError (NotFound for a 404)."""

    def __init__(self, config: OmeSourceConfig, *, timeout: float) -> None:
        self._url = config.url
        token = config.access_token.get_secret_value()
        encoded = base64.b64encode(token.encode()).decode()
        self.http = HttpSession(
            timeout=timeout,
            max_body=config.max_body,
            # An error body may echo the header: the token, and its base64 form, are cut out.
            redact=Redactor(token, encoded),
            headers={"Authorization": "Basic " + encoded, "Accept": "application/json"},
            connections=config.concurrency,
        )

    def __repr__(self) -> str:
        return f"OmeClient(url={self._url!r})"

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.http.close()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; returns the envelope's `response` (None for action calls)."""
        return await self.http.request(
            method, self._url + path, f"{method} {path}", _read, json_body=body
        )

    async def _get_list(self, path: str) -> list[Any]:
        response = await self._call("GET", path)
        if not isinstance(response, list):
            raise SourceError(BAD_RESPONSE, f"GET {path}: expected a list")
        return response

    async def _get_object(self, path: str) -> Mapping[str, Any]:
        response = await self._call("GET", path)
        if not isinstance(response, Mapping):
            raise SourceError(BAD_RESPONSE, f"GET {path}: expected an object")
        return response

    # -- discovery and statistics ------------------------------------------------------------

    async def vhosts(self) -> list[Any]:
        return await self._get_list("/v1/vhosts")

    async def apps(self, vhost: str) -> list[Any]:
        return await self._get_list(f"/v1/vhosts/{_q(vhost)}/apps")

    async def streams(self, vhost: str, app: str) -> list[Any]:
        return await self._get_list(f"{_app_path(vhost, app)}/streams")

    async def vhost_stats(self, vhost: str) -> Mapping[str, Any]:
        return await self._get_object(f"/v1/stats/current/vhosts/{_q(vhost)}")

    async def app_stats(self, vhost: str, app: str) -> Mapping[str, Any]:
        return await self._get_object(f"/v1/stats/current/vhosts/{_q(vhost)}/apps/{_q(app)}")

    async def stream_stats(self, vhost: str, app: str, stream: str) -> Mapping[str, Any]:
        return await self._get_object("/v1/stats/current/" + _stream_tail(vhost, app, stream))

    async def stream_info(self, vhost: str, app: str, stream: str) -> Mapping[str, Any]:
        return await self._get_object(_stream_path(vhost, app, stream))

    async def tasks(self, vhost: str, app: str, kind: str) -> list[Any]:
        """`:pushes` or `:records` of an app (NotFound: that publisher is not enabled)."""
        if kind not in ("pushes", "records"):
            raise ValueError(f"unknown task list {kind!r}")
        response = await self._call("POST", f"{_app_path(vhost, app)}:{kind}", {})
        return response if isinstance(response, list) else []

    # -- actions -----------------------------------------------------------------------------

    async def stream_exists(self, vhost: str, app: str, stream: str) -> bool:
        try:
            await self.stream_info(vhost, app, stream)
        except NotFound:
            return False
        return True

    async def create_stream(
        self, vhost: str, app: str, name: str, urls: list[str], properties: Mapping[str, Any]
    ) -> None:
        """A pull stream: OME pulls it from `urls` (Create Stream)."""
        body: dict[str, Any] = {"name": name, "urls": list(urls)}
        if properties:
            body["properties"] = dict(properties)
        await self._call("POST", f"{_app_path(vhost, app)}/streams", body)

    async def delete_stream(self, vhost: str, app: str, stream: str) -> None:
        """Terminates the ingest connection; the encoder is expected to reconnect."""
        await self._call("DELETE", _stream_path(vhost, app, stream))

    async def send_event(
        self,
        vhost: str,
        app: str,
        stream: str,
        events: list[Mapping[str, Any]],
        *,
        event_format: str = "id3v2",
        event_type: str = "event",
        urgent: bool = False,
    ) -> None:
        """Injects ID3v2 frames; a 200 only says the input stream took them (an LL-HLS output
        is what delivers them to players)."""
        body = {
            "eventFormat": event_format,
            "eventType": event_type,
            "urgent": urgent,
            "events": list(events),
        }
        await self._call("POST", _stream_path(vhost, app, stream) + ":sendEvent", body)

    async def start_hls_dump(
        self,
        vhost: str,
        app: str,
        stream: str,
        *,
        dump_id: str,
        output_stream_name: str,
        output_path: str,
        info_file: str | None = None,
        playlist: list[str] | None = None,
        user_data: str | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "id": dump_id,
            "outputStreamName": output_stream_name,
            "outputPath": output_path,
        }
        if info_file:
            body["infoFile"] = info_file
        if playlist:
            body["playlist"] = playlist
        if user_data is not None:
            body["userData"] = user_data
        await self._call("POST", _stream_path(vhost, app, stream) + ":startHlsDump", body)

    async def stop_hls_dump(
        self, vhost: str, app: str, stream: str, *, output_stream_name: str, dump_id: str | None
    ) -> None:
        body: dict[str, Any] = {"outputStreamName": output_stream_name}
        if dump_id:
            body["id"] = dump_id
        await self._call("POST", _stream_path(vhost, app, stream) + ":stopHlsDump", body)

    async def hls_dumps(
        self, vhost: str, app: str, stream: str, *, output_stream_name: str
    ) -> list[Mapping[str, Any]]:
        body = {"outputStreamName": output_stream_name}
        response = await self._call("POST", _stream_path(vhost, app, stream) + ":hlsDumps", body)
        return [d for d in response or [] if isinstance(d, Mapping)]

    async def start_push(self, vhost: str, app: str, push: Mapping[str, Any]) -> Mapping[str, Any]:
        response = await self._call("POST", _app_path(vhost, app) + ":startPush", dict(push))
        return response if isinstance(response, Mapping) else {}

    async def stop_push(self, vhost: str, app: str, push_id: str) -> None:
        await self._call("POST", _app_path(vhost, app) + ":stopPush", {"id": push_id})

    async def pushes(self, vhost: str, app: str) -> list[Mapping[str, Any]]:
        response = await self._call("POST", _app_path(vhost, app) + ":pushes", {})
        return [p for p in response or [] if isinstance(p, Mapping)]

    async def start_record(
        self, vhost: str, app: str, record: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        response = await self._call("POST", _app_path(vhost, app) + ":startRecord", dict(record))
        return response if isinstance(response, Mapping) else {}

    async def stop_record(self, vhost: str, app: str, record_id: str) -> None:
        await self._call("POST", _app_path(vhost, app) + ":stopRecord", {"id": record_id})

    async def records(self, vhost: str, app: str) -> list[Mapping[str, Any]]:
        response = await self._call("POST", _app_path(vhost, app) + ":records", {})
        return [r for r in response or [] if isinstance(r, Mapping)]

    async def app(self, vhost: str, app: str) -> Mapping[str, Any]:
        """The app's settings (`publishers`, `outputProfiles`, ...)."""
        return await self._get_object(_app_path(vhost, app))
