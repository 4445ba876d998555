"""Hostile or broken input: regexes, templates, YAML and silences that tried to hang, blow up or
crash the daemon (issue 8, items 9, 10, 11 and 15). Every test asserts a result, never a time."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from monitor import yamlfile
from monitor.alerting.expr import EvalContext, ExprError, compile_expr
from monitor.alerting.rules import RuleError, load_rule_files
from monitor.alerting.silences import MaintenanceWindow, Silencer
from monitor.cli import main
from monitor.labels import Matcher, compile_re2
from monitor.yamlfile import (
    MAX_ALIAS_VALUES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    YamlError,
    load_yaml,
    parse_yaml,
)

NOW = 1_795_626_000.0  # 2026-11-25T17:00:00Z

# With backtracking, `(a+)+$` against n a's and a b tries about 2**n ways: 5,000 is forever.
BOMB_REGEX = "(a+)+$"
LONG_NO = "a" * 5000 + "b"
LONG_YES = "a" * 5000


def entity(**labels: str) -> EvalContext:
    return EvalContext(
        fields=MappingProxyType({"bytes_in": 10}),
        labels=MappingProxyType(labels),
        previous=None,
        previous_at=None,
        taken_at=NOW,
        now=NOW,
    )


# ---------------------------------------------------------------------------------------------
# Item 9: regexes are RE2, in rules, silences and maintenance windows


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        ("cam(?=1)", "lookahead (?=...)"),
        ("(?!cam)x", "negative lookahead (?!...)"),
        ("(?<=a)b", "lookbehind (?<=...)"),
        ("(?<!a)b", "negative lookbehind (?<!...)"),
        ("(a)\\1", "backreference \\1"),
        ("(?P<x>a)(?P=x)", "named backreference (?P=name)"),
        ("a++", "possessive quantifier ++"),
    ],
)
def test_rule_regex_that_re2_refuses_is_a_load_error_naming_it(pattern, construct):
    with pytest.raises(ExprError) as info:
        compile_expr(f"matches(stream, {pattern!r})")
    assert f"bad regex {pattern!r}" in info.value.message
    assert construct in info.value.message and "RE2" in info.value.message
    assert info.value.offset == len("matches(stream, ")


def test_catastrophic_rule_regex_matches_in_linear_time():
    expr = compile_expr(f"matches(stream, {BOMB_REGEX!r})")
    assert expr.test(entity(stream=LONG_NO)) == (False, False)
    assert expr.test(entity(stream=LONG_YES)) == (True, True)


def test_rule_regex_still_matches_the_whole_string():
    expr = compile_expr("matches(stream, 'cam[0-9]+')")
    assert expr.test(entity(stream="cam12")) == (True, True)
    assert expr.test(entity(stream="xcam12")) == (False, False)
    assert expr.test(entity(stream="cam12x")) == (False, False)
    assert expr.test(entity(stream="cam12\n")) == (False, False), "$ is the end, not a newline"
    # Not a string: unknown, as any other type error.
    assert compile_expr("matches(bytes_in, '1.*')").test(entity()) == (False, None)
    # A lone surrogate (JSON allows "\ud800") is matched, not a crash.
    assert compile_expr("matches(stream, 'a.b')").test(entity(stream="a\ud800b")) == (True, True)


def test_compile_re2_is_shared_by_matchers():
    regex = compile_re2("cam[0-9]+")
    assert regex.fullmatch("cam1") and not regex.fullmatch("cam1x")
    with pytest.raises(ValueError, match="lookbehind"):
        Matcher.parse('stream=~"(?<=a)b"')
    with pytest.raises(ValueError, match="not valid Unicode"):
        compile_re2("\ud800")


def test_catastrophic_silence_regex_matches_in_linear_time():
    silencer = Silencer(None)
    matcher = Matcher.from_api({"name": "stream", "value": BOMB_REGEX, "isRegex": True})
    silence = silencer.create([matcher], NOW, NOW + 60, "ops", "bomb", NOW)
    assert silencer.mutes({"stream": LONG_NO}, NOW + 1) == []
    assert silencer.mutes({"stream": LONG_YES}, NOW + 1) == [silence.id]


def test_catastrophic_maintenance_window_regex_matches_in_linear_time():
    window = MaintenanceWindow(
        "bomb", (Matcher.parse(f'stream=~"{BOMB_REGEX}"'),), starts_at=NOW, ends_at=NOW + 60
    )
    silencer = Silencer(None, [window])
    assert silencer.mutes({"stream": LONG_NO}, NOW + 1) == []
    assert silencer.mutes({"stream": LONG_YES}, NOW + 1) == ["window:bomb"]


def test_silence_lookaround_is_refused_with_a_message():
    with pytest.raises(ValueError) as info:
        Matcher.from_api({"name": "stream", "value": "cam(?!1)", "isRegex": True})
    assert "negative lookahead (?!...) is not supported by RE2" in str(info.value)
    assert "stream=~'cam(?!1)'" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Item 11: YAML bombs in config and rule files


def billion_laughs() -> str:
    """The classic: nine levels of nine aliases, 9**9 (387 million) strings once expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def deep_flow(levels: int) -> str:
    return "x: " + "[" * levels + "1" + "]" * levels + "\n"


