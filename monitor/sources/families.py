"""Metric families as data: the `Family` description the exporter renders, and the generic
value functions vendor tables are made of (peblar's sensor descriptions in Home Assistant are
the model). Each upstream declares its families in its own `families.py`; the exporter renders
whatever the registry lists and knows no vendor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from monitor.model import Entity

# One sample of a family for one entity: the values of the family's extra labels, and the value.
Sample = tuple[tuple[str, ...], float]
ValueFn = Callable[[Entity], Iterable[Sample]]


@dataclass(frozen=True)
class Family:
    name: str
    type: Literal["gauge", "counter"]
    help: str
    kind: str
    labels: tuple[str, ...]  # entity identity labels, in this order
    values: ValueFn
    extra_labels: tuple[str, ...] = ()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def scalar(field: str) -> ValueFn:
    def values(entity: Entity) -> Iterator[Sample]:
        value = entity.fields.get(field)
        if _is_number(value):
            yield (), float(value)

    return values


def per_key(field: str) -> ValueFn:
    """One sample per key of an open map field (OME's `connections`), zeros included."""

    def values(entity: Entity) -> Iterator[Sample]:
        mapping = entity.fields.get(field)
        if isinstance(mapping, Mapping):
            for key, value in mapping.items():
                yield (str(key),), float(value)

    return values


def info(*fields: str) -> ValueFn:
    def values(entity: Entity) -> Iterator[Sample]:
        yield (
            tuple(
                "" if entity.fields.get(f) is None else str(entity.fields.get(f)) for f in fields
            ),
            1.0,
        )

    return values


def state_set(field: str, known: Sequence[str]) -> ValueFn:
    """1 for the current state, 0 for every other known one. An unknown current value is
    exported too (upstreams add states without telling us)."""

    def values(entity: Entity) -> Iterator[Sample]:
        current = entity.fields.get(field)
        if current is None:
            return
        current = str(current)
        for state in known:
            yield (state,), 1.0 if state == current else 0.0
        if current not in known:
            yield (current,), 1.0

    return values


def track_detail(field: str) -> ValueFn:
    """One sample per input track of a stream (its `tracks` field), labelled track, type, codec."""

    def values(entity: Entity) -> Iterator[Sample]:
        for track in entity.fields.get("tracks") or ():
            value = track.get(field)
            if _is_number(value):
                yield (track["track"], track["type"], track["codec"]), float(value)

    return values


def only_present(fn: ValueFn) -> ValueFn:
    def values(entity: Entity) -> Iterable[Sample]:
        return fn(entity) if entity.present else ()

    return values
