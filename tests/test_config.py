"""Config loading: every kind of error names the file, line and key path; env interpolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import ConfigError, load_config
from monitor.schema import format_duration, parse_duration

GOOD = """\
listen: 127.0.0.1:9108
state_dir: ./state
sources:
  ome:
    - name: origin-1
      url: http://127.0.0.1:8081
      access_token: ${OME_ACCESS_TOKEN}
      interval: 5s
      expected_streams: ["default/app/stream"]
  smartstream:
    - name: main
      merchant_id: nttsmc
      api_key: ${SMARTSTREAM_API_KEY:-fallback-key}
      token: tok
  naver:
    - name: kr
      access_key: ak
      secret_key: ${NCP_SECRET_KEY}
      callback_token: cb
rule_files: ["rules/*.yaml"]
silences:
  - name: nightly
    matchers: ['alertname="OmeIngestStalled"', 'vhost=~"test.*"']
    schedule: "0 2 * * *"
    duration: 1h
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamwatch.yaml"
    path.write_text(text)
    return path


def problems(path: Path, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    return caught.value.problems


def test_good_config_interpolates_env_and_keeps_secrets_secret(tmp_path):
    env = {"OME_ACCESS_TOKEN": "s3cret-ome", "NCP_SECRET_KEY": "s3cret-ncp"}
    config = load_config(write(tmp_path, GOOD), env=env)
    ome = config.sources.ome[0]
    assert ome.access_token.get_secret_value() == "s3cret-ome"
    assert ome.interval == 5.0 and ome.timeout == 3.0
    assert config.sources.smartstream[0].api_key.get_secret_value() == "fallback-key"
    assert config.state_dir == tmp_path / "state", "relative paths are relative to the file"
    assert config.rule_files == [str(tmp_path / "rules/*.yaml")]
    dumped = repr(config) + str(config.model_dump())
    assert "s3cret" not in dumped


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("interval: 5s", "interval: 5"),
            ":8: sources.ome[0].interval: a duration needs a unit, like '5s'",
        ),
        (("interval: 5s", "interval: 5x"), ":8: sources.ome[0].interval: invalid duration '5x'"),
        (("interval: 5s", "intervall: 5s"), ":8: sources.ome[0].intervall: unknown key"),
        (
            ("      url: http://127.0.0.1:8081\n", ""),
            ":5: sources.ome[0].url: required key is missing",
        ),
        (
            ("url: http://127.0.0.1:8081", "url: 127.0.0.1:8081"),
            ":6: sources.ome[0].url: expected an http:// or https:// URL",
        ),
        (("listen: 127.0.0.1:9108", "listen: 9108"), ":1: listen: expected HOST:PORT"),
        (
            ("      token: tok\n", ""),
            ":11: sources.smartstream[0]: give either token, or mail_address and password",
        ),
        (
            ('schedule: "0 2 * * *"', 'schedule: "0 25 * * *"'),
            ":22: silences[0]: schedule '0 25 * * *'",
        ),
        (
            ("'vhost=~\"test.*\"'", "'vhost=~\"(\"'"),
            ":23: silences[0].matchers: matcher vhost=~'(': invalid regex",
        ),
        (("name: kr", "name: origin 1"), ":16: sources.naver[0].name: String should match pattern"),
    ],
)
def test_each_error_names_file_line_and_key(tmp_path, edit, expected):
    path = write(tmp_path, GOOD.replace(*edit))
    found = problems(path, {"OME_ACCESS_TOKEN": "x", "NCP_SECRET_KEY": "y"})
    assert any(p.startswith(str(path)) and expected in p for p in found), found


def test_missing_env_var_is_reported_with_every_other_problem(tmp_path):
    path = write(tmp_path, GOOD.replace("interval: 5s", "interval: soon"))
    found = problems(path, {})
    assert (
        f"{path}:7: sources.ome[0].access_token: environment variable OME_ACCESS_TOKEN is not set"
        in found[0]
    )
    assert any("NCP_SECRET_KEY is not set" in p for p in found)
    assert any("sources.ome[0].interval" in p for p in found)


def test_duplicate_source_names_and_yaml_errors(tmp_path):
    text = GOOD.replace("name: main", "name: main\n      merchant_id: again")
    path = write(tmp_path, text)
    found = problems(path, {"OME_ACCESS_TOKEN": "x", "NCP_SECRET_KEY": "y"})
    assert any("duplicate key" in p and ":13:" in p for p in found), found
    path = write(tmp_path, "sources:\n  ome: [\n")
    [problem] = problems(path, {})
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_dollar_dollar_is_a_literal_dollar(tmp_path):
    text = GOOD.replace("access_token: ${OME_ACCESS_TOKEN}", "access_token: pa$$word")
    config = load_config(write(tmp_path, text), env={"NCP_SECRET_KEY": "y"})
    assert config.sources.ome[0].access_token.get_secret_value() == "pa$word"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5), ("2m", 120), ("1h", 3600), ("1m30s", 90), ("1d", 86400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


def test_check_command_lists_every_error_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OME_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("NCP_SECRET_KEY", "y")
    path = write(
        tmp_path, GOOD.replace("interval: 5s", "interval: 5").replace("rule_files", "rule_filez")
    )
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert "OME_ACCESS_TOKEN is not set" in err
    assert "sources.ome[0].interval" in err
    assert "rule_filez: unknown key" in err


def test_check_command_validates_rule_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OME_ACCESS_TOKEN", "x")
    monkeypatch.setenv("NCP_SECRET_KEY", "y")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "bad.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: Bad\n        kind: ome.stream\n        expr: __import__('os')\n"
    )
    path = write(tmp_path, GOOD)
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'rules' / 'bad.yaml'}:6: rule 'Bad': groups[0].rules[0].expr: invalid expression"
        in err
    )
    (tmp_path / "rules" / "bad.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: Good\n        kind: ome.stream\n        expr: not present\n"
    )
    assert main(["check", "-c", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
