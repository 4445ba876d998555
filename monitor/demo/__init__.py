"""`streamwatch demo` and `streamwatch simulate`: the three simulators on loopback, filled with
the demo's layout (`layout.py`) and, unless told otherwise, its fault script (`faults.py`); the
demo also runs the daemon against them with `streamwatch.yaml`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from monitor.demo.faults import schedule_faults
from monitor.demo.layout import fill_naver, fill_ome, fill_smartstream
from monitor.sim.naver import NaverSim
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve
from monitor.sim.smartstream import SmartstreamSim

DEMO_CONFIG = Path(__file__).with_name("streamwatch.yaml")
Clock = Callable[[], float]


@dataclass(frozen=True)
class Credentials:
    """Everything a config needs to reach the simulators. `generate` fills what is not given:
    random OME token and NAVER secret, fixed demo values for the rest."""

    ome_token: str
    naver_secret_key: str
    smartstream_merchant: str = "demo"
    smartstream_api_key: str = "demo-api-key"
    smartstream_token: str = "demo-token"
    smartstream_mail: str = "ops@example.com"
    smartstream_password: str = "demo-password"
    naver_access_key: str = "DEMOACCESSKEY"
    naver_region: str = "KR"

    @classmethod
    def generate(cls, **given: str | None) -> Credentials:
        values = {key: value for key, value in given.items() if value is not None}
        values.setdefault("ome_token", "demo-ome-" + secrets.token_hex(8))
        values.setdefault("naver_secret_key", "demo-secret-" + secrets.token_hex(8))
        return cls(**values)


def demo_ome(token: str, clock: Clock = time.time, *, faults: bool = True) -> OmeSim:
    sim = OmeSim(token, clock=clock)
    fill_ome(sim)
    if faults:
        schedule_faults(ome=sim)
    return sim


def demo_smartstream(
    credentials: Credentials, clock: Clock = time.time, *, faults: bool = True
) -> SmartstreamSim:
    sim = SmartstreamSim(
        merchant_id=credentials.smartstream_merchant,
        api_key=credentials.smartstream_api_key,
        mail_address=credentials.smartstream_mail,
        password=credentials.smartstream_password,
        static_tokens=(credentials.smartstream_token,),
        clock=clock,
        rate_limit=50,
    )
    fill_smartstream(sim)
    if faults:
        schedule_faults(smartstream=sim)
    return sim


def demo_naver(
    access_key: str,
    secret_key: str,
    clock: Clock = time.time,
    *,
    faults: bool = True,
    region: str = "KR",
) -> NaverSim:
    # Callbacks go out every second once a callback URL is set (the demo sets the daemon's).
    sim = NaverSim(access_key, secret_key, clock, callback_interval=1.0, region=region)
    fill_naver(sim)
    if faults:
        schedule_faults(naver=sim)
    return sim


@dataclass(frozen=True)
class Simulators:
    ome_url: str
    smartstream_url: str
    naver_url: str
    credentials: Credentials
    ome: OmeSim
    smartstream: SmartstreamSim
    naver: NaverSim

    @property
    def ome_token(self) -> str:
        return self.credentials.ome_token

    @property
    def naver_access_key(self) -> str:
        return self.credentials.naver_access_key

    @property
    def naver_secret_key(self) -> str:
        return self.credentials.naver_secret_key

    def environment(self) -> dict[str, str]:
        """What the demo config reads from the environment."""
        c = self.credentials
        return {
            "DEMO_OME_URL": self.ome_url,
            "DEMO_OME_TOKEN": c.ome_token,
            "DEMO_SMARTSTREAM_URL": self.smartstream_url,
            "DEMO_SMARTSTREAM_MERCHANT": c.smartstream_merchant,
            "DEMO_SMARTSTREAM_API_KEY": c.smartstream_api_key,
            "DEMO_SMARTSTREAM_MAIL": c.smartstream_mail,
            "DEMO_SMARTSTREAM_PASSWORD": c.smartstream_password,
            "DEMO_NAVER_URL": self.naver_url,
            "DEMO_NAVER_ACCESS_KEY": c.naver_access_key,
            "DEMO_NAVER_SECRET_KEY": c.naver_secret_key,
            "DEMO_NAVER_REGION": c.naver_region,
        }

    def sources_yaml(self) -> str:
        """A `sources:` block for streamwatch.yaml that reaches these simulators."""
        c = self.credentials

        def q(value: str) -> str:  # a YAML string; `$` doubled for the config's ${VAR}
            return json.dumps(value.replace("$", "$$"))

        return "\n".join(
            [
                "sources:",
                "  ome:",
                "    - name: sim-ome",
                f"      url: {q(self.ome_url)}",
                f"      access_token: {q(c.ome_token)}",
                "  smartstream:",
                "    - name: sim-smartstream",
                f"      url: {q(self.smartstream_url)}",
                f"      merchant_id: {q(c.smartstream_merchant)}",
                f"      api_key: {q(c.smartstream_api_key)}",
                f"      mail_address: {q(c.smartstream_mail)}",
                f"      password: {q(c.smartstream_password)}",
                f"      # token: {q(c.smartstream_token)}   # a fixed token instead of the two above",
                "  naver:",
                "    - name: sim-naver",
                f"      url: {q(self.naver_url)}",
                f"      access_key: {q(c.naver_access_key)}",
                f"      secret_key: {q(c.naver_secret_key)}",
                f"      region: {q(c.naver_region)}",
            ]
        )


def check_loopback(host: str) -> None:
    """The simulators take any credentials they are given: they listen on loopback only."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--host must be a loopback address (127.0.0.1, ::1), not {host!r}")


