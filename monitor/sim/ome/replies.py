"""Request and answer helpers of the OME simulator: the JSON envelope, error bodies, body
parsing and the lookups that answer OME's 404 messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from monitor.sim.control import SIM_KEY
from monitor.sim.ome.model import (
    AUTH_CHALLENGE,
    JSON_CONTENT_TYPE,
    V_OBJECT_TASK_RESPONSE,
    App,
    OmeError,
    Stream,
    Version,
    Vhost,
    controller_not_found,
)

if TYPE_CHECKING:
    from monitor.sim.ome.state import OmeSim


def json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    # jsoncpp keeps object members in a std::map: OME's JSON has its keys sorted
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    all_headers = {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
    return web.Response(status=status, body=body, headers=all_headers)


def ok(response: Any) -> web.Response:
    return json_response(200, {"statusCode": 200, "message": "OK", "response": response})


def done() -> web.Response:
    return json_response(200, {"statusCode": 200, "message": "OK"})


def error_response(err: OmeError) -> web.Response:
    headers = {"WWW-Authenticate": AUTH_CHALLENGE} if err.status == 401 else None
    return json_response(err.status, err.body(), headers)


async def json_body(request: web.Request) -> Any:
    """OME parses every POST body before anything else; a parse failure is a 400 (jsoncpp text)."""
    text = await request.text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = (
            f"* Line {exc.lineno}, Column {exc.colno}\n"
            "  Syntax error: value, object or array expected.\n"
        )
        raise OmeError(400, message) from None


def as_object(body: Any) -> dict[str, Any]:
    return body if isinstance(body, dict) else {}


def text_of(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    return value if isinstance(value, str) else ""


def ints(values: Any) -> list[int]:
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def strings(values: Any) -> list[str]:
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def sim_of(request: web.Request) -> OmeSim:
    return cast("OmeSim", request.app[SIM_KEY])


def require(sim: OmeSim, since: Version) -> None:
    if sim.version < since:
        raise controller_not_found()


def find_vhost(sim: OmeSim, name: str) -> Vhost:
    vhost = sim.vhosts.get(name)
    if vhost is None:
        raise OmeError(404, f"Could not find the virtual host: [{name}]")
    return vhost


def find_app(sim: OmeSim, vhost_name: str, app_name: str) -> App:
    app = find_vhost(sim, vhost_name).apps.get(app_name)
    if app is None:
        raise OmeError(404, f"Could not find the application: [{vhost_name}/{app_name}]")
    return app


def find_stream(sim: OmeSim, vhost_name: str, app_name: str, name: str) -> Stream:
    stream = find_app(sim, vhost_name, app_name).streams.get(name)
    if stream is None or stream.vanished:
        # observed on OME 0.20: the message names the app by its internal name "#vhost#app"
        internal = f"#{vhost_name}#{app_name}"
        raise OmeError(404, f"Could not find the stream: [{vhost_name}/{internal}/{name}]")
    return stream


def matched_stream(sim: OmeSim, request: web.Request) -> Stream:
    info = request.match_info
    return find_stream(sim, info["vhost"], info["app"], info["stream"])


def require_publisher(app: App, publisher: str) -> None:
    if publisher not in app.publishers:
        raise OmeError(404, f"Could not find application: [{app.path}]")


def task_response(sim: OmeSim, body: dict[str, Any]) -> web.Response:
    return ok(body if sim.version >= V_OBJECT_TASK_RESPONSE else [body])
