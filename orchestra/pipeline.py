"""``Pipeline``: steps applied in order to a table of records, each adding columns."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.steps.base import Context, Step
from orchestra.task import Task

logger = logging.getLogger(__name__)


def as_frame(data: Any) -> pd.DataFrame:
    """Accept a DataFrame, a list of dicts or a path to a data file.

    Parameters
    ----------
    data
        The records.

    Returns
    -------
    pandas.DataFrame
    """
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, (str, Path)):
        from orchestra.io import read_records

        frame = read_records(data)
    elif isinstance(data, Sequence) and all(isinstance(r, dict) for r in data):
        frame = pd.DataFrame(list(data))
    else:
        raise OrchestraError(
            f"data must be a DataFrame, a list of dicts or a path to a data file, got {type(data).__name__}"
        )
    if len(frame) == 0:
        raise OrchestraError("the data has no rows; give at least one record")
    return frame


def apply_steps(steps: Sequence[Step], frame: pd.DataFrame, context: Context) -> pd.DataFrame:
    """Apply ``steps`` to ``frame`` in order and return it with their columns appended.

    Each step's result is checked against what its ``adds()`` announced and must keep the batch's index.

    Parameters
    ----------
    steps
        Steps, in order.
    frame
        The rows.
    context
        Task, engine, seed, artifacts.

    Returns
    -------
    pandas.DataFrame
    """
    for step in steps:
        expected = step.adds(list(frame.columns), context.task)
        added = step.run(frame, context)
        if not isinstance(added, pd.DataFrame) or list(added.columns) != expected:
            got = list(added.columns) if isinstance(added, pd.DataFrame) else type(added).__name__
            raise OrchestraError(f"step {step.name!r} returned {got}, but adds() announced {expected}")
        if len(added) != len(frame) or not added.index.equals(frame.index):
            raise OrchestraError(f"step {step.name!r} returned {len(added)} rows for {len(frame)}; keep the index")
        frame = pd.concat([frame, added], axis=1)
    return frame


def added_columns(steps: Sequence[Step], batch: pd.DataFrame, context: Context) -> pd.DataFrame:
    """Only the columns ``steps`` add to ``batch`` (what a chunk's shard holds), with ``batch``'s index."""
    return apply_steps(steps, batch, context).iloc[:, batch.shape[1]:]


class Pipeline:
    """Steps run in order; each adds columns and never changes what it did not add.

    Parameters
    ----------
    steps
        :class:`~orchestra.steps.Step` instances. Names must be unique within the pipeline.
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        steps = list(steps)
        if not steps:
            raise OrchestraError("a pipeline needs at least one step")
        for step in steps:
            if not isinstance(step, Step):
                raise OrchestraError(f"pipeline steps must be Step instances, got {type(step).__name__}")
        names = [s.name for s in steps]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise OrchestraError(f"step names {repeated} are used twice; give each step a distinct name")
        self.steps = steps

    @property
    def needs_engine(self) -> bool:
        """Whether any step calls a model."""
        return any(s.needs_engine for s in self.steps)

    def split(self) -> tuple[list[Step], list[Step]]:
        """Steps that run chunk by chunk (everything before the first ``needs_all_rows`` step) and the rest."""
        for i, step in enumerate(self.steps):
            if step.needs_all_rows:
                return self.steps[:i], self.steps[i:]
        return list(self.steps), []

    def plan(self, columns: Sequence[str], task: Task | None) -> list[tuple[Step, list[str], list[str]]]:
        """Check every step's inputs against the columns present before it, without running anything.

        Parameters
        ----------
        columns
            Columns of the input data.
        task
            The task.

        Returns
        -------
        list of (step, inputs, adds)
        """
        available = list(columns)
        plan = []
        for step in self.steps:
            needs = step.inputs(available, task)
            missing = [c for c in needs if c not in available]
            if missing:
                raise OrchestraError(
                    f"step {step.name!r} needs columns {missing} that are not there; the data has {list(columns)}"
                    + (f" and earlier steps add {available[len(columns):]}" if len(available) > len(columns) else "")
                    + "; rename the data's columns or fix the step's parameters"
                )
            adds = step.adds(available, task)
            clash = [c for c in adds if c in available]
            if clash:
                raise OrchestraError(
                    f"step {step.name!r} would add columns {clash} that already exist; steps never overwrite "
                    "columns: rename the step or the data's columns"
                )
            plan.append((step, needs, adds))
            available.extend(adds)
        return plan

    def run_steps(self, steps: Sequence[Step], frame: pd.DataFrame, context: Context) -> pd.DataFrame:
        """Apply ``steps`` to ``frame`` and return it with their columns appended (see :func:`apply_steps`)."""
        return apply_steps(steps, frame, context)

    def run(
        self,
        data: Any,
        engine: Any = None,
        task: Task | None = None,
        seed: int = 0,
        chunk_size: int | None = None,
        context: Context | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
        cache: str | Path | None = None,
        executor: Any = "local",
    ) -> pd.DataFrame:
        """Run every step over the data.

        Row-wise steps run chunk by chunk; from the first step that needs all rows (a label model) on, steps
        see the whole table.

        Parameters
        ----------
        data
            DataFrame, list of dicts, or path to a data file.
        engine
            Engine-like object for steps that call a model, or an
            :class:`~orchestra.executors.EngineRecipe` (backend, model, options) to build one: the Ray executor
            needs a recipe, since each actor loads its own engine.
        task
            The labeling task.
        seed
            Seed for every random choice.
        chunk_size
            Rows per chunk for row-wise steps (default: all rows at once).
        context
            A prepared context (overrides ``engine``, ``task`` and ``seed``).
        on_chunk
            Called with (rows done, rows total) after each chunk.
        cache
            Path of an SQLite response cache to put ``engine`` behind (``engine.cache.CachedEngine``), so a
            re-run makes no model calls.
        executor
            ``"local"`` (this process), ``"ray"`` (Ray actors, one engine each; start Ray with ``ray.init``
            first to choose the cluster) or an :class:`~orchestra.executors.Executor`. Results are identical.

        Returns
        -------
        pandas.DataFrame
            The input columns followed by every step's columns.
        """
        from orchestra.executors import EngineRecipe, make_executor

        frame = as_frame(data)
        recipe = None
        if isinstance(engine, EngineRecipe):
            recipe = dataclasses.replace(engine, cache=Path(cache) if cache is not None else engine.cache)
            engine = None
        runner = make_executor(executor, engine=recipe)
        if runner.name != "ray":
            if recipe is not None and self.needs_engine:
                engine = recipe.build()
            elif cache is not None and engine is not None:
                from engine.cache import CachedEngine

                engine = CachedEngine(engine, cache)
        elif engine is not None and self.needs_engine:
            raise OrchestraError("the Ray executor loads one engine per actor and cannot ship a loaded one; pass "
                                 "engine=EngineRecipe(backend=..., model=..., options={...}) instead")
        if context is None:
            context = Context(task=task, engine=engine, seed=seed)
        if self.needs_engine and context.engine is None and recipe is None:
            names = [s.name for s in self.steps if s.needs_engine]
            raise OrchestraError(f"steps {names} call a model; pass engine=LLM(...) to Pipeline.run")
        self.plan(list(frame.columns), context.task)
        rowwise, whole = self.split()
        size = chunk_size or len(frame)
        starts = list(range(0, len(frame), size))
        parts: dict[int, pd.DataFrame] = {}

        def done(index: int, added: pd.DataFrame) -> None:
            parts[index] = added
            if on_chunk is not None:
                on_chunk(sum(len(p) for p in parts.values()), len(frame))

        try:
            runner.run_chunks(rowwise, range(len(starts)), lambda i: frame.iloc[starts[i]:starts[i] + size],
                              context, done)
            added = pd.concat([parts[i] for i in range(len(starts))])
            full = pd.concat([frame, added], axis=1)
            context = dataclasses.replace(context, engine=runner.engine_for_driver(context))
            return self.run_steps(whole, full, context)
        finally:
            runner.close()
