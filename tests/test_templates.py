"""Templates: context, filters, strict undefined names, never-raising render, the sandbox."""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

import pytest

from monitor.alerting.templates import (
    Template,
    TemplateError,
    compile_template,
    humanize_bytes,
    humanize_duration,
    iso,
    stamp,
    template_context,
)

FIRED_AT = 1_795_626_000.0  # 2026-11-25T17:00:00Z
NOW = FIRED_AT + 90.0

LABELS = {"server": "ome-1", "vhost": "default", "app": "app", "stream": "cam1", "mode": "label"}
FIELDS: dict[str, Any] = {
    "present": True,
    "last_recv": NOW - 42.7,
    "bytes_in": 1_572_864,
    "mode": "field",
    "value": "shadowed",
    "connections": MappingProxyType({"hls": 3, "webrtc": 1}),
    "nothing": None,
}


def context(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "labels": LABELS,
        "fields": FIELDS,
        "alertname": "OmeIngestStalled",
        "value": 42.7,
        "fired_at": FIRED_AT,
        "now": NOW,
    }
    args.update(overrides)
    return template_context(**args)


def render(source: str, ctx: dict[str, Any] | None = None) -> str:
    return compile_template(source).render(context() if ctx is None else ctx)


ERROR = "<error expanding template: "


# ---------------------------------------------------------------------------------------------
# Rendering


def test_design_example() -> None:
    source = "No input on {{ vhost }}/{{ app }}/{{ stream }} for {{ age(last_recv) | int }}s"
    assert render(source) == "No input on default/app/cam1 for 42s"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ alertname }}", "OmeIngestStalled"),
        ("{{ value }}", "42.7"),
        ("{{ value | round(0) | int }}", "43"),
        ("{{ server }}", "ome-1"),
        ("{{ labels.stream }}", "cam1"),
        ("{{ labels['vhost'] }}", "default"),
        ("{{ fields.bytes_in }}", "1572864"),
        ("{{ mode }}", "field"),  # a field wins over a label of the same name
        ("{{ labels.mode }}", "label"),
        ("{{ fields['value'] }}", "shadowed"),  # reserved names win; the field stays reachable
        ("{{ connections.hls }}", "3"),
        ("{{ nothing }}", "None"),
        ("{{ present }}", "True"),
        ("{{ fired_at | int }}", "1795626000"),
        ("{{ fired_at | iso }}", "2026-11-25T17:00:00Z"),
        ("{{ fired_at | stamp }}", "20261125T170000Z"),
        ("{{ fired_at_iso }}", "2026-11-25T17:00:00Z"),
        ("{{ fired_at_str }}", "20261125T170000Z"),
        (
            "/var/lib/streamwatch/dumps/{{ stream }}/{{ fired_at_str }}",
            ("/var/lib/streamwatch/dumps/cam1/20261125T170000Z"),
        ),
        ("{{ now - fired_at }}", "90.0"),
        ("{{ age(fired_at) | humanize_duration }}", "1m 30s"),
        ("{{ bytes_in | humanize_bytes }}", "1.5 MiB"),
        ("{% if present %}up{% else %}down{% endif %}", "up"),
        ("{% for k in connections | sort %}{{ k }} {% endfor %}", "hls webrtc "),
        ("{{ x | default('n/a') }}", "n/a"),
        ("{% if x is defined %}{{ x }}{% else %}none{% endif %}", "none"),
        ("{{ '%.1f' | format(value) }}", "42.7"),
        ("{{ stream | upper }}", "CAM1"),
        ("line\n{{ stream }}\n", "line\ncam1\n"),  # the trailing newline is kept
        ("{# a comment #}x", "x"),
    ],
)
def test_render(source: str, expected: str) -> None:
    assert render(source) == expected


def test_fired_at_none_while_pending() -> None:
    ctx = context(fired_at=None)
    assert render("[{{ fired_at_iso }}][{{ fired_at_str }}][{{ fired_at | iso }}]", ctx) == "[][][]"
    assert render("{{ fired_at }}", ctx) == "None"


