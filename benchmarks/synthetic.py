"""Synthetic label matrices with known ground truth, written chunk by chunk into compact int codes."""

from __future__ import annotations

import numpy as np

from labelmodel.matrix import compact_dtype


def make_label_matrix(
    n: int, m: int, k: int, seed: int = 0, chunk: int = 250_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Votes from conditionally independent LFs with accuracies in [0.55, 0.9] and coverage in [0.2, 0.9].

    A wrong vote picks one of the other k-1 classes uniformly. Classes are drawn from a mildly skewed prior.

    Returns
    -------
    L : (n, m) compact int codes, -1 = abstain
    y : (n,) true classes
    accuracies : (m,) true P(correct | vote)
    """
    rng = np.random.default_rng(seed)
    accuracies = rng.uniform(0.55, 0.9, size=m)
    coverage = rng.uniform(0.2, 0.9, size=m)
    prior = rng.dirichlet(np.full(k, 5.0))
    L = np.empty((n, m), dtype=compact_dtype(k))
    y = np.empty(n, dtype=np.int32 if k > 127 else np.int8)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        yc = rng.choice(k, size=rows, p=prior)
        votes_mask = rng.random((rows, m), dtype=np.float32) < coverage[None, :].astype(np.float32)
        correct = rng.random((rows, m), dtype=np.float32) < accuracies[None, :].astype(np.float32)
        offset = rng.integers(1, k, size=(rows, m), dtype=np.int32) if k > 2 else 1
        wrong = (yc[:, None] + offset) % k
        block = np.where(correct, yc[:, None], wrong)
        block = np.where(votes_mask, block, -1)
        L[start : start + rows] = block
        y[start : start + rows] = yc
    return L, y, accuracies
