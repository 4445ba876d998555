"""The action protocol: what an alert's action can ask of the upstream that owns an entity.

A verb is looked up by entity kind and name (`registry.verb("ome.stream", "restart")`), so the
action runner never asks which vendor an entity came from. It is called with the source that
owns the entity, the entity's identity labels, and the action's parameters from the rule:

    result = await verb(source, entity.labels, params)

A verb reads the parameters it needs and ignores those that belong to the runner (`after`,
`duration`, `verify_timeout`, `on_resolve`, the guard's keys). Keys starting with `_` are the
runner's hooks, never a rule's: `_sleep` (the runner's sleep, so that tests can move a fake
clock). Names with a dot are the runner's helpers: `restart.verify` (has the restart worked?),
`hls_dump.stop`, `hls_dump.status`. It raises SourceError when an upstream call fails
(so the runner can count it by `reason` and honour a Retry-After) and ValueError when the labels
or parameters do not name something it can act on; it returns a VerbResult otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from monitor.model import Entity
from monitor.sources.base import Source

S = TypeVar("S", bound=Source)


@dataclass(frozen=True)
class VerbResult:
    """`ok`: the upstream did what was asked. `detail`: one line for the audit trail (no
    secret). `entity`: the entity as the upstream reported it afterwards, when it did."""

    ok: bool
    detail: str
    entity: Entity | None = None


Verb = Callable[[Source, Mapping[str, str], Mapping[str, Any]], Awaitable[VerbResult]]
# entity kind → verb name → verb
VerbTable = Mapping[str, Mapping[str, Verb]]


def runner_sleep(params: Mapping[str, Any]) -> Callable[[float], Awaitable[None]]:
    """The sleep the runner handed a verb that waits (`_sleep`), else asyncio's."""
    sleep = params.get("_sleep")
    return sleep if callable(sleep) else asyncio.sleep


def require(labels: Mapping[str, str], *names: str) -> tuple[str, ...]:
    """The values of `names` in an entity's labels; ValueError naming the first one missing."""
    missing = [name for name in names if not labels.get(name)]
    if missing:
        raise ValueError(f"entity labels lack {', '.join(missing)}")
    return tuple(labels[name] for name in names)


def source_of(source: Source, cls: type[S]) -> S:
    """`source` as the vendor's class; TypeError when a verb was handed another vendor's."""
    if not isinstance(source, cls):
        raise TypeError(f"{cls.__name__} verb called with {type(source).__name__}")
    return source
