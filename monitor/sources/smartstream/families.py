"""SmartSTREAM's metric families: live event info and encode status, ingest job status."""

from __future__ import annotations

from monitor.sources.families import Family, info, state_set
from monitor.sources.smartstream.source import (
    JOB_ENCODE_STATUSES,
    JOB_KIND,
    LIVE_EVENT_ENCODE_STATUSES,
    LIVE_EVENT_KIND,
)

LIVE_EVENT = ("merchant", "live_event")

# fmt: off
FAMILIES: tuple[Family, ...] = (
    Family("smartstream_live_event_info", "gauge", "A SmartSTREAM live event; the value is always 1.", LIVE_EVENT_KIND, LIVE_EVENT, info("ref_id", "name"), ("ref_id", "name")),
    Family("smartstream_live_event_encode_status", "gauge", "encode_status of a live event (state set).", LIVE_EVENT_KIND, LIVE_EVENT, state_set("encode_status", LIVE_EVENT_ENCODE_STATUSES), ("status",)),
    Family("smartstream_job_encode_status", "gauge", "encode_status of an ingest job (state set; integer codes as the API sends them).", JOB_KIND, ("merchant", "job"), state_set("encode_status", tuple(str(s) for s in JOB_ENCODE_STATUSES)), ("status",)),
)
# fmt: on
