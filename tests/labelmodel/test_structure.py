"""Dependency-structure learning: recovery on synthetic data with known copies, edge cases, input errors."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

import labelmodel.structure as structure
from labelmodel.errors import LabelModelError
from labelmodel.structure import (
    dependency_components,
    dependency_scores,
    learn_dependencies,
    learn_dependency_structure,
)

WRENCH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wrench"

SOURCES_OF_COPIES = [0, 0, 1, 2]
COPIED = {(0, 9), (0, 10), (1, 11), (2, 12)}
SAME_SOURCE = {(9, 10)}


def synthetic_votes(n, k, n_independent, copies, seed=0, copy_prob=0.9, class_balance=None):
    """Latent Y; independent LFs, then LFs that copy LF ``copies[i]``'s vote with ``copy_prob``."""
    rng = np.random.default_rng(seed)
    Y = rng.choice(k, size=n, p=class_balance)
    columns = []
    for _ in range(n_independent):
        accuracy, coverage = rng.uniform(0.6, 0.85), rng.uniform(0.4, 0.9)
        vote = np.where(rng.random(n) < accuracy, Y, (Y + rng.integers(1, k, n)) % k)
        columns.append(np.where(rng.random(n) < coverage, vote, -1))
    for source in copies:
        own = np.where(rng.random(n) < 0.7, Y, (Y + rng.integers(1, k, n)) % k)
        own = np.where(rng.random(n) < 0.7, own, -1)
        columns.append(np.where(rng.random(n) < copy_prob, columns[source], own))
    return np.stack(columns, axis=1).astype(np.int8), Y


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_copied_lfs_are_recovered_without_false_edges(k, seed):
    L, _ = synthetic_votes(5000, k, 9, SOURCES_OF_COPIES, seed=seed)
    edges = set(learn_dependencies(L, k))
    assert COPIED <= edges
    assert edges <= COPIED | SAME_SOURCE
    components = dependency_components(sorted(edges), L.shape[1])
    assert [0, 9, 10] in components and [1, 11] in components and [2, 12] in components
    assert len(components) == L.shape[1] - 4


@pytest.mark.parametrize("k", [2, 3])
def test_weakly_copied_lfs_on_few_rows_are_still_found(k):
    L, _ = synthetic_votes(1000, k, 9, SOURCES_OF_COPIES, seed=3, copy_prob=0.6)
    edges = set(learn_dependencies(L, k))
    assert COPIED <= edges <= COPIED | SAME_SOURCE


@pytest.mark.parametrize("k, balance", [(2, [0.8, 0.2]), (3, [0.6, 0.3, 0.1]), (5, None)])
def test_independent_lfs_give_no_edges(k, balance):
    L, _ = synthetic_votes(5000, k, 12, [], seed=4, class_balance=balance)
    result = learn_dependency_structure(L, k)
    assert result.edges == []
    assert result.converged
    assert 1 <= result.rank <= k - 1


def test_weights_and_result_fields():
    L, _ = synthetic_votes(3000, 2, 9, SOURCES_OF_COPIES, seed=0)
    result = learn_dependency_structure(L)
    m = L.shape[1]
    assert result.weights.shape == (m, m)
    assert np.allclose(result.weights, result.weights.T)
    assert np.all(np.diag(result.weights) == 0)
    strongest = {tuple(sorted(divmod(int(a), m))) for a in np.argsort(-np.triu(result.weights).ravel())[:4]}
    assert strongest <= COPIED | SAME_SOURCE
    assert result.excluded == []
    assert np.array_equal(dependency_scores(L), result.weights)


def test_max_edges_keeps_the_strongest_and_threshold_prunes():
    L, _ = synthetic_votes(3000, 2, 9, SOURCES_OF_COPIES, seed=0)
    result = learn_dependency_structure(L)
    capped = learn_dependencies(L, max_edges=2)
    assert len(capped) == 2
    kept = sorted(result.weights[i, j] for i, j in capped)
    dropped = [result.weights[i, j] for i, j in result.edges if (i, j) not in capped]
    assert min(kept) >= max(dropped)
    assert learn_dependencies(L, max_edges=0) == []
    assert learn_dependencies(L, threshold=10.0) == []


def test_deterministic():
    L, _ = synthetic_votes(2000, 3, 9, SOURCES_OF_COPIES, seed=5)
    a = learn_dependency_structure(L, 3)
    b = learn_dependency_structure(L.copy(), 3, seed=7)
    assert a.edges == b.edges
    assert np.array_equal(a.weights, b.weights)


@pytest.mark.parametrize("k", [2, 3])
def test_chunked_covariance_matches_one_block(k, monkeypatch):
    L, _ = synthetic_votes(2000, k, 9, SOURCES_OF_COPIES, seed=6)
    whole = learn_dependency_structure(L, k)
    monkeypatch.setattr(structure, "_CHUNK_ENTRIES", 997)
    chunked = learn_dependency_structure(L, k)
    assert chunked.edges == whole.edges
    np.testing.assert_allclose(chunked.weights, whole.weights, atol=1e-8)


