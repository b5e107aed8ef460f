"""Embroid: the paper's demo reproduced on its own data, the neighbourhood-vote rule, multi-class, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from prompting.embroid import Embroid, resolve_thresholds, smooth_votes
from prompting.errors import PromptingError
from prompting.neighbors import nearest_neighbors

SPACES = ("roberta", "sbert", "bert")  # the demo's order


@pytest.fixture(scope="module")
def dbpedia(shared_data):
    folder = shared_data / "embroid_dbpedia"
    votes = np.load(folder / "votes.npy")
    labels = np.load(folder / "labels.npy")
    # The knn files list each row itself first (the official code reads columns 1..k); drop that column.
    knn = [np.load(folder / f"{space}_knn20.npy") for space in SPACES]
    assert all((k[:, 0] == np.arange(len(k))).all() for k in knn)
    return votes, labels, [k[:, 1:] for k in knn]


def test_reproduces_the_paper_demo(dbpedia):
    """Embroid's published demo: macro-F1 0.72 with the LM's votes alone, 0.77 after smoothing (k = 10,
    thresholds from the source's vote shares, label model over original + smoothed votes)."""
    votes, labels, knn = dbpedia
    assert votes.shape == (2000, 1)
    alone = f1_score(labels, votes[:, 0], average="macro")
    assert alone == pytest.approx(0.72, abs=0.005)
    model = Embroid()
    assert model.k == 10 and model.tau_pos == "auto" and model.tau_neg == "auto"
    preds = model.fit_predict(votes, knn)
    smoothed = f1_score(labels, preds, average="macro")
    assert smoothed >= 0.765, smoothed
    assert model.smoothed_.shape == (2000, 3) and model.label_matrix_.shape == (2000, 4)
    np.testing.assert_allclose(model.thresholds_, [[1 - votes.mean(), votes.mean()]])
    proba = Embroid().fit_predict_proba(votes, knn)
    assert proba.shape == (2000, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1), preds)


def test_binary_rule_is_the_papers(dbpedia):
    """Row by row, the paper's rule written out plainly: positive when the neighbours' positive share is at
    least tau+, negative when their negative share is at least tau- (negative checked last, so it wins)."""
    votes, _, knn = dbpedia
    v = votes[:, 0]
    for tau_pos, tau_neg in (("auto", "auto"), (0.5, 0.5), (0.7, 0.4), (0.3, 0.3)):
        out = smooth_votes(votes, knn, k=10, tau_pos=tau_pos, tau_neg=tau_neg)
        tp = v.mean() if tau_pos == "auto" else tau_pos
        tn = 1 - v.mean() if tau_neg == "auto" else tau_neg
        for s, near in enumerate(knn):
            expected = np.full(len(v), -1)
            for i in range(len(v)):
                positive_share = v[near[i, :10]].mean()
                if positive_share >= tp:
                    expected[i] = 1
                if 1 - positive_share >= tn:
                    expected[i] = 0
            np.testing.assert_array_equal(out[:, s], expected, err_msg=f"{tau_pos}, {tau_neg}, space {s}")


def test_each_space_alone_helps_on_dbpedia(dbpedia):
    votes, labels, knn = dbpedia
    smoothed = smooth_votes(votes, knn)
    alone = f1_score(labels, votes[:, 0], average="macro")
    for s in range(3):
        assert f1_score(labels, smoothed[:, s], average="macro") > alone


