"""The upstream registry: one descriptor per upstream, and everything that used to keep its own
list of kinds (config, exporter, rule kinds, source building) reads it."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from monitor.config import ConfigError, SourcesConfig, load_config
from monitor.export import FAMILIES, Exporter
from monitor.model import Entity, Snapshot, SourceRef
from monitor.sources import ENTITY_KINDS, KINDS, registry
from monitor.sources.base import Source, SourceContext, SourceMetrics, Upstream
from monitor.sources.families import Family, scalar
from monitor.sources.settings import SourceConfig

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()

MINIMAL = {
    "ome": {"name": "o", "url": "http://127.0.0.1:1", "access_token": "t"},
    "smartstream": {"name": "s", "merchant_id": "m", "api_key": "k", "token": "t"},
    "naver": {"name": "n", "access_key": "a", "secret_key": "s"},
}


def test_entity_kinds_cover_the_readme_table():
    section = README[README.index("## Entities") :]
    section = section[: section.index("\n## ")]
    documented = {
        kind
        for row in section.splitlines()
        if row.startswith("| `")
        for kind in re.findall(r"`([a-z_]+\.[a-z_]+)`", row.split("|")[1])
    }
    assert set(registry.entity_kinds()) == documented
    assert registry.entity_kinds() == ENTITY_KINDS and "streamwatch.source" in ENTITY_KINDS


def test_each_descriptor_is_whole_and_consistent():
    assert KINDS == ("ome", "smartstream", "naver")
    assert [u.kind for u in registry.upstreams()] == list(KINDS)
    names = [f.name for f in registry.families()]
    assert len(names) == len(set(names)), "two families share a name"
    assert registry.families() == FAMILIES
    context = SourceContext(metrics=SourceMetrics(CollectorRegistry()))
    for upstream in registry.upstreams():
        assert registry.descriptor(upstream.kind) is upstream
        assert issubclass(upstream.config_model, SourceConfig)
        assert {f.kind for f in upstream.families} <= set(upstream.entity_kinds)
        config = upstream.config_model.model_validate(MINIMAL[upstream.kind])
        source = registry.build_source(upstream.kind, config, context)
        assert isinstance(source, Source) and source.ref == SourceRef(upstream.kind, config.name)
        for entity_kind, table in upstream.verbs.items():
            assert entity_kind in upstream.entity_kinds
            for name, verb in table.items():
                assert registry.verb(entity_kind, name) is verb


def test_lookups_of_unknown_things():
    with pytest.raises(KeyError, match="unknown source kind 'nope'"):
        registry.descriptor("nope")
    assert registry.verb("ome.stream", "restart") is not None
    assert registry.verb("ome.stream", "reboot") is None
    assert registry.verb("ome.push", "restart") is not None
    assert registry.verb("ome.record", "restart") is not None
    assert registry.verb("nope.kind", "restart") is None
    assert registry.verbs("naver.event") == {}
    config = registry.descriptor("ome").config_model.model_validate(MINIMAL["ome"])
    context = SourceContext(metrics=SourceMetrics(CollectorRegistry()))
    with pytest.raises(TypeError):
        registry.build_source("naver", config, context)


def test_a_descriptor_that_does_not_add_up_is_refused():
    ome = registry.descriptor("ome")
    with pytest.raises(ValueError, match=r"lacks 'ome\.'"):
        replace(ome, entity_kinds=(*ome.entity_kinds, "other.thing"))
    with pytest.raises(ValueError, match="family"):
        replace(ome, entity_kinds=("ome.stream",))
    with pytest.raises(ValueError, match="verbs for unknown entity kind"):
        replace(ome, verbs={"ome.nothing": {}})


def test_sources_config_has_one_list_per_upstream():
    assert list(SourcesConfig.model_fields) == list(KINDS)
    empty = SourcesConfig.model_validate({"ome": None})
    assert (empty.ome, empty.smartstream, empty.naver) == ([], [], [])
    sources = SourcesConfig.model_validate({kind: [MINIMAL[kind]] for kind in KINDS})
    configs = registry.source_configs(sources)
    assert list(configs) == [("ome", "o"), ("smartstream", "s"), ("naver", "n")]
    assert all(isinstance(c, BaseModel) for c in configs.values())


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ("  omee: []\n", ":2: sources.omee: unknown key"),
        (
            "  ome:\n    - {name: o, url: 'http://h', access_token: t, timout: 5s}\n",
            ":3: sources.ome[0].timout: unknown key",
        ),
        (
            "  smartstream:\n    - {name: s, merchant_id: m, api_key: k, token: t, jobz: true}\n",
            ":3: sources.smartstream[0].jobz: unknown key",
        ),
        (
            "  naver:\n    - name: n\n      access_key: a\n      secret_key: s\n      regoin: KR\n",
            ":6: sources.naver[0].regoin: unknown key",
        ),
        (
            "  naver:\n    - {name: n, access_key: a, secret_key: s}\n"
            "    - {name: n, access_key: a, secret_key: s}\n",
            ":1: sources: sources.naver: duplicate name(s) n",
        ),
        (
            "  ome:\n    - name: o\n      url: 'http://h'\n      access_token: t\n"
            "      max_body: plenty\n",
            ":6: sources.ome[0].max_body: expected a byte size",
        ),
    ],
)
def test_source_config_errors_name_file_line_and_key(tmp_path, sources, expected):
    path = tmp_path / "streamwatch.yaml"
    path.write_text("sources:\n" + sources)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert any(p.startswith(str(path)) and expected in p for p in caught.value.problems), (
        caught.value.problems
    )


@dataclass
class Status:
    """A SourceStatus that is not a poller: the exporter needs only these three attributes."""

    ref: SourceRef
    up: bool | None
    last_good: Snapshot | None


def test_the_exporter_renders_families_it_is_given_for_any_status_source():
    ref = SourceRef("ome", "o")
    entity = Entity("ome.stream", {"server": "o", "vhost": "v", "app": "a", "stream": "s"})
    entity = Entity(entity.kind, entity.labels, {"bytes_in": 42})
    snapshot = Snapshot.of(ref, 0.0, [entity])
    family = Family("x_bytes", "gauge", "help", "ome.stream", ("stream",), scalar("bytes_in"))
    statuses = [Status(ref, True, snapshot)]
    own = Exporter(CollectorRegistry(), lambda: statuses, families=[family])
    text = own.render()[0].decode()
    assert 'x_bytes{stream="s"} 42' in text and "ome_stream_bytes_in_total" not in text
    default = Exporter(CollectorRegistry(), lambda: statuses).render()[0].decode()
    assert 'ome_stream_bytes_in_total{server="o",vhost="v",app="a",stream="s"} 42' in default
    statuses[0] = Status(ref, False, snapshot)
    down = Exporter(CollectorRegistry(), lambda: statuses).render()[0].decode()
    assert "ome_stream_bytes_in_total{" not in down
    assert 'streamwatch_source_up{kind="ome",source="o"} 0.0' in down


# -- the import rules of the layout ---------------------------------------------------------


def imports(path: Path) -> set[str]:
    """Every module a file imports (`from a.b import c` counts as a.b and a.b.c)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_package_loop_and_no_vendor_module_outside_its_package():
    vendors = [u.kind for u in registry.upstreams()]
    for path in sorted((ROOT / "monitor").rglob("*.py")) + sorted((ROOT / "bench").glob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        found = imports(path)
        if relative.startswith("monitor/sources/"):
            assert not any(m == "monitor.config" for m in found), f"{relative} imports config"
        for vendor in vendors:
            if relative.startswith(f"monitor/sources/{vendor}/"):
                continue
            if relative == "monitor/sources/registry.py":
                continue
            bad = {m for m in found if m.startswith(f"monitor.sources.{vendor}")}
            assert not bad, f"{relative} imports {sorted(bad)}"


def test_no_source_file_is_over_600_lines():
    for path in (ROOT / "monitor" / "sources").rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path


def test_upstream_is_exported_by_each_vendor_package():
    import importlib

    for kind in KINDS:
        package = importlib.import_module(f"monitor.sources.{kind}")
        assert isinstance(package.UPSTREAM, Upstream) and package.UPSTREAM.kind == kind
