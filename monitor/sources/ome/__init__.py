"""OvenMediaEngine (REST API v1): `client` speaks HTTP, `source` maps polls to entities,
`families` and `actions` are its metrics and verbs, `config` its settings."""

from monitor.sources.base import Upstream
from monitor.sources.ome.actions import VERBS
from monitor.sources.ome.config import OmeSourceConfig
from monitor.sources.ome.families import FAMILIES
from monitor.sources.ome.source import ENTITY_KINDS, OmeSource

UPSTREAM = Upstream(
    kind="ome",
    config_model=OmeSourceConfig,
    entity_kinds=ENTITY_KINDS,
    families=FAMILIES,
    factory=OmeSource,
    verbs=VERBS,
)

__all__ = ["UPSTREAM"]
