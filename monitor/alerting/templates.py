"""Annotation, label and action-argument templates: jinja2 in a sandbox, compiled at load.

A template is checked once when its rule file loads (a syntax error or an unknown filter is a
load error with its line) and rendered per alert. Rendering never raises: as in Prometheus, a
failure becomes the text `<error expanding template: ...>` and is logged once per template.

What a template sees (`template_context`):
- every label and field of the entity by name (`{{ vhost }}/{{ app }}/{{ stream }}`); a field
  wins over a label of the same name, and the names below win over both (reach a shadowed one
  with `fields["value"]` or `labels["alertname"]`);
- `labels`, `fields` (dicts), `alertname`, `value` (the rule's `$value`), `now` (epoch seconds),
  `fired_at` (epoch seconds, or none while pending), `fired_at_iso` (`2026-11-25T17:00:00Z`) and
  `fired_at_str` (`20261125T170000Z`, safe in a path); both are "" while `fired_at` is none;
- the function `age(ts)` = now - ts, and the filters `iso`, `stamp` (the two time formats
  above), `humanize_duration` (`1h 2m 3s`, `250ms`) and `humanize_bytes` (`1.5 MiB`), next to
  jinja's own filters.

Undefined names are errors (`StrictUndefined`): `{{ strem }}` renders as
`<error expanding template: 'strem' is undefined>` so a typo shows in the first notification.
A field that only some entities have is written `{{ x | default("n/a") }}` or guarded with
`{% if x is defined %}`.

The sandbox (jinja's `ImmutableSandboxedEnvironment`) refuses attributes starting with `_` and
Python internals, and any change to the context's dicts. jinja's `lipsum`, `cycler` and `joiner`
globals are removed. `*` and `**` are bounded as in rule expressions (string repetition up to
64 KiB, exponent up to 64). The sandbox guards against escapes, not against a template author
who wants to burn CPU: templates are configuration and are trusted that far.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "Template",
    "TemplateError",
    "compile_template",
    "humanize_bytes",
    "humanize_duration",
    "iso",
    "stamp",
    "template_context",
]

log = logging.getLogger(__name__)

MAX_REPEAT = 65536
MAX_EXPONENT = 64
MAX_INT_BITS = 4096
_MAX_LOGGED = 32  # distinct error messages remembered per template


class TemplateError(ValueError):
    """A template that cannot be loaded. `line` is 1-based within the template, or None."""

    def __init__(self, message: str, line: int | None = None):
        self.message = message
        self.line = line
        super().__init__(message if line is None else f"{message} (line {line})")


# ---------------------------------------------------------------------------------------------
# Filters and functions


def iso(ts: float | None) -> str:
    """Epoch seconds as ISO 8601 UTC, to the second: `2026-11-25T17:00:00Z`; none → ""."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(ts: float | None) -> str:
    """Epoch seconds as ISO 8601 basic format, safe in a file name: `20261125T170000Z`."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y%m%dT%H%M%SZ")


def humanize_duration(seconds: Any) -> str:
    """Seconds as Prometheus's `humanizeDuration` writes them: `1d 2h 3m 4s`, `42s`, `1.5s`,
    `250ms`."""
    v = float(seconds)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0s"
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v >= 1:
        days, rest = divmod(int(v), 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {secs}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {secs}s"
        if minutes:
            return f"{sign}{minutes}m {secs}s"
        return f"{sign}{v:.4g}s"
    for unit in ("ms", "us", "ns"):
        v *= 1000
        if v >= 1:
            return f"{sign}{v:.4g}{unit}"
    return f"{sign}{v:.4g}ns"


def humanize_bytes(n: Any) -> str:
    """A byte count in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`."""
    v = float(n)
    if not math.isfinite(v):
        return str(v)
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v < 1024:
        return f"{sign}{v:.4g} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        v /= 1024
        if v < 1024:
            return f"{sign}{v:.1f} {unit}"
    return f"{sign}{v / 1024:.1f} EiB"


def _age(now: float) -> Callable[[Any], float]:
    def age(ts: Any) -> float:
        """Seconds since `ts` (epoch seconds)."""
        if ts is None:
            raise TypeError("age(): the timestamp is none")
        return now - ts

    return age


# ---------------------------------------------------------------------------------------------
# The environment


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(count, int)
                    and len(seq) * count > MAX_REPEAT
                ):
                    raise OverflowError(f"'*' would build more than {MAX_REPEAT} items")
        elif operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise OverflowError(f"exponent {right!r} is out of bounds (at most {MAX_EXPONENT})")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 1
                and left.bit_length() * right > MAX_INT_BITS
            ):
                raise OverflowError(f"result of '**' would exceed {MAX_INT_BITS} bits")
        return super().call_binop(context, operator, left, right)


def _environment() -> _Environment:
    env = _Environment(
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,  # render exactly what was written, like a plain-text one
        cache_size=0,
    )
    for name in ("lipsum", "cycler", "joiner"):
        env.globals.pop(name, None)
    env.filters.update(
        iso=iso,
        stamp=stamp,
        humanize_duration=humanize_duration,
        humanize_bytes=humanize_bytes,
    )
    return env


_ENV = _environment()
_MARKERS = ("{{", "{%", "{#")


class Template:
    """A compiled template. `render` never raises."""

    __slots__ = ("_logged", "_template", "source")

    def __init__(self, source: str, template: jinja2.Template | None):
        self.source = source
        self._template = template
        self._logged: set[str] = set()

    @property
    def static(self) -> bool:
        """True for plain text, which renders as itself without jinja."""
        return self._template is None

    def render(self, context: Mapping[str, Any]) -> str:
        if self._template is None:
            return self.source
        try:
            return self._template.render(context)
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            self._log(message)
            return f"<error expanding template: {message}>"

    def _log(self, message: str) -> None:
        if message in self._logged:
            log.debug("error expanding template", extra={"template": self.source, "error": message})
            return
        if len(self._logged) < _MAX_LOGGED:
            self._logged.add(message)
        log.warning("error expanding template", extra={"template": self.source, "error": message})

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(source: str) -> Template:
    """Check and compile a template once; raises `TemplateError` with its line."""
    if not isinstance(source, str):
        raise TemplateError(f"a template must be a string, not {type(source).__name__}")
    if not any(marker in source for marker in _MARKERS):
        return Template(source, None)
    try:
        return Template(source, _ENV.from_string(source))
    except jinja2.TemplateSyntaxError as exc:  # also unknown filters and tests
        raise TemplateError(exc.message or str(exc), exc.lineno) from None


def template_context(
    *,
    labels: Mapping[str, str],
    fields: Mapping[str, Any],
    alertname: str,
    value: Any,
    fired_at: float | None,
    now: float,
) -> dict[str, Any]:
    """Everything a template of one alert can name (see the module docstring)."""
    context: dict[str, Any] = {**labels, **fields}
    context.update(
        labels=dict(labels),
        fields=dict(fields),
        alertname=alertname,
        value=value,
        fired_at=fired_at,
        fired_at_iso=iso(fired_at),
        fired_at_str=stamp(fired_at),
        now=now,
        age=_age(now),
    )
    return context
