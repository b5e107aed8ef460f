"""Turn a validated pipeline file into a task, a pipeline and data, collecting every problem on the way."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from orchestra.config import Issue, PipelineConfig, RawConfig, read_yaml, validate_schema
from orchestra.errors import OrchestraError
from orchestra.io import detect_format, read_records
from orchestra.pipeline import Pipeline
from orchestra.steps.base import REGISTRY, Step, make_step, registered_steps
from orchestra.task import Task

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything a run needs, built from a pipeline file, with paths resolved against its folder."""

    source: Path
    config: PipelineConfig
    plugins: list[Path]
    task: Task | None
    pipeline: Pipeline
    data_path: Path
    output_path: Path
    report_path: Path | None
    cache_path: Path | None
    frame: pd.DataFrame | None


def resolve(base: Path, value: str) -> Path:
    """``value`` as a path, relative ones taken from ``base`` (the YAML file's folder)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def looks_like_path(value: Any) -> bool:
    """Whether a step parameter names a file rather than a dotted module."""
    suffixes = (".py", ".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")
    return isinstance(value, str) and ("/" in value or "\\" in value or Path(value).suffix in suffixes)


def load_plugins(raw: RawConfig, config: PipelineConfig, base: Path) -> tuple[list[Path], list[Issue]]:
    """Import the ``plugins`` modules (where user steps register); return their source files and any issues."""
    from orchestra.steps.lfs import load_module

    files: list[Path] = []
    issues: list[Issue] = []
    for i, spec in enumerate(config.plugins):
        target = str(resolve(base, spec)) if looks_like_path(spec) else spec
        try:
            module = load_module(target)
        except OrchestraError as err:
            issues.append(raw.issue(("plugins", i), str(err).replace("LF module", "plugin")))
            continue
        if getattr(module, "__file__", None):
            files.append(Path(module.__file__))
    return files, issues


def build_steps(raw: RawConfig, config: PipelineConfig, base: Path) -> tuple[list[Step], list[Issue]]:
    """Build each step of ``config.steps``; problems become issues at the step's YAML line."""
    steps: list[Step] = []
    issues: list[Issue] = []
    for i, entry in enumerate(config.steps):
        if len(entry) != 1:
            issues.append(raw.issue(("steps", i), f"a step is one mapping entry, got keys {sorted(entry)}",
                                    "write each step as '- step_name: {param: value}'"))
            continue
        (step_type, params), = entry.items()
        params = dict(params or {})
        name = params.pop("name", None)
        cls = REGISTRY.get(step_type)
        if cls is None:
            close = difflib.get_close_matches(step_type, registered_steps(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            issues.append(raw.issue(("steps", i, step_type), f"unknown step {step_type!r}",
                                    f"{hint}registered steps: {registered_steps()}"))
            continue
        for key in getattr(cls, "path_params", ()):
            head, _, sub = key.partition(".")
            if sub and isinstance(params.get(head), dict) and looks_like_path(params[head].get(sub)):
                params[head] = {**params[head], sub: str(resolve(base, params[head][sub]))}
            elif not sub and looks_like_path(params.get(key)):
                params[key] = str(resolve(base, params[key]))
        demos = params.get("demos")
        if isinstance(demos, dict) and "label" not in demos and config.data.gold:
            params["demos"] = {**demos, "label": config.data.gold}  # demos carry their answer in the gold column
        try:
            steps.append(make_step(step_type, params, name=name))
        except OrchestraError as err:
            issues.append(raw.issue(("steps", i, step_type), str(err)))
    return steps, issues


def prepare_raw(raw: RawConfig, read_data: bool = True, limit: int | None = None) -> tuple[Prepared | None,
                                                                                          list[Issue]]:
    """Validate and build; return the result (None when there are issues) and every issue found.

    Parameters
    ----------
    raw
        The parsed file with overrides applied.
    read_data
        Read the data file and check the steps' columns against it.
    limit
        Keep only the first ``limit`` records.

    Returns
    -------
    (Prepared or None, list of Issue)
    """
    config, issues = validate_schema(raw)
    if config is None:
        return None, issues
    base = raw.path.resolve().parent
    task = None
    if config.task is not None:
        spec = config.task
        try:
            task = Task(spec.name or config.name, spec.labels, spec.input, spec.verbalizers)
        except OrchestraError as err:
            issues.append(raw.issue(("task",), str(err)))
    plugins, plugin_issues = load_plugins(raw, config, base)
    issues.extend(plugin_issues)
    steps, step_issues = build_steps(raw, config, base)
    issues.extend(step_issues)
    output = resolve(base, config.output.path)
    try:
        detect_format(output)
    except OrchestraError as err:
        issues.append(raw.issue(("output", "path"), str(err)))
    report = resolve(base, config.output.report) if config.output.report else None
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        issues.append(raw.issue(("output", "report"), f"the report {report.name} is HTML", "end it in .html"))
    needs_engine = [s.name for s in steps if s.needs_engine]
    if needs_engine and config.engine is None:
        issues.append(raw.issue(("steps",), f"steps {needs_engine} call a model but there is no engine section",
                                "add engine: {backend: local, model: smollm2-135m}"))
    cache = None
    if config.engine is not None:
        cache = resolve(base, config.engine.cache) if config.engine.cache else None
        if looks_like_path(config.engine.model) or config.engine.model.endswith(".gguf"):
            config.engine.model = str(resolve(base, config.engine.model))
    frame = None
    data_path = resolve(base, config.data.path)
    if read_data:
        required = [config.data.gold] if config.data.gold else []
        try:
            frame = read_records(data_path, fmt=config.data.format, id=config.data.id, required=required)
            if limit is not None:
                frame = frame.head(limit)
        except OrchestraError as err:
            issues.append(raw.issue(("data", "path"), str(err)))
    task_ok = config.task is None or task is not None
    if frame is not None and steps and len(steps) == len(config.steps) and task_ok:
        for i, _ in enumerate(steps):
            try:
                Pipeline(steps[:i + 1]).plan(list(frame.columns), task)
            except OrchestraError as err:
                issues.append(raw.issue(("steps", i), str(err)))
                break
    if issues or not steps:
        return None, issues
    prepared = Prepared(raw.path, config, plugins, task, Pipeline(steps), data_path, output, report, cache, frame)
    return prepared, []


def check(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> list[Issue]:
    """Every problem in a pipeline file (schema, steps, data, columns), without loading any model.

    Parameters
    ----------
    path
        The YAML file.
    overrides
        ``key.path=value`` strings.

    Returns
    -------
    list of Issue
        Empty when the file is good.
    """
    try:
        raw = read_yaml(path, overrides)
    except OrchestraError as err:
        return [Issue("", str(err))]
    return prepare_raw(raw)[1]


def prepare(path: str | Path, overrides: list[str] | tuple[str, ...] = (), limit: int | None = None) -> Prepared:
    """Load a pipeline file, raising one :class:`OrchestraError` that lists every problem.

    Parameters
    ----------
    path
        The YAML file.
    overrides
        ``key.path=value`` strings.
    limit
        Keep only the first ``limit`` records.

    Returns
    -------
    Prepared
    """
    raw = read_yaml(path, overrides)
    prepared, issues = prepare_raw(raw, limit=limit)
    if issues or prepared is None:
        raise OrchestraError(f"{len(issues)} problem(s) in {path}:\n" + "\n".join(i.format(str(path))
                                                                                   for i in issues))
    return prepared
