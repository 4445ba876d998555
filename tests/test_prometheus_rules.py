"""`rules/prometheus/`: the shipped rules as PromQL alerting rules, for fleets that evaluate
centrally. promtool (Debian's `prometheus` package, installed by `.ci/run`) checks them and runs
their unit tests; a missing promtool fails these tests rather than skipping them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from monitor.alerting.evaluate import SOURCE_DOWN

ROOT = Path(__file__).parent.parent
PROMQL_RULES = ROOT / "rules" / "prometheus"
SHIPPED_RULES = ROOT / "monitor" / "rules"
# Shipped rules that PromQL cannot express; each file says why in a "Not here:" comment.
NOT_EXPRESSIBLE = {
    "SmartstreamLiveEventNotRunning": "smartstream.yaml",  # the schedule is not exported
    "NaverChannelErrorEvent": "naver.yaml",  # the log level is not exported
}
# The daemon's built-in rule, which has no file under monitor/rules/.
BUILT_IN = {
    SOURCE_DOWN: {
        "for": "1m",
        "labels": {"severity": "critical"},
        "annotations": {"summary": "", "description": ""},
    }
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed: apt-get install prometheus (.ci/run does)"
    return path


def run(*args: str) -> None:
    result = subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def rules_of(files: list[Path]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for path in files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert rule["alert"] not in found, f"{rule['alert']} defined twice"
                found[rule["alert"]] = rule
    return found


def test_promtool_checks_the_rules():
    files = sorted(PROMQL_RULES.glob("*.yaml"))
    assert files, f"no rule files in {PROMQL_RULES}"
    run("check", "rules", *(str(f.relative_to(ROOT)) for f in files))


def test_promtool_unit_tests_pass():
    tests = sorted((PROMQL_RULES / "tests").glob("*.yaml"))
    assert tests, "no promtool unit tests"
    run("test", "rules", *(str(t.relative_to(ROOT)) for t in tests))


def test_same_alerts_as_the_shipped_rules():
    shipped = rules_of(sorted(SHIPPED_RULES.glob("*.yaml")))
    promql = rules_of(sorted(PROMQL_RULES.glob("*.yaml")))
    expected = (set(shipped) | set(BUILT_IN)) - set(NOT_EXPRESSIBLE)
    assert set(promql) == expected
    for name, file in NOT_EXPRESSIBLE.items():
        assert f"Not here: {name}" in (PROMQL_RULES / file).read_text(), name
    for name, rule in promql.items():
        own = shipped.get(name) or BUILT_IN[name]
        assert rule.get("labels") == own.get("labels"), name
        assert rule.get("for") == own.get("for"), name
        assert rule.get("keep_firing_for") == own.get("keep_firing_for"), name
        # Annotations: the same keys, except texts built from fields that are not exported.
        assert set(rule.get("annotations", {})) <= set(own.get("annotations", {})), name
        assert "summary" in rule["annotations"], name


def test_every_alert_has_a_unit_test_that_sees_it_fire():
    promql = rules_of(sorted(PROMQL_RULES.glob("*.yaml")))
    fired: set[str] = set()
    for path in (PROMQL_RULES / "tests").glob("*.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fired.add(case["alertname"])
    assert set(promql) - fired == set()


def test_the_built_in_source_down_waits_as_long_as_the_daemons_default():
    from monitor.config import AlertingConfig

    assert AlertingConfig().source_down_after == 60.0  # "for: 1m" in streamwatch.yaml
