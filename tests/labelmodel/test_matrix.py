import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from labelmodel import LabelModelError, MajorityVote, as_label_matrix


def test_dense_input_is_stored_compactly():
    L = np.array([[0, 1, -1], [2, -1, -1]], dtype=np.int64)
    lm = as_label_matrix(L)
    assert lm.codes.dtype == np.int8
    assert lm.cardinality == 3
    assert lm.lf_names == ["lf_0", "lf_1", "lf_2"]
    assert as_label_matrix(L, cardinality=300).codes.dtype == np.int16


def test_sparse_and_dataframe_inputs_agree_with_dense():
    dense = np.array([[0, -1, 1], [-1, -1, 0], [1, 1, -1]])
    r, c = np.nonzero(dense != -1)
    sparse = sp.coo_matrix((dense[r, c], (r, c)), shape=dense.shape)
    df = pd.DataFrame(dense, columns=["a", "b", "c"])
    for L in (sparse, df):
        lm = as_label_matrix(L, cardinality=2)
        np.testing.assert_array_equal(lm.dense(), dense)
    assert as_label_matrix(df).lf_names == ["a", "b", "c"]
    assert as_label_matrix(sparse, 2).is_sparse
    p_dense = MajorityVote(cardinality=2).fit(dense).predict_proba(dense)
    p_sparse = MajorityVote(cardinality=2).fit(sparse).predict_proba(sparse)
    np.testing.assert_allclose(p_dense, p_sparse)


@pytest.mark.parametrize(
    "L, fragment",
    [
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[0.5, 1.0]]), "non-integer"),
        (np.array([[0, -2]]), "-2"),
        (np.zeros((0, 3), dtype=int), "empty"),
        (np.array([0, 1, 1]), "2-D"),
        (np.array([["a", "b"]]), "dtype"),
        (pd.DataFrame({"a": [0.5, 1.0]}), "integers"),
    ],
)
def test_bad_matrices_get_clear_errors(L, fragment):
    with pytest.raises(LabelModelError, match=fragment):
        as_label_matrix(L)


def test_label_beyond_cardinality_names_the_fix():
    with pytest.raises(LabelModelError, match="cardinality=4"):
        as_label_matrix(np.array([[3, 0]]), cardinality=2)


def test_gold_shape_mismatch_is_reported():
    L = np.array([[0, 1], [1, 1]])
    model = MajorityVote().fit(L)
    with pytest.raises(LabelModelError, match="3 labels but the label matrix has 2 rows"):
        model.score(L, np.array([0, 1, 1]))
    with pytest.raises(LabelModelError, match="outside"):
        model.score(L, np.array([0, 5]))


def test_predicting_with_other_lfs_or_unfitted_is_refused():
    with pytest.raises(LabelModelError, match="not fitted"):
        MajorityVote().predict(np.array([[0, 1]]))
    model = MajorityVote().fit(np.array([[0, 1, 1]]))
    with pytest.raises(LabelModelError, match="fitted on 3"):
        model.predict(np.array([[0, 1]]))
