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

import functools
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from itertools import chain, islice
from operator import floordiv, sub, truediv
from string import Formatter
from typing import Any

import jinja2
from jinja2 import nodes, pass_eval_context
from jinja2.filters import sync_do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace, _PassArg
from jinja2.visitor import NodeTransformer

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

MAX_RENDERED = 16384  # characters of one rendered template
MAX_SOURCE = MAX_RENDERED  # characters of a template as written (plain text renders as itself)
MAX_REPEAT = 65536  # characters (or items) of any value built while rendering
MAX_STEPS = 2000  # loop iterations and calls in one render
MAX_WORK = 262_144  # characters built or read by filters, operators, calls and output, per render
MAX_RANGE = 10_000  # items of range()
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
# Limits
#
# Every value a template builds is measured (`_size`: about the length of its text; a list
# counts its items, shared ones as often as they appear) and refused beyond MAX_REPEAT, checked
# *before* the value is built wherever its size can be foreseen (`*`, `%`, `+`, `~`, `format`,
# `center`, `indent`, `wordwrap`, `replace`, `join`, `urlize`, str methods...) and after
# otherwise. Every loop iteration and call costs a step, every character built or read by a
# filter costs work: a render stops at MAX_STEPS or MAX_WORK. So no template, whatever it
# says, takes more than some tens of milliseconds or more than a few MiB to render.


class LimitExceeded(OverflowError):
    """A template went over one of the limits above. At load, on constants: a load error."""


class _Budget:
    __slots__ = ("steps", "work")

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.work = MAX_WORK


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _charge(steps: int, work: int) -> None:
    budget = _BUDGET.get()
    if budget is None:  # jinja folding constants at load: sizes are still checked
        return
    budget.steps -= steps
    budget.work -= work
    if budget.steps < 0:
        raise LimitExceeded(f"template exceeds {MAX_STEPS} steps (loop iterations and calls)")
    if budget.work < 0:
        raise LimitExceeded(f"template exceeds {MAX_WORK} characters of work")


def _size(value: Any, limit: int = MAX_REPEAT) -> int:
    """About len(str(value)), walking at most `limit` units: stops as soon as it is over."""
    kind = type(value)
    if kind is str:
        return len(value)
    if kind in _SCALARS:
        return value.bit_length() // 3 + 1 if kind is int else 8
    if kind in _OPAQUE:
        return 64
    if isinstance(value, str | bytes):
        return len(value)
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        kind = type(v)
        if kind is str or kind is bytes or kind is bytearray:
            total += len(v) + 2
        elif kind is int:
            total += v.bit_length() // 3 + 1
        elif kind in _SCALARS:
            total += 8
        elif kind is list or kind is tuple or kind is set or kind is frozenset:
            total += 2 + 2 * len(v)
            if total <= limit:
                stack.extend(v)
        elif kind is dict or isinstance(v, Mapping):
            total += 2 + 4 * len(v)
            if total <= limit:
                stack.extend(v.keys())
                stack.extend(v.values())
        elif isinstance(v, str | bytes):  # Markup
            total += len(v) + 2
        elif isinstance(v, Undefined):
            pass
        elif isinstance(v, list | tuple):
            total += 2 + 2 * len(v)
            if total <= limit:
                stack.extend(v)
        elif kind is range:
            total += 24  # "range(0, 10)": what iterating it builds is measured on its own
        elif kind is Namespace:
            stack.append(v._Namespace__attrs)  # what its repr shows
            total += 12
        else:
            total += 64  # a repr such as <LoopContext 1/3>
        if total > limit:
            return total
    return total


_SCALARS = frozenset({int, float, bool, type(None)})
# Lazy results (filters' generators, dict views): their repr is short, and what iterating
# them builds is measured where it is built.
_OPAQUE = frozenset(
    {type(x for x in ()), type({}.items()), type({}.keys()), type({}.values()), type(iter(()))}
)


def _check(size: int, what: str) -> None:
    if size > MAX_REPEAT:
        raise LimitExceeded(f"{what} would build more than {MAX_REPEAT} characters")


def _number(value: Any, what: str) -> int:
    """An integer argument (a width, a count) as the operation will read it."""
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) > 9:
        raise LimitExceeded(f"{what}: {value[:12]}... is out of bounds")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)?", re.S)


