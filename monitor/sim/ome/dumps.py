"""Stream actions: `:sendEvent` and the LL-HLS dump (`:startHlsDump`, `:stopHlsDump`,
`:hlsDumps`), with the playlists and the info file a dump writes.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.sim.ome.model import (
    EVENT_FORMATS,
    EVENT_TYPES,
    MAX_DUMP_SEGMENTS,
    SEGMENT_SECONDS,
    Dump,
    OmeError,
    SentEvent,
    Stream,
    iso8601,
)
from monitor.sim.ome.replies import as_object, done, ok, strings, text_of

if TYPE_CHECKING:
    from monitor.sim.ome.state import OmeSim

log = logging.getLogger(__name__)


def _check_id3_frame(event: Any) -> None:
    frame_type = event.get("frameType") if isinstance(event, dict) else None
    if not isinstance(frame_type, str):
        raise OmeError(400, "frameType is required in events")
    upper = frame_type.upper()
    if not (upper == "TXXX" or upper.startswith("T") or upper == "PRIV"):
        raise OmeError(400, f"frameType is not supported: [{frame_type}]")


def _send_event(sim: OmeSim, stream: Stream, body: Any, now: float) -> web.Response:
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("eventFormat"), str)
        or not isinstance(body.get("events"), list)
    ):
        raise OmeError(400, "eventFormat(string) and events(array) are required")
    event_format = body["eventFormat"]
    since = EVENT_FORMATS.get(event_format.upper())
    if since is None or sim.version < since:
        raise OmeError(400, f"eventFormat is not supported: [{event_format}]")
    events = body["events"]
    if not events:
        raise OmeError(400, "events is empty")
    if event_format.upper() == "ID3V2":
        for event in events:
            _check_id3_frame(event)
    event_type = body.get("eventType", "event")
    if not isinstance(event_type, str):
        raise OmeError(400, "eventType must be string")
    if event_type.upper() not in EVENT_TYPES:
        raise OmeError(400, f"eventType is not supported: [{event_type}]")
    urgent = body.get("urgent") is True
    sim.events.append(SentEvent(now, stream.path, event_format, event_type, urgent, list(events)))
    # 200 means "injected into the source stream", not "delivered to an LL-HLS player"
    return done()


def _dump_target(stream: Stream, output: str) -> str:
    return f"{stream.app.path}/{output}"


def _dump_output(stream: Stream, output: str) -> dict[str, Dump]:
    if output not in stream.outputs:
        raise OmeError(404, f"Could not find output stream: [{_dump_target(stream, output)}]")
    if "llhls" not in stream.app.publishers:
        raise OmeError(404, f"Could not find LLHLS stream: [{_dump_target(stream, output)}]")
    return stream.dumps.setdefault(output, {})


def _start_hls_dump(sim: OmeSim, stream: Stream, body: Any, now: float) -> web.Response:
    body = as_object(body)
    dump = Dump(
        id=text_of(body, "id"),
        output_stream=text_of(body, "outputStreamName"),
        output_path=text_of(body, "outputPath"),
        info_file=text_of(body, "infoFile") or None,
        user_data=text_of(body, "userData") or None,
        playlists=strings(body.get("playlist")),
        started_at=now,
    )
    if not (dump.id and dump.output_stream and dump.output_path):
        raise OmeError(400, "id, outputStreamName and outputPath are required")
    dumps = _dump_output(stream, dump.output_stream)
    target = _dump_target(stream, dump.output_stream)

    def refuse(reason: str) -> OmeError:
        return OmeError(500, f"Could not start dump: [{target}] ({reason})")

    for other in dumps.values():
        if other.id == dump.id:
            raise refuse("Duplicate ID")
        if dump.info_file and other.info_file == dump.info_file:
            raise refuse("Duplicate info file")
    if dump.info_file and Path(dump.info_file).exists():
        raise refuse("Info file already exists")
    try:
        _start_dump_files(stream, dump, now)
    except OSError as exc:
        log.warning(
            "dump not started", extra={"dump": dump.id, "target": target, "error": str(exc)}
        )
        raise refuse("Could not dump init segment") from None
    dumps[dump.id] = dump
    return done()


def _stop_hls_dump(sim: OmeSim, stream: Stream, body: Any, now: float) -> web.Response:
    body = as_object(body)
    output = text_of(body, "outputStreamName")
    if not output:
        raise OmeError(400, "outputStreamName is required")
    dumps = _dump_output(stream, output)
    dump_id = text_of(body, "id")
    if dump_id and dump_id not in dumps:
        target = _dump_target(stream, output)
        raise OmeError(500, f"Could not stop dump: [{target}] (Could not find dump info)")
    for dump in dumps.values() if not dump_id else [dumps[dump_id]]:
        if dump.enabled:
            dump.enabled = False
            finish_dump_files(dump, now, "Completed")
    return done()


def _hls_dumps(sim: OmeSim, stream: Stream, body: Any, now: float) -> web.Response:
    body = as_object(body)
    output = text_of(body, "outputStreamName")
    if not output:
        raise OmeError(400, "outputStreamName is required")
    dumps = _dump_output(stream, output)
    wanted = text_of(body, "id")
    return ok([dump.to_json() for key, dump in dumps.items() if not wanted or key == wanted])


StreamAction = Callable[["OmeSim", Stream, Any, float], web.Response]

STREAM_ACTION_HANDLERS: Mapping[str, StreamAction] = {
    "sendEvent": _send_event,
    "startHlsDump": _start_hls_dump,
    "stopHlsDump": _stop_hls_dump,
    "hlsDumps": _hls_dumps,
}


def _chunklist_names() -> list[tuple[int, str, str]]:
    return [
        (0, "video", "chunklist_0_video_llhls.m3u8"),
        (1, "audio", "chunklist_1_audio_llhls.m3u8"),
    ]


def _chunklist(track: int, kind: str, segments: int, ended: bool) -> str:
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        f"#EXT-X-TARGETDURATION:{SEGMENT_SECONDS}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        f'#EXT-X-MAP:URI="init_{track}_{kind}_llhls.m4s"',
    ]
    for number in range(segments):
        lines += [f"#EXTINF:{SEGMENT_SECONDS:.3f},", f"seg_{track}_{number}_{kind}_llhls.m4s"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _master_playlist(stream: Stream) -> str:
    spec = stream.spec
    bandwidth = stream.bitrate + spec.audio_bitrate
    return (
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="aac",DEFAULT=YES,AUTOSELECT=YES,'
        'URI="chunklist_1_audio_llhls.m3u8"\n'
        f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={spec.width}x{spec.height},"
        'AUDIO="aac"\nchunklist_0_video_llhls.m3u8\n'
    )


def _start_dump_files(stream: Stream, dump: Dump, now: float) -> None:
    """Write what a fresh dump holds: master playlists, one-segment chunklists, the info file."""
    out = Path(dump.output_path).absolute()
    out.mkdir(parents=True, exist_ok=True)
    for name in dump.playlists:
        (out / name).write_text(_master_playlist(stream))
        dump.files.append((now, str(out / name)))
    for track, kind, name in _chunklist_names():
        (out / name).write_text(_chunklist(track, kind, 1, ended=False))
        dump.files.append((now, str(out / name)))
    _write_dump_info(dump, dump.output_stream, "Running")


def finish_dump_files(dump: Dump, now: float, status: str) -> None:
    """Close the chunklists with ENDLIST and mark the info file Completed (or Error)."""
    segments = max(1, math.ceil((now - dump.started_at) / SEGMENT_SECONDS))
    segments = min(segments, MAX_DUMP_SEGMENTS)
    out = Path(dump.output_path).absolute()
    try:
        for track, kind, name in _chunklist_names():
            (out / name).write_text(_chunklist(track, kind, segments, ended=True))
        _write_dump_info(dump, dump.output_stream, status)
    except OSError as exc:
        log.warning("dump not finished", extra={"dump": dump.id, "error": str(exc)})


def _write_dump_info(dump: Dump, stream_name: str, status: str) -> None:
    if not dump.info_file:
        return
    root = ET.Element("DumpInfo")  # observed root element; the docs say HLSDumpInfo
    ET.SubElement(root, "UserData").text = dump.user_data or ""
    ET.SubElement(root, "Stream").text = stream_name
    ET.SubElement(root, "Status").text = status
    items = ET.SubElement(root, "Items")
    for seq, (written_at, path) in enumerate(dump.files):
        item = ET.SubElement(items, "Item")
        ET.SubElement(item, "Seq").text = str(seq)
        ET.SubElement(item, "Time").text = iso8601(written_at)
        ET.SubElement(item, "File").text = path
    ET.indent(root)
    info = Path(dump.info_file)
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
