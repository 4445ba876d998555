"""Serve a simulator app on loopback, on a port the OS picks unless one is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run `app` until the block exits; yields its base URL (`http://127.0.0.1:PORT`)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        await runner.cleanup()
