"""Dawid-Skene: EM over per-LF confusion matrices, in log space, with abstains as missing votes."""

from __future__ import annotations

import logging

import numpy as np

from labelmodel.base import softmax_rows
from labelmodel.errors import LabelModelError
from labelmodel.inference import DENSE_ONEHOT_MAX_WIDTH, onehot_chunks, table_log_joint
from labelmodel.matrix import ABSTAIN, LabelMatrix
from labelmodel.model.majority import _weighted_counts
from labelmodel.model.tables import TableModel, resolve_dependencies

logger = logging.getLogger(__name__)

_CACHE_BYTES = 512 << 20
MAX_FULL_TABLE = 50_000_000
CONFUSIONS = ("full", "diagonal")


class DawidSkene(TableModel):
    """Dawid & Skene (1979) EM label model.

    Each LF j has a confusion matrix P(vote l | Y = y, j votes). ``confusion="full"`` learns all k x k
    entries per LF; ``"diagonal"`` learns one accuracy per (LF, class) and spreads errors evenly over the
    other classes, which scales to thousands of classes (cost per iteration O(n m + n k)).

    Parameters
    ----------
    cardinality : int, optional
    confusion : "full" | "diagonal"
    max_iter : int
        EM iterations at most.
    tol : float
        Stop when the mean absolute change of the posteriors falls below this.
    smoothing : float
        Dirichlet pseudo-count added to every confusion entry (and ``smoothing`` more on the diagonal),
        which keeps rare (LF, class) pairs away from 0 and 1.
    model_abstains : bool
        Treat "abstain" as an outcome whose probability depends on the class (needed for LFs that only
        ever vote one class); False gives the classic model where abstains are missing votes.
    dependencies : None | "learn" | list of (i, j)
        LF pairs known (or to be learned) to be correlated; each correlated group counts as one source.
    seed : int
    """

    def __init__(
        self,
        cardinality: int | None = None,
        confusion: str = "full",
        max_iter: int = 100,
        tol: float = 1e-5,
        smoothing: float = 0.01,
        model_abstains: bool = True,
        dependencies: object = None,
        seed: int = 0,
    ) -> None:
        super().__init__(cardinality=cardinality, seed=seed)
        self.confusion = confusion
        self.model_abstains = model_abstains
        self.max_iter = max_iter
        self.tol = tol
        self.smoothing = smoothing
        self.dependencies = dependencies

    def _fit(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        if self.confusion not in CONFUSIONS:
            raise LabelModelError(f"confusion must be one of {CONFUSIONS}, got {self.confusion!r}")
        if self.max_iter < 1 or self.tol <= 0 or self.smoothing < 0:
            raise LabelModelError("need max_iter >= 1, tol > 0 and smoothing >= 0")
        k = lm.cardinality
        if self.confusion == "full" and lm.m * k * k > MAX_FULL_TABLE:
            raise LabelModelError(
                f"full confusion matrices for {lm.m} LFs x {k} x {k} classes need {lm.m * k * k:,} numbers; "
                "use DawidSkene(confusion='diagonal'), which scales to many classes"
            )
        self.dependencies_, self.lf_weights_ = resolve_dependencies(self.dependencies, lm, self.seed)
        for name in ("log_table_", "log_correct_", "log_wrong_"):
            self.__dict__.pop(name, None)
        q = _majority_posteriors(lm)
        fixed_prior = class_balance
        diagonal = self.confusion == "diagonal"
        cache = _OnehotCache(lm) if not diagonal or lm.m * k <= DENSE_ONEHOT_MAX_WIDTH else None
        self.n_iter_ = 0
        for it in range(self.max_iter):
            prior = fixed_prior if fixed_prior is not None else _estimate_prior(q, self.smoothing)
            self.log_prior_ = np.log(prior)
            if diagonal:
                self._m_step_diagonal(lm, q, cache)
            else:
                self._m_step_full(lm, q, cache)
            q_new = self._posteriors(lm, cache)
            delta = float(np.abs(q_new - q).mean())
            q = q_new
            self.n_iter_ = it + 1
            if delta < self.tol:
                break
        logger.info("DawidSkene(%s) converged after %d iterations", self.confusion, self.n_iter_)

    def _posteriors(self, lm: LabelMatrix, cache: _OnehotCache | None) -> np.ndarray:
        q = np.empty((lm.n, lm.cardinality), dtype=np.float32)
        table, _, _, prior = self.prepared(lm.m, lm.cardinality)
        if cache is not None and table is not None:
            source = ((start, table_log_joint(X, table, prior)) for start, X in cache.chunks())
        else:
            source = self._log_joint_chunks(lm)
        for start, scores in source:
            q[start : start + scores.shape[0]] = softmax_rows(scores)
        return q

    def _expected_counts(self, lm: LabelMatrix, q: np.ndarray, cache: _OnehotCache | None) -> np.ndarray:
        """(m*k, k) expected counts: sum over rows of [LF j voted l] * P(Y = y | row)."""
        k = lm.cardinality
        counts = np.zeros((lm.m * k, k), dtype=np.float64)
        source = cache.chunks() if cache is not None else onehot_chunks(lm)
        for start, X in source:
            qc = q[start : start + X.shape[0]]
            counts += np.asarray(X.T @ qc, dtype=np.float64)
        return counts

    def _m_step_full(self, lm: LabelMatrix, q: np.ndarray, cache: _OnehotCache | None) -> None:
        m, k, s = lm.m, lm.cardinality, self.smoothing
        counts = self._expected_counts(lm, q, cache).reshape(m, k, k)
        counts += s
        counts[:, np.arange(k), np.arange(k)] += s
        if self.model_abstains:
            class_totals = q.sum(axis=0, dtype=np.float64)
            raw_abstain = class_totals[None, :] - (counts.sum(axis=1) - (k + 1) * s)
            abstain = np.clip(raw_abstain, 0.0, None) + s
            denom = counts.sum(axis=1) + abstain
            self.log_abstain_ = np.log(abstain / denom)
        else:
            denom = counts.sum(axis=1)
            self.log_abstain_ = None
        self.log_table_ = np.log(counts / denom[:, None, :]).reshape(m * k, k)

    def _m_step_diagonal(self, lm: LabelMatrix, q: np.ndarray, cache: _OnehotCache | None) -> None:
        m, k, s = lm.m, lm.cardinality, self.smoothing
        if m * k <= DENSE_ONEHOT_MAX_WIDTH:
            counts = self._expected_counts(lm, q, cache).reshape(m, k, k)
            correct = np.einsum("jyy->jy", counts)
            total = counts.sum(axis=1)
        else:
            correct = np.zeros(m * k)
            total = np.zeros((m, k))
            for start, block in lm.chunks(lm.chunk_rows(lm.m + 2 * k)):
                qc = q[start : start + block.shape[0]]
                voted = block != ABSTAIN
                total += voted.T.astype(np.float32) @ qc
                r, j = np.nonzero(voted)
                labels = block[r, j].astype(np.int64)
                correct += np.bincount(j * k + labels, weights=qc[r, labels], minlength=m * k)
            correct = correct.reshape(m, k)
        acc = np.clip((correct + 2 * s) / (total + (k + 1) * s), 1e-6, 1 - 1e-6)
        log_correct, log_wrong = np.log(acc), np.log((1 - acc) / max(k - 1, 1))
        if self.model_abstains:
            class_totals = q.sum(axis=0, dtype=np.float64)
            votes = np.clip((total + s) / (class_totals[None, :] + 2 * s), 1e-6, 1 - 1e-6)
            log_correct, log_wrong = log_correct + np.log(votes), log_wrong + np.log(votes)
            self.log_abstain_ = np.log1p(-votes)
        else:
            self.log_abstain_ = None
        self.log_correct_, self.log_wrong_ = log_correct, log_wrong


class _OnehotCache:
    """One-hot chunks kept in memory across EM iterations when they fit in a fixed budget."""

    def __init__(self, lm: LabelMatrix) -> None:
        self.lm = lm
        width = lm.m * lm.cardinality
        dense = width <= DENSE_ONEHOT_MAX_WIDTH
        estimate = lm.n * width * 4 if dense else lm.n * lm.m * 12
        self.items = list(onehot_chunks(lm)) if estimate <= _CACHE_BYTES else None

    def chunks(self):
        return iter(self.items) if self.items is not None else onehot_chunks(self.lm)


def _majority_posteriors(lm: LabelMatrix) -> np.ndarray:
    """Soft majority vote as EM's starting point (uniform where no LF votes)."""
    k = lm.cardinality
    q = np.empty((lm.n, k), dtype=np.float32)
    ones = np.ones(lm.m)
    for start, block in lm.chunks(lm.chunk_rows(lm.m + k)):
        counts = _weighted_counts(block, k, ones) + 1.0 / k
        q[start : start + block.shape[0]] = counts / counts.sum(axis=1, keepdims=True)
    return q


def _estimate_prior(q: np.ndarray, smoothing: float) -> np.ndarray:
    p = q.sum(axis=0, dtype=np.float64) + max(smoothing, 1e-6)
    return p / p.sum()

