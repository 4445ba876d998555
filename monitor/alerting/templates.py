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
globals are removed, and so are `str.translate` and `str.maketrans`.

Limits, so that no template, mistaken or hostile, can hold the event loop or its memory (each
failure is an error text like any other, logged once; see "Limits" below for how):
- a template is at most MAX_SOURCE (16 KiB) characters, and renders at most MAX_RENDERED
  (16 KiB): `<error expanding template: rendered text exceeds 16384 characters>`;
- no value built while rendering (by `*`, `%`, `+`, `~`, `format`, `center`, `indent`,
  `wordwrap`, `replace`, `join`, `urlize`, a str method, a literal list...) exceeds MAX_REPEAT
  (64 Ki characters or items), checked before it is built wherever its size can be foreseen;
- `range()` holds at most MAX_RANGE (10,000) items; one render takes at most MAX_STEPS (2,000)
  loop iterations and calls (macros included), and builds or reads at most MAX_WORK (256 Ki)
  characters through filters, operators, calls and output;
- `**` has |exponent| <= 64, and `*` and `**` build integers of at most 4096 bits.
A limit broken by literals alone (`{{ "%0400000000d" % 1 }}`, `{{ "x" | center(10**9) }}`) is
a load error with its line; `*` and `**` past their bounds fail when rendered.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from operator import floordiv, sub, truediv
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.nodes import EvalContext
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

from monitor.alerting.template_bounds import (
    _BUDGET,
    _SEQUENCES,
    MAX_EXPONENT,
    MAX_INT_BITS,
    MAX_RENDERED,
    MAX_REPEAT,
    MAX_SOURCE,
    LimitExceeded,
    _Budget,
    _charge,
    _check,
    _concat,
    _dict,
    _finalize,
    _format_size,
    _guard_filter,
    _Guards,
    _join,
    _list,
    _loop,
    _number,
    _printf_size,
    _range,
    _size,
    _take,
    _text_method_size,
    _tilde,
    _tuple,
)

