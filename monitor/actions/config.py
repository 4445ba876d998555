"""The `actions:` section of the config file: global dry-run, concurrency, the guard's
defaults (any action in a rule may override its keys) and the HLS dumps' disk budget."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from monitor.actions.peers import HaConfig
from monitor.schema import Strict, duration_between
from monitor.sources.http import parse_byte_size

ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]

GUARD_KEYS = (
    "cooldown",
    "budget",
    "budget_window",
    "backoff",
    "backoff_max",
    "reset_after",
    "timeout",
)


class GuardConfig(Strict):
    cooldown: duration_between(0.0, 7 * 86400.0) = 300.0  # type: ignore[valid-type]
    budget: Annotated[int, Field(ge=1, le=1000)] = (
        3  # attempts per budget_window per (action, target)
    )
    budget_window: duration_between(1.0, 7 * 86400.0) = 3600.0  # type: ignore[valid-type]
    backoff: duration_between(0.0, 86400.0) = 30.0  # type: ignore[valid-type]
    backoff_max: duration_between(0.0, 7 * 86400.0) = 600.0  # type: ignore[valid-type]
    reset_after: duration_between(0.0, 7 * 86400.0) = 600.0  # type: ignore[valid-type]
    timeout: duration_between(1.0, 3600.0) = 120.0  # type: ignore[valid-type]

    def merged(self, overrides: dict[str, Any]) -> GuardConfig:
        """These defaults with a rule action's own keys (already in seconds) on top."""
        given = {k: overrides[k] for k in GUARD_KEYS if overrides.get(k) is not None}
        return self.model_copy(update=given) if given else self


class DumpsConfig(Strict):
    root: str | None = None  # default: <state_dir>/dumps; a relative root is below state_dir
    max_dumps: Annotated[int, Field(ge=1, le=100_000)] = 50
    max_bytes: ByteSize = 10 * 1024**3


class ActionsConfig(Strict):
    dry_run: bool = False
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    guard: GuardConfig = Field(default_factory=GuardConfig)
    dumps: DumpsConfig = Field(default_factory=DumpsConfig)
    ha: HaConfig = Field(default_factory=HaConfig)  # one action per incident in an HA group
    # Accepted for configs written before the guard existed: the same as guard.cooldown.
    cooldown: duration_between(0.0, 7 * 86400.0) | None = None  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _legacy_cooldown(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("cooldown") is not None:
            guard = data.get("guard") or {}
            if isinstance(guard, dict) and "cooldown" not in guard:
                data = {**data, "guard": {**guard, "cooldown": data["cooldown"]}}
        return data
