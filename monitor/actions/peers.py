"""One action per incident in a high-availability group of daemons with one config.

Two daemons watching the same streams raise the same alerts (same labels, same fingerprint),
and each has its own guard. Without a word between them both would restart the stream. They
settle it as Alertmanager's cluster settles notifications: by position. The daemon at
position 0 acts at once; the one at position p first waits p x `peer_timeout`, then asks its
peers (`GET /api/v1/actions?action=...&fingerprint=...`) whether one of them has acted on this
alert within the cooldown, and acts only if none has. A peer that does not answer counts as
not having acted, so the group still acts when a member is down (at worst twice, if the
network splits the group: the same trade Alertmanager makes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import aiohttp
from pydantic import Field

from monitor.schema import Strict, Url, duration_between

log = logging.getLogger(__name__)

PEER_REQUEST_TIMEOUT = 3.0


class HaConfig(Strict):
    # This daemon's place in the group: 0 acts at once, p waits p x peer_timeout first.
    position: Annotated[int, Field(ge=0, le=16)] = 0
    # The other daemons of the group (their base URLs; the read API needs no token).
    peers: list[Url] = Field(default_factory=list)
    peer_timeout: duration_between(1.0, 300.0) = 15.0  # type: ignore[valid-type]


class Peers:
    def __init__(
        self,
        config: HaConfig,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ):
        self.config = config
        self._sleep = sleep

    @property
    def enabled(self) -> bool:
        return bool(self.config.peers)

    async def wait_turn(self) -> None:
        """Wait out this daemon's position, so that the peers before it act first."""
        if self.config.position:
            await self._sleep(self.config.position * self.config.peer_timeout)

    async def acted(self, action: str, fingerprint: str, since: float) -> str | None:
        """The first peer that has an attempt at `action` on this alert started at `since` or
        later (dry runs and skips do not count), or None."""
        timeout = aiohttp.ClientTimeout(total=PEER_REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for peer in self.config.peers:
                if await _peer_acted(http, peer, action, fingerprint, since):
                    return peer
        return None


async def _peer_acted(
    http: aiohttp.ClientSession, peer: str, action: str, fingerprint: str, since: float
) -> bool:
    query = {"action": action, "fingerprint": fingerprint, "limit": "20"}
    try:
        async with http.get(f"{peer}/api/v1/actions", params=query, allow_redirects=False) as resp:
            if resp.status != 200:
                return False
            rows: Sequence[dict[str, Any]] = (await resp.json()).get("data", [])
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("peer not reachable", extra={"peer": peer, "error": type(exc).__name__})
        return False
    return any(row.get("executed") and float(row.get("startedAt") or 0) >= since for row in rows)