__all__ = [
    "LimitExceeded",
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
# Limits
#
# Every value a template builds is measured (`_size`: about the length of its text; a list
# counts its items, shared ones as often as they appear) and refused beyond MAX_REPEAT, checked
# *before* the value is built wherever its size can be foreseen (`*`, `%`, `+`, `~`, `format`,
# `center`, `indent`, `wordwrap`, `replace`, `join`, `urlize`, str methods...) and after
# otherwise. Every loop iteration and call costs a step, every character built or read by a
# filter costs work: a render stops at MAX_STEPS or MAX_WORK. So no template, whatever it
# says, takes more than some tens of milliseconds or more than a few MiB to render.


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    concat = staticmethod(_concat)  # type: ignore[assignment]
    guarded_loop = staticmethod(_loop)
    guarded_tilde = staticmethod(_tilde)
    guarded_list = staticmethod(_list)
    guarded_tuple = staticmethod(_tuple)
    guarded_dict = staticmethod(_dict)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | bytes | list | tuple)
                    and isinstance(count, int)
                    and _size(seq) * count > MAX_REPEAT
                ):
                    raise OverflowError(f"'*' would build more than {MAX_REPEAT} items")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise OverflowError(f"result of '*' would exceed {MAX_INT_BITS} bits")
        elif operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise OverflowError(f"exponent {right!r} is out of bounds (at most {MAX_EXPONENT})")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 1
                and left.bit_length() * right > MAX_INT_BITS
            ):
                raise OverflowError(f"result of '**' would exceed {MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str | bytes):
            _check(_printf_size(left, right), "'%'")
        elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            _check(_size(left) + _size(right), "'+'")
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, str | bytes | list | tuple):
            _charge(0, _size(result))
        return result

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _charge(1, 0)
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes | bytearray):
            name = getattr(obj, "__name__", "")
            size = _text_method_size(owner, name, args, kwargs)
            if size < 0:  # join: measure the items, then join those
                items = _take(args[0], f"{name}()")
                size = sum(_size(i) for i in items) + max(0, len(items) - 1) * len(owner)
                args = (items, *args[1:])
            _check(size, f"{name}()")
            _charge(0, len(owner))
        elif isinstance(owner, int) and getattr(obj, "__name__", "") == "to_bytes":
            length = args[0] if args else kwargs.get("length", 1)
            _check(_number(length, "to_bytes()"), "to_bytes()")
        result = super().call(context, obj, *args, **kwargs)
        if not isinstance(result, int | float | bool | Undefined) and result is not None:
            size = _size(result)
            if size > MAX_REPEAT:
                _check(size, f"{getattr(obj, '__name__', 'a call')}()")
            _charge(0, size)
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        result = super().getitem(obj, argument)
        if isinstance(argument, slice) and isinstance(result, str | bytes | list | tuple):
            _charge(0, _size(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        def guarded(*args: Any, **kwargs: Any) -> str:
            values = list(args) + list(kwargs.values())
            if is_map and args and isinstance(args[0], Mapping):
                values = list(args[0].values())
            _check(_format_size(fmt, values), "format()")
            return wrapper(*args, **kwargs)

        return guarded


def _environment() -> _Environment:
    env = _Environment(
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,  # render exactly what was written, like a plain-text one
        cache_size=0,
        finalize=_finalize,
    )
    for name in ("lipsum", "cycler", "joiner"):
        env.globals.pop(name, None)
    env.globals["range"] = _range
    env.filters.update(
        iso=iso,
        stamp=stamp,
        humanize_duration=humanize_duration,
        humanize_bytes=humanize_bytes,
        join=_join,
    )
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
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
        token = _BUDGET.set(_Budget())
        try:
            return _render(self._template, context)
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            self._log(message)
            return f"<error expanding template: {message}>"
        finally:
            _BUDGET.reset(token)

    def _log(self, message: str) -> None:
        if message in self._logged:
            log.debug("error expanding template", extra={"template": self.source, "error": message})
            return
        if len(self._logged) < _MAX_LOGGED:
            self._logged.add(message)
        log.warning("error expanding template", extra={"template": self.source, "error": message})

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def _render(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """The text, piece by piece, stopped as soon as it is longer than MAX_RENDERED."""
    pieces = template.root_render_func(template.new_context(dict(context)))
    out: list[str] = []
    total = 0
    try:
        for piece in pieces:
            total += len(piece)
            if total > MAX_RENDERED:
                raise LimitExceeded(f"rendered text exceeds {MAX_RENDERED} characters")
            out.append(piece)
    finally:
        pieces.close()
    return "".join(out)


def compile_template(source: str) -> Template:
    """Check and compile a template once; raises `TemplateError` with its line."""
    if not isinstance(source, str):
        raise TemplateError(f"a template must be a string, not {type(source).__name__}")
    if len(source) > MAX_SOURCE:
        raise TemplateError(f"template is {len(source)} characters long; the limit is {MAX_SOURCE}")
    if not any(marker in source for marker in _MARKERS):
        return Template(source, None)
    try:
        tree = _ENV.parse(source)
        _check_constants(tree)
        _Guards().visit(tree)
        return Template(source, _ENV.from_string(tree))
    except jinja2.TemplateSyntaxError as exc:  # also unknown filters and tests
        raise TemplateError(exc.message or str(exc), exc.lineno) from None
    except (RecursionError, MemoryError):
        raise TemplateError("template is nested too deeply") from None


# ---------------------------------------------------------------------------------------------
# Constant bombs at load


class _NotConstant(Exception):
    pass


def _check_constants(tree: nodes.Template) -> None:
    """Compute what can be computed from literals alone, under the limits, so that
    `{{ "%0400000000d" % 1 }}` or `{{ "x" | center(10**9) }}` is a load error naming the limit
    rather than an error text in every notification. Other failures (a division by zero...)
    stay render-time errors; so do `*` and `**`, which are checked before they build anything."""
    memo: dict[int, Any] = {}
    token = _BUDGET.set(_Budget())
    try:
        for node in tree.find_all(nodes.Expr):
            try:
                _fold(node, memo)
            except _NotConstant:
                pass
            except LimitExceeded as exc:
                raise TemplateError(str(exc), node.lineno) from None
    finally:
        _BUDGET.reset(token)


_NOT_CONSTANT = object()
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "-": sub,
    "/": truediv,
    "//": floordiv,
}


def _fold(node: nodes.Node, memo: dict[int, Any]) -> Any:
    key = id(node)
    if key not in memo:
        try:
            memo[key] = _fold_node(node, memo)
        except LimitExceeded:
            memo[key] = _NOT_CONSTANT
            raise
        except Exception:
            memo[key] = _NOT_CONSTANT
    value = memo[key]
    if value is _NOT_CONSTANT:
        raise _NotConstant
    return value


def _fold_node(node: nodes.Node, memo: dict[int, Any]) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List):
        return _list(*(_fold(item, memo) for item in node.items))
    if isinstance(node, nodes.Tuple) and node.ctx == "load":
        return _tuple(*(_fold(item, memo) for item in node.items))
    if isinstance(node, nodes.Concat):
        return _tilde(*(_fold(part, memo) for part in node.nodes))
    if isinstance(node, nodes.BinExpr):
        left, right = _fold(node.left, memo), _fold(node.right, memo)
        if node.operator in _ENV.intercepted_binops:
            # Past their bounds `*` and `**` raise a plain OverflowError: not constant, an
            # error when rendered (as always); `%` and `+` raise LimitExceeded: a load error.
            return _ENV.call_binop(None, node.operator, left, right)
        return _ARITHMETIC[node.operator](left, right)
    if isinstance(node, nodes.Neg):
        return -_fold(node.node, memo)
    if isinstance(node, nodes.Filter) and node.node is not None:
        func = _ENV.filters.get(node.name)
        if func is None or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise _NotConstant
        passed = getattr(func, "jinja_pass_arg", None)
        first: tuple[Any, ...] = ()
        if passed is _PassArg.eval_context:
            first = (EvalContext(_ENV),)
        elif passed is _PassArg.environment:
            first = (_ENV,)
        elif passed is not None:
            raise _NotConstant
        value = _fold(node.node, memo)
        args = [_fold(arg, memo) for arg in node.args]
        kwargs = {pair.key: _fold(pair.value, memo) for pair in node.kwargs}
        return func(*first, value, *args, **kwargs)
    raise _NotConstant


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
