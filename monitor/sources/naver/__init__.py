"""NAVER Cloud Live Station: `client` speaks HTTP (signature v2, paging), `source` maps polls
and callbacks to entities and runs channel actions, `families` and `actions` are its metrics
and verbs, `config` its settings."""

from monitor.sources.base import Upstream
from monitor.sources.naver.actions import VERBS
from monitor.sources.naver.config import NaverSourceConfig
from monitor.sources.naver.families import FAMILIES
from monitor.sources.naver.source import ENTITY_KINDS, NaverSource, parse_callback_body

UPSTREAM = Upstream(
    kind="naver",
    config_model=NaverSourceConfig,
    entity_kinds=ENTITY_KINDS,
    families=FAMILIES,
    factory=NaverSource,
    verbs=VERBS,
)

__all__ = ["UPSTREAM", "parse_callback_body"]
