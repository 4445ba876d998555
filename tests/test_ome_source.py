"""The OME source against the OME simulator over loopback HTTP, and the exporter over it."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.export import Exporter
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve
from monitor.sources.base import SourceContext, SourceError, SourceMetrics
from monitor.sources.ome.config import OmeSourceConfig
from monitor.sources.ome.source import OmeSource
from monitor.sources.poller import SourcePoller

TOKEN = "ome-secret-token-4711"


@pytest.fixture
def sim(clock) -> OmeSim:
    sim = OmeSim(TOKEN, clock=clock)
    sim.add_stream(
        "default/live/main",
        bitrate=2_500_000,
        framerate=30,
        keyframe_interval=60,
        connections={"llhls": 3, "webrtc": 2},
    )
    sim.add_stream("default/live/second", bitrate=1_000_000, framerate=25, keyframe_interval=50)
    sim.add_stream("default/other/x", bitrate=800_000)
    sim.add_push(
        "default/live", "youtube", "main", "rtmp://127.0.0.1/live", stream_key="pushkey-secret"
    )
    clock.advance(10)
    return sim


@pytest.fixture
async def sim_url(sim) -> AsyncIterator[str]:
    async with serve(sim.app()) as url:
        yield url


def make_source(
    url: str, clock, registry: CollectorRegistry | None = None, **overrides: Any
) -> OmeSource:
    config = OmeSourceConfig(
        name="origin-1", url=url, access_token=overrides.pop("token", TOKEN), **overrides
    )
    metrics = SourceMetrics(registry or CollectorRegistry())
    return OmeSource(config, SourceContext(metrics=metrics, clock=clock))


async def poll(source: OmeSource) -> list:
    await source.open()
    try:
        return await source.poll()
    finally:
        await source.close()


def by_kind(entities, kind):
    return {tuple(e.labels.values())[1:]: e for e in entities if e.kind == kind}


async def sim_json(url: str, path: str) -> Any:
    """Read the simulator directly, not through our client, to compare against."""
    auth = {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()}
    async with aiohttp.ClientSession() as session, session.get(url + path, headers=auth) as resp:
        return (await resp.json())["response"]


async def test_poll_discovers_everything_and_maps_fields(sim_url, clock):
    entities = await poll(make_source(sim_url, clock))
    streams = by_kind(entities, "ome.stream")
    assert set(streams) == {
        ("default", "live", "main"),
        ("default", "live", "second"),
        ("default", "other", "x"),
    }
    main = streams[("default", "live", "main")]
    stats = await sim_json(sim_url, "/v1/stats/current/vhosts/default/apps/live/streams/main")
    assert main.fields["bytes_in"] == stats["totalBytesIn"] > 0
    assert main.fields["throughput_in"] == stats["avgThroughputIn"]
    assert main.fields["last_recv"] == datetime.fromisoformat(stats["lastRecvTime"]).timestamp()
    assert main.fields["connections"]["llhls"] == 3 and main.fields["total_connections"] == 5
    assert main.fields["source_type"] == "Rtmp"
    assert (main.fields["video_framerate"], main.fields["video_keyframe_interval"]) == (30, 60)
    assert main.fields["video_bitrate"] == 2_500_000
    tracks = main.fields["tracks"]
    assert [t["type"] for t in tracks] == ["video", "audio"], "the RTMP Data track is skipped"
    assert main.fields["track_count"] == 3
    assert all(e.kind != "ome.track" for e in entities), "tracks ride on their stream"
    assert set(by_kind(entities, "ome.app")) == {("default", "live"), ("default", "other")}
    assert set(by_kind(entities, "ome.vhost")) == {("default",)}
    [push] = [e for e in entities if e.kind == "ome.push"]
    assert push.labels["id"] == "youtube" and push.fields["stream"] == "main"
    assert "pushkey-secret" not in repr(push), "a push's stream key is a credential"


async def test_string_bitrates_of_old_ome_versions(clock):
    sim = OmeSim(TOKEN, clock=clock, version="0.16.5")
    sim.add_stream("default/app/s", bitrate=1_500_000)
    clock.advance(5)
    async with serve(sim.app()) as url:
        info = await sim_json(url, "/v1/vhosts/default/apps/app/streams/s")
        assert isinstance(info["input"]["tracks"][0]["video"]["bitrate"], str)
        entities = await poll(make_source(url, clock))
    [stream] = [e for e in entities if e.kind == "ome.stream"]
    assert stream.fields["video_bitrate"] == 1_500_000
    assert "rtmppush" in stream.fields["connections"], "old connection keys pass through"


async def test_include_exclude_and_expected_absent(sim_url, clock):
    source = make_source(
        sim_url,
        clock,
        include=["default/live"],
        expected_streams=["default/live/main", "default/live/ghost"],
    )
    entities = await poll(source)
    streams = by_kind(entities, "ome.stream")
    assert ("default", "other", "x") not in streams
    ghost = streams[("default", "live", "ghost")]
    assert ghost.present is False and set(ghost.fields) == {"present"}
    assert streams[("default", "live", "main")].present is True


async def test_stream_vanishing_between_list_and_stats_is_not_an_error(sim, sim_url, clock):
    sim.vanish("default/live/second")
    entities = await poll(make_source(sim_url, clock))
    assert ("default", "live", "second") not in by_kind(entities, "ome.stream")
    assert ("default", "live", "main") in by_kind(entities, "ome.stream")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (lambda sim: sim.fail(count=None, path="/v1/stats/*"), "http_5xx"),
        (lambda sim: sim.bad_json(count=None, path="/v1/vhosts/default/apps"), "bad_response"),
        (lambda sim: sim.unauthorized(count=None), "unauthorized"),
        (lambda sim: sim.delay(1, count=None, path="/v1/vhosts"), "timeout"),
    ],
)
async def test_failure_classes(sim, sim_url, clock, fault, reason):
    fault(sim)
    with pytest.raises(SourceError) as caught:
        await poll(make_source(sim_url, clock, timeout="200ms"))
    assert caught.value.reason == reason
    assert TOKEN not in str(caught.value)


async def test_wrong_token_connect_and_4xx(sim_url, clock, unused_tcp_port):
    with pytest.raises(SourceError) as caught:
        await poll(make_source(sim_url, clock, token="wrong"))
    assert caught.value.reason == "unauthorized" and "Invalid credential" in caught.value.message
    with pytest.raises(SourceError) as caught:
        await poll(make_source(f"http://127.0.0.1:{unused_tcp_port}", clock))
    assert caught.value.reason == "connect"
    with pytest.raises(SourceError) as caught:
        await poll(make_source(sim_url + "/nope", clock))
    assert caught.value.reason == "http_4xx" and "Controller not found" in caught.value.message


async def test_actions_reach_the_simulator(sim, sim_url, clock, tmp_path: Path):
    source = make_source(sim_url, clock)
    client = source.client  # actions are the client's; the verbs (test_verbs.py) wrap them
    await source.open()
    try:
        await client.send_event(
            "default",
            "live",
            "main",
            [{"frameType": "TXXX", "info": "streamwatch", "data": "OmeIngestStalled"}],
        )
        assert sim.events[-1].events[0]["data"] == "OmeIngestStalled"
        out = tmp_path / "dump"
        await client.start_hls_dump(
            "default",
            "live",
            "main",
            dump_id="d1",
            output_stream_name="main",
            output_path=str(out),
            info_file=str(out / "info.xml"),
        )
        assert (out / "info.xml").read_text().count("<Status>Running</Status>") == 1
        with pytest.raises(SourceError) as caught:
            await client.start_hls_dump(
                "default",
                "live",
                "main",
                dump_id="d1",
                output_stream_name="main",
                output_path=str(out),
            )
        assert caught.value.reason == "http_5xx" and "Duplicate ID" in caught.value.message
        await client.stop_hls_dump(
            "default", "live", "main", output_stream_name="main", dump_id="d1"
        )
        assert "<Status>Completed</Status>" in (out / "info.xml").read_text()
        [dump] = await client.hls_dumps("default", "live", "main", output_stream_name="main")
        assert dump["enabled"] is False
        assert [p["id"] for p in await client.pushes("default", "live")] == ["youtube"]
        started = await client.start_push(
            "default",
            "live",
            {
                "id": "backup-cdn",
                "stream": {"name": "main"},
                "protocol": "rtmp",
                "url": "rtmp://127.0.0.1/b",
                "streamKey": "k",
            },
        )
        assert started["id"] == "backup-cdn" and started["state"] in ("ready", "pushing")
        assert {p["id"] for p in await client.pushes("default", "live")} == {
            "youtube",
            "backup-cdn",
        }
        await client.stop_push("default", "live", "youtube")
        assert await client.stream_exists("default", "live", "main")
        await client.delete_stream("default", "live", "main")
        assert not await client.stream_exists("default", "live", "main")
    finally:
        await source.close()
    mutating = [(c.method, c.path) for c in sim.calls]
    assert ("DELETE", "/v1/vhosts/default/apps/live/streams/main") in mutating
    assert ("POST", "/v1/vhosts/default/apps/live:stopPush") in mutating
    assert ("POST", "/v1/vhosts/default/apps/live:startPush") in mutating


def samples(exporter: Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exporter.render()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_exported_numbers_match_the_simulator(sim, sim_url, clock, caplog):
    caplog.set_level(logging.DEBUG)
    registry = CollectorRegistry()
    source = make_source(sim_url, clock, registry)
    poller = SourcePoller(source, source.context.metrics, clock=clock)
    exporter = Exporter(registry, lambda: [poller])
    await source.open()
    await poller.refresh()
    values = samples(exporter)
    ids = {"server": "origin-1", "vhost": "default", "app": "live", "stream": "main"}

    def value(name: str, **extra: str) -> float:
        return values[(name, tuple(sorted({**ids, **extra}.items())))]

    stats = await sim_json(sim_url, "/v1/stats/current/vhosts/default/apps/live/streams/main")
    assert value("ome_stream_bytes_in_total") == stats["totalBytesIn"]
    assert value("ome_stream_bytes_out_total") == stats["totalBytesOut"]
    assert value("ome_stream_throughput_in_bits_per_second") == stats["avgThroughputIn"]
    assert (
        value("ome_stream_last_recv_timestamp_seconds")
        == datetime.fromisoformat(stats["lastRecvTime"]).timestamp()
    )
    for protocol, count in stats["connections"].items():
        assert value("ome_stream_connections", protocol=protocol) == count
    assert value("ome_stream_info", source_type="Rtmp") == 1
    info = await sim_json(sim_url, "/v1/vhosts/default/apps/live/streams/main")
    video = next(t for t in info["input"]["tracks"] if t["type"] == "Video")
    assert (
        value(
            "ome_stream_track_framerate",
            track=str(video["id"]),
            type="video",
            codec=video["video"]["codec"],
        )
        == 30
    )
    app = await sim_json(sim_url, "/v1/stats/current/vhosts/default/apps/live")
    assert (
        values[
            (
                "ome_app_bytes_in_total",
                (("app", "live"), ("server", "origin-1"), ("vhost", "default")),
            )
        ]
        == app["totalBytesIn"]
    )
    push_states = {dict(k)["state"]: v for (n, k), v in values.items() if n == "ome_push_state"}
    assert sum(push_states.values()) == 1 and "error" in push_states
    assert values[("streamwatch_source_up", (("kind", "ome"), ("source", "origin-1")))] == 1

    # The stream goes away: its series leave /metrics at the next poll.
    sim.remove_stream("default/live/second")
    clock.advance(5)
    await poller.refresh()
    values = samples(exporter)
    assert not any(dict(k).get("stream") == "second" for _, k in values)
    # The source fails: up 0 and no entity series at all.
    sim.fail(count=None)
    clock.advance(5)
    await poller.refresh()
    values = samples(exporter)
    assert values[("streamwatch_source_up", (("kind", "ome"), ("source", "origin-1")))] == 0
    assert not any(name.startswith("ome_") for name, _ in values)
    assert (
        values[
            (
                "streamwatch_source_poll_errors_total",
                (("code", ""), ("kind", "ome"), ("reason", "http_5xx"), ("source", "origin-1")),
            )
        ]
        == 1
    )
    await source.close()
    text = exporter.render()[0].decode() + caplog.text
    assert TOKEN not in text and base64.b64encode(TOKEN.encode()).decode() not in text
    assert "source down" in caplog.text


async def test_gzip_and_plain_expositions_are_the_same_text(sim_url, clock):
    import gzip

    registry = CollectorRegistry()
    source = make_source(sim_url, clock, registry)
    poller = SourcePoller(source, source.context.metrics, clock=clock)
    exporter = Exporter(registry, lambda: [poller])
    await source.open()
    try:
        await poller.refresh()
    finally:
        await source.close()
    for accept in ("", "application/openmetrics-text; version=1.0.0"):
        zipped, content_type, encoding = exporter.render_payload(accept, "gzip, deflate")
        plain, plain_type, none = exporter.render_payload(accept, "")
        assert (encoding, none, content_type) == ("gzip", None, plain_type)
        assert gzip.decompress(b"".join(zipped)) == b"".join(plain)
        again, _, _ = exporter.render_payload(accept, "gzip")
        assert gzip.decompress(b"".join(again)) == b"".join(plain), (
            "the cached compressor is copied, not reused"
        )
