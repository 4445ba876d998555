"""Grafana: grafana/dashboards/*.json (written by grafana/generate.py) and grafana/provisioning/.

- Every panel query, and every template variable's selector, parses as PromQL (promtool checks
  them as recording rules) and names only metrics that a real scrape of the daemon running
  against the simulators contains, so a renamed family breaks this test, not a dashboard.
- A real Prometheus scrapes the daemon on the simulators and every panel query returns data,
  apart from the few panels listed below with the reason their family is empty in the demo.

promtool and prometheus come from Debian's `prometheus` package, which `.ci/run` installs:
these tests fail rather than skip when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import time
from asyncio.subprocess import DEVNULL
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

import monitor
from monitor.daemon import Daemon
from monitor.demo import Simulators, simulators

ROOT = Path(__file__).parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
PROMQL_RULES = ROOT / "rules" / "prometheus"
SHIPPED_RULES = Path(monitor.__file__).parent / "rules" / "*.yaml"
CALLBACK_TOKEN = "grafana-test-callback-token"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Series Prometheus itself adds for every target it scrapes: the self dashboard reads the cost
# of scraping /metrics from them. They are not the daemon's, so no scrape of it shows them.
PROMETHEUS_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}
# Panels whose families have no series in a few seconds of the demo: the event they count does
# not happen there. Their queries still run on the real Prometheus, which must accept them.
MAY_BE_EMPTY = {
    ("streamwatch-self", "Requests held back by a rate budget"): "no request waits for a budget",
    ("streamwatch-self", "Retry-After capped"): "no simulator sends a Retry-After",
    ("streamwatch-self", "Upstream items skipped"): "the simulators' items are all readable",
    ("streamwatch-self", "HTTP connections dropped"): "far below http.max_connections",
    ("streamwatch-self", "Outbox pending"): "a consumer's gauge; no consumer may be configured",
    ("streamwatch-self", "Outbox handled and failed"): "as above, and nothing fails",
    # The overview's actions and notifications: no shipped rule has actions, and this test
    # configures no notifier, so these counters and histograms have no series.
    ("streamwatch-overview", "Actions in the time range"): "no action runs",
    ("streamwatch-overview", "Actions"): "no action runs",
    ("streamwatch-overview", "Action duration (p95)"): "no action runs",
    ("streamwatch-overview", "Notifications in the time range"): "no notifier configured",
    ("streamwatch-overview", "Notifications"): "no notifier configured",
    ("streamwatch-overview", "Notification duration (p95)"): "no notifier configured",
}
# The Grafana unit ids the dashboards use (Grafana's valueFormats categories).
GRAFANA_UNITS = {"none", "short", "s", "bps", "Bps", "reqps", "ops", "dateTimeFromNow"}
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: apt-get install prometheus (.ci/run does)"
    return path


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, f"no dashboards in {DASHBOARDS}"
    return {path.name: json.loads(path.read_text()) for path in files}


def panels(board: dict) -> Iterator[dict]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(board: dict) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variable_selectors(board: dict) -> Iterator[tuple[str, str, str]]:
    """(variable, selector, label) of every `label_values(selector, label)` variable."""
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"{board['uid']}: variable {var['name']}: {query}"
        yield var["name"], match[1], match[2]


def substitute(expr: str, rate: str = "1m", range_: str = "1h") -> str:
    """Grafana's variables as the query reaches Prometheus with "All" selected."""
    expr = expr.replace("$__rate_interval", rate).replace("$__interval", rate)
    expr = expr.replace("$__range", range_)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def every_query(rate: str = "1m", range_: str = "1h") -> dict[str, str]:
    """Where -> PromQL, for every panel query and variable selector of every dashboard."""
    found = {}
    for board in dashboards().values():
        for n, (title, expr) in enumerate(targets(board)):
            found[f"{board['uid']} / {title} #{n}"] = substitute(expr, rate, range_)
        for name, selector, _ in variable_selectors(board):
            found[f"{board['uid']} / ${name}"] = substitute(selector, rate, range_)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads. Only for expressions promtool has parsed: strings,
    label matchers, ranges and grouping lists are blanked out, then every identifier that is not
    a function call or a keyword is a metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        if match[1].lower() not in PROMQL_KEYWORDS:
            names.add(match[1])
    return names


