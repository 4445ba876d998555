"""The status page at `/`, loaded by a real headless Chromium (Debian's `chromium`), in a
private network namespace where loopback is the only network: nothing the page asks for can
leave the machine, and the browser's network log proves what it did ask for."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).parent / "statuspage_probe.py"


@pytest.fixture(scope="module")
def seen(tmp_path_factory) -> tuple[dict, Path]:
    for tool in ("chromium", "unshare", "ip"):
        assert shutil.which(tool), f"{tool} is missing: .ci/run installs it (apt-get)"
    out = tmp_path_factory.mktemp("status-page")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(PROBE), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text()), out


def test_the_page_shows_the_demos_sources_and_alerts(seen):
    result, _ = seen
    dom = result["dom"]
    for section in ('id="sources"', 'id="alerts"', 'id="actions"', 'id="silences"'):
        assert section in dom
    for source in ("ome/sim-ome", "smartstream/sim-smartstream", "naver/sim-naver"):
        assert source in dom
    firing = {a["labels"]["alertname"] for a in result["alerts"] if a["state"] == "firing"}
    assert firing, "the demo's faults fired alerts"
    for name in firing:
        assert name in dom
    assert 'firing nowrap">firing' in dom
    assert 'href="/metrics"' in dom and 'href="/api/v1/alerts"' in dom
    assert "<script" not in dom, "works without JavaScript"


def test_the_screenshot_is_a_rendered_page(seen):
    _, out = seen
    png = (out / "status.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1280, 1800)
    # A blank page compresses to a few kilobytes; tables of text do not.
    assert len(png) > 50_000


def test_no_request_leaves_loopback(seen):
    _, out = seen
    for name in ("dom", "shot"):
        log = json.loads((out / f"{name}.netlog.json").read_text())
        types = {number: text for text, number in log["constants"]["logEventTypes"].items()}
        connected = {
            address
            for event in log["events"]
            if types.get(event["type"]) == "TCP_CONNECT_ATTEMPT"
            for address in [event.get("params", {}).get("address")]
            if address
        }
        assert connected, "the browser connected to the daemon"
        assert all(a.startswith("127.0.0.1:") for a in connected), connected


def test_a_silence_is_created_and_expired_from_the_page_with_the_token(seen):
    result, _ = seen
    assert "wrong or missing API token" in result["wrong_token_page"]
    assert "created" in result["created_page"]
    [silence] = result["silences"]
    assert silence["createdBy"] == "ops" and silence["comment"] == "carrier maintenance"
    assert silence["matchers"][0]["name"] == "alertname"
    assert "expired" in result["expired_page"]
    assert result["silences_after"][0]["status"]["state"] == "expired"
