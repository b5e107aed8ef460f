"""Loaders for label-matrix data sets on disk (WRENCH's JSON layout)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelmodel.errors import LabelModelError


@dataclass
class WeakLabelSplit:
    """One split of a weak-supervision data set: votes L (n x m), gold y (n,), texts and class names."""

    L: np.ndarray
    y: np.ndarray
    texts: list[str]
    label_names: list[str]

    @property
    def cardinality(self) -> int:
        return len(self.label_names)


def load_wrench(folder: str | Path, split: str) -> WeakLabelSplit:
    """Read ``{split}.json`` (id -> {"label", "weak_labels", "data": {"text"}}) and ``label.json``."""
    folder = Path(folder)
    path = folder / f"{split}.json"
    if not path.exists():
        raise LabelModelError(f"{path} does not exist; expected WRENCH's layout ({{train,valid,test}}.json)")
    with open(path, encoding="utf-8") as fh:
        records = json.load(fh)
    with open(folder / "label.json", encoding="utf-8") as fh:
        names = json.load(fh)
    label_names = [names[str(i)] for i in range(len(names))]
    rows = list(records.values())
    L = np.array([r["weak_labels"] for r in rows], dtype=np.int16)
    y = np.array([r["label"] for r in rows], dtype=np.int64)
    texts = [str(r.get("data", {}).get("text", "")) for r in rows]
    return WeakLabelSplit(L=L, y=y, texts=texts, label_names=label_names)
