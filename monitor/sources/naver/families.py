"""NAVER Live Station's metric families: channel status and channel event counts."""

from __future__ import annotations

from collections.abc import Iterator

from monitor.model import Entity
from monitor.sources.families import Family, Sample, per_key, state_set
from monitor.sources.naver.source import CHANNEL_STATUSES, KIND_CHANNEL

_status = state_set("status", CHANNEL_STATUSES)


def channel_status(entity: Entity) -> Iterator[Sample]:
    """The status state set, with the channel's name as a label beside the status."""
    name = str(entity.fields.get("channel_name") or "")
    for (status,), value in _status(entity):
        yield (name, status), value


# fmt: off
FAMILIES: tuple[Family, ...] = (
    Family("naver_channel_status", "gauge", "channelStatus of a Live Station channel (state set; PUBLISH is reported as PUBLISHING).", KIND_CHANNEL, ("channel",), channel_status, ("channel_name", "status")),
    Family("naver_channel_events_total", "counter", "Live Station channel events seen by this daemon (poll and callback, each counted once); undocumented codes count as event=\"other\".", KIND_CHANNEL, ("channel",), per_key("events"), ("event",)),
)
# fmt: on
