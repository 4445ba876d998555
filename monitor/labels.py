"""Label matchers as Alertmanager writes them: `name="value"`, `!=`, `=~` and `!~`.

Regular expressions are compiled once and anchored at both ends, as in Alertmanager's
`pkg/labels/matcher.go`, so `stream=~"test"` does not match `latest`. They are RE2 (Go's and
Alertmanager's syntax), which runs in linear time: a matcher from the API cannot backtrack the
daemon to a halt. A value is at most MAX_VALUE characters.
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

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.S)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)  # a compiled re2 pattern

    @classmethod
    def make(cls, name: str, op: Op, value: str) -> Matcher:
        if len(value) > MAX_VALUE:
            raise ValueError(f"matcher {name}: value is longer than {MAX_VALUE} characters")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re2.compile(f"^(?:{value})$", _RE2_OPTIONS)
            except re2.error as exc:
                raise ValueError(
                    f"matcher {name}{op}{value!r}: invalid regex: {_re2_message(exc)}"
                ) from None
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
        """Alertmanager API v2 shape: {name, value, isRegex, isEqual (default true)}."""
        name, value = data.get("name"), data.get("value")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError("matcher name must be a label name")
        if not isinstance(value, str):
            raise ValueError(f"matcher {name}: value must be a string")
        is_regex, is_equal = bool(data.get("isRegex", False)), bool(data.get("isEqual", True))
        op: Op = ("=~" if is_equal else "!~") if is_regex else ("=" if is_equal else "!=")
        return cls.make(name, op, value)

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
        found = self._regex.match(value) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def matches_all(matchers: tuple[Matcher, ...] | list[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def _re2_message(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text
