"""The HTTP listener, bounded against slow and numerous clients.

- **Idle timeout.** A connection that has not sent a whole request within `idle_timeout` (a
  slowloris trickling header bytes, or an idle keep-alive) is closed: aiohttp's keep-alive
  timer starts when the connection opens and only a complete request stops it.
- **Connection cap.** At `max_connections`, a new connection evicts the oldest one that is not
  in the middle of a request; only when every connection is busy is the new one refused. So a
  flood of slow connections cannot keep `/healthz` and Prometheus out.
- **File descriptors.** When accept() runs out of descriptors, asyncio logs an ERROR on every
  retry (one a second per socket); that is said once a minute instead.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import Counter

log = logging.getLogger(__name__)

FD_LOG_INTERVAL = 60.0


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class BoundedSite(web.TCPSite):
    """A TCPSite whose connections are capped (see the module docstring)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        dropped: Counter,
    ):
        super().__init__(runner, host, port)
        self._max_connections = max_connections
        self._dropped = dropped

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            connections = server.connections
            if len(connections) >= self._max_connections:
                idle = next((c for c in connections if c._current_request is None), None)
                if idle is None:
                    self._dropped.labels("refused").inc()
                    return _Refused()
                self._dropped.labels("evicted").inc()
                idle.force_close()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


def dropped_counter(registry: Any) -> Counter:
    return Counter(
        "streamwatch_http_connections_dropped_total",
        "HTTP connections closed because max_connections was reached: the oldest idle one "
        "evicted, or the new one refused when all were busy.",
        ["reason"],
        registry=registry,
    )


class FdExhaustionFilter:
    """A loop exception handler that says "out of file descriptors" once a minute and hands
    everything else to the default handler."""

    def __init__(self, clock: Any = time.monotonic):
        self._clock = clock
        self._last = -FD_LOG_INTERVAL

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            now = self._clock()
            if now - self._last >= FD_LOG_INTERVAL:
                self._last = now
                log.error(
                    "out of file descriptors: new connections wait",
                    extra={
                        "error": exc.strerror,
                        "hint": "raise LimitNOFILE or lower max_connections",
                    },
                )
            return
        loop.default_exception_handler(context)
