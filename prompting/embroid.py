"""Embroid: smooth a source's votes over embedding-space neighbours, then combine with a label model.

Guha, Chen, Bhatia, Mirhoseini, Sala, Ré, "Embroid: Unsupervised Prediction Smoothing Can Improve Few-Shot
Classification" (NeurIPS 2023). For each source j (a prompt's vote column) and each embedding space s, row i
gets a new vote from the votes that source gave to i's k nearest neighbours in s (i itself excluded):

* binary (classes 0 = negative, 1 = positive), exactly the paper's rule: with share_c the fraction of the
  neighbours that voted (abstainers left out; with ``abstains="count"`` the fraction of all k) who voted c,
  the new vote is positive when share_1 >= tau_pos,
  negative when share_0 >= tau_neg (negative wins if both hold, as in the official code), else abstain;
* C > 2 classes, one-vs-rest: class c clears its threshold when share_c >= tau_c; among the classes that
  clear, the one with the largest margin share_c - tau_c wins (ties to the lower class index); none clears:
  abstain. For C = 2 with tau_pos + tau_neg >= 1 (the default thresholds sum to exactly 1) this is the same
  as the binary rule.

Either way a row none of whose k neighbours voted abstains, and a class that no neighbour voted for is never
the new vote (with a threshold of 0, i.e. a source that never votes that class, the official code's test
passes on every row; that is the only case where the binary rule here differs from it).

Default thresholds (``"auto"``): tau_c = the source's own share of its votes that are for class c (with
``abstains="count"``: its votes for c over all rows), i.e.
tau_pos = P(source votes positive), tau_neg = P(source votes negative), as the paper recommends and its demo
does: the neighbourhood agrees with the source where the source's vote is more concentrated around the row
than in the data overall. The smoothed columns go to a label model together with the original votes; the
paper combined them with FlyingSquid (triplet method, uniform class balance), which ``Embroid()``'s defaults
reproduce with ``labelmodel``'s ``Triplet``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from prompting.errors import PromptingError

logger = logging.getLogger(__name__)

AUTO = "auto"
CLASS_BALANCES = ("uniform", "estimate")
ABSTAINS = ("ignore", "count")
# rows per chunk when counting neighbour votes (keeps the (rows, m, classes) count table small)
COUNT_CELLS = 1 << 22


def check_votes(votes: Any, cardinality: int | None = None) -> tuple[np.ndarray, int]:
    """Validate a vote matrix.

    Parameters
    ----------
    votes
        ``(n, m)`` integers, class index ``0..C-1`` or -1 (abstain); a DataFrame's values are used.
    cardinality
        Number of classes C (default: the largest vote + 1, at least 2).

    Returns
    -------
    (votes as int64, cardinality)
    """
    array = np.asarray(getattr(votes, "values", votes))
    if array.ndim == 1:
        raise PromptingError(f"votes must be 2-D (n rows, m sources), got shape {array.shape}; use votes[:, None]")
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise PromptingError(f"votes must be a 2-D (n >= 2 rows, m >= 1 sources) array, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise PromptingError("votes must be integers (class index, -1 = abstain); found NaN or fractions")
    elif array.dtype.kind not in "iub":
        raise PromptingError(f"votes must be integers (class index, -1 = abstain), got dtype {array.dtype}")
    array = array.astype(np.int64)
    if (array < -1).any():
        raise PromptingError(
            f"votes contain {int(array.min())}; classes are 0..C-1 and -1 abstains (map +-1 votes with (v + 1) // 2)"
        )
    top = int(array.max())
    if cardinality is None:
        cardinality = max(2, top + 1)
    elif not isinstance(cardinality, int | np.integer) or cardinality < 2:
        raise PromptingError(f"cardinality must be an integer >= 2, got {cardinality!r}")
    elif top >= cardinality:
        raise PromptingError(f"votes contain class {top} but cardinality={cardinality}; raise cardinality")
    return array, int(cardinality)


def check_neighbors(neighbors: Any, n: int, k: int) -> list[np.ndarray]:
    """Validate neighbour indices: one ``(n, >= k)`` integer array per embedding space, nearest first.

    Parameters
    ----------
    neighbors
        A list of 2-D arrays, one 2-D array (one space), or a 3-D ``(spaces, n, d)`` array.
    n
        Number of rows.
    k
        Neighbours used per row.

    Returns
    -------
    list of ``(n, k)`` int64 arrays
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise PromptingError(f"k must be a positive integer, got {k!r}")
    if isinstance(neighbors, np.ndarray):
        spaces = [neighbors] if neighbors.ndim == 2 else list(neighbors)
    else:
        spaces = list(neighbors)
    if not spaces:
        raise PromptingError("neighbors is empty; give one (n, k) index array per embedding space")
    out = []
    for s, raw in enumerate(spaces):
        array = np.asarray(raw)
        if array.ndim != 2 or array.shape[0] != n:
            raise PromptingError(
                f"neighbors[{s}] has shape {array.shape} but the votes have {n} rows; give an (n, k) index array "
                "per space, row i listing row i's nearest neighbours"
            )
        if array.dtype.kind not in "iu":
            raise PromptingError(f"neighbors[{s}] must hold integer row indices, got dtype {array.dtype}")
        if array.shape[1] < k:
            raise PromptingError(
                f"k={k} but neighbors[{s}] lists only {array.shape[1]} neighbours per row; lower k or compute more "
                "neighbours (prompting.neighbors.nearest_neighbors)"
            )
        array = array[:, :k].astype(np.int64)
        if array.min() < 0 or array.max() >= n:
            raise PromptingError(f"neighbors[{s}] holds indices outside 0..{n - 1}")
        own = np.flatnonzero((array == np.arange(n)[:, None]).any(axis=1))
        if own.size:
            hint = (" (every row lists itself first: drop that column, e.g. knn[:, 1:])"
                    if (array[:, 0] == np.arange(n)).all() else "")
            raise PromptingError(
                f"neighbors[{s}] lists rows as their own neighbours (rows {own[:5].tolist()}){hint}; a row's "
                "neighbourhood vote must come from other rows"
            )
        out.append(array)
    return out