def promtool_parses(queries: dict[str, str], tmp_path: Path) -> None:
    """promtool has no "parse this expression" command: each query becomes a recording rule."""
    where = list(queries)
    rules = [{"record": f"query:n{n}", "expr": queries[w]} for n, w in enumerate(where)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    listing = "\n".join(f"query:n{n} = {w}: {queries[w]}" for n, w in enumerate(where))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{listing}"


def exported_names(exposition: str) -> set[str]:
    """Every sample name the exposition has, or would have for a family with no series yet."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            match = re.match(r"[A-Za-z_:][\w:]*", line)
            assert match, line
            names.add(match[0])
    return names


def closed_port() -> int:
    """A loopback port nothing listens on (for now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path, sims: Simulators) -> Path:
    """The simulators, polled every second, an expected stream that is absent, and an OME
    source nobody listens for (so that poll errors and a down source have series)."""
    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        "\n".join(
            [
                "listen: 127.0.0.1:0",
                f"state_dir: {tmp_path / 'state'}",
                f'rule_files: ["{SHIPPED_RULES}"]',
                "sources:",
                "  ome:",
                f"    - {{name: origin, url: {sims.ome_url}, access_token: {sims.ome_token},"
                " interval: 1s, expected_streams: [default/live/main, default/live/absent]}",
                f"    - {{name: unreachable, url: 'http://127.0.0.1:{closed_port()}',"
                " access_token: nobody, interval: 1s, timeout: 1s}",
                "  smartstream:",
                f"    - {{name: demo, url: {sims.smartstream_url}, merchant_id: demo,"
                " api_key: demo-api-key, mail_address: ops@example.com,"
                " password: demo-password, interval: 1s}",
                "  naver:",
                f"    - {{name: kr, url: {sims.naver_url}, access_key: {sims.naver_access_key},"
                f" secret_key: {sims.naver_secret_key}, interval: 1s,"
                f" callback_token: {CALLBACK_TOKEN}}}",
                # A notifier (nobody listens), so the notification families are exported.
                "notify:",
                f"  webhooks: [{{name: w, url: 'http://127.0.0.1:{closed_port()}/hook'}}]",
            ]
        )
        + "\n"
    )
    return path


# --- the files ------------------------------------------------------------------------------


def test_dashboards_are_what_the_generator_writes():
    written = {path.name: path.read_text() for path in DASHBOARDS.glob("*.json")}
    generated = generator().render()
    assert sorted(written) == sorted(generated)
    stale = sorted(name for name in generated if written[name] != generated[name])
    assert stale == [], "edited by hand or not regenerated: run python grafana/generate.py"


def test_dashboards_cover_the_issue():
    boards = {board["uid"]: board for board in dashboards().values()}
    assert set(boards) == {
        "streamwatch-overview",
        "streamwatch-ome",
        "streamwatch-smartstream",
        "streamwatch-naver",
        "streamwatch-self",
    }
    used = {
        uid: {name for _, expr in targets(board) for name in metric_names(substitute(expr))}
        for uid, board in boards.items()
    }
    assert {
        "streamwatch_source_up",
        "streamwatch_alerts",
        "streamwatch_actions_total",
        "streamwatch_notifications_total",
    } <= used["streamwatch-overview"]
    assert {
        "ome_stream_connections",
        "ome_stream_throughput_in_bits_per_second",
        "ome_stream_bytes_in_total",
        "ome_stream_track_bitrate_bits_per_second",
        "ome_stream_track_framerate",
        "ome_stream_track_keyframe_interval",
        "ome_push_state",
        "ome_record_state",
        "ome_app_connections",
        "ome_vhost_connections",
    } <= used["streamwatch-ome"]
    assert {
        "smartstream_live_event_encode_status",
        "smartstream_job_encode_status",
    } <= used["streamwatch-smartstream"]
    assert {"naver_channel_status", "naver_channel_events_total"} <= used["streamwatch-naver"]
    assert {
        "streamwatch_source_poll_duration_seconds_bucket",
        "streamwatch_source_poll_errors_total",
        "streamwatch_source_effective_interval_seconds",
        "scrape_duration_seconds",
        "streamwatch_outbox_pending",
        "streamwatch_state_write_errors_total",
    } <= used["streamwatch-self"]


def test_panels_excused_from_data_exist():
    titles = {(b["uid"], p["title"]) for b in dashboards().values() for p in panels(b)}
    assert set(MAY_BE_EMPTY) <= titles


