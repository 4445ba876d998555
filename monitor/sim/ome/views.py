"""OME's JSON answers for stream info, apps, vhosts, pushes and records (stats are the meter's
`snapshot`), shaped per OME version as reference/ovenmediaengine.md says.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from monitor.sim.ome.model import (
    V_INT_BITRATE,
    V_MEASURED_TRACKS,
    App,
    Push,
    Record,
    Stream,
    Version,
    Vhost,
    iso8601,
)

if TYPE_CHECKING:
    from monitor.sim.ome.state import OmeSim


def bitrate_value(version: Version, value: int) -> int | str:
    # strings up to 0.18.x, integers from 0.19.0 (notes §5)
    return value if version >= V_INT_BITRATE else str(value)


def video_json(sim: OmeSim, stream: Stream, now: float) -> dict[str, Any]:
    spec = stream.spec
    bitrate = bitrate_value(sim.version, stream.bitrate)
    framerate = float(spec.framerate)
    video: dict[str, Any] = {
        "bypass": False,
        "codec": spec.video_codec,
        "width": spec.width,
        "height": spec.height,
        "bitrate": bitrate,
        "framerate": framerate,
        "timebase": {"num": 1, "den": 1000 if spec.source_type == "Rtmp" else 90000},
        "hasBframes": spec.has_bframes,
        "keyFrameInterval": spec.keyframe_interval,
    }
    if sim.version >= V_MEASURED_TRACKS:
        received = stream.meter.last_recv_at(now) - stream.meter.created_at
        frames = int(received * framerate)
        video.update(
            bitrateConf=bitrate_value(sim.version, spec.bitrate),
            bitrateAvg=bitrate,
            bitrateLatest=bitrate,
            framerateConf=framerate,
            framerateAvg=framerate,
            framerateLatest=framerate,
            keyFrameIntervalConf=float(spec.keyframe_interval),
            keyFrameIntervalAvg=float(spec.keyframe_interval),
            keyFrameIntervalLatest=spec.keyframe_interval,
            deltaFramesSinceLastKeyFrame=frames % max(1, spec.keyframe_interval),
        )
    return video


def audio_json(
    version: Version, codec: str, samplerate: int, channels: int, bitrate: int, den: int
) -> dict[str, Any]:
    audio: dict[str, Any] = {
        "bypass": False,
        "codec": codec,
        "samplerate": samplerate,
        "channel": channels,
        "bitrate": bitrate_value(version, bitrate),
        "timebase": {"num": 1, "den": den},
    }
    if version >= V_MEASURED_TRACKS:
        value = bitrate_value(version, bitrate)
        audio.update(bitrateConf=value, bitrateAvg=value, bitrateLatest=value)
    return audio


def input_json(sim: OmeSim, stream: Stream, now: float) -> dict[str, Any]:
    spec = stream.spec
    rtmp = spec.source_type == "Rtmp"
    audio = audio_json(
        sim.version,
        spec.audio_codec,
        spec.samplerate,
        spec.channels,
        spec.audio_bitrate,
        1000 if rtmp else spec.samplerate,
    )
    tracks: list[dict[str, Any]] = [
        {"id": 0, "name": "Video", "type": "Video", "video": video_json(sim, stream, now)},
        {"id": 1, "name": "Audio", "type": "Audio", "audio": audio},
    ]
    if rtmp:
        # observed on OME 0.20: RTMP inputs carry a data track without a type-named object
        tracks.append({"id": 2, "name": "Data", "type": "Data"})
    body: dict[str, Any] = {
        "createdTime": iso8601(stream.meter.created_at),
        "sourceType": spec.source_type,
        "tracks": tracks,
    }
    source_url = spec.source_url
    if source_url is None and rtmp:
        port = 40000 + zlib.crc32(stream.path.encode()) % 20000  # stable per stream path
        source_url = f"TCP://127.0.0.1:{port}"
    if source_url:
        body["sourceUrl"] = source_url
    return body


def output_json(sim: OmeSim, stream: Stream, name: str) -> dict[str, Any]:
    """The default output profile: bypassed video, AAC (bypassed if the input is AAC) and OPUS."""
    spec = stream.spec
    if spec.audio_codec.upper() == "AAC":
        aac: dict[str, Any] = {"bypass": True}
    else:
        aac = audio_json(sim.version, "AAC", 48_000, 2, 128_000, 48_000)
    tracks = [
        {"id": 0, "name": "bypass_video", "type": "Video", "video": {"bypass": True}},
        {"id": 1, "name": "aac", "type": "Audio", "audio": aac},
        {
            "id": 2,
            "name": "opus",
            "type": "Audio",
            "audio": audio_json(sim.version, "OPUS", 48_000, 2, 128_000, 48_000),
        },
    ]
    body: dict[str, Any] = {"name": name, "tracks": tracks}
    if sim.version >= V_MEASURED_TRACKS:
        body["playlists"] = [
            {
                "name": "llhls",
                "fileName": "llhls",
                "options": {
                    "webrtcAutoAbr": True,
                    "hlsChunklistPathDepth": -1,
                    "enableTsPackaging": False,
                },
                "renditions": [
                    {
                        "name": "bypass",
                        "videoVariantName": "bypass_video",
                        "audioVariantName": "aac",
                    }
                ],
            }
        ]
    return body


def stream_json(sim: OmeSim, stream: Stream, now: float) -> dict[str, Any]:
    return {
        "name": stream.name,
        "input": input_json(sim, stream, now),
        "outputs": [output_json(sim, stream, name) for name in stream.outputs],
    }


def vhost_json(vhost: Vhost) -> dict[str, Any]:
    return {"name": vhost.name, "distribution": "ovenServer", "host": {"names": ["*"]}}


def app_json(app: App) -> dict[str, Any]:
    audio = {"bitrate": 128000, "bypassIfMatch": {"codec": "eq"}, "channel": 2, "samplerate": 48000}
    profile = {
        "name": "default",
        "outputStreamName": "${OriginStreamName}",
        "encodes": {
            "videos": [{"name": "bypass_video", "bypass": True}],
            "audios": [
                {"name": "opus", "codec": "opus", **audio},
                {"name": "aac", "codec": "aac", **audio},
            ],
        },
    }
    return {
        "dynamic": False,
        "name": app.name,
        "type": "live",
        "outputProfiles": {"outputProfile": [profile]},
        "providers": {name: {} for name in ("ovt", "rtmp", "rtspPull", "srt", "webrtc")},
        "publishers": {name: {} for name in sorted(app.publishers)},
    }


def push_state(push: Push, stream: Stream | None, now: float) -> str:
    if push.forced_state is not None:
        return push.forced_state
    if push.stopped_at is not None:
        return "stopping"
    if stream is None or stream is not push.session:
        return "ready"
    # OME's push control thread picks a new push up on its next pass, not at once
    return "pushing" if now > push.start_at else "ready"


def push_json(sim: OmeSim, app: App, push: Push, now: float) -> dict[str, Any]:
    stream = app.target(push.stream_name)
    push.follow(stream, now)
    state = push_state(push, stream, now)
    sent_bytes, sent_ms = int(push.session_bytes(now)), push.session_ms(now)
    finished = push.stopped_at if push.stopped_at is not None else push.forced_at
    return {
        "id": push.id,
        "vhost": push.vhost,
        "app": push.app,
        "stream": push.stream_json(),
        "state": state,
        "protocol": push.protocol,
        "url": push.url,
        "streamKey": push.stream_key,
        "sentBytes": sent_bytes,
        "sentTime": sent_ms,
        "totalsentBytes": int(push.done_bytes) + sent_bytes,
        "totalsentTime": push.done_ms + sent_ms,
        "sequence": max(0, push.sessions - 1),
        "createdTime": iso8601(push.created_at),
        "startTime": iso8601(push.start_at if push.session is not None else 0),
        "finishTime": iso8601(finished if state in ("stopped", "error") else 0),
        "isConfig": False,
    }


def record_json(
    sim: OmeSim, app: App, record: Record, now: float, state: str | None = None
) -> dict[str, Any]:
    stream = app.target(record.stream_name)
    record.follow(stream, now)
    if state is None:
        recording = stream is not None and stream is record.session
        state = record.forced_state or ("recording" if recording else "ready")
    body: dict[str, Any] = {
        "state": state,
        "isConfig": False,
        "id": record.id,
        "vhost": record.vhost,
        "app": record.app,
        "stream": record.stream_json(),
        "filePath": record.file_path,
        "outputFilePath": "",
        "infoPath": record.info_path,
        "outputInfoPath": record.info_path,
        "segmentationRule": record.segmentation_rule,
        "createdTime": iso8601(record.created_at),
    }
    if record.metadata:
        body["metadata"] = record.metadata
    if record.interval > 0:
        body["interval"] = record.interval
    if record.schedule:
        body["schedule"] = record.schedule
    if state in ("recording", "stopping", "stopped", "error"):
        body.update(record_counters(record, now))
    if state in ("stopped", "error"):
        finished = record.stopped_at if record.stopped_at is not None else record.forced_at
        body["finishTime"] = iso8601(finished)
    return body


def record_counters(record: Record, now: float) -> dict[str, Any]:
    total_bytes = record.done_bytes + record.session_bytes(now)
    total_ms = record.done_ms + record.session_ms(now)
    if record.interval > 0:
        sequence = total_ms // record.interval  # a new file every `interval` ms of recording
        file_ms = total_ms - sequence * record.interval
        file_bytes = total_bytes * file_ms / total_ms if total_ms else 0.0
    else:
        sequence = max(0, record.sessions - 1)
        file_ms, file_bytes = record.session_ms(now), record.session_bytes(now)
    record_path = record.file_path.replace("${Sequence}", str(sequence))
    counters: dict[str, Any] = {"outputFilePath": record_path}
    # OME omits counters that are still zero
    for key, value in (
        ("recordBytes", int(file_bytes)),
        ("recordTime", int(file_ms)),
        ("totalRecordBytes", int(total_bytes)),
        ("totalRecordTime", int(total_ms)),
        ("sequence", int(sequence)),
    ):
        if value > 0:
            counters[key] = value
    if record.session is not None:
        counters["startTime"] = iso8601(record.start_at)
    return counters
