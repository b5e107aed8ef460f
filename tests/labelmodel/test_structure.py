"""Dependency learning recovers LFs that copy each other, and the models use the edges."""

import numpy as np
import pytest

from labelmodel import LabelModelError, Triplet
from labelmodel.structure import dependency_components, dependency_scores, learn_dependencies


def votes_with_copies(k, n=5000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)

    def lf(acc, cov=0.8):
        vote = np.where(rng.random(n) < acc, y, (y + rng.integers(1, k, n)) % k)
        return np.where(rng.random(n) < cov, vote, -1)

    cols = [lf(a) for a in rng.uniform(0.6, 0.85, 8)]
    cols.append(np.where(rng.random(n) < 0.9, cols[0], lf(0.7)))  # LF 8 mostly copies LF 0
    cols.append(np.where(rng.random(n) < 0.9, cols[3], lf(0.7)))  # LF 9 mostly copies LF 3
    return np.stack(cols, axis=1), y


@pytest.mark.parametrize("k", [2, 3])
def test_copied_lfs_are_found(k):
    L, _ = votes_with_copies(k)
    assert learn_dependencies(L, k) == [(0, 8), (3, 9)]


def test_independent_lfs_give_no_edges():
    L, _ = votes_with_copies(2)
    assert learn_dependencies(L[:, :8], 2) == []


def test_degenerate_lfs_do_not_crash():
    L, _ = votes_with_copies(2)
    L = L.copy()
    L[:, 1] = 1
    L[:, 2] = -1
    scores = dependency_scores(L, 2)
    assert np.isfinite(scores).all()
    assert scores[2].max() == 0.0 or scores[2].max() < 0.25
    assert learn_dependencies(L[:, :2], 2) == []


def test_components_group_connected_lfs():
    assert dependency_components([(0, 1), (1, 2), (4, 5)], 6) == [[0, 1, 2], [3], [4, 5]]


def test_learned_dependencies_feed_the_label_model():
    L, y = votes_with_copies(2)
    model = Triplet(dependencies="learn").fit(L)
    assert model.dependencies_.tolist() == [[0, 8], [3, 9]]
    np.testing.assert_allclose(model.lf_weights_[[0, 8, 3, 9]], 0.5)
    assert model.score(L, y)["accuracy"] > 0.85


def test_bad_input_is_rejected():
    with pytest.raises(LabelModelError, match="NaN"):
        learn_dependencies(np.array([[0.0, np.nan, 1.0]]))


def test_runs_on_real_wrench_votes(shared_data):
    from labelmodel.datasets import load_wrench

    train = load_wrench(shared_data / "wrench" / "youtube", "train")
    edges = learn_dependencies(train.L, train.cardinality)
    assert all(0 <= i < j < train.L.shape[1] for i, j in edges)
    assert len(edges) < train.L.shape[1] * (train.L.shape[1] - 1) // 4
