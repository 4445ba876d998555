"""One module per upstream. `build_source` turns one configured source into its client."""

from __future__ import annotations

from pydantic import BaseModel

from monitor.config import SourcesConfig
from monitor.sources.base import Source, SourceContext

KINDS = ("ome", "smartstream", "naver")

# Every entity kind a source emits, plus the daemon's own; rule files are checked against it
# so that a typo (`ome.streams`) is an error, not a rule that silently never matches.
ENTITY_KINDS = (
    "ome.vhost",
    "ome.app",
    "ome.stream",
    "ome.push",
    "ome.record",
    "smartstream.live_event",
    "smartstream.job",
    "naver.channel",
    "naver.event",
    "streamwatch.source",
)


def source_configs(config: SourcesConfig) -> dict[tuple[str, str], BaseModel]:
    """(kind, name) → that source's config, in config order; a reload compares these."""
    return {(kind, c.name): c for kind in KINDS for c in getattr(config, kind)}


def build_source(kind: str, config: BaseModel, context: SourceContext) -> Source:
    # Imported here so that importing one vendor module does not import the others.
    if kind == "ome":
        from monitor.sources.ome import OmeSource

        return OmeSource(config, context)  # type: ignore[arg-type]
    if kind == "smartstream":
        from monitor.sources.smartstream import SmartstreamSource

        return SmartstreamSource(config, context)  # type: ignore[arg-type]
    if kind == "naver":
        from monitor.sources.naver import NaverSource

        return NaverSource(config, context)  # type: ignore[arg-type]
    raise ValueError(f"unknown source kind {kind!r}")
