"""Rule expressions: a small, safe language over one entity's fields, compiled once into closures.

A rule's `expr:` is parsed with Python's own parser (`ast`, mode "eval"), checked against a short
list of allowed constructs, and turned into a tree of small closures. Evaluating it walks no AST
and builds nothing beyond the values it computes, so thousands of entities per round stay cheap.

Grammar (a subset of Python expressions)
-----------------------------------------
- Names resolve to the entity's field, else its identity label. A name that is neither, or whose
  value is null, is *unknown* (see below). `true false none` (and `True False None`) are constants.
- Constants: integers, floats, strings. No bytes, no complex numbers, no `...`.
- Boolean: `and`, `or`, `not`; `a if cond else b`.
- Comparisons: `== != < <= > >=` and chains of them (`0 < x <= 10`); `in` / `not in` against a
  list or tuple literal (`status in ("a", "b")`), a string (substring) or a map field (its keys).
  `x == none` is true when `x` is missing or null, `x != none` when it is set (same as `has(x)`).
- Arithmetic: `+ - * / // %`, unary `-` and `+`, `**` with |exponent| <= 64 and integer results of
  at most 4096 bits. `+` also joins strings; `*` and `%` are numbers only (no string repetition,
  no printf formatting).
- Functions, and only these: `age(ts)` (now - ts, in seconds), `rate(f)`, `delta(f)`, `changed(f)`,
  `has(f)`, `abs(x)`, `min(a, b, ...)`, `max(a, b, ...)`, `len(x)`, `startswith(s, prefix)`,
  `endswith(s, suffix)`, `matches(s, "regex")`, `lower(s)`, `upper(s)`, `round(x[, digits])`,
  `int(x)`, `float(x)`, `str(x)`.
  `rate`, `delta`, `changed` and `has` take a bare field name. `rate(f)` is the per-second increase
  of `f` since the previous snapshot of the same entity; a decrease is a counter reset, so the
  increase is then the current value (as Prometheus does). `delta(f)` is current - previous,
  `changed(f)` is current != previous (nulls compared as values). All three are unknown on the
  first snapshot. `matches` takes a string literal, compiled at load and matched in full (like
  PromQL's anchored `=~`). It is RE2 syntax (Go's, PromQL's and Alertmanager's), matched in
  linear time, so no pattern can stall an evaluation; what RE2 refuses (lookaround,
  backreferences) is a load error that names the construct.
- Rejected at load, with a message and a column: attribute access, subscripts, names starting
  with `_`, calls of anything but the functions above (including calls of call results), keyword
  or star arguments, lambdas, comprehensions, f-strings, `:=`, sets, dicts, list/tuple literals
  outside `in`, `is`, bitwise operators, comments, more than 2000 characters, more than 300 nodes,
  nesting deeper than 30 levels. Constant sub-expressions are computed at load, so `9**9**9`,
  `"a" * 10**9` or `1/0` are load errors.

Unknown values
--------------
A missing name, a null, a wrong type (`"a" < 1`), a division by zero or an out-of-bounds result
makes its sub-expression *unknown*. `and`, `or` and `not` follow SQL's three-valued logic:
unknown `or` true is true, unknown `and` false is false, `not` unknown is unknown; an expression
that ends up unknown is false. So `age(last_recv) > 10 or not present` fires for an absent stream
that has no `last_recv`. Guard with `has(x)` or `x if has(x) else 0` where that is wanted.
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.labels import compile_re2
from monitor.model import FieldValue

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_INT_BITS",
    "MAX_NODES",
    "MAX_SOURCE",
    "EvalContext",
    "Expr",
    "ExprError",
    "Missing",
    "compile_expr",
]

MAX_SOURCE = 2000
MAX_NODES = 300
MAX_DEPTH = 30
MAX_EXPONENT = 64
MAX_INT_BITS = 4096
MAX_ROUND_DIGITS = 64


class ExprError(ValueError):
    """An expression that cannot be loaded. `offset` is the 0-based character position in the
    source (the column, for a one-line expression), or None when it is about the whole text."""

    def __init__(self, message: str, offset: int | None = None):
        self.message = message
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (column {offset})")


class Missing(Exception):
    """Evaluation met an unknown: a missing name, a null, no previous snapshot, a type error.
    `test` turns it into false; `evaluate` raises it."""


@dataclass(slots=True)
class EvalContext:
    """What one evaluation sees: one entity now, the same entity in the previous snapshot."""

    fields: Mapping[str, FieldValue]
    labels: Mapping[str, str]
    previous: Mapping[str, FieldValue] | None
    previous_at: float | None
    taken_at: float
    now: float


Fn = Callable[[EvalContext], Any]
TestFn = Callable[[EvalContext], "tuple[bool, Any]"]

_FALSE: tuple[bool, Any] = (False, None)


class Expr:
    """A compiled expression. Immutable, reentrant, cheap to evaluate."""

    __slots__ = ("_eval", "_test", "names", "source")

    def __init__(self, source: str, names: frozenset[str], evaluate: Fn, test: TestFn):
        self.source = source
        self.names = names
        self._eval = evaluate
        self._test = test

    def evaluate(self, ctx: EvalContext) -> Any:
        """The expression's value. Raises `Missing` when it is unknown (a missing name, a null,
        a type error, a division by zero...; the original error is its `__cause__`)."""
        try:
            return self._eval(ctx)
        except Missing:
            raise
        except Exception as exc:
            raise Missing(str(exc)) from exc

    @property
    def unchecked_test(self) -> TestFn:
        """`test` without its guard: may raise on an unknown. For callers that evaluate many
        entities in one loop and catch there (a call frame per evaluation saved)."""
        return self._test

    def test(self, ctx: EvalContext) -> tuple[bool, Any]:
        """(truth, value); never raises. `value` is the left operand of the deciding top-level
        comparison (Prometheus's `$value`), else the expression's own value. Unknown → (False, None).
        """
        try:
            return self._test(ctx)
        except Exception:
            return _FALSE

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"


def compile_expr(source: str) -> Expr:
    """Check and compile an expression once; raises `ExprError` with a message and a column."""
    if not isinstance(source, str):
        raise ExprError(f"an expression must be a string, not {type(source).__name__}")
    if len(source) > MAX_SOURCE:
        raise ExprError(
            f"expression is {len(source)} characters long; the limit is {MAX_SOURCE}", MAX_SOURCE
        )
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ExprError("empty expression", 0)
    src = _Source(text)
    _scan_tokens(src)
    tree = _parse(src)
    _check_size(tree.body, src)
    compiler = _Compiler(src)
    evaluate = compiler.plain(tree.body).fn
    test = compiler.test(tree.body)
    return Expr(source, frozenset(compiler.names), evaluate, test)


# ---------------------------------------------------------------------------------------------
# Parsing and size checks


class _Source:
    """The (newline-normalised) text, and the mapping from AST positions to character offsets."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.split("\n")
        self.starts = [0]
        for line in self.lines[:-1]:
            self.starts.append(self.starts[-1] + len(line) + 1)

    def at(self, line: int, col: int) -> int:
        """Offset of a 0-based line and a character column."""
        if line < 0:
            return 0
        if line >= len(self.lines):
            return len(self.text)
        return self.starts[line] + min(col, len(self.lines[line]))

    def node(self, node: ast.AST, end: bool = False) -> int:
        """Offset of a node parsed from the wrapped text (see `_parse`): its lines are one down,
        its columns are UTF-8 byte offsets."""
        lineno = node.end_lineno if end else node.lineno  # type: ignore[attr-defined]
        col = node.end_col_offset if end else node.col_offset  # type: ignore[attr-defined]
        line = (lineno or 1) - 2
        if 0 <= line < len(self.lines):
            col = len(self.lines[line].encode()[: col or 0].decode("utf-8", "ignore"))
        return self.at(line, col or 0)


def _wrap(text: str) -> str:
    # In parentheses on their own lines, so an expression may span lines (a YAML block scalar)
    # as inside any Python bracket; `_scan_tokens` makes sure the text cannot close them early.
    return "(\n" + text + "\n)"


def _scan_tokens(src: _Source) -> None:
    """Reject comments, unbalanced closing brackets and bracket nesting deeper than MAX_DEPTH
    before the parser sees the text (its own limit is 200 levels and its message less clear)."""
    depth = 0
    try:
        tokens = tokenize.generate_tokens(io.StringIO(_wrap(src.text)).readline)
        for tok in tokens:
            offset = src.at(tok.start[0] - 2, tok.start[1])
            if tok.type == tokenize.COMMENT:
                raise ExprError("comments are not allowed in an expression", offset)
            if tok.type != tokenize.OP:
                continue
            if tok.string in ("(", "[", "{"):
                depth += 1
                if depth > MAX_DEPTH + 1:  # one level is the wrapper's
                    raise ExprError(
                        f"expression is nested more than {MAX_DEPTH} levels deep", offset
                    )
            elif tok.string in (")", "]", "}"):
                depth -= 1
                if depth <= 0 and tok.start[0] <= len(src.lines) + 1:
                    raise ExprError(f"unmatched {tok.string!r}", offset)
    except (tokenize.TokenError, SyntaxError):
        pass  # the parser reports it with a better message


def _parse(src: _Source) -> ast.Expression:
    try:
        return ast.parse(_wrap(src.text), mode="eval")
    except SyntaxError as exc:
        line = (exc.lineno or 2) - 2
        col = max((exc.offset or 1) - 1, 0)
        if line < 0:
            line, col = 0, 0
        message = exc.msg or "invalid syntax"
        if line >= len(src.lines):
            message = "incomplete expression" if message == "invalid syntax" else message
        raise ExprError(message, src.at(line, col)) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        # NUL characters, or a text the parser's own stack cannot hold.
        raise ExprError(f"cannot parse expression: {exc}") from None


# Nodes that only qualify their parent; they count neither as nodes nor as depth.
_UNCOUNTED = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


def _check_size(root: ast.AST, src: _Source) -> None:
    count = 0
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(
                f"expression is nested more than {MAX_DEPTH} levels deep", src.node(node)
            )
        count += 1
        if count > MAX_NODES:
            raise ExprError(f"expression has more than {MAX_NODES} nodes", src.node(node))
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, _UNCOUNTED):
                stack.append((child, depth + 1))


