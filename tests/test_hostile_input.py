"""Hostile or broken input: regexes, templates, YAML and silences that tried to hang, blow up or
crash the daemon (issue 8, items 9, 10, 11 and 15). Every test asserts a result, never a time."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from monitor import yamlfile
from monitor.alerting import silences
from monitor.alerting.expr import EvalContext, ExprError, compile_expr
from monitor.alerting.rules import RuleError, load_rule_files
from monitor.alerting.silences import (
    MAX_ACTIVE_SILENCES,
    MAX_MATCHERS,
    MAX_TEXT,
    MaintenanceWindow,
    Silence,
    Silencer,
)
from monitor.alerting.template_bounds import MAX_RENDERED, MAX_SOURCE, MAX_STEPS, MAX_WORK
from monitor.alerting.templates import TemplateError, compile_template, template_context
from monitor.cli import main
from monitor.labels import Matcher, compile_re2
from monitor.store import Store
from monitor.web import Views, build_app
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


# ---------------------------------------------------------------------------------------------
# Item 15: silences


def matcher(text: str = 'stream="cam1"') -> Matcher:
    return Matcher.parse(text)


def api_app(silencer: Silencer, now: float = NOW) -> web.Application:
    views = Views(
        exporter=None,  # type: ignore[arg-type]  # the silence routes read none of these
        engine=None,  # type: ignore[arg-type]
        silencer=silencer,
        sources=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        callback_requests=None,  # type: ignore[arg-type]
        api_token=lambda: "t0ken",
        clock=lambda: now,
    )
    return build_app(views)


AUTH = {"Authorization": "Bearer t0ken"}


def silence_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "matchers": [{"name": "stream", "value": "cam1", "isRegex": False}],
        "endsAt": "2026-11-25T18:00:00Z",
        "createdBy": "ops",
        "comment": "maintenance",
    }
    body.update(overrides)
    return body


async def test_api_refuses_a_far_future_silence_and_keeps_listing(tmp_path):
    silencer = Silencer(None)
    async with TestClient(TestServer(api_app(silencer))) as client:
        for ends in ("9999-12-31T23:59:59-05:00", "9999-12-31T23:00:00+14:00", "2300-01-01T00:00Z"):
            resp = await client.post(
                "/api/v1/silences", json=silence_body(endsAt=ends), headers=AUTH
            )
            assert resp.status == 400, ends
            assert "more than 100 years ahead" in (await resp.json())["error"]
        resp = await client.post(
            "/api/v1/silences", json=silence_body(startsAt="1999-12-31T23:00:00Z"), headers=AUTH
        )
        assert resp.status == 400 and "before 2000-01-01" in (await resp.json())["error"]
        resp = await client.post("/api/v1/silences", json=silence_body(), headers=AUTH)
        assert resp.status == 200
        resp = await client.get("/api/v1/silences")
        assert resp.status == 200
        assert [s["endsAt"] for s in (await resp.json())["data"]] == ["2026-11-25T18:00:00.000Z"]


def test_a_silence_stored_with_an_impossible_end_still_lists():
    """Saved by an older version, before times were checked: to_api must not raise."""
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))).timestamp()
    silence = Silence("x", (matcher(),), NOW, far, "ops", "old", NOW)
    assert silence.to_api(NOW)["endsAt"] == "9999-12-31T23:59:59.999Z"
    assert Silence("y", (matcher(),), -1e20, 1e20, "ops", "", NOW).to_api(NOW)["startsAt"] == (
        "0001-01-01T00:00:00.000Z"
    )


@pytest.mark.parametrize(
    "matchers",
    [
        ['stream=~".*"'],
        ['stream=""'],
        ['stream!="cam1"', 'app=~"a*"'],
        ['stream!~".+"'],
    ],
)
def test_a_silence_whose_matchers_all_match_the_empty_string_is_refused(matchers):
    with pytest.raises(ValueError, match="at least one matcher must not match the empty string"):
        Silencer(None).create([matcher(m) for m in matchers], NOW, NOW + 60, "ops", "all", NOW)
    # One matcher that needs a value is enough.
    both = [matcher(m) for m in matchers] + [matcher('app="live"')]
    assert Silencer(None).create(both, NOW, NOW + 60, "ops", "ok", NOW).matchers == tuple(both)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"name": "stream", "value": "cam1", "isRegex": "false"},
            'isRegex must be true or false, not "false"',
        ),
        ({"name": "stream", "value": "c.*", "isRegex": 1}, "isRegex must be true or false, not 1"),
        ({"name": "stream", "value": "cam1", "isEqual": "true"}, "isEqual must be true or false"),
        ({"name": "stream", "value": {"a": 1}}, 'value must be a string, not {"a": 1}'),
        ({"name": "stream", "value": 5}, "value must be a string, not 5"),
        ({"name": ["stream"], "value": "cam1"}, "matcher name must be a label name"),
    ],
)
async def test_api_matchers_have_strict_types(entry, message):
    silencer = Silencer(None)
    async with TestClient(TestServer(api_app(silencer))) as client:
        resp = await client.post(
            "/api/v1/silences", json=silence_body(matchers=[entry]), headers=AUTH
        )
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    assert silencer.live(NOW) == []


def test_silence_texts_are_strings_of_bounded_length():
    silencer = Silencer(None)
    for created_by, comment, error, text in [
        ({"who": "x"}, "c", TypeError, "createdBy must be a string"),
        ("ops", ["c"], TypeError, "comment must be a string"),
        ("x" * (MAX_TEXT + 1), "c", ValueError, f"createdBy is longer than {MAX_TEXT}"),
        ("ops", "c" * (MAX_TEXT + 1), ValueError, f"comment is longer than {MAX_TEXT}"),
        ("ops", "  ", ValueError, "comment is required"),
    ]:
        with pytest.raises(error, match=text):
            silencer.create([matcher()], NOW, NOW + 60, created_by, comment, NOW)
    with pytest.raises(TypeError, match="id must be a string"):
        silencer.create([matcher()], NOW, NOW + 60, "ops", "c", NOW, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"at most {MAX_MATCHERS} matchers"):
        many = [matcher(f'l{i}="v"') for i in range(MAX_MATCHERS + 1)]
        silencer.create(many, NOW, NOW + 60, "ops", "c", NOW)
    assert silencer.create([matcher()], NOW, NOW + 60, "o" * MAX_TEXT, "c", NOW)


def test_active_silences_are_capped_and_expired_ones_make_room():
    silencer = Silencer(None)
    made = [
        silencer.create([matcher(f'stream="cam{i}"')], NOW, NOW + 60, "ops", "c", NOW)
        for i in range(MAX_ACTIVE_SILENCES - 1)
    ]
    # A pending one counts too.
    silencer.create([matcher('stream="later"')], NOW + 30, NOW + 90, "ops", "c", NOW)
    with pytest.raises(ValueError, match=f"{MAX_ACTIVE_SILENCES} silences are already active"):
        silencer.create([matcher('stream="one-more"')], NOW, NOW + 60, "ops", "c", NOW)
    # Changing one that exists is not one more.
    silencer.create([matcher('stream="cam0b"')], NOW, NOW + 120, "ops", "c", NOW, made[0].id)
    silencer.expire(made[1].id, NOW + 1)
    assert silencer.create([matcher('stream="one-more"')], NOW, NOW + 60, "ops", "c", NOW + 1)
    # When they end, there is room again without anyone expiring them.
    assert silencer.create([matcher('stream="x"')], NOW + 61, NOW + 99, "ops", "c", NOW + 61)


def test_mute_checks_read_an_index_of_live_silences():
    silencer = Silencer(None)
    short = silencer.create([matcher('stream="cam1"')], NOW, NOW + 10, "ops", "c", NOW)
    long = silencer.create([matcher('stream=~"cam.*"')], NOW, NOW + 100, "ops", "c", NOW)
    pending = silencer.create([matcher('stream="cam1"')], NOW + 50, NOW + 60, "ops", "c", NOW)
    gone = [
        silencer.create([matcher(f'stream="cam{i}"')], NOW, NOW + 60, "ops", "c", NOW)
        for i in range(200)
    ]
    for silence in gone:
        silencer.expire(silence.id, NOW + 1)
    ids = {s.id for s in silencer.live(NOW + 1)}
    assert ids == {short.id, long.id, pending.id}, "expired silences leave the index"
    assert silencer.mutes({"stream": "cam1"}, NOW + 1) == [short.id, long.id]
    # Time passing alone drops what ended and starts what was pending.
    assert {s.id for s in silencer.live(NOW + 55)} == {long.id, pending.id}
    assert silencer.mutes({"stream": "cam1"}, NOW + 55) == [long.id, pending.id]
    assert silencer.mutes({"stream": "cam1"}, NOW + 100) == []
    assert silencer.live(NOW + 100) == []
    # A clock that goes back sees them again (the index is rebuilt from every silence).
    assert silencer.mutes({"stream": "cam1"}, NOW + 5) == [short.id, long.id]
    assert len(silencer.live(NOW + 0.5)) == 203


def test_silences_kept_in_all_are_bounded_oldest_expired_first(tmp_path, monkeypatch):
    monkeypatch.setattr(silences, "MAX_SILENCES", 5)
    store = Store(tmp_path / "state.sqlite3")
    silencer = Silencer(store)
    made = []
    for i in range(5):
        made.append(silencer.create([matcher(f'stream="c{i}"')], NOW, NOW + 60, "ops", "c", NOW))
        silencer.expire(made[-1].id, NOW + i)
    fresh = silencer.create([matcher('stream="new"')], NOW + 10, NOW + 60, "ops", "c", NOW + 10)
    kept = [s.id for s in silencer.list(NOW + 10)]
    assert made[0].id not in kept and len(kept) == 5 and fresh.id in kept
    assert sorted(s.id for s in Silencer(store).list(NOW + 10)) == sorted(kept)


# ---------------------------------------------------------------------------------------------
# Item 10: templates cannot build huge strings, loop forever or write more than 16 KiB

ERROR = "<error expanding template: "
BIG = 1_000_000_000


def render(source: str, **values: object) -> str:
    context = template_context(
        labels={"stream": "cam1"},
        fields={
            "n": BIG,
            "w": 400_000_000,
            "text": "a b-c d " * 10,
            "words": "a " * 30000,
            "x60k": "x" * 60000,
            **values,
        },
        alertname="A",
        value=1.0,
        fired_at=None,
        now=NOW,
    )
    return compile_template(source).render(context)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{{ "%0400000000d" % 1 }}', "'%' would build more than 65536 characters"),
        ('{{ "%.400000000f" % 1.0 }}', "'%' would build more than 65536 characters"),
        ('{{ "%0400000000d" | format(1) }}', "format would build more than 65536 characters"),
        ('{{ "x" | center(1000000000) }}', "center would build more than 65536 characters"),
        ('{{ "x" | center(10 ** 9 - 1) }}', "center would build more than 65536 characters"),
        ('{{ "x\\ny" | indent(1000000000) }}', "indent would build more than 65536 characters"),
        ("{{ [1] | batch(1000000000, 'x') | list }}", "batch: 1000000000 is more than 65536"),
        ("{{ [1] | slice(1000000000) | list }}", "slice: 1000000000 is more than 65536"),
        ('{{ "a" ~ ("x" | center(60000)) ~ ("x" | center(60000)) }}', "'~' would build more"),
        ('{{ ("a" * 60000) | replace("a", "bb") }}', "replace would build more than 65536"),
        ('{{ ["x" * 60000] + ["x" * 60000] }}', "'+' would build more than 65536"),
    ],
)
def test_constant_bombs_are_load_errors(source, message):
    with pytest.raises(TemplateError) as info:
        compile_template("fine {{ stream }}\n" + source)
    assert message in info.value.message
    assert info.value.line == 2


def test_constant_bomb_in_a_rule_file_is_reported_at_its_line(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        kind: ome.stream\n"
        "        expr: present\n        annotations:\n"
        "          summary: '{{ \"%0400000000d\" % 1 }}'\n"
    )
    with pytest.raises(RuleError) as info:
        load_rule_files([str(rules)], kinds=["ome.stream"])
    [problem] = info.value.problems
    assert problem.startswith(
        f"{rules}:8: rule 'X': groups[0].rules[0].annotations.summary: invalid template:"
    )
    assert "'%' would build more than 65536 characters" in problem


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{{ ("%0" ~ w ~ "d") % 1 }}', "'%' would build more than 65536 characters"),
        ('{{ "%0*d" % (w, 1) }}', "'*' width or precision is not allowed"),
        ('{{ "%(a)s%(a)s" % {"a": "x" * 60000} }}', "'%' would build more than 65536"),
        ('{{ ("%0" ~ w ~ "d") | format(1) }}', "format would build more than 65536"),
        ('{{ "{:>400000000}".format(1) }}', "format() would build more than 65536"),
        ('{{ "{0}{0}{0}".format("x" * 60000) }}', "format() would build more than 65536"),
        ('{{ "{:>{w}}".format(1, w=w) }}', "a nested {} in a format spec is not allowed"),
        ('{{ "x" | center(n) }}', "center would build more than 65536"),
        ('{{ "x\\ny" | indent(n) }}', "indent would build more than 65536"),
        ('{{ "x\\ny" | indent(x60k) }}', "indent would build more than 65536"),
        ('{{ text | wordwrap(1, wrapstring="x" * 60000) }}', "wordwrap would build more"),
        ("{{ words | wordwrap(1) }}", "wordwrap would build more than 65536"),
        ('{{ x60k | replace("x", "yy") }}', "replace would build more than 65536"),
        ("{{ words | urlize(target=x60k) }}", "urlize would build more"),
        ('{{ range(10000) | join("x" * 60000) }}', "join would build more than 65536"),
        ("{{ [1] | batch(n, 'x') | list }}", "batch: 1000000000 is more than 65536"),
        ('{{ "x".center(n) }}', "center() would build more than 65536"),
        ('{{ "x".zfill(n) }}', "zfill() would build more than 65536"),
        ('{{ ("\\t" * 60000).expandtabs(100000) }}', "expandtabs() would build more"),
        ('{{ ("a" * 60000).replace("a", "bb") }}', "replace() would build more than 65536"),
        ('{{ ",".join(range(10000) | map("string")) }}', "steps"),
        ('{{ "x".translate({120: "y" * 60000}) }}', "str.translate() is not allowed"),
        ('{{ (1).to_bytes(n, "big") }}', "to_bytes() would build more than 65536"),
        ('{{ "x" * n }}', "'*' would build more than 65536 items"),
        ("{{ [x60k] * 65536 }}", "'*' would build more than 65536 items"),
        ("{{ [x60k] + [x60k] }}", "'+' would build more than 65536"),
        ('{% set a = "x" * 60000 %}{{ a ~ a }}', "'~' would build more than 65536"),
        ('{% set a = "x" * 16000 %}{{ [a, a, a, a, a] }}', "a list would build more than"),
        ('{% set a = "x" * 16000 %}{{ {"k": [a, a, a, a, a]} }}', "a list would build more"),
        ("{{ range(n) }}", "Range too big: range() holds at most 10000 items"),
        ("{{ dict.fromkeys(range(10000), 'x' * 100) }}", "fromkeys() would build more than"),
        ('{{ ("x " * 30000).split() }}', "split() would build more than 65536"),
        ("{{ x60k | list }}", "list would build more than 65536"),
    ],
)
def test_values_that_would_be_huge_are_refused_before_they_are_built(source, message):
    out = render(source)
    assert out.startswith(ERROR) and out.endswith(">"), out[:200]
    assert message in out


def test_shared_references_count_as_often_as_they_appear():
    """l1 = [l0, l0], l2 = [l1, l1]...: small in memory, 2**n items once written out or
    compared item by item. Each list is measured as written, so the doubling stops early."""

    def doubling(levels: int) -> str:
        return "{% set l0 = [1, 2] %}" + "".join(
            f"{{% set l{i} = [l{i - 1}, l{i - 1}] %}}" for i in range(1, levels + 1)
        )

    assert render(doubling(2) + "{{ l2 }}") == "[[[1, 2], [1, 2]], [[1, 2], [1, 2]]]"
    out = render(doubling(30) + "{{ l30 == l30 }}")
    assert out == f"{ERROR}a list would build more than 65536 characters>"


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "{% for x in 'x' * 60000 %}{% for y in 'y' * 60000 %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "{% set ns = namespace(x=1) %}{% for i in range(9000) %}{% set ns.x = ns.x + 1 %}"
        "{% endfor %}{{ ns.x }}",
        "{{ range(10000) | map('string') | map('upper') | join }}",
    ],
)
def test_loops_calls_and_recursion_stop_at_the_step_limit(source):
    assert (
        render(source) == f"{ERROR}template exceeds {MAX_STEPS} steps (loop iterations and calls)>"
    )


def test_reading_and_building_big_values_stops_at_the_work_limit():
    for source in [
        "{% for i in range(1000) %}{{ ('x' * 60000) | length }}{% endfor %}",
        "{% for i in range(1000) %}{{ ('x' * 60000)[1:] | length }}{% endfor %}",
        "{% set x %}{% for i in range(1000) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}{{ x | length }}",
    ]:
        assert render(source) == f"{ERROR}template exceeds {MAX_WORK} characters of work>"
    # A block that builds more than a value may hold, from literal text alone.
    block = "{% set x %}{% for i in range(1500) %}" + "y" * 50 + "{% endfor %}{% endset %}{{ x }}"
    assert "a block or macro would build more than 65536 characters" in render(block)


def test_rendered_text_is_at_most_16_kib(caplog):
    assert render(f"{{{{ 'x' * {MAX_RENDERED} }}}}") == "x" * MAX_RENDERED
    over = f"{ERROR}rendered text exceeds {MAX_RENDERED} characters>"
    assert render(f"{{{{ 'x' * {MAX_RENDERED} }}}}!") == over
    assert render("{% for i in range(1000) %}{{ text }}{% endfor %}") == over
    assert render("{% for i in range(1000) %}" + "z" * 100 + "{% endfor %}") == over
    template = compile_template("{% for i in range(1000) %}{{ stream * 10 }}{% endfor %}")
    context = template_context(
        labels={"stream": "cam1"}, fields={}, alertname="A", value=1, fired_at=None, now=NOW
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monitor.alerting.templates"):
        assert [template.render(context) for _ in range(3)] == [over] * 3
    assert [r.error for r in caplog.records] == [over[len(ERROR) : -1]], "logged once"


def test_template_source_is_at_most_16_kib():
    assert compile_template("x" * MAX_SOURCE).render({}) == "x" * MAX_SOURCE
    with pytest.raises(TemplateError, match=f"the limit is {MAX_SOURCE}"):
        compile_template("x" * (MAX_SOURCE + 1))
    with pytest.raises(TemplateError, match="nested too deeply"):
        compile_template("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% for x in [1, 2, 3] %}{{ loop.index }}/{{ loop.length }} {% endfor %}", "1/3 2/3 3/3 "),
        ("{% for x in [] %}x{% else %}empty{% endfor %}", "empty"),
        ("{% set a, b = 1, 2 %}{{ a }}{{ b }}", "12"),
        ('{{ stream in ["cam1", "cam2"] }} {{ {"a": 1}["a"] }} {{ () }}', "True 1 ()"),
        (
            '{{ stream ~ "-" ~ 5 }} {{ "%s/%s" % (stream, 2) }} {{ "{}!".format(stream) }}',
            "cam1-5 cam1/2 cam1!",
        ),
        ('{{ "a" + "b" }} {{ [1] + [2] }} {{ 7 % 3 }} {{ "ab" * 2 }}', "ab [1, 2] 1 abab"),
        ("{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(1) }}", "<1>"),
        ("{% set x %}got {{ stream }}{% endset %}{{ x | upper }}", "GOT CAM1"),
        (
            '{{ stream | center(8) }}|{{ "x\\ny" | indent(2) }}|{{ "hello world" | wordwrap(5) }}',
            "  cam1  |x\n  y|hello\nworld",
        ),
        (
            '{{ range(5) | join(",") }} {{ "aaa" | replace("a", "b", 2) }} {{ stream.center(6, "*") }}',
            "0,1,2,3,4 bba *cam1*",
        ),
        (
            "{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
            "10",
        ),
    ],
)
def test_ordinary_templates_render_as_before(source, expected):
    assert render(source) == expected
