"""Outbox consumers that tell people: webhooks, MQTT, Alertmanager (the notification issue)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from monitor.component import Deps, Parts


@contextlib.asynccontextmanager
async def component(deps: Deps) -> AsyncIterator[Parts]:
    """Nothing yet: no consumers, no routes."""
    yield Parts()
