"""The rule engine's own metrics, read from the engine at scrape time."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.alerting.engine import AlertEngine


class EngineCollector(Collector):
    """`streamwatch_alerts{alertname, state}`, `streamwatch_state_write_errors_total`, the
    unsaved transitions and `streamwatch_rule_group_last_duration_seconds{rule_group}` (the
    time the group's rules took at their last evaluation, as Prometheus's
    `prometheus_rule_group_last_duration_seconds`)."""

    def __init__(self, engine: AlertEngine):
        self._engine = engine

    def describe(self) -> list[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
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
            GaugeMetricFamily(
                "streamwatch_rule_group_last_duration_seconds",
                "Time the group's rules took at their last evaluation (summed over its rules).",
                labels=["rule_group"],
            ),
        )

    def collect(self) -> list[Metric]:
        alerts, errors, unsaved, cost = self._families()
        for (alertname, state), count in sorted(self._engine.counts().items()):
            alerts.add_metric([alertname, state], count)
        errors.add_metric([], self._engine.write_errors)
        unsaved.add_metric([], self._engine.unsaved)
        health = self._engine.health
        for group in list(self._engine.groups):
            seconds = sum(
                h.evaluation_seconds for r in group.rules if (h := health.get(r.key)) is not None
            )
            cost.add_metric([group.name], seconds)
        return [alerts, errors, unsaved, cost]
