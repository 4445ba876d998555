"""OME's verbs, by entity kind (see `monitor.sources.verbs` for the protocol).

`ome.push`: `restart` (stopPush, wait until OME has dropped the stopped push (it keeps it up
to a second and refuses the same id meanwhile: "Duplicate ID"), startPush with the same id
and settings) and `restart.verify` (the push is pushing). `ome.record`: `restart` (stopRecord,
startRecord with the same id and settings) and `restart.verify` (recording).

`ome.stream`: `restart`, `hls_dump`, `id3_event`; the runner's helpers `restart.verify` (is
the stream back with input bytes moving?), `hls_dump.stop` and `hls_dump.status`. `"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from monitor.sources.base import Source, SourceError
from monitor.sources.ome.client import NotFound
from monitor.sources.ome.source import KIND_PUSH, KIND_RECORD, KIND_STREAM, OmeSource
from monitor.sources.verbs import Verb, VerbResult, require, runner_sleep, source_of

log = logging.getLogger(__name__)

PULL_SUFFIX = "Pull"  # RtmpPull, RtspPull: OME pulls these itself; a delete does not come back


def _stream(source: Source, labels: Mapping[str, str]) -> tuple[OmeSource, str, str, str]:
    ome = source_of(source, OmeSource)
    server = labels.get("server")
    if server and server != ome.name:
        raise ValueError(f"entity of server {server!r} handed to source {ome.ref}")
    vhost, app, stream = require(labels, "vhost", "app", "stream")
    return ome, vhost, app, stream


def _text(params: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        if required:
            raise ValueError(f"parameter {key!r} is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"parameter {key!r} must be a string")
    return value


async def restart_stream(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """Delete the stream: OME closes the ingest connection and the encoder is expected to
    reconnect. Checking that the stream comes back is left to the actions issue's verify
    stage; `ok` here only says OME accepted the delete."""
    ome, vhost, app, stream = _stream(source, labels)
    info = await ome.client.stream_info(vhost, app, stream)
    found = info.get("input") if isinstance(info, Mapping) else None
    info = found if isinstance(found, Mapping) else {}
    source_type = str(info.get("sourceType") or "")
    if source_type.endswith(PULL_SUFFIX):
        # OME pulls this one itself: deleted, it stays gone, so it is created again with the
        # URL it was pulled from (stream info's `sourceUrl`) and the rule's `properties`.
        url = info.get("sourceUrl")
        if not isinstance(url, str) or "://" not in url:
            return VerbResult(
                False, f"refused: {vhost}/{app}/{stream} is {source_type} without a source URL"
            )
        properties = params.get("properties") or {}
        if not isinstance(properties, Mapping):
            raise ValueError("parameter 'properties' must be a map")
        await ome.client.delete_stream(vhost, app, stream)
        await ome.client.create_stream(vhost, app, stream, [url], properties)
        return VerbResult(True, f"{source_type} stream {vhost}/{app}/{stream} re-created")
    await ome.client.delete_stream(vhost, app, stream)
    return VerbResult(
        True, f"stream {vhost}/{app}/{stream} deleted; the encoder is expected to reconnect"
    )


async def hls_dump(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """Start an HLS dump (`:startHlsDump`) of the stream's LL-HLS output. Parameters:
    `output_path` (required), `output_stream_name` (default: the stream's name), `id` (default:
    `streamwatch-<epoch s>`), `info_file`, `playlist`, `user_data`. Stopping it after
    `duration` is the runner's job."""
    ome, vhost, app, stream = _stream(source, labels)
    output_path = _text(params, "output_path", required=True)
    assert output_path is not None
    dump_id = _text(params, "id") or f"streamwatch-{int(ome.context.clock())}"
    output_stream_name = _text(params, "output_stream_name") or stream
    playlist = params.get("playlist")
    if playlist is not None and (
        not isinstance(playlist, list) or not all(isinstance(p, str) for p in playlist)
    ):
        raise ValueError("parameter 'playlist' must be a list of file names")
    await ome.client.start_hls_dump(
        vhost,
        app,
        stream,
        dump_id=dump_id,
        output_stream_name=output_stream_name,
        output_path=output_path,
        info_file=_text(params, "info_file"),
        playlist=playlist,
        user_data=_text(params, "user_data"),
    )
    return VerbResult(
        True, f"HLS dump {dump_id} of {vhost}/{app}/{output_stream_name} started: {output_path}"
    )


