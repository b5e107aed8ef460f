"""Tests for LFAnalysis: hand-computed cases, input formats, validation and parity with Snorkel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from labelmodel import analysis as analysis_module
from labelmodel.analysis import LFAnalysis
from labelmodel.errors import LabelModelError
from labelmodel.lf import LabelingFunction

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WRENCH = DATA / "wrench"
SNORKEL_REASON = "snorkel is the peer for this cross-check"
needs_wrench = pytest.mark.skipif(
    not (WRENCH / "youtube").is_dir(),
    reason=f"WRENCH data not found at {WRENCH} (repo_root/../shared/data)",
)

# Six rows, four LFs; the last LF never votes.
L_HAND = np.array(
    [
        [0, 0, -1, -1],  # two agreeing votes: overlap, no conflict
        [1, 0, 2, -1],  # three votes, three labels: conflict
        [-1, -1, 2, -1],  # a single vote
        [-1, -1, -1, -1],  # no vote
        [1, -1, 1, -1],  # two agreeing votes
        [0, -1, 1, -1],  # conflict
    ]
)
Y_HAND = np.array([0, 1, 0, 0, 1, 1])
# Worked by hand from the rows above (n = 6).
COVERAGE = [4 / 6, 2 / 6, 4 / 6, 0]  # LF0 rows 0,1,4,5; LF1 rows 0,1; LF2 rows 1,2,4,5
OVERLAPS = [4 / 6, 2 / 6, 3 / 6, 0]  # rows with >= 2 votes: 0,1,4,5
CONFLICTS = [2 / 6, 1 / 6, 2 / 6, 0]  # conflicted rows: 1,5
POLARITY = [[0, 1], [0], [1, 2], []]
CORRECT = [3, 1, 2, 0]  # LF0 right on 0,1,4; LF1 on 0; LF2 on 4,5
INCORRECT = [1, 1, 2, 0]


def _sparse_hand(fmt: str):
    rows, cols = np.nonzero(L_HAND != -1)
    coo = sp.coo_array((L_HAND[rows, cols], (rows, cols)), shape=L_HAND.shape)
    return coo.asformat(fmt)


def _check_hand(a: LFAnalysis) -> None:
    np.testing.assert_allclose(a.lf_coverages(), COVERAGE)
    np.testing.assert_allclose(a.lf_overlaps(), OVERLAPS)
    np.testing.assert_allclose(a.lf_conflicts(), CONFLICTS)
    assert a.lf_polarities() == POLARITY
    assert a.label_coverage() == pytest.approx(5 / 6)
    assert a.label_overlap() == pytest.approx(4 / 6)
    assert a.label_conflict() == pytest.approx(2 / 6)
    np.testing.assert_allclose(a.lf_empirical_accuracies(Y_HAND), [0.75, 0.5, 0.5, np.nan])


def test_hand_case_dense():
    _check_hand(LFAnalysis(L_HAND))
    _check_hand(LFAnalysis(L_HAND.astype(np.int8)))
    _check_hand(LFAnalysis(np.asfortranarray(L_HAND.astype(np.int16))))


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_hand_case_sparse_with_explicit_zero_votes(fmt):
    _check_hand(LFAnalysis(_sparse_hand(fmt)))
    _check_hand(LFAnalysis(sp.csr_matrix(_sparse_hand("csr"))))


def test_sparse_stored_minus_one_abstains():
    rows, cols = np.nonzero(L_HAND != -1)
    extra_r, extra_c = np.array([3, 3, 2]), np.array([0, 3, 1])  # cells that abstain in L_HAND
    coo = sp.coo_array(
        (np.r_[L_HAND[rows, cols], [-1, -1, -1]], (np.r_[rows, extra_r], np.r_[cols, extra_c])),
        shape=L_HAND.shape,
    )
    _check_hand(LFAnalysis(coo.tocsr()))


def test_hand_case_dataframe_names_and_summary():
    df = pd.DataFrame(L_HAND, columns=["a", "b", "c", "never"])
    a = LFAnalysis(df)
    _check_hand(a)
    s = a.summary(Y=Y_HAND, weights=[0.9, 0.6, 0.5, 0.0])
    assert list(s.index) == ["a", "b", "c", "never"]
    assert list(s.columns) == [
        *["j", "Polarity", "Coverage", "Overlaps", "Conflicts"],
        *["Correct", "Incorrect", "Emp. Acc.", "Learned Weight"],
    ]
    assert s["j"].tolist() == [0, 1, 2, 3]
    assert s["Polarity"].tolist() == POLARITY
    assert s["Correct"].tolist() == CORRECT and s["Incorrect"].tolist() == INCORRECT
    assert s.loc["a", "Emp. Acc."] == pytest.approx(0.75) and np.isnan(s.loc["never", "Emp. Acc."])
    assert s["Learned Weight"].tolist() == [0.9, 0.6, 0.5, 0.0]
    assert list(a.summary().columns) == ["j", "Polarity", "Coverage", "Overlaps", "Conflicts"]


def test_nullable_int_dataframe_and_names_override():
    df = pd.DataFrame(L_HAND, columns=list("wxyz")).astype("Int16")
    a = LFAnalysis(df, lf_names=[LabelingFunction(n, lambda x: 0) for n in "pqrs"])
    assert a.lf_names == list("pqrs")
    _check_hand(a)


def test_normalized_overlaps_and_conflicts():
    a = LFAnalysis(L_HAND)
    np.testing.assert_allclose(a.lf_overlaps(normalize_by_coverage=True), [1, 1, 0.75, 0])
    np.testing.assert_allclose(a.lf_conflicts(normalize_by_overlaps=True), [0.5, 0.5, 2 / 3, 0])


def test_default_names_are_positions():
    assert list(LFAnalysis(L_HAND).summary().index) == [0, 1, 2, 3]


def test_uint_matrix_means_every_cell_votes():
    L = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    a = LFAnalysis(L)
    np.testing.assert_allclose(a.lf_coverages(), [1, 1])
    np.testing.assert_allclose(a.lf_conflicts(), [0.5, 0.5])
    assert a.lf_polarities() == [[0, 2], [1, 2]]


def _brute_force(L: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    n, m = L.shape
    cov, ov, cf, correct = (np.zeros(m) for _ in range(4))
    for i in range(n):
        for j in range(m):
            if L[i, j] == -1:
                continue
            cov[j] += 1
            correct[j] += L[i, j] == Y[i]
            others = [L[i, o] for o in range(m) if o != j and L[i, o] != -1]
            ov[j] += bool(others)
            cf[j] += any(v != L[i, j] for v in others)
    return {"cov": cov / n, "ov": ov / n, "cf": cf / n, "acc": correct / cov}


@pytest.mark.parametrize("chunk_entries", [1 << 22, 50, 7])
@pytest.mark.parametrize("table", [True, False])
def test_random_matrix_against_brute_force_across_chunkings(monkeypatch, chunk_entries, table):
    monkeypatch.setattr(analysis_module, "_CHUNK_ENTRIES", chunk_entries)
    if not table:
        monkeypatch.setattr(analysis_module, "_MAX_POLARITY_TABLE", 0)
    rng = np.random.default_rng(3)
    L = np.where(rng.random((300, 7)) < 0.4, rng.integers(0, 4, (300, 7)), -1)
    Y = rng.integers(0, 4, 300)
    expected = _brute_force(L, Y)
    for source in (L, sp.csr_array(sp.coo_array((L[L >= 0], np.nonzero(L >= 0)), shape=L.shape))):
        a = LFAnalysis(source)
        np.testing.assert_allclose(a.lf_coverages(), expected["cov"])
        np.testing.assert_allclose(a.lf_overlaps(), expected["ov"])
        np.testing.assert_allclose(a.lf_conflicts(), expected["cf"])
        np.testing.assert_allclose(a.lf_empirical_accuracies(Y), expected["acc"])
        assert a.lf_polarities() == [sorted(set(L[:, j][L[:, j] >= 0].tolist())) for j in range(7)]


def test_large_dense_and_sparse_agree():
    rng = np.random.default_rng(0)
    n, m = 200_000, 50
    Y = rng.integers(0, 3, n)
    votes = np.where(rng.random((n, m)) < 0.7, Y[:, None], rng.integers(0, 3, (n, m)))
    L = np.where(rng.random((n, m)) < 0.2, votes, -1).astype(np.int8)
    dense = LFAnalysis(L).summary(Y=Y)
    rows, cols = np.nonzero(L >= 0)
    sparse = LFAnalysis(sp.csr_array((L[rows, cols], (rows, cols)), shape=L.shape)).summary(Y=Y)
    pd.testing.assert_frame_equal(dense, sparse)
    np.testing.assert_allclose(dense["Coverage"], (L >= 0).mean(axis=0))


@pytest.mark.parametrize(
    ("L", "match"),
    [
        (np.array([[0.0, 1.0]]), "float dtype"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[True, False]]), "dtype bool"),
        (np.array([["a", "b"]]), "dtype <U1"),
        (np.array([[0, -2]]), "below -1"),
        (np.zeros((0, 3), dtype=int), "empty"),
        (np.zeros((3, 0), dtype=int), "empty"),
        (np.array([0, 1, -1]), "2-D"),
        (pd.DataFrame({"a": [0, None]}), "NaN"),
        (pd.DataFrame({"a": ["x", "y"]}), "vote column 'a'"),
        (sp.csr_array(np.array([[0.5, 1.0]])), "float dtype"),
        (sp.coo_array((np.array([0, 1]), (np.array([0, 0]), np.array([1, 1]))), shape=(2, 2)), "duplicate"),
        (sp.csr_array(np.array([[0, -3]])), "below -1"),
    ],
)
def test_invalid_matrices_are_rejected(L, match):
    with pytest.raises(LabelModelError, match=match):
        LFAnalysis(L)


def test_invalid_names_gold_and_weights_are_rejected():
    with pytest.raises(LabelModelError, match="3 LF names"):
        LFAnalysis(L_HAND, lf_names=["a", "b", "c"])
    with pytest.raises(LabelModelError, match="unique"):
        LFAnalysis(L_HAND, lf_names=["a", "a", "b", "c"])
    a = LFAnalysis(L_HAND)
    with pytest.raises(LabelModelError, match="5 labels but the label matrix has 6 rows"):
        a.summary(Y=Y_HAND[:5])
    with pytest.raises(LabelModelError, match="NaN"):
        a.lf_empirical_accuracies(np.array([0, 1, np.nan, 0, 1, 1]))
    with pytest.raises(LabelModelError, match="float dtype"):
        a.lf_empirical_accuracies(Y_HAND.astype(float))
    with pytest.raises(LabelModelError, match="negative"):
        a.lf_empirical_accuracies(np.array([0, 1, -1, 0, 1, 1]))
    with pytest.raises(LabelModelError, match="missing"):
        a.lf_empirical_accuracies(pd.Series([0, 1, None, 0, 1, 1], dtype="Int64"))
    with pytest.raises(LabelModelError, match="one weight per LF"):
        a.summary(weights=[1.0, 2.0])
    nullable = pd.Series(Y_HAND, dtype="Int8")
    np.testing.assert_allclose(a.lf_empirical_accuracies(nullable)[:3], [0.75, 0.5, 0.5])
    np.testing.assert_allclose(a.lf_empirical_accuracies(Y_HAND.reshape(-1, 1))[:3], [0.75, 0.5, 0.5])


def _wrench(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    raw = json.loads((WRENCH / name / f"{split}.json").read_text())
    L = np.array([r["weak_labels"] for r in raw.values()])
    Y = np.array([r["label"] for r in raw.values()])
    return L, Y


@needs_wrench
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_youtube_coverage_equals_independent_count(split):
    L, _ = _wrench("youtube", split)
    a = LFAnalysis(L)
    raw = json.loads((WRENCH / "youtube" / f"{split}.json").read_text())
    counts = [sum(r["weak_labels"][j] != -1 for r in raw.values()) for j in range(L.shape[1])]
    np.testing.assert_allclose(a.lf_coverages(), np.array(counts) / len(raw))
    covered = sum(any(v != -1 for v in r["weak_labels"]) for r in raw.values())
    assert a.label_coverage() == pytest.approx(covered / len(raw))


@needs_wrench
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_youtube_summary_matches_snorkel(split):
    snorkel_labeling = pytest.importorskip("snorkel.labeling", reason=SNORKEL_REASON)
    L, Y = _wrench("youtube", split)
    ours = LFAnalysis(L)
    theirs = snorkel_labeling.LFAnalysis(L)
    expected = theirs.lf_summary(Y=Y)
    got = ours.summary(Y=Y)
    assert got["Polarity"].tolist() == [list(map(int, p)) for p in expected["Polarity"]]
    for col in ["Coverage", "Overlaps", "Conflicts", "Emp. Acc."]:
        np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float), err_msg=col)
    for col in ["Correct", "Incorrect"]:
        assert got[col].tolist() == expected[col].tolist(), col
    assert ours.label_coverage() == pytest.approx(theirs.label_coverage())
    assert ours.label_overlap() == pytest.approx(theirs.label_overlap())
    assert ours.label_conflict() == pytest.approx(theirs.label_conflict())


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_multiclass_random_matrix_matches_snorkel():
    snorkel_labeling = pytest.importorskip("snorkel.labeling", reason=SNORKEL_REASON)
    rng = np.random.default_rng(11)
    L = np.where(rng.random((2000, 9)) < 0.35, rng.integers(0, 5, (2000, 9)), -1)
    Y = rng.integers(0, 5, 2000)
    got = LFAnalysis(L).summary(Y=Y)
    expected = snorkel_labeling.LFAnalysis(L).lf_summary(Y=Y)
    for col in ["Coverage", "Overlaps", "Conflicts", "Correct", "Incorrect", "Emp. Acc."]:
        np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float), err_msg=col)


def test_implausibly_large_labels_are_rejected():
    with pytest.raises(LabelModelError, match="class indices"):
        LFAnalysis(np.array([[0, 2**40]]))
    with pytest.raises(LabelModelError, match="class indices"):
        LFAnalysis(np.array([[0, 2**63]], dtype=np.uint64))
