"""FlyingSquid's closed-form triplet method, extended from binary to k classes.

Under the symmetric model (LF j is right with probability a_j when it votes, and otherwise picks one of the
other k-1 classes evenly), two conditionally independent LFs agree, where both vote, with rate
    r_ij = 1/k + (k-1)/k * x_i * x_j,   x_j = (k a_j - 1) / (k - 1),
(exact for balanced classes, a close approximation otherwise). So with M_ij = (k r_ij - 1)/(k - 1) = x_i x_j,
any triplet of mutually independent LFs gives |x_i| = sqrt(|M_ij M_ik / M_jk|): accuracies from
agreement rates alone, in one pass over the data and no iterations. For k = 2 this is FlyingSquid's
E[l_i l_j] = E[l_i Y] E[l_j Y].
"""

from __future__ import annotations

import logging

import numpy as np

from labelmodel.errors import LabelModelError
from labelmodel.inference import pair_statistics
from labelmodel.matrix import LabelMatrix
from labelmodel.model.tables import TableModel, resolve_dependencies

logger = logging.getLogger(__name__)


class Triplet(TableModel):
    """Closed-form label model from pairwise agreement rates (Fu et al., 2020, "Fast and Three-rious").

    Parameters
    ----------
    cardinality : int, optional
    min_overlap : int
        A pair of LFs enters a triplet only if both vote on at least this many rows.
    max_triplets : int
        Triplets averaged per LF (median over a seeded sample when more exist).
    dependencies : None | "learn" | list of (i, j)
        Correlated LF pairs never share a triplet, and each correlated group counts as one source.
    default_accuracy : float
        Accuracy assumed for an LF that takes part in no usable triplet.
    seed : int
    """

    def __init__(
        self,
        cardinality: int | None = None,
        min_overlap: int = 10,
        max_triplets: int = 200,
        dependencies: object = None,
        default_accuracy: float = 0.7,
        seed: int = 0,
    ) -> None:
        super().__init__(cardinality=cardinality, seed=seed)
        self.min_overlap = min_overlap
        self.max_triplets = max_triplets
        self.dependencies = dependencies
        self.default_accuracy = default_accuracy

    def _fit(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        if not 0 < self.default_accuracy < 1:
            raise LabelModelError(f"default_accuracy must lie in (0, 1), got {self.default_accuracy}")
        self.dependencies_, self.lf_weights_ = resolve_dependencies(self.dependencies, lm, self.seed)
        k, m = lm.cardinality, lm.m
        both, agree = pair_statistics(lm)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(both > 0, agree / np.maximum(both, 1), np.nan)
        M = (k * rate - 1.0) / (k - 1.0)
        usable = (both >= self.min_overlap) & ~np.eye(m, dtype=bool) & (np.abs(np.nan_to_num(M)) > 1e-3)
        for i, j in self.dependencies_:
            usable[i, j] = usable[j, i] = False
        x = np.full(m, np.nan)
        rng = np.random.default_rng(self.seed)
        for i in range(m):
            partners = np.flatnonzero(usable[i])
            if partners.size < 2:
                continue
            a, b = np.triu_indices(partners.size, 1)
            pj, pk = partners[a], partners[b]
            ok = usable[pj, pk]
            pj, pk = pj[ok], pk[ok]
            if pj.size == 0:
                continue
            if pj.size > self.max_triplets:
                pick = rng.choice(pj.size, self.max_triplets, replace=False)
                pj, pk = pj[pick], pk[pick]
            estimates = np.sqrt(np.abs(M[i, pj] * M[i, pk] / M[pj, pk]))
            x[i] = float(np.median(estimates))
        default_x = (k * self.default_accuracy - 1.0) / (k - 1.0)
        missing = np.isnan(x)
        if missing.any():
            logger.warning("Triplet: %d of %d LFs share no usable triplet; they get accuracy %.2f",
                           int(missing.sum()), m, self.default_accuracy)
        x = np.clip(np.where(missing, default_x, x), 0.0, 0.999)
        acc = np.clip((1.0 + (k - 1.0) * x) / k, 1.0 / k + 1e-3, 0.999)
        self.triplet_accuracy_ = acc
        self.log_correct_ = np.repeat(np.log(acc)[:, None], k, axis=1)
        self.log_wrong_ = np.repeat(np.log((1.0 - acc) / (k - 1.0))[:, None], k, axis=1)
        prior = class_balance if class_balance is not None else np.full(k, 1.0 / k)
        self.log_prior_ = np.log(prior)
        self.__dict__.pop("log_table_", None)

    _learned_arrays = TableModel._learned_arrays + ("triplet_accuracy_",)
