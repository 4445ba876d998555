"""SmartSTREAM Live API (and Ingest API jobs): `client` speaks HTTP (token, budget, paging),
`source` maps polls to entities and runs live event actions, `families` and `actions` are its
metrics and verbs, `config` its settings."""

from monitor.sources.base import Upstream
from monitor.sources.smartstream.actions import VERBS
from monitor.sources.smartstream.config import SmartstreamSourceConfig
from monitor.sources.smartstream.families import FAMILIES
from monitor.sources.smartstream.source import ENTITY_KINDS, SmartstreamSource

UPSTREAM = Upstream(
    kind="smartstream",
    config_model=SmartstreamSourceConfig,
    entity_kinds=ENTITY_KINDS,
    families=FAMILIES,
    factory=SmartstreamSource,
    verbs=VERBS,
)

__all__ = ["UPSTREAM"]