def _printf_size(fmt: Any, args: Any) -> int:
    """An upper bound of len(fmt % args): every conversion may write its width, its precision
    and the largest argument."""
    fixed, conversions = _printf_spec(str(fmt))
    size = _size(fmt) + fixed
    if not conversions:
        return size
    if type(args) is tuple:
        values: Iterable[Any] = args
    elif isinstance(args, Mapping):
        values = args.values()
    else:
        values = (args,)
    biggest = 0
    for value in values:
        biggest = max(biggest, _size(value))
    return size + conversions * (biggest + 32)


@functools.lru_cache(maxsize=512)
def _printf_spec(fmt: str) -> tuple[int, int]:
    """(the widths and precisions summed, the number of conversions) of a %-format."""
    fixed = conversions = 0
    for match in _PRINTF.finditer(fmt):
        width, precision, conversion = match.groups()
        if "*" in (width, precision):
            raise LimitExceeded("'%' with a '*' width or precision is not allowed in a template")
        for digits in (width, precision):
            if digits and len(digits) > 9:
                return MAX_REPEAT + 1, 0
            fixed += int(digits or 0)
        conversions += conversion != "%"
    return fixed, conversions


def _format_size(fmt: str, values: list[Any]) -> int:
    """An upper bound of len(fmt.format(...)), as `_printf_size` for `%`."""
    biggest = max((_size(v) for v in values), default=0)
    total = 0
    for literal, field, spec, _conversion in Formatter().parse(fmt):
        total += len(literal)
        if field is None:
            continue
        if spec and "{" in spec:
            raise LimitExceeded("format(): a nested {} in a format spec is not allowed here")
        for digits in re.findall(r"\d+", spec or ""):
            if len(digits) > 9:
                return MAX_REPEAT + 1
            total += int(digits)
        total += biggest + 32
    return total


def _take(iterable: Any, what: str) -> list[Any]:
    """The items of an iterable, refusing more than MAX_REPEAT of them."""
    items = list(islice(iter(iterable), MAX_REPEAT + 1))
    if len(items) > MAX_REPEAT:
        raise LimitExceeded(f"{what} would take more than {MAX_REPEAT} items")
    return items


def _replace_size(s: str, old: Any, new: Any, count: Any = None) -> int:
    old, new = str(old), str(new)
    found = len(s) + 1 if old == "" else s.count(old)
    limit = _number(count, "replace()") if count is not None else -1
    if limit >= 0:
        found = min(found, limit)
    return len(s) + found * max(0, len(new) - len(old))


# ---------------------------------------------------------------------------------------------
# Guarded filters: what each would build, foreseen from its arguments


def _center_size(value: Any, width: Any = 80, *_: Any, **__: Any) -> int:
    return max(_size(value), _number(width, "center()"))


def _indent_size(s: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    text = str(s)
    indent = len(width) if isinstance(width, str) else _number(width, "indent()")
    return len(text) + (text.count("\n") + 2) * indent


def _format_filter_size(value: Any, *args: Any, **kwargs: Any) -> int:
    return _printf_size(str(value), kwargs or args)


def _wordwrap_size(
    s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None, *_: Any
) -> int:
    text = str(s)
    lines = len(text) // max(1, _number(width, "wordwrap()")) + len(text.split()) + 1
    lines += text.count("\n")
    return len(text) + lines * len(str(wrapstring) if wrapstring is not None else "\n")


def _replace_filter_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    return _replace_size(str(s), old, new, count)


def _urlize_size(
    value: Any,
    trim: Any = None,
    nofollow: Any = False,
    target: Any = None,
    rel: Any = None,
    *_: Any,
) -> int:
    text = str(value)
    extra = len(str(target or "")) + len(str(rel or "")) + 64
    return 12 * len(text) + len(text.split()) * extra


def _count_arg(what: str) -> Callable[..., int]:
    def size(value: Any, count: Any, *_: Any, **__: Any) -> int:
        if _number(count, what) > MAX_REPEAT:
            raise LimitExceeded(f"{what}: {count} is more than {MAX_REPEAT}")
        return 0

    return size


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> str:
    items = _take(value, "join")
    size = sum(_size(item) for item in items) + max(0, len(items) - 1) * _size(d)
    _check(size, "join")
    return sync_do_join(eval_ctx, items, d, attribute)  # type: ignore[no-any-return]


_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": _center_size,
    "indent": _indent_size,
    "format": _format_filter_size,
    "wordwrap": _wordwrap_size,
    "replace": _replace_filter_size,
    "urlize": _urlize_size,
    "batch": _count_arg("batch"),
    "slice": _count_arg("slice"),
}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context or env
    foresee = _FILTER_SIZES.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        work = 0
        for arg in chain(args[skip:], kwargs.values()) if kwargs else args[skip:]:
            size = _size(arg)
            if size > MAX_REPEAT:
                raise LimitExceeded(f"{name}: its input exceeds {MAX_REPEAT} characters")
            work += size
        if foresee is not None:
            _check(foresee(*args[skip:], **kwargs), name)
        result = func(*args, **kwargs)
        size = _size(result)
        _check(size, name)
        _charge(1, work + size)
        return result

    return guarded


