"""The SmartSTREAM simulator's HTTP handlers: auth-token, live events (with their start, stop,
reset and cancel) and ingest jobs, with the documents' paging. Errors are `SimError`s, which
`SmartstreamSim.answer` turns into the documented bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from monitor.sim.control import SIM_KEY
from monitor.sim.smartstream.model import (
    ENCODE_STATUS_PENDING,
    ENCODE_STATUS_RUNNING,
    JOB_SORT,
    LIVE_SORT,
    LiveEvent,
    SimError,
    iso_utc,
)

if TYPE_CHECKING:
    from monitor.sim.smartstream.state import SmartstreamSim


def add_routes(app: web.Application) -> None:
    m = "/v1/merchants/{merchant_id}"
    router = app.router
    router.add_post(m + "/auth-token/", _auth_token)
    router.add_get(m + "/live_events", _list_live_events)
    router.add_post(m + "/live_events", _create_live_event)
    router.add_get(m + "/live_events/{target}", _get_live_event)
    router.add_put(m + "/live_events/{target}", _update_live_event)
    router.add_delete(m + "/live_events/{target}", _delete_live_event)
    for action in ("start", "stop", "reset", "cancel"):
        router.add_post(m + "/live_events/{target}/" + action, _live_action(action))
    router.add_get(m + "/jobs", _list_jobs)
    router.add_post(m + "/jobs", _create_job)
    router.add_get(m + "/jobs/{target}", _get_job)


def _sim(request: web.Request) -> SmartstreamSim:
    return cast("SmartstreamSim", request.app[SIM_KEY])


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise SimError(400, "BAD_REQUEST") from None
    if not isinstance(body, dict):
        raise SimError(400, "BAD_REQUEST")
    return body


# --- auth-token


async def _auth_token(request: web.Request) -> web.Response:
    sim = _sim(request)
    body = await _json_body(request)
    if not all(isinstance(body.get(k), str) for k in ("mail_address", "password")):
        raise SimError(400, "BAD_REQUEST")
    if (body["mail_address"], body["password"]) != (sim.mail_address, sim.password):
        raise SimError(401, "UNAUTHORIZED")
    token, expires = sim.issue_token()
    return web.json_response({"token": token, "expiration": iso_utc(expires)})


# --- live events


def _event_for(request: web.Request) -> LiveEvent:
    event = _sim(request).find_live_event(request.match_info["target"])
    if event is None:
        raise SimError(404, "LIVE_EVENT_NOT_FOUND")
    return event


async def _list_live_events(request: web.Request) -> web.Response:
    sim = _sim(request)
    items, count = _page(sim, request, list(sim.live_events.values()), LIVE_SORT)
    return web.json_response(
        {"count": count, "live_events": [e.to_json(sim.merchant_id) for e in items]}
    )


async def _get_live_event(request: web.Request) -> web.Response:
    return web.json_response(_event_for(request).to_json(_sim(request).merchant_id))


async def _create_live_event(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body.get("name"), str) or not isinstance(
        body.get("live_event_profile_id"), str
    ):
        raise SimError(400, "BAD_REQUEST")
    created = _sim(request).add_live_event(
        name=body["name"],
        ref_id=body.get("ref_id"),
        description=body.get("description", ""),
        live_event_profile_id=body["live_event_profile_id"],
        enable_ad_insertion_flag=bool(body.get("enable_ad_insertion_flag", False)),
        enable_live_to_file_flag=bool(body.get("enable_live_to_file_flag", False)),
    )
    return web.json_response(created)


async def _update_live_event(request: web.Request) -> web.Response:
    sim = _sim(request)
    event = _event_for(request)
    body = await _json_body(request)
    for key in ("name", "description", "ref_id", "live_event_profile_id"):
        if isinstance(body.get(key), str):
            setattr(event, key, body[key])
    for key in ("enable_ad_insertion_flag", "enable_live_to_file_flag"):
        if key in body:
            setattr(event, key, bool(body[key]))
    event.updated_at = sim.clock()
    return web.json_response(event.to_json(sim.merchant_id))


async def _delete_live_event(request: web.Request) -> web.Response:
    sim = _sim(request)
    event = _event_for(request)
    if event.encode_status in (ENCODE_STATUS_PENDING, ENCODE_STATUS_RUNNING):
        event.encode_status = sim.stopped_status  # "deleted after it is stopped"
    del sim.live_events[event.id]
    return web.json_response(event.to_json(sim.merchant_id))


def _live_action(action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        sim = _sim(request)
        verbs: dict[str, Callable[[LiveEvent], dict[str, Any] | None]] = {
            "start": sim.start_event,
            "stop": sim.stop_event,
            "reset": sim.reset_event,
            "cancel": sim.cancel_event,
        }
        body = verbs[action](_event_for(request))
        if body is None:
            return web.Response(status=200)  # documented: 200 OK without a body
        return web.json_response(body)

    return handler


# --- jobs


async def _list_jobs(request: web.Request) -> web.Response:
    sim = _sim(request)
    items, count = _page(sim, request, list(sim.jobs.values()), JOB_SORT)
    return web.json_response({"count": count, "jobs": [j.to_json(sim.merchant_id) for j in items]})


async def _get_job(request: web.Request) -> web.Response:
    sim = _sim(request)
    job = sim.find_job(request.match_info["target"])
    if job is None:
        raise SimError(404, "JOB_NOT_FOUND")
    return web.json_response(job.to_json(sim.merchant_id))


async def _create_job(request: web.Request) -> web.Response:
    body = await _json_body(request)
    url = body.get("source_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SimError(400, "BAD_REQUEST")
    profile = body.get("job_profile_id")
    created = _sim(request).add_job(
        name=url.rsplit("/", 1)[-1],
        source_url=url,
        job_profile_id=str(profile if profile is not None else "1"),
    )
    return web.json_response(created)


# --- paging


def _page(
    sim: SmartstreamSim, request: web.Request, items: list[Any], sortable: tuple[str, ...]
) -> tuple[list[Any], int]:
    query = request.query
    try:
        limit = int(query.get("limit", sim.default_limit))
        page = int(query.get("page", 1))
    except ValueError:
        raise SimError(400, "BAD_REQUEST") from None
    sort = query.get("sort", "created_at")
    order = query.get("order", "ASC").upper()
    if limit < 1 or page < 1 or sort not in sortable or order not in ("ASC", "DESC"):
        raise SimError(400, "BAD_REQUEST")
    if sim.max_limit is not None:
        limit = min(limit, sim.max_limit)
    items.sort(key=lambda item: (getattr(item, sort), item.id), reverse=order == "DESC")
    chosen = items[(page - 1) * limit : page * limit]
    return chosen, (len(chosen) if sim.count_mode == "page" else len(items))
