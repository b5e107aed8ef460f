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
from dataclasses import dataclass

import numpy as np

from labelmodel.errors import LabelModelError
from labelmodel.inference import pair_statistics, second_moments
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
    model_abstains : bool
        For k = 2: fit the class-conditional model with abstains as an outcome (see
        :func:`binary_moments`), which single-polarity LFs need. For k > 2 the symmetric model is used.
    balance_steps : int
        For that binary model without a given class balance: fixed-point steps that estimate P(Y).
    seed : int
    """

    def __init__(
        self,
        cardinality: int | None = None,
        min_overlap: int = 10,
        max_triplets: int = 200,
        dependencies: object = None,
        default_accuracy: float = 0.7,
        model_abstains: bool = True,
        balance_steps: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(cardinality=cardinality, seed=seed)
        self.model_abstains = model_abstains
        self.balance_steps = balance_steps
        self.min_overlap = min_overlap
        self.max_triplets = max_triplets
        self.dependencies = dependencies
        self.default_accuracy = default_accuracy

    def _fit(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        if not 0 < self.default_accuracy < 1:
            raise LabelModelError(f"default_accuracy must lie in (0, 1), got {self.default_accuracy}")
        self.dependencies_, self.lf_weights_ = resolve_dependencies(self.dependencies, lm, self.seed)
        k, m = lm.cardinality, lm.m
        for name in ("log_table_", "log_correct_", "log_wrong_", "log_abstain_"):
            self.__dict__.pop(name, None)
        if k == 2 and self.model_abstains and m >= 3:
            self._fit_binary(lm, class_balance)
            return
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
        self.identified_ = ~missing
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

    def _fit_binary(self, lm: LabelMatrix, class_balance: np.ndarray | None) -> None:
        """Fit the binary model with abstains; without a given class balance, estimate P(Y = 1) by a few
        fixed-point steps p <- mean posterior on a row sample (the moments alone do not identify it)."""
        prior = class_balance if class_balance is not None else np.full(2, 0.5)
        moments = binary_moments(second_moments(lm), lm.n, self.dependencies_, self.min_overlap)
        self.identified_ = moments.identified
        if not moments.identified.all():
            logger.warning("Triplet: %d of %d LFs share no usable triplet; they get accuracy %.2f",
                           int((~moments.identified).sum()), lm.m, self.default_accuracy)
        sample = _row_sample(lm, self.seed)
        for step in range(self.balance_steps + 1):
            self.log_table_, self.log_abstain_ = binary_tables(moments, float(prior[1]), self.default_accuracy)
            self.log_prior_ = np.log(prior)
            if class_balance is not None or step == self.balance_steps:
                break
            p1 = float(np.clip(self.predict_proba(sample)[:, 1].mean(), 0.02, 0.98))
            if abs(p1 - prior[1]) < 1e-3:
                break
            prior = np.array([1.0 - p1, p1])
        self.triplet_accuracy_ = self.accuracies_

    _learned_arrays = TableModel._learned_arrays + ("triplet_accuracy_", "identified_")


@dataclass
class BinaryMoments:
    """What the binary model needs from the data, independent of the class balance."""

    vote_rates: np.ndarray  # (m, 2) P(LF j votes 0), P(LF j votes 1)
    strength: np.ndarray  # (m,) |nu_j| * sqrt(Var Y) from triplets
    sign: np.ndarray  # (m,) +1 when LF j is better than random
    coverage_ratio: np.ndarray  # (m,) beta_j / nu_j
    identified: np.ndarray  # (m,) bool: LF j is in a usable triplet


def binary_moments(O: np.ndarray, n: int, dependencies: np.ndarray, min_overlap: int) -> BinaryMoments:
    """Closed-form class-conditional statistics for k = 2 with abstains, from the one-hot second moments O
    (2m x 2m, see :func:`labelmodel.inference.second_moments`) of n rows.

    Encode a vote as s = +1 (class 1), -1 (class 0), 0 (abstain) and a = |s|. With Y = +-1 and LFs
    independent given Y, E[s_i | Y] = mu_i + nu_i Y and E[a_i | Y] = alpha_i + beta_i Y, so
        Cov(s_i, s_j) = nu_i nu_j Var(Y),   Cov(a_i, s_j) = beta_i nu_j Var(Y).
    Triplets give |nu_i| (FlyingSquid's step on covariances instead of raw moments, which is what lets a
    single-polarity LF, whose mean is far from 0, be estimated); signs follow the covariance signs, oriented
    so that most LFs are better than random; beta_i / nu_i = Cov(a_i, s_j) / Cov(s_i, s_j) by least squares
    over j (exactly 1 for a single-polarity LF).
    """
    m = O.shape[0] // 2
    O = O.reshape(m, 2, m, 2)
    rates = np.einsum("iaia->ia", O).copy()
    Es, Ea = rates[:, 1] - rates[:, 0], rates[:, 1] + rates[:, 0]
    SS = O[:, 1, :, 1] - O[:, 1, :, 0] - O[:, 0, :, 1] + O[:, 0, :, 0]
    AS = O[:, 1, :, 1] - O[:, 1, :, 0] + O[:, 0, :, 1] - O[:, 0, :, 0]
    C = SS - np.outer(Es, Es)
    D = AS - np.outer(Ea, Es)
    both = O.sum(axis=(1, 3)) * n
    usable = (both >= min_overlap) & ~np.eye(m, dtype=bool) & (np.abs(C) > 1e-9)
    for i, j in dependencies:
        usable[i, j] = usable[j, i] = False
    g = np.zeros(m)
    identified = np.zeros(m, dtype=bool)
    for i in range(m):
        partners = np.flatnonzero(usable[i])
        a, b = np.triu_indices(partners.size, 1)
        pj, pk = partners[a], partners[b]
        ok = usable[pj, pk]
        if ok.any():
            g[i] = float(np.median(np.sqrt(np.abs(C[i, pj[ok]] * C[i, pk[ok]] / C[pj[ok], pk[ok]]))))
            identified[i] = True
    ratio = np.zeros(m)
    for i in range(m):
        js = np.flatnonzero(usable[i])
        if js.size and C[i, js] @ C[i, js] > 0:
            ratio[i] = float(D[i, js] @ C[i, js] / (C[i, js] @ C[i, js]))
    return BinaryMoments(rates, g, _orient(C, g, usable), ratio, identified)


def binary_tables(bm: BinaryMoments, p1: float, default_accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    """Vote probabilities of the binary model for class balance P(Y = 1) = p1:
    P(+1 | y) = (E[a|y] + E[s|y]) / 2, P(-1 | y) = (E[a|y] - E[s|y]) / 2, P(abstain | y) = 1 - E[a|y].
    An LF in no usable triplet keeps its observed vote rates and gets ``default_accuracy``, so with too
    little overlap the model reduces to majority vote instead of ignoring the LF.

    Returns
    -------
    log_table : (2m, 2) log P(LF j votes l | Y = y), rows j*2 + l
    log_abstain : (m, 2) log P(LF j abstains | Y = y)
    """
    m = bm.strength.shape[0]
    Es = bm.vote_rates[:, 1] - bm.vote_rates[:, 0]
    Ea = bm.vote_rates.sum(axis=1)
    nu = bm.sign * bm.strength / np.sqrt(4.0 * p1 * (1.0 - p1))
    beta = nu * bm.coverage_ratio
    mean_y = 2.0 * p1 - 1.0
    mu, alpha = Es - nu * mean_y, Ea - beta * mean_y
    tables = np.empty((m, 2, 2))
    abstain = np.empty((m, 2))
    missing = ~bm.identified
    for y_index, y_sign in ((0, -1.0), (1, 1.0)):
        es = np.clip(mu + nu * y_sign, -1.0, 1.0)
        ea = np.clip(alpha + beta * y_sign, np.abs(es), 1.0)
        probs = np.stack([(ea - es) / 2, (ea + es) / 2, 1.0 - ea], axis=1)
        right = np.where(np.arange(2)[None, :] == y_index, default_accuracy, 1.0 - default_accuracy)
        votes = np.clip(bm.vote_rates[missing] * 2.0 * right, 0.0, 1.0)
        probs[missing] = np.concatenate([votes, 1.0 - votes.sum(axis=1, keepdims=True)], axis=1)
        probs = np.clip(probs, 1e-4, None)
        probs /= probs.sum(axis=1, keepdims=True)
        tables[:, :, y_index] = probs[:, :2]
        abstain[:, y_index] = probs[:, 2]
    return np.log(tables).reshape(2 * m, 2), np.log(abstain)


def _row_sample(lm: LabelMatrix, seed: int, rows: int = 50_000) -> np.ndarray:
    dense_rows = lm.codes if not lm.is_sparse else None
    if lm.n <= rows:
        return lm.dense()
    idx = np.sort(np.random.default_rng(seed).choice(lm.n, size=rows, replace=False))
    if dense_rows is not None:
        return dense_rows[idx]
    return LabelMatrix(lm.codes[idx], lm.cardinality, lm.lf_names).dense()


def _orient(C: np.ndarray, g: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Signs of nu: the leading eigenvector of the rank-one completed covariance nu nu^T Var(Y), oriented so
    that the LFs better than random (nu > 0) carry most of the weight."""
    filled = np.where(usable, C, 0.0)
    np.fill_diagonal(filled, g**2)
    _, vectors = np.linalg.eigh(filled)
    sign = np.sign(vectors[:, -1])
    sign[sign == 0] = 1.0
    if (sign * g).sum() < 0:
        sign = -sign
    return sign
