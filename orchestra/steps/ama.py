"""The ``ama`` step: P prompt chains (Ask Me Anything) -> P vote columns for the ``label_model`` step.

YAML::

    steps:
      - ama: {chains: 5, demos: {path: train.tsv, label: answer}}     # chains built from the task's labels
      - ama: {library: hearsay, chains: 5}                            # or a task of prompting.tasks
      - label_model: {method: auto, dependencies: learn}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.steps.base import Context, Step, register_step
from orchestra.task import Task

logger = logging.getLogger(__name__)

INPUT_FIELD = "ama_input"


@register_step("ama")
class AMAStep(Step):
    """Run P prompt chains over the rows; add one vote column per chain (class index, -1 = abstain).

    Parameters
    ----------
    chains
        P, the number of chains (3 to 10).
    library
        A task of ``prompting.tasks`` (``hearsay``, ``rte``, ``sst2``, ...): its chains and, unless ``demos`` is
        given, its train split as the demo pool. Its labels must be the pipeline task's labels.
    legalbench
        A folder in LegalBench layout: chains built from its label set, demos from its train.tsv.
    demos
        Demo pool for chains built from the pipeline task: ``{path: file, label: column}`` (label names or class
        indices). Without it (and without ``library`` / ``legalbench``) the chains are zero-shot.
    k
        Demos per chain when chains are built from the task's labels.
    seed
        Offsets the chains' demo seeds.
    prefix
        Vote columns are named ``<prefix><step name>_<chain name>``.
    """

    needs_engine = True
    path_params: ClassVar[tuple[str, ...]] = ("demos.path", "legalbench")

    def __init__(self, chains: int = 5, library: str | None = None, legalbench: str | None = None,
                 demos: dict[str, Any] | None = None, k: int = 3, seed: int = 0, prefix: str = "vote_") -> None:
        from prompting.ama import check_chain_count
        from prompting.errors import PromptingError

        try:
            check_chain_count(chains)
        except PromptingError as err:
            raise OrchestraError(f"ama: {err}") from err
        if library is not None and legalbench is not None:
            raise OrchestraError("ama: give library or legalbench, not both")
        if demos is not None and (not isinstance(demos, dict) or "path" not in demos
                                  or set(demos) - {"path", "label"}):
            raise OrchestraError(f"ama: demos takes {{path: file, label: column}}, got {demos!r}")
        if library is not None:
            from prompting.tasks import TASKS

            if library not in TASKS:
                raise OrchestraError(f"ama: unknown library task {library!r}; the library has {TASKS}")
        self.chains = chains
        self.library = library
        self.legalbench = legalbench
        self.demos = dict(demos) if demos is not None else None
        self.k = k
        self.seed = seed
        self.prefix = prefix
        self._built: tuple[list[Any], Any, list[int] | None] | None = None

    # -- building chains -----------------------------------------------------------------------------------------

    def _spec(self) -> Any:
        from prompting.errors import PromptingError
        from prompting.tasks import get_task, legalbench_task

        try:
            if self.library is not None:
                return get_task(self.library)
            if self.legalbench is not None:
                return legalbench_task(self.legalbench)
        except PromptingError as err:
            raise OrchestraError(f"ama: {err}") from err
        return None

    def build(self, task: Task | None) -> tuple[list[Any], Any, list[int] | None]:
        """``(chains, demo pool, class map)``; the class map turns the chains' class indices into the task's."""
        if self._built is not None:
            return self._built
        if task is None:
            raise OrchestraError("ama: this step needs a task (labels and verbalizers); add a task: section")
        from prompting.chains import DemoPool
        from prompting.tasks import label_set_formats

        spec = self._spec()
        mapping: list[int] | None = None
        if spec is not None:
            missing = [label for label in task.labels if label not in spec.labels]
            if missing or len(spec.labels) != len(task.labels):
                raise OrchestraError(
                    f"ama: the pipeline task's labels {list(task.labels)} differ from {spec.name!r}'s labels "
                    f"{spec.labels}; labels {missing or 'beyond theirs'} have no verbalizers in its chains — use "
                    "the same labels or drop library/legalbench to build chains from your task's verbalizers"
                )
            mapping = [list(task.labels).index(label) for label in spec.labels]
            chains = spec.chains(self.chains, seed=self.seed)
            pool = spec.pool(spec.load()[0]) if self.demos is None else self._pool(task, spec.labels)
        else:
            pool = self._pool(task, list(task.labels)) if self.demos is not None else DemoPool()
            words = [list(task.verbalizers[label]) for label in task.labels]
            formats, _ = label_set_formats(task.labels, words, k=self.k if len(pool) else 0, field=INPUT_FIELD)
            if not len(pool):  # zero-shot: formats differ in layout only; vary calibration too
                formats = formats[:3] + [replace(f, calibrate="content_free") for f in formats[:3]]
            chains = []
            for i in range(self.chains):
                fmt = formats[i % len(formats)]
                chains.append(fmt.chain(seed=self.seed + i, name=f"{i}_{fmt.name}"))
        self._built = (chains, pool, mapping)
        return self._built

    def _pool(self, task: Task, labels: Sequence[str]) -> Any:
        from orchestra.io import read_records
        from prompting.chains import DemoPool

        column = self.demos.get("label", "label")
        frame = read_records(self.demos["path"], required=[column])
        classes = []
        for i, value in enumerate(frame[column]):
            if str(value) in labels:
                classes.append(list(labels).index(str(value)))
            elif str(value).lstrip("-").isdigit() and 0 <= int(value) < len(labels):
                classes.append(int(value))
            else:
                raise OrchestraError(f"ama: demo row {i + 1} has {column}={value!r}, not a label of {list(labels)}")
        records = frame.to_dict(orient="records")
        if self.library is None and self.legalbench is None:
            records = [{**r, INPUT_FIELD: task.format(r)} for r in records]
        return DemoPool(tuple(records), tuple(classes))

    # -- step protocol -------------------------------------------------------------------------------------------

    def inputs(self, available: Sequence[str], task: Task | None) -> list[str]:
        chains, _, _ = self.build(task)
        if self.library is None and self.legalbench is None:
            return list(task.fields)
        return sorted({f for c in chains for f in c.fields})

    def adds(self, available: Sequence[str], task: Task | None) -> list[str]:
        chains, _, _ = self.build(task)
        return [f"{self.prefix}{self.name}_{c.name}" for c in chains]

    def run(self, batch: pd.DataFrame, context: Context) -> pd.DataFrame:
        from prompting.ama import AMA
        from prompting.errors import PromptingError

        if context.engine is None:
            raise OrchestraError(f"ama step {self.name!r} needs an engine; pass engine=LLM(...) to Pipeline.run")
        task = context.task
        chains, pool, mapping = self.build(task)
        rows = batch.to_dict(orient="records")
        if self.library is None and self.legalbench is None:
            rows = [{**r, INPUT_FIELD: task.format(r)} for r in rows]
        try:
            result = AMA(chains, seed=context.seed).run(context.engine, rows, pool)
        except PromptingError as err:
            raise OrchestraError(f"ama step {self.name!r}: {err}") from err
        votes = result.votes
        if mapping is not None:
            table = np.asarray(mapping + [-1])  # index -1 (abstain) maps to -1
            votes = table[votes]
        columns = self.adds(list(batch.columns), task)
        return pd.DataFrame({c: votes[:, j].astype(np.int64) for j, c in enumerate(columns)}, index=batch.index)
