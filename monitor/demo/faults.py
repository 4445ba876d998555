"""The demo's fault script: what goes wrong, on which simulator, and when (seconds after the
simulators started, the kit's schedule time base). The shipped rules fire on these within a
minute; `streamwatch simulate --no-faults` runs without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.demo.layout import NEWS_CHANNEL, SPORTS_CHANNEL
from monitor.sim.control import Simulator
from monitor.sim.smartstream import ENCODE_STATUS_ERROR, JOB_FAILED


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the simulators started
    target: str  # "ome", "smartstream" or "naver"
    action: str  # a fault verb or one of the simulator's ACTIONS
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    what: str = ""


FAULT_SCRIPT: tuple[Step, ...] = (
    Step(20, "ome", "stall", {"stream": "default/live/second"}, "OME stream stalls"),
    Step(
        20,
        "smartstream",
        "set_encode_status",
        {"live_event": "ref:sports", "encode_status": ENCODE_STATUS_ERROR},
        "SmartSTREAM live event in error",
    ),
    Step(
        20,
        "naver",
        "set_status",
        {"channel_id": NEWS_CHANNEL, "status": "READY"},
        "NAVER encoder disconnects (PUBLISH_END)",
    ),
    Step(
        25,
        "ome",
        "set_push_state",
        {"app": "default/live", "id": "youtube", "state": "error"},
        "OME push in error",
    ),
    Step(
        30,
        "ome",
        "remove_stream",
        {"stream": "default/live/news", "reconnect_after": 60},
        "OME stream vanishes (back at +90 s)",
    ),
    Step(
        30,
        "smartstream",
        "set_job_status",
        {"job": "ref:upload-2", "encode_status": JOB_FAILED},
        "SmartSTREAM ingest job fails",
    ),
    Step(
        35,
        "naver",
        "set_status",
        {"channel_id": SPORTS_CHANNEL, "status": "FORCE_BLOCK", "event": None},
        "NAVER channel force-blocked (no event)",
    ),
    Step(40, "ome", "fail", {"status": 500, "count": 5}, "OME answers five requests with 500"),
    Step(90, "ome", "resume", {"stream": "default/live/second"}, "OME stream resumes"),
    Step(
        100,
        "ome",
        "set_push_state",
        {"app": "default/live", "id": "youtube", "state": None},
        "OME push recovers",
    ),
)


def schedule_faults(
    *,
    ome: Simulator | None = None,
    smartstream: Simulator | None = None,
    naver: Simulator | None = None,
    script: tuple[Step, ...] = FAULT_SCRIPT,
) -> int:
    """Put the script's steps on the schedules of the simulators given; returns how many."""
    targets = {"ome": ome, "smartstream": smartstream, "naver": naver}
    scheduled = 0
    for step in script:
        sim = targets[step.target]
        if sim is not None:
            sim.schedule(step.at, step.action, **step.kwargs)
            scheduled += 1
    return scheduled
