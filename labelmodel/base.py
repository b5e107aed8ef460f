"""The estimator API every label model shares: fit, predict_proba, predict, score, save and load."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelmodel.errors import LabelModelError
from labelmodel.matrix import ABSTAIN, LabelMatrix, as_label_matrix, check_gold
from labelmodel.metrics import score_predictions

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[LabelModelBase]] = {}
TIE_BREAKS = ("random", "abstain", "first")


class LabelModelBase:
    """Base class of label models: turns a label matrix L (n x m, -1 = abstain) into class probabilities.

    Subclasses take hyper-parameters in ``__init__`` only, learn in ``_fit`` and set attributes that end in
    ``_``; they produce log joint scores (log P(y) + log P(votes | y), up to a per-row constant) for chunks.
    """

    _learned_arrays: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __init__(self, cardinality: int | None = None, seed: int = 0) -> None:
        self.cardinality = cardinality
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """The constructor's hyper-parameters and their current values."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def fit(
        self,
        L: object,
        Y_dev: object | None = None,
        class_balance: Sequence[float] | np.ndarray | None = None,
        L_dev: object | None = None,
    ) -> LabelModelBase:
        """Learn the model's parameters from the votes alone.

        Parameters
        ----------
        L : array-like, scipy.sparse or DataFrame, shape (n, m)
            Votes, class index or -1 for abstain.
        Y_dev : array-like, optional
            Gold labels of a small dev set. Alone, they estimate the class balance; with ``L_dev`` (the dev
            rows' votes) models that can use supervision (e.g. ``LabelModel(method="auto")``) use them.
        class_balance : sequence of k floats, optional
            Prior P(Y); overrides the estimate from ``Y_dev``.
        L_dev : array-like, optional
            Votes of the dev rows, same LFs as L.

        Returns
        -------
        self
        """
        lm = as_label_matrix(L, self.cardinality)
        k = lm.cardinality
        self.cardinality_ = k
        self.n_lfs_ = lm.m
        self.lf_names_ = list(lm.lf_names)
        dev = None
        if L_dev is not None:
            if Y_dev is None:
                raise LabelModelError("L_dev was given without Y_dev; pass the dev rows' gold labels too")
            dev_lm = as_label_matrix(L_dev, k)
            if dev_lm.m != lm.m:
                raise LabelModelError(
                    f"L_dev has {dev_lm.m} LFs but L has {lm.m}; both must hold the same labeling functions"
                )
            dev = (dev_lm, check_gold(Y_dev, dev_lm.n, k, "Y_dev"))
        prior = self._resolve_class_balance(class_balance, Y_dev, k, dev)
        self._fit(lm, prior, dev)
        return self

    def _fit_validated(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        """Fit on an already validated matrix (used by models that fit other models)."""
        self.cardinality_ = lm.cardinality
        self.n_lfs_ = lm.m
        self.lf_names_ = list(lm.lf_names)
        self._fit(lm, class_balance, dev)

    def _resolve_class_balance(
        self,
        class_balance: object | None,
        Y_dev: object | None,
        k: int,
        dev: tuple[LabelMatrix, np.ndarray] | None,
    ) -> np.ndarray | None:
        if class_balance is not None:
            p = np.asarray(class_balance, dtype=np.float64).reshape(-1)
            if p.shape[0] != k or np.isnan(p).any() or (p < 0).any() or p.sum() <= 0:
                raise LabelModelError(
                    f"class_balance must be {k} non-negative numbers with a positive sum, got {class_balance!r}"
                )
            p = np.clip(p / p.sum(), 1e-6, None)
            return p / p.sum()
        if Y_dev is not None:
            y = dev[1] if dev is not None else np.asarray(Y_dev)
            y = check_gold(y, len(y), k, "Y_dev")
            y = y[y != ABSTAIN]
            counts = np.bincount(y, minlength=k).astype(np.float64) + 1.0
            return counts / counts.sum()
        return None

    def _fit(self, lm: LabelMatrix, class_balance: np.ndarray | None, dev: tuple | None) -> None:
        raise NotImplementedError

    def _log_joint_chunks(self, lm: LabelMatrix) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def _check_fitted(self, L: object) -> LabelMatrix:
        if not hasattr(self, "cardinality_"):
            raise LabelModelError(f"{type(self).__name__} is not fitted yet; call fit(L) first")
        lm = as_label_matrix(L, self.cardinality_)
        if lm.m != self.n_lfs_:
            raise LabelModelError(
                f"L has {lm.m} LFs but the model was fitted on {self.n_lfs_}; pass votes of the same LFs"
            )
        return lm

    def predict_proba(self, L: object, dtype: type = np.float64) -> np.ndarray:
        """Class probabilities P(Y | votes) for every row, shape (n, k).

        Parameters
        ----------
        L : array-like, shape (n, m)
        dtype : numpy float type of the result (float32 halves memory for large n * k).
        """
        lm = self._check_fitted(L)
        out = np.empty((lm.n, self.cardinality_), dtype=dtype)
        for start, scores in self._log_joint_chunks(lm):
            out[start : start + scores.shape[0]] = softmax_rows(scores)
        return out

    def predict(
        self, L: object, tie_break: str = "random", tol: float = 1e-5, return_probs: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Most probable class per row.

        Ties (probabilities within ``tol`` of the maximum, e.g. a row where no LF voted under majority vote)
        are broken by ``tie_break``: "random" picks deterministically by a hash of the row position (the
        rule of Snorkel's and WRENCH's ``probs_to_preds``, so figures match theirs), "abstain" returns -1,
        "first" takes the lowest class index.
        """
        if tie_break not in TIE_BREAKS:
            raise LabelModelError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
        probs = self.predict_proba(L)
        preds = probs_to_preds(probs, tie_break=tie_break, tol=tol)
        return (preds, probs) if return_probs else preds

    def score(
        self,
        L: object,
        Y: object,
        metrics: Sequence[str] = ("accuracy",),
        tie_break: str = "random",
    ) -> dict[str, float]:
        """Score predictions on ALL rows that have a gold label (gold -1 rows are skipped).

        A row the model abstains on (``tie_break="abstain"``) counts as wrong for accuracy and as a miss
        for F1 / recall. See :func:`labelmodel.metrics.score_predictions` for the metric names.
        """
        lm = self._check_fitted(L)
        y = check_gold(Y, lm.n, self.cardinality_)
        preds, probs = self.predict(lm, tie_break=tie_break, return_probs=True)
        return score_predictions(y, preds, probs, metrics, self.cardinality_)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as an .npz of arrays plus JSON metadata (no pickle); atomic via rename."""
        if not hasattr(self, "cardinality_"):
            raise LabelModelError("only a fitted model can be saved; call fit(L) first")
        meta = {
            "class": type(self).__name__,
            "params": self.get_params(),
            "cardinality_": int(self.cardinality_),
            "n_lfs_": int(self.n_lfs_),
            "lf_names_": list(self.lf_names_),
            "extra_": self._extra_state(),
        }
        arrays = {
            name: np.asarray(getattr(self, name))
            for name in self._learned_arrays
            if getattr(self, name, None) is not None
        }
        arrays["__meta__"] = np.frombuffer(json.dumps(meta, default=_json_default).encode(), dtype=np.uint8)
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _restore_extra_state(self, extra: dict[str, Any]) -> None:
        return None

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelModelBase:
        """Read a model written by :meth:`save`; returns an instance of the saved class."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["__meta__"]).decode())
                arrays = {name: data[name] for name in data.files if name != "__meta__"}
        except (OSError, KeyError, ValueError) as err:
            raise LabelModelError(f"cannot read a label model from {path}: {err}") from err
        model_cls = _REGISTRY.get(meta["class"])
        if model_cls is None:
            raise LabelModelError(f"{path} holds an unknown model class {meta['class']!r}")
        if cls is not LabelModelBase and not issubclass(model_cls, cls):
            raise LabelModelError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
        model = model_cls(**meta["params"])
        model.cardinality_ = meta["cardinality_"]
        model.n_lfs_ = meta["n_lfs_"]
        model.lf_names_ = meta["lf_names_"]
        for name, value in arrays.items():
            setattr(model, name, value)
        model._restore_extra_state(meta.get("extra_", {}))
        return model


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of log scores, in place where possible; k = 2 takes the logistic shortcut."""
    if scores.shape[1] == 2:
        with np.errstate(over="ignore"):
            p1 = 1.0 / (1.0 + np.exp(scores[:, 0] - scores[:, 1]))
        return np.stack([1.0 - p1, p1], axis=1)
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


def _json_default(obj: object) -> object:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in model metadata")


def _row_hash(i: int) -> int:
    return int(hashlib.sha1(str(i).encode("utf-8")).hexdigest(), 16)


def probs_to_preds(probs: np.ndarray, tie_break: str = "random", tol: float = 1e-5) -> np.ndarray:
    """Argmax per row with explicit tie handling (see :meth:`LabelModelBase.predict`)."""
    if tie_break not in TIE_BREAKS:
        raise LabelModelError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    preds = probs.argmax(axis=1).astype(np.int64)
    if probs.shape[1] < 2 or tie_break == "first":
        return preds
    best = probs[np.arange(probs.shape[0]), preds]
    near = np.abs(probs - best[:, None]) < tol
    tied_rows = np.flatnonzero(near.sum(axis=1) > 1)
    if tie_break == "abstain":
        preds[tied_rows] = ABSTAIN
        return preds
    for i in tied_rows:
        options = np.flatnonzero(near[i])
        preds[i] = options[_row_hash(int(i)) % len(options)]
    return preds
