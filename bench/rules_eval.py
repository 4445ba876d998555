"""Benchmark: one evaluation round of 20 rules over 10,000 stream entities.

Prints the time per round and per (rule, entity). Run: python bench/rules_eval.py
Target (issue 4): <= 100 ms per round on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from monitor.alerting.engine import AlertEngine
from monitor.alerting.rules import load_rule_files
from monitor.alerting.silences import Silencer
from monitor.model import Entity, Snapshot, SourceRef
from monitor.sources import ENTITY_KINDS

# Twenty rules of the shapes operators write: liveness, thresholds, rates, string tests.
EXPRESSIONS = [
    "present and age(last_recv) > 10",
    "not present",
    "video_bitrate < 500000",
    "video_framerate < 20",
    "video_keyframe_interval / video_framerate > 4",
    "total_connections > 5000",
    "rate(bytes_in) < 1000",
    "delta(bytes_in) == 0",
    "changed(source_type)",
    'source_type not in ("Rtmp", "SRT", "WebRTC")',
    "throughput_in < 100000 and present",
    "video_width < 640 or video_height < 360",
    'matches(stream, "test-.*") and total_connections > 0',
    'startswith(app, "backup") and present',
    "abs(throughput_in - video_bitrate) > 2000000",
    "max(video_bitrate, audio_bitrate) > 20000000",
    "audio_bitrate < 32000",
    "age(created_at) < 30",
    "len(stream) > 60",
    "bytes_out / max(bytes_in, 1) > 1000",
]


def rules_yaml() -> str:
    lines = ["groups:", "  - name: bench", "    rules:"]
    for index, expr in enumerate(EXPRESSIONS):
        lines += [
            f"      - alert: Bench{index:02d}",
            "        kind: ome.stream",
            f"        expr: '{expr}'",
            "        for: 30s",
            "        annotations:",
            "          summary: '{{ vhost }}/{{ app }}/{{ stream }} value {{ value }}'",
        ]
    return "\n".join(lines) + "\n"


def entities(count: int, now: float, step: int, rng: random.Random) -> list[Entity]:
    result = []
    for index in range(count):
        labels = {
            "server": "bench",
            "vhost": "default",
            "app": f"app{index // 200}",
            "stream": f"stream{index}",
        }
        healthy = rng.random() > 0.02  # a few unhealthy streams so some rules match
        result.append(
            Entity(
                "ome.stream",
                labels,
                {
                    "last_recv": now - (1 if healthy else 60),
                    "created_at": now - 3600,
                    "bytes_in": 312_500.0 * (step + 1) * 5,
                    "bytes_out": 1_000_000.0 * (step + 1),
                    "throughput_in": 2_500_000.0,
                    "total_connections": rng.randint(0, 50),
                    "source_type": "Rtmp",
                    "video_bitrate": 2_500_000.0 if healthy else 300_000.0,
                    "video_framerate": 30.0,
                    "video_keyframe_interval": 60.0,
                    "video_width": 1280.0,
                    "video_height": 720.0,
                    "audio_bitrate": 128_000.0,
                },
            )
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(rules_yaml())
        groups = load_rule_files([str(path)], kinds=ENTITY_KINDS)
    now = 1_800_000_000.0
    engine = AlertEngine(groups, store=None, silencer=Silencer(None), clock=lambda: now)
    source = SourceRef("ome", "bench")
    rule_count = sum(len(g.rules) for g in groups)
    # Round 0 has no previous snapshot (rate/delta are missing); it is measured separately.
    timings = []
    for step in range(args.rounds + 1):
        snapshot = Snapshot.of(source, now, entities(args.streams, now, step, rng))
        started = time.perf_counter()
        engine.on_snapshot(snapshot)
        elapsed = time.perf_counter() - started
        if step:
            timings.append(elapsed)
        else:
            first = elapsed
        now += 5
    median = statistics.median(timings)
    pairs = rule_count * args.streams
    firing = sum(n for (_, state), n in engine.counts().items())
    print(f"rules={rule_count} entities={args.streams} rounds={args.rounds} active_alerts={firing}")
    print(f"first round (no previous snapshot): {first * 1000:.1f} ms")
    print(
        f"round: median {median * 1000:.1f} ms, min {min(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms"
    )
    print(f"per (rule, entity): {median / pairs * 1e6:.3f} us")


if __name__ == "__main__":
    main()
