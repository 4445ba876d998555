"""The command line: once (table and --metrics), alerts against a running daemon, --version."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from monitor import __version__
from monitor.cli import main
from monitor.daemon import Daemon
from monitor.sim.ome import OmeSim
from monitor.sim.serve import serve

TOKEN = "cli-test-token"


def config_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        f"listen: 127.0.0.1:0\nstate_dir: {tmp_path / 'state'}\n"
        "rule_files: []\n"
        f"sources:\n  ome:\n    - {{name: origin, url: {url}, access_token: {TOKEN}, "
        "expected_streams: [default/live/main, default/live/ghost]}\n"
    )
    return path


async def test_once_prints_entities_and_metrics(tmp_path, capsys):
    sim = OmeSim(TOKEN, clock=time.time)
    sim.add_stream("default/live/main", bitrate=1_000_000)
    async with serve(sim.app()) as url:
        path = config_for(tmp_path, url)
        # `once` runs its own event loop, so it gets a thread of its own here.
        assert await asyncio.to_thread(main, ["once", "-c", str(path)]) == 0
        table = capsys.readouterr().out
        assert await asyncio.to_thread(main, ["once", "-c", str(path), "--metrics"]) == 0
        metrics = capsys.readouterr().out
        sim.unauthorized(count=None)
        assert await asyncio.to_thread(main, ["once", "-c", str(path)]) == 1
        failed = capsys.readouterr().out
    assert "ome.stream" in table and "default/live/main" in table
    assert "default/live/ghost" in table and "present=false" in table
    assert (
        'ome_stream_present{server="origin",vhost="default",app="live",stream="ghost"} 0' in metrics
    )
    assert "POLL FAILED" in failed and "unauthorized" in failed
    assert TOKEN not in table + metrics + failed
    main_line = next(line for line in table.splitlines() if "live/main" in line)
    assert "created_at=20" in main_line and "e+09" not in main_line, "times are readable"
    assert "tracks=[" in main_line and len(main_line) > 160, "every field, in full"


async def test_once_json_prints_one_object_per_entity(tmp_path, capsys):
    sim = OmeSim(TOKEN, clock=time.time)
    sim.add_stream("default/live/main", bitrate=1_000_000)
    async with serve(sim.app()) as url:
        path = config_for(tmp_path, url)
        assert await asyncio.to_thread(main, ["once", "-c", str(path), "--json"]) == 0
    import json

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stream = next(
        line
        for line in lines
        if line["kind"] == "ome.stream" and line["labels"]["stream"] == "main"
    )
    assert stream["source"] == "ome/origin"
    assert stream["fields"]["video_bitrate"] > 0 and isinstance(stream["fields"]["tracks"], list)


async def test_alerts_command_reads_the_running_daemon(tmp_path, capsys):
    sim = OmeSim(TOKEN, clock=time.time)
    async with serve(sim.app()) as url:
        path = config_for(tmp_path, url)
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            "groups:\n  - name: g\n    rules:\n      - {alert: Missing, kind: ome.stream, expr: not present,"
            " annotations: {summary: '{{ stream }} is not there'}}\n"
        )
        path.write_text(path.read_text().replace("rule_files: []", f"rule_files: [{rules}]"))
        daemon = Daemon(path)
        await daemon.start(schedule=False)
        try:
            await daemon.poll_all()
            # No config needed with --url (it holds secrets the caller may not have).
            code = await asyncio.to_thread(main, ["alerts", "--url", daemon.url])
        finally:
            await daemon.stop()
    header, *lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert header.split() == ["STATE", "SINCE", "ALERT", "SUMMARY", "LABELS"]
    ghost, main_ = sorted(lines, key=lambda line: "main" in line)
    for line in (ghost, main_):
        assert line.split()[0] == "firing" and line.split()[2] == "Missing"
    assert "ghost is not there" in ghost and "stream=ghost" in ghost
    assert "main is not there" in main_ and "stream=main" in main_
    assert ghost.index("ghost is not there") == header.index("SUMMARY"), "columns line up"
    assert ghost.index("app=live") == main_.index("app=live") == header.index("LABELS")


def test_alerts_command_without_a_daemon_fails_clearly(tmp_path, capsys, unused_tcp_port):
    path = config_for(tmp_path, "http://127.0.0.1:1")
    assert main(["alerts", "-c", str(path), "--url", f"http://127.0.0.1:{unused_tcp_port}"]) == 1
    assert "cannot read alerts" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"streamwatch {__version__}"


def test_run_with_a_bad_rule_file_starts_nothing_and_exits_1(tmp_path, capsys, unused_tcp_port):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: Bad, kind: ome.stream, expr: 'present and'}\n"
    )
    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        f"listen: 127.0.0.1:{unused_tcp_port}\nstate_dir: {tmp_path / 'state'}\nrule_files: [{rules}]\n"
    )
    assert main(["run", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{rules}:4: rule 'Bad'" in err
    assert not (tmp_path / "state").exists(), "nothing was started"


async def test_once_leaves_the_daemons_state_alone(tmp_path, capsys):
    """`once` on the config of a running daemon: it must not take NAVER events (mark them
    seen) nor write alerts into the daemon's state."""
    import sqlite3

    from monitor.demo import simulators

    async with simulators(faults=False) as sims:
        path = tmp_path / "streamwatch.yaml"
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            "groups:\n  - name: g\n    rules:\n"
            "      - {alert: Any, kind: naver.event, expr: present, keep_firing_for: 1h}\n"
        )
        path.write_text(
            f"listen: 127.0.0.1:0\nstate_dir: {tmp_path / 'state'}\nrule_files: ['{rules}']\n"
            + sims.sources_yaml()
            + "\n"
        )
        daemon = Daemon(path)
        await daemon.start(serve=False, schedule=False)
        await daemon.poll_all()
        await daemon.stop()  # the daemon's state exists, with its event cursor
        channel = next(iter(sims.naver.channels))
        sims.naver.add_event(channel, "PUBLISH_END", callback=False)  # news for the daemon
        db = tmp_path / "state" / "streamwatch.sqlite3"
        before = "\n".join(sqlite3.connect(db).iterdump())
        assert await asyncio.to_thread(main, ["once", "-c", str(path)]) in (0, 1)
        assert "naver.event" in capsys.readouterr().out, "once did see the events"
        after = "\n".join(sqlite3.connect(db).iterdump())
    assert after == before


