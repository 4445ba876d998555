"""The control kit the three simulators share, checked the same way on all three: one fault rule
(glob on the path, method filter, count 1 unless told), one schedule time base (seconds since the
simulator started, on the injected clock), one bounded call log and one `/_sim` API. Then the
demo's fault script, and `streamwatch simulate`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import FakeClock

from monitor.cli import main
from monitor.demo import Credentials, demo_naver, demo_ome, demo_smartstream, simulators
from monitor.demo.faults import FAULT_SCRIPT
from monitor.sim.control import Simulator
from monitor.sim.kit import MAX_DELAY, NO_ANSWER, CallLog
from monitor.sim.naver import NaverSim
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve
from monitor.sim.smartstream import (
    ENCODE_STATUS_ERROR,
    ENCODE_STATUS_RUNNING,
    JOB_FAILED,
    SmartstreamSim,
)

OME_TOKEN = "kit-ome-token"
M, KEY, TOKEN = "kit-merchant", "kit-api-key", "kit-bearer"
AK, SK = "kit-access-key", "kit-secret-key"


def ome_headers(method: str, uri: str, clock: FakeClock) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(OME_TOKEN.encode()).decode()}


def smartstream_headers(method: str, uri: str, clock: FakeClock) -> dict[str, str]:
    return {"X-Streaks-Api-Key": KEY, "Authorization": f"Bearer {TOKEN}"}


def naver_headers(method: str, uri: str, clock: FakeClock) -> dict[str, str]:
    ts = str(int(clock() * 1000))
    digest = hmac.new(SK.encode(), f"{method} {uri}\n{ts}\n{AK}".encode(), hashlib.sha256)
    return {
        "x-ncp-apigw-timestamp": ts,
        "x-ncp-iam-access-key": AK,
        "x-ncp-apigw-signature-v2": base64.b64encode(digest.digest()).decode(),
        "x-ncp-region_code": "KR",
    }


def make_ome(clock: FakeClock) -> Simulator:
    sim = OmeSim(OME_TOKEN, clock=clock)
    sim.add_stream("default/app/stream")
    return sim


def make_smartstream(clock: FakeClock) -> Simulator:
    return SmartstreamSim(
        merchant_id=M,
        api_key=KEY,
        mail_address="kit@example.com",
        password="kit-password",
        static_tokens=(TOKEN,),
        clock=clock,
    )


def make_naver(clock: FakeClock) -> Simulator:
    return NaverSim(AK, SK, clock)


@dataclass(frozen=True)
class Vendor:
    name: str
    make: Callable[[FakeClock], Simulator]
    headers: Callable[[str, str, FakeClock], dict[str, str]]
    a: str  # two authenticated GET paths that answer 200
    b: str
    both: str  # a glob matching both


VENDORS = [
    Vendor("ome", make_ome, ome_headers, "/v1/vhosts", "/v1/vhosts/default/apps", "/v1/vhosts*"),
    Vendor(
        "smartstream",
        make_smartstream,
        smartstream_headers,
        f"/v1/merchants/{M}/live_events",
        f"/v1/merchants/{M}/jobs",
        f"/v1/merchants/{M}/*",
    ),
    Vendor("naver", make_naver, naver_headers, "/api/v2/channels", "/api/v2/events", "/api/*"),
]


class Api:
    def __init__(self, http: aiohttp.ClientSession, vendor: Vendor, clock: FakeClock) -> None:
        self.http, self.vendor, self.clock = http, vendor, clock

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        headers = self.vendor.headers("GET", path, self.clock)
        async with self.http.get(path, headers=headers, **kwargs) as response:
            return response.status, await response.text()

    async def status(self, path: str) -> int:
        return (await self.get(path))[0]

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, path, json=body) as response:
            return response.status, await response.json()


@pytest.fixture(params=VENDORS, ids=[v.name for v in VENDORS])
def vendor(request: pytest.FixtureRequest) -> Vendor:
    return request.param


@pytest.fixture
def sim(vendor: Vendor, clock: FakeClock) -> Simulator:
    return vendor.make(clock)


@pytest.fixture
async def api(vendor: Vendor, sim: Simulator, clock: FakeClock) -> AsyncIterator[Api]:
    async with serve(sim.app()) as base, aiohttp.ClientSession(base) as http:
        yield Api(http, vendor, clock)


# ---- faults ---------------------------------------------------------------------------------------


async def test_one_path_rule_and_count_default_on_every_simulator(
    vendor: Vendor, sim: Simulator, api: Api
) -> None:
    sim.fail(503, path=vendor.a)  # count 1 unless told
    assert await api.status(vendor.b) == 200  # another path: not matched
    assert await api.status(vendor.a) == 503
    assert await api.status(vendor.a) == 200  # spent
    assert sim.faults == []

    sim.fail(503, path=vendor.a[1:])  # a glob matches the whole path: no implicit prefix
    assert await api.status(vendor.a) == 200
    sim.clear_faults()

    sim.fail(503, path=vendor.both, count=2)  # `*` crosses `/`
    assert [await api.status(p) for p in (vendor.a, vendor.b, vendor.a)] == [503, 503, 200]

    sim.fail(503, method="POST")  # one method: a GET passes and leaves the fault in place
    assert await api.status(vendor.a) == 200
    assert sim.clear_faults() == 1

    sim.fail(503, count=None)  # until cleared
    assert [await api.status(vendor.a) for _ in range(3)] == [503] * 3
    sim.clear_faults()
    assert await api.status(vendor.a) == 200
    with pytest.raises(ValueError):
        sim.fail(503, count=0)


async def test_every_fault_kind_on_every_simulator(
    vendor: Vendor, sim: Simulator, api: Api
) -> None:
    sim.unauthorized(path=vendor.a)
    assert await api.status(vendor.a) == 401

    sim.bad_json(path=vendor.a)
    status, text = await api.get(vendor.a)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(text)

    sim.truncate(path=vendor.a)
    with pytest.raises(aiohttp.ClientPayloadError):
        await api.get(vendor.a)

    # aiohttp retries a GET once when its kept-alive connection is reset: two resets are seen
    sim.reset_connection(path=vendor.a, count=2)
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.get(vendor.a)

    sim.delay(30, path=vendor.a)  # released when the app shuts down
    with pytest.raises(TimeoutError):
        await api.get(vendor.a, timeout=aiohttp.ClientTimeout(total=0.05))
    with pytest.raises(ValueError):
        sim.delay(MAX_DELAY + 1)

    statuses = [(call.path, call.status) for call in sim.calls]
    assert statuses[:4] == [
        (vendor.a, 401),
        (vendor.a, 200),
        (vendor.a, 200),
        (vendor.a, NO_ANSWER),
    ]
    assert await api.status(vendor.a) == 200


# ---- schedule ---------------------------------------------------------------------------------------


async def test_schedule_counts_seconds_from_the_simulators_start(
    vendor: Vendor, sim: Simulator, api: Api, clock: FakeClock
) -> None:
    clock.advance(5)  # scheduled later, still counted from the start
    sim.schedule(10, "fail", status=503)
    clock.advance(4.9)
    assert sim.faults == [] and await api.status(vendor.a) == 200
    clock.advance(0.1)
    assert sim.faults == []  # nothing runs until a request (or tick) notices it is due
    assert await api.status(vendor.a) == 503
    status, body = await api.control("POST", "/_sim/schedule", {"in": 3, "action": "fail"})
    assert (status, body) == (201, {"at": 13.0, "action": "fail"})
    status, body = await api.control("GET", "/_sim/schedule")
    assert body == {"elapsed": 10.0, "schedule": [{"at": 13.0, "action": "fail", "kwargs": {}}]}
    with pytest.raises(ValueError, match="unknown action"):
        sim.schedule(1, "no_such_action")


# ---- call log ---------------------------------------------------------------------------------------


async def test_call_log_is_bounded_and_the_same_everywhere(
    vendor: Vendor, sim: Simulator, api: Api, clock: FakeClock
) -> None:
    sim.calls = CallLog(maxlen=3)
    for n, path in enumerate([vendor.a, vendor.b, vendor.a, vendor.b, vendor.a]):
        clock.advance(1)
        assert await api.status(path) == 200, n
    assert [call.path for call in sim.calls] == [vendor.a, vendor.b, vendor.a]
    _, body = await api.control("GET", "/_sim/calls")
    first = body["calls"][0]
    assert set(first) == {"time", "method", "path", "query", "status", "body"}
    assert (first["time"], first["method"], first["status"]) == (clock.now - 2, "GET", 200)
    assert await api.control("DELETE", "/_sim/calls") == (200, {"cleared": 3})
    assert not sim.calls


# ---- /_sim ------------------------------------------------------------------------------------------


async def test_sim_api_has_the_same_shape_everywhere(
    vendor: Vendor, sim: Simulator, api: Api
) -> None:
    sim.fail(503, count=None)  # /_sim is never faulted...
    status, state = await api.control("GET", "/_sim/state")
    assert status == 200
    assert {"now", "started_at", "elapsed", "faults", "schedule", "calls"} <= set(state)
    status, body = await api.control("DELETE", "/_sim/faults", None)
    assert (status, body) == (200, {"cleared": 1})
    status, body = await api.control("GET", "/_sim/actions")
    assert {"fail", "delay", "bad_json", "truncate", "reset_connection"} <= set(body["actions"])

    fault = {"kind": "status", "status": 502, "path": vendor.a, "method": "GET"}
    status, body = await api.control("POST", "/_sim/faults", fault)
    assert status == 201
    assert body["fault"] == {
        **fault,
        "count": 1,
        "code": None,
        "message": None,
        "retry_after": None,
        "seconds": 0.0,
    }
    assert (await api.control("POST", "/_sim/faults", {"kind": "explode"}))[0] == 400
    assert (await api.control("POST", "/_sim/faults", {"kind": "status", "x": 1}))[0] == 400
    assert (await api.control("GET", "/_sim/faults"))[1]["faults"] == [body["fault"]]
    assert await api.status(vendor.a) == 502
    status, body = await api.control("POST", "/_sim/actions/delay", {"seconds": 0})
    assert (status, body["ok"], body["result"]["kind"]) == (200, True, "delay")
    assert await api.control("DELETE", "/_sim/faults?kind=delay") == (200, {"cleared": 1})
    status, body = await api.control("POST", "/_sim/actions/no_such_action", {})
    assert status == 404 and "unknown action" in body["error"]
    assert (await api.control("POST", "/_sim/actions/fail", {"bogus": 1}))[0] == 400
    assert (await api.control("POST", "/_sim/schedule", {"action": "fail"}))[0] == 400
    assert [call.path for call in sim.calls] == [vendor.a]  # ...and never logged


def test_simulators_import_neither_the_sources_nor_the_demo() -> None:
    code = (
        "import sys, monitor.sim.ome, monitor.sim.smartstream, monitor.sim.naver\n"
        "bad = [m for m in sys.modules if m.startswith(('monitor.sources', 'monitor.demo'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the demo's fault script -------------------------------------------------------------------


async def test_demo_ome_faults_unfold_within_the_first_minutes(clock: FakeClock) -> None:
    sim = demo_ome(OME_TOKEN, clock)
    live = "/v1/vhosts/default/apps/live"
    headers = ome_headers("GET", "", clock)
    async with serve(sim.app()) as base, aiohttp.ClientSession(base, headers=headers) as http:

        async def get(path: str) -> tuple[int, Any]:
            async with http.get(path) as response:
                return response.status, (await response.json()).get("response")

        assert len((await get(f"{live}/streams"))[1]) == 4
        assert (await get("/v1/vhosts/default/apps/backup:pushes"))[0] == 404
        (push,) = (await get(f"{live}:pushes"))[1]
        assert push["id"] == "youtube"
        assert (await get(f"{live}:records"))[1][0]["state"] == "recording"
        clock.advance(26)
        assert sim.tick() == clock.now
        assert sim.find_stream("default/live/second").stalled
        assert (await get(f"{live}:pushes"))[1][0]["state"] == "error"
        clock.advance(5)
        assert "news" not in (await get(f"{live}/streams"))[1]
        clock.advance(10)  # +41: the burst of five 500s
        statuses = [(await get("/v1/vhosts"))[0] for _ in range(6)]
        assert statuses == [500] * 5 + [200]
        clock.advance(20)  # +61: news still away (long enough for OmeExpectedStreamMissing)
        assert "news" not in (await get(f"{live}/streams"))[1]
        clock.advance(30)  # +91: news reconnected
        assert "news" in (await get(f"{live}/streams"))[1]


async def test_demo_smartstream_has_events_jobs_and_scheduled_faults(clock: FakeClock) -> None:
    credentials = Credentials.generate()
    sim = demo_smartstream(credentials, clock)
    headers = {
        "X-Streaks-Api-Key": credentials.smartstream_api_key,
        "Authorization": f"Bearer {credentials.smartstream_token}",
    }
    async with serve(sim.app()) as base, aiohttp.ClientSession(headers=headers) as http:
        url = f"{base}/v1/merchants/{credentials.smartstream_merchant}"

        async def statuses() -> tuple[dict[str, Any], dict[str, Any]]:
            async with http.get(url + "/live_events") as r:
                events = {e["ref_id"]: e["encode_status"] for e in (await r.json())["live_events"]}
            async with http.get(url + "/jobs") as r:
                jobs = {j["ref_id"]: j["encode_status"] for j in (await r.json())["jobs"]}
            return events, jobs

        events, jobs = await statuses()
        assert len(events) >= 3 and set(events.values()) == {ENCODE_STATUS_RUNNING}
        assert len(jobs) >= 2 and JOB_FAILED not in jobs.values()
        clock.advance(20)
        events, jobs = await statuses()
        assert events["sports"] == ENCODE_STATUS_ERROR
        assert jobs["upload-2"] != JOB_FAILED
        clock.advance(10)
        events, jobs = await statuses()
        assert jobs["upload-2"] == JOB_FAILED


async def test_demo_naver_script(clock: FakeClock) -> None:
    sim = demo_naver(AK, SK, clock)
    t0 = clock.now
    async with serve(sim.app()) as base, aiohttp.ClientSession(base) as http:

        async def get(path: str) -> Any:
            async with http.get(path, headers=naver_headers("GET", path, clock)) as response:
                return await response.json()

        clock.now = t0 + 19.9
        body = await get("/api/v2/channels")
        statuses = {c["channelName"]: c["channelStatus"] for c in body["content"]}
        assert statuses == {
            "news": "PUBLISHING",
            "sports": "PUBLISHING",
            "archive": "READY",
            "legacy": "PUBLISH",
        }
        clock.now = t0 + 20
        body = await get("/api/v2/channels")
        assert {c["channelName"]: c["channelStatus"] for c in body["content"]}["news"] == "READY"
        events = await get("/api/v2/events")
        assert events["content"][0]["eventCode"] == "PUBLISH_END"
        assert events["content"][0]["timestamp"] == int((t0 + 20) * 1000)
        clock.now = t0 + 35
        body = await get("/api/v2/channels")
        by_name = {c["channelName"]: c for c in body["content"]}
        assert by_name["sports"]["channelStatus"] == "FORCE_BLOCK"
        assert (await get("/api/v2/events"))["total"] == events["total"]  # no event for it


async def test_no_faults_leaves_the_schedules_empty(clock: FakeClock) -> None:
    async with simulators(clock=clock, faults=False) as quiet:
        assert [s.pending() for s in (quiet.ome, quiet.smartstream, quiet.naver)] == [[], [], []]
    async with simulators(clock=clock) as scripted:
        sims = (scripted.ome, scripted.smartstream, scripted.naver)
        assert sum(len(s.pending()) for s in sims) == len(FAULT_SCRIPT)


# ---- streamwatch simulate -------------------------------------------------------------------------


async def test_the_printed_sources_block_polls_every_simulator(tmp_path: Path) -> None:
    credentials = Credentials.generate(ome_token="tok-$1", smartstream_password='p"w')
    async with simulators(credentials=credentials, faults=False) as sims:
        config = tmp_path / "streamwatch.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nstate_dir: {tmp_path / 'state'}\nrule_files: []\n"
            + sims.sources_yaml()
        )
        # `once` runs its own event loop, so it gets a thread of its own here.
        assert await asyncio.to_thread(main, ["once", "-c", str(config)]) == 0


async def _read_until(stream: asyncio.StreamReader, last: str, within: float = 15) -> list[str]:
    async def read() -> list[str]:
        lines: list[str] = []
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"process ended before printing {last!r}: {lines}")
            lines.append(line.rstrip("\n"))
            if line.lstrip().startswith(last):
                return lines

    return await asyncio.wait_for(read(), within)


async def test_simulate_with_flags_and_no_faults_prints_a_ready_config() -> None:
    flags = {
        "--ome-token": "flag-ome",
        "--smartstream-merchant": "m-flag",
        "--smartstream-api-key": "k-flag",
        "--smartstream-token": "t-flag",
        "--smartstream-mail": "flag@example.com",
        "--smartstream-password": "pw-flag",
        "--naver-access-key": "AK-FLAG",
        "--naver-secret-key": "SK-FLAG",
    }
    argv = [arg for pair in flags.items() for arg in pair]
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "monitor", "simulate", "--no-faults", *argv),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        lines = await _read_until(process.stdout, "region:")
        assert "without faults" in lines[0]
        block = yaml.safe_load("\n".join(lines[lines.index("sources:") :]))["sources"]
        ome, smartstream, naver = (block[kind][0] for kind in ("ome", "smartstream", "naver"))
        assert ome["access_token"] == "flag-ome"
        assert (smartstream["merchant_id"], smartstream["api_key"]) == ("m-flag", "k-flag")
        assert smartstream["mail_address"] == "flag@example.com"
        assert smartstream["password"] == "pw-flag"
        assert any("t-flag" in line for line in lines)  # the fixed token, as a comment
        assert (naver["access_key"], naver["secret_key"]) == ("AK-FLAG", "SK-FLAG")
        async with aiohttp.ClientSession() as http:
            for source in (ome, smartstream, naver):
                assert source["url"].startswith("http://127.0.0.1:")
                async with http.get(source["url"] + "/_sim/schedule") as response:
                    assert (await response.json())["schedule"] == []
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_simulate_listens_on_loopback_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_credentials_fill_what_is_not_given() -> None:
    one, two = Credentials.generate(), Credentials.generate(naver_access_key="mine")
    assert one.ome_token != two.ome_token and one.naver_secret_key != two.naver_secret_key
    assert (one.smartstream_mail, two.naver_access_key) == ("ops@example.com", "mine")
