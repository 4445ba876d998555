"""Lenient readers for upstream JSON values: vendors send numbers as strings (OME track
bitrates up to 0.18, NAVER's 2024 docs), flags as "true", and ISO 8601 with or without an
offset. One set of rules for every source, so they cannot drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def number(value: Any) -> float | int | None:
    """A JSON number, or a string holding one; None for anything else (booleans included)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def integer(value: Any) -> int | None:
    """An integer sent as a JSON number or as a string; a finite float is truncated."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return integer(float(text))
            except ValueError:
                return None
    return None


def flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def text(value: Any) -> str | None:
    """A scalar as a string; None for null, "", objects and arrays."""
    if value is None or isinstance(value, dict | list):
        return None
    result = str(value)
    return result or None


def iso_epoch(value: Any) -> float | None:
    """ISO 8601 (`2023-03-15T19:46:13.728+09:00`, `...Z`) → epoch seconds; without an offset
    the time is taken as UTC (never as this machine's local time). Numbers pass through."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
