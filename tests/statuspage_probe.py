"""Run by tests/test_status_page.py inside a private network namespace (`unshare -n`), where
loopback is the only network there is: the simulators, the daemon and a headless Chromium,
which loads the status page. Writes what it saw as JSON for the test to judge.

Usage: python tests/statuspage_probe.py OUT_DIR
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

# Run as a script, so tests/ is first on sys.path and conftest imports as in the tests.
from conftest import FakeClock

from monitor.daemon import Daemon
from monitor.demo import simulators

TOKEN = "status-page-token-5150"
SHIPPED_RULES = str(Path(__file__).parent.parent / "monitor" / "rules" / "*.yaml")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1280,1800",
]


def chromium(out: Path, url: str, *args: str, name: str) -> str:
    command = [
        "chromium",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={out / ('profile-' + name)}",
        f"--log-net-log={out / (name + '.netlog.json')}",
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    if done.returncode != 0:
        raise SystemExit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


async def main(out: Path) -> None:
    clock = FakeClock(time.time())
    async with simulators(clock=clock) as sims:
        config = out / "streamwatch.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nstate_dir: {out / 'state'}\nrule_files: ['{SHIPPED_RULES}']\n"
            f"api: {{token: {TOKEN}}}\n" + sims.sources_yaml() + "\n"
        )
        daemon = Daemon(config, clock=clock)
        await daemon.start(schedule=False)
        try:
            for _ in range(24):  # two simulated minutes of the demo's fault script
                clock.advance(5)
                await daemon.poll_all()
            assert daemon.url is not None
            page = f"{daemon.url}/"
            dom = await asyncio.to_thread(chromium, out, page, "--dump-dom", name="dom")
            await asyncio.to_thread(
                chromium, out, page, f"--screenshot={out / 'status.png'}", name="shot"
            )
            async with aiohttp.ClientSession() as http:
                form = {
                    "matchers": 'alertname="OmePushFailed"',
                    "duration": "2h",
                    "created_by": "ops",
                    "comment": "carrier maintenance",
                }
                async with http.post(
                    f"{daemon.url}/silences", data={**form, "token": "wrong"}
                ) as resp:
                    wrong = await resp.text()
                async with http.post(
                    f"{daemon.url}/silences", data={**form, "token": TOKEN}
                ) as resp:
                    created = await resp.text()
                async with http.get(f"{daemon.url}/api/v1/silences") as resp:
                    silences = (await resp.json())["data"]
                async with http.post(
                    f"{daemon.url}/silences/{silences[0]['id']}/expire", data={"token": TOKEN}
                ) as resp:
                    expired = await resp.text()
                async with http.get(f"{daemon.url}/api/v1/silences") as resp:
                    after = (await resp.json())["data"]
                async with http.get(f"{daemon.url}/api/v1/alerts") as resp:
                    alerts = (await resp.json())["data"]
        finally:
            await daemon.stop()
    (out / "result.json").write_text(
        json.dumps(
            {
                "dom": dom,
                "wrong_token_page": wrong,
                "created_page": created,
                "silences": silences,
                "expired_page": expired,
                "silences_after": after,
                "alerts": alerts,
            }
        )
    )


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    asyncio.run(main(Path(sys.argv[1])))