# ---------------------------------------------------------------------------------------------
# Runtime helpers (the operations that need a bound or a type check)

_NUMBER_TYPES = frozenset((int, float))


def _mul(a: Any, b: Any) -> Any:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        raise TypeError("'*' works on numbers only (strings cannot be repeated)")
    return a * b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str) or isinstance(b, str):
        raise TypeError("'%' works on numbers only (no string formatting)")
    return a % b


def _pow(a: Any, b: Any) -> Any:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        raise TypeError("'**' works on numbers only")
    if abs(b) > MAX_EXPONENT:
        raise OverflowError(f"exponent {b!r} is out of bounds (at most {MAX_EXPONENT})")
    if isinstance(a, int) and isinstance(b, int) and b > 1 and a.bit_length() * b > MAX_INT_BITS:
        raise OverflowError(f"result of '**' would exceed {MAX_INT_BITS} bits")
    result = a**b
    if isinstance(result, complex):
        raise ValueError("'**' of a negative number to a fractional power")
    return result


def _round(x: Any, digits: Any = None) -> Any:
    if digits is None:
        return round(x)
    if not isinstance(digits, int):
        raise TypeError("round(): digits must be an integer")
    if abs(digits) > MAX_ROUND_DIGITS:
        raise OverflowError(f"round(): digits must be within ±{MAX_ROUND_DIGITS}")
    return round(x, digits)


