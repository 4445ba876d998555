"""`streamwatch demo` and `streamwatch simulate`: the simulators on loopback, with the daemon.

The simulators inject faults on a schedule (a stalled stream, a failed push, a live event in
error, a channel disconnect) so that the shipped rules fire within a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from monitor.sim.naver import NaverSim
from monitor.sim.ome import OmeSim, build_ome_app
from monitor.sim.serve import serve
from monitor.sim.smartstream import DEMO_API_KEY, DEMO_PASSWORD, SmartstreamSim

DEMO_CONFIG = Path(__file__).with_name("streamwatch.yaml")


@dataclass(frozen=True)
class Simulators:
    ome_url: str
    smartstream_url: str
    naver_url: str
    ome_token: str
    naver_access_key: str
    naver_secret_key: str
    ome: OmeSim
    smartstream: SmartstreamSim
    naver: NaverSim

    def environment(self) -> dict[str, str]:
        """What the demo config reads from the environment."""
        return {
            "DEMO_OME_URL": self.ome_url,
            "DEMO_OME_TOKEN": self.ome_token,
            "DEMO_SMARTSTREAM_URL": self.smartstream_url,
            "DEMO_SMARTSTREAM_API_KEY": DEMO_API_KEY,
            "DEMO_SMARTSTREAM_PASSWORD": DEMO_PASSWORD,
            "DEMO_NAVER_URL": self.naver_url,
            "DEMO_NAVER_ACCESS_KEY": self.naver_access_key,
            "DEMO_NAVER_SECRET_KEY": self.naver_secret_key,
        }


@contextlib.asynccontextmanager
async def simulators(
    host: str = "127.0.0.1",
    ome_port: int = 0,
    smartstream_port: int = 0,
    naver_port: int = 0,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Simulators]:
    """All three simulators with their demo layouts and fault schedules, on loopback. Tests
    pass a clock they move by hand, so the schedule runs without waiting."""
    ome_token = "demo-ome-" + secrets.token_hex(8)
    access_key, secret_key = "DEMOACCESSKEY", "demo-secret-" + secrets.token_hex(8)
    ome = OmeSim.demo(ome_token, clock=clock)
    smartstream = SmartstreamSim.demo(clock=clock)
    naver = NaverSim.demo(access_key, secret_key, clock=clock)
    async with (
        serve(build_ome_app(ome), host, ome_port) as ome_url,
        serve(smartstream.app(), host, smartstream_port) as smartstream_url,
        serve(naver.make_app(), host, naver_port) as naver_url,
    ):
        yield Simulators(
            ome_url,
            smartstream_url,
            naver_url,
            ome_token,
            access_key,
            secret_key,
            ome,
            smartstream,
            naver,
        )


async def _until_signal(duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration)


async def run_simulators(host: str, ome_port: int, smartstream_port: int, naver_port: int) -> int:
    async with simulators(host, ome_port, smartstream_port, naver_port) as sims:
        print("Simulators running (Ctrl-C to stop):")
        print(f"  OME          {sims.ome_url}   access token {sims.ome_token}")
        print(
            f"  SmartSTREAM  {sims.smartstream_url}   merchant demo, api key {DEMO_API_KEY}, password {DEMO_PASSWORD}"
        )
        print(
            f"  NAVER        {sims.naver_url}   access key {sims.naver_access_key}, secret {sims.naver_secret_key}"
        )
        print("  Fault controls: POST <url>/_sim/<action>; state: GET <url>/_sim/state")
        await _until_signal(None)
    return 0


async def run_demo(listen: str, state_dir: Path | None, duration: float | None) -> int:
    from monitor.config import load_config
    from monitor.daemon import Daemon

    with tempfile.TemporaryDirectory(prefix="streamwatch-demo-") as tmp:
        async with simulators() as sims:
            callback_token = secrets.token_urlsafe(16)
            api_token = secrets.token_urlsafe(16)
            env = {
                **os.environ,
                **sims.environment(),
                "DEMO_LISTEN": listen,
                "DEMO_STATE_DIR": str(state_dir or tmp),
                "DEMO_NAVER_CALLBACK_TOKEN": callback_token,
                "DEMO_API_TOKEN": api_token,
            }
            config = load_config(DEMO_CONFIG, env=env)
            daemon = Daemon(DEMO_CONFIG, config=config)
            await daemon.start()
            sims.naver.set_callback_url(f"{daemon.url}/callbacks/naver/{callback_token}")
            print(
                f"\nstreamwatch demo is running against simulated OME, SmartSTREAM and NAVER.\n"
                f"  metrics      {daemon.url}/metrics\n"
                f"  alerts       {daemon.url}/api/v1/alerts   (faults start at +20 s; alerts fire within a minute)\n"
                f"  rules        {daemon.url}/api/v1/rules\n"
                f"  sources      {daemon.url}/api/v1/sources\n"
                f"  API token    {api_token}   (for POST /api/v1/silences)\n"
                f"  simulators   OME {sims.ome_url}  SmartSTREAM {sims.smartstream_url}  NAVER {sims.naver_url}\n"
                f"Ctrl-C stops everything.\n",
                flush=True,
            )
            try:
                await _until_signal(duration)
            finally:
                await daemon.stop()
    return 0
