"""Rule expressions: every operator and function, unknowns, `$value`, hostile inputs, bounds."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from monitor.alerting.expr import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_NODES,
    MAX_SOURCE,
    EvalContext,
    ExprError,
    Missing,
    compile_expr,
)

NOW = 1_000.0

FIELDS: dict[str, Any] = {
    "present": True,
    "absent_flag": False,
    "last_recv": NOW - 25.0,
    "bytes_in": 5_000,
    "x": 10,
    "f": 2.5,
    "zero": 0,
    "neg": -3,
    "big": 10**300,
    "huge_float": 1e300,
    "s": "Hello",
    "empty": "",
    "status": "encode_status_running",
    "source_type": "Rtmp",
    "channel_name": "prod-main",
    "nothing": None,
    "connections": MappingProxyType({"hls": 3, "webrtc": 1}),
    "n": 3,
    "count_str": "42",
    "odd": ["a", "list"],  # a type no source should send: must not break anything
}
LABELS = {"vhost": "default", "app": "live", "stream": "cam1", "x": "label-x", "nothing": "lbl"}
PREVIOUS: dict[str, Any] = {
    "bytes_in": 1_000,
    "x": 4,
    "f": 2.5,
    "status": "encode_status_pending",
    "s": "Hello",
    "nothing": "was-set",
}


def ctx(
    fields: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    previous: dict[str, Any] | None = PREVIOUS,
    previous_at: float | None = 990.0,
    taken_at: float = 1_000.0,
    now: float = NOW,
) -> EvalContext:
    return EvalContext(
        fields=MappingProxyType(dict(FIELDS if fields is None else fields)),
        labels=MappingProxyType(dict(LABELS if labels is None else labels)),
        previous=None if previous is None else MappingProxyType(dict(previous)),
        previous_at=previous_at,
        taken_at=taken_at,
        now=now,
    )


def check(source: str, context: EvalContext | None = None) -> tuple[bool, Any]:
    return compile_expr(source).test(context or ctx())


def value(source: str, context: EvalContext | None = None) -> Any:
    return compile_expr(source).evaluate(context or ctx())


def rejected(source: str) -> ExprError:
    with pytest.raises(ExprError) as info:
        compile_expr(source)
    return info.value


# ---------------------------------------------------------------------------------------------
# The examples from the design


@pytest.mark.parametrize(
    ("source", "fields", "expected"),
    [
        ("present and age(last_recv) > 10", {"present": True, "last_recv": NOW - 25}, (True, 25.0)),
        ("present and age(last_recv) > 10", {"present": True, "last_recv": NOW - 5}, (False, 5.0)),
        ("present and age(last_recv) > 10", {"present": False, "last_recv": 0}, (False, False)),
        ("present and age(last_recv) > 10", {"present": True}, (False, None)),
        (
            'rate(bytes_in) < 1000 and source_type == "Rtmp"',
            {"bytes_in": 1_500, "source_type": "Rtmp"},
            (True, "Rtmp"),
        ),
        (
            'rate(bytes_in) < 1000 and source_type == "Rtmp"',
            {"bytes_in": 50_000, "source_type": "Rtmp"},
            (False, 4_900.0),
        ),
        (
            'status not in ("encode_status_running", "encode_status_pending")',
            {"status": "encode_status_error"},
            (True, "encode_status_error"),
        ),
        (
            'status not in ("encode_status_running", "encode_status_pending")',
            {"status": "encode_status_running"},
            (False, "encode_status_running"),
        ),
        (
            'matches(channel_name, "prod-.*") and changed(status)',
            {"channel_name": "prod-7", "status": "encode_status_error"},
            (True, True),
        ),
        (
            'matches(channel_name, "prod-.*") and changed(status)',
            {"channel_name": "prod-7", "status": "encode_status_pending"},
            (False, False),
        ),
        (
            'matches(channel_name, "prod-.*") and changed(status)',
            {"channel_name": "stage-7", "status": "encode_status_error"},
            (False, False),
        ),
    ],
)
def test_design_examples(source: str, fields: dict[str, Any], expected: tuple[bool, Any]) -> None:
    assert check(source, ctx(fields=fields)) == expected


# ---------------------------------------------------------------------------------------------
# Names and constants


def test_names_resolve_field_then_label() -> None:
    assert value("stream") == "cam1"  # a label
    assert value("x") == 10  # a field wins over the label of the same name
    assert value("nothing") == "lbl"  # a null field falls back to the label


@pytest.mark.parametrize(
    "source", ["missing_field", "missing_field > 1", "not missing_field", "-missing_field"]
)
def test_missing_name_is_false(source: str) -> None:
    assert check(source) == (False, None)
    with pytest.raises(Missing):
        value(source)


def test_null_field_counts_as_missing() -> None:
    context = ctx(fields={"v": None}, labels={})
    assert check("v", context) == (False, None)
    assert check("v > 1", context) == (False, None)
    assert check("v != 1", context) == (False, None)  # not "null is different from 1"
    assert check("not v", context) == (False, None)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true", True),
        ("True", True),
        ("false", False),
        ("False", False),
        ("none", None),
        ("None", None),
        ("42", 42),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("'single'", "single"),
        ('"double"', "double"),
    ],
)
def test_constants(source: str, expected: Any) -> None:
    assert value(source) == expected
    assert type(value(source)) is type(expected)
    assert compile_expr(source).names == frozenset()


def test_names_lists_fields_and_labels_referenced() -> None:
    expr = compile_expr(
        "present and age(last_recv) > 10 and rate(bytes_in) < x or has(y) or z == none"
    )
    assert expr.names == frozenset({"present", "last_recv", "bytes_in", "x", "y", "z"})
    assert compile_expr("true and 1 < 2").names == frozenset()


# ---------------------------------------------------------------------------------------------
# Arithmetic


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x + 1", 11),
        ("x - 1", 9),
        ("x * 3", 30),
        ("x / 4", 2.5),
        ("x // 4", 2),
        ("x % 4", 2),
        ("neg % 4", 1),
        ("-x", -10),
        ("+x", 10),
        ("--x", 10),
        ("x ** 2", 100),
        ("2 ** -1", 0.5),
        ("f * 2", 5.0),
        ("x + f", 12.5),
        ("s + '!'", "Hello!"),
        ("stream + '/' + app", "cam1/live"),
        ("1 + 2 * 3 - 4 / 2", 5.0),
        ("(1 + 2) * 3", 9),
        ("true + 1", 2),
    ],
)
def test_arithmetic(source: str, expected: Any) -> None:
    assert value(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "x / zero",
        "x // zero",
        "x % zero",
        "zero ** -1",
        "s - 1",
        "s + 1",
        "-s",
        "s * n",  # no string repetition at run time either
        "n * s",
        "s % x",  # no printf formatting
        "x ** big",  # exponent bound at run time
        "big ** 64",  # integer result bound
        "huge_float ** 2",  # float overflow
        "neg ** 0.5",  # would be complex
        "connections + 1",
        "odd * 2",
    ],
)
def test_arithmetic_errors_are_false(source: str) -> None:
    assert check(source) == (False, None)
    assert check(f"{source} > 0 or {source} <= 0") == (False, None)


def test_power_within_bounds() -> None:
    assert value("2 ** 64") == 2**64
    assert value("x ** 64") == 10**64
    assert value("f ** 0.5") == pytest.approx(1.5811, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Comparisons


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x == 10", True),
        ("x == 11", False),
        ("x != 11", True),
        ("x != 10", False),
        ("x < 11", True),
        ("x < 10", False),
        ("x <= 10", True),
        ("x <= 9", False),
        ("x > 9", True),
        ("x > 10", False),
        ("x >= 10", True),
        ("x >= 11", False),
        ("x == f", False),
        ("x > f", True),
        ("f <= x", True),
        ("0 < x < 11", True),
        ("0 < x < 10", False),
        ("0 < x <= 10 < 11", True),
        ("11 > x > f > 2", True),
        ("1 < 2 < 3", True),
        ("s == 'Hello'", True),
        ("s == 1", False),  # equality across types is just false
        ("s != 1", True),
        ("s < 'World'", True),
        ("x in (1, 10, 100)", True),
        ("x in [1, 2]", False),
        ("x not in [1, 2]", True),
        ("x not in (10,)", False),
        ("x in (n, x)", True),  # elements computed per evaluation
        ("x in (n, 1)", False),
        ("status in ('encode_status_running',)", True),
        ("'ell' in s", True),
        ("'xyz' in s", False),
        ("'ell' not in s", False),
        ("'hls' in connections", True),
        ("'dash' in connections", False),
        ("x in ()", False),
    ],
)
def test_comparisons(source: str, expected: bool) -> None:
    assert value(source) is expected
    assert check(source)[0] is expected


@pytest.mark.parametrize(
    "source",
    [
        "s < 1",  # ordering across types
        "s > x",
        "x in s",  # int in str
        "x in 5",
        "connections in (1, 2)",  # unhashable left side
        "connections < 1",
        "odd in ('a',)",
        "1 < s < 3",
    ],
)
def test_comparison_type_errors_are_false(source: str) -> None:
    assert check(source) == (False, None)


# ---------------------------------------------------------------------------------------------
# Boolean logic and unknowns (three-valued, like SQL)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("present and x > 1", True),
        ("present and x > 100", False),
        ("absent_flag and x > 1", False),
        ("present or missing > 1", True),  # short-circuit never looks at `missing`
        ("absent_flag or x > 1", True),
        ("absent_flag or x > 100", False),
        ("not absent_flag", True),
        ("not present", False),
        ("not not present", True),
        ("present and x > 1 and s == 'Hello'", True),
        ("present and x > 1 and s == 'nope'", False),
        ("absent_flag or zero or x == 10", True),
        # unknown or true = true; unknown or false = unknown (false)
        ("missing > 1 or present", True),
        ("missing > 1 or absent_flag", False),
        ("x / zero > 1 or present", True),
        ("missing > 1 or missing2 > 1", False),
        # unknown and false = false, so its negation is true; unknown and true = unknown
        ("not (missing > 1 and absent_flag)", True),
        ("not (missing > 1 and present)", False),
        ("not (absent_flag and missing > 1)", True),
        # not unknown = unknown
        ("not (missing > 1)", False),
        ("not (missing > 1 or absent_flag)", False),
        ("not missing", False),
        ("age(last_recv) > 10 or not present", True),
    ],
)
def test_boolean_logic(source: str, expected: bool) -> None:
    assert check(source)[0] is expected


def test_unknown_or_true_for_an_absent_stream() -> None:
    expr = compile_expr("age(last_recv) > 10 or not present")
    assert expr.test(ctx(fields={"present": False}))[0] is True
    assert expr.test(ctx(fields={"present": True}))[0] is False
    assert expr.test(ctx(fields={"present": True, "last_recv": 0.0})) == (True, NOW)


def test_and_or_values_follow_python() -> None:
    assert value("zero or x") == 10
    assert value("x and s") == "Hello"
    assert value("empty or zero") == 0
    assert value("zero and missing") == 0
    with pytest.raises(Missing):
        value("missing or zero")  # unknown or false: unknown
    assert value("missing and zero") == 0  # unknown and false: false


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x if present else 0", 10),
        ("x if absent_flag else 0", 0),
        ("missing if has(missing) else -1", -1),
        ("1 if missing else 2", Missing),
    ],
)
def test_if_expression(source: str, expected: Any) -> None:
    if expected is Missing:
        with pytest.raises(Missing):
            value(source)
        assert check(source) == (False, None)
    else:
        assert value(source) == expected


# ---------------------------------------------------------------------------------------------
# none and has()


@pytest.mark.parametrize(
    ("fields", "is_none", "has"),
    [
        ({"v": 1}, False, True),
        ({"v": 0}, False, True),
        ({"v": ""}, False, True),
        ({"v": False}, False, True),
        ({"v": None}, True, False),
        ({}, True, False),
    ],
)
def test_none_comparison_and_has(fields: dict[str, Any], is_none: bool, has: bool) -> None:
    context = ctx(fields=fields, labels={})
    assert check("v == none", context)[0] is is_none
    assert check("none == v", context)[0] is is_none
    assert check("v == None", context)[0] is is_none
    assert check("v != none", context)[0] is has
    assert check("has(v)", context)[0] is has
    assert check("not has(v)", context)[0] is is_none


def test_has_sees_labels() -> None:
    assert value("has(stream)") is True
    assert value("has(nope)") is False


# ---------------------------------------------------------------------------------------------
# Functions over the previous snapshot


def test_rate_is_per_second_increase() -> None:
    # 5000 - 1000 over 10 s
    assert value("rate(bytes_in)") == 400.0
    assert check("rate(bytes_in) > 100") == (True, 400.0)


def test_rate_counter_reset_counts_from_zero() -> None:
    context = ctx(fields={"bytes_in": 300}, previous={"bytes_in": 50_000})
    assert value("rate(bytes_in)", context) == 30.0  # the increase is the current value


@pytest.mark.parametrize(
    ("context", "delta_known"),
    [
        (ctx(previous=None, previous_at=None), False),  # first snapshot
        (ctx(previous={"other": 1}), False),  # field new since the previous snapshot
        (ctx(fields={"present": True}), False),  # field gone now
        (ctx(fields={"bytes_in": "5000"}), False),  # not a number
        (ctx(fields={"bytes_in": True}, previous={"bytes_in": False}), False),  # a flag
        (ctx(fields={"bytes_in": None}), False),
        (ctx(previous_at=None), True),  # rate needs the time between the snapshots
        (ctx(previous_at=1_000.0), True),  # no time elapsed
        (ctx(previous_at=1_005.0), True),  # clock went backwards
    ],
)
def test_rate_and_delta_unknown(context: EvalContext, delta_known: bool) -> None:
    assert compile_expr("rate(bytes_in) >= 0").test(context) == (False, None)
    assert compile_expr("rate(bytes_in) < 0").test(context) == (False, None)
    expected = (True, 4_000) if delta_known else (False, None)
    assert compile_expr("delta(bytes_in) >= 0").test(context) == expected


def test_delta() -> None:
    assert value("delta(bytes_in)") == 4_000
    assert value("delta(x)") == 6
    assert value("delta(f)") == 0.0
    context = ctx(fields={"bytes_in": 300}, previous={"bytes_in": 50_000})
    assert value("delta(bytes_in)", context) == -49_700  # no reset handling: a gauge
    assert check("delta(bytes_in) > 0", ctx(previous=None)) == (False, None)
    # delta does not need the previous timestamp
    assert value("delta(bytes_in)", ctx(previous_at=None)) == 4_000


@pytest.mark.parametrize(
    ("fields", "previous", "expected"),
    [
        ({"status": "b"}, {"status": "a"}, (True, True)),
        ({"status": "a"}, {"status": "a"}, (False, False)),
        ({"status": 1}, {"status": 1.0}, (False, False)),
        ({"status": "a"}, {"status": None}, (True, True)),  # nulls compare as values
        ({"status": None}, {"status": "a"}, (True, True)),
        ({"status": "a"}, None, (False, None)),  # first snapshot
        ({"status": "a"}, {}, (False, None)),  # new field
        ({}, {"status": "a"}, (False, None)),  # gone field
    ],
)
def test_changed(
    fields: dict[str, Any], previous: dict[str, Any] | None, expected: tuple[bool, Any]
) -> None:
    assert check("changed(status)", ctx(fields=fields, labels={}, previous=previous)) == expected


def test_rate_delta_changed_ignore_labels() -> None:
    context = ctx(fields={}, labels={"stream": "a"}, previous={})
    for fn in ("rate", "delta", "changed"):
        assert check(f"{fn}(stream) or true", context)[0] is True  # unknown or true
        assert check(f"{fn}(stream)", context) == (False, None)


# ---------------------------------------------------------------------------------------------
# Other functions


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("age(last_recv)", 25.0),
        ("age(900)", 100.0),
        ("age(2000)", -1000.0),
        ("abs(neg)", 3),
        ("abs(-2.5)", 2.5),
        ("min(x, f)", 2.5),
        ("max(x, f)", 10),
        ("min(x, f, neg, 7)", -3),
        ("max('a', s)", "a"),
        ("len(s)", 5),
        ("len(empty)", 0),
        ("len(connections)", 2),
        ("startswith(channel_name, 'prod-')", True),
        ("startswith(channel_name, 'stage-')", False),
        ("endswith(channel_name, '-main')", True),
        ("endswith(channel_name, 'prod')", False),
        ("matches(channel_name, 'prod-.*')", True),
        ("matches(channel_name, 'prod')", False),  # anchored: the whole string must match
        ("matches(channel_name, '.*-ma')", False),
        ("matches(channel_name, '(?i)PROD-MAIN')", True),
        ("matches(stream, 'cam[0-9]+')", True),
        ("lower(s)", "hello"),
        ("upper(s)", "HELLO"),
        ("round(f)", 2),
        ("round(3.14159, 2)", 3.14),
        ("round(1234, -2)", 1200),
        ("int(f)", 2),
        ("int(count_str)", 42),
        ("int(true)", 1),
        ("float(count_str)", 42.0),
        ("float(x)", 10.0),
        ("str(x)", "10"),
        ("str(f) + 's'", "2.5s"),
        ("has(x)", True),
        ("has(missing)", False),
    ],
)
def test_functions(source: str, expected: Any) -> None:
    result = value(source)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "source",
    [
        "age(s)",
        "age(nothing_at_all)",
        "abs(s)",
        "min(x, s)",
        "len(x)",
        "startswith(x, 'a')",
        "startswith(s, x)",
        "endswith(odd, 'a')",
        "matches(x, 'a')",
        "matches(odd, 'a')",
        "lower(x)",
        "upper(odd)",
        "round(s)",
        "round(f, 1000)",  # digits bounded
        "round(x, -1000000000)",
        "round(f, 1.5)",
        "int(s)",
        "int(huge_float * huge_float)",  # inf
        "float(s)",
        "int(odd)",
    ],
)
def test_function_errors_are_false(source: str) -> None:
    assert check(source) == (False, None)


def test_functions_list_is_exactly_the_documented_one() -> None:
    assert (
        frozenset(
            [
                *("age", "rate", "delta", "changed", "has", "abs", "min", "max", "len"),
                *("startswith", "endswith", "matches", "lower", "upper"),
                *("round", "int", "float", "str", "get"),
            ]
        )
        == FUNCTIONS
    )


# ---------------------------------------------------------------------------------------------
# $value


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x > 3", (True, 10)),
        ("x > 30", (False, 10)),
        ("3 < x", (True, 10)),  # a constant on the left: the other side
        ("0 < x < 100", (True, 10)),
        ("0 < x < 5", (False, 10)),
        ("present and x > 3", (True, 10)),  # left of the last comparison
        ("present and f < x", (True, 2.5)),
        ("absent_flag and x > 3", (False, False)),
        ("x > 100 or f > 1", (True, 2.5)),
        ("x > 1 or f > 100", (True, 10)),
        ("not (x > 30)", (True, 10)),
        ("present", (True, True)),
        ("rate(bytes_in)", (True, 400.0)),
        ("rate(bytes_in) * 8 > 1000", (True, 3200.0)),
        ("age(last_recv)", (True, 25.0)),
        ("x - 10", (False, 0)),
        ("s", (True, "Hello")),
        ("empty", (False, "")),
        ("x if present else f", (True, 10)),
        ("(x > 3) if present else (f > 3)", (True, 10)),
        ("(x > 3) if absent_flag else (f > 3)", (False, 2.5)),
        ("x == none", (False, False)),
        ("1 < 2", (True, True)),  # a constant expression is its own value
        ("missing > 1 or x > 3", (True, 10)),
        ("missing > 1 and x > 30", (False, 10)),  # unknown and false = false
    ],
)
def test_value(source: str, expected: tuple[bool, Any]) -> None:
    truth, shown = check(source)
    assert (truth, shown) == expected
    assert type(truth) is bool
    assert type(shown) is type(expected[1])


@pytest.mark.parametrize("source", ["x / zero", "s < 1", "lower(x)", "missing", "rate(nope)"])
def test_evaluate_raises_only_missing(source: str) -> None:
    with pytest.raises(Missing):
        value(source)


def test_evaluate_returns_the_value_and_test_the_truth() -> None:
    expr = compile_expr("x * 2")
    assert expr.evaluate(ctx()) == 20
    assert expr.test(ctx()) == (True, 20)
    assert expr.test(ctx(fields={"x": 0})) == (False, 0)


def test_a_compiled_expression_is_reusable() -> None:
    expr = compile_expr("present and age(last_recv) > 10")
    results = [expr.test(ctx(fields={"present": True, "last_recv": NOW - i})) for i in (5, 15, 25)]
    assert results == [(False, 5.0), (True, 15.0), (True, 25.0)]
    assert expr.source == "present and age(last_recv) > 10"
    assert "present and age" in repr(expr)


def test_test_never_raises_on_strange_field_types() -> None:
    strange = ctx(fields={"x": object(), "y": [1, 2], "z": {"a": 1}}, labels={})
    for source in (
        "x > 1",
        "y + 1",
        "len(z) > 0 and z > 1",
        "lower(x)",
        "y in (1,)",  # unhashable
        "y * 3",
    ):
        assert compile_expr(source).test(strange) == (False, None)
    assert compile_expr("x in (1, 2)").test(strange)[0] is False  # hashable: simply not in it


# ---------------------------------------------------------------------------------------------
# Hostile inputs: rejected at load, with a message and a column


@pytest.mark.parametrize(
    ("source", "message", "offset"),
    [
        ("().__class__", "attribute access is not allowed: '.__class__'", 3),
        ("__import__('os')", "names starting with '_' are not allowed", 0),
        ("a.b.c", "attribute access is not allowed: '.b'", 2),
        ("x[0]", "subscripts", 1),
        ("x[1:2]", "subscripts", 1),
        ("(lambda: 1)()", "lambda is not allowed", 1),
        ("[x for x in y]", "comprehensions are not allowed", 0),
        ("(x for x in y)", "comprehensions are not allowed", 0),
        ("{x for x in y}", "comprehensions are not allowed", 0),
        ("9**9**9", "exponent 387420489 is out of bounds", 3),
        ('"a"*10**9', "strings cannot be repeated", 0),
        ("open('/etc/passwd')", "unknown function 'open'", 0),
        ("getattr(x, 'y')", "unknown function 'getattr'", 0),
        ("eval('1')", "unknown function 'eval'", 0),
        ("age(x)(1)", "calling the result of a call is not allowed", 0),
        ("x.lower()", "write lower(x) instead of x.lower()", 0),
        ("x.__class__.__bases__", "attribute access is not allowed: '.__class__'", 2),
        ("present and x.__dict__", "attribute access is not allowed: '.__dict__'", 14),
        ("_x", "names starting with '_' are not allowed", 0),
        ("__builtins__", "names starting with '_' are not allowed", 0),
        ("has(_x)", "names starting with '_' are not allowed", 4),
        ("min(x, y, key=z)", "min() takes no keyword arguments", 10),
        ("max(*x, 1)", "star arguments are not allowed", 4),
        ("abs(**x)", "abs() takes no keyword arguments", 4),
        ('f"{x}"', "f-strings are not allowed", 0),
        ("(y := 1)", "assignment (:=) is not allowed", 1),
        ("{1, 2}", "set literals are not allowed", 0),
        ("{1: 2}", "dict literals are not allowed", 0),
        ("x in {1, 2}", "set literals are not allowed", 5),
        ("[1, 2]", "only allowed on the right of 'in'", 0),
        ("x, y", "only allowed on the right of 'in'", 0),
        ("x < (1, 2)", "only allowed on the right of 'in'", 4),
        ("x is None", "'is' is not allowed", 0),
        ("x is not y", "'is' is not allowed", 0),
        ("~x", "operator '~' is not allowed", 0),
        ("1 << 1000", "operator '<<' is not allowed", 0),
        ("x | y", "operator '|' is not allowed", 0),
        ("x & y", "operator '&' is not allowed", 0),
        ("x ^ y", "operator '^' is not allowed", 0),
        ("x @ y", "operator '@' is not allowed", 0),
        ("b'x'", "only numbers, strings, true/false and none", 0),
        ("1j", "only numbers, strings, true/false and none", 0),
        ("...", "only numbers, strings, true/false and none", 0),
        ("yield x", "yield is not allowed", 0),
        ("await x", "await is not allowed", 0),
        ("nosuch(x)", "unknown function 'nosuch'", 0),
        ("age(x, y)", "age() takes 1 argument (2 given)", 0),
        ("lower()", "lower() takes 1 argument (0 given)", 0),
        ("min(x)", "min() takes at least 2 arguments (1 given)", 0),
        ("round(x, 1, 2)", "round() takes 1 to 2 arguments (3 given)", 0),
        ("rate(1)", "rate() takes a bare field name", 5),
        ("rate(x + 1)", "rate() takes a bare field name", 5),
        ("delta(rate(x))", "delta() takes a bare field name", 6),
        ("changed('status')", "changed() takes a bare field name", 8),
        ("has(true)", "has() takes a bare field name", 4),
        ("matches(x, y)", "matches() needs a string literal", 11),
        ("matches(x, 'a' + 'b')", "matches() needs a string literal", 11),
        ("matches(x, '(')", "bad regex '('", 11),
        ("matches(x, '[a-')", "bad regex", 11),
        ("x > 1/0", "division by zero", 4),
        ("2 ** 65", "exponent 65 is out of bounds", 5),
        ("2 ** -65", "exponent -65 is out of bounds", 5),
        ("(10 ** 64) ** 64", "would exceed 4096 bits", 0),
        ("1e300 ** 2", "Numerical result out of range", 0),
        ("'%999999999d' % 1", "no string formatting", 0),
        ("'a' * 3", "strings cannot be repeated", 0),
        ("round(1.5, 1000)", "digits must be within", 0),
        ("x > 1 # comment", "comments are not allowed", 6),
        ("x >", "incomplete expression", 3),
        ("x y", "invalid syntax", 0),
        ("a) or (b", "unmatched ')'", 1),
        ("  x\n ) or (y", "unmatched ')'", 5),
        ("x if y", "expected 'else'", 0),
        ("", "empty expression", 0),
        ("   \n ", "empty expression", 0),
        ("import os", "invalid syntax", 0),
        ("x = 1", "invalid syntax", 0),
        ("x > 1; y", "invalid syntax", 5),
    ],
)
def test_rejected(source: str, message: str, offset: int) -> None:
    error = rejected(source)
    assert message in error.message
    assert error.offset == offset
    assert isinstance(error, ValueError)
    assert f"column {offset}" in str(error)


def test_column_counts_characters_not_bytes() -> None:
    error = rejected("'é' + x.y")
    assert error.offset == 8  # UTF-8 would say 9
    assert "'é' + x.y"[error.offset :] == "y"


def test_multi_line_expression() -> None:
    expr = compile_expr("present\n  and age(last_recv) > 10\n")
    assert expr.test(ctx()) == (True, 25.0)
    error = rejected("present and\n  x.y > 1")
    assert error.offset == len("present and\n  x.")


def test_non_string_source_is_rejected() -> None:
    with pytest.raises(ExprError, match="must be a string"):
        compile_expr(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Bounds


def test_source_length_bound() -> None:
    longest = "x" * MAX_SOURCE
    assert compile_expr(longest).names == frozenset({longest})
    error = rejected("x" * (MAX_SOURCE + 1))
    assert "2001 characters long; the limit is 2000" in error.message


def test_node_count_bound() -> None:
    ok = "x in (" + ", ".join(["1"] * (MAX_NODES - 3)) + ")"  # compare, name, tuple + items
    assert check(ok) == (False, 10)
    error = rejected("x in (" + ", ".join(["1"] * (MAX_NODES - 1)) + ")")
    assert f"more than {MAX_NODES} nodes" in error.message
    assert error.offset is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1, 150, 500])
def test_parenthesis_nesting_bound(depth: int) -> None:
    source = "(" * depth + "x" + ")" * depth
    if depth <= MAX_DEPTH:
        assert value(source) == 10
    else:
        error = rejected(source)
        assert f"nested more than {MAX_DEPTH} levels" in error.message
        assert error.offset == MAX_DEPTH


@pytest.mark.parametrize(
    "template",
    [
        "-{}",  # unary chains
        "not {}",
        "{} + 1",  # left-nested binary operators
        "abs({})",  # nested calls
    ],
)
def test_expression_nesting_bound(template: str) -> None:
    def nest(levels: int) -> str:
        source = "x"
        for _ in range(levels):
            source = template.format(source)
        return source

    compile_expr(nest(MAX_DEPTH - 1))
    error = rejected(nest(MAX_DEPTH + 1))
    assert f"more than {MAX_DEPTH} levels" in error.message


def test_unary_chain_longer_than_parser_likes() -> None:
    error = rejected("-" * 1999 + "1")
    assert "nested more than" in error.message or "cannot parse" in error.message


def test_regex_compiled_once_at_load() -> None:
    expr = compile_expr("matches(stream, 'cam[0-9]+')")
    assert expr.test(ctx()) == (True, True)
    assert expr.test(ctx(labels={"stream": "camX"})) == (False, False)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('get(connections, "llhls") > 5', (True, 7)),
        ('get(connections, "webrtc") > 5', (False, 0)),
        ('get(connections, "nosuch") > 5', (False, None)),
        ('get(stream, "x") > 5', (False, None)),
        ('get(connections, "llhls") > 5 or not present', (True, 7)),
    ],
)
def test_get_reads_one_key_of_a_map_field(source, expected):
    ctx = EvalContext(
        fields={"connections": {"llhls": 7, "webrtc": 0}, "present": True},
        labels={"stream": "main"},
        previous=None,
        previous_at=None,
        taken_at=0.0,
        now=0.0,
    )
    assert compile_expr(source).test(ctx) == expected
