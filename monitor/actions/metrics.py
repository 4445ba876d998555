"""The actions' metrics, on the daemon's registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

RESULTS = (
    "ok",
    "failed",
    "timeout",
    "dry_run",
    "skipped_cooldown",
    "skipped_budget",
    "skipped_backoff",
    "skipped_silenced",
    "skipped_peer",
)
DUMP_STATES = ("starting", "running", "stopped", "ended", "deleted")


class ActionMetrics:
    def __init__(self, registry: CollectorRegistry, dump_counts: Callable[[], dict[str, int]]):
        self.total = Counter(
            "streamwatch_actions_total",
            "Action attempts by action, entity kind and the guard's or the upstream's result.",
            ["action", "kind", "result"],
            registry=registry,
        )
        self.duration = Histogram(
            "streamwatch_action_duration_seconds",
            "Time an executed action took, its verification included.",
            ["action", "kind"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self._collector = _DumpCollector(dump_counts)
        registry.register(self._collector)
        self._registry = registry

    def count(self, action: str, kind: str, result: str) -> None:
        self.total.labels(action, kind, result).inc()

    def close(self) -> None:
        for metric in (self.total, self.duration, self._collector):
            self._registry.unregister(metric)


class _DumpCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]):
        self._counts = counts

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamwatch_hls_dumps",
            "HLS dumps this daemon made, by state.",
            labels=["state"],
        )

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> list[Metric]:
        family = self._family()
        counts = self._counts()
        for state in sorted(set(DUMP_STATES) | set(counts)):
            family.add_metric([state], counts.get(state, 0))
        return [family]