@pytest.mark.parametrize("k", [2, 3])
def test_degenerate_lfs_get_no_edges_and_do_not_crash(k):
    L, _ = synthetic_votes(3000, k, 9, SOURCES_OF_COPIES, seed=0)
    n = L.shape[0]
    constant = np.full((n, 1), 1, dtype=np.int8)
    silent = np.full((n, 1), -1, dtype=np.int8)
    rare = np.full((n, 1), -1, dtype=np.int8)
    rare[7] = 0
    L2 = np.hstack([L, constant, silent, rare, L[:, :1]])
    result = learn_dependency_structure(L2, k)
    m = L.shape[1]
    assert result.excluded == [m, m + 1]
    assert not any({i, j} & {m, m + 1} for i, j in result.edges)
    assert (0, m + 3) in result.edges
    assert np.all(np.isfinite(result.weights))
    assert COPIED | {(9, m + 3), (10, m + 3)} <= set(result.edges)


def test_lf_that_never_abstains_with_three_classes():
    L, _ = synthetic_votes(3000, 3, 9, [0, 1], seed=2)
    full = L.copy()
    full[full == -1] = 0
    result = learn_dependency_structure(full, 3)
    assert result.converged
    assert np.all(np.isfinite(result.weights))


@pytest.mark.parametrize(
    "L",
    [
        np.array([[0, 1], [1, 0], [1, 1], [0, -1]]),
        np.array([[0], [1], [1]]),
        np.array([[0, 1, -1]]),
        np.full((50, 4), -1),
        np.ones((50, 4), dtype=np.int64),
    ],
)
def test_tiny_and_empty_signal_inputs(L):
    result = learn_dependency_structure(L)
    assert result.weights.shape == (L.shape[1], L.shape[1])
    assert all(i < j for i, j in result.edges)
    if L.shape[1] < 2 or L.shape[0] < 2 or np.unique(L).size < 2:
        assert result.edges == []


def test_many_lfs_run_and_find_the_copies():
    L, _ = synthetic_votes(2000, 2, 110, list(range(10)), seed=8)
    result = learn_dependency_structure(L)
    assert {(i, 110 + i) for i in range(10)} <= set(result.edges)
    assert len(result.edges) <= 15


def test_too_many_columns_is_a_clear_error():
    rng = np.random.default_rng(0)
    L = rng.integers(-1, 5, size=(200, 30))
    with pytest.raises(LabelModelError, match="max_dim"):
        learn_dependencies(L, max_dim=100)


def test_integral_floats_are_accepted():
    L, _ = synthetic_votes(2000, 2, 9, SOURCES_OF_COPIES, seed=0)
    assert learn_dependencies(L.astype(np.float64)) == learn_dependencies(L)


@pytest.mark.parametrize(
    "L, match",
    [
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "NaN"),
        (np.array([[0.5, 1.0], [1.0, 0.0]]), "non-integer"),
        (np.array([[0, -2], [1, 0]]), "below -1"),
        (np.zeros((0, 3), dtype=int), "empty"),
        (np.zeros((3, 0), dtype=int), "empty"),
        (np.array([0, 1, 1]), "2-D"),
        ([[0, 1], [1, 0]], "numpy array"),
        (np.array([["a", "b"]]), "integers"),
        (np.array([[True, False]]), "integers"),
    ],
)
def test_bad_label_matrices_are_rejected(L, match):
    with pytest.raises(LabelModelError, match=match):
        learn_dependencies(L)


def test_bad_arguments_are_rejected():
    L = np.array([[0, 1, 2], [1, 0, 2]])
    with pytest.raises(LabelModelError, match="cardinality"):
        learn_dependencies(L, cardinality=2)
    with pytest.raises(LabelModelError, match="cardinality"):
        learn_dependencies(L, cardinality=1)
    with pytest.raises(LabelModelError, match="sparsity"):
        learn_dependencies(L, sparsity=-1.0)
    with pytest.raises(LabelModelError, match="max_edges"):
        learn_dependencies(L, max_edges=-1)
    with pytest.raises(LabelModelError, match="max_iter"):
        learn_dependencies(L, max_iter=0)


def test_components():
    assert dependency_components([(0, 2), (2, 4), (5, 6)], 7) == [[0, 2, 4], [1], [3], [5, 6]]
    assert dependency_components([], 3) == [[0], [1], [2]]
    assert dependency_components([(3, 1), (1, 3)], 4) == [[0], [1, 3], [2]]
    assert dependency_components([], 0) == []
    with pytest.raises(LabelModelError, match="outside"):
        dependency_components([(0, 5)], 3)
    with pytest.raises(LabelModelError, match="pair"):
        dependency_components([(0, 1, 2)], 3)


def _wrench_votes(name):
    path = WRENCH / name / "train.json"
    if not path.exists():
        pytest.skip(f"WRENCH data not found at {path} (the shared data folder beside the repository)")
    records = json.loads(path.read_text())
    return np.array([r["weak_labels"] for r in records.values()], dtype=np.int8)


@pytest.mark.parametrize("name, max_edges_expected", [("youtube", 10), ("trec", 80)])
def test_runs_on_real_wrench_votes(name, max_edges_expected):
    L = _wrench_votes(name)
    start = time.perf_counter()
    result = learn_dependency_structure(L)
    elapsed = time.perf_counter() - start
    m = L.shape[1]
    assert result.converged
    assert 1 <= len(result.edges) <= max_edges_expected
    assert elapsed < 30, f"dependency learning on {name} took {elapsed:.1f} s"
    assert all(0 <= i < j < m for i, j in result.edges)
    assert len(dependency_components(result.edges, m)) < m
