"""NAVER Live Station's verbs, by entity kind (see `monitor.sources.verbs` for the protocol).

`naver.channel`: `restart` (stop the channel, then remove the suspension: it ends READY,
waiting for the encoder), only from READY or PUBLISHING: a FORCE_* status is Live Station's
operators' decision and is refused with that reason; `restart.verify` reads the status back.
Events have no verb.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.sources.base import Source
from monitor.sources.naver.source import KIND_CHANNEL, NaverSource, normalise_status
from monitor.sources.verbs import Verb, VerbResult, require, source_of

RESTARTABLE = ("READY", "PUBLISHING")


async def restart_channel(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """The source's `restart_channel` (PUT .../off, then .../on). `ok` says both calls were
    accepted; the channel as Live Station returned it after `on` is the result's entity."""
    naver = source_of(source, NaverSource)
    (channel,) = require(labels, "channel")
    current = await naver.client.channel(channel)
    if current is None:
        raise ValueError(f"channel {channel} not found")
    status = _status(current)
    if status not in RESTARTABLE:
        why = "Live Station forced it" if status.startswith("FORCE_") else "it is not running"
        return VerbResult(False, f"refused: channel {channel} is {status} ({why}); not restarted")
    entity = await naver.restart_channel(channel)
    status = entity.fields.get("status") if entity is not None else "unknown"
    return VerbResult(True, f"channel {channel} stopped and resumed: status {status}", entity)


async def verify_restart(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """After `off` and `on` the channel is READY (waiting for the encoder) or PUBLISHING."""
    naver = source_of(source, NaverSource)
    (channel,) = require(labels, "channel")
    current = await naver.client.channel(channel)
    status = _status(current) if current is not None else "gone"
    return VerbResult(status in RESTARTABLE, f"channel {channel} is {status}")


def _status(channel: Mapping[str, Any]) -> str:
    return str(normalise_status(channel.get("channelStatus")) or "UNKNOWN")


VERBS: Mapping[str, Mapping[str, Verb]] = {
    KIND_CHANNEL: {"restart": restart_channel, "restart.verify": verify_restart},
}