def _get(mapping: Any, key: Any) -> Any:
    """One key of a map field (`get(connections, "llhls")`); a missing key is unknown."""
    if not isinstance(mapping, Mapping):
        raise TypeError("get(): the first argument must be a map field")
    value = mapping.get(key)
    if value is None:
        raise KeyError(key)
    return value


# name -> (min args, max args or None, implementation or None for the special ones)
_SPECIAL = ("age", "rate", "delta", "changed", "has", "matches")
_PLAIN_FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., Any]]] = {
    "abs": (1, 1, abs),
    "min": (2, None, min),
    "max": (2, None, max),
    "len": (1, 1, len),
    "startswith": (2, 2, str.startswith),
    "endswith": (2, 2, str.endswith),
    "lower": (1, 1, str.lower),
    "upper": (1, 1, str.upper),
    "round": (1, 2, _round),
    "int": (1, 1, int),
    "float": (1, 1, float),
    "str": (1, 1, str),
    "get": (2, 2, _get),
}
FUNCTIONS: frozenset[str] = frozenset(_SPECIAL) | frozenset(_PLAIN_FUNCTIONS)
_FIELD_FUNCTIONS = ("rate", "delta", "changed", "has")

_CONSTANT_NAMES: dict[str, Any] = {
    "true": True,
    "false": False,
    "none": None,
    "True": True,
    "False": False,
    "None": None,
}


