"""The rule engine: feeds every snapshot to the state machine, freezes the alerts of a source
that is down, runs the built-in source-down rule, marks silenced alerts, and saves each alert's
new state together with its transitions (the outbox) in one SQLite transaction.

A transition is logged when it happens, whatever the disk says. When the state write fails
(disk full, read-only state directory) the engine counts it, reports it through `write_failing`
(so /readyz says not ready), keeps the unsaved states and transitions in memory in order, and
writes them on the next evaluation or `flush()`. So every transition reaches the outbox exactly
once: never twice, and never lost while the process lives. If the process dies before the write
succeeds, neither the alert's new state nor its transition was saved, so the restarted engine
derives the same change again and announces it then, once.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from monitor.alerting.evaluate import (
    BUILTIN_GROUP,
    FIRING,
    INACTIVE,
    PENDING,
    SOURCE_KIND,
    Alert,
    Change,
    Row,
    alert_context,
    builtin_rules,
    evaluate_rule,
)
from monitor.alerting.expr import EvalContext
from monitor.alerting.rules import AlertingRule, RuleGroup
from monitor.alerting.silences import Silencer
from monitor.alerting.transitions import AlertState, Transition, TransitionKind
from monitor.model import Entity, FieldValue, Snapshot, SourceRef, Target
from monitor.store import Store, StoredAlert

log = logging.getLogger(__name__)

RESTORE_GRACE = 60.0  # a restored pending alert fires no sooner than this after a restart
_ANNOUNCED = (TransitionKind.PENDING, TransitionKind.FIRING, TransitionKind.RESOLVED)
_WITH_ACTIONS = (TransitionKind.FIRING, TransitionKind.RESOLVED)

AlertKey = tuple[str, str]  # (rule key, fingerprint)


@dataclass
class RuleHealth:
    health: str = "unknown"
    last_error: str | None = None
    last_evaluation: float | None = None
    evaluation_seconds: float = 0.0


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
        on_saved: Callable[[], None] | None = None,
    ):
        self.store = store
        self.silencer = silencer
        self.clock = clock
        self.resolved_retention = resolved_retention
        # Called after transitions reached the outbox: wakes the consumers.
        self.on_saved = on_saved
        self.groups: list[RuleGroup] = []
        self.rules: dict[str, AlertingRule] = {}
        self.alerts: dict[str, dict[str, Alert]] = {}
        self.health: dict[str, RuleHealth] = {}
        self.write_errors = 0  # state writes that failed, for streamwatch_state_write_errors_total
        self.write_failing = False
        self._dirty: set[AlertKey] = set()
        self._unsaved: list[Transition] = []
        self._last_saved: list[Transition] = []
        self._previous: dict[str, dict[Any, tuple[Mapping[str, FieldValue], float]]] = {}
        self._down_since: dict[str, float] = {}
        self._muted: dict[AlertKey, tuple[str, ...]] = {}
        self._counts: Mapping[tuple[str, str], int] = {}
        self._counts_stale = True  # a rule was added or removed: recount at the next commit
        self.update_rules(groups, source_down_after)
        if store is not None:
            self._restore(store.load_alerts())

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
        changes: list[tuple[AlertingRule, Change]] = []
        dirty: set[AlertKey] = set()
        for key in [k for k in self.alerts if k not in self.rules]:
            removed = self.alerts.pop(key)
            for alert in removed.values():
                dirty.add((key, alert.fingerprint))
                self._muted.pop((key, alert.fingerprint), None)
                if alert.state == FIRING:
                    alert.state, alert.resolved_at = INACTIVE, now
                    changes.append((old_rules[key], _resolved(alert)))
        self.health = {key: self.health.get(key, RuleHealth()) for key in self.rules}
        self._counts_stale = True
        return self._commit(changes, dirty, now)

    # -- evaluation ---------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> list[Transition]:
        """Evaluate the rules over one snapshot; returns its transitions (with their outbox
        ids when the write succeeded)."""
        now = self.clock()
        source = str(snapshot.source)
        changes: list[tuple[AlertingRule, Change]] = []
        dirty: set[AlertKey] = set()
        if snapshot.partial:
            # Pushed events: only the rules over their kinds run, and nothing else of the
            # source is judged (or thought gone) from them.
            rows_by_kind = self._partial_rows(snapshot, now)
            for rule in self.rules.values():
                if rule.kind in rows_by_kind:
                    self._evaluate(
                        rule, rows_by_kind[rule.kind], snapshot.source, now, changes, dirty
                    )
            # A callback costs what its own alerts cost: silences are checked for those only.
            return self._finish(source, now, changes, dirty, only=dirty)
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
                self._evaluate(rule, rows or [], snapshot.source, now, changes, dirty)
        else:
            # A failed poll freezes this source's alerts: nothing resolves, nothing starts.
            self._down_since.setdefault(source, snapshot.taken_at)
        self._evaluate_source_rules(snapshot, now, changes, dirty)
        return self._finish(source, now, changes, dirty)

    def recheck_down(self, snapshot: Snapshot) -> list[Transition]:
        """Evaluate the source-down rule again over a source's last failed snapshot. A source
        that is not polled for a while (a Retry-After) brings no snapshot, yet the `for` of
        its StreamwatchSourceDown must still run out on time: the daemon calls this on a timer."""
        if snapshot.ok or snapshot.partial:
            return []
        now = self.clock()
        source = str(snapshot.source)
        self._down_since.setdefault(source, snapshot.taken_at)
        changes: list[tuple[AlertingRule, Change]] = []
        dirty: set[AlertKey] = set()
        self._evaluate_source_rules(snapshot, now, changes, dirty)
        return self._finish(source, now, changes, dirty)

    def _evaluate_source_rules(
        self,
        snapshot: Snapshot,
        now: float,
        changes: list[tuple[AlertingRule, Change]],
        dirty: set[AlertKey],
    ) -> None:
        source_row = self._source_row(snapshot, str(snapshot.source), now)
        for rule in self.rules.values():
            if rule.kind == SOURCE_KIND:
                self._evaluate(rule, [source_row], snapshot.source, now, changes, dirty)

    def _finish(
        self,
        source: str,
        now: float,
        changes: list[tuple[AlertingRule, Change]],
        dirty: set[AlertKey],
        only: set[AlertKey] | None = None,
    ) -> list[Transition]:
        changes += self._silence_changes(source, now, only)
        return self._commit(changes, dirty, now)

    def _evaluate(
        self,
        rule: AlertingRule,
        rows: Sequence[Row],
        source: SourceRef,
        now: float,
        changes: list[tuple[AlertingRule, Change]],
        dirty: set[AlertKey],
    ) -> None:
        started = time.perf_counter()
        active = self.alerts.get(rule.key)
        if active is None:
            active = self.alerts[rule.key] = {}
            self._counts_stale = True  # its zero counts appear from now on
        found, fps, errors = evaluate_rule(rule, active, rows, source, now, self.resolved_retention)
        changes += [(rule, change) for change in found]
        dirty.update((rule.key, fp) for fp in fps)
        health = self.health.setdefault(rule.key, RuleHealth())
        health.last_evaluation = now
        health.evaluation_seconds = time.perf_counter() - started
        if errors:
            if health.health != "err":
                log.error("rule evaluation error", extra={"rule": rule.key, "error": errors[0]})
            health.health, health.last_error = "err", errors[0]
        else:
            health.health, health.last_error = "ok", None

    def _rows(self, snapshot: Snapshot, source: str, now: float) -> dict[str, list[Row]]:
        previous = self._previous.get(source, {})
        current: dict[Any, tuple[Mapping[str, FieldValue], float]] = {}
        rows: dict[str, list[Row]] = {}
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
            rows.setdefault(entity.kind, []).append(Row(entity, ctx))
            current[key] = (entity.fields, snapshot.taken_at)
        self._previous[source] = current
        return rows

    @staticmethod
    def _partial_rows(snapshot: Snapshot, now: float) -> dict[str, list[Row]]:
        rows: dict[str, list[Row]] = {}
        for entity in snapshot.entities:
            ctx = EvalContext(entity.fields, entity.labels, None, None, snapshot.taken_at, now)
            rows.setdefault(entity.kind, []).append(Row(entity, ctx))
        return rows

    def _source_row(self, snapshot: Snapshot, source: str, now: float) -> Row:
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
        return Row(entity, ctx)

    def _silence_changes(
        self, source: str, now: float, only: set[AlertKey] | None = None
    ) -> list[tuple[AlertingRule, Change]]:
        """`silenced` / `unsilenced` when a silence or window starts or ends over an active
        alert of `source` (of those in `only`, when given)."""
        changes = []
        if only is None:
            candidates = (
                ((key, fp), alert)
                for key, active in self.alerts.items()
                for fp, alert in active.items()
            )
        else:
            candidates = (
                (k, a) for k in only if (a := self.alerts.get(k[0], {}).get(k[1])) is not None
            )
        for (key, fp), alert in candidates:
            if alert.source != source or alert.state == INACTIVE:
                continue
            muted = tuple(self.silencer.mutes(alert.labels, now))
            before = self._muted.get((key, fp), ())
            if bool(muted) != bool(before):
                kind = TransitionKind.SILENCED if muted else TransitionKind.UNSILENCED
                change = Change(kind, _copy(alert), alert.state, muted)
                changes.append((self.rules[key], change))
            if muted:
                self._muted[(key, fp)] = muted
            else:
                self._muted.pop((key, fp), None)
        return changes

    def sources(self) -> set[str]:
        """Sources that some alert belongs to."""
        return {a.source for active in self.alerts.values() for a in active.values()}

    def forget_source(self, source: str) -> list[Transition]:
        """A source left the config: its firing alerts resolve (so receivers clear them), the
        rest are dropped, and none of them is restored after a restart."""
        now = self.clock()
        changes: list[tuple[AlertingRule, Change]] = []
        dirty: set[AlertKey] = set()
        for key, active in self.alerts.items():
            for fp, alert in list(active.items()):
                if alert.source != source:
                    continue
                if alert.state == FIRING:
                    alert.state, alert.resolved_at = INACTIVE, now
                    changes.append((self.rules[key], _resolved(alert)))
                del active[fp]
                self._muted.pop((key, fp), None)
                dirty.add((key, fp))
        self._previous.pop(source, None)
        self._down_since.pop(source, None)
        return self._commit(changes, dirty, now)

    # -- transitions and the outbox -----------------------------------------------------------

    def _commit(
        self, changes: Sequence[tuple[AlertingRule, Change]], dirty: set[AlertKey], now: float
    ) -> list[Transition]:
        transitions = [self._transition(rule, change, now) for rule, change in changes]
        for transition in transitions:
            log.info("alert transition", extra=transition.log_fields())
        self._dirty |= dirty
        self._unsaved += transitions
        if dirty or transitions or self._counts_stale:
            self._counts, self._counts_stale = self._count(), False
        if not self.flush() or not transitions:
            return transitions
        # This call's transitions are the tail of what was just saved (earlier unsaved ones,
        # if a write had failed, come first).
        return self._last_saved[-len(transitions) :]

    def _transition(self, rule: AlertingRule, change: Change, now: float) -> Transition:
        alert = change.alert
        silenced_by = change.silenced_by
        if change.kind in _ANNOUNCED:
            silenced_by = tuple(self.silencer.mutes(alert.labels, now))
        actions: tuple[Mapping[str, Any], ...] = ()
        if change.kind in _WITH_ACTIONS and rule.actions:
            context = alert_context(rule, alert, alert.entity, now)
            actions = tuple(action.render(context) for action in rule.actions)
        return Transition(
            kind=change.kind,
            rule=alert.rule,
            alertname=alert.alertname,
            fingerprint=alert.fingerprint,
            from_state=change.from_state,
            to_state=alert.state,
            at=now,
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            target=alert.target,
            active_at=alert.active_at,
            fired_at=alert.fired_at,
            resolved_at=alert.resolved_at,
            value=None if alert.value is None else str(alert.value),
            actions=actions,
            dry_run=rule.dry_run,
            silenced_by=silenced_by,
        )

    def flush(self) -> bool:
        """Write the changed alert states and the unsaved transitions in one transaction.
        Returns False (and keeps both for the next try) when the write fails."""
        self._last_saved = []
        if self.store is None:
            self._last_saved, self._unsaved, self._dirty = self._unsaved, [], set()
            return True
        if not self._dirty and not self._unsaved:
            return True
        saved, removed = [], []
        for key, fp in self._dirty:
            alert = self.alerts.get(key, {}).get(fp)
            if alert is None:
                removed.append((key, fp))
            else:
                saved.append(_stored(alert))
        rows = [(t.at, t.kind.value, t.rule, t.fingerprint, t.to_json()) for t in self._unsaved]
        try:
            ids = self.store.save_alerts(saved, removed, rows)
        except sqlite3.Error as exc:
            self.write_errors += 1
            if not self.write_failing:
                log.error(
                    "state write failed",
                    extra={"error": str(exc), "unsaved_transitions": len(self._unsaved)},
                )
            self.write_failing = True
            return False
        if self.write_failing:
            log.info("state write recovered", extra={"saved_transitions": len(rows)})
        self.write_failing = False
        self._last_saved = [t.with_id(i) for t, i in zip(self._unsaved, ids, strict=True)]
        self._unsaved, self._dirty = [], set()
        if self._last_saved and self.on_saved is not None:
            self.on_saved()
        return True

    @property
    def unsaved(self) -> int:
        """Transitions logged but not yet in the outbox (the state write is failing)."""
        return len(self._unsaved)

    # -- reading ------------------------------------------------------------------------------

    def active_alerts(self, *, resolved: bool = False) -> list[tuple[Alert, tuple[str, ...]]]:
        """Pending and firing alerts with what silences them; with `resolved`, also the
        resolved ones still kept for `resolved_retention`."""
        now = self.clock()
        result = []
        for active in self.alerts.values():
            for alert in active.values():
                if alert.state != INACTIVE or (resolved and alert.resolved_at is not None):
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
                counts.setdefault((rule.name, state.value), 0)
            for alert in active.values():
                if alert.state != INACTIVE:
                    counts[(rule.name, alert.state.value)] += 1
        return counts

    # -- restore ------------------------------------------------------------------------------

    def _restore(self, stored: Sequence[StoredAlert]) -> None:
        """Resume where the last process stopped: a firing alert is firing again with the same
        fingerprint, start and target, and no new `firing` transition is emitted for it."""
        now = self.clock()
        dropped = []
        for item in stored:
            rule = self.rules.get(item.rule)
            if rule is None:
                dropped.append((item.rule, item.fingerprint))
                continue
            state = AlertState(item.state)
            alert = Alert(
                rule=item.rule,
                alertname=rule.name,
                source=item.source,
                fingerprint=item.fingerprint,
                target=_target(item, rule),
                labels=item.labels,
                annotations=item.annotations,
                state=state,
                active_at=item.active_at or now,
                fired_at=item.fired_at,
                resolved_at=item.resolved_at,
                keep_firing_since=item.keep_firing_since,
                last_sent_at=item.last_sent_at,
                value=item.value,
                not_before=now + min(RESTORE_GRACE, rule.hold) if state == PENDING else 0.0,
            )
            self.alerts.setdefault(item.rule, {})[item.fingerprint] = alert
            if alert.state != INACTIVE:
                # What muted it before the restart is the baseline: a silence that ends later
                # yields `unsilenced`, one that was already there yields nothing new.
                muted = tuple(self.silencer.mutes(alert.labels, now))
                if muted:
                    self._muted[(item.rule, item.fingerprint)] = muted
        self._dirty.update(dropped)
        self.flush()
        self._counts = self._count()
        restored = sum(len(a) for a in self.alerts.values())
        if restored:
            log.info("alert state restored", extra={"alerts": restored})


def _copy(alert: Alert) -> Alert:
    return replace(alert)


def _resolved(alert: Alert) -> Change:
    return Change(TransitionKind.RESOLVED, _copy(alert), FIRING)


def _stored(alert: Alert) -> StoredAlert:
    return StoredAlert(
        alert.rule,
        alert.fingerprint,
        alert.source,
        alert.state.value,
        alert.labels,
        alert.annotations,
        alert.active_at,
        alert.fired_at,
        alert.resolved_at,
        alert.last_sent_at,
        alert.keep_firing_since,
        None if alert.value is None else str(alert.value),
        alert.target.to_json(),
    )


def _target(item: StoredAlert, rule: AlertingRule) -> Target:
    if item.target is not None:
        return Target.from_json(item.target)
    # A row saved before targets were: the entity's labels are the alert's, less the rule's.
    labels = {k: v for k, v in item.labels.items() if k != "alertname" and k not in rule.labels}
    return Target(SourceRef.parse(item.source), rule.kind, labels)
