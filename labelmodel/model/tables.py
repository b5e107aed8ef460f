"""Models that predict from a log table of P(vote | class): the full k x k table per LF, or its diagonal form.

Both forms also carry per-LF weights: an LF in a group of k correlated LFs gets weight 1/k, so a group of
near-identical sources adds up to one source's evidence instead of k.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from labelmodel.base import LabelModelBase
from labelmodel.errors import LabelModelError
from labelmodel.inference import (
    DENSE_ONEHOT_MAX_WIDTH,
    diagonal_log_joint,
    diagonal_to_table,
    onehot_chunks,
    table_log_joint,
)
from labelmodel.matrix import LabelMatrix, as_label_matrix


class TableModel(LabelModelBase):
    """A label model whose learned state is ``log_prior_`` plus either ``log_table_`` (m*k x k: log P(LF j
    votes l | Y = y)) or ``log_correct_`` / ``log_wrong_`` (m x k each, symmetric errors), optionally
    ``log_abstain_`` (m x k: log P(LF j abstains | Y = y)), and ``lf_weights_`` (m,).

    Without ``log_abstain_`` the vote probabilities are conditional on voting and abstains carry no
    evidence. With it, abstaining is an outcome too: an LF that only ever votes "spam" still says something
    when it stays silent, which is what makes single-polarity LFs identifiable.
    """

    _learned_arrays = (
        "log_prior_", "log_table_", "log_correct_", "log_wrong_", "log_abstain_", "lf_weights_", "dependencies_",
    )

    def prepared(self, m: int, k: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray]:
        """The tables inference uses, with abstain terms and LF weights folded in.

        Returns (table, log_correct, log_wrong, log_prior): ``table`` (m*k x k) when it is small enough for
        a one-hot product (or the model is full), else None and the diagonal pair.
        """
        weights = getattr(self, "lf_weights_", None)
        weights = np.ones(m) if weights is None else weights
        log_abstain = getattr(self, "log_abstain_", None)
        prior = self.log_prior_ if log_abstain is None else self.log_prior_ + weights @ log_abstain
        if hasattr(self, "log_table_"):
            table = self.log_table_
            if log_abstain is not None:
                table = table - np.repeat(log_abstain, k, axis=0)
            return table * np.repeat(weights, k)[:, None], None, None, prior
        log_correct, log_wrong = self.log_correct_, self.log_wrong_
        if log_abstain is not None:
            log_correct, log_wrong = log_correct - log_abstain, log_wrong - log_abstain
        log_correct, log_wrong = log_correct * weights[:, None], log_wrong * weights[:, None]
        if m * k <= DENSE_ONEHOT_MAX_WIDTH:
            return diagonal_to_table(log_correct, log_wrong), None, None, prior
        return None, log_correct, log_wrong, prior

    def _log_joint_chunks(self, lm: LabelMatrix) -> Iterator[tuple[int, np.ndarray]]:
        table, log_correct, log_wrong, prior = self.prepared(lm.m, lm.cardinality)
        if table is not None:
            for start, X in onehot_chunks(lm):
                yield start, table_log_joint(X, table, prior)
            return
        for start, block in lm.chunks(lm.chunk_rows(lm.m + 2 * lm.cardinality)):
            yield start, diagonal_log_joint(block, log_correct, log_wrong, prior)

    @property
    def class_balance_(self) -> np.ndarray:
        """The learned or given prior P(Y)."""
        return np.exp(self.log_prior_)

    @property
    def confusion_(self) -> np.ndarray:
        """(m, k, k) array: confusion_[j, y, l] = P(LF j votes l | Y = y, LF j votes)."""
        if hasattr(self, "log_table_"):
            m, k = self.n_lfs_, self.cardinality_
            table = np.exp(self.log_table_).reshape(m, k, k).transpose(0, 2, 1)
            return table / np.clip(table.sum(axis=2, keepdims=True), 1e-12, None)
        m, k = self.log_correct_.shape
        conf = np.broadcast_to(np.exp(self.log_wrong_)[:, :, None], (m, k, k)).copy()
        idx = np.arange(k)
        conf[:, idx, idx] = np.exp(self.log_correct_)
        return conf / np.clip(conf.sum(axis=2, keepdims=True), 1e-12, None)

    @property
    def accuracies_(self) -> np.ndarray:
        """(m,) estimated P(LF j is right | LF j votes) = sum_y P(Y=y, vote=y) / P(vote), from the model."""
        p = self.class_balance_
        if hasattr(self, "log_table_"):
            m, k = self.n_lfs_, self.cardinality_
            joint = np.exp(self.log_table_).reshape(m, k, k) * p[None, None, :]
            return np.einsum("jyy->j", joint) / joint.sum(axis=(1, 2))
        k = self.log_correct_.shape[1]
        right = np.exp(self.log_correct_) @ p
        return right / (right + (k - 1) * (np.exp(self.log_wrong_) @ p))

    def get_weights(self) -> np.ndarray:
        """Per-LF accuracies, the name Snorkel users expect."""
        return self.accuracies_


def resolve_dependencies(
    dependencies: object, lm: LabelMatrix, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Turn the ``dependencies`` hyper-parameter into (edges array (e, 2), per-LF weights (m,)).

    None: no edges. "learn": edges learned from the votes (:func:`labelmodel.structure.learn_dependencies`).
    A list of (i, j) pairs: declared edges. Each connected group of LFs shares one unit of weight.
    """
    m = lm.m
    if dependencies is None:
        return np.zeros((0, 2), dtype=np.int64), np.ones(m)
    from labelmodel.structure import dependency_components, learn_dependencies

    if isinstance(dependencies, str):
        if dependencies != "learn":
            raise LabelModelError(
                f"dependencies must be None, 'learn' or a list of (i, j) LF pairs, got {dependencies!r}"
            )
        votes = lm.dense() if lm.n * lm.m <= 50_000_000 else _sample_rows(lm, seed)
        edges = learn_dependencies(votes, cardinality=lm.cardinality, seed=seed)
    else:
        edges = [tuple(int(v) for v in e) for e in dependencies]
        for i, j in edges:
            if not (0 <= i < m and 0 <= j < m) or i == j:
                raise LabelModelError(
                    f"dependency edge {(i, j)} is invalid for {m} LFs; use pairs of distinct LF indices"
                )
    weights = np.ones(m)
    for component in dependency_components(edges, m):
        weights[list(component)] = 1.0 / len(component)
    arr = np.array(sorted({(min(i, j), max(i, j)) for i, j in edges}), dtype=np.int64).reshape(-1, 2)
    return arr, weights


def _sample_rows(lm: LabelMatrix, seed: int, rows: int = 500_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(lm.n, size=min(rows, lm.n), replace=False))
    sub = lm.codes[idx]
    return as_label_matrix(sub, lm.cardinality).dense()
