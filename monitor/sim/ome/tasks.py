"""Pushes and records: `POST /v1/vhosts/{vhost}/apps/{app}:<action>`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.sim.ome.model import PUSH_PROTOCOLS, PUSH_REMOVAL_SECONDS, App, OmeError, Push, Record
from monitor.sim.ome.replies import (
    as_object,
    done,
    ints,
    ok,
    require_publisher,
    strings,
    task_response,
    text_of,
)
from monitor.sim.ome.views import push_json, record_json

if TYPE_CHECKING:
    from monitor.sim.ome.state import OmeSim


def _purge_pushes(app: App, now: float) -> None:
    gone = [
        push.id
        for push in app.pushes.values()
        if push.stopped_at is not None and now >= push.stopped_at + PUSH_REMOVAL_SECONDS
    ]
    for push_id in gone:
        del app.pushes[push_id]


def _missing(fields: Iterable[tuple[str, str]]) -> OmeError | None:
    absent = [name for name, value in fields if not value]
    if not absent:
        return None
    return OmeError(
        400, "There is no required parameter [" + "".join(f" {n}" for n in absent) + "]"
    )


def _pushes(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    require_publisher(app, "push")
    _purge_pushes(app, now)
    wanted = text_of(body, "id")
    pushes = [app.pushes[key] for key in sorted(app.pushes) if not wanted or key == wanted]
    return ok([push_json(sim, app, push, now) for push in pushes])


def start_push(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    protocol = text_of(body, "protocol")
    if protocol.lower() not in PUSH_PROTOCOLS:
        raise OmeError(400, f"Could not find protocol '{protocol.lower()}': [{app.path}]")
    require_publisher(app, "push")
    target = as_object(body.get("stream"))
    push = Push(
        id=text_of(body, "id"),
        vhost=app.vhost.name,
        app=app.name,
        stream_name=text_of(target, "name"),
        track_ids=ints(target.get("trackIds") or target.get("tracks")),
        variant_names=strings(target.get("variantNames")),
        created_at=now,
        protocol=protocol,
        url=text_of(body, "url").rstrip("/"),
        stream_key=text_of(body, "streamKey"),
    )
    error = _missing(
        (
            ("id", push.id),
            ("stream.name", push.stream_name),
            ("url", push.url),
            ("protocol", protocol),
        )
    )
    if error is not None:
        raise error
    if not push.url.startswith(PUSH_PROTOCOLS[protocol.lower()]):
        raise OmeError(400, "Unsupported protocol")
    _purge_pushes(app, now)
    if push.id in app.pushes:
        raise OmeError(400, "Duplicate ID")
    app.pushes[push.id] = push
    return task_response(sim, push_json(sim, app, push, now))


def _stop_push(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    require_publisher(app, "push")
    push_id = text_of(body, "id")
    if not push_id:
        raise OmeError(400, "There is no required parameter [ id]")
    _purge_pushes(app, now)
    push = app.pushes.get(push_id)
    if push is None:
        raise OmeError(404, f"Could not find id '{push_id}': [{app.path}]")
    if push.stopped_at is None:
        push.follow(app.target(push.stream_name), now)
        push.stopped_at = now
    return done()


def _records(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    require_publisher(app, "file")
    wanted = text_of(body, "id")
    records = [rec for key, rec in app.records.items() if not wanted or key == wanted]
    return ok([record_json(sim, app, record, now) for record in records])


def start_record(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    require_publisher(app, "file")
    target = as_object(body.get("stream"))
    interval = body.get("interval")
    rule = text_of(body, "segmentationRule")
    record = Record(
        id=text_of(body, "id"),
        vhost=app.vhost.name,
        app=app.name,
        stream_name=text_of(target, "name"),
        track_ids=ints(target.get("trackIds") or target.get("tracks")),
        variant_names=strings(target.get("variantNames")),
        created_at=now,
        interval=interval if isinstance(interval, int) and not isinstance(interval, bool) else 0,
        schedule=text_of(body, "schedule"),
        segmentation_rule=rule if rule in ("continuity", "discontinuity") else "discontinuity",
        file_path=text_of(body, "filePath"),
        info_path=text_of(body, "infoPath"),
        metadata=text_of(body, "metadata"),
    )
    error = _missing((("id", record.id), ("stream.name", record.stream_name)))
    if error is not None:
        raise error
    if record.schedule and record.interval > 0:
        raise OmeError(400, "[Interval] and [Schedule] cannot be used at the same time")
    if record.id in app.records:
        raise OmeError(400, "Duplicate ID already exists")
    app.records[record.id] = record
    return task_response(sim, record_json(sim, app, record, now))


def _stop_record(sim: OmeSim, app: App, body: dict[str, Any], now: float) -> web.Response:
    require_publisher(app, "file")
    record_id = text_of(body, "id")
    if not record_id:
        raise OmeError(400, "There is no required parameter [ id]")
    record = app.records.get(record_id)
    if record is None:
        raise OmeError(404, f"There is no record information related to the ID [{record_id}]")
    record.follow(app.target(record.stream_name), now)
    record.stopped_at = now
    # OME answers with the task marked "stopping" and drops it from the list at once
    del app.records[record_id]
    return task_response(sim, record_json(sim, app, record, now, state="stopping"))


AppAction = Callable[["OmeSim", App, dict[str, Any], float], web.Response]

APP_ACTION_HANDLERS: Mapping[str, AppAction] = {
    "records": _records,
    "startRecord": start_record,
    "stopRecord": _stop_record,
    "pushes": _pushes,
    "startPush": start_push,
    "stopPush": _stop_push,
}
