"""Scoring of label-model predictions on every gold-labeled row (abstains count as misses)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labelmodel.errors import LabelModelError
from labelmodel.matrix import ABSTAIN

METRICS = ("accuracy", "f1", "f1_macro", "f1_micro", "precision", "recall", "coverage", "brier", "log_loss")


def _per_class(y: np.ndarray, preds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.bincount(y[preds == y], minlength=k).astype(np.float64)
    predicted = np.bincount(preds[preds != ABSTAIN], minlength=k).astype(np.float64)
    actual = np.bincount(y, minlength=k).astype(np.float64)
    return tp, predicted, actual


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def score_predictions(
    y: np.ndarray,
    preds: np.ndarray,
    probs: np.ndarray | None,
    metrics: Sequence[str],
    cardinality: int,
) -> dict[str, float]:
    """Compute the named metrics over rows whose gold label is not -1.

    "f1", "precision" and "recall" are of the positive class 1 when k = 2 and macro-averaged otherwise;
    "f1_macro" and "f1_micro" are always averaged. "coverage" is the fraction of rows not abstained on;
    "brier" and "log_loss" score the probabilities.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise LabelModelError(f"unknown metrics {unknown}; choose from {METRICS}")
    keep = y != ABSTAIN
    y, preds = y[keep], preds[keep]
    if y.size == 0:
        raise LabelModelError("no row has a gold label (all are -1); nothing to score")
    k = cardinality
    tp, predicted, actual = _per_class(y, preds, k)
    precision_c = _safe_div(tp, predicted)
    recall_c = _safe_div(tp, actual)
    f1_c = _safe_div(2 * precision_c * recall_c, precision_c + recall_c)
    present = (actual > 0) | (predicted > 0)
    out: dict[str, float] = {}
    for name in metrics:
        if name == "accuracy":
            out[name] = float(np.mean(preds == y))
        elif name in ("f1", "precision", "recall"):
            values = {"f1": f1_c, "precision": precision_c, "recall": recall_c}[name]
            out[name] = float(values[1]) if k == 2 else float(values[present].mean())
        elif name == "f1_macro":
            out[name] = float(f1_c[present].mean())
        elif name == "f1_micro":
            total_tp, total_pred = tp.sum(), predicted.sum()
            p = total_tp / total_pred if total_pred else 0.0
            r = total_tp / y.size
            out[name] = float(2 * p * r / (p + r)) if p + r else 0.0
        elif name == "coverage":
            out[name] = float(np.mean(preds != ABSTAIN))
        else:
            if probs is None:
                raise LabelModelError(f"metric {name!r} needs probabilities")
            p = probs[keep]
            if name == "brier":
                onehot = np.zeros_like(p)
                onehot[np.arange(y.size), y] = 1.0
                out[name] = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
            else:
                out[name] = float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-12, None))))
    return out
