"""YAML loading that remembers where every value came from.

Config and rule errors must name the file and line. PyYAML's composer keeps a start mark on
every node, so we compose the node tree ourselves and build plain Python values beside a map
from key path to line number. `${VAR}` / `${VAR:-default}` interpolation happens here too, on
string scalars, so a missing variable is reported at its own line.

Config and rule files are trusted, but a typo or a paste must not hang `check` or the daemon, so
three limits bound what one file can cost, each reported as a `file:line:` problem:
MAX_FILE_BYTES (4 MiB, checked before parsing), MAX_DEPTH (100 levels of nesting, aliases
included) and MAX_ALIAS_VALUES (100,000 values built through aliases: a "billion laughs" file of
nested aliases is refused instead of expanded).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 100
MAX_ALIAS_VALUES = 100_000

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class LoadedYaml:
    data: Any
    file: str
    lines: dict[PathKey, int] = field(default_factory=dict)
    # Problems that do not stop the rest of the file from being read (a missing environment
    # variable): reported together with whatever validation finds after them.
    problems: list[str] = field(default_factory=list)

    def line_of(self, path: PathKey) -> int | None:
        """Line of the deepest known prefix of `path` (pydantic locations may go deeper)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def where(self, path: PathKey) -> str:
        line = self.line_of(path)
        return f"{self.file}:{line}" if line else self.file


class YamlError(Exception):
    """A file could not be read or parsed; `problems` are ready-to-print lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def format_path(path: PathKey) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. Raises KeyError(var)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV_REF.sub(substitute, value)


class _Limit(Exception):
    """A file over one of the limits; `line` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH before it recurses
    (PyYAML's composer recurses once per level: 5,000 levels are a RecursionError). Used where
    PyYAML was built without libyaml."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _Limit(line, f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


_CLoader: type | None = getattr(yaml, "CSafeLoader", None)
_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _compose(text: str) -> yaml.Node | None:
    """The node tree, with nesting bounded. libyaml composes ten times faster than PyYAML's
    Python code, but recursively in C (a deep file would crash the process): its event stream,
    which is flat, is checked for depth first."""
    if _CLoader is None:
        return yaml.compose(text, Loader=_Loader)  # type: ignore[no-any-return]
    depth = 0
    for event in yaml.parse(text, Loader=_CLoader):
        if isinstance(event, _START):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Limit(event.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, _END):
            depth -= 1
    return yaml.compose(text, Loader=_CLoader)  # type: ignore[no-any-return]


def load_yaml(
    path: str | Path, *, env: Mapping[str, str] | None = None, interpolate_env: bool = True
) -> LoadedYaml:
    file = str(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise YamlError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise YamlError([f"{file}: larger than {MAX_FILE_BYTES} bytes (4 MiB); refused"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError([f"{file}:{line}: not UTF-8 text: {exc.reason}"]) from exc
    return parse_yaml(text, file, env=env, interpolate_env=interpolate_env)


def parse_yaml(
    text: str,
    file: str,
    *,
    env: Mapping[str, str] | None = None,
    interpolate_env: bool = True,
) -> LoadedYaml:
    if len(text) > MAX_FILE_BYTES:
        raise YamlError([f"{file}: larger than {MAX_FILE_BYTES} bytes (4 MiB); refused"])
    try:
        node = _compose(text)
    except _Limit as exc:
        raise YamlError([f"{file}:{exc.line}: {exc.message}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(exc, "problem", None) or str(exc)
        if "nesting depth" in problem:
            # Newer libyaml (PyYAML 6.0.4 wheels) stops deep nesting itself, as it scans, before
            # the flat check above sees the events: the same limit, said the same way.
            raise YamlError([f"{where}: nested deeper than {MAX_DEPTH} levels"]) from None
        raise YamlError([f"{where}: invalid YAML: {problem}"]) from exc
    loaded = LoadedYaml(data=None, file=file)
    environment = os.environ if env is None else env
    if node is not None:
        builder = _Builder(loaded, environment, interpolate_env)
        try:
            loaded.data = builder.build(node, ())
        except _Limit as exc:
            raise YamlError([f"{file}:{exc.line}: {exc.message}"]) from None
    return loaded


class _Builder:
    """Builds plain values from the node tree. An alias is the same node object as its anchor,
    so a node met a second time is an alias use: what it expands to is counted."""

    def __init__(self, loaded: LoadedYaml, env: Mapping[str, str], interpolate_env: bool):
        self.loaded = loaded
        self.env = env
        self.interpolate_env = interpolate_env
        # One per file: PyYAML's constructor remembers every node it constructed.
        self.constructor = yaml.SafeLoader(stream="")
        self.seen: set[int] = set()
        self.aliased = 0  # > 0 while building under an alias use
        self.alias_values = 0
        self.alias_line = 0  # where the outermost alias being expanded is used

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        alias = id(node) in self.seen
        self.seen.add(id(node))
        if alias and not self.aliased:
            # The line of the key or item that uses the alias (an aliased node's own mark,
            # and the lines of what it expands to, are its anchor's).
            self.alias_line = self.loaded.line_of(path) or node.start_mark.line + 1
        self.aliased += alias
        try:
            line = self.alias_line if self.aliased else node.start_mark.line + 1
            if len(path) > MAX_DEPTH:
                raise _Limit(line, f"nested deeper than {MAX_DEPTH} levels (through aliases)")
            if self.aliased:
                self.alias_values += 1
                if self.alias_values > MAX_ALIAS_VALUES:
                    raise _Limit(
                        line,
                        f"aliases expand to more than {MAX_ALIAS_VALUES} values "
                        "(nested aliases, a YAML bomb?)",
                    )
            return _build(node, path, self)
        finally:
            self.aliased -= alias


def _build(node: yaml.Node, path: PathKey, builder: _Builder) -> Any:
    loaded, problems = builder.loaded, builder.loaded.problems
    env, interpolate_env = builder.env, builder.interpolate_env
    loaded.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = None
            if isinstance(key_node, yaml.ScalarNode):
                key = builder.constructor.construct_object(key_node)
            if not isinstance(key, str | int | float | bool):
                problems.append(
                    f"{file_line(loaded, key_node)}: mapping keys must be plain scalars"
                )
                continue
            key = str(key)
            if key in result:
                where = file_line(loaded, key_node)
                problems.append(f"{where}: {format_path((*path, key))}: duplicate key")
                continue
            loaded.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = builder.build(value_node, (*path, key))
            loaded.lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [builder.build(item, (*path, index)) for index, item in enumerate(node.value)]
    value = builder.constructor.construct_object(node)
    if interpolate_env and isinstance(value, str) and "$" in value:
        try:
            value = interpolate(value, env)
        except KeyError as missing:
            problems.append(
                f"{file_line(loaded, node)}: {format_path(path)}: environment variable "
                f"{missing.args[0]} is not set (use ${{{missing.args[0]}:-default}} for a default)"
            )
    return value


def file_line(loaded: LoadedYaml, node: yaml.Node) -> str:
    return f"{loaded.file}:{node.start_mark.line + 1}"