def test_reserved_names_win_over_labels_and_fields() -> None:
    ctx = template_context(
        labels={"alertname": "fromlabel", "now": "x"},
        fields={"age": 1, "labels": "y"},
        alertname="Real",
        value=1,
        fired_at=None,
        now=100.0,
    )
    assert render("{{ alertname }} {{ now }} {{ age(40) }} {{ labels.now }}", ctx) == (
        "Real 100.0 60.0 x"
    )


def test_context_copies_are_plain_dicts() -> None:
    ctx = context()
    assert ctx["labels"] == LABELS
    assert ctx["labels"] is not LABELS
    assert ctx["fields"]["bytes_in"] == FIELDS["bytes_in"]


# ---------------------------------------------------------------------------------------------
# Plain text


@pytest.mark.parametrize(
    "source", ["critical", "", "a {b} c", "50% { not a template }", "{ {x} }", "}} %}"]
)
def test_plain_text_renders_as_itself_without_jinja(source: str) -> None:
    template = compile_template(source)
    assert template.static
    assert template.render({}) == source
    assert template.render(context()) == source


def test_templated_text_is_not_static() -> None:
    assert not compile_template("{{ x }}").static
    assert not compile_template("{% if true %}x{% endif %}").static
    assert not compile_template("{# note #}").static


# ---------------------------------------------------------------------------------------------
# Errors at load time


@pytest.mark.parametrize(
    ("source", "message", "line"),
    [
        ("{{ x ", "unexpected end of template", 1),
        ("{{ }}", "Expected an expression", 1),
        ("ok\nstill ok\n{% if %}", "Expected an expression", 3),
        ("{% if x %}never closed", "Unexpected end of template", 1),
        ("{% endfor %}", "endfor", 1),
        ("a\n{{ x | nosuchfilter }}", "No filter named 'nosuchfilter'", 2),
        ("{{ x is nosuchtest }}", "No test named 'nosuchtest'", 1),
        ("{% import 'os' as os %}", "", 1),
    ],
)
def test_syntax_errors_at_load(source: str, message: str, line: int) -> None:
    if message == "":  # imports parse but need a loader: they fail when rendered, safely
        assert render(source).startswith(ERROR)
        return
    with pytest.raises(TemplateError) as info:
        compile_template(source)
    assert message in info.value.message
    assert info.value.line == line
    assert isinstance(info.value, ValueError)
    assert f"line {line}" in str(info.value)


def test_non_string_template_is_rejected() -> None:
    with pytest.raises(TemplateError, match="must be a string"):
        compile_template(5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Errors at render time: never raised, written into the text, logged once


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ strem }}", "'strem' is undefined"),
        ("No input on {{ strem }}", "'strem' is undefined"),
        ("{{ age(last_rcv) }}", "'last_rcv' is undefined"),
        ("{{ age(nothing) }}", "age(): the timestamp is none"),
        ("{{ age(stream) }}", "unsupported operand"),
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ stream | humanize_bytes }}", "could not convert string to float"),
        ("{{ nothing | humanize_duration }}", "float() argument must be"),
        ("{{ stream.nope.deeper }}", "has no attribute 'nope'"),
        ("{{ undefined_name | upper }}", "'undefined_name' is undefined"),
        ("{{ 'a' * 100000 }}", "'*' would build more than 65536 items"),
        ("{{ [1, 2] * 100000 }}", "'*' would build more than 65536 items"),
        ("{{ 2 ** 100 }}", "exponent 100 is out of bounds"),
        ("{{ (10 ** 64) ** 64 }}", "would exceed 4096 bits"),
        ("{{ 99999999999999999999 ** 64 }}", "would exceed 4096 bits"),
        ("{% for i in range(1000000) %}{% endfor %}", "Range too big"),
    ],
)
def test_render_errors_are_text(source: str, message: str) -> None:
    out = render(source)
    assert out.startswith(ERROR)
    assert out.endswith(">")
    assert message in out


def test_bounded_operators_still_work_in_bounds() -> None:
    assert render("{{ '-' * 3 }}") == "---"
    assert render("{{ 2 ** 10 }}") == "1024"
    assert render("{{ 3 * 4 }}") == "12"


