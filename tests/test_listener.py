"""The HTTP listener against slow and numerous clients: a slowloris flood cannot keep
/healthz out, and a connection that never finishes its request is closed."""

from __future__ import annotations

import asyncio
import errno
import logging

import aiohttp
import pytest

from monitor.daemon import Daemon
from monitor.listener import FdExhaustionFilter


@pytest.fixture
async def daemon(tmp_path):
    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        f"listen: 127.0.0.1:0\nstate_dir: {tmp_path / 'state'}\nrule_files: []\n"
        "http: {max_connections: 16, idle_timeout: 1s}\n"
    )
    daemon = Daemon(path)
    await daemon.start(schedule=False)
    yield daemon
    await daemon.stop()


async def _slow_client(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and the rest never comes
    await writer.drain()
    return reader, writer


async def test_a_slowloris_flood_does_not_keep_healthz_out(daemon):
    clients = [await _slow_client(daemon.url) for _ in range(40)]
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{daemon.url}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            assert resp.status == 200
        evicted = daemon.registry.get_sample_value(
            "streamwatch_http_connections_dropped_total", {"reason": "evicted"}
        )
        assert evicted is not None and evicted >= 40 + 1 - 16
    finally:
        for _, writer in clients:
            writer.close()


async def test_a_request_that_never_finishes_is_closed_after_idle_timeout(daemon):
    reader, writer = await _slow_client(daemon.url)
    try:
        # The server closes it: the read ends (b"") well within the bound, not at our timeout.
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


def test_out_of_file_descriptors_is_said_once_a_minute(caplog):
    now = [1000.0]
    handler = FdExhaustionFilter(clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        context = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files"),
        }
        with caplog.at_level(logging.ERROR):
            for _ in range(100):
                handler(loop, context)
            now[0] += 60
            handler(loop, context)
    finally:
        loop.close()
    said = [r for r in caplog.records if r.getMessage().startswith("out of file descriptors")]
    assert len(said) == 2
