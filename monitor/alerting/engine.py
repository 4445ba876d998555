"""The alert state machine, after Prometheus's `rules/alerting.go`.

`evaluate_rule` is a function of (rule, active alerts, entities, now) that returns transitions:
it reads no clock and sends nothing. `AlertEngine` feeds it every snapshot, freezes the alerts
of a source that is down, runs the built-in source-down rule, marks silenced alerts, keeps the
state in SQLite so a restart resumes it, and publishes each transition once on a bus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from monitor.alerting.expr import EvalContext, compile_expr
from monitor.alerting.rules import AlertingRule, RuleGroup
from monitor.alerting.silences import Silencer
from monitor.alerting.templates import Template, compile_template, template_context
from monitor.model import Entity, FieldValue, Snapshot, fingerprint
from monitor.store import Store, StoredAlert

log = logging.getLogger(__name__)

PENDING = "pending"
FIRING = "firing"
INACTIVE = "inactive"

SOURCE_KIND = "streamwatch.source"
SOURCE_DOWN = "StreamwatchSourceDown"
BUILTIN_GROUP = "streamwatch-builtin"
RESTORE_GRACE = 60.0  # a restored pending alert fires no sooner than this after a restart


@dataclass
class Alert:
    rule: str  # AlertingRule.key
    alertname: str
    source: str  # the source whose snapshots decide this alert
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None
    last_sent_at: float | None = None
    value: Any = None
    entity: Entity | None = field(default=None, repr=False)
    not_before: float = 0.0  # restored pending alerts wait out a grace period

    def to_api(self, silenced_by: Sequence[str]) -> dict[str, Any]:
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "state": self.state,
            "activeAt": iso(self.active_at),
            "startsAt": iso(self.fired_at if self.fired_at is not None else self.active_at),
            "endsAt": iso(self.resolved_at) if self.resolved_at is not None else None,
            "value": None if self.value is None else str(self.value),
            "fingerprint": self.fingerprint,
            "silenced": bool(silenced_by),
            "silencedBy": list(silenced_by),
            "source": self.source,
        }


@dataclass(frozen=True)
class Transition:
    """One change of one alert: `pending`, `firing`, `resolved`, `silenced` or `unsilenced`.
    `alert` is a copy taken at the moment of the change."""

    kind: str
    alert: Alert
    rule: AlertingRule
    at: float
    silenced_by: tuple[str, ...] = ()

    @property
    def silenced(self) -> bool:
        return bool(self.silenced_by)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class _Row:
    """An entity prepared once per snapshot and shared by every rule of its kind."""

    entity: Entity
    ctx: EvalContext


def _labels_for(
    rule: AlertingRule, entity: Entity, ctx: Mapping[str, Any] | None
) -> dict[str, str]:
    labels = dict(entity.labels)
    for name, template in rule.labels.items():
        labels[name] = (
            rule.static_labels[name] if name in rule.static_labels else template.render(ctx or {})
        )
    labels["alertname"] = rule.name
    return labels


def _render(templates: Mapping[str, Template], context: Mapping[str, Any]) -> dict[str, str]:
    return {name: template.render(context) for name, template in templates.items()}


def _context(
    rule: AlertingRule, entity: Entity, value: Any, fired_at: float | None, now: float
) -> dict[str, Any]:
    return template_context(
        labels=entity.labels,
        fields=entity.fields,
        alertname=rule.name,
        value=value,
        fired_at=fired_at,
        now=now,
    )


def evaluate_rule(
    rule: AlertingRule,
    active: dict[str, Alert],
    rows: Iterable[_Row],
    source: str,
    now: float,
    resolved_retention: float,
) -> tuple[list[Transition], set[str], list[str]]:
    """One evaluation of `rule` over one source's entities. Mutates `active` (fingerprint →
    alert); returns (transitions, fingerprints changed, errors)."""
    transitions: list[Transition] = []
    changed: set[str] = set()
    errors: list[str] = []
    seen: set[str] = set()
    templated_labels = len(rule.static_labels) != len(rule.labels)
    test = rule.expr.unchecked_test
    for row in rows:
        try:
            truth, value = test(row.ctx)
        except Exception:
            continue  # an unknown (missing field, type error) is false, as Expr.test says
        if not truth:
            continue
        entity = row.entity
        context = _context(rule, entity, value, None, now) if templated_labels else None
        labels = _labels_for(rule, entity, context)
        fp = fingerprint(labels)
        if fp in seen:
            errors.append(
                f"two entities give the same alert labels {labels}; add a distinguishing label"
            )
            continue
        seen.add(fp)
        alert = active.get(fp)
        if alert is None or alert.state == INACTIVE:
            annotations = _render(rule.annotations, _context(rule, entity, value, None, now))
            alert = Alert(
                rule.key,
                rule.name,
                source,
                fp,
                labels,
                annotations,
                PENDING,
                active_at=now,
                value=value,
                entity=entity,
            )
            active[fp] = alert
            changed.add(fp)
            if rule.hold > 0:
                transitions.append(Transition(PENDING, replace(alert), rule, now))
        else:
            alert.value, alert.entity = value, entity
            if alert.keep_firing_since is not None:
                alert.keep_firing_since = None
                changed.add(fp)
        if (
            alert.state == PENDING
            and now - alert.active_at >= rule.hold
            and now >= alert.not_before
        ):
            alert.state, alert.fired_at = FIRING, now
            alert.annotations = _render(rule.annotations, _context(rule, entity, value, now, now))
            changed.add(fp)
            transitions.append(Transition(FIRING, replace(alert), rule, now))
    for fp, alert in list(active.items()):
        if fp in seen or alert.source != source:
            continue
        if alert.state == PENDING:
            del active[fp]  # never fired: dropped without a word, as Prometheus does
            changed.add(fp)
        elif alert.state == FIRING:
            if alert.keep_firing_since is None:
                alert.keep_firing_since = now
                changed.add(fp)
            if now - alert.keep_firing_since >= rule.keep_firing_for:
                alert.state, alert.resolved_at, alert.keep_firing_since = INACTIVE, now, None
                changed.add(fp)
                transitions.append(Transition("resolved", replace(alert), rule, now))
        elif alert.resolved_at is not None and now - alert.resolved_at >= resolved_retention:
            del active[fp]
            changed.add(fp)
    return transitions, changed, errors


@dataclass
class RuleHealth:
    health: str = "unknown"
    last_error: str | None = None
    last_evaluation: float | None = None
    evaluation_seconds: float = 0.0


def builtin_rules(source_down_after: float) -> RuleGroup:
    rule = AlertingRule(
        name=SOURCE_DOWN,
        group=BUILTIN_GROUP,
        file="(built in)",
        line=0,
        kind=SOURCE_KIND,
        expr=compile_expr("not up"),
        hold=source_down_after,
        keep_firing_for=0.0,
        labels={"severity": compile_template("critical")},
        annotations={
            "summary": compile_template("Source {{ kind }}/{{ source }} is down"),
            "description": compile_template(
                "Polls of {{ kind }}/{{ source }} fail: {{ last_error }}"
            ),
        },
        static_labels={"severity": "critical"},
    )
    return RuleGroup(BUILTIN_GROUP, "(built in)", (rule,))


Subscriber = Callable[[Sequence[Transition]], None]


class AlertEngine:
    def __init__(
        self,
        groups: Sequence[RuleGroup],
        *,
        store: Store | None,
        silencer: Silencer,
        clock: Callable[[], float] = time.time,
        resolved_retention: float = 900.0,
        source_down_after: float = 60.0,
    ):
        self.store = store
        self.silencer = silencer
        self.clock = clock
        self.resolved_retention = resolved_retention
        self.groups: list[RuleGroup] = []
        self.rules: dict[str, AlertingRule] = {}
        self.alerts: dict[str, dict[str, Alert]] = {}
        self.health: dict[str, RuleHealth] = {}
        self._subscribers: list[Subscriber] = []
        self._previous: dict[str, dict[Any, tuple[Mapping[str, FieldValue], float]]] = {}
        self._down_since: dict[str, float] = {}
        self._muted: dict[tuple[str, str], tuple[str, ...]] = {}
        self._counts: Mapping[tuple[str, str], int] = {}
        self.update_rules(groups, source_down_after)
        if store is not None:
            self._restore(store.load_alerts())

    # -- the bus ------------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Every transition batch goes to `subscriber`, once. Returns the unsubscribe function.
        Subscribers must only enqueue: they run inside evaluation."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def _publish(self, transitions: Sequence[Transition]) -> None:
        if not transitions:
            return
        for subscriber in list(self._subscribers):
            try:
                subscriber(transitions)
            except Exception:
                log.exception("alert subscriber failed")

    # -- rules --------------------------------------------------------------------------------

    def update_rules(
        self, groups: Sequence[RuleGroup], source_down_after: float | None = None
    ) -> list[Transition]:
        """Swap the rule set, carrying the state of rules that keep their group and name
        (Prometheus's CopyState). Firing alerts of removed rules are resolved."""
        if source_down_after is None:
            builtin = next((g for g in self.groups if g.name == BUILTIN_GROUP), None)
            source_down_after = builtin.rules[0].hold if builtin else 60.0
        self.groups = [builtin_rules(source_down_after), *groups]
        old_rules = self.rules
        self.rules = {rule.key: rule for group in self.groups for rule in group.rules}
        now = self.clock()
        transitions = []
        for key in [k for k in self.alerts if k not in self.rules]:
            removed = self.alerts.pop(key)
            for alert in removed.values():
                if alert.state == FIRING:
                    alert.state, alert.resolved_at = INACTIVE, now
                    transitions.append(Transition("resolved", replace(alert), old_rules[key], now))
            if self.store is not None:
                self.store.save_alerts([], [(key, fp) for fp in removed])
        self.health = {key: self.health.get(key, RuleHealth()) for key in self.rules}
        self._counts = self._count()
        self._publish(transitions)
        return transitions

    # -- evaluation ---------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> list[Transition]:
        now = self.clock()
        source = str(snapshot.source)
        transitions: list[Transition] = []
        changed: dict[str, set[str]] = {}
        if snapshot.partial:
            # Pushed events: only the rules over their kinds run, and nothing else of the
            # source is judged (or thought gone) from them.
            rows_by_kind = self._partial_rows(snapshot, now)
            for rule in self.rules.values():
                if rule.kind in rows_by_kind:
                    self._evaluate(rule, rows_by_kind[rule.kind], source, now, transitions, changed)
            return self._finish(source, now, transitions, changed)
        if snapshot.ok:
            self._down_since.pop(source, None)
            rows_by_kind = self._rows(snapshot, source, now)
            for rule in self.rules.values():
                if rule.kind == SOURCE_KIND:
                    continue
                rows = rows_by_kind.get(rule.kind)
                active = self.alerts.get(rule.key)
                if rows is None and not any(a.source == source for a in (active or {}).values()):
                    continue
                self._evaluate(rule, rows or [], source, now, transitions, changed)
        else:
            # A failed poll freezes this source's alerts: nothing resolves, nothing starts.
            self._down_since.setdefault(source, snapshot.taken_at)
        source_row = self._source_row(snapshot, source, now)
        for rule in self.rules.values():
            if rule.kind == SOURCE_KIND:
                self._evaluate(rule, [source_row], source, now, transitions, changed)
        return self._finish(source, now, transitions, changed)

    def _finish(
        self, source: str, now: float, transitions: list[Transition], changed: dict[str, set[str]]
    ) -> list[Transition]:
        transitions += self._silence_changes(source, now)
        self._persist(changed)
        self._counts = self._count()
        for transition in transitions:
            if transition.kind in (PENDING, FIRING, "resolved") and not transition.silenced_by:
                muted = tuple(self.silencer.mutes(transition.alert.labels, now))
                if muted:
                    object.__setattr__(transition, "silenced_by", muted)
        self._publish(transitions)
        return transitions

    def _evaluate(
        self,
        rule: AlertingRule,
        rows: Sequence[_Row],
        source: str,
        now: float,
        transitions: list[Transition],
        changed: dict[str, set[str]],
    ) -> None:
        started = time.perf_counter()
        active = self.alerts.setdefault(rule.key, {})
        found, fps, errors = evaluate_rule(rule, active, rows, source, now, self.resolved_retention)
        transitions += found
        if fps:
            changed.setdefault(rule.key, set()).update(fps)
        health = self.health.setdefault(rule.key, RuleHealth())
        health.last_evaluation = now
        health.evaluation_seconds = time.perf_counter() - started
        if errors:
            if health.health != "err":
                log.error("rule evaluation error rule=%s error=%r", rule.key, errors[0])
            health.health, health.last_error = "err", errors[0]
        else:
            health.health, health.last_error = "ok", None

    def _rows(self, snapshot: Snapshot, source: str, now: float) -> dict[str, list[_Row]]:
        previous = self._previous.get(source, {})
        current: dict[Any, tuple[Mapping[str, FieldValue], float]] = {}
        rows: dict[str, list[_Row]] = {}
        wanted = {rule.kind for rule in self.rules.values()}
        for entity in snapshot.entities:
            if entity.kind not in wanted:
                continue  # no rule reads this kind: no context to build, no history to keep
            key = entity.key
            before = previous.get(key)
            ctx = EvalContext(
                fields=entity.fields,
                labels=entity.labels,
                previous=before[0] if before else None,
                previous_at=before[1] if before else None,
                taken_at=snapshot.taken_at,
                now=now,
            )
            rows.setdefault(entity.kind, []).append(_Row(entity, ctx))
            current[key] = (entity.fields, snapshot.taken_at)
        self._previous[source] = current
        return rows

    @staticmethod
    def _partial_rows(snapshot: Snapshot, now: float) -> dict[str, list[_Row]]:
        rows: dict[str, list[_Row]] = {}
        for entity in snapshot.entities:
            ctx = EvalContext(entity.fields, entity.labels, None, None, snapshot.taken_at, now)
            rows.setdefault(entity.kind, []).append(_Row(entity, ctx))
        return rows

    def _source_row(self, snapshot: Snapshot, source: str, now: float) -> _Row:
        entity = Entity(
            SOURCE_KIND,
            {"kind": snapshot.source.kind, "source": snapshot.source.name},
            {
                "up": snapshot.ok,
                "down_since": self._down_since.get(source),
                "last_error": snapshot.failure.message if snapshot.failure else None,
                "last_error_reason": snapshot.failure.reason if snapshot.failure else None,
                "entities": len(snapshot.entities),
                "poll_duration": snapshot.duration,
            },
        )
        ctx = EvalContext(entity.fields, entity.labels, None, None, snapshot.taken_at, now)
        return _Row(entity, ctx)

    def _silence_changes(self, source: str, now: float) -> list[Transition]:
        """`silenced` / `unsilenced` when a silence or window starts or ends over an active alert."""
        transitions = []
        for key, active in self.alerts.items():
            for fp, alert in active.items():
                if alert.source != source or alert.state == INACTIVE:
                    continue
                muted = tuple(self.silencer.mutes(alert.labels, now))
                before = self._muted.get((key, fp), ())
                if bool(muted) != bool(before):
                    kind = "silenced" if muted else "unsilenced"
                    transitions.append(
                        Transition(kind, replace(alert), self.rules[key], now, muted)
                    )
                if muted:
                    self._muted[(key, fp)] = muted
                else:
                    self._muted.pop((key, fp), None)
        return transitions

    def sources(self) -> set[str]:
        """Sources that some alert belongs to."""
        return {a.source for active in self.alerts.values() for a in active.values()}

    def forget_source(self, source: str) -> list[Transition]:
        """A source left the config: its firing alerts resolve (so receivers clear them), the
        rest are dropped, and none of them is restored after a restart."""
        now = self.clock()
        transitions: list[Transition] = []
        removed: list[tuple[str, str]] = []
        for key, active in self.alerts.items():
            for fp, alert in list(active.items()):
                if alert.source != source:
                    continue
                if alert.state == FIRING:
                    alert.state, alert.resolved_at = INACTIVE, now
                    transitions.append(Transition("resolved", replace(alert), self.rules[key], now))
                del active[fp]
                self._muted.pop((key, fp), None)
                removed.append((key, fp))
        self._previous.pop(source, None)
        self._down_since.pop(source, None)
        if removed and self.store is not None:
            self.store.save_alerts([], removed)
        self._counts = self._count()
        self._publish(transitions)
        return transitions

    # -- reading ------------------------------------------------------------------------------

    def active_alerts(self) -> list[tuple[Alert, tuple[str, ...]]]:
        now = self.clock()
        result = []
        for active in self.alerts.values():
            for alert in active.values():
                if alert.state != INACTIVE:
                    result.append((alert, tuple(self.silencer.mutes(alert.labels, now))))
        return sorted(result, key=lambda pair: (pair[0].alertname, pair[0].active_at))

    def counts(self) -> Mapping[tuple[str, str], int]:
        """Alerts per (alertname, state), as of the last evaluation. Read by /metrics from a
        worker thread, so it is a finished dict swapped in whole, never one being changed."""
        return self._counts

    def _count(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for rule_key, active in self.alerts.items():
            rule = self.rules.get(rule_key)
            if rule is None:
                continue
            for state in (PENDING, FIRING):
                counts.setdefault((rule.name, state), 0)
            for alert in active.values():
                if alert.state != INACTIVE:
                    counts[(rule.name, alert.state)] += 1
        return counts

    # -- persistence --------------------------------------------------------------------------

    def _persist(self, changed: Mapping[str, set[str]]) -> None:
        if self.store is None or not changed:
            return
        saved, removed = [], []
        for key, fps in changed.items():
            active = self.alerts.get(key, {})
            for fp in fps:
                alert = active.get(fp)
                if alert is None:
                    removed.append((key, fp))
                else:
                    saved.append(
                        StoredAlert(
                            key,
                            fp,
                            alert.source,
                            alert.state,
                            alert.labels,
                            alert.annotations,
                            alert.active_at,
                            alert.fired_at,
                            alert.resolved_at,
                            alert.last_sent_at,
                            alert.keep_firing_since,
                            None if alert.value is None else str(alert.value),
                        )
                    )
        self.store.save_alerts(saved, removed)

    def _restore(self, stored: Sequence[StoredAlert]) -> None:
        """Resume where the last process stopped: a firing alert is firing again with the same
        fingerprint and start, and no new `firing` transition is emitted for it."""
        now = self.clock()
        dropped = []
        for item in stored:
            rule = self.rules.get(item.rule)
            if rule is None:
                dropped.append((item.rule, item.fingerprint))
                continue
            alert = Alert(
                rule=item.rule,
                alertname=rule.name,
                source=item.source,
                fingerprint=item.fingerprint,
                labels=item.labels,
                annotations=item.annotations,
                state=item.state,
                active_at=item.active_at or now,
                fired_at=item.fired_at,
                resolved_at=item.resolved_at,
                keep_firing_since=item.keep_firing_since,
                last_sent_at=item.last_sent_at,
                value=item.value,
                not_before=now + min(RESTORE_GRACE, rule.hold) if item.state == PENDING else 0.0,
            )
            self.alerts.setdefault(item.rule, {})[item.fingerprint] = alert
            if alert.state != INACTIVE:
                # What muted it before the restart is the baseline: a silence that ends later
                # yields `unsilenced`, one that was already there yields nothing new.
                muted = tuple(self.silencer.mutes(alert.labels, now))
                if muted:
                    self._muted[(item.rule, item.fingerprint)] = muted
        if dropped and self.store is not None:
            self.store.save_alerts([], dropped)
        self._counts = self._count()
        restored = sum(len(a) for a in self.alerts.values())
        if restored:
            log.info("alert state restored alerts=%d", restored)
