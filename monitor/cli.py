"""The `streamwatch` command: run | check | once | alerts | simulate | demo."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import re
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor import __version__
from monitor.alerting.rules import RuleError
from monitor.alerting.transitions import iso
from monitor.config import Config, ConfigError, load_config
from monitor.logs import setup_logging
from monitor.sources import ENTITY_KINDS

log = logging.getLogger("streamwatch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamwatch",
        description="Keeps live-video streams healthy: polls OME, SmartSTREAM and NAVER Live "
        "Station, exports Prometheus metrics, evaluates alert rules and repairs.",
    )
    parser.add_argument("--version", action="version", version=f"streamwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, type=Path, help="configuration file")
    run.add_argument(
        "--listen", type=_listen_address, help="override the config's listen address (HOST:PORT)"
    )

    check = commands.add_parser("check", help="validate the configuration and rule files")
    check.add_argument("-c", "--config", required=True, type=Path)

    once = commands.add_parser("once", help="poll every source once and print what was seen")
    once.add_argument("-c", "--config", required=True, type=Path)
    shown = once.add_mutually_exclusive_group()
    shown.add_argument("--metrics", action="store_true", help="print the /metrics text instead")
    shown.add_argument("--json", action="store_true", help="print one JSON object per entity")

    alerts = commands.add_parser("alerts", help="print the current alerts of a running daemon")
    alerts.add_argument("-c", "--config", type=Path, help="read the daemon's listen from here")
    alerts.add_argument("--url", help="daemon base URL, e.g. http://127.0.0.1:9108")

    actions = commands.add_parser("actions", help="print the running daemon's recent actions")
    actions.add_argument("-c", "--config", type=Path, help="read the daemon's listen from here")
    actions.add_argument("--url", help="daemon base URL, e.g. http://127.0.0.1:9108")
    actions.add_argument("--limit", type=int, default=50)

    act = commands.add_parser(
        "act", help="ask the running daemon for an action, through its guard (needs the API token)"
    )
    act.add_argument("action", choices=["restart", "hls_dump", "id3_event"])
    act.add_argument("--kind", required=True, help="entity kind, e.g. ome.stream")
    act.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="the entity's labels"
    )
    act.add_argument("--source", help="kind/name of the source, when labels are not enough")
    act.add_argument("--param", action="append", default=[], metavar="K=V")
    act.add_argument("--dry-run", action="store_true")
    act.add_argument("--reason", default="")
    act.add_argument("-c", "--config", type=Path, help="read the daemon's listen from here")
    act.add_argument("--url", help="daemon base URL, e.g. http://127.0.0.1:9108")

    simulate = commands.add_parser(
        "simulate", help="run only the simulators; print their URLs and a sources: block"
    )
    simulate.add_argument("--host", default="127.0.0.1", help="a loopback address")
    simulate.add_argument("--ome-port", type=int, default=0, help="default: any free port")
    simulate.add_argument("--smartstream-port", type=int, default=0)
    simulate.add_argument("--naver-port", type=int, default=0)
    simulate.add_argument("--ome-token", help="OME access token (default: random)")
    simulate.add_argument("--smartstream-merchant", help="merchant id (default: demo)")
    simulate.add_argument("--smartstream-api-key", help="default: demo-api-key")
    simulate.add_argument("--smartstream-token", help="a fixed bearer token (default: demo-token)")
    simulate.add_argument("--smartstream-mail", help="auth-token mail (default: ops@example.com)")
    simulate.add_argument("--smartstream-password", help="default: demo-password")
    simulate.add_argument("--naver-access-key", help="default: DEMOACCESSKEY")
    simulate.add_argument("--naver-secret-key", help="default: random")
    simulate.add_argument(
        "--no-faults", action="store_true", help="run without the demo's fault script"
    )

    demo = commands.add_parser("demo", help="run the daemon against the built-in simulators")
    demo.add_argument("--listen", type=_listen_address, default="127.0.0.1:9108")
    demo.add_argument("--state-dir", type=Path, help="default: a temporary directory")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    return parser


def _listen_address(value: str) -> str:
    from monitor.config import check_listen

    try:
        return check_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return cmd_check(args.config)
        if args.command == "run":
            config = load_config(args.config)
            setup_logging(config.log.format, config.log.level)
            return asyncio.run(cmd_run(args.config, config, args.listen))
        if args.command == "once":
            setup_logging("logfmt", "warning")
            config = load_config(args.config)
            return asyncio.run(cmd_once(config, args.config, args.metrics, args.json))
        if args.command == "alerts":
            return cmd_alerts(args.config, args.url)
        if args.command == "actions":
            return cmd_actions(args.config, args.url, args.limit)
        if args.command == "act":
            return cmd_act(args)
        if args.command == "simulate":
            setup_logging("logfmt", "info")
            from monitor.demo import Credentials, run_simulators

            credentials = Credentials.generate(
                ome_token=args.ome_token,
                smartstream_merchant=args.smartstream_merchant,
                smartstream_api_key=args.smartstream_api_key,
                smartstream_token=args.smartstream_token,
                smartstream_mail=args.smartstream_mail,
                smartstream_password=args.smartstream_password,
                naver_access_key=args.naver_access_key,
                naver_secret_key=args.naver_secret_key,
            )
            ports = (args.ome_port, args.smartstream_port, args.naver_port)
            return asyncio.run(
                run_simulators(args.host, *ports, credentials, faults=not args.no_faults)
            )
        if args.command == "demo":
            setup_logging("logfmt", "info")
            from monitor.demo import run_demo

            return asyncio.run(run_demo(args.listen, args.state_dir, args.duration))
    except (ConfigError, RuleError) as exc:
        # Nothing has started yet: config and rules are validated before anything runs.
        print(
            f"streamwatch: configuration rejected ({len(exc.problems)} problem(s)):",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"streamwatch: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def cmd_check(path: Path) -> int:
    problems: list[str] = []
    config: Config | None = None
    rule_files: list[str] | None = None
    try:
        config = load_config(path)
        rule_files = config.rule_files
    except ConfigError as exc:
        # The rule files are read even when the config is wrong: one pass says everything.
        problems += exc.problems
        rule_files = exc.rule_files
    summary = ""
    if rule_files is not None:
        summary, rule_problems = check_rules(rule_files)
        problems += rule_problems
    if config is not None:
        from monitor.store import Store

        problems += Store.check(config.state_dir)
    if problems:
        print(f"{path}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    from monitor.sources.manager import configured_sources

    assert config is not None
    sources = configured_sources(config.sources)
    print(f"{path}: OK: {len(sources)} source(s), {summary}")
    return 0


def check_rules(rule_files: list[str]) -> tuple[str, list[str]]:
    """(`N rules in M files`, every problem in these rule files)."""
    from monitor.alerting.rules import describe_rules, load_rule_files

    try:
        groups = load_rule_files(rule_files, kinds=ENTITY_KINDS)
    except RuleError as exc:
        return "", list(exc.problems)
    return describe_rules(groups), []


class StartupError(Exception):
    """The daemon could not start; the message says what and how to fix it, in one line."""


async def start_or_explain(daemon: Any, **kwargs: bool) -> None:
    """daemon.start(), with what stops it (the port, the state file) said in one line."""
    from monitor.store import StateError

    try:
        await daemon.start(**kwargs)
    except StateError as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        listen = daemon.listen_address
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = " (is another streamwatch running?)" if exc.errno == errno.EADDRINUSE else ""
        raise StartupError(f"cannot listen on {listen}: {reason.lower()}{hint}") from None


async def cmd_run(path: Path, config: Config, listen: str | None) -> int:
    from monitor.daemon import Daemon
    from monitor.listener import FdExhaustionFilter

    daemon = Daemon(path, config=config, listen=listen)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(FdExhaustionFilter())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = loop.create_task(daemon.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await start_or_explain(daemon)
    await stop.wait()
    log.info("stopping (signal received)")
    await daemon.stop()
    return 0


async def cmd_once(config: Config, path: Path, as_metrics: bool, as_json: bool = False) -> int:
    from monitor.daemon import Daemon
    from monitor.store import StateError, Store

    # A daemon may be running on the same config: `once` works on a copy of its state, so it
    # neither takes its NAVER events (marking them seen) nor writes its alerts.
    with tempfile.TemporaryDirectory(prefix="streamwatch-once-") as scratch:
        try:
            Store.copy(config.state_dir, Path(scratch))
        except StateError as exc:
            raise StartupError(str(exc)) from None
        daemon = Daemon(path, config=config.model_copy(update={"state_dir": Path(scratch)}))
        await start_or_explain(daemon, serve=False, schedule=False)
        try:
            snapshots = await daemon.poll_all()
            # Rendered before stop(): stopping lets go of the sources and their snapshots.
            text = daemon.exporter.render()[0].decode() if as_metrics else ""
        finally:
            await daemon.stop()
    if as_metrics:
        sys.stdout.write(text)
    else:
        print_entities(snapshots, as_json)
    return 0 if all(s.ok for s in snapshots) else 1


_TIME_FIELDS = re.compile(r"(_at|_time|^timestamp|^last_recv|^last_sent|^last_updated|_since)$")


def print_entities(snapshots: Sequence, as_json: bool = False) -> None:
    """One line per entity: a table whose last column holds every field, or JSON lines."""
    if as_json:
        for snapshot in snapshots:
            if snapshot.failure is not None:
                failure = {"reason": snapshot.failure.reason, "message": snapshot.failure.message}
                print(json.dumps({"source": str(snapshot.source), "failure": failure}))
                continue
            for entity in snapshot.entities:
                line = {
                    "source": str(snapshot.source),
                    "kind": entity.kind,
                    "labels": dict(entity.labels),
                    "fields": _plain(entity.fields),
                }
                print(json.dumps(line, sort_keys=True))
        return
    rows = [("SOURCE", "KIND", "IDENTITY", "FIELDS")]
    for snapshot in snapshots:
        if snapshot.failure is not None:
            failure = f"{snapshot.failure.reason}: {snapshot.failure.message}"
            rows.append((str(snapshot.source), "-", "POLL FAILED", failure))
            continue
        for entity in snapshot.entities:
            identity = "/".join(v for k, v in entity.labels.items() if k != "server")
            fields = " ".join(
                f"{k}={_readable(k, v)}"
                for k, v in entity.fields.items()
                if v is not None and k != "present"
            )
            if not entity.present:
                fields = "present=false"
            rows.append((str(snapshot.source), entity.kind, identity, fields))
    print_table(rows)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned to their widest cell; the last column is left as long as it is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def _readable(name: str, value: object) -> str:
    if isinstance(value, tuple):
        return "[" + "; ".join(_readable("", item) for item in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and _TIME_FIELDS.search(name) and value > 0:
        return iso(float(value)) or str(value)
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    if hasattr(value, "items"):
        return "{" + ",".join(f"{k}:{_readable(k, v)}" for k, v in value.items()) + "}"  # type: ignore[union-attr]
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def cmd_alerts(config_path: Path | None, url: str | None) -> int:
    """The running daemon's alerts. Only `listen` is read from the config (no secrets, no
    environment), and not even that with --url."""
    if url is None:
        if config_path is None:
            print("streamwatch: alerts needs --url or -c", file=sys.stderr)
            return 2
        url = f"http://{_listen_of(config_path)}"
    base = url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/api/v1/alerts", timeout=5) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"streamwatch: cannot read alerts from {base}: {exc}", file=sys.stderr)
        return 1
    alerts = body.get("data", [])
    if not alerts:
        print("no alerts")
        return 0
    rows = [("STATE", "SINCE", "ALERT", "SUMMARY", "LABELS")]
    for alert in alerts:
        labels = alert.get("labels", {})
        state = alert.get("state", "?") + (" (silenced)" if alert.get("silenced") else "")
        summary = str(alert.get("annotations", {}).get("summary", ""))
        if len(summary) > 80:
            summary = summary[:79] + "…"
        rows.append(
            (
                state,
                str(alert.get("startsAt") or alert.get("activeAt") or "-"),
                str(labels.get("alertname", "?")),
                summary or "-",
                ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname"),
            )
        )
    print_table(rows)
    return 0


def _base_url(config_path: Path | None, url: str | None, command: str) -> str | None:
    if url is not None:
        return url.rstrip("/")
    if config_path is None:
        print(f"streamwatch: {command} needs --url or -c", file=sys.stderr)
        return None
    return f"http://{_listen_of(config_path)}"


def _request(url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except ValueError:
            return exc.code, {"error": exc.reason}


def cmd_actions(config_path: Path | None, url: str | None, limit: int) -> int:
    """The running daemon's recent action attempts, newest first."""
    base = _base_url(config_path, url, "actions")
    if base is None:
        return 2
    try:
        status, body = _request(f"{base}/api/v1/actions?limit={limit}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"streamwatch: cannot read actions from {base}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"streamwatch: {base}: {body.get('error', status)}", file=sys.stderr)
        return 1
    attempts = body.get("data", [])
    if not attempts:
        print("no actions")
        return 0
    rows = [("TIME", "ACTION", "KIND", "TARGET", "RESULT", "DETAIL")]
    for attempt in attempts:
        target = attempt.get("target") or {}
        labels = target.get("labels", {}) if isinstance(target, dict) else {}
        rows.append(
            (
                iso(attempt.get("time")) or "-",
                str(attempt.get("action", "")),
                str(attempt.get("kind", "")),
                ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-",
                str(attempt.get("result") or attempt.get("state") or ""),
                str(attempt.get("detail") or attempt.get("error") or ""),
            )
        )
    print_table(rows)
    return 0


