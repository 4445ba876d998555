"""Rule files: Prometheus-like YAML (`groups[].rules[]`) compiled once into `AlertingRule`s.

Every problem is reported with its file, line, rule name and reason, and a file with any
problem loads nothing (a reload then keeps the rules it had).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from monitor.alerting.expr import Expr, ExprError, compile_expr
from monitor.alerting.templates import Template, TemplateError, compile_template
from monitor.schema import Duration, Strict, describe_error, error_path
from monitor.yamlfile import LoadedYaml, PathKey, YamlError, format_path, load_yaml

_ALERT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Id3Frame(Strict):
    frameType: Annotated[str, Field(pattern=r"^(TXXX|T[A-Z0-9]{3}|PRIV)$")]
    info: str | None = None
    data: str = ""


class GuardOverrides(Strict):
    """The guard's keys an action in a rule may set for itself (`actions.guard` gives the
    defaults), and its own dry_run."""

    cooldown: Duration | None = None
    budget: Annotated[int, Field(ge=1, le=1000)] | None = None
    budget_window: Duration | None = None
    backoff: Duration | None = None
    backoff_max: Duration | None = None
    reset_after: Duration | None = None
    timeout: Duration | None = None
    dry_run: bool | None = None

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> Any:
        # A key a rule did not set is left out of the rendered action: the runner then takes
        # the default from the config.
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class RestartParams(GuardOverrides):
    after: Duration = 0.0
    verify_timeout: Duration = 60.0
    # OME pull streams: the `properties` of Create Stream when the stream is created again.
    properties: dict[str, Any] | None = None


class HlsDumpParams(GuardOverrides):
    after: Duration = 0.0
    duration: Duration = 60.0
    # Below `actions.dumps.root`: relative to it, or absolute inside it; default
    # <root>/<vhost>/<app>/<stream>/<dump id>.
    output_path: str | None = None
    output_stream_name: str | None = None
    playlist: list[str] | None = None
    info_file: str | None = None


class Id3EventParams(GuardOverrides):
    after: Duration = 0.0
    frames: Annotated[list[Id3Frame], Field(min_length=1)]
    event_type: str = "event"
    urgent: bool = False
    on_resolve: bool = False
    # A marker is cheap and wanted on every firing: no cooldown unless the rule sets one.
    cooldown: Duration | None = 0.0


ACTION_PARAMS: dict[str, type[Strict]] = {
    "restart": RestartParams,
    "hls_dump": HlsDumpParams,
    "id3_event": Id3EventParams,
}


class RuleSpec(Strict):
    alert: str
    kind: str
    expr: str
    for_: Annotated[Duration, Field(alias="for")] = 0.0
    keep_firing_for: Duration = 0.0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    actions: list[dict[str, Any]] = Field(default_factory=list)
    dry_run: bool | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("alert")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ALERT_NAME.match(value):
            raise ValueError(f"alert name {value!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str, info: ValidationInfo) -> str:
        # The known kinds come from the caller (the upstream registry), so that alerting
        # does not import the sources.
        kinds = (info.context or {}).get("kinds")
        if kinds is not None and value not in kinds:
            raise ValueError(f"unknown kind {value!r}; known kinds: {', '.join(kinds)}")
        return value

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _string_values(cls, value: Any) -> Any:
        # YAML turns `severity: 1` into an int; labels are strings, so say so instead of guessing.
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(item, str):
                    raise ValueError(f"{key}: value must be a string (quote it)")
        return value

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"invalid label name {name!r}")
            if name == "alertname":
                raise ValueError("'alertname' is set from the rule's alert name")
        return labels


class GroupSpec(Strict):
    name: Annotated[str, Field(min_length=1)]
    rules: list[dict[str, Any]] = Field(default_factory=list)


class RuleFileSpec(Strict):
    groups: list[GroupSpec] = Field(default_factory=list)


@dataclass(frozen=True)
class Action:
    name: str
    params: Any  # one of the *Params models
    templates: Mapping[str, Template] = field(default_factory=dict)

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """`{"action": name, "params": ...}` with every templated string rendered for one
        alert (durations in seconds): what a transition carries to the action runner."""

        def walk(value: Any, prefix: str) -> Any:
            if isinstance(value, str):
                template = self.templates.get(prefix)
                return template.render(context) if template is not None else value
            if isinstance(value, dict):
                return {k: walk(v, f"{prefix}.{k}" if prefix else k) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(item, f"{prefix}[{i}]") for i, item in enumerate(value)]
            return value

        return {"action": self.name, "params": walk(self.params.model_dump(mode="json"), "")}


@dataclass(frozen=True)
class AlertingRule:
    name: str
    group: str
    file: str
    line: int
    kind: str
    expr: Expr
    hold: float
    keep_firing_for: float
    labels: Mapping[str, Template]
    annotations: Mapping[str, Template]
    actions: tuple[Action, ...] = ()
    dry_run: bool | None = None
    static_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity across reloads: group and alert name (Prometheus matches by these too)."""
        return f"{self.group}/{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "query": self.expr.source,
            "duration": self.hold,
            "keepFiringFor": self.keep_firing_for,
            "labels": {k: t.source for k, t in self.labels.items()},
            "annotations": {k: t.source for k, t in self.annotations.items()},
            "actions": [a.name for a in self.actions],
            "file": self.file,
            "line": self.line,
        }