def _load(name: str) -> Fn:
    def load(ctx: EvalContext) -> Any:
        value = ctx.fields.get(name)
        if value is None:
            value = ctx.labels.get(name)
            if value is None:
                raise Missing(name)
        return value

    return load


def _has(name: str) -> Fn:
    def has(ctx: EvalContext) -> bool:
        return ctx.fields.get(name) is not None or ctx.labels.get(name) is not None

    return has


def _hasnt(name: str) -> Fn:
    def hasnt(ctx: EvalContext) -> bool:
        return ctx.fields.get(name) is None and ctx.labels.get(name) is None

    return hasnt


def _rate(name: str) -> Fn:
    def rate(ctx: EvalContext) -> float:
        previous = ctx.previous
        if previous is None or ctx.previous_at is None:
            raise Missing(name)
        cur = ctx.fields.get(name)
        prev = previous.get(name)
        if type(cur) not in _NUMBER_TYPES or type(prev) not in _NUMBER_TYPES:
            raise Missing(name)  # absent, null, or not a number (a flag is no counter)
        elapsed = ctx.taken_at - ctx.previous_at
        if elapsed <= 0:
            raise Missing(name)
        increase = cur - prev
        if increase < 0:  # counter reset: it restarted from zero and counted up to `cur`
            increase = cur
        return increase / elapsed

    return rate


def _delta(name: str) -> Fn:
    def delta(ctx: EvalContext) -> Any:
        previous = ctx.previous
        if previous is None:
            raise Missing(name)
        cur = ctx.fields.get(name)
        prev = previous.get(name)
        if type(cur) not in _NUMBER_TYPES or type(prev) not in _NUMBER_TYPES:
            raise Missing(name)
        return cur - prev

    return delta


def _changed(name: str) -> Fn:
    def changed(ctx: EvalContext) -> bool:
        previous = ctx.previous
        if previous is None or name not in previous or name not in ctx.fields:
            raise Missing(name)
        return ctx.fields[name] != previous[name]

    return changed


# ---------------------------------------------------------------------------------------------
# Closure builders. The common shapes get their own closures (an inline operator is several
# times cheaper than a call through `operator.*`).

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
}
_BINOP_SYMBOLS = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.MatMult: "@",
}

_CMPOPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def _binop(op: type, a: Fn, b: _C) -> Fn:
    if b.pure:
        return _binop_const(op, a, b.value)
    return _binop_fns(op, a, b.fn)


def _binop_const(op: type, a: Fn, c: Any) -> Fn:
    """`a <op> constant`: `rate(x) * 8`, `age(t) / 60`."""
    if op is ast.Add:

        def add(ctx: EvalContext) -> Any:
            return a(ctx) + c

        return add
    if op is ast.Sub:

        def sub(ctx: EvalContext) -> Any:
            return a(ctx) - c

        return sub
    if op is ast.Div:

        def div(ctx: EvalContext) -> Any:
            return a(ctx) / c

        return div
    fn = _BINOPS[op]

    def binop(ctx: EvalContext) -> Any:
        return fn(a(ctx), c)

    return binop


def _binop_fns(op: type, a: Fn, b: Fn) -> Fn:
    if op is ast.Add:

        def add(ctx: EvalContext) -> Any:
            return a(ctx) + b(ctx)

        return add
    if op is ast.Sub:

        def sub(ctx: EvalContext) -> Any:
            return a(ctx) - b(ctx)

        return sub
    if op is ast.Div:

        def div(ctx: EvalContext) -> Any:
            return a(ctx) / b(ctx)

        return div
    fn = _BINOPS[op]

    def binop(ctx: EvalContext) -> Any:
        return fn(a(ctx), b(ctx))

    return binop


