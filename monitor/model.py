"""The one data model every stage reads: entities and the snapshots that carry them.

An entity is one observed thing (a stream, a live event, a channel, an event). Its identity is
its kind plus its labels; everything else it knows is in `fields`. Exporter and rule engine both
read entities and nothing else, so neither needs to know which vendor an entity came from beyond
its `kind`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Union

# A field holds a number, a string, a flag, nothing, a small open map of numbers (OME's
# per-protocol `connections`, whose keys change between OME versions), or a tuple of small
# records (an OME stream's input `tracks`).
FieldValue = Union[int, float, str, bool, None, Mapping[str, float], tuple[Mapping[str, Any], ...]]  # noqa: UP007


def fingerprint(labels: Mapping[str, str]) -> str:
    """A digest of a label set that is the same in every process (unlike `hash()`)."""
    digest = hashlib.sha256()
    for key in sorted(labels):
        digest.update(key.encode())
        digest.update(b"\xff")
        digest.update(str(labels[key]).encode())
        digest.update(b"\xff")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Entity:
    """One observed thing. `labels` identify it; `fields` describe it.

    Every entity has a `present` field: True when the upstream reported it, False when it is
    expected by the config but was not seen.
    """

    kind: str
    labels: Mapping[str, str]
    fields: Mapping[str, FieldValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fields = dict(self.fields)
        fields.setdefault("present", True)
        labels = {k: str(v) for k, v in self.labels.items()}
        # The copies above are private to this entity, so a read-only view needs no second copy.
        object.__setattr__(self, "labels", MappingProxyType(labels))
        object.__setattr__(self, "fields", MappingProxyType(fields))

    @property
    def key(self) -> str:
        """Identity usable as a dict key: kind plus sorted labels, as one string (a string
        caches its hash; a tuple of tuples is hashed again on every lookup). Not stored: a
        poll of 10,000 streams makes 30,000 entities, and only those some rule reads need it."""
        return "\x1f".join([self.kind, *(f"{k}\x1e{v}" for k, v in sorted(self.labels.items()))])

    @property
    def fingerprint(self) -> str:
        return fingerprint({"__kind__": self.kind, **self.labels})

    @property
    def present(self) -> bool:
        return bool(self.fields.get("present", True))


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Which configured source a snapshot came from: its kind (`ome`, `smartstream`, `naver`)
    and the name the operator gave it."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> SourceRef:
        """`"ome/origin-1"` → SourceRef("ome", "origin-1"); the inverse of `str()`."""
        kind, sep, name = text.partition("/")
        if not sep or not kind or not name:
            raise ValueError(f"not a source reference: {text!r}")
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Target:
    """What an alert is about: the source that observes it, and the entity's kind and identity
    labels. Saved with the alert and with every transition, so that after a restart the
    notifiers and the action runner still know which stream, live event or channel it is."""

    source: SourceRef
    kind: str
    labels: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    @classmethod
    def of(cls, source: SourceRef, entity: Entity) -> Target:
        return cls(source, entity.kind, entity.labels)

    def to_json(self) -> dict[str, Any]:
        return {"source": str(self.source), "kind": self.kind, "labels": dict(self.labels)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        return cls(SourceRef.parse(data["source"]), data["kind"], data["labels"])


@dataclass(frozen=True, slots=True)
class PollFailure:
    """Why a poll failed: a short machine reason (the failure class, a label value), a human
    message that carries no secret, and the vendor's error code ("" when none)."""

    reason: str
    message: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """All entities of one source at one instant, or the failure that prevented it."""

    source: SourceRef
    taken_at: float
    entities: tuple[Entity, ...] = ()
    failure: PollFailure | None = None
    duration: float = 0.0
    # A partial snapshot carries only what an upstream pushed (NAVER callback events); it says
    # nothing about the source's other entities, which must not be taken as gone.
    partial: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    @classmethod
    def of(
        cls, source: SourceRef, taken_at: float, entities: Iterable[Entity], duration: float = 0.0
    ) -> Snapshot:
        return cls(source=source, taken_at=taken_at, entities=tuple(entities), duration=duration)

    @classmethod
    def failed(
        cls, source: SourceRef, taken_at: float, failure: PollFailure, duration: float = 0.0
    ) -> Snapshot:
        return cls(source=source, taken_at=taken_at, failure=failure, duration=duration)