@dataclass(frozen=True)
class RuleGroup:
    name: str
    file: str
    rules: tuple[AlertingRule, ...]


def describe_rules(groups: Sequence[RuleGroup]) -> str:
    """`12 rules in 3 files`, as `check` and start-up say it."""
    rules = sum(len(g.rules) for g in groups)
    files = len({g.file for g in groups})
    return f"{rules} rule{'s' if rules != 1 else ''} in {files} file{'s' if files != 1 else ''}"


class RuleError(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def expand_globs(patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """Files named by `rule_files` globs, and the patterns that matched nothing."""
    files: list[str] = []
    empty: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if not found:
            empty.append(pattern)
        files += [f for f in found if f not in files]
    return files, empty


def load_rule_files(patterns: Sequence[str], *, kinds: Collection[str]) -> list[RuleGroup]:
    """Every rule file the globs name, compiled; `kinds` are the entity kinds a rule may name."""
    files, missing = expand_globs(patterns)
    problems = [f"{p}: no rule file matches this rule_files entry" for p in missing]
    groups: list[RuleGroup] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            loaded = load_yaml(file, interpolate_env=False)
        except YamlError as exc:
            problems += exc.problems
            continue
        file_groups, file_problems = _compile_file(loaded, tuple(kinds))
        problems += file_problems
        for group in file_groups:
            if group.name in seen:
                problems.append(
                    f"{file}: group {group.name!r} is also defined in {seen[group.name]}"
                )
            seen[group.name] = file
        groups += file_groups
    if problems:
        raise RuleError(problems)
    return groups


def _problem(loaded: LoadedYaml, path: PathKey, rule: str | None, message: str) -> str:
    who = f" rule {rule!r}:" if rule else ""
    return f"{loaded.where(path)}:{who} {format_path(path)}: {message}"


def _compile_file(loaded: LoadedYaml, kinds: tuple[str, ...]) -> tuple[list[RuleGroup], list[str]]:
    data = loaded.data if loaded.data is not None else {}
    problems: list[str] = []
    try:
        spec = RuleFileSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            problems.append(_problem(loaded, error_path(error), None, describe_error(error)))
        return [], problems
    groups = []
    for g_index, group in enumerate(spec.groups):
        rules = []
        names: set[str] = set()
        for r_index, raw in enumerate(group.rules):
            path: PathKey = ("groups", g_index, "rules", r_index)
            rule, rule_problems = _compile_rule(loaded, path, group.name, raw, kinds)
            problems += rule_problems
            if rule is not None:
                if rule.name in names:
                    problems.append(
                        _problem(
                            loaded,
                            (*path, "alert"),
                            rule.name,
                            f"duplicate alert name in group {group.name!r}",
                        )
                    )
                names.add(rule.name)
                rules.append(rule)
        groups.append(RuleGroup(group.name, loaded.file, tuple(rules)))
    return groups, problems


def _compile_rule(
    loaded: LoadedYaml, path: PathKey, group: str, raw: Any, kinds: tuple[str, ...]
) -> tuple[AlertingRule | None, list[str]]:
    name = raw.get("alert") if isinstance(raw, Mapping) else None
    try:
        spec = RuleSpec.model_validate(raw, context={"kinds": kinds})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error_path(error, {"for_": "for"})
            problems.append(_problem(loaded, (*path, *loc), name, describe_error(error)))
        return None, problems
    problems: list[str] = []
    expr = None
    try:
        expr = compile_expr(spec.expr)
    except ExprError as exc:
        where = f" (column {exc.offset + 1})" if exc.offset is not None else ""
        problems.append(
            _problem(
                loaded, (*path, "expr"), spec.alert, f"invalid expression{where}: {exc.message}"
            )
        )
    labels = _templates(loaded, (*path, "labels"), spec.alert, spec.labels, problems)
    annotations = _templates(loaded, (*path, "annotations"), spec.alert, spec.annotations, problems)
    actions = []
    for index, item in enumerate(spec.actions):
        action = _action(loaded, (*path, "actions", index), spec.alert, item, problems)
        if action is not None:
            actions.append(action)
    if problems or expr is None:
        return None, problems
    line = loaded.line_of(path) or 0
    return (
        AlertingRule(
            name=spec.alert,
            group=group,
            file=loaded.file,
            line=line,
            kind=spec.kind,
            expr=expr,
            hold=spec.for_,
            keep_firing_for=spec.keep_firing_for,
            labels=labels,
            annotations=annotations,
            actions=tuple(actions),
            dry_run=spec.dry_run,
            static_labels={k: t.source for k, t in labels.items() if not _is_template(t.source)},
        ),
        [],
    )


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _templates(
    loaded: LoadedYaml, path: PathKey, rule: str, sources: Mapping[str, str], problems: list[str]
) -> dict[str, Template]:
    compiled = {}
    for key, text in sources.items():
        try:
            compiled[key] = compile_template(text)
        except TemplateError as exc:
            problems.append(
                _problem(loaded, (*path, key), rule, f"invalid template: {exc.message}")
            )
    return compiled


def _action(
    loaded: LoadedYaml, path: PathKey, rule: str, item: Mapping[str, Any], problems: list[str]
) -> Action | None:
    if len(item) != 1:
        problems.append(
            _problem(
                loaded,
                path,
                rule,
                f"each action is one of {', '.join(ACTION_PARAMS)} with its parameters",
            )
        )
        return None
    ((name, params),) = item.items()
    model = ACTION_PARAMS.get(name)
    if model is None:
        problems.append(
            _problem(
                loaded,
                (*path, name),
                rule,
                f"unknown action {name!r} (known: {', '.join(ACTION_PARAMS)})",
            )
        )
        return None
    try:
        parsed = model.model_validate(params or {})
    except ValidationError as exc:
        for error in exc.errors():
            loc = error_path(error)
            problems.append(_problem(loaded, (*path, name, *loc), rule, describe_error(error)))
        return None
    templates: dict[str, Template] = {}
    for key, text in _template_strings(parsed):
        try:
            templates[key] = compile_template(text)
        except TemplateError as exc:
            problems.append(
                _problem(loaded, (*path, name), rule, f"{key}: invalid template: {exc.message}")
            )
    return Action(name, parsed, templates)


def _template_strings(params: BaseModel) -> Iterable[tuple[str, str]]:
    """Every string parameter of an action may be a template; keyed by its dotted path."""

    def walk(value: Any, prefix: str) -> Iterable[tuple[str, str]]:
        if isinstance(value, str):
            yield prefix, value
        elif isinstance(value, BaseModel):
            for key in type(value).model_fields:
                yield from walk(getattr(value, key), f"{prefix}.{key}" if prefix else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, f"{prefix}[{index}]")

    yield from walk(params, "")
