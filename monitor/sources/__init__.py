"""The upstreams: one package per vendor (`ome/`, `smartstream/`, `naver/`), each shaped the
same (client, source, families, actions, config), the shared HTTP layer (`http`), and the
registry that lists them. The names below are the registry's, kept here for callers."""

from monitor.sources.registry import build_source, entity_kinds, source_configs, upstreams

KINDS = tuple(upstream.kind for upstream in upstreams())

# Every entity kind a source emits, plus the daemon's own (see registry.entity_kinds).
ENTITY_KINDS = entity_kinds()

__all__ = ["ENTITY_KINDS", "KINDS", "build_source", "source_configs"]
