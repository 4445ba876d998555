"""OME's verbs, by entity kind (see `monitor.sources.verbs` for the protocol).

`ome.stream`: `restart`, `hls_dump`, `id3_event`. `ome.push` has no `restart` yet: OME keeps a
stopped push for up to a second (its push thread drops it on its next pass), and starting the
same id before that fails with "Duplicate ID"; a restart therefore needs a wait for the push to
be gone, which belongs with the verification stage of the actions issue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.sources.base import Source
from monitor.sources.ome.source import KIND_STREAM, OmeSource
from monitor.sources.verbs import Verb, VerbResult, require, source_of


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
    return VerbResult(True, f"{len(events)} ID3 frame(s) sent to {vhost}/{app}/{stream}")


VERBS: Mapping[str, Mapping[str, Verb]] = {
    KIND_STREAM: {"restart": restart_stream, "hls_dump": hls_dump, "id3_event": id3_event},
}