def _compare_const(op: type, a: Fn, c: Any) -> Fn:
    """`a <op> constant`, the most common comparison."""
    if op is ast.Gt:

        def gt(ctx: EvalContext) -> bool:
            return a(ctx) > c

        return gt
    if op is ast.Lt:

        def lt(ctx: EvalContext) -> bool:
            return a(ctx) < c

        return lt
    if op is ast.GtE:

        def ge(ctx: EvalContext) -> bool:
            return a(ctx) >= c

        return ge
    if op is ast.LtE:

        def le(ctx: EvalContext) -> bool:
            return a(ctx) <= c

        return le
    if op is ast.Eq:

        def eq(ctx: EvalContext) -> bool:
            return a(ctx) == c

        return eq
    if op is ast.NotEq:

        def ne(ctx: EvalContext) -> bool:
            return a(ctx) != c

        return ne
    if op is ast.In:

        def in_(ctx: EvalContext) -> bool:
            return a(ctx) in c

        return in_

    def not_in(ctx: EvalContext) -> bool:
        return a(ctx) not in c

    return not_in


def _test_compare_const(op: type, a: Fn, c: Any) -> TestFn:
    """Test form of `a <op> constant`: the truth and the left value."""
    if op is ast.Gt:

        def gt(ctx: EvalContext) -> tuple[bool, Any]:
            v = a(ctx)
            return v > c, v

        return gt
    if op is ast.Lt:

        def lt(ctx: EvalContext) -> tuple[bool, Any]:
            v = a(ctx)
            return v < c, v

        return lt
    fn = _CMPOPS[op]

    def cmp(ctx: EvalContext) -> tuple[bool, Any]:
        v = a(ctx)
        return fn(v, c), v

    return cmp


def _and(a: Fn, b: Fn) -> Fn:
    def and_(ctx: EvalContext) -> Any:
        try:
            left = a(ctx)
        except Exception:
            right = b(ctx)  # unknown and false is false; anything else stays unknown
            if not right:
                return right
            raise
        if not left:
            return left
        return b(ctx)

    return and_


def _or(a: Fn, b: Fn) -> Fn:
    def or_(ctx: EvalContext) -> Any:
        try:
            left = a(ctx)
        except Exception:
            right = b(ctx)  # unknown or true is true; anything else stays unknown
            if right:
                return right
            raise
        if left:
            return left
        return b(ctx)

    return or_


def _test_and(a: TestFn, b: TestFn) -> TestFn:
    def and_(ctx: EvalContext) -> tuple[bool, Any]:
        try:
            left = a(ctx)
        except Exception:
            right = b(ctx)
            if not right[0]:
                return right
            raise
        if not left[0]:
            return left
        return b(ctx)

    return and_


def _test_or(a: TestFn, b: TestFn) -> TestFn:
    def or_(ctx: EvalContext) -> tuple[bool, Any]:
        try:
            left = a(ctx)
        except Exception:
            right = b(ctx)
            if right[0]:
                return right
            raise
        if left[0]:
            return left
        return b(ctx)

    return or_


def _constant(value: Any) -> Fn:
    def constant(ctx: EvalContext) -> Any:
        return value

    return constant


# ---------------------------------------------------------------------------------------------
# The compiler


@dataclass(slots=True)
class _C:
    """A compiled node: its closure, and its value when it is a load-time constant."""

    fn: Fn
    pure: bool = False  # constant: computed at load
    value: Any = None


_REJECTED: dict[type, str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts (x[...]) are not allowed",
    ast.Slice: "subscripts (x[...]) are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Set: "set literals are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Starred: "star arguments are not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Await: "await is not allowed",
    ast.List: "list and tuple literals are only allowed on the right of 'in' / 'not in'",
    ast.Tuple: "list and tuple literals are only allowed on the right of 'in' / 'not in'",
}

_FUNCTION_LIST = ", ".join(sorted(FUNCTIONS))