async def id3_event(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """Stamp ID3v2 frames into the live stream (`:sendEvent`). Parameters: `frames` (a list of
    `{frameType, info, data}`), `event_type` (default `event`), `urgent` (default false)."""
    ome, vhost, app, stream = _stream(source, labels)
    frames = params.get("frames")
    if not isinstance(frames, list | tuple) or not frames:
        raise ValueError("parameter 'frames' must be a non-empty list")
    events = []
    for frame in frames:
        if not isinstance(frame, Mapping) or not frame.get("frameType"):
            raise ValueError("each frame needs a frameType")
        events.append({k: v for k, v in frame.items() if v is not None})
    await ome.client.send_event(
        vhost,
        app,
        stream,
        events,
        event_type=_text(params, "event_type") or "event",
        urgent=bool(params.get("urgent", False)),
    )
    detail = f"{len(events)} ID3 frame(s) sent to {vhost}/{app}/{stream}"
    if not await _has_llhls(ome, vhost, app):
        # OME answers 200 anyway: without an LL-HLS output no player ever sees the marker.
        log.warning(
            "ID3 marker sent to an app without LLHLS",
            extra={"source": str(ome.ref), "vhost": vhost, "app": app, "stream": stream},
        )
        detail += "; warning: the app has no LLHLS publisher, so no player receives it"
    return VerbResult(True, detail)


async def _has_llhls(ome: OmeSource, vhost: str, app: str) -> bool:
    """True unless OME says the app's publishers lack LLHLS (an unreadable answer: True)."""
    try:
        info = await ome.client.app(vhost, app)
    except SourceError:
        return True
    publishers = info.get("publishers")
    if not isinstance(publishers, Mapping):
        return True
    return any(str(name).lower() == "llhls" for name in publishers)


async def verify_restart(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """Wait (at most `verify_timeout` s, every `poll_interval` s) until the stream is listed
    again and its `totalBytesIn` grows between two reads: the encoder is back and sending."""
    ome, vhost, app, stream = _stream(source, labels)
    clock, sleep = ome.context.clock, runner_sleep(params)
    timeout = float(params.get("verify_timeout") or 60.0)
    interval = float(params.get("poll_interval") or 1.0)
    deadline = clock() + timeout
    first: float | None = None
    seen = False
    while True:
        try:
            stats = await ome.client.stream_stats(vhost, app, stream)
        except NotFound:
            stats, first = None, None
        if stats is not None:
            seen = True
            moved = stats.get("totalBytesIn")
            if isinstance(moved, int | float):
                if first is not None and moved > first:
                    return VerbResult(True, f"{vhost}/{app}/{stream} is back with input moving")
                if first is None:
                    first = moved
        if clock() >= deadline:
            state = "is back but its input does not move" if seen else "did not come back"
            return VerbResult(False, f"{vhost}/{app}/{stream} {state} within {timeout:g}s")
        await sleep(interval)


async def stop_hls_dump(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """`:stopHlsDump` of dump `id` on `output_stream_name`. A stream that is gone has no dump
    to stop (OME ended it with the stream): reported as done."""
    ome, vhost, app, stream = _stream(source, labels)
    dump_id = _text(params, "id", required=True)
    output = _text(params, "output_stream_name") or stream
    try:
        await ome.client.stop_hls_dump(
            vhost, app, stream, output_stream_name=output, dump_id=dump_id
        )
    except NotFound:
        return VerbResult(
            True, f"stream {vhost}/{app}/{stream} is gone; dump {dump_id} ended with it"
        )
    return VerbResult(True, f"HLS dump {dump_id} stopped")


async def hls_dump_status(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """`:hlsDumps`: `ok` when OME lists dump `id` (detail: enabled or not)."""
    ome, vhost, app, stream = _stream(source, labels)
    dump_id = _text(params, "id", required=True)
    output = _text(params, "output_stream_name") or stream
    dumps = await ome.client.hls_dumps(vhost, app, stream, output_stream_name=output)
    for dump in dumps:
        if dump.get("id") == dump_id:
            return VerbResult(True, "enabled" if dump.get("enabled") else "disabled")
    return VerbResult(False, "not listed")


# What startPush / startRecord take again, from the task as OME lists it.
PUSH_KEYS = ("id", "protocol", "url", "streamKey")
RECORD_KEYS = ("id", "interval", "schedule", "segmentationRule", "filePath", "infoPath", "metadata")
TASK_WAIT = 0.25  # seconds between looks at a task list


def _task(source: Source, labels: Mapping[str, str]) -> tuple[OmeSource, str, str, str]:
    ome = source_of(source, OmeSource)
    server = labels.get("server")
    if server and server != ome.name:
        raise ValueError(f"entity of server {server!r} handed to source {ome.ref}")
    vhost, app, task_id = require(labels, "vhost", "app", "id")
    return ome, vhost, app, task_id


def _settings(task: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    settings = {k: task[k] for k in keys if task.get(k) not in (None, "")}
    stream = task.get("stream")
    if isinstance(stream, Mapping):
        settings["stream"] = {
            k: stream[k] for k in ("name", "trackIds", "variantNames") if stream.get(k)
        }
    return settings


def _find(tasks: list[Mapping[str, Any]], task_id: str) -> Mapping[str, Any] | None:
    return next((t for t in tasks if t.get("id") == task_id), None)


async def restart_push(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    ome, vhost, app, push_id = _task(source, labels)
    sleep, clock = runner_sleep(params), ome.context.clock
    push = _find(await ome.client.pushes(vhost, app), push_id)
    if push is None:
        raise ValueError(f"push {push_id} not found in {vhost}/{app}")
    settings = _settings(push, PUSH_KEYS)  # its stream key stays here: never logged or saved
    await ome.client.stop_push(vhost, app, push_id)
    deadline = clock() + float(params.get("verify_timeout") or 60.0)
    while _find(await ome.client.pushes(vhost, app), push_id) is not None:
        if clock() >= deadline:
            return VerbResult(False, f"push {push_id} stopped but OME did not drop it in time")
        await sleep(TASK_WAIT)
    await ome.client.start_push(vhost, app, settings)
    return VerbResult(True, f"push {push_id} stopped and started again")


async def restart_record(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    ome, vhost, app, record_id = _task(source, labels)
    record = _find(await ome.client.records(vhost, app), record_id)
    if record is None:
        raise ValueError(f"record {record_id} not found in {vhost}/{app}")
    settings = _settings(record, RECORD_KEYS)
    await ome.client.stop_record(vhost, app, record_id)
    await ome.client.start_record(vhost, app, settings)
    return VerbResult(True, f"record {record_id} stopped and started again")


def _verify_task(kind: str, wanted: tuple[str, ...]) -> Verb:
    async def verify(
        source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
    ) -> VerbResult:
        ome, vhost, app, task_id = _task(source, labels)
        sleep, clock = runner_sleep(params), ome.context.clock
        deadline = clock() + float(params.get("verify_timeout") or 60.0)
        while True:
            tasks = await (ome.client.pushes if kind == "push" else ome.client.records)(vhost, app)
            task = _find(tasks, task_id)
            state = str(task.get("state", "")).lower() if task is not None else "gone"
            if state in wanted:
                return VerbResult(True, f"{kind} {task_id} is {state}")
            if clock() >= deadline:
                return VerbResult(False, f"{kind} {task_id} is {state}, wanted {'/'.join(wanted)}")
            await sleep(float(params.get("poll_interval") or 1.0))

    return verify


# Pushes and recordings (tests/test_actions_guard.py).
TASK_VERBS: Mapping[str, Mapping[str, Verb]] = {
    KIND_PUSH: {
        "restart": restart_push,
        "restart.verify": _verify_task("push", ("started", "pushing")),
    },
    KIND_RECORD: {
        "restart": restart_record,
        "restart.verify": _verify_task("record", ("recording",)),
    },
}

VERBS: Mapping[str, Mapping[str, Verb]] = {
    KIND_STREAM: {
        "restart": restart_stream,
        "hls_dump": hls_dump,
        "id3_event": id3_event,
        "restart.verify": verify_restart,
        "hls_dump.stop": stop_hls_dump,
        "hls_dump.status": hls_dump_status,
    },
    **TASK_VERBS,
}
