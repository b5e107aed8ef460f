"""The ``label_model`` step: vote columns -> ``label`` and ``proba_<class>``, fitted on all rows first."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.steps.base import Context, Step, register_step
from orchestra.task import Task

logger = logging.getLogger(__name__)

TIE_BREAKS = ("random", "abstain", "first")


@register_step("label_model")
class LabelModelStep(Step):
    """Fit a label model on the vote columns of every row, then add the label and class probabilities.

    Two passes: the pipeline hands this step all rows at once (``needs_all_rows``), so the model learns from
    every vote before it labels any row, and ties are broken by row position over the whole data set.

    Parameters
    ----------
    method
        ``labelmodel.LabelModel`` method: ``"auto"``, ``"majority"``, ``"triplet"``, ``"dawid_skene"``, ...
    columns
        Vote columns (default: every column starting with ``prefix``).
    prefix
        Prefix of vote columns when ``columns`` is not given.
    cardinality
        Number of classes (default: the task's label count).
    tie_break
        How tied rows are labeled: ``"random"`` (seeded by row position), ``"abstain"`` (-1) or ``"first"``.
    output
        Name of the label column (class index, -1 = abstain).
    proba_prefix
        Prefix of the probability columns; one column per class named after the task's labels.
    dependencies
        Correlated vote columns: None (independent), ``"learn"`` (learned from the votes, as AMA does for its
        prompt chains) or a list of column-index pairs.
    """

    needs_all_rows = True

    def __init__(
        self,
        method: str = "auto",
        columns: Sequence[str] | None = None,
        prefix: str = "vote_",
        cardinality: int | None = None,
        tie_break: str = "random",
        output: str = "label",
        proba_prefix: str = "proba_",
        dependencies: str | list[list[int]] | None = None,
    ) -> None:
        from labelmodel.model.auto import METHODS

        if method not in METHODS:
            raise OrchestraError(f"label_model: method must be one of {list(METHODS)}, got {method!r}")
        if tie_break not in TIE_BREAKS:
            raise OrchestraError(f"label_model: tie_break must be one of {list(TIE_BREAKS)}, got {tie_break!r}")
        if cardinality is not None and (not isinstance(cardinality, int) or cardinality < 2):
            raise OrchestraError(f"label_model: cardinality must be an integer >= 2, got {cardinality!r}")
        self.method = method
        self.columns = list(columns) if columns is not None else None
        self.prefix = prefix
        self.cardinality = cardinality
        self.tie_break = tie_break
        self.output = output
        self.proba_prefix = proba_prefix
        if dependencies is not None and dependencies != "learn" and not (
            isinstance(dependencies, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in dependencies)
        ):
            raise OrchestraError(
                "label_model: dependencies must be null, 'learn' or a list of [i, j] column pairs, got "
                f"{dependencies!r}"
            )
        self.dependencies = dependencies

    def vote_columns(self, available: Sequence[str]) -> list[str]:
        """The vote columns this step reads, given the columns present."""
        if self.columns is not None:
            return list(self.columns)
        return [c for c in available if str(c).startswith(self.prefix)]

    def class_names(self, task: Task | None) -> list[str]:
        """Class names used in the probability column names."""
        if task is not None:
            if self.cardinality is not None and self.cardinality != task.cardinality:
                raise OrchestraError(
                    f"label_model: cardinality={self.cardinality} but the task has {task.cardinality} labels; "
                    "drop cardinality or fix the task"
                )
            return list(task.labels)
        if self.cardinality is None:
            raise OrchestraError("label_model: without a task, set cardinality (the number of classes)")
        return [str(i) for i in range(self.cardinality)]

    def inputs(self, available: Sequence[str], task: Task | None) -> list[str]:
        columns = self.vote_columns(available)
        if not columns:
            raise OrchestraError(
                f"label_model: no vote columns (none starts with {self.prefix!r}); put an lfs or prompt step "
                "before it or name the columns with columns: [...]"
            )
        return columns

    def adds(self, available: Sequence[str], task: Task | None) -> list[str]:
        return [self.output] + [f"{self.proba_prefix}{c}" for c in self.class_names(task)]

    def run(self, batch: pd.DataFrame, context: Context) -> pd.DataFrame:
        from labelmodel import LabelModel

        columns = self.inputs(list(batch.columns), context.task)
        names = self.class_names(context.task)
        votes = batch[columns]
        deps = self.dependencies if self.dependencies in (None, "learn") else [tuple(p) for p in self.dependencies]
        model = LabelModel(method=self.method, cardinality=len(names), dependencies=deps, seed=context.seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(votes)
        for w in caught:
            logger.warning("label_model %s: %s", self.name, w.message)
        preds, probs = model.predict(votes, tie_break=self.tie_break, return_probs=True)
        logger.info("label_model %s: %s (%s)", self.name, model.chosen_, model.reason_)
        context.artifacts[self.name] = {"model": model, "columns": columns, "classes": names}
        out: dict[str, Any] = {self.output: np.asarray(preds, dtype=np.int64)}
        for i, c in enumerate(names):
            out[f"{self.proba_prefix}{c}"] = np.asarray(probs[:, i], dtype=np.float64)
        return pd.DataFrame(out, index=batch.index)
