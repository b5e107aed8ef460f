"""Nearest neighbours: scikit-learn and faiss agree, the row itself is never listed, bad input is named."""

from __future__ import annotations

import numpy as np
import pytest

from prompting import neighbors as nb
from prompting.errors import PromptingError
from prompting.neighbors import choose_backend, drop_self, nearest_neighbors


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, d))
    return centers[rng.integers(0, 8, n)] + 0.5 * rng.normal(size=(n, d))


def brute_force(x: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        dist = -(u @ u.T)
    else:
        dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_backends_agree_with_brute_force(metric):
    pytest.importorskip("faiss")
    x = clustered(600)
    expected = brute_force(x, 10, metric)
    for backend in ("sklearn", "faiss"):
        got = nearest_neighbors(x, 10, metric=metric, backend=backend)
        assert got.shape == (600, 10) and got.dtype == np.int64
        assert (got != np.arange(600)[:, None]).all()
        np.testing.assert_array_equal(got, expected, err_msg=backend)


def test_backends_agree_on_real_sentence_embeddings(shared_data):
    """MiniLM embeddings of real LegalBench sentences: both exact backends return the same neighbour sets."""
    pytest.importorskip("faiss")
    import pandas as pd

    from prompting.embedders import SentenceEmbedder

    texts = pd.read_csv(shared_data / "legalbench" / "overruling" / "test.tsv", sep="\t")["text"][:80]
    x = SentenceEmbedder(max_length=64).encode(list(texts))
    a = nearest_neighbors(x, 10, backend="sklearn")
    b = nearest_neighbors(x, 10, backend="faiss")
    same = np.mean([set(r) == set(s) for r, s in zip(a, b, strict=True)])
    assert same >= 0.99, same  # differences only where two candidates are equidistant to float precision


def test_ivf_recall_and_determinism():
    pytest.importorskip("faiss")
    x = clustered(3000, d=48)
    exact = nearest_neighbors(x, 10, backend="faiss")
    approx = nearest_neighbors(x, 10, backend="ivf")
    recall = np.mean([len(set(r) & set(s)) / 10 for r, s in zip(exact, approx, strict=True)])
    assert recall > 0.95, recall
    np.testing.assert_array_equal(approx, nearest_neighbors(x, 10, backend="ivf"))


def test_duplicates_never_list_the_row_itself():
    x = np.repeat(clustered(50), 3, axis=0)  # every point three times: self ties with its copies
    for backend in ("sklearn", "faiss") if nb.faiss_available() else ("sklearn",):
        got = nearest_neighbors(x, 4, backend=backend)
        assert (got != np.arange(150)[:, None]).all()
        assert len({tuple(sorted(r[:2])) for r in got[:3]}) >= 1
        # the two copies of each point are its two nearest neighbours
        for i in range(150):
            assert set(got[i, :2]) == {3 * (i // 3) + j for j in range(3)} - {i}


def test_drop_self_keeps_order():
    found = np.array([[0, 5, 6], [7, 1, 8], [9, 10, 11]])
    np.testing.assert_array_equal(drop_self(found, 2), [[5, 6], [7, 8], [9, 10]])


def test_auto_choice(monkeypatch):
    assert choose_backend(100) == "sklearn"
    if nb.faiss_available():
        assert choose_backend(nb.FAISS_MIN_ROWS) == "faiss"
        assert choose_backend(nb.IVF_MIN_ROWS) == "ivf"
    monkeypatch.setattr(nb, "faiss_available", lambda: False)
    assert choose_backend(10 * nb.IVF_MIN_ROWS) == "sklearn"
    with pytest.raises(PromptingError, match="pip install faiss-cpu"):
        choose_backend(100, "faiss")


def test_errors():
    x = clustered(5)
    with pytest.raises(PromptingError, match="only 5 rows"):
        nearest_neighbors(x, 5)
    with pytest.raises(PromptingError, match="positive integer"):
        nearest_neighbors(x, 0)
    with pytest.raises(PromptingError, match="metric"):
        nearest_neighbors(x, 2, metric="manhattan")
    with pytest.raises(PromptingError, match="backend"):
        nearest_neighbors(x, 2, backend="annoy")
    with pytest.raises(PromptingError, match=r"\(n, d\)"):
        nearest_neighbors(np.ones(5), 2)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(PromptingError, match="finite"):
        nearest_neighbors(bad, 2)
