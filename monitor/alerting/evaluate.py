"""The alert state machine, after Prometheus's `rules/alerting.go`.

`evaluate_rule` is a function of (rule, active alerts, entities, now) that returns the changes
it made: it reads no clock, saves nothing and sends nothing. The engine turns those changes into
saved transitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from monitor.alerting.expr import EvalContext, compile_expr
from monitor.alerting.rules import AlertingRule, RuleGroup
from monitor.alerting.templates import Template, compile_template, template_context
from monitor.alerting.transitions import AlertState, TransitionKind, iso
from monitor.model import Entity, SourceRef, Target, fingerprint

PENDING = AlertState.PENDING
FIRING = AlertState.FIRING
INACTIVE = AlertState.INACTIVE

SOURCE_KIND = "streamwatch.source"
SOURCE_DOWN = "StreamwatchSourceDown"
REMEDIATION_KIND = "streamwatch.remediation"  # pushed by the action runner
REMEDIATION_EXHAUSTED = "StreamwatchRemediationExhausted"
BUILTIN_GROUP = "streamwatch-builtin"


@dataclass
class Alert:
    rule: str  # AlertingRule.key
    alertname: str
    source: str  # the source whose snapshots decide this alert
    fingerprint: str
    target: Target
    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None
    last_sent_at: float | None = None
    value: Any = None
    # The entity as last seen; None for an alert restored after a restart until its source
    # reports it again (its target says which entity it is meanwhile).
    entity: Entity | None = field(default=None, repr=False)
    not_before: float = 0.0  # restored pending alerts wait out a grace period

    def to_api(self, silenced_by: Sequence[str]) -> dict[str, Any]:
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            # A resolved alert stays listed for resolved_retention, with its endsAt.
            "state": "resolved" if self.state == INACTIVE else self.state.value,
            "activeAt": iso(self.active_at),
            "startsAt": iso(self.fired_at if self.fired_at is not None else self.active_at),
            "endsAt": iso(self.resolved_at) if self.resolved_at is not None else None,
            "value": None if self.value is None else str(self.value),
            "fingerprint": self.fingerprint,
            "silenced": bool(silenced_by),
            "silencedBy": list(silenced_by),
            "source": self.source,
            "target": self.target.to_json(),
        }


@dataclass(frozen=True)
class Change:
    """One change `evaluate_rule` made to one alert; `alert` is a copy taken at that moment."""

    kind: TransitionKind
    alert: Alert
    from_state: AlertState
    silenced_by: tuple[str, ...] = ()


@dataclass(slots=True)
class Row:
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


def render(templates: Mapping[str, Template], context: Mapping[str, Any]) -> dict[str, str]:
    return {name: template.render(context) for name, template in templates.items()}


def alert_context(
    rule: AlertingRule, alert: Alert, entity: Entity | None, now: float
) -> dict[str, Any]:
    """What the templates of `alert` see. An alert restored without its entity yet sees its
    target's labels and no fields."""
    return template_context(
        labels=entity.labels if entity is not None else alert.target.labels,
        fields=entity.fields if entity is not None else {},
        alertname=rule.name,
        value=alert.value,
        fired_at=alert.fired_at,
        now=now,
    )


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
    rows: Iterable[Row],
    source: SourceRef,
    now: float,
    resolved_retention: float,
) -> tuple[list[Change], set[str], list[str]]:
    """One evaluation of `rule` over one source's entities. Mutates `active` (fingerprint →
    alert); returns (changes, fingerprints whose saved state changed, errors)."""
    changes: list[Change] = []
    changed: set[str] = set()
    errors: list[str] = []
    seen: set[str] = set()
    source_name = str(source)
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
            annotations = render(rule.annotations, _context(rule, entity, value, None, now))
            alert = Alert(
                rule.key,
                rule.name,
                source_name,
                fp,
                Target.of(source, entity),
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
                changes.append(Change(TransitionKind.PENDING, replace(alert), INACTIVE))
        else:
            alert.value, alert.entity = value, entity
            # Re-rendered at every evaluation, as Prometheus does, so an annotation says what
            # is true now (a source-down alert names today's cause, not the first one). Not
            # saved for that alone: the next evaluation renders it again anyway.
            if rule.annotations:
                alert.annotations = render(
                    rule.annotations, _context(rule, entity, value, alert.fired_at, now)
                )
            if alert.keep_firing_since is not None:
                alert.keep_firing_since = None
                changed.add(fp)
        if (
            alert.state == PENDING
            and now - alert.active_at >= rule.hold
            and now >= alert.not_before
        ):
            # A rule without `for` fires at once: its alert was never announced as pending.
            before = PENDING if rule.hold > 0 else INACTIVE
            alert.state, alert.fired_at = FIRING, now
            alert.annotations = render(rule.annotations, _context(rule, entity, value, now, now))
            changed.add(fp)
            changes.append(Change(TransitionKind.FIRING, replace(alert), before))
    for fp, alert in list(active.items()):
        if fp in seen or alert.source != source_name:
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
                changes.append(Change(TransitionKind.RESOLVED, replace(alert), FIRING))
        elif alert.resolved_at is not None and now - alert.resolved_at >= resolved_retention:
            del active[fp]
            changed.add(fp)
    return changes, changed, errors


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
    exhausted = AlertingRule(
        name=REMEDIATION_EXHAUSTED,
        group=BUILTIN_GROUP,
        file="(built in)",
        line=0,
        kind=REMEDIATION_KIND,
        expr=compile_expr("exhausted"),
        hold=0.0,
        keep_firing_for=0.0,
        labels={"severity": compile_template("warning")},
        annotations={
            "summary": compile_template(
                "{{ action }} of {{ target_kind }} on {{ source }} used up its budget"
            ),
            "description": compile_template(
                "{{ budget }} attempts within {{ budget_window | int }}s did not help; "
                "the target is left alone until the window frees up or it recovers"
            ),
        },
        static_labels={"severity": "warning"},
    )
    return RuleGroup(BUILTIN_GROUP, "(built in)", (rule, exhausted))
