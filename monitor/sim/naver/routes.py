"""The NAVER simulator's HTTP handlers: Live Station's channel, event and callback endpoint API,
and the vendor's own `/_sim` routes (channels, status changes, events, callback delivery).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from monitor.sim.control import SIM_KEY, control_body
from monitor.sim.naver.model import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    is_publishing,
    live_station_error,
)

if TYPE_CHECKING:
    from monitor.sim.naver.state import NaverSim


def add_routes(app: web.Application) -> None:
    api = "/api/v2"
    router = app.router
    router.add_get(f"{api}/channels", _list_channels)
    router.add_get(f"{api}/channels/{{channel_id}}", _get_channel)
    router.add_put(
        f"{api}/channels/{{channel_id}}/{{action:off|on|startRecord|stopRecord}}",
        _channel_action,
    )
    router.add_get(f"{api}/channels/{{channel_id}}/events", _channel_events)
    router.add_get(f"{api}/channels/{{channel_id}}/publish-log", _publish_log)
    router.add_get(f"{api}/events", _list_events)
    router.add_get(f"{api}/events/callbackEndpoint", _get_callback_endpoint)
    router.add_post(f"{api}/events/callbackEndpoint", _set_callback_endpoint)
    router.add_post("/_sim/channels", _sim_add_channel)
    router.add_delete("/_sim/channels/{channel_id}", _sim_remove_channel)
    router.add_post("/_sim/channels/{channel_id}/status", _sim_set_status)
    router.add_post("/_sim/events", _sim_add_event)
    router.add_post("/_sim/callbacks/deliver", _sim_deliver)
    router.add_put("/_sim/callback-url", _sim_callback_url)


def _sim(request: web.Request) -> NaverSim:
    return cast("NaverSim", request.app[SIM_KEY])


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if not k.startswith("_")}


def _channel_not_found(channel_id: str) -> web.Response:
    return live_station_error(404, "NOT_FOUND", f"channel {channel_id} not found.")


def _not_available(message: str) -> web.Response:
    return live_station_error(400, "NOT_AVAILABLE", message)


# -- Live Station API -----------------------------------------------------------------------------


async def _list_channels(request: web.Request) -> web.Response:
    sim = _sim(request)
    query = request.query
    try:
        page = int(query.get("pageNo", "1"))
        size = int(query.get("pageSizeNo", str(DEFAULT_PAGE_SIZE)))
    except ValueError:
        return live_station_error(400, "INVALID_FORMAT", "pageNo/pageSizeNo must be numbers.")
    if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        return live_station_error(
            400, "INVALID_FORMAT", f"pageNo >= 1 and 1 <= pageSizeNo <= {MAX_PAGE_SIZE}."
        )
    channels = list(sim.channels.values())
    if "channelStatus" in query:
        channels = [c for c in channels if c["channelStatus"] == query["channelStatus"]]
    if "id" in query:
        channels = [c for c in channels if query["id"] in c["channelId"]]
    if "channelName" in query:
        channels = [c for c in channels if query["channelName"] in c["channelName"]]
    start = (page - 1) * size
    return web.json_response({"content": channels[start : start + size], "total": len(channels)})


async def _get_channel(request: web.Request) -> web.Response:
    sim = _sim(request)
    channel_id = request.match_info["channel_id"]
    channel = sim.channels.get(channel_id)
    if channel is None:
        return _channel_not_found(channel_id)
    return web.json_response({"content": channel})


async def _channel_action(request: web.Request) -> web.Response:
    sim = _sim(request)
    channel_id = request.match_info["channel_id"]
    action = request.match_info["action"]
    return _do_action(sim, channel_id, action)


def _do_action(sim: NaverSim, channel_id: str, action: str) -> web.Response:
    channel = sim.channels.get(channel_id)
    if channel is None:
        return _channel_not_found(channel_id)
    status = str(channel["channelStatus"])
    if action == "off":
        if status not in ("READY", "PUBLISHING", "PUBLISH"):
            return _not_available(f"channel {channel_id} cannot be stopped in {status}.")
        sim.set_status(channel_id, "BLOCK")
        return web.json_response({"content": channel})
    if action == "on":
        if status not in ("BLOCK", "READY"):
            return _not_available(f"channel {channel_id} cannot be enabled in {status}.")
        if status == "BLOCK":
            sim.set_status(channel_id, "READY")
        return web.json_response({"content": channel})
    if action == "startRecord":
        if not is_publishing(status) or channel["isRecording"]:
            return _not_available(f"channel {channel_id} cannot start recording now.")
        channel["isRecording"] = True
        sim.add_event(channel_id, "ONAIR_START")
        return web.json_response({"content": channel})
    # stopRecord
    if not channel["isRecording"]:
        return _not_available(f"channel {channel_id} is not recording.")
    channel["isRecording"] = False
    sim.add_event(channel_id, "ONAIR_END")
    record_id = f"rec-{sim.next_record_number()}"
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


def _events_json(events: list[dict[str, Any]]) -> web.Response:
    # Newest first; the docs do not say, so a client must not rely on any order.
    ordered = sorted(events, key=lambda e: (e["timestamp"], e["_id"]), reverse=True)
    content = [public_event(e) for e in ordered]
    return web.json_response({"content": content, "total": len(content)})


async def _list_events(request: web.Request) -> web.Response:
    sim = _sim(request)
    channel_id = request.query.get("channelId")
    events = [e for e in sim.events if channel_id is None or e["channelId"] == channel_id]
    return _events_json(events)


async def _channel_events(request: web.Request) -> web.Response:
    sim = _sim(request)
    channel_id = request.match_info["channel_id"]
    if channel_id not in sim.channels:
        return _channel_not_found(channel_id)
    return _events_json([e for e in sim.events if e["channelId"] == channel_id])


async def _publish_log(request: web.Request) -> web.Response:
    sim = _sim(request)
    channel_id = request.match_info["channel_id"]
    if channel_id not in sim.channels:
        return _channel_not_found(channel_id)
    return _events_json(
        [
            e
            for e in sim.events
            if e["channelId"] == channel_id and e["eventCode"].startswith("PUBLISH")
        ]
    )


async def _get_callback_endpoint(request: web.Request) -> web.Response:
    sim = _sim(request)
    return web.json_response({"content": {"callbackUrl": sim.callback_url}})


async def _set_callback_endpoint(request: web.Request) -> web.Response:
    sim = _sim(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    url = body.get("callbackUrl") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        response = live_station_error(400, "INVALID_FORMAT", "callbackUrl is required.")
    else:
        sim.callback_url = url
        response = web.json_response({"content": {"callbackUrl": url}})
    return response


# -- /_sim (the vendor's own; the kit turns ValueError into 400 and KeyError into 404) ------------


async def _sim_add_channel(request: web.Request) -> web.Response:
    sim = _sim(request)
    body = await control_body(request)
    channel = sim.add_channel(
        body.get("channelId"),
        body.get("channelName"),
        body.get("channelStatus", "READY"),
        is_recording=bool(body.get("isRecording", False)),
        cdn_status=body.get("cdnStatus", "RUNNING"),
        callback_endpoint=body.get("callbackEndpoint"),
    )
    return web.json_response({"content": channel}, status=201)


async def _sim_remove_channel(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.remove_channel(request.match_info["channel_id"])
    return web.json_response({"ok": True})


async def _sim_set_status(request: web.Request) -> web.Response:
    sim = _sim(request)
    body = await control_body(request)
    status = body.get("status")
    if not isinstance(status, str) or not status:
        raise ValueError("status (a string) is required")
    event = sim.set_status(
        request.match_info["channel_id"],
        status,
        event=body.get("event", "auto"),
        description=body.get("description"),
    )
    channel = sim.channels[request.match_info["channel_id"]]
    return web.json_response({"content": channel, "event": event})


async def _sim_add_event(request: web.Request) -> web.Response:
    sim = _sim(request)
    body = await control_body(request)
    channel_id, code = body.get("channelId"), body.get("eventCode")
    if not isinstance(channel_id, str) or not isinstance(code, str):
        raise ValueError("channelId and eventCode (strings) are required")
    event = sim.add_event(
        channel_id,
        code,
        log_level=body.get("logLevel", "INFO"),
        description=body.get("description"),
        timestamp=body.get("timestamp"),
        callback=bool(body.get("callback", True)),
    )
    return web.json_response({"content": event}, status=201)


async def _sim_deliver(request: web.Request) -> web.Response:
    sim = _sim(request)
    delivered = await sim.deliver_callbacks()
    return web.json_response({"delivered": delivered, "pending": sim.pending_callbacks})


async def _sim_callback_url(request: web.Request) -> web.Response:
    sim = _sim(request)
    body = await control_body(request)
    url = body.get("url")
    if url is not None and not isinstance(url, str):
        raise ValueError("url must be a string or null")
    sim.set_callback_url(url)
    return web.json_response({"ok": True})
