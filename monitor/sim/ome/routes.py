"""The OME simulator's HTTP handlers and routes (REST API v1), plus its own `/_sim/events`."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from monitor.sim.control import now_of
from monitor.sim.ome.dumps import STREAM_ACTION_HANDLERS
from monitor.sim.ome.model import (
    APP_ACTIONS,
    STREAM_ACTIONS,
    V_HLS_DUMP,
    V_SEND_EVENT,
    V_STATS_SERVER,
    OmeError,
    StreamSpec,
    controller_not_found,
)
from monitor.sim.ome.replies import (
    as_object,
    done,
    find_app,
    find_vhost,
    json_body,
    matched_stream,
    ok,
    require,
    sim_of,
)
from monitor.sim.ome.tasks import APP_ACTION_HANDLERS
from monitor.sim.ome.views import app_json, stream_json, vhost_json


async def _get_version(request: web.Request) -> web.Response:
    sim = sim_of(request)
    return ok({"gitVersion": f"v{sim.version_text}", "version": sim.version_text})


async def _get_vhosts(request: web.Request) -> web.Response:
    return ok(list(sim_of(request).vhosts))


async def _get_vhost(request: web.Request) -> web.Response:
    return ok(vhost_json(find_vhost(sim_of(request), request.match_info["vhost"])))


async def _get_apps(request: web.Request) -> web.Response:
    return ok(list(find_vhost(sim_of(request), request.match_info["vhost"]).apps))


async def _get_app(request: web.Request) -> web.Response:
    info = request.match_info
    return ok(app_json(find_app(sim_of(request), info["vhost"], info["app"])))


async def _get_streams(request: web.Request) -> web.Response:
    info = request.match_info
    # vanished streams stay listed: that is the list/stats race the fault stands for
    return ok(list(find_app(sim_of(request), info["vhost"], info["app"]).streams))


async def _get_stream(request: web.Request) -> web.Response:
    sim = sim_of(request)
    return ok(stream_json(sim, matched_stream(sim, request), now_of(request)))


PULL_TYPES = {"rtsp": "RtspPull", "rtmp": "RtmpPull"}


async def _create_stream(request: web.Request) -> web.Response:
    """A pull stream (OME's Create Stream): `{name, urls: [...], properties?}`; OME pulls the
    first URL it can. Only rtsp:// and rtmp:// sources are modelled."""
    sim = sim_of(request)
    info = request.match_info
    app = find_app(sim, info["vhost"], info["app"])
    body = as_object(await json_body(request))
    name, urls = body.get("name"), body.get("urls")
    if not isinstance(name, str) or not name or not isinstance(urls, list) or not urls:
        raise OmeError(400, "name and urls are required")
    if name in app.streams:
        raise OmeError(409, f"Stream already exists: [{app.path}/{name}]")
    url = str(urls[0])
    kind = PULL_TYPES.get(url.split("://", 1)[0].lower())
    if kind is None:
        raise OmeError(400, f"Unsupported URL: {url.split('://', 1)[0]}")
    spec = StreamSpec(source_type=kind, source_url=url)
    sim._publish(now_of(request), app, name, spec)
    return done()


async def _delete_stream(request: web.Request) -> web.Response:
    sim = sim_of(request)
    stream = matched_stream(sim, request)
    # OME only closes the ingest connection; an encoder set to reconnect comes back by itself
    sim.unpublish(now_of(request), stream, stream.spec.reconnect_after)
    return done()


async def _post_app_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in APP_ACTIONS:
        raise controller_not_found()
    body = as_object(await json_body(request))
    sim = sim_of(request)
    app = find_app(sim, request.match_info["vhost"], request.match_info["app"])
    return APP_ACTION_HANDLERS[action](sim, app, body, now_of(request))


async def _get_app_action(request: web.Request) -> web.Response:
    # OME still serves GET for the two listing actions ("will be deprecated")
    action = request.match_info["action"]
    if action not in ("records", "pushes"):
        raise controller_not_found()
    sim = sim_of(request)
    app = find_app(sim, request.match_info["vhost"], request.match_info["app"])
    return APP_ACTION_HANDLERS[action](sim, app, {}, now_of(request))


async def _post_stream_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    sim = sim_of(request)
    if action not in STREAM_ACTIONS:
        raise controller_not_found()
    require(sim, V_SEND_EVENT if action == "sendEvent" else V_HLS_DUMP)
    body = await json_body(request)
    stream = matched_stream(sim, request)
    return STREAM_ACTION_HANDLERS[action](sim, stream, body, now_of(request))


async def _get_server_stats(request: web.Request) -> web.Response:
    sim = sim_of(request)
    require(sim, V_STATS_SERVER)
    return ok(sim.server.snapshot(now_of(request), sim.version))


async def _get_vhost_stats(request: web.Request) -> web.Response:
    sim = sim_of(request)
    vhost = find_vhost(sim, request.match_info["vhost"])
    return ok(vhost.meter.snapshot(now_of(request), sim.version))


async def _get_app_stats(request: web.Request) -> web.Response:
    sim = sim_of(request)
    app = find_app(sim, request.match_info["vhost"], request.match_info["app"])
    return ok(app.meter.snapshot(now_of(request), sim.version))


async def _get_stream_stats(request: web.Request) -> web.Response:
    sim = sim_of(request)
    stream = matched_stream(sim, request)
    return ok(stream.meter.snapshot(now_of(request), sim.version))


async def _sim_events(request: web.Request) -> web.Response:
    return web.json_response([asdict(event) for event in sim_of(request).events])


def add_routes(app: web.Application) -> None:
    """OME's REST API v1, plus `GET /_sim/events` (the events `:sendEvent` accepted)."""
    vhost, name, stream = "{vhost:[^/:]+}", "{app:[^/:]+}", "{stream:[^/:]+}"
    apps = f"/v1/vhosts/{vhost}/apps"
    streams = f"{apps}/{name}/streams"
    stats = f"/v1/stats/current/vhosts/{vhost}"
    router = app.router
    router.add_get("/v1/version", _get_version)
    router.add_get("/v1/vhosts", _get_vhosts)
    router.add_get(f"/v1/vhosts/{vhost}", _get_vhost)
    router.add_get(apps, _get_apps)
    router.add_get(f"{apps}/{name}", _get_app)
    router.add_post(f"{apps}/{name}:{{action}}", _post_app_action)
    router.add_get(f"{apps}/{name}:{{action}}", _get_app_action)
    router.add_get(streams, _get_streams)
    router.add_post(streams, _create_stream)
    router.add_get(f"{streams}/{stream}", _get_stream)
    router.add_delete(f"{streams}/{stream}", _delete_stream)
    router.add_post(f"{streams}/{stream}:{{action}}", _post_stream_action)
    router.add_get("/v1/stats/current", _get_server_stats)
    router.add_get(stats, _get_vhost_stats)
    router.add_get(f"{stats}/apps/{name}", _get_app_stats)
    router.add_get(f"{stats}/apps/{name}/streams/{stream}", _get_stream_stats)
    router.add_get("/_sim/events", _sim_events)
