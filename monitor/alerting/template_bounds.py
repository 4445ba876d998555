"""The bounds of a template render: what one render may build, read and loop, checked before
a value is built where that is possible (`%`, `*`, `format`, `center`, `join`, ...), and the
node rewrites that route loops, literals and concatenation through those checks.

Kept apart from `templates.py`, which compiles, renders and holds the filters: this module is
only about not letting a template build a gigabyte or loop forever.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from itertools import chain, islice
from string import Formatter
from typing import Any

from jinja2 import nodes, pass_eval_context
from jinja2.filters import sync_do_join
from jinja2.runtime import Undefined
from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

MAX_RENDERED = 16384  # characters of one rendered template
MAX_SOURCE = MAX_RENDERED  # characters of a template as written (plain text renders as itself)
MAX_REPEAT = 65536  # characters (or items) of any value built while rendering
MAX_STEPS = 2000  # loop iterations and calls in one render
MAX_WORK = 262_144  # characters built or read by filters, operators, calls and output, per render
MAX_RANGE = 10_000  # items of range()
MAX_EXPONENT = 64
MAX_INT_BITS = 4096


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
