"""LabelModel(method="auto"): choose a label model for the data at hand and say why."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import numpy as np

from labelmodel.base import LabelModelBase
from labelmodel.errors import LabelModelError
from labelmodel.matrix import LabelMatrix
from labelmodel.metrics import score_predictions
from labelmodel.model.dawid_skene import DawidSkene
from labelmodel.model.majority import MajorityVote, WeightedMajorityVote
from labelmodel.model.matrix_completion import MAX_WIDTH, MatrixCompletion
from labelmodel.model.triplet import Triplet

logger = logging.getLogger(__name__)

METHODS = ("auto", "majority", "weighted_majority", "dawid_skene", "dawid_skene_diagonal", "matrix_completion",
           "triplet")


class LabelModel(LabelModelBase):
    """A label model chosen by name, or chosen for you with ``method="auto"``.

    The "auto" rule, without gold labels:

    * fewer than 3 LFs: majority vote (no latent-variable model is identifiable), with a warning;
    * otherwise the triplet method: its closed-form estimates have no local optima and no permutation
      ambiguity, and it needs one pass over the data;
    * unless fewer than half of the LFs can be identified by it (an LF needs two others that it overlaps
      on enough rows and that overlap each other): then the model would rest mostly on assumed
      accuracies, and majority vote, which assumes the same for every LF openly, is used instead.

    With a dev set (``fit(L, Y_dev=..., L_dev=...)``) every candidate is fitted on L and the one with the
    best dev accuracy is kept. Either way ``chosen_`` names the model and ``reason_`` says why.

    Parameters
    ----------
    method : one of "auto", "majority", "weighted_majority", "dawid_skene", "dawid_skene_diagonal",
        "matrix_completion", "triplet"
    cardinality : int, optional
    dependencies : None | "learn" | list of (i, j)
        Passed to the models that use LF dependencies.
    dev_metric : str
        Metric (see :func:`labelmodel.metrics.score_predictions`) that picks the model on a dev set.
    device : str
        Torch device for matrix completion.
    seed : int
    """

    _learned_arrays = ()

    def __init__(
        self,
        method: str = "auto",
        cardinality: int | None = None,
        dependencies: object = None,
        dev_metric: str = "accuracy",
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(cardinality=cardinality, seed=seed)
        self.method = method
        self.dev_metric = dev_metric
        self.dependencies = dependencies
        self.device = device

    def _candidate(self, name: str, k: int) -> LabelModelBase:
        deps, seed = self.dependencies, self.seed
        if name == "majority":
            return MajorityVote(cardinality=k, seed=seed)
        if name == "weighted_majority":
            return WeightedMajorityVote(cardinality=k, seed=seed)
        if name == "dawid_skene":
            return DawidSkene(cardinality=k, dependencies=deps, seed=seed)
        if name == "dawid_skene_diagonal":
            return DawidSkene(cardinality=k, confusion="diagonal", dependencies=deps, seed=seed)
        if name == "matrix_completion":
            return MatrixCompletion(cardinality=k, dependencies=deps, device=self.device, seed=seed)
        if name == "triplet":
            return Triplet(cardinality=k, dependencies=deps, seed=seed)
        raise LabelModelError(f"method must be one of {METHODS}, got {name!r}")

    def _fit(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        if self.method not in METHODS:
            raise LabelModelError(f"method must be one of {METHODS}, got {self.method!r}")
        k, m = lm.cardinality, lm.m
        if self.method != "auto":
            name, reason = self.method, f"method={self.method!r} was asked for"
        elif m < 3:
            name = "majority"
            reason = f"only {m} LF(s): a latent-variable model needs at least 3, so majority vote is used"
            warnings.warn(f"LabelModel: {reason}", UserWarning, stacklevel=3)
        elif dev is not None:
            name, reason = self._select_on_dev(lm, class_balance, dev)
        else:
            name, reason = self._select_without_gold(lm, class_balance)
        model = getattr(self, "_fitted_triplet", None) if name == "triplet" else None
        self.__dict__.pop("_fitted_triplet", None)
        if model is None:
            model = self._candidate(name, k)
            model._fit_validated(lm, class_balance, dev)
        self.model_ = model
        self.chosen_ = name
        self.reason_ = reason
        logger.info("LabelModel chose %s: %s", name, reason)

    def _select_without_gold(self, lm: LabelMatrix, class_balance: np.ndarray | None) -> tuple[str, str]:
        triplet = self._candidate("triplet", lm.cardinality)
        triplet._fit_validated(lm, class_balance, None)
        share = float(np.mean(triplet.identified_))
        self._fitted_triplet = triplet
        if share < 0.5:
            return "majority", (
                f"{lm.m} LFs, {lm.cardinality} classes, no dev set: only {share:.0%} of the LFs overlap enough "
                "to be identified by the triplet method, so majority vote"
            )
        return "triplet", (
            f"{lm.m} LFs, {lm.cardinality} classes, no dev set: the triplet method identifies {share:.0%} of "
            "the LFs (closed form, no local optima)"
        )

    def _select_on_dev(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple) -> tuple[str, str]:
        dev_lm, y_dev = dev
        k = lm.cardinality
        names = ["majority", "weighted_majority", "triplet", "dawid_skene_diagonal"]
        if lm.m * k <= 512:
            names.append("dawid_skene")
        if lm.m * k <= MAX_WIDTH // 4:
            names.append("matrix_completion")
        scores = {}
        for name in names:
            model = self._candidate(name, k)
            model._fit_validated(lm, class_balance, dev)
            preds = model.predict(dev_lm)
            scores[name] = score_predictions(y_dev, preds, None, (self.dev_metric,), k)[self.dev_metric]
        self.dev_scores_ = scores
        best = max(names, key=lambda n: (scores[n], -names.index(n)))
        summary = ", ".join(f"{n}={s:.3f}" for n, s in scores.items())
        return best, f"best dev {self.dev_metric} among the candidates ({summary})"

    def _log_joint_chunks(self, lm: LabelMatrix) -> Iterator[tuple[int, np.ndarray]]:
        return self.model_._log_joint_chunks(lm)

    def save(self, path: object) -> None:
        """Saves the chosen model itself (``LabelModelBase.load`` returns that model)."""
        if not hasattr(self, "model_"):
            raise LabelModelError("only a fitted model can be saved; call fit(L) first")
        self.model_.save(path)

    @property
    def class_balance_(self) -> np.ndarray:
        return self.model_.class_balance_

    @property
    def accuracies_(self) -> np.ndarray:
        return self.model_.accuracies_ if hasattr(self.model_, "accuracies_") else np.full(self.n_lfs_, np.nan)
