"""Label models on small exact cases, edge cases and save/load round trips."""

import itertools
import warnings

import numpy as np
import pytest

from labelmodel import (
    DawidSkene,
    LabelModel,
    LabelModelBase,
    LabelModelError,
    MajorityVote,
    MatrixCompletion,
    Triplet,
    WeightedMajorityVote,
)


def population(accuracies, k=2, scale=20_000):
    """Rows reproducing exactly the joint distribution of a symmetric model with uniform classes.

    Every LF votes on every row, right with probability a_j, else one of the other classes uniformly.
    """
    rows, gold = [], []
    m = len(accuracies)
    for y in range(k):
        for votes in itertools.product(range(k), repeat=m):
            p = 1.0 / k
            for a, v in zip(accuracies, votes, strict=True):
                p *= a if v == y else (1 - a) / (k - 1)
            count = int(round(p * scale))
            rows.extend([votes] * count)
            gold.extend([y] * count)
    return np.array(rows, dtype=np.int64), np.array(gold)


TRUE_ACC = [0.9, 0.8, 0.7, 0.65]


@pytest.mark.parametrize("k", [2, 3])
def test_triplet_recovers_true_accuracies_in_closed_form(k):
    L, _ = population(TRUE_ACC, k=k)
    model = Triplet(cardinality=k).fit(L)
    np.testing.assert_allclose(model.triplet_accuracy_, TRUE_ACC, atol=0.01)


@pytest.mark.parametrize("confusion", ["full", "diagonal"])
def test_dawid_skene_recovers_true_accuracies(confusion):
    L, y = population(TRUE_ACC, k=3)
    model = DawidSkene(cardinality=3, confusion=confusion).fit(L)
    np.testing.assert_allclose(model.accuracies_, TRUE_ACC, atol=0.02)
    np.testing.assert_allclose(model.class_balance_, [1 / 3] * 3, atol=0.02)


def test_matrix_completion_recovers_true_accuracies():
    L, _ = population(TRUE_ACC, k=2)
    model = MatrixCompletion(cardinality=2, n_epochs=2000, lr=0.01, l2=0.0).fit(L)
    np.testing.assert_allclose(model.accuracies_, TRUE_ACC, atol=0.03)


@pytest.mark.parametrize("model", [DawidSkene(), Triplet(), MatrixCompletion(), LabelModel()])
def test_learned_models_beat_majority_vote_when_lfs_differ(model):
    L, y = population([0.95, 0.6, 0.6, 0.6, 0.6], k=2)
    mv = MajorityVote().fit(L).score(L, y)["accuracy"]
    ours = model.fit(L).score(L, y)["accuracy"]
    assert ours > mv + 0.02