def vote_shares(votes: np.ndarray, neighbors: np.ndarray, cardinality: int,
                abstains: str = "ignore") -> tuple[np.ndarray, np.ndarray]:
    """Per row and source, the share of each class among the neighbours' votes.

    Parameters
    ----------
    votes
        ``(n, m)`` int64, -1 = abstain.
    neighbors
        ``(n, k)`` int64 neighbour indices.
    cardinality
        Number of classes C.
    abstains
        ``"ignore"``: shares among the neighbours that voted; ``"count"``: shares among all k neighbours.

    Returns
    -------
    shares : ``(n, m, C)`` float64; rows where no neighbour voted are 0
    voted : ``(n, m)`` int64, how many of the k neighbours voted
    """
    n, m = votes.shape
    shares = np.zeros((n, m, cardinality))
    voted = np.zeros((n, m), dtype=np.int64)
    step = max(1, COUNT_CELLS // max(1, m * cardinality))
    for start in range(0, n, step):
        stop = min(n, start + step)
        near = votes[neighbors[start:stop]]  # (rows, k, m)
        rows = stop - start
        valid = near >= 0
        flat = (np.arange(rows)[:, None, None] * m + np.arange(m)[None, None, :]) * cardinality + near
        counts = np.bincount(flat[valid], minlength=rows * m * cardinality).reshape(rows, m, cardinality)
        got = valid.sum(axis=1)
        voted[start:stop] = got
        denominator = np.maximum(got, 1) if abstains == "ignore" else np.full_like(got, neighbors.shape[1])
        shares[start:stop] = counts / denominator[:, :, None]
    return shares, voted


def resolve_thresholds(votes: np.ndarray, cardinality: int, tau_pos: Any = AUTO, tau_neg: Any = AUTO,
                       abstains: str = "ignore") -> np.ndarray:
    """The threshold of every (source, class).

    Parameters
    ----------
    votes
        ``(n, m)`` int64 votes.
    cardinality
        Number of classes C.
    tau_pos
        Binary: threshold of the positive class (1). ``"auto"``: the source's share of positive votes.
        C > 2: the threshold of every class (a float, or a sequence of C floats); ``"auto"``: each class's
        share of the source's votes.
    tau_neg
        Binary: threshold of the negative class (0); ``"auto"``: the source's share of negative votes.
        Not used for C > 2 (leave it ``"auto"``).
    abstains
        For ``"auto"``: shares among the rows the source voted on (``"ignore"``) or among all rows
        (``"count"``), matching :func:`vote_shares`.

    Returns
    -------
    numpy.ndarray
        ``(m, C)`` thresholds.
    """
    m = votes.shape[1]
    rates = np.zeros((m, cardinality))
    for j in range(m):
        column = votes[:, j]
        column = column[column >= 0]
        if column.size:
            rates[j] = np.bincount(column, minlength=cardinality) / (column.size if abstains == "ignore"
                                                                     else votes.shape[0])
    out = rates.copy()
    if cardinality == 2:
        for c, value, name in ((1, tau_pos, "tau_pos"), (0, tau_neg, "tau_neg")):
            if not (isinstance(value, str) and value == AUTO):
                out[:, c] = _threshold(value, name)
        return out
    if not (isinstance(tau_neg, str) and tau_neg == AUTO):
        raise PromptingError(
            f"tau_neg applies to binary tasks; with {cardinality} classes every class is 'positive' against the rest "
            "and takes its threshold from tau_pos (a float, C floats or 'auto'); leave tau_neg='auto'"
        )
    if isinstance(tau_pos, str) and tau_pos == AUTO:
        return out
    if isinstance(tau_pos, Sequence | np.ndarray) and not isinstance(tau_pos, str):
        values = [_threshold(v, "tau_pos") for v in tau_pos]
        if len(values) != cardinality:
            raise PromptingError(f"tau_pos has {len(values)} thresholds for {cardinality} classes; give one per class")
        out[:] = np.asarray(values)[None, :]
        return out
    out[:] = _threshold(tau_pos, "tau_pos")
    return out


def _threshold(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise PromptingError(f"{name} must be 'auto' or a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise PromptingError(f"{name} must lie in [0, 1] (a share of neighbour votes), got {value}")
    return float(value)


def neighborhood_votes(shares: np.ndarray, voted: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Turn neighbour vote shares into votes by the thresholds (see the module docstring for the rule).

    Parameters
    ----------
    shares
        ``(n, m, C)`` from :func:`vote_shares`.
    voted
        ``(n, m)`` neighbours that voted.
    thresholds
        ``(m, C)`` from :func:`resolve_thresholds`.

    Returns
    -------
    numpy.ndarray
        ``(n, m)`` int64, -1 = abstain.
    """
    n, m, cardinality = shares.shape
    clears = (shares >= thresholds[None]) & (shares > 0) & (voted[:, :, None] > 0)
    if cardinality == 2:
        out = np.full((n, m), -1, dtype=np.int64)
        out[clears[:, :, 1]] = 1
        out[clears[:, :, 0]] = 0
        return out
    margin = np.where(clears, shares - thresholds[None], -np.inf)
    best = margin.argmax(axis=2)
    return np.where(clears.any(axis=2), best, -1).astype(np.int64)


def smooth_votes(votes: Any, neighbors: Any, k: int = 10, tau_pos: Any = AUTO, tau_neg: Any = AUTO,
                 cardinality: int | None = None, abstains: str = "ignore") -> np.ndarray:
    """Embroid's neighbourhood votes, one new column per (embedding space, source).

    Parameters
    ----------
    votes
        ``(n, m)`` int, classes ``0..C-1``, -1 = abstain.
    neighbors
        One ``(n, >= k)`` index array per embedding space, nearest first, the row itself excluded.
    k
        Neighbours per row (the paper's default is 10).
    tau_pos, tau_neg
        Thresholds (see :func:`resolve_thresholds`); ``"auto"`` is the paper's recommendation.
    cardinality
        Number of classes (default: the largest vote + 1).
    abstains
        ``"ignore"`` (default): a share is taken among the neighbours that voted and ``"auto"`` thresholds
        among the rows the source voted on; ``"count"``: abstaining neighbours count in the denominator
        (shares out of k) and ``"auto"`` thresholds are out of all rows. The same for sources that never
        abstain (the paper's setting); see docs/prompting.md for which to use with abstaining sources.

    Returns
    -------
    numpy.ndarray
        ``(n, m * spaces)`` int64, -1 = abstain; columns ordered space by space, source by source within.
    """
    return Embroid(k=k, tau_pos=tau_pos, tau_neg=tau_neg, abstains=abstains).smooth(votes, neighbors, cardinality)


class Embroid:
    """Embroid smoothing plus a label model over the original and the smoothed votes.

    Parameters
    ----------
    k
        Neighbours per row (paper default 10).
    tau_pos, tau_neg
        Thresholds of the neighbourhood vote; ``"auto"`` (default) sets each source's threshold for a class to
        that source's overall share of votes for the class, as the paper recommends. Floats in [0, 1] fix
        them; for more than 2 classes ``tau_pos`` is every class's threshold (or a list of C) and ``tau_neg``
        stays ``"auto"``.
    label_model
        A ``labelmodel.LabelModel`` method name (``"triplet"`` reproduces the paper's FlyingSquid; ``"auto"``,
        ``"majority"``, ``"dawid_skene"``, ...) or an unfitted label model object with ``fit`` /
        ``predict_proba`` / ``predict``.
    class_balance
        Prior P(Y) given to the label model: ``"uniform"`` (FlyingSquid's default, as in the paper),
        ``"estimate"`` (let the label model estimate it) or a sequence of C probabilities.
    include_original
        Give the label model the original vote columns too (the paper does).
    tie_break
        How ``fit_predict`` labels rows whose top classes tie: ``"random"`` (seeded by row), ``"abstain"``
        or ``"first"``.
    abstains
        How abstaining neighbours enter a share: ``"ignore"`` (left out) or ``"count"`` (shares out of k);
        see :func:`smooth_votes`.
    seed
        Seed of the label model.

    Attributes
    ----------
    cardinality_ : int
    thresholds_ : (m, C) thresholds used per source and class
    smoothed_ : (n, m * spaces) the neighbourhood votes of the last fit
    label_matrix_ : the matrix the label model was fitted on
    label_model_ : the fitted label model
    """

    def __init__(self, k: int = 10, tau_pos: Any = AUTO, tau_neg: Any = AUTO, label_model: Any = "triplet",
                 class_balance: Any = "uniform", include_original: bool = True, tie_break: str = "random",
                 abstains: str = "ignore", seed: int = 0) -> None:
        self.k = k
        self.tau_pos = tau_pos
        self.tau_neg = tau_neg
        self.abstains = abstains
        self.label_model = label_model
        self.class_balance = class_balance
        self.include_original = include_original
        self.tie_break = tie_break
        self.seed = seed

    def smooth(self, votes: Any, neighbors: Any, cardinality: int | None = None) -> np.ndarray:
        """The neighbourhood votes (see :func:`smooth_votes`); sets ``thresholds_`` and ``cardinality_``.

        Parameters
        ----------
        votes
            ``(n, m)`` int, classes ``0..C-1``, -1 = abstain.
        neighbors
            One ``(n, >= k)`` index array per embedding space (row itself excluded).
        cardinality
            Number of classes (default: the largest vote + 1).

        Returns
        -------
        numpy.ndarray
            ``(n, m * len(neighbors))`` int64, -1 = abstain; for each space, for each original column.
        """
        if self.abstains not in ABSTAINS:
            raise PromptingError(f"abstains must be one of {list(ABSTAINS)}, got {self.abstains!r}")
        array, c = check_votes(votes, cardinality)
        spaces = check_neighbors(neighbors, array.shape[0], self.k)
        self.thresholds_ = resolve_thresholds(array, c, self.tau_pos, self.tau_neg, self.abstains)
        self.cardinality_ = c
        columns = []
        for near in spaces:
            shares, voted = vote_shares(array, near, c, self.abstains)
            columns.append(neighborhood_votes(shares, voted, self.thresholds_))
        return np.concatenate(columns, axis=1)

    def fit(self, votes: Any, neighbors: Any, cardinality: int | None = None) -> Embroid:
        """Smooth the votes and fit the label model on original + smoothed columns (transductive).

        Parameters
        ----------
        votes, neighbors, cardinality
            As in :meth:`smooth`.

        Returns
        -------
        self
        """
        from labelmodel import LabelModel

        array, c = check_votes(votes, cardinality)
        self.smoothed_ = self.smooth(array, neighbors, c)
        matrix = np.concatenate([array, self.smoothed_], axis=1) if self.include_original else self.smoothed_
        model = self.label_model
        if isinstance(model, str):
            from labelmodel.model.auto import METHODS

            if model not in METHODS:
                raise PromptingError(f"label_model must be one of {list(METHODS)} or a label model, got {model!r}")
            model = LabelModel(method=model, cardinality=c, seed=self.seed)
        elif not (callable(getattr(model, "fit", None)) and callable(getattr(model, "predict_proba", None))):
            raise PromptingError(
                f"label_model must be a method name or an object with fit / predict_proba, got {type(model).__name__}"
            )
        prior = self._class_balance(c)
        if prior is None:
            model.fit(matrix)
        else:
            model.fit(matrix, class_balance=prior)
        self.label_matrix_ = matrix
        self.label_model_ = model
        logger.info("Embroid: %d rows, %d sources, %d smoothed columns, label model %s", array.shape[0],
                    array.shape[1], self.smoothed_.shape[1], getattr(model, "chosen_", type(model).__name__))
        return self

    def _class_balance(self, cardinality: int) -> np.ndarray | None:
        value = self.class_balance
        if isinstance(value, str):
            if value not in CLASS_BALANCES:
                raise PromptingError(f"class_balance must be one of {list(CLASS_BALANCES)} or C probabilities, "
                                     f"got {value!r}")
            return np.full(cardinality, 1.0 / cardinality) if value == "uniform" else None
        prior = np.asarray(value, dtype=np.float64)
        if prior.shape != (cardinality,) or (prior < 0).any() or not np.isclose(prior.sum(), 1.0):
            raise PromptingError(f"class_balance must be {cardinality} non-negative probabilities summing to 1, "
                                 f"got {value!r}")
        return prior

    def fit_predict_proba(self, votes: Any, neighbors: Any, cardinality: int | None = None) -> np.ndarray:
        """Fit (see :meth:`fit`) and return the label model's class probabilities, ``(n, C)``."""
        self.fit(votes, neighbors, cardinality)
        return np.asarray(self.label_model_.predict_proba(self.label_matrix_))

    def fit_predict(self, votes: Any, neighbors: Any, cardinality: int | None = None) -> np.ndarray:
        """Fit (see :meth:`fit`) and return labels, ``(n,)`` int64 (-1 only with ``tie_break="abstain"``)."""
        self.fit(votes, neighbors, cardinality)
        try:
            preds = self.label_model_.predict(self.label_matrix_, tie_break=self.tie_break)
        except TypeError:
            preds = self.label_model_.predict(self.label_matrix_)
        return np.asarray(preds, dtype=np.int64)

    def __repr__(self) -> str:
        return (f"Embroid(k={self.k}, tau_pos={self.tau_pos!r}, tau_neg={self.tau_neg!r}, "
                f"label_model={self.label_model!r}, class_balance={self.class_balance!r})")
