"""`rules/prometheus/`: the shipped rules as PromQL alerting rules, for fleets that evaluate
centrally. promtool (Debian's `prometheus` package, installed by `.ci/run`) checks them and runs
their unit tests; a missing promtool fails these tests rather than skipping them.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import yaml
from test_grafana import prometheus, until_every_query_has_data, write_config

from monitor.alerting.evaluate import SOURCE_DOWN
from monitor.daemon import Daemon
from monitor.demo import simulators
from monitor.demo.layout import NEWS_CHANNEL, SPORTS_CHANNEL
from monitor.sim.smartstream import ENCODE_STATUS_ERROR, JOB_FAILED

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


class ShiftedClock:
    """The simulators' clock, `offset` seconds from the real one."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


# Annotations the PromQL rules cannot write the same way (each rule file says why).
DIFFERENT_TEXT = {
    ("OmePushFailed", "summary"),  # the pushed stream is not exported
    ("OmeRecordFailed", "summary"),  # nor the recorded one
    ("SmartstreamJobFailed", "summary"),  # nor the job's ref_id
    ("NaverStreamDisconnected", "description"),  # nor an event's description
    (SOURCE_DOWN, "description"),  # nor the last error's text: its class instead
}
# Annotations that quote an age, which the two evaluators compute at different instants.
TIMED_TEXT = {("OmeIngestStalled", "summary")}


def normalised(labels: dict[str, str], *, prometheus: bool) -> tuple[tuple[str, str], ...]:
    """An alert's labels as both evaluators can have them.

    Prometheus adds the scrape's `instance` and `job`, and renames the daemon's own `job` label
    (a SmartSTREAM job id) to `exported_job`; the daemon's event alerts carry `event_id`, which
    no metric has (rules/prometheus/naver.yaml says so)."""
    labels = dict(labels)
    if prometheus:
        labels.pop("instance")
        labels.pop("job")
        if "exported_job" in labels:
            labels["job"] = labels.pop("exported_job")
    else:
        labels.pop("event_id", None)
    return tuple(sorted(labels.items()))


async def test_prometheus_and_the_daemon_raise_the_same_alerts_on_the_simulators(tmp_path):
    """A real Prometheus evaluates rules/prometheus/ over a scrape of the daemon, which
    evaluates the shipped rules over the same simulators, with a fault for almost every rule:
    both hold the same alerts (pending or firing), label for label."""
    clock = ShiftedClock(-30.0)
    async with simulators(faults=False, clock=clock) as sims:
        sims.ome.stall("default/live/second")  # 30 s ago: OmeIngestStalled holds at once
        clock.offset = 0.0
        sims.ome.add_stream(
            "default/live/weak", bitrate=200_000, framerate=12, keyframe_interval=120
        )
        sims.ome.set_connections("default/live/main", {"llhls": 2500})
        sims.ome.set_push_state("default/live", "youtube", "error")
        sims.ome.set_record_state("default/live", "archive", "error")
        sims.smartstream.set_encode_status("ref:sports", ENCODE_STATUS_ERROR)
        sims.smartstream.set_job_status("ref:upload-2", JOB_FAILED)
        daemon = Daemon(write_config(tmp_path, sims))
        await daemon.start()
        try:
            assert daemon.url and daemon.engine
            rule_files = sorted(PROMQL_RULES.glob("*.yaml"))
            async with (
                aiohttp.ClientSession() as http,
                prometheus(tmp_path, daemon.url, rule_files) as base,
            ):
                # An event counts for increase() only once Prometheus has seen its counter at
                # 0: the encoder disconnects after the first scrape that has it.
                zero = 'naver_channel_events_total{event="PUBLISH_END"}'
                assert await until_every_query_has_data(http, base, {"counter": zero}) == {}
                sims.naver.set_status(NEWS_CHANNEL, "READY")  # PUBLISH_END
                sims.naver.set_status(SPORTS_CHANNEL, "FORCE_BLOCK", event=None)
                ours, theirs = await both_alert_sets(daemon, http, base)
        finally:
            await daemon.stop()
    assert set(ours) == set(theirs)
    assert {name for name, _ in ours} >= {
        "OmeIngestStalled",
        "OmeExpectedStreamMissing",
        "OmeInputBitrateLow",
        "OmeInputFramerateDrop",
        "OmeKeyframeIntervalLong",
        "OmeViewersOverLimit",
        "OmePushFailed",
        "OmeRecordFailed",
        "SmartstreamLiveEventEncodeError",
        "SmartstreamJobFailed",
        "NaverChannelAbnormal",
        "NaverStreamDisconnected",
        SOURCE_DOWN,
    }
    # Annotations: the same text, but where the rule files say why not.
    for alert, texts in ours.items():
        for key in set(texts) | set(theirs[alert]):
            if (alert[0], key) in DIFFERENT_TEXT:
                continue
            mine, promql = texts.get(key), theirs[alert].get(key)
            if (alert[0], key) in TIMED_TEXT:  # evaluated at different instants
                mine, promql = (re.sub(r"\d+s\b", "Ns", t or "") for t in (mine, promql))
            assert mine == promql, (alert[0], key)


async def both_alert_sets(
    daemon: Daemon, http: aiohttp.ClientSession, base: str, within: float = 25
) -> tuple[dict, dict]:
    """The daemon's alerts and Prometheus' once they agree, or as they are at the deadline.
    Polled: Prometheus scrapes and evaluates in its own process, on its own clock."""
    deadline = time.monotonic() + within
    while True:
        assert daemon.engine
        ours = {
            (alert.alertname, normalised(alert.labels, prometheus=False)): alert.annotations
            for alert, _ in daemon.engine.active_alerts()
            if alert.alertname not in NOT_EXPRESSIBLE
        }
        async with http.get(f"{base}/api/v1/alerts") as resp:
            body = await resp.json()
        theirs = {
            (alert["labels"]["alertname"], normalised(alert["labels"], prometheus=True)): alert[
                "annotations"
            ]
            for alert in body["data"]["alerts"]
        }
        if (set(ours) == set(theirs) and len(ours) >= 13) or time.monotonic() > deadline:
            return ours, theirs
        await asyncio.sleep(0.5)
