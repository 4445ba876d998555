"""The rule engine's own metrics, read from the engine at scrape time."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.alerting.engine import AlertEngine


class EngineCollector(Collector):
    """`streamwatch_alerts{alertname, state}` and `streamwatch_state_write_errors_total`."""

    def __init__(self, engine: AlertEngine):
        self._engine = engine

    def describe(self) -> list[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "streamwatch_alerts",
                "Alerts by rule and state (pending, firing), silenced ones included.",
                labels=["alertname", "state"],
            ),
            CounterMetricFamily(
                "streamwatch_state_write_errors",
                "Writes of alert state and transitions to the state database that failed "
                "(each is retried).",
            ),
            GaugeMetricFamily(
                "streamwatch_transitions_unsaved",
                "Transitions logged but not yet saved to the outbox because state writes fail.",
            ),
        )

    def collect(self) -> list[Metric]:
        alerts, errors, unsaved = self._families()
        for (alertname, state), count in sorted(self._engine.counts().items()):
            alerts.add_metric([alertname, state], count)
        errors.add_metric([], self._engine.write_errors)
        unsaved.add_metric([], self._engine.unsaved)
        return [alerts, errors, unsaved]