def cmd_act(args: argparse.Namespace) -> int:
    """Ask the running daemon for one action; it passes the same guard as a rule's."""
    base = _base_url(args.config, args.url, "act")
    if base is None:
        return 2
    token = os.environ.get("STREAMWATCH_API_TOKEN")
    if not token and args.config is not None:
        try:
            secret = load_config(args.config).api.token
        except ConfigError as exc:
            print(f"streamwatch: {exc.problems[0]}", file=sys.stderr)
            return 2
        token = secret.get_secret_value() if secret else None
    if not token:
        print("streamwatch: act needs the API token: $STREAMWATCH_API_TOKEN or -c", file=sys.stderr)
        return 2
    try:
        labels = dict(_pair(text) for text in args.label)
        params = {k: _value(v) for k, v in map(_pair, args.param)}
    except ValueError as exc:
        print(f"streamwatch: {exc}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {
        "action": args.action,
        "params": params,
        "dry_run": args.dry_run or None,
        "reason": args.reason,
    }
    if args.source:
        body["target"] = {"source": args.source, "kind": args.kind, "labels": labels}
    else:
        body.update(kind=args.kind, labels=labels)
    try:
        status, answer = _request(f"{base}/api/v1/actions", body, token)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"streamwatch: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"streamwatch: refused ({status}): {answer.get('error', '')}", file=sys.stderr)
        return 1
    outcome = answer.get("data", {})
    print(f"{outcome.get('result', '?')}: {outcome.get('detail', '')}")
    return 0 if outcome.get("result") in ("ok", "dry_run") else 1


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected K=V, got {text!r}")
    return key, value


def _value(text: str) -> Any:
    """A parameter's value: JSON when it parses (numbers, true, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _listen_of(config_path: Path) -> str:
    from monitor.yamlfile import load_yaml

    data = load_yaml(config_path, interpolate_env=False).data or {}
    listen = data.get("listen", "127.0.0.1:9108") if isinstance(data, dict) else "127.0.0.1:9108"
    host, _, port = str(listen).rpartition(":")
    # A daemon listening on every address is reached on loopback.
    if host in ("0.0.0.0", "", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"
