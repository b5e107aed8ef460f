"""Learned and declared LF dependencies change how the label models count correlated sources."""

import numpy as np

from labelmodel import DawidSkene, Triplet


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


def test_learned_dependencies_feed_the_label_model():
    L, y = votes_with_copies(2)
    model = Triplet(dependencies="learn").fit(L)
    assert model.dependencies_.tolist() == [[0, 8], [3, 9]]
    np.testing.assert_allclose(model.lf_weights_[[0, 8, 3, 9]], 0.5)
    assert model.score(L, y)["accuracy"] > 0.85


def test_dawid_skene_learns_the_same_edges():
    L, _ = votes_with_copies(3)
    model = DawidSkene(cardinality=3, dependencies="learn").fit(L)
    assert model.dependencies_.tolist() == [[0, 8], [3, 9]]
