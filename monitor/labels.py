"""Label matchers as Alertmanager writes them: `name="value"`, `!=`, `=~` and `!~`.

Regular expressions are compiled once and anchored at both ends, as in Alertmanager's
`pkg/labels/matcher.go`, so `stream=~"test"` does not match `latest`. They are RE2 (Go's and
Alertmanager's syntax), which runs in linear time: a matcher from the API cannot backtrack the
daemon to a halt. A value is at most MAX_VALUE characters.

`compile_re2` is the one place a regex is compiled, for matchers and for rule expressions'
`matches()`: a construct RE2 refuses (lookaround, backreferences, possessive quantifiers) is an
error that names it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import re2

Op = Literal["=", "!=", "=~", "!~"]

MAX_VALUE = 4096
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error goes to the caller, not to stderr
_SURROGATE = re.compile("[\ud800-\udfff]")


class Regex:
    """A compiled RE2 pattern, matched against the whole string."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, compiled: Any):
        self.pattern = pattern
        self._compiled = compiled

    def fullmatch(self, text: str) -> bool:
        if not isinstance(text, str):
            raise TypeError(f"a regex matches strings, not {type(text).__name__}")
        try:
            return self._compiled.fullmatch(text) is not None
        except UnicodeEncodeError:  # a lone surrogate; RE2 reads UTF-8 only
            return self._compiled.fullmatch(_SURROGATE.sub("\ufffd", text)) is not None

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


# What RE2's terse message ("invalid perl operator: (?<=") is about, by the token it names.
_REFUSED = {
    "(?=": "lookahead (?=...)",
    "(?!": "negative lookahead (?!...)",
    "(?<=": "lookbehind (?<=...)",
    "(?<!": "negative lookbehind (?<!...)",
    "(?>": "atomic group (?>...)",
    "(?#": "comment group (?#...)",
    "\\k": "named backreference \\k<name>",
    "\\G": "\\G (continue at the last match)",
    "\\Z": "\\Z",
    "*+": "possessive quantifier *+",
    "++": "possessive quantifier ++",
    "?+": "possessive quantifier ?+",
}


def compile_re2(pattern: str) -> Regex:
    """Compile `pattern` with RE2 (linear-time matching, Go's and Alertmanager's syntax).
    Raises ValueError with a message naming what RE2 refuses."""
    if not isinstance(pattern, str):
        raise TypeError(f"a regex must be a string, not {type(pattern).__name__}")
    try:
        return Regex(pattern, re2.compile(pattern, _RE2_OPTIONS))
    except re2.error as exc:
        raise ValueError(_explain(pattern, _re2_message(exc))) from None
    except UnicodeEncodeError:
        raise ValueError("the regex is not valid Unicode (a lone surrogate)") from None


def _explain(pattern: str, message: str) -> str:
    token = message.rpartition(": ")[2]
    construct = _REFUSED.get(token)
    if construct is None and token == "(?P" and "(?P=" in pattern:
        construct = "named backreference (?P=name)"
    if construct is None and re.fullmatch(r"\\[1-9]", token):
        construct = f"backreference {token}"
    if construct is None:
        return message
    return f"{construct} is not supported by RE2, which matches in linear time ({message})"


_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.S)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: Regex | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name: str, op: Op, value: str) -> Matcher:
        if len(value) > MAX_VALUE:
            raise ValueError(f"matcher {name}: value is longer than {MAX_VALUE} characters")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = compile_re2(value)
            except ValueError as exc:
                raise ValueError(f"matcher {name}{op}{value!r}: invalid regex: {exc}") from None
        return cls(name, op, value, regex)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        match = _MATCHER.match(text)
        if not match:
            raise ValueError(f'invalid matcher {text!r}: expected name="value", !=, =~ or !~')
        name, op, raw = match.groups()
        value = raw
        if raw.startswith('"'):
            try:
                value = json.loads(raw)
            except ValueError:
                raise ValueError(f"invalid matcher {text!r}: badly quoted value") from None
            if not isinstance(value, str):
                raise ValueError(f"invalid matcher {text!r}: value must be a string")
        return cls.make(name, op, value)  # type: ignore[arg-type]

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Matcher:
        """Alertmanager API v2 shape: {name, value, isRegex, isEqual (default true)}. Types are
        strict, as in Alertmanager: `"isRegex": "false"` is a string, not a boolean."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a matcher must be an object, not {type(data).__name__}")
        name, value = data.get("name"), data.get("value")
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            raise ValueError('matcher name must be a label name (a string such as "stream")')
        if not isinstance(value, str):
            raise TypeError(f"matcher {name}: value must be a string, not {_json_text(value)}")
        flags = {}
        for key, default in (("isRegex", False), ("isEqual", True)):
            flag = data.get(key, default)
            if not isinstance(flag, bool):
                raise TypeError(
                    f"matcher {name}: {key} must be true or false, not {_json_text(flag)}"
                )
            flags[key] = flag
        is_regex, is_equal = flags["isRegex"], flags["isEqual"]
        op: Op = ("=~" if is_equal else "!~") if is_regex else ("=" if is_equal else "!=")
        return cls.make(name, op, value)

    def matches_empty(self) -> bool:
        """True when a label that is absent (the empty string) satisfies this matcher."""
        return self.matches({})

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.op in ("=~", "!~"),
            "isEqual": self.op in ("=", "=~"),
        }

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(value)
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def matches_all(matchers: tuple[Matcher, ...] | list[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def _json_text(value: Any) -> str:
    """How a value looked in the request, for an error message (cut short)."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def _re2_message(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
