"""The configuration file: pydantic models in the shape of DESIGN.md, loaded with file:line errors.

Unknown keys are errors (typos must not pass silently), durations are strings (`500ms`, `5s`,
`2m`, `1h`, `1d`, or combined `1m30s`), secrets are SecretStr so they never print.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from monitor.actions.config import ActionsConfig
from monitor.labels import Matcher
from monitor.notify.config import NotifyConfig
from monitor.schema import Duration, Strict, duration_between, validation_problems
from monitor.sources.registry import upstreams
from monitor.yamlfile import LoadedYaml, YamlError, load_yaml


def check_listen(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9108, got {value!r}")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9108, got {value!r}")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range: 0..65535 (0 picks a free port)")
    return value


class _Sources(Strict):
    """The `sources:` section: one list per upstream kind, built from the registry below."""

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, data: Any) -> Any:
        # `ome:` with nothing under it is an empty list, not an error.
        if isinstance(data, Mapping):
            return {key: [] if value is None else value for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> _Sources:
        for kind in type(self).model_fields:
            problem = duplicate_names(kind, [source.name for source in getattr(self, kind)])
            if problem:
                raise ValueError(problem)
        return self


def duplicate_names(kind: str, names: list[Any]) -> str | None:
    duplicates = sorted({str(n) for n in names if n is not None and names.count(n) > 1})
    return f"sources.{kind}: duplicate name(s) {', '.join(duplicates)}" if duplicates else None


# One `list[<config model>]` per upstream the registry knows: adding an upstream touches the
# registry only.
SourcesConfig: type[_Sources] = create_model(
    "SourcesConfig",
    __base__=_Sources,
    __module__=__name__,
    **{u.kind: (list[u.config_model], Field(default_factory=list)) for u in upstreams()},
)


class HttpConfig(Strict):
    """Bounds of the HTTP listener against slow and numerous clients (monitor/listener.py)."""

    max_connections: Annotated[int, Field(ge=8, le=65536)] = 256
    idle_timeout: duration_between(1.0, 3600.0) = 15.0  # type: ignore[valid-type]


class ApiConfig(Strict):
    token: SecretStr | None = Field(
        None, description="bearer token for state-changing HTTP API calls; unset = they are refused"
    )


class LogConfig(Strict):
    format: Literal["logfmt", "json"] = "logfmt"
    level: Literal["debug", "info", "warning", "error"] = "info"


# Below 5 s one slow poll would page someone; a day is the longest that still means "down".
SourceDownAfter = duration_between(5.0, 86400.0)
UpToAWeek = duration_between(0.0, 7 * 86400.0)


class AlertingConfig(Strict):
    source_down_after: SourceDownAfter = 60.0
    resolved_retention: UpToAWeek = 900.0


class SilenceConfig(Strict):
    """A maintenance window: `schedule` (5-field cron) + `duration`, or `starts_at` + `ends_at`."""

    name: Annotated[str, Field(min_length=1)]
    matchers: Annotated[list[str], Field(min_length=1)]
    schedule: str | None = None
    duration: Duration | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    timezone: str = "UTC"
    comment: str = ""

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, matchers: list[str]) -> list[str]:
        for text in matchers:
            Matcher.parse(text)
        return matchers

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name

    @model_validator(mode="after")
    def _one_form(self) -> SilenceConfig:
        if self.schedule is not None:
            if self.duration is None or self.duration <= 0:
                raise ValueError("a scheduled window needs a positive duration")
            if self.starts_at or self.ends_at:
                raise ValueError("give either schedule + duration, or starts_at + ends_at")
            try:
                CronTrigger.from_crontab(self.schedule, timezone=ZoneInfo(self.timezone))
            except ValueError as exc:
                raise ValueError(f"schedule {self.schedule!r}: {exc}") from None
        elif self.starts_at is None or self.ends_at is None:
            raise ValueError("give either schedule + duration, or starts_at + ends_at")
        else:
            for stamp in (self.starts_at, self.ends_at):
                if stamp.tzinfo is None:
                    raise ValueError(
                        "starts_at and ends_at need a time zone, e.g. 2026-12-01T02:00:00Z"
                    )
            if self.ends_at <= self.starts_at:
                raise ValueError("ends_at must be after starts_at")
        return self


class Config(Strict):
    listen: Annotated[str, BeforeValidator(check_listen)] = "127.0.0.1:9108"
    state_dir: Path = Path("/var/lib/streamwatch")
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    # None (absent) is an error at load: a daemon without rules must say so (`rule_files: []`).
    rule_files: list[str] | None = None
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    silences: list[SilenceConfig] = Field(default_factory=list)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ConfigError(Exception):
    """Everything wrong with a config file, one `file:line: key.path: what` line each.
    `rule_files` are the file's rule globs when it names them readably, so that `check` can
    report the rule files' problems in the same pass."""

    def __init__(self, problems: list[str], rule_files: list[str] | None = None):
        super().__init__("\n".join(problems))
        self.problems = problems
        self.rule_files = rule_files


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate. Raises ConfigError listing every problem found."""
    try:
        loaded = load_yaml(path, env=env)
    except YamlError as exc:
        raise ConfigError(exc.problems) from exc
    data = loaded.data if loaded.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([f"{loaded.file}:1: the top level must be a mapping of keys"])
    problems = list(loaded.problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(exc, loaded)
    # Checks across keys run on the file as written too, so that one `check` says everything
    # (pydantic skips a model's cross-key checks while one of its keys is wrong).
    problems += _cross_checks(data, loaded)
    # Relative paths in the file are relative to the file, not to wherever the daemon started.
    base = Path(path).resolve().parent
    if problems:
        raw = data.get("rule_files")
        readable = isinstance(raw, list) and all(isinstance(p, str) for p in raw)
        rule_files = _resolve(raw, base) if readable else None
        raise ConfigError(list(dict.fromkeys(problems)), rule_files)
    state_dir = config.state_dir if config.state_dir.is_absolute() else base / config.state_dir
    return config.model_copy(
        update={"state_dir": state_dir, "rule_files": _resolve(config.rule_files or [], base)}
    )


def _resolve(patterns: list[str], base: Path) -> list[str]:
    return [str(p if Path(p).is_absolute() else base / p) for p in patterns]


def _cross_checks(data: Mapping[str, Any], loaded: LoadedYaml) -> list[str]:
    problems = []
    if "rule_files" not in data or data["rule_files"] is None:
        problems.append(
            f"{loaded.file}:1: rule_files: missing; list your rule files (globs such as "
            "rules/*.yaml), or write `rule_files: []` to run without rules"
        )
    sources = data.get("sources")
    if isinstance(sources, Mapping):
        for kind, items in sources.items():
            if not isinstance(items, list):
                continue
            names = [item.get("name") for item in items if isinstance(item, Mapping)]
            problem = duplicate_names(str(kind), names)
            if problem:
                problems.append(f"{loaded.where(('sources',))}: sources: {problem}")
    return problems
