"""OME's metric families: statistics at stream, app and vhost scope, input tracks, and push and
record task states (DESIGN.md's metrics contract)."""

from __future__ import annotations

from monitor.sources.families import (
    Family,
    info,
    only_present,
    per_key,
    scalar,
    state_set,
    track_detail,
)
from monitor.sources.ome.source import (
    KIND_APP,
    KIND_PUSH,
    KIND_RECORD,
    KIND_STREAM,
    KIND_VHOST,
    TASK_STATES,
)

VHOST = ("server", "vhost")
APP = ("server", "vhost", "app")
STREAM = ("server", "vhost", "app", "stream")
TASK = ("server", "vhost", "app", "id")
TRACK = ("track", "type", "codec")


# fmt: off
def _stats_families(scope: str, kind: str, labels: tuple[str, ...]) -> list[Family]:
    """The statistics object is the same at vhost, app and stream scope (DESIGN: ome_app_*,
    ome_vhost_* mirror the stream families)."""
    p = f"ome_{scope}"
    return [
        Family(f"{p}_connections", "gauge", f"Current playback sessions of the {scope} by publisher protocol (OME's connections keys).", kind, labels, only_present(per_key("connections")), ("protocol",)),
        Family(f"{p}_bytes_in", "counter", f"Bytes received by the {scope} since it was created (totalBytesIn).", kind, labels, scalar("bytes_in")),
        Family(f"{p}_bytes_out", "counter", f"Bytes sent by the {scope} since it was created (totalBytesOut).", kind, labels, scalar("bytes_out")),
        Family(f"{p}_throughput_in_bits_per_second", "gauge", f"Ingest rate of the {scope} over OME's last ~1 s window (avgThroughputIn); frozen when ingest stops.", kind, labels, scalar("throughput_in")),
        Family(f"{p}_throughput_out_bits_per_second", "gauge", f"Egress rate of the {scope} over OME's last ~1 s window (avgThroughputOut).", kind, labels, scalar("throughput_out")),
        Family(f"{p}_last_recv_timestamp_seconds", "gauge", f"When the {scope} last received data (lastRecvTime), Unix time.", kind, labels, scalar("last_recv")),
        Family(f"{p}_last_sent_timestamp_seconds", "gauge", f"When the {scope} last sent data (lastSentTime), Unix time.", kind, labels, scalar("last_sent")),
        Family(f"{p}_created_timestamp_seconds", "gauge", f"When the {scope} was created (createdTime), Unix time; moves on a republish.", kind, labels, scalar("created_at")),
    ]


FAMILIES: tuple[Family, ...] = (
    *_stats_families("stream", KIND_STREAM, STREAM),
    Family("ome_stream_present", "gauge", "1 when OME lists the stream, 0 when it is expected (expected_streams) but absent.", KIND_STREAM, STREAM, lambda e: [((), 1.0 if e.present else 0.0)]),
    Family("ome_stream_info", "gauge", "Input attributes of a stream; the value is always 1.", KIND_STREAM, STREAM, only_present(info("source_type")), ("source_type",)),
    Family("ome_stream_track_bitrate_bits_per_second", "gauge", "Measured input track bitrate (bitrateLatest, else bitrateAvg, else bitrate).", KIND_STREAM, STREAM, track_detail("bitrate"), TRACK),
    Family("ome_stream_track_framerate", "gauge", "Measured input video framerate in frames per second.", KIND_STREAM, STREAM, track_detail("framerate"), TRACK),
    Family("ome_stream_track_keyframe_interval", "gauge", "Input video GOP size in frames (keyFrameInterval).", KIND_STREAM, STREAM, track_detail("keyframe_interval"), TRACK),
    Family("ome_stream_track_width", "gauge", "Input video width in pixels.", KIND_STREAM, STREAM, track_detail("width"), TRACK),
    Family("ome_stream_track_height", "gauge", "Input video height in pixels.", KIND_STREAM, STREAM, track_detail("height"), TRACK),
    *_stats_families("app", KIND_APP, APP),
    *_stats_families("vhost", KIND_VHOST, VHOST),
    Family("ome_push_state", "gauge", "State of a push publishing task (state set).", KIND_PUSH, TASK, state_set("state", TASK_STATES), ("state",)),
    Family("ome_push_sent_bytes", "counter", "Bytes a push task has sent (totalsentBytes).", KIND_PUSH, TASK, scalar("total_sent_bytes")),
    Family("ome_record_state", "gauge", "State of a recording task (state set).", KIND_RECORD, TASK, state_set("state", TASK_STATES), ("state",)),
)
# fmt: on
