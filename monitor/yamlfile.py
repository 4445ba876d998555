"""YAML loading that remembers where every value came from.

Config and rule errors must name the file and line. PyYAML's composer keeps a start mark on
every node, so we compose the node tree ourselves and build plain Python values beside a map
from key path to line number. `${VAR}` / `${VAR:-default}` interpolation happens here too, on
string scalars, so a missing variable is reported at its own line.
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


def load_yaml(
    path: str | Path, *, env: Mapping[str, str] | None = None, interpolate_env: bool = True
) -> LoadedYaml:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    return parse_yaml(text, file, env=env, interpolate_env=interpolate_env)


def parse_yaml(
    text: str,
    file: str,
    *,
    env: Mapping[str, str] | None = None,
    interpolate_env: bool = True,
) -> LoadedYaml:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError([f"{where}: invalid YAML: {problem}"]) from exc
    loaded = LoadedYaml(data=None, file=file)
    environment = os.environ if env is None else env
    if node is not None:
        loaded.data = _build(node, (), loaded, loaded.problems, environment, interpolate_env)
    return loaded


_constructor = yaml.SafeLoader(stream="")


def _build(
    node: yaml.Node,
    path: PathKey,
    loaded: LoadedYaml,
    problems: list[str],
    env: Mapping[str, str],
    interpolate_env: bool,
) -> Any:
    loaded.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _constructor.construct_object(key_node)
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
            result[key] = _build(value_node, (*path, key), loaded, problems, env, interpolate_env)
            loaded.lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, index), loaded, problems, env, interpolate_env)
            for index, item in enumerate(node.value)
        ]
    value = _constructor.construct_object(node)
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
