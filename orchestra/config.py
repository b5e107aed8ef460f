"""The YAML schema (pydantic v2), YAML line numbers for errors, and ``--set key.path=value`` overrides.

A pipeline file::

    name: reviews
    data: {path: inputs/reviews.csv, id: id, gold: label}
    task: {labels: [negative, positive], input: "{text}"}
    steps:
      - lfs: {module: review_lfs.py}
      - label_model: {method: auto}
    output: {path: out/reviews.parquet, report: out/reviews.html}
    run: {chunk_size: 1000, seed: 0}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestra.errors import OrchestraError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineSpec(_Strict):
    """Which model serves the prompt steps."""

    backend: str = "local"
    model: str = "smollm2-135m"
    cache: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class DataSpec(_Strict):
    """Where the records come from."""

    path: str
    format: Literal["jsonl", "csv", "tsv", "parquet"] | None = None
    id: str | None = None
    gold: str | None = None


class TaskSpec(_Strict):
    """The label space and the input template."""

    name: str | None = None
    labels: list[str] = Field(min_length=2)
    input: str = "{text}"
    verbalizers: dict[str, list[str]] = Field(default_factory=dict)


class OutputSpec(_Strict):
    """Where results go."""

    path: str
    report: str | None = None


class RunSpec(_Strict):
    """How the job runs."""

    chunk_size: int = Field(default=1000, ge=1)
    seed: int = 0


class PipelineConfig(_Strict):
    """A whole pipeline file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    engine: EngineSpec | None = None
    plugins: list[str] = Field(default_factory=list)
    data: DataSpec
    task: TaskSpec | None = None
    steps: list[dict[str, dict[str, Any] | None]] = Field(min_length=1)
    output: OutputSpec
    run: RunSpec = Field(default_factory=RunSpec)


FIXES = {
    "missing": "add this key",
    "extra_forbidden": "remove it or fix its spelling",
    "string_type": "give a string (quote it)",
    "int_type": "give a whole number",
    "int_parsing": "give a whole number",
    "list_type": "give a list, e.g. [a, b]",
    "dict_type": "give a mapping, e.g. {key: value}",
    "too_short": "give more items",
    "greater_than_equal": "give a larger number",
    "literal_error": "use one of the allowed values",
    "string_pattern_mismatch": "use letters, digits, '_', '.', '-' only",
    "model_type": "give a mapping of keys",
}


@dataclass
class Issue:
    """One problem in a pipeline file."""

    where: str
    message: str
    fix: str = ""
    line: int | None = None

    def format(self, source: str) -> str:
        """``file:line: where: message`` plus the fix on its own line."""
        at = f"{source}:{self.line}" if self.line else source
        text = f"{at}: {self.where}: {self.message}" if self.where else f"{at}: {self.message}"
        return text + (f"\n    fix: {self.fix}" if self.fix else "")


@dataclass
class RawConfig:
    """A parsed YAML file before validation: the data, its node tree (for line numbers), the overrides."""

    path: Path
    data: dict[str, Any]
    node: yaml.Node | None
    overridden: dict[str, str] = field(default_factory=dict)

    def line(self, loc: tuple[Any, ...]) -> int | None:
        """1-based line of the YAML entry at ``loc`` (or of its nearest existing parent)."""
        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for key in loc:
            if isinstance(node, yaml.MappingNode):
                pair = next(((k, v) for k, v in node.value if k.value == str(key)), None)
                if pair is None:
                    return line
                node, line = pair[1], pair[0].start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def issue(self, loc: tuple[Any, ...], message: str, fix: str = "") -> Issue:
        """An :class:`Issue` at ``loc``, naming the ``--set`` override that produced the value if any."""
        where = ".".join(str(p) for p in loc)
        for key, value in self.overridden.items():
            if where == key or where.startswith(key + "."):
                return Issue(where, f"{message} (from --set {key}={value})", fix, None)
        return Issue(where, message, fix, self.line(loc))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``key.path=value``; the value is read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise OrchestraError(f"--set {text!r}: write --set key.path=value, e.g. --set run.chunk_size=500")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise OrchestraError(f"--set {text!r}: the key {key!r} has an empty part; write e.g. run.chunk_size=500")
    try:
        return parts, yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise OrchestraError(f"--set {text!r}: the value is not valid YAML ({err})") from err


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``data[parts[0]][parts[1]]... = value``, creating mappings and indexing lists by number."""
    target: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise OrchestraError(
                    f"--set {'.'.join(parts)}: {'.'.join(parts[:i]) or 'top level'} is a list of {len(target)}; "
                    f"use an index 0..{len(target) - 1}"
                )
            if last:
                target[int(part)] = value
            else:
                target = target[int(part)]
        elif isinstance(target, dict):
            if last:
                target[part] = value
            else:
                if target.get(part) is None:
                    target[part] = {}
                target = target[part]
        else:
            raise OrchestraError(f"--set {'.'.join(parts)}: {'.'.join(parts[:i])} is a value, not a mapping")


def read_yaml(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RawConfig:
    """Read a pipeline file and apply overrides.

    Parameters
    ----------
    path
        The YAML file.
    overrides
        ``key.path=value`` strings.

    Returns
    -------
    RawConfig
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OrchestraError(f"{path} does not exist; give the path to a pipeline .yaml file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise OrchestraError(f"cannot read {path}: {err}") from err
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise OrchestraError(
            f"{path}{line}: not valid YAML: {problem}; check indentation and that ':' in values is quoted"
        ) from None
    if not isinstance(data, dict):
        raise OrchestraError(f"{path}: the top level must be a mapping with name, data, steps, output")
    raw = RawConfig(path, data, node)
    for text_override in overrides:
        parts, value = parse_override(text_override)
        apply_override(data, parts, value)
        raw.overridden[".".join(parts)] = text_override.split("=", 1)[1]
    return raw


def validate_schema(raw: RawConfig) -> tuple[PipelineConfig | None, list[Issue]]:
    """Validate against :class:`PipelineConfig`; every error becomes an :class:`Issue` with its YAML line.

    Parameters
    ----------
    raw
        The parsed file.

    Returns
    -------
    (config or None, issues)
    """
    try:
        return PipelineConfig.model_validate(raw.data), []
    except ValidationError as err:
        issues = []
        for e in err.errors():
            loc = tuple(e["loc"])
            fix = FIXES.get(e["type"], "")
            if e["type"] == "extra_forbidden" and len(loc) >= 1:
                parent = _model_at(loc[:-1])
                if parent is not None:
                    fix = f"remove it or fix its spelling; allowed keys here: {sorted(parent.model_fields)}"
            if e["type"] == "missing" and loc:
                fix = f"add {loc[-1]}: ..."
            issues.append(raw.issue(loc, e["msg"], fix))
        return None, issues


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    models: dict[str, type[BaseModel]] = {
        "engine": EngineSpec, "data": DataSpec, "task": TaskSpec, "output": OutputSpec, "run": RunSpec,
    }
    if not loc:
        return PipelineConfig
    return models.get(str(loc[0])) if len(loc) == 1 else None
