"""The action runner and its guard: restart, hls_dump, id3_event (the actions issue)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from monitor.component import Deps, Parts


@contextlib.asynccontextmanager
async def component(deps: Deps) -> AsyncIterator[Parts]:
    """Nothing yet: no consumers, no routes."""
    yield Parts()