def test_error_is_logged_once_per_template_and_message(caplog: pytest.LogCaptureFixture) -> None:
    template = compile_template("{{ strem }}")
    with caplog.at_level(logging.DEBUG, logger="monitor.alerting.templates"):
        for _ in range(5):
            assert template.render(context()).startswith(ERROR)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].template == "{{ strem }}" and "strem" in warnings[0].error
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 4

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monitor.alerting.templates"):
        template.render({"strem": 1})  # works now: nothing to log
        other = compile_template("{{ strem }}")
        other.render({})  # another template logs its own first failure
    assert len(caplog.records) == 1


# ---------------------------------------------------------------------------------------------
# The sandbox


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ range.__self__ }}",
        "{{ age.__globals__ }}",
        "{{ age.__closure__ }}",
        "{{ labels.__class__ }}",
        "{{ fields.items.__self__.__class__ }}",
        "{{ value.__class__.__subclasses__() }}",
        "{{ self.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ config }}",
        "{{ request }}",
        "{{ '{0.__class__}'.format(stream) }}",
        "{{ '{0.__class__.__init__.__globals__}'.format(age) }}",
        "{{ stream | attr('__class__') }}",
        "{{ (age | attr('__globals__'))['__builtins__'] }}",
        "{% set x = age.__globals__ %}{{ x }}",
        "{{ labels.update({'vhost': 'pwned'}) }}",
        "{{ labels.pop('vhost') }}",
        "{{ fields.clear() }}",
        "{{ connections.__class__ }}",
    ],
)
def test_sandbox_escapes_leak_nothing(source: str) -> None:
    ctx = context()
    out = compile_template(source).render(ctx)
    assert out.startswith(ERROR), out
    assert "unsafe" in out or "is undefined" in out or "has no attribute" in out
    for leak in ("<class", "<module", "<built-in", "<function", "__builtins__", "subprocess"):
        assert leak not in out
    assert ctx["labels"] == LABELS  # nothing was changed
    assert ctx["fields"]["bytes_in"] == FIELDS["bytes_in"]


def test_removed_globals() -> None:
    for name in ("lipsum", "cycler", "joiner"):
        assert render(f"{{{{ {name} }}}}") == f"{ERROR}'{name}' is undefined>"
    assert render("{{ range(3) | list }}") == "[0, 1, 2]"


# ---------------------------------------------------------------------------------------------
# Filters


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.0015, "1.5ms"),
        (2.5e-6, "2.5us"),
        (3e-9, "3ns"),
        (1, "1s"),
        (1.5, "1.5s"),
        (42, "42s"),
        (59.99, "59.99s"),
        (60, "1m 0s"),
        (90.9, "1m 30s"),
        (3725, "1h 2m 5s"),
        (86400, "1d 0h 0m 0s"),
        (93784, "1d 2h 3m 4s"),
        (-90, "-1m 30s"),
        ("42", "42s"),
        (float("inf"), "inf"),
        (float("nan"), "nan"),
    ],
)
def test_humanize_duration(seconds: Any, expected: str) -> None:
    assert humanize_duration(seconds) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1_572_864, "1.5 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        (2 * 1024**4, "2.0 TiB"),
        (3 * 1024**5, "3.0 PiB"),
        (4 * 1024**6, "4.0 EiB"),
        (-2048, "-2.0 KiB"),
        ("2048", "2.0 KiB"),
        (12.5, "12.5 B"),
    ],
)
def test_humanize_bytes(n: Any, expected: str) -> None:
    assert humanize_bytes(n) == expected


@pytest.mark.parametrize(
    ("ts", "iso_text", "stamp_text"),
    [
        (FIRED_AT, "2026-11-25T17:00:00Z", "20261125T170000Z"),
        (FIRED_AT + 0.999, "2026-11-25T17:00:00Z", "20261125T170000Z"),
        (0, "1970-01-01T00:00:00Z", "19700101T000000Z"),
        ("1795626000", "2026-11-25T17:00:00Z", "20261125T170000Z"),
        (None, "", ""),
    ],
)
def test_time_formats(ts: Any, iso_text: str, stamp_text: str) -> None:
    assert iso(ts) == iso_text
    assert stamp(ts) == stamp_text


def test_template_repr_and_source() -> None:
    template = compile_template("{{ stream }}")
    assert isinstance(template, Template)
    assert template.source == "{{ stream }}"
    assert "{{ stream }}" in repr(template)
