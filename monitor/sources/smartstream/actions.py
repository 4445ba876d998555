"""SmartSTREAM's verbs, by entity kind (see `monitor.sources.verbs` for the protocol).

`smartstream.live_event`: `restart` (stop → reset → start, then wait for encode_status to be
running). Ingest jobs have no verb.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.sources.base import Source
from monitor.sources.smartstream.source import (
    ENCODE_STATUS_RUNNING,
    LIVE_EVENT_KIND,
    SmartstreamSource,
)
from monitor.sources.verbs import Verb, VerbResult, require, source_of


async def restart_live_event(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """The source's `restart_live_event`, which already verifies: it waits (at most
    `verify_timeout` seconds, default 120) until encode_status is running, and raises
    RestartError (a SourceError naming the failed step) otherwise."""
    smartstream = source_of(source, SmartstreamSource)
    merchant = labels.get("merchant")
    if merchant and merchant != smartstream.config.merchant_id:
        raise ValueError(f"entity of merchant {merchant!r} handed to source {smartstream.ref}")
    (live_event,) = require(labels, "live_event")
    deadline = params.get("verify_timeout", 120.0)
    if not isinstance(deadline, int | float) or isinstance(deadline, bool) or deadline <= 0:
        raise ValueError("parameter 'verify_timeout' must be a positive number of seconds")
    result = await smartstream.restart_live_event(live_event, deadline=float(deadline))
    steps = " → ".join(step.step for step in result.steps if step.ok)
    return VerbResult(
        result.ok, f"live event {live_event} restarted ({steps}): {result.encode_status}"
    )


async def verify_restart(
    source: Source, labels: Mapping[str, str], params: Mapping[str, Any]
) -> VerbResult:
    """One read of the live event: `ok` when its encode_status is running (for an attempt a
    stopped daemon left unfinished; the restart itself already waits)."""
    smartstream = source_of(source, SmartstreamSource)
    (live_event,) = require(labels, "live_event")
    body = await smartstream.client.live_event("GET", live_event, max_wait=30.0)
    entity = smartstream._event_or_none(body)
    status = entity.fields.get("encode_status") if entity is not None else None
    return VerbResult(status == ENCODE_STATUS_RUNNING, f"live event {live_event}: {status}", entity)


VERBS: Mapping[str, Mapping[str, Verb]] = {
    LIVE_EVENT_KIND: {"restart": restart_live_event, "restart.verify": verify_restart},
}