@contextlib.asynccontextmanager
async def simulators(
    host: str = "127.0.0.1",
    ome_port: int = 0,
    smartstream_port: int = 0,
    naver_port: int = 0,
    clock: Clock = time.time,
    *,
    credentials: Credentials | None = None,
    faults: bool = True,
) -> AsyncIterator[Simulators]:
    """All three simulators with the demo's layout and (unless `faults=False`) its fault
    script, on loopback. Tests pass a clock they move by hand, so the script runs without
    waiting."""
    check_loopback(host)
    c = credentials or Credentials.generate()
    ome = demo_ome(c.ome_token, clock, faults=faults)
    smartstream = demo_smartstream(c, clock, faults=faults)
    naver = demo_naver(
        c.naver_access_key, c.naver_secret_key, clock, faults=faults, region=c.naver_region
    )
    async with (
        serve(ome.app(), host, ome_port) as ome_url,
        serve(smartstream.app(), host, smartstream_port) as smartstream_url,
        serve(naver.app(), host, naver_port) as naver_url,
    ):
        yield Simulators(ome_url, smartstream_url, naver_url, c, ome, smartstream, naver)


async def _until_signal(duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration)


def banner(sims: Simulators, faults: bool) -> str:
    """What `streamwatch simulate` prints: the URLs, the control API, a `sources:` block."""
    script = "with the demo's fault script from +20 s" if faults else "without faults"
    return "\n".join(
        [
            f"streamwatch simulators on loopback, {script} (Ctrl-C stops them):",
            f"  OME          {sims.ome_url}",
            f"  SmartSTREAM  {sims.smartstream_url}",
            f"  NAVER        {sims.naver_url}",
            "  control API  <url>/_sim/state, /_sim/calls, /_sim/faults, /_sim/schedule,"
            " /_sim/actions/<name> (no auth)",
            "",
            "# for streamwatch.yaml:",
            sims.sources_yaml(),
            "",
        ]
    )


async def run_simulators(
    host: str,
    ome_port: int,
    smartstream_port: int,
    naver_port: int,
    credentials: Credentials | None = None,
    *,
    faults: bool = True,
    duration: float | None = None,
) -> int:
    try:
        check_loopback(host)
    except ValueError as exc:
        print(f"streamwatch: {exc}", file=sys.stderr)
        return 2
    try:
        async with simulators(
            host, ome_port, smartstream_port, naver_port, credentials=credentials, faults=faults
        ) as sims:
            print(banner(sims, faults), flush=True)
            await _until_signal(duration)
    except OSError as exc:
        print(f"streamwatch: cannot listen on {host}: {exc}", file=sys.stderr)
        return 1
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
                f"  actions      {daemon.url}/api/v1/actions   (the stalled stream: marker, HLS dump, restart, within two minutes)\n"
                f"  status page  {daemon.url}/   (alerts and recent actions)\n"
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


__all__ = [
    "DEMO_CONFIG",
    "Credentials",
    "Simulators",
    "check_loopback",
    "demo_naver",
    "demo_ome",
    "demo_smartstream",
    "run_demo",
    "run_simulators",
    "simulators",
]