def test_variables_units_and_no_hard_coded_datasource():
    for name, board in dashboards().items():
        variables = {var["name"]: var for var in board["templating"]["list"]}
        ds = variables["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), name
        assert "source" in variables, name
        if board["uid"] == "streamwatch-ome":
            assert {"vhost", "app", "stream"} <= set(variables)
        for var in variables.values():
            if var["type"] == "query":
                assert var["datasource"] == DATASOURCE, (name, var["name"])
        ids = [panel["id"] for panel in panels(board)]
        assert len(ids) == len(set(ids)), name
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            where = f"{name}: {panel['title']}"
            assert panel["datasource"] == DATASOURCE, where
            unit = panel["fieldConfig"]["defaults"].get("unit", "")
            # Grafana's unit ids, or a custom suffix ("suffix:fps": Grafana adds the space).
            assert unit in GRAFANA_UNITS or re.fullmatch(r"suffix:\S.*", unit), f"{where}: {unit}"
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target.get("datasource", DATASOURCE) == DATASOURCE, where
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, where
        # Nothing anywhere names a data source by uid, except Grafana's own annotations.
        for uid in re.findall(r'"uid":\s*"([^"]*)"', json.dumps(board)):
            assert uid in {"${datasource}", "-- Grafana --", board["uid"]}, (name, uid)


def test_provisioning_files():
    [datasources] = (PROVISIONING / "datasources").glob("*.yaml")
    config = yaml.safe_load(datasources.read_text())
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"].startswith("http://127.0.0.1:")
    [providers] = (PROVISIONING / "dashboards").glob("*.yaml")
    config = yaml.safe_load(providers.read_text())
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_metric_names_are_read_the_way_promql_does():
    expr = (
        'histogram_quantile(0.95, sum by (le, kind) (rate(a_bucket{x="y",b=~"c|d"}[5m])))'
        " / on (job) group_left (name) b_info offset 1m > bool 1e3"
        ' and c:recorded or vector(0) unless sum without (x) (d{e="sum(f)"})'
    )
    assert metric_names(expr) == {"a_bucket", "b_info", "c:recorded", "d"}


# --- against the daemon ---------------------------------------------------------------------


async def test_every_query_parses_and_names_only_what_the_daemon_exports(tmp_path):
    async with simulators(faults=False) as sims:
        daemon = Daemon(write_config(tmp_path, sims))
        await daemon.start(schedule=False)  # serving: the actions and notify components run
        try:
            await daemon.poll_all()
            body, _ = daemon.exporter.render()
        finally:
            await daemon.stop()
    exported = exported_names(body.decode())
    queries = every_query()
    rules = {
        f"{path.name} / {rule['alert']}": rule["expr"]
        for path in sorted(PROMQL_RULES.glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    promtool_parses(queries | rules, tmp_path)
    unknown = {
        where: sorted(names)
        for where, expr in queries.items()
        if (names := metric_names(expr) - exported - PROMETHEUS_SERIES)
    }
    assert unknown == {}, "names no scrape of the daemon contains"
    unknown = {
        where: sorted(names)
        for where, expr in rules.items()
        if (names := metric_names(expr) - exported)
    }
    assert unknown == {}, "PromQL rules name what the daemon does not export"


@contextlib.asynccontextmanager
async def prometheus(
    tmp_path: Path, target_url: str, rule_files: list[Path] | None = None
) -> AsyncIterator[str]:
    """A real Prometheus on loopback scraping `target_url` (and evaluating `rule_files`) every
    second; stopped on exit."""
    port = closed_port()
    target = target_url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: {json.dumps([str(path) for path in rule_files or []])}\n"
        "scrape_configs:\n"
        f"  - job_name: streamwatch\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    process = await asyncio.create_subprocess_exec(
        tool("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=DEVNULL,
        stderr=DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[dict]:
    async with http.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", (promql, body)
    return body["data"]["result"]


async def test_every_panel_query_returns_data_from_a_real_prometheus(tmp_path):
    boards = dashboards().values()
    # A 1 s scrape: ranges of 10 s hold enough samples for rate(); the range of a dashboard
    # (1 h by default) is cut to what this Prometheus has seen.
    must: dict[str, str] = {}
    may: dict[str, str] = {}
    for board in boards:
        for n, (title, expr) in enumerate(targets(board)):
            where = f"{board['uid']} / {title} #{n}"
            promql = substitute(expr, rate="10s", range_="1m")
            excused = (board["uid"], title) in MAY_BE_EMPTY
            (may if excused else must)[where] = promql
        for name, selector, label in variable_selectors(board):
            must[f"{board['uid']} / ${name}"] = f"count by ({label}) ({substitute(selector)})"
    async with simulators(faults=False) as sims:
        daemon = Daemon(write_config(tmp_path, sims))
        await daemon.start()
        try:
            assert daemon.url
            async with aiohttp.ClientSession() as http:
                # A callback that is refused still counts (result="bad_request").
                url = f"{daemon.url}/callbacks/naver/{CALLBACK_TOKEN}"
                async with http.post(url, data=b"not json") as resp:
                    assert resp.status == 400
                async with prometheus(tmp_path, daemon.url) as base:
                    empty = await until_every_query_has_data(http, base, must)
                    for promql in may.values():
                        await query(http, base, promql)  # Prometheus accepts it
        finally:
            await daemon.stop()
    assert empty == {}, "panel queries that returned no data"


async def until_every_query_has_data(
    http: aiohttp.ClientSession, base: str, queries: dict[str, str], within: float = 30
) -> dict[str, str]:
    """Prometheus is another process: its first scrapes, and the second sample a rate() needs,
    can only be polled for. Returns the queries still empty at the deadline."""
    pending = dict(queries)
    deadline = time.monotonic() + within
    while pending and time.monotonic() < deadline:
        for where, promql in list(pending.items()):
            try:
                if await query(http, base, promql):
                    del pending[where]
            except aiohttp.ClientError:
                break  # not listening yet
        if pending:
            await asyncio.sleep(0.5)
    return pending
