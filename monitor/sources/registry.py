"""The upstreams streamwatch knows, as descriptors (`Upstream`): the one list that config,
exporter, rule loading, the source manager and the action runner read. Adding an upstream is
one vendor package plus one line here.

    upstreams()                       every descriptor, in config order
    descriptor("ome")                 one, by kind (KeyError if unknown)
    entity_kinds()                    every entity kind, plus "streamwatch.source"
    families()                        every metric family, upstream by upstream
    source_configs(config.sources)    {(kind, name): config entry}, in config order
    build_source(kind, config, ctx)   a Source
    verb("ome.stream", "restart")     a Verb, or None
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from monitor.sources import naver, ome, smartstream
from monitor.sources.base import Source, SourceContext, Upstream
from monitor.sources.families import Family
from monitor.sources.verbs import Verb

__all__ = [
    "SOURCE_KIND",
    "Upstream",
    "build_source",
    "descriptor",
    "entity_kinds",
    "families",
    "source_configs",
    "upstreams",
    "verb",
    "verbs",
]

# The daemon's own entity kind: one per configured source (its health), for rules such as
# the built-in StreamwatchSourceDown.
SOURCE_KIND = "streamwatch.source"
# Entities the action runner pushes about targets whose remediation budget is spent.
REMEDIATION_KIND = "streamwatch.remediation"

_UPSTREAMS: tuple[Upstream, ...] = (ome.UPSTREAM, smartstream.UPSTREAM, naver.UPSTREAM)
_BY_KIND: dict[str, Upstream] = {u.kind: u for u in _UPSTREAMS}
_BY_ENTITY_KIND: dict[str, Upstream] = {k: u for u in _UPSTREAMS for k in u.entity_kinds}
assert len(_BY_KIND) == len(_UPSTREAMS), "two upstreams share a kind"


def upstreams() -> tuple[Upstream, ...]:
    return _UPSTREAMS


def descriptor(kind: str) -> Upstream:
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise KeyError(f"unknown source kind {kind!r} (known: {', '.join(_BY_KIND)})") from None


def entity_kinds() -> tuple[str, ...]:
    """Every entity kind a source emits, plus the daemon's own. Rule files are checked against
    it, so that a typo (`ome.streams`) is an error, not a rule that silently never matches."""
    return (*_BY_ENTITY_KIND, SOURCE_KIND, REMEDIATION_KIND)


def families() -> tuple[Family, ...]:
    return tuple(family for upstream in _UPSTREAMS for family in upstream.families)


def source_configs(config: Any) -> dict[tuple[str, str], BaseModel]:
    """(kind, name) → that source's config, in config order; a reload compares these.
    `config` is the config file's `sources` section (monitor.config.SourcesConfig)."""
    return {
        (upstream.kind, entry.name): entry
        for upstream in _UPSTREAMS
        for entry in getattr(config, upstream.kind)
    }


def build_source(kind: str, config: BaseModel, context: SourceContext) -> Source:
    upstream = descriptor(kind)
    if not isinstance(config, upstream.config_model):
        raise TypeError(f"{kind} source needs a {upstream.config_model.__name__}")
    return upstream.factory(config, context)


def verbs(entity_kind: str) -> Mapping[str, Verb]:
    """The verbs of one entity kind (empty for a kind without any, or an unknown one)."""
    upstream = _BY_ENTITY_KIND.get(entity_kind)
    return upstream.verbs.get(entity_kind, {}) if upstream is not None else {}


def verb(entity_kind: str, name: str) -> Verb | None:
    return verbs(entity_kind).get(name)
