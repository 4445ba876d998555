"""What the demo's simulated servers hold before anything goes wrong: OME streams, a push and a
record; SmartSTREAM live events and ingest jobs; NAVER channels with their history. The faults
come later, from `monitor.demo.faults`.
"""

from __future__ import annotations

from monitor.sim.naver import NaverSim
from monitor.sim.ome import OmeSim
from monitor.sim.smartstream import (
    ENCODE_STATUS_RUNNING,
    JOB_COMPLETE,
    JOB_ENCODING,
    SmartstreamSim,
)
from monitor.sim.smartstream.model import hex_id

NEWS_CHANNEL = "ls-20260101090000-news1"
SPORTS_CHANNEL = "ls-20260101090000-sprt2"
ARCHIVE_CHANNEL = "ls-20260101090000-arch3"
LEGACY_CHANNEL = "ls-20260101090000-lgcy4"


def fill_ome(sim: OmeSim) -> None:
    """Two apps: `default/live` (main, second, sports, news; push `youtube`, record `archive`)
    and `default/backup` (no push or file publisher, so its :pushes and :records are 404)."""
    sim.add_app("default/live")
    sim.add_app("default/backup", publishers=("webrtc", "llhls", "ovt"))
    sim.add_stream(
        "default/live/main",
        bitrate=4_000_000,
        width=1920,
        height=1080,
        connections={"llhls": 12, "webrtc": 3},
        reconnect_after=5,
    )
    sim.add_stream("default/live/second", connections={"llhls": 4}, reconnect_after=5)
    sim.add_stream(
        "default/live/sports",
        bitrate=6_000_000,
        width=1920,
        height=1080,
        framerate=60,
        keyframe_interval=120,
        connections={"llhls": 25, "webrtc": 8},
        reconnect_after=5,
    )
    sim.add_stream("default/live/news", bitrate=2_000_000, connections={"llhls": 2})
    sim.add_stream("default/backup/main", source_type="SRT", source_url="SRT://127.0.0.1:9999")
    sim.add_stream("default/backup/second", bitrate=1_500_000, width=854, height=480)
    sim.add_push(
        "default/live",
        id="youtube",
        stream="main",
        url="rtmp://a.rtmp.youtube.com/live2",
        stream_key="demo-key",
    )
    sim.add_record("default/live", id="archive", stream="sports", interval=60_000)


def fill_smartstream(sim: SmartstreamSim) -> None:
    """Three running live events (news, sports, music) and three ingest jobs (upload-1 complete,
    upload-2 and upload-3 encoding)."""
    t0 = sim.started_at
    events = [("news", "News 24/7"), ("sports", "Sports Live"), ("music", "Music Stage")]
    for n, (ref, name) in enumerate(events):
        sim.add_live_event(
            id=hex_id(f"demo-live-{ref}"),
            ref_id=ref,
            name=name,
            encode_status=ENCODE_STATUS_RUNNING,
            created_at=t0 - 86400 + n,
            live_encode_start_at=t0 - 3600,
        )
    for n, status in enumerate([JOB_COMPLETE, JOB_ENCODING, JOB_ENCODING], start=1):
        sim.add_job(
            id=hex_id(f"demo-job-{n}"),
            ref_id=f"upload-{n}",
            name=f"upload {n}",
            encode_status=status,
            created_at=t0 - 600 + n,
            source_url=f"https://media.example.com/upload-{n}.mp4",
        )


def fill_naver(sim: NaverSim) -> None:
    """Four channels created a day ago: news, sports (recording) and legacy publishing since
    half an hour (legacy reports the older spelling PUBLISH), archive ready."""
    start = sim.started_at
    news = sim.add_channel(NEWS_CHANNEL, "news", "PUBLISHING")
    sports = sim.add_channel(SPORTS_CHANNEL, "sports", "PUBLISHING")
    sports["isRecording"] = True
    archive = sim.add_channel(ARCHIVE_CHANNEL, "archive", "READY")
    legacy = sim.add_channel(LEGACY_CHANNEL, "legacy", "PUBLISH")
    for channel in (news, sports, archive, legacy):
        channel["createdTime"] = int((start - 86400) * 1000)
        sim.add_event(
            channel["channelId"], "STREAM_RESERVE", timestamp=start - 86400, callback=False
        )
    for channel in (news, sports, legacy):
        channel["recentPublishStartTime"] = int((start - 1800) * 1000)
        sim.add_event(channel["channelId"], "PUBLISH_START", timestamp=start - 1800, callback=False)
