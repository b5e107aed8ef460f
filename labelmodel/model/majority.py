"""Majority vote and weighted majority vote: the baselines every label model must beat."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from labelmodel.base import LabelModelBase
from labelmodel.errors import LabelModelError
from labelmodel.matrix import ABSTAIN, LabelMatrix


def _weighted_counts(block: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    rows = block.shape[0]
    if k <= 32:
        counts = np.empty((rows, k), dtype=np.float64)
        for c in range(k):
            counts[:, c] = (block == c) @ weights
        return counts
    voted = block != ABSTAIN
    r, j = np.nonzero(voted)
    flat = r * k + block[r, j].astype(np.int64)
    return np.bincount(flat, weights=weights[j], minlength=rows * k).reshape(rows, k)


class WeightedMajorityVote(LabelModelBase):
    """Each LF's vote counts with a fixed non-negative weight; P(y) is the weighted vote share.

    Rows where no LF votes get uniform probabilities, so ``predict(tie_break="random")`` breaks them like
    WRENCH and Snorkel do.

    Parameters
    ----------
    weights : sequence of m floats, optional
        Per-LF weights. When None, ``fit`` estimates them from a dev set (``L_dev``, ``Y_dev``) as the log
        odds of each LF's dev accuracy, or uses 1 for every LF without one.
    cardinality : int, optional
    seed : int
    """

    _learned_arrays = ("weights_",)

    def __init__(self, weights: Sequence[float] | None = None, cardinality: int | None = None, seed: int = 0) -> None:
        super().__init__(cardinality=cardinality, seed=seed)
        self.weights = None if weights is None else [float(w) for w in weights]

    def _fit(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (lm.m,) or np.isnan(w).any() or (w < 0).any():
                raise LabelModelError(f"weights must be {lm.m} non-negative numbers, one per LF; got {self.weights!r}")
            self.weights_ = w
        elif dev is not None:
            self.weights_ = _dev_log_odds(dev[0].dense(), dev[1], lm.cardinality)
        else:
            self.weights_ = np.ones(lm.m)

    def _log_joint_chunks(self, lm: LabelMatrix) -> Iterator[tuple[int, np.ndarray]]:
        k = lm.cardinality
        for start, block in lm.chunks(lm.chunk_rows(lm.m + k)):
            counts = _weighted_counts(block, k, self.weights_)
            empty = counts.sum(axis=1) <= 0
            counts[empty] = 1.0
            with np.errstate(divide="ignore"):
                yield start, np.log(counts)


class MajorityVote(WeightedMajorityVote):
    """Plain majority vote: every LF's vote counts once. Nothing to learn; ``fit`` only records the shape."""

    def __init__(self, cardinality: int | None = None, seed: int = 0) -> None:
        super().__init__(weights=None, cardinality=cardinality, seed=seed)

    def _fit(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        self.weights_ = np.ones(lm.m)


def _dev_log_odds(L_dev: np.ndarray, y_dev: np.ndarray, k: int) -> np.ndarray:
    """Per-LF weight log(acc * (k-1) / (1 - acc)) from dev accuracy, smoothed, floored at 0."""
    labeled = y_dev != ABSTAIN
    L_dev, y_dev = L_dev[labeled], y_dev[labeled]
    voted = L_dev != ABSTAIN
    correct = ((L_dev == y_dev[:, None]) & voted).sum(axis=0)
    acc = (correct + 1.0) / (voted.sum(axis=0) + 2.0)
    return np.clip(np.log(acc * (k - 1) / (1.0 - acc)), 0.0, None)
