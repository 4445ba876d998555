"""NAVER Live Station's verbs, by entity kind (see `monitor.sources.verbs` for the protocol).

`naver.channel`: `restart` (stop the channel, then remove the suspension: it ends READY,
waiting for the encoder). Events have no verb.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.sources.base import Source
from monitor.sources.naver.source import KIND_CHANNEL, NaverSource
from monitor.sources.verbs import Verb, VerbResult, require, source_of


async def restart_channel(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """The source's `restart_channel` (PUT .../off, then .../on). `ok` says both calls were
    accepted; the channel as Live Station returned it after `on` is the result's entity."""
    naver = source_of(source, NaverSource)
    (channel,) = require(labels, "channel")
    entity = await naver.restart_channel(channel)
    status = entity.fields.get("status") if entity is not None else "unknown"
    return VerbResult(True, f"channel {channel} stopped and resumed: status {status}", entity)


VERBS: Mapping[str, Mapping[str, Verb]] = {
    KIND_CHANNEL: {"restart": restart_channel},
}