class _Compiler:
    def __init__(self, src: _Source):
        self.src = src
        self.names: set[str] = set()
        self._memo: dict[int, _C] = {}

    def error(self, node: ast.AST, message: str, end: bool = False) -> ExprError:
        return ExprError(message, self.src.node(node, end))

    # -- plain form: the value ------------------------------------------------------------

    def plain(self, node: ast.expr) -> _C:
        key = id(node)
        compiled = self._memo.get(key)
        if compiled is None:
            method = getattr(self, "_" + type(node).__name__, None)
            if method is None:
                raise self.error(node, self._rejection(node))
            compiled = method(node)
            self._memo[key] = compiled
        return compiled

    def _rejection(self, node: ast.AST) -> str:
        return _REJECTED.get(type(node), f"{type(node).__name__} is not allowed")

    def _Attribute(self, node: ast.Attribute) -> _C:
        while isinstance(node.value, ast.Attribute):  # report the first one: `.b` in `a.b.c`
            node = node.value
        offset = self.src.node(node, end=True) - len(node.attr)
        raise ExprError(f"attribute access is not allowed: '.{node.attr}'", offset)

    def _Subscript(self, node: ast.Subscript) -> _C:
        raise self.error(node.value, "subscripts (x[...]) are not allowed", end=True)

    def fold(self, node: ast.expr, fn: Fn, *parts: _C) -> _C:
        """`fn` as a constant when every part is one: computed now, with the same bounds."""
        if not all(p.pure for p in parts):
            return _C(fn)
        try:
            value = fn(None)  # type: ignore[arg-type]  # pure closures never read the context
        except Exception as exc:
            raise self.error(node, f"cannot compute constant: {exc}") from None
        return _C(_constant(value), True, value)

    def _Constant(self, node: ast.Constant) -> _C:
        value = node.value
        if value is not None and type(value) not in (int, float, str, bool):
            raise self.error(
                node, "only numbers, strings, true/false and none are allowed as constants"
            )
        return _C(_constant(value), True, value)

    def _Name(self, node: ast.Name) -> _C:
        name = node.id
        if name in _CONSTANT_NAMES:
            value = _CONSTANT_NAMES[name]
            return _C(_constant(value), True, value)
        if name.startswith("_"):
            raise self.error(node, f"names starting with '_' are not allowed: {name!r}")
        self.names.add(name)
        return _C(_load(name))

    def _UnaryOp(self, node: ast.UnaryOp) -> _C:
        operand = self.plain(node.operand)
        f = operand.fn
        if isinstance(node.op, ast.Not):

            def not_(ctx: EvalContext) -> bool:
                return not f(ctx)

            return self.fold(node, not_, operand)
        if isinstance(node.op, ast.USub):

            def neg(ctx: EvalContext) -> Any:
                return -f(ctx)

            return self.fold(node, neg, operand)
        if isinstance(node.op, ast.UAdd):

            def pos(ctx: EvalContext) -> Any:
                return +f(ctx)

            return self.fold(node, pos, operand)
        raise self.error(node, "operator '~' is not allowed")

    def _BinOp(self, node: ast.BinOp) -> _C:
        op = type(node.op)
        if op not in _BINOPS:
            raise self.error(node, f"operator {_BINOP_SYMBOLS.get(op, '?')!r} is not allowed")
        left = self.plain(node.left)
        right = self.plain(node.right)
        if op is ast.Pow and right.pure:
            exponent = right.value
            if isinstance(exponent, (int, float)) and abs(exponent) > MAX_EXPONENT:
                raise self.error(
                    node.right,
                    f"exponent {exponent!r} is out of bounds (at most {MAX_EXPONENT})",
                )
        return self.fold(node, _binop(op, left.fn, right), left, right)

    def _BoolOp(self, node: ast.BoolOp) -> _C:
        parts = [self.plain(v) for v in node.values]
        join = _and if isinstance(node.op, ast.And) else _or
        fn = parts[-1].fn
        for part in reversed(parts[:-1]):
            fn = join(part.fn, fn)
        return self.fold(node, fn, *parts)

    def _IfExp(self, node: ast.IfExp) -> _C:
        cond, body, orelse = self.plain(node.test), self.plain(node.body), self.plain(node.orelse)
        c, b, o = cond.fn, body.fn, orelse.fn

        def if_(ctx: EvalContext) -> Any:
            return b(ctx) if c(ctx) else o(ctx)

        return self.fold(node, if_, cond, body, orelse)

    def _container(self, node: ast.expr) -> _C:
        """The right side of `in`: a list/tuple literal becomes a frozenset when constant."""
        if not isinstance(node, (ast.List, ast.Tuple)):
            return self.plain(node)
        items = [self.plain(e) for e in node.elts]
        if all(i.pure for i in items):
            value = frozenset(i.value for i in items)
            return _C(_constant(value), True, value)
        fns = tuple(i.fn for i in items)

        def items_(ctx: EvalContext) -> tuple[Any, ...]:
            return tuple(f(ctx) for f in fns)

        return _C(items_)

    def _none_check(self, node: ast.Compare) -> _C | None:
        """`name == none` / `name != none`: whether the name is missing or null."""
        if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            return None
        left, right = node.left, node.comparators[0]
        if _is_none(left):
            left, right = right, left
        if not (_is_none(right) and isinstance(left, ast.Name) and not _is_none(left)):
            return None
        if left.id in _CONSTANT_NAMES:
            return None
        self.plain(left)  # checks the name and records it
        build = _hasnt if isinstance(node.ops[0], ast.Eq) else _has
        return _C(build(left.id))

    def _compare_parts(self, node: ast.Compare) -> tuple[list[type], list[_C]]:
        ops: list[type] = []
        for op in node.ops:
            if isinstance(op, (ast.Is, ast.IsNot)):
                raise self.error(node, "'is' is not allowed; use == or !=")
            ops.append(type(op))
        operands = [self.plain(node.left)]
        for op, comparator in zip(ops, node.comparators, strict=True):
            if op in (ast.In, ast.NotIn):
                operands.append(self._container(comparator))
            else:
                operands.append(self.plain(comparator))
        return ops, operands

    def _Compare(self, node: ast.Compare) -> _C:
        none_check = self._none_check(node)
        if none_check is not None:
            return none_check
        ops, operands = self._compare_parts(node)
        if len(ops) == 1:
            left, right = operands
            if right.pure:
                fn = _compare_const(ops[0], left.fn, right.value)
            else:
                cmp, a, b = _CMPOPS[ops[0]], left.fn, right.fn

                def fn(ctx: EvalContext) -> bool:
                    return cmp(a(ctx), b(ctx))

            return self.fold(node, fn, left, right)
        fns = [o.fn for o in operands]
        first = fns[0]
        steps = tuple((_CMPOPS[op], f) for op, f in zip(ops, fns[1:], strict=True))

        def chain(ctx: EvalContext) -> bool:
            a = first(ctx)
            for cmp, f in steps:
                b = f(ctx)
                if not cmp(a, b):
                    return False
                a = b
            return True

        return self.fold(node, chain, *operands)

    def _Call(self, node: ast.Call) -> _C:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                if func.attr in FUNCTIONS:
                    raise self.error(
                        func,
                        f"attribute access is not allowed; write {func.attr}(x) "
                        f"instead of x.{func.attr}()",
                    )
                raise self.error(func, "attribute access is not allowed")
            if isinstance(func, ast.Call):
                raise self.error(node, "calling the result of a call is not allowed")
            if type(func) in _REJECTED and not isinstance(func, (ast.List, ast.Tuple)):
                self.plain(func)  # raises its own, more precise error
            raise self.error(node, f"only these functions can be called: {_FUNCTION_LIST}")
        name = func.id
        if name.startswith("_"):
            raise self.error(func, f"names starting with '_' are not allowed: {name!r}")
        if name not in FUNCTIONS:
            raise self.error(func, f"unknown function {name!r}; allowed: {_FUNCTION_LIST}")
        for kw in node.keywords:
            raise self.error(kw, f"{name}() takes no keyword arguments")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.error(arg, "star arguments are not allowed")
        args = node.args
        if name in _FIELD_FUNCTIONS:
            self._arity(node, name, 1, 1)
            field_node = args[0]
            if not isinstance(field_node, ast.Name) or field_node.id in _CONSTANT_NAMES:
                raise self.error(
                    field_node, f"{name}() takes a bare field name, e.g. {name}(bytes_in)"
                )
            self.plain(field_node)  # checks and records the name
            field = field_node.id
            build = {"rate": _rate, "delta": _delta, "changed": _changed, "has": _has}[name]
            return _C(build(field))
        if name == "age":
            self._arity(node, name, 1, 1)
            ts = self.plain(args[0]).fn

            def age(ctx: EvalContext) -> Any:
                return ctx.now - ts(ctx)

            return _C(age)
        if name == "matches":
            return self._matches(node)
        low, high, impl = _PLAIN_FUNCTIONS[name]
        self._arity(node, name, low, high)
        parts = [self.plain(a) for a in args]
        return self.fold(node, _call(impl, parts), *parts)

    def _arity(self, node: ast.Call, name: str, low: int, high: int | None) -> None:
        given = len(node.args)
        if low <= given and (high is None or given <= high):
            return
        if high is None:
            wanted = f"at least {low} arguments"
        elif low == high:
            wanted = f"{low} argument{'s' if low != 1 else ''}"
        else:
            wanted = f"{low} to {high} arguments"
        raise self.error(node, f"{name}() takes {wanted} ({given} given)")

    def _matches(self, node: ast.Call) -> _C:
        self._arity(node, "matches", 2, 2)
        subject, pattern_node = node.args
        if not (isinstance(pattern_node, ast.Constant) and isinstance(pattern_node.value, str)):
            raise self.error(pattern_node, "matches() needs a string literal as its regex")
        try:
            pattern = compile_re2(pattern_node.value)
        except ValueError as exc:
            raise self.error(pattern_node, f"bad regex {pattern_node.value!r}: {exc}") from None
        s = self.plain(subject)
        fullmatch, f = pattern.fullmatch, s.fn

        def matches(ctx: EvalContext) -> bool:
            return fullmatch(f(ctx))

        return self.fold(node, matches, s)

    # -- test form: (truth, value) ---------------------------------------------------------

    def test(self, node: ast.expr) -> TestFn:
        """The boolean skeleton at the top (and/or/not/if/comparison) gets closures that also
        return the value to show; everything under it is the plain form."""
        compiled = self.plain(node)  # validates, and folds constants
        if compiled.pure:
            result = (bool(compiled.value), compiled.value)

            def constant(ctx: EvalContext) -> tuple[bool, Any]:
                return result

            return constant
        if isinstance(node, ast.BoolOp):
            join = _test_and if isinstance(node.op, ast.And) else _test_or
            fn = self.test(node.values[-1])
            for value in reversed(node.values[:-1]):
                fn = join(self.test(value), fn)
            return fn
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.test(node.operand)

            def not_(ctx: EvalContext) -> tuple[bool, Any]:
                truth, value = inner(ctx)
                return not truth, value

            return not_
        if isinstance(node, ast.IfExp):
            cond, body, orelse = (
                self.plain(node.test).fn,
                self.test(node.body),
                self.test(node.orelse),
            )

            def if_(ctx: EvalContext) -> tuple[bool, Any]:
                return body(ctx) if cond(ctx) else orelse(ctx)

            return if_
        if isinstance(node, ast.Compare) and self._none_check(node) is None:
            return self._test_compare(node)
        f = compiled.fn

        def leaf(ctx: EvalContext) -> tuple[bool, Any]:
            value = f(ctx)
            return bool(value), value

        return leaf

    def _test_compare(self, node: ast.Compare) -> TestFn:
        ops, operands = self._compare_parts(node)
        # The value shown is the first operand that is not a constant: `x` in `0 < x < 10`.
        shown = next((i for i, o in enumerate(operands) if not o.pure), 0)
        if len(ops) == 1 and shown == 0 and operands[1].pure:
            return _test_compare_const(ops[0], operands[0].fn, operands[1].value)
        fns = [o.fn for o in operands]
        first = fns[0]
        steps = tuple((_CMPOPS[op], f) for op, f in zip(ops, fns[1:], strict=True))

        def chain(ctx: EvalContext) -> tuple[bool, Any]:
            a = first(ctx)
            value = a if shown == 0 else None
            for i, (cmp, f) in enumerate(steps, 1):
                b = f(ctx)
                if i == shown:
                    value = b
                if not cmp(a, b):
                    return False, value
                a = b
            return True, value

        return chain


def _is_none(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and node.value is None) or (
        isinstance(node, ast.Name) and node.id in ("none", "None")
    )


def _call(impl: Callable[..., Any], parts: list[_C]) -> Fn:
    fns = [p.fn for p in parts]
    if len(fns) == 1:
        (a,) = fns

        def call1(ctx: EvalContext) -> Any:
            return impl(a(ctx))

        return call1
    if len(fns) == 2 and parts[1].pure:
        a, c = fns[0], parts[1].value

        def call2_const(ctx: EvalContext) -> Any:  # startswith(s, "x"), round(x, 2)
            return impl(a(ctx), c)

        return call2_const
    if len(fns) == 2:
        a, b = fns

        def call2(ctx: EvalContext) -> Any:
            return impl(a(ctx), b(ctx))

        return call2
    all_fns = tuple(fns)

    def call(ctx: EvalContext) -> Any:
        return impl(*[f(ctx) for f in all_fns])

    return call