def test_majority_vote_counts_and_ties():
    L = np.array([[0, 0, 1], [1, -1, -1], [-1, -1, -1], [0, 1, -1]])
    mv = MajorityVote(cardinality=2).fit(L)
    np.testing.assert_allclose(mv.predict_proba(L), [[2 / 3, 1 / 3], [0, 1], [0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(mv.predict(L, tie_break="abstain"), [0, 1, -1, -1])
    np.testing.assert_array_equal(mv.predict(L, tie_break="first"), [0, 1, 0, 0])
    again = mv.predict(L, tie_break="random")
    np.testing.assert_array_equal(again, mv.predict(L, tie_break="random"))
    scores = mv.score(L, np.array([0, 1, 0, 1]), metrics=("accuracy", "coverage"), tie_break="abstain")
    assert scores == {"accuracy": 0.5, "coverage": 0.5}


def test_weighted_majority_vote_uses_weights_and_dev_accuracy():
    L = np.array([[0, 1, 1], [0, 1, 1]])
    assert WeightedMajorityVote(weights=[3, 1, 1]).fit(L).predict(L).tolist() == [0, 0]
    L_dev = np.array([[0, 1, 1]] * 10)
    learned = WeightedMajorityVote().fit(L, Y_dev=np.zeros(10, dtype=int), L_dev=L_dev)
    assert learned.weights_[0] > learned.weights_[1] == learned.weights_[2] == 0
    with pytest.raises(LabelModelError, match="non-negative"):
        WeightedMajorityVote(weights=[1, -1, 1]).fit(L)


MODELS = [
    MajorityVote,
    WeightedMajorityVote,
    DawidSkene,
    lambda **kw: DawidSkene(confusion="diagonal", **kw),
    Triplet,
    lambda **kw: MatrixCompletion(n_epochs=50, **kw),
    LabelModel,
]


@pytest.mark.parametrize("make", MODELS)
def test_edge_cases_give_finite_probabilities(make):
    rng = np.random.default_rng(0)
    L = rng.integers(-1, 3, size=(300, 6))
    L[:20] = -1  # rows nobody votes on
    L[:, 1] = 2  # a constant LF
    L[:, 2] = -1  # an LF that never votes
    y = rng.integers(0, 3, size=300)
    L[:, 3] = (y + 1) % 3  # an LF always wrong: worse than random
    model = make(cardinality=3).fit(L)
    probs = model.predict_proba(L)
    assert probs.shape == (300, 3)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("make", [DawidSkene, Triplet, LabelModel])
def test_many_lfs_and_many_classes(make):
    rng = np.random.default_rng(1)
    n, m = 400, 2000
    y = rng.integers(0, 2, size=n)
    vote = rng.random((n, m)) < 0.05
    right = rng.random((n, m)) < 0.7
    L = np.where(vote, np.where(right, y[:, None], 1 - y[:, None]), -1)
    probs = make(cardinality=2).fit(L).predict_proba(L)
    assert np.isfinite(probs).all()
    k = 1000
    yk = rng.integers(0, k, size=500)
    Lk = np.where(rng.random((500, 8)) < 0.8, yk[:, None], rng.integers(0, k, size=(500, 8)))
    model = DawidSkene(cardinality=k, confusion="diagonal") if make is DawidSkene else make(cardinality=k)
    model.fit(Lk)
    preds = model.predict(Lk)
    assert (preds == yk).mean() > 0.95


def test_fewer_than_three_lfs_degrades_gracefully():
    L = np.array([[0, 1], [1, 1], [0, -1], [1, 0]])
    with pytest.warns(UserWarning, match="at least 3"):
        model = LabelModel().fit(L)
    assert model.chosen_ == "majority"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for make in (DawidSkene, Triplet):
            assert np.isfinite(make().fit(L).predict_proba(L)).all()
    single = np.array([[0], [1], [-1]])
    assert np.isfinite(Triplet().fit(single).predict_proba(single)).all()


def test_auto_uses_a_dev_set_and_explains_its_choice():
    L, y = population([0.95, 0.6, 0.6, 0.6, 0.6], k=2, scale=2000)
    model = LabelModel().fit(L, Y_dev=y, L_dev=L)
    assert model.chosen_ in model.dev_scores_
    assert model.dev_scores_[model.chosen_] == max(model.dev_scores_.values())
    assert "dev accuracy" in model.reason_
    assert LabelModel().fit(L).reason_.startswith("5 LFs")


@pytest.mark.parametrize("make", MODELS)
def test_save_load_round_trip(tmp_path, make):
    rng = np.random.default_rng(2)
    L = rng.integers(-1, 2, size=(200, 5))
    model = make(cardinality=2).fit(L)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = LabelModelBase.load(path)
    np.testing.assert_allclose(loaded.predict_proba(L), model.predict_proba(L))
    with open(path, "rb") as fh:
        assert b"pickle" not in fh.read()


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(LabelModelError, match="cannot read"):
        LabelModelBase.load(bad)


def test_class_balance_is_validated_and_used():
    L, y = population(TRUE_ACC, k=2, scale=2000)
    with pytest.raises(LabelModelError, match="class_balance"):
        Triplet().fit(L, class_balance=[0.5, 0.2, 0.3])
    model = Triplet().fit(L, class_balance=[0.9, 0.1])
    np.testing.assert_allclose(model.class_balance_, [0.9, 0.1])


def test_declared_dependencies_count_a_copied_lf_once():
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.integers(0, 2, size=n)

    def lf(acc):
        return np.where(rng.random(n) < acc, y, 1 - y)

    weak = lf(0.62)
    L = np.stack([lf(0.85), lf(0.8), lf(0.75), weak, weak, weak, weak, weak], axis=1)
    plain = Triplet(min_overlap=10).fit(L)
    edges = [(3, 4), (4, 5), (5, 6), (6, 7)]
    aware = Triplet(dependencies=edges).fit(L)
    np.testing.assert_allclose(aware.lf_weights_[3:], 0.2)
    assert aware.score(L, y)["accuracy"] > plain.score(L, y)["accuracy"] + 0.02
    with pytest.raises(LabelModelError, match="invalid"):
        Triplet(dependencies=[(0, 0)]).fit(L)


def test_full_confusion_refuses_tables_too_large_and_names_the_fix():
    L = np.random.default_rng(4).integers(-1, 1000, size=(50, 100))
    with pytest.raises(LabelModelError, match="confusion='diagonal'"):
        DawidSkene(cardinality=1000).fit(L)
    assert np.isfinite(DawidSkene(cardinality=1000, confusion="diagonal").fit(L).predict_proba(L)).all()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_matrix_completion_on_gpu_matches_cpu():
    L, _ = population(TRUE_ACC, k=3, scale=3000)
    cpu = MatrixCompletion(cardinality=3, n_epochs=300).fit(L)
    gpu = MatrixCompletion(cardinality=3, n_epochs=300, device="cuda").fit(L)
    np.testing.assert_allclose(gpu.accuracies_, cpu.accuracies_, atol=0.02)
    assert (gpu.predict(L) == cpu.predict(L)).mean() > 0.99