@pytest.mark.parametrize(
    ("rule_files", "expected"),
    [
        (None, "rule_files: missing"),
        ('["rules/*.yaml"]', "rules/*.yaml: no rule file matches this rule_files entry"),
        ('["nothere.yaml"]', "nothere.yaml: no rule file matches this rule_files entry"),
    ],
)
def test_check_refuses_a_config_whose_rules_are_not_there(tmp_path, capsys, rule_files, expected):
    path = tmp_path / "streamwatch.yaml"
    line = f"rule_files: {rule_files}\n" if rule_files is not None else ""
    path.write_text(f"listen: 127.0.0.1:0\nstate_dir: {tmp_path}\n{line}")
    assert main(["check", "-c", str(path)]) == 1
    assert expected in capsys.readouterr().err


def test_check_says_how_many_rules_it_read(tmp_path, capsys):
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("a", "b"):
        (rules / f"{name}.yaml").write_text(
            f"groups:\n  - name: {name}\n    rules:\n"
            "      - {alert: X, kind: ome.stream, expr: present}\n"
            "      - {alert: Y, kind: ome.stream, expr: not present}\n"
        )
    path = tmp_path / "streamwatch.yaml"
    path.write_text(f"listen: 127.0.0.1:0\nstate_dir: {tmp_path}\nrule_files: [rules/*.yaml]\n")
    assert main(["check", "-c", str(path)]) == 0
    assert "4 rules in 2 files" in capsys.readouterr().out
    path.write_text(f"listen: 127.0.0.1:0\nstate_dir: {tmp_path}\nrule_files: []\n")
    assert main(["check", "-c", str(path)]) == 0
    assert "0 rules in 0 files" in capsys.readouterr().out


def test_check_names_the_bounds_of_alerting_durations(tmp_path, capsys):
    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        f"state_dir: {tmp_path}\nrule_files: []\n"
        "alerting: {source_down_after: 0s, resolved_retention: 30d}\n"
    )
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert ":3: alerting.source_down_after: 0s is out of range: between 5s and 1d" in err
    assert "alerting.resolved_retention: 30d is out of range: between 0s and 7d" in err


def test_check_says_everything_in_one_pass(tmp_path, capsys):
    """A field error, a duplicate source name and a broken rule file, all in one run."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: Broken, kind: ome.stream, expr: 'a +'}\n"
    )
    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        f"state_dir: {tmp_path}\nrule_files: [rules.yaml]\nsources:\n  ome:\n"
        "    - {name: a, url: 'http://127.0.0.1:1', access_token: t, timout: 3s}\n"
        "    - {name: a, url: 'http://127.0.0.1:2', access_token: t}\n"
    )
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert "sources.ome[0].timout: unknown key" in err
    assert "sources.ome: duplicate name(s) a" in err
    assert "rule 'Broken'" in err and "rules.yaml:4" in err
    assert err.count("duplicate name(s)") == 1


async def test_act_and_actions_go_through_the_daemons_guard(tmp_path, capsys, monkeypatch):
    sim = OmeSim(TOKEN, clock=time.time)
    sim.add_stream("default/live/main")
    async with serve(sim.app()) as url:
        path = config_for(tmp_path, url)
        path.write_text(path.read_text() + "api: {token: cli-api-token}\n")
        daemon = Daemon(path)
        await daemon.start(schedule=False)
        try:
            await daemon.poll_all()
            labels = ["--label", "server=origin", "--label", "vhost=default"]
            labels += ["--label", "app=live", "--label", "stream=main"]
            base = ["act", "restart", "--kind", "ome.stream", *labels, "--url", daemon.url]
            assert await asyncio.to_thread(main, base) == 2, "no token, no action"
            assert "needs the API token" in capsys.readouterr().err
            monkeypatch.setenv("STREAMWATCH_API_TOKEN", "cli-api-token")
            code = await asyncio.to_thread(main, [*base, "--dry-run", "--reason", "by hand"])
            said = capsys.readouterr().out
            listed_code = await asyncio.to_thread(main, ["actions", "--url", daemon.url])
            listed = capsys.readouterr().out
        finally:
            await daemon.stop()
    assert code == 0 and said.startswith("dry_run:")
    assert not [c for c in sim.calls if c.method == "DELETE"], "a dry run touches no upstream"
    assert listed_code == 0
    header, row = listed.splitlines()[:2]
    assert header.split() == ["TIME", "ACTION", "KIND", "TARGET", "RESULT", "DETAIL"]
    assert "restart" in row and "stream=main" in row and "dry_run" in row
