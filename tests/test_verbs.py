"""Every mapped verb, looked up by entity kind through the registry (as the action runner
will), run against the simulators over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import FakeClock
from prometheus_client import CollectorRegistry

from monitor.model import Entity
from monitor.sim.naver import NaverSim
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve
from monitor.sim.smartstream import SmartstreamSim
from monitor.sources import registry
from monitor.sources.base import SourceContext, SourceError, SourceMetrics
from monitor.sources.naver.config import NaverSourceConfig
from monitor.sources.naver.source import NaverSource
from monitor.sources.ome.config import OmeSourceConfig
from monitor.sources.ome.source import OmeSource
from monitor.sources.smartstream.config import SmartstreamSourceConfig
from monitor.sources.smartstream.source import SmartstreamSource
from monitor.sources.verbs import Verb, VerbResult

OME_TOKEN = "ome-verb-token"
STREAM = {"server": "origin", "vhost": "default", "app": "live", "stream": "main"}


def verb(entity_kind: str, name: str) -> Verb:
    found = registry.verb(entity_kind, name)
    assert found is not None, f"{entity_kind} has no verb {name}"
    return found


def context(clock: FakeClock) -> SourceContext:
    return SourceContext(metrics=SourceMetrics(CollectorRegistry()), clock=clock)


# -- OME -----------------------------------------------------------------------------------


@pytest.fixture
def ome_sim(clock: FakeClock) -> OmeSim:
    sim = OmeSim(OME_TOKEN, clock=clock)
    sim.add_stream("default/live/main", bitrate=2_000_000)
    clock.advance(5)
    return sim


@pytest.fixture
async def ome(ome_sim: OmeSim, clock: FakeClock) -> AsyncIterator[OmeSource]:
    async with serve(ome_sim.app()) as url:
        config = OmeSourceConfig(name="origin", url=url, access_token=OME_TOKEN)
        source = OmeSource(config, context(clock))
        await source.open()
        try:
            yield source
        finally:
            await source.close()


async def test_ome_stream_restart_deletes_the_stream(ome: OmeSource, ome_sim: OmeSim):
    assert await ome.client.stream_exists("default", "live", "main")
    result = await verb("ome.stream", "restart")(ome, STREAM, {"after": 30.0})
    assert isinstance(result, VerbResult) and result.ok and result.entity is None
    assert "deleted" in result.detail
    assert not await ome.client.stream_exists("default", "live", "main")
    deletes = [(c.method, c.path) for c in ome_sim.calls.mutating()]
    assert deletes == [("DELETE", "/v1/vhosts/default/apps/live/streams/main")]
    with pytest.raises(SourceError) as caught:  # gone now: OME's 404 comes through
        await verb("ome.stream", "restart")(ome, STREAM, {})
    assert caught.value.reason == "http_4xx" and caught.value.status == 404


async def test_ome_stream_hls_dump_starts_a_dump(ome: OmeSource, clock, tmp_path: Path):
    out = tmp_path / "dump"
    params = {"output_path": str(out), "info_file": str(out / "info.xml"), "duration": 60.0}
    result = await verb("ome.stream", "hls_dump")(ome, STREAM, params)
    assert result.ok
    dump_id = f"streamwatch-{int(clock())}"
    assert dump_id in result.detail
    [dump] = await ome.client.hls_dumps("default", "live", "main", output_stream_name="main")
    assert (dump["id"], dump["enabled"], dump["outputPath"]) == (dump_id, True, str(out))
    assert "<Status>Running</Status>" in (out / "info.xml").read_text()
    with pytest.raises(ValueError, match="output_path"):
        await verb("ome.stream", "hls_dump")(ome, STREAM, {"duration": 60.0})


async def test_ome_stream_id3_event_sends_the_frames(ome: OmeSource, ome_sim: OmeSim):
    frames = [{"frameType": "TXXX", "info": "streamwatch", "data": "OmeIngestStalled"}]
    params = {"frames": frames, "event_type": "video", "urgent": True, "on_resolve": False}
    result = await verb("ome.stream", "id3_event")(ome, STREAM, params)
    assert result.ok and "1 ID3 frame" in result.detail
    sent = ome_sim.events[-1]
    assert (sent.event_type, sent.urgent, sent.events) == ("video", True, frames)
    no_info = [{"frameType": "TIT2", "info": None, "data": "title"}]
    await verb("ome.stream", "id3_event")(ome, STREAM, {"frames": no_info})
    assert ome_sim.events[-1].events == [{"frameType": "TIT2", "data": "title"}]
    with pytest.raises(ValueError, match="frames"):
        await verb("ome.stream", "id3_event")(ome, STREAM, {"frames": []})


async def test_ome_verbs_check_the_entity_they_are_given(ome: OmeSource, ome_sim: OmeSim):
    restart = verb("ome.stream", "restart")
    with pytest.raises(ValueError, match="origin-2"):
        await restart(ome, {**STREAM, "server": "origin-2"}, {})
    with pytest.raises(ValueError, match="stream"):
        await restart(ome, {"server": "origin", "vhost": "default", "app": "live"}, {})
    assert ome_sim.calls.mutating() == [], "nothing reached OME"
    naver = NaverSource(NaverSourceConfig(name="kr", access_key="a", secret_key="s"), ome.context)
    with pytest.raises(TypeError):
        await restart(naver, STREAM, {})


# -- SmartSTREAM ---------------------------------------------------------------------------


async def test_smartstream_live_event_restart_stops_resets_starts_and_waits(clock: FakeClock):
    sim = SmartstreamSim(
        merchant_id="m1",
        api_key="k",
        mail_address="a@b.c",
        password="p",
        static_tokens=("t",),
        clock=clock,
    )
    sim.add_live_event(id="ev", encode_status="encode_status_error")
    sim.set_start_delay(12)
    async with serve(sim.app()) as url:
        config = SmartstreamSourceConfig(
            name="main", url=url, merchant_id="m1", api_key="k", token="t"
        )
        source = SmartstreamSource(config, context(clock), sleep=clock.sleep)
        await source.open()
        try:
            labels = {"merchant": "m1", "live_event": "ev"}
            result = await verb("smartstream.live_event", "restart")(source, labels, {})
            with pytest.raises(ValueError, match="other"):
                await verb("smartstream.live_event", "restart")(
                    source, {**labels, "merchant": "other"}, {}
                )
        finally:
            await source.close()
    assert result.ok and result.detail.endswith("encode_status_running")
    assert "stop → reset → start → wait" in result.detail
    actions = [c.path.rsplit("/", 1)[-1] for c in sim.calls.mutating()]
    assert actions == ["stop", "reset", "start"]
    assert clock.slept, "it waited for the event to run (on the fake clock)"


# -- NAVER ---------------------------------------------------------------------------------


async def test_naver_channel_restart_stops_and_resumes_the_channel(clock: FakeClock):
    sim = NaverSim("AK-verb", "SK-verb", clock)
    sim.add_channel("ls-v", "verb", "PUBLISHING")
    async with serve(sim.app()) as url:
        config = NaverSourceConfig(name="kr", url=url, access_key="AK-verb", secret_key="SK-verb")
        source = NaverSource(config, context(clock))
        await source.open()
        try:
            result = await verb("naver.channel", "restart")(source, {"channel": "ls-v"}, {})
        finally:
            await source.close()
    assert result.ok
    assert isinstance(result.entity, Entity) and result.entity.fields["status"] == "READY"
    assert sim.channels["ls-v"]["channelStatus"] == "READY"
    assert [(c.method, c.path) for c in sim.calls.mutating()] == [
        ("PUT", "/api/v2/channels/ls-v/off"),
        ("PUT", "/api/v2/channels/ls-v/on"),
    ]
