"""Hostile or broken input: regexes, templates, YAML and silences that tried to hang, blow up or
crash the daemon (issue 8, items 9, 10, 11 and 15). Every test asserts a result, never a time."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from monitor.alerting.expr import EvalContext, ExprError, compile_expr
from monitor.alerting.silences import MaintenanceWindow, Silencer
from monitor.labels import Matcher, compile_re2

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