def write_config(tmp_path, extra: str = "", rule_files: str = "[]") -> Path:
    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        f"listen: 127.0.0.1:0\nstate_dir: {tmp_path}\nrule_files: {rule_files}\n{extra}"
    )
    return path


def test_billion_laughs_config_is_refused_at_the_line_that_expands(tmp_path, capsys):
    bomb = billion_laughs()
    assert len(bomb) < 500
    path = write_config(tmp_path, bomb)
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    # Levels a..e expand to 9 + 81 + ... + 59,049 values; f (line 9 of the file) crosses 100,000.
    assert f"{path}:9: aliases expand to more than {MAX_ALIAS_VALUES} values" in err


def test_billion_laughs_rule_file_is_refused(tmp_path, capsys):
    rules = tmp_path / "bomb.yaml"
    rules.write_text(billion_laughs())
    with pytest.raises(RuleError) as info:
        load_rule_files([str(rules)], kinds=["ome.stream"])
    assert info.value.problems == [
        f"{rules}:6: aliases expand to more than {MAX_ALIAS_VALUES} values "
        "(nested aliases, a YAML bomb?)"
    ]
    path = write_config(tmp_path, rule_files=f"[{rules}]")
    assert main(["check", "-c", str(path)]) == 1
    assert f"{rules}:6: aliases expand" in capsys.readouterr().err


@pytest.mark.parametrize("libyaml", [True, False])
def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path, capsys, monkeypatch, libyaml):
    if not libyaml:
        monkeypatch.setattr(yamlfile, "_CLoader", None)
    rules = tmp_path / "deep.yaml"
    rules.write_text("groups: []\n" + deep_flow(5000))
    with pytest.raises(RuleError) as info:
        load_rule_files([str(rules)], kinds=["ome.stream"])
    assert info.value.problems == [f"{rules}:2: nested deeper than {MAX_DEPTH} levels"]
    path = write_config(tmp_path, "\n" + deep_flow(5000))
    assert main(["check", "-c", str(path)]) == 1
    assert f"{path}:5: nested deeper than {MAX_DEPTH} levels" in capsys.readouterr().err


def test_block_nesting_and_aliases_count_towards_depth():
    block = "".join(" " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + " " * 105 + "x\n"
    with pytest.raises(YamlError, match=rf"^f.yaml:{MAX_DEPTH + 1}: nested deeper than"):
        parse_yaml(block, "f.yaml")
    # Each piece is shallow; an alias used deep inside another makes it deep.
    shallow = "[" * 60 + "1" + "]" * 60
    chained = f"a: &a {shallow}\nb: &b [{'[' * 60}*a{']' * 60}]\n"
    with pytest.raises(YamlError, match=r"^f.yaml:2: nested deeper than 100 levels"):
        parse_yaml(chained, "f.yaml")


def test_ordinary_aliases_and_depth_still_load():
    loaded = parse_yaml("base: &b {severity: page, team: video}\nx: *b\ny: [*b, *b]\n", "f.yaml")
    assert loaded.data["y"] == [{"severity": "page", "team": "video"}] * 2
    assert parse_yaml(deep_flow(MAX_DEPTH - 2), "f.yaml").data is not None


def test_a_file_over_4_mib_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    with pytest.raises(YamlError) as info:
        load_yaml(path)
    assert info.value.problems == [f"{path}: larger than {MAX_FILE_BYTES} bytes (4 MiB); refused"]
    path.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(YamlError, match=r":2: not UTF-8 text"):
        load_yaml(path)
