"""Properties that must hold for any label matrix (hypothesis-generated)."""

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from labelmodel import DawidSkene, MajorityVote, Triplet


@st.composite
def label_matrices(draw):
    k = draw(st.integers(2, 5))
    n = draw(st.integers(1, 40))
    m = draw(st.integers(1, 8))
    L = draw(arrays(np.int64, (n, m), elements=st.integers(-1, k - 1)))
    return L, k


@settings(max_examples=40, deadline=None)
@given(label_matrices())
def test_probabilities_are_finite_and_normalised(case):
    L, k = case
    for model in (MajorityVote(cardinality=k), DawidSkene(cardinality=k, max_iter=5), Triplet(cardinality=k)):
        probs = model.fit(L).predict_proba(L)
        assert probs.shape == (L.shape[0], k)
        assert np.isfinite(probs).all()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
        preds = model.predict(L)
        assert ((preds >= 0) & (preds < k)).all()


@settings(max_examples=40, deadline=None)
@given(label_matrices())
def test_sparse_input_gives_the_same_answer_as_dense(case):
    L, k = case
    r, c = np.nonzero(L != -1)
    sparse = sp.csr_matrix((L[r, c], (r, c)), shape=L.shape)
    for make in (MajorityVote, Triplet):
        dense_probs = make(cardinality=k).fit(L).predict_proba(L)
        sparse_probs = make(cardinality=k).fit(sparse).predict_proba(sparse)
        np.testing.assert_allclose(dense_probs, sparse_probs, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(label_matrices(), st.randoms(use_true_random=False))
def test_majority_vote_ignores_lf_order(case, rnd):
    L, k = case
    order = list(range(L.shape[1]))
    rnd.shuffle(order)
    a = MajorityVote(cardinality=k).fit(L).predict_proba(L)
    b = MajorityVote(cardinality=k).fit(L[:, order]).predict_proba(L[:, order])
    np.testing.assert_allclose(a, b)
