"""The transition: one change of one alert, as saved in the outbox and read by every consumer.

A transition is self-contained. It carries the alert's labels and annotations as they were at
the change, its target (source, entity kind, entity labels) and the rule's actions with their
templates already rendered, so a consumer that reads it a day later, after a restart or a
reload that removed the rule, still has everything it needs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from monitor.model import Target


class TransitionKind(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    SILENCED = "silenced"
    UNSILENCED = "unsilenced"


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


@dataclass(frozen=True)
class Transition:
    kind: TransitionKind
    rule: str  # "group/alertname", the rule's identity across reloads
    alertname: str
    fingerprint: str
    from_state: AlertState
    to_state: AlertState
    at: float
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    target: Target
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    value: str | None = None
    # The rule's actions, parameters rendered for this alert: ({"action": ..., "params": ...},)
    actions: tuple[Mapping[str, Any], ...] = ()
    dry_run: bool | None = None  # the rule's own dry_run, None when it does not say
    silenced_by: tuple[str, ...] = ()
    # Its place in the outbox: set once saved, increasing, stable across restarts. Consumers
    # hand it to receivers as the delivery id, so a repeat after a crash can be recognised.
    id: int | None = field(default=None, compare=False)

    @property
    def silenced(self) -> bool:
        return bool(self.silenced_by)

    @property
    def starts_at(self) -> float:
        return self.fired_at if self.fired_at is not None else self.active_at

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind.value,
                "rule": self.rule,
                "alertname": self.alertname,
                "fingerprint": self.fingerprint,
                "from": self.from_state.value,
                "to": self.to_state.value,
                "at": self.at,
                "labels": dict(self.labels),
                "annotations": dict(self.annotations),
                "target": self.target.to_json(),
                "activeAt": self.active_at,
                "firedAt": self.fired_at,
                "resolvedAt": self.resolved_at,
                "value": self.value,
                "actions": [dict(a) for a in self.actions],
                "dryRun": self.dry_run,
                "silencedBy": list(self.silenced_by),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, id: int | None = None) -> Transition:
        data = json.loads(text)
        return cls(
            kind=TransitionKind(data["kind"]),
            rule=data["rule"],
            alertname=data["alertname"],
            fingerprint=data["fingerprint"],
            from_state=AlertState(data["from"]),
            to_state=AlertState(data["to"]),
            at=data["at"],
            labels=data["labels"],
            annotations=data["annotations"],
            target=Target.from_json(data["target"]),
            active_at=data["activeAt"],
            fired_at=data["firedAt"],
            resolved_at=data["resolvedAt"],
            value=data["value"],
            actions=tuple(data["actions"]),
            dry_run=data["dryRun"],
            silenced_by=tuple(data["silencedBy"]),
            id=id,
        )

    def with_id(self, id: int) -> Transition:
        return replace(self, id=id)

    def log_fields(self) -> dict[str, Any]:
        """The fields of this transition's log line."""
        fields: dict[str, Any] = {
            "transition": self.kind.value,
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "source": str(self.target.source),
            "labels": ",".join(
                f"{k}={v}" for k, v in sorted(self.labels.items()) if k != "alertname"
            ),
        }
        if self.silenced_by:
            fields["silenced_by"] = ",".join(self.silenced_by)
        return fields


def iso(ts: float | None) -> str | None:
    """RFC 3339 with milliseconds, UTC, as Prometheus's and Alertmanager's APIs write times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