# ---------------------------------------------------------------------------------------------
# Guarded methods of built-in values (`"x".center(10**9)`, `(1).to_bytes(10**9)`)

_TEXT_METHODS = frozenset(
    [
        "capitalize",
        "casefold",
        "count",
        "decode",
        "encode",
        "endswith",
        "find",
        "hex",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "isidentifier",
        "islower",
        "isnumeric",
        "isprintable",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
    ]
)


def _text_method_size(text: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    if name in _TEXT_METHODS:
        return 0
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        return max(len(text), _number(width, f"{name}()"))
    if name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        tabs = text.count("\t" if isinstance(text, str) else b"\t")
        return len(text) + tabs * max(0, _number(tabsize, "expandtabs()"))
    if name == "replace" and len(args) >= 2 and isinstance(text, str):
        return _replace_size(text, args[0], args[1], args[2] if len(args) > 2 else None)
    if name == "join" and args:
        return -1  # measured on the items, in `call`
    raise SecurityError(f"{type(text).__name__}.{name}() is not allowed in a template")


# ---------------------------------------------------------------------------------------------
# The environment


def _range(*args: Any) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise LimitExceeded(f"Range too big: range() holds at most {MAX_RANGE} items")
    return numbers


def _finalize(value: Any) -> Any:
    """Every `{{ ... }}` before it is turned into text. Short ones are not worth counting: there
    are at most MAX_STEPS of them beyond those written in the template."""
    size = _size(value)
    if size > _SHORT:
        if size > MAX_REPEAT:
            raise LimitExceeded(f"a value of more than {MAX_REPEAT} characters cannot be written")
        _charge(0, size)
    return value


_SHORT = 64


def _concat(pieces: Iterable[str]) -> str:
    """The text of a `{% set %}` block, a macro or a `{% filter %}` block."""
    out: list[str] = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_REPEAT:
            raise LimitExceeded(f"a block or macro would build more than {MAX_REPEAT} characters")
        out.append(piece)
    _charge(0, total)
    return "".join(out)


def _tilde(*parts: Any) -> str:
    """`a ~ b`."""
    texts: list[str] = []
    total = 0
    for part in parts:
        _check(_size(part), "'~'")
        text = str(part)
        total += len(text)
        _check(total, "'~'")
        texts.append(text)
    _charge(0, total)
    return "".join(texts)


def _list(*items: Any) -> list[Any]:
    _check(_size(items), "a list")
    return list(items)


def _tuple(*items: Any) -> tuple[Any, ...]:
    _check(_size(items), "a tuple")
    return items


def _dict(*pairs: Any) -> dict[Any, Any]:
    _check(_size(pairs), "a dict")
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def _loop(iterable: Any) -> Iterator[Any]:
    """What a `{% for %}` iterates over: each iteration is a step."""
    budget = _BUDGET.get()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget.steps -= 1
        if budget.steps < 0:
            _charge(0, 0)  # raises
        yield item


class _Guards(NodeTransformer):
    """Rewrites the parsed template so that loops, `~` and literals go through the guards."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _env_call("guarded_loop", [node.iter], node)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("guarded_tilde", node.nodes, node)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("guarded_list", node.items, node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        if node.ctx != "load":  # an assignment target
            return node
        return _env_call("guarded_tuple", node.items, node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        args = [part for pair in node.items for part in (pair.key, pair.value)]
        return _env_call("guarded_dict", args, node)


def _env_call(name: str, args: list[nodes.Expr], where: nodes.Node) -> nodes.Call:
    attribute = nodes.EnvironmentAttribute(name, lineno=where.lineno)
    return nodes.Call(attribute, list(args), [], None, None, lineno=where.lineno)


_SEQUENCES = (str, bytes, list, tuple)


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