def test_multiclass_on_wrench_trec(shared_data):
    """Six-class TREC with its 68 keyword LFs and TF-IDF neighbours: the smoothed LF columns add accuracy
    on top of majority vote over the LFs alone (0.608 -> 0.664 on the test split)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from labelmodel import MajorityVote

    rows = list(json.loads((shared_data / "wrench" / "trec" / "test.json").read_text()).values())
    gold = np.array([r["label"] for r in rows])
    votes = np.array([r["weak_labels"] for r in rows])
    space = TfidfVectorizer(sublinear_tf=True).fit_transform([r["data"]["text"] for r in rows]).toarray()
    knn = nearest_neighbors(space, 10)
    base = (MajorityVote(cardinality=6).fit(votes).predict(votes) == gold).mean()
    model = Embroid(label_model="majority", class_balance="estimate")
    ours = (model.fit_predict(votes, [knn], cardinality=6) == gold).mean()
    assert ours >= base + 0.03, (base, ours)
    assert model.thresholds_.shape == (68, 6) and model.smoothed_.shape == (500, 68)
    # the smoothed column of an LF only ever votes classes that LF votes
    for j in range(68):
        assert set(np.unique(model.smoothed_[:, j])) - {-1} <= set(np.unique(votes[:, j]))


def test_rule_on_small_cases():
    # one source, binary; row 0's neighbours are rows 1..3 (and so on, cyclically)
    votes = np.array([[1], [1], [0], [-1], [1], [0]])
    near = np.array([[(i + d) % 6 for d in (1, 2, 3)] for i in range(6)])
    out = smooth_votes(votes, [near], k=3, tau_pos=0.5, tau_neg=0.5)
    # row 0: voters 1, 0 (row 3 abstains) -> shares 1/2, 1/2 -> both clear, negative wins
    # row 1: 0, -, 1 -> 1/2 each -> 0; row 2: -, 1, 0 -> 0; row 3: 1, 0, 1 -> 2/3 positive -> 1
    # row 4: 0, 1, 1 -> 1; row 5: 1, 1, 0 -> 1
    np.testing.assert_array_equal(out[:, 0], [0, 0, 0, 1, 1, 1])
    # nobody voted around row 0 -> abstain
    votes = np.array([[1], [-1], [-1], [0]])
    near = np.array([[1, 2], [0, 3], [0, 3], [1, 2]])
    np.testing.assert_array_equal(smooth_votes(votes, [near], k=2, tau_pos=0.1, tau_neg=0.1)[:, 0], [-1, 0, 0, -1])


def test_multiclass_rule_largest_margin():
    votes = np.array([[0], [0], [1], [1], [1], [2], [2]])
    near = np.array([[1, 2, 3, 4, 5], [0, 2, 3, 4, 5], [5, 6, 0, 1, 3], [5, 6, 2, 4, 0], [5, 6, 2, 3, 0],
                     [0, 1, 2, 3, 4], [0, 1, 2, 3, 5]])
    got = smooth_votes(votes, [near], k=5, tau_pos=[0.2, 0.5, 0.3], cardinality=3)
    # rows 0, 1: neighbours vote 0,1,1,1,2 -> shares .2 .6 .2 -> classes 0 (margin 0) and 1 (.1) clear -> 1
    # row 2: 2,2,0,0,1 -> .4 .2 .4 -> 0 (margin .2) and 2 (.1) clear -> 0
    # rows 3, 4: 2,2,1,1,0 -> .2 .4 .4 -> 0 (margin 0) and 2 (.1) clear -> 2
    # row 5: 0,0,1,1,1 -> .4 .6 0 -> 0 (.2) beats 1 (.1); row 6: 0,0,1,1,2 -> .4 .4 .2 -> only 0 clears
    np.testing.assert_array_equal(got[:, 0], [1, 1, 0, 2, 2, 0, 0])
    # no class reaches 0.9 of any neighbourhood: every row abstains
    assert (smooth_votes(votes, [near], k=5, tau_pos=0.9, cardinality=3) == -1).all()
    # auto thresholds (2/7, 3/7, 2/7): row 0's shares .2 .6 .2 -> only class 1 clears
    assert smooth_votes(votes, [near], k=5, cardinality=3)[0, 0] == 1


def test_abstains_count_takes_shares_out_of_k():
    # source votes 1 on rows 0-2, 0 on row 3, abstains on rows 4-9
    votes = np.array([[1], [1], [1], [0], [-1], [-1], [-1], [-1], [-1], [-1]])
    near = np.array([[1, 2, 3, 4], [0, 2, 4, 5], [4, 5, 6, 7], [4, 5, 6, 8], [0, 1, 2, 3],
                     [4, 6, 7, 8], [0, 7, 8, 9], [3, 8, 9, 4], [1, 2, 5, 6], [7, 8, 4, 5]])
    ignore = smooth_votes(votes, [near], k=4)[:, 0]
    count = smooth_votes(votes, [near], k=4, abstains="count")[:, 0]
    # "ignore": thresholds .75 / .25 of the source's votes, shares among voting neighbours.
    #   row 0: 1,1,0 -> .67 / .33 -> 0; row 1: 1,1 -> 1; row 4: 1,1,1,0 -> .75 / .25 both clear -> 0;
    #   row 6: a single 1 -> share 1 -> 1; row 7: a single 0 -> 0; row 8: 1,1 -> 1; rows 2,3,5,9: nobody voted
    np.testing.assert_array_equal(ignore, [0, 1, -1, -1, 0, -1, 1, 0, 1, -1])
    # "count": thresholds .3 / .1 of all rows, shares out of k = 4. Row 6's single 1 is .25 < .3 -> abstain;
    #   row 7's single 0 is .25 >= .1 -> 0; the rest as above
    np.testing.assert_array_equal(count, [0, 1, -1, -1, 0, -1, -1, 0, 1, -1])
    np.testing.assert_allclose(resolve_thresholds(votes, 2, abstains="count"), [[0.1, 0.3]])


def test_abstains_modes_agree_without_abstains(dbpedia):
    votes, _, knn = dbpedia
    np.testing.assert_array_equal(smooth_votes(votes, knn), smooth_votes(votes, knn, abstains="count"))


def test_column_order_is_space_then_source():
    rng = np.random.default_rng(0)
    votes = rng.integers(-1, 2, size=(40, 2))
    a = np.array([[(i + d) % 40 for d in range(1, 6)] for i in range(40)])
    b = np.array([[(i - d) % 40 for d in range(1, 6)] for i in range(40)])
    both = smooth_votes(votes, [a, b], k=5)
    assert both.shape == (40, 4)
    np.testing.assert_array_equal(both[:, 0], smooth_votes(votes[:, :1], [a], k=5, cardinality=2)[:, 0])
    np.testing.assert_array_equal(both[:, 1], smooth_votes(votes[:, 1:], [a], k=5, cardinality=2)[:, 0])
    np.testing.assert_array_equal(both[:, 2], smooth_votes(votes[:, :1], [b], k=5, cardinality=2)[:, 0])
    np.testing.assert_array_equal(both[:, 3], smooth_votes(votes[:, 1:], [b], k=5, cardinality=2)[:, 0])
    # a 3-D (spaces, n, d) array, the official code's format, gives the same
    np.testing.assert_array_equal(smooth_votes(votes, np.stack([a, b]), k=5), both)


def test_thresholds():
    votes = np.array([[0, 1], [1, 1], [1, -1], [1, 2]])
    auto = resolve_thresholds(votes, 3)
    np.testing.assert_allclose(auto, [[0.25, 0.75, 0], [0, 2 / 3, 1 / 3]])
    np.testing.assert_allclose(resolve_thresholds(votes[:, :1], 2, 0.6, 0.3), [[0.3, 0.6]])
    np.testing.assert_allclose(resolve_thresholds(votes, 3, 0.4), np.full((2, 3), 0.4))


def test_label_model_choices(dbpedia):
    from labelmodel import DawidSkene

    votes, labels, knn = dbpedia
    model = DawidSkene(cardinality=2)
    preds = Embroid(label_model=model, class_balance="estimate").fit_predict(votes, knn)
    assert f1_score(labels, preds, average="macro") > 0.75
    with_prior = Embroid(class_balance=[0.5, 0.5]).fit_predict(votes, knn)
    np.testing.assert_array_equal(with_prior, Embroid().fit_predict(votes, knn))


def test_errors():
    votes = np.array([[0], [1], [1], [0]])
    near = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    with pytest.raises(PromptingError, match="only 2 neighbours"):
        smooth_votes(votes, [near], k=3)
    with pytest.raises(PromptingError, match="4 rows"):
        smooth_votes(votes, [near[:3]], k=2)
    with pytest.raises(PromptingError, match=r"knn\[:, 1:\]"):
        smooth_votes(votes, [np.array([[0, 1], [1, 0], [2, 0], [3, 0]])], k=2)
    with pytest.raises(PromptingError, match="outside"):
        smooth_votes(votes, [near + 3], k=2)
    with pytest.raises(PromptingError, match="2-D"):
        smooth_votes(votes[:, 0], [near], k=2)
    with pytest.raises(PromptingError, match="-2"):
        smooth_votes(votes - 2, [near], k=2)
    with pytest.raises(PromptingError, match="cardinality=2"):
        smooth_votes(votes * 2, [near], k=2, cardinality=2)
    with pytest.raises(PromptingError, match=r"\[0, 1\]"):
        smooth_votes(votes, [near], k=2, tau_pos=1.5)
    with pytest.raises(PromptingError, match="tau_neg applies to binary"):
        smooth_votes(votes * 2 - 0, [near], k=2, tau_neg=0.3, cardinality=3)
    with pytest.raises(PromptingError, match="one per class"):
        smooth_votes(votes, [near], k=2, tau_pos=[0.1, 0.2], cardinality=3)
    with pytest.raises(PromptingError, match="empty"):
        smooth_votes(votes, [], k=2)
    with pytest.raises(PromptingError, match="label_model"):
        Embroid(k=2, label_model="flyingsquid").fit(votes, [near])
    with pytest.raises(PromptingError, match="abstains"):
        smooth_votes(votes, [near], k=2, abstains="drop")
    with pytest.raises(PromptingError, match="class_balance"):
        Embroid(k=2, class_balance=[0.9, 0.9]).fit(votes, [near])
