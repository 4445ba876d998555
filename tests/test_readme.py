"""The README's configuration reference is a config the daemon accepts, and its rule example
is a rule file it accepts: the documentation cannot drift from the code unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

from monitor.alerting.rules import load_rule_files
from monitor.config import load_config
from monitor.sources import ENTITY_KINDS

README = (Path(__file__).parent.parent / "README.md").read_text()


def yaml_block_after(heading: str) -> str:
    section = README[README.index(heading) :]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_configuration_reference_validates(tmp_path):
    path = tmp_path / "streamwatch.yaml"
    path.write_text(yaml_block_after("## Configuration"))
    env = {name: "x" for name in re.findall(r"\$\{([A-Z_]+)\}", path.read_text())}
    config = load_config(path, env=env)
    assert config.sources.ome[0].expected_streams == ["default/app/stream"]
    assert config.sources.smartstream[0].rate_limit == 50
    assert [s.name for s in config.silences] == ["nightly-encoder-reboot", "migration"]


def test_rule_example_validates(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml_block_after("## Alert rules"))
    [group] = load_rule_files([str(path)], kinds=ENTITY_KINDS)
    [rule] = group.rules
    assert (rule.name, rule.kind, rule.hold, rule.keep_firing_for) == (
        "OmeIngestStalled",
        "ome.stream",
        15,
        30,
    )
    assert [a.name for a in rule.actions] == ["id3_event", "hls_dump", "restart"]


async def test_metrics_reference_lists_exactly_the_exported_families(tmp_path):
    from monitor.daemon import Daemon
    from monitor.export import FAMILIES

    section = README[README.index("## Metrics") : README.index("## Alert rules")]
    documented: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            documented.update(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    # `ome_app_*, ome_vhost_*` stand for the stream families at app and vhost level.
    entity = {
        f.name if f.type == "gauge" else f.name.removesuffix("_total") + "_total" for f in FAMILIES
    }
    config = tmp_path / "streamwatch.yaml"
    # A notifier of each kind, so that their families are registered too (nothing listens).
    config.write_text(
        f"listen: 127.0.0.1:0\nstate_dir: {tmp_path}\nrule_files: []\n"
        "notify:\n  webhooks: [{name: w, url: 'http://127.0.0.1:9/hook'}]\n"
        "  mqtt: {url: 'mqtt://127.0.0.1:9'}\n"
    )
    daemon = Daemon(config)
    await daemon.start(schedule=False)  # serving: every component registers its metrics
    try:
        own = {
            metric.name + ("_total" if metric.type == "counter" else "")
            for metric in daemon.registry.collect()
            if metric.name.startswith("streamwatch_")
        }
    finally:
        await daemon.stop()
    exported = {n for n in entity | own if not n.startswith(("ome_app_", "ome_vhost_"))}
    assert documented - exported == set(), "documented but not exported"
    assert exported - documented == set(), "exported but not documented"


def test_ci_runs_exactly_the_readmes_test_command():
    root = Path(__file__).parent.parent
    ci = (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    quick_start = README[README.index("The whole test suite:") :]
    command = quick_start.split("```sh\n", 1)[1].split("\n```", 1)[0]
    assert ci == command
    packages = re.search(r"apt-get install -y (.+)", (root / ".ci" / "run").read_text())
    assert packages and f"apt-get install -y {packages.group(1)}" in README
