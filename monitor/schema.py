"""The building blocks that config and rule files share: durations, the strict base model,
URLs and names, and pydantic errors described the way an operator reads them.

Kept apart from `config` so that rule files and upstream packages can use them without
importing the whole configuration (and so without an import loop).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from monitor.yamlfile import LoadedYaml, PathKey, format_path

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """`"1m30s"` → 90.0. Bare numbers are refused: a unit-less interval is a typo waiting."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value > 0:
            raise ValueError(f"a duration needs a unit, like '{value}s'")
        # No example: '0s' is refused by most durations' bounds.
        raise ValueError("a duration needs a unit: ms, s, m, h or d")
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a duration such as 500ms, 5s, 2m, 1h")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 5s, 2m, 1h, 1m30s")
    return total


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    parts, rest = [], int(seconds)
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[Duration, Field(gt=0)]


def duration_between(low: float, high: float) -> Any:
    """A Duration bounded to [low, high], refused with a message that names both bounds."""

    def check(seconds: float) -> float:
        if not low <= seconds <= high:
            raise ValueError(
                f"{format_duration(seconds)} is out of range: "
                f"between {format_duration(low)} and {format_duration(high)}"
            )
        return seconds

    return Annotated[float, BeforeValidator(parse_duration), AfterValidator(check)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


Url = Annotated[str, BeforeValidator(lambda v: _check_url(v) if isinstance(v, str) else v)]
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


def describe_error(error: Mapping[str, Any], unknown_key: str = "unknown key") -> str:
    """One pydantic error as an operator reads it."""
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return unknown_key
    if kind == "missing":
        return "required key is missing"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def error_path(error: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> PathKey:
    """The key path of a pydantic error. pydantic adds validator and union branch tags
    (`function-after[...]`) to `loc`; only field names and list indexes are a key path."""
    aliases = aliases or {}
    return tuple(
        aliases.get(part, part) if isinstance(part, str) else part
        for part in error["loc"]
        if isinstance(part, int) or _FIELD_NAME.match(part)
    )


def validation_problems(exc: ValidationError, loaded: LoadedYaml) -> list[str]:
    problems = []
    for error in exc.errors():
        path = error_path(error)
        reason = describe_error(
            error, "unknown key (check the spelling against the configuration reference)"
        )
        problems.append(f"{loaded.where(path)}: {format_path(path)}: {reason}")
    return problems
