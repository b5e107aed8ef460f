"""Tests for labelmodel.apply: LFApplier and PandasLFApplier, serial and parallel, fault tolerance."""

from __future__ import annotations

import json
import logging
import re
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labelmodel.apply import LFApplier, PandasLFApplier, compact_int_dtype
from labelmodel.errors import LabelModelError
from labelmodel.lf import ABSTAIN, LabelingFunction, labeling_function

HAM, SPAM = 0, 1
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
YOUTUBE = DATA / "wrench" / "youtube"
needs_youtube = pytest.mark.skipif(
    not YOUTUBE.is_dir(), reason=f"WRENCH youtube data not found at {YOUTUBE} (repo_root/../shared/data)"
)

Comment = namedtuple("Comment", ["text", "n"])


def lower_text(x):
    x.text = x.text.lower()
    return x


@labeling_function(pre=[lower_text])
def lf_check_out(x):
    return SPAM if "check out" in x.text else ABSTAIN


@labeling_function(pre=[lower_text])
def lf_subscribe(x):
    return SPAM if "subscribe" in x.text else ABSTAIN


@labeling_function()
def lf_link(x):
    return SPAM if re.search(r"https?://", x.text) else ABSTAIN


@labeling_function()
def lf_short(x):
    return HAM if len(x.text.split()) < 5 else ABSTAIN


@labeling_function()
def lf_fails_on_odd(x):
    if x.n % 2:
        raise KeyError("odd")
    return HAM


@labeling_function()
def lf_big_label(x):
    return x.n


RECORDS = [
    {"text": "Check out my channel http://a.b", "n": 0},
    {"text": "nice song", "n": 1},
    {"text": "please SUBSCRIBE to me, I make videos every single day", "n": 2},
    {"text": "I love this video so much, it is great", "n": 3},
]
# By hand: columns lf_check_out, lf_subscribe, lf_link, lf_short.
EXPECTED = np.array(
    [
        [1, -1, 1, -1],  # "check out" and a link; 6 words
        [-1, -1, -1, 0],  # 2 words
        [-1, 1, -1, -1],  # "subscribe" after lowering; 11 words
        [-1, -1, -1, -1],  # nothing; 10 words
    ]
)
LFS = [lf_check_out, lf_subscribe, lf_link, lf_short]


def test_small_case_by_hand_and_compact_dtype():
    L = LFApplier(LFS).apply(RECORDS)
    np.testing.assert_array_equal(L, EXPECTED)
    assert L.dtype == np.int8
    assert LFApplier(LFS).apply(iter(RECORDS)).tolist() == EXPECTED.tolist()


def test_namedtuples_and_dataframe_give_the_same_matrix():
    tuples = [Comment(r["text"], r["n"]) for r in RECORDS]
    # lower_text sets a field, which an immutable namedtuple refuses: those LFs fault and abstain.
    applier = LFApplier(LFS)
    L = applier.apply(tuples)
    np.testing.assert_array_equal(L[:, 2:], EXPECTED[:, 2:])
    assert (L[:, :2] == -1).all() and applier.fault_counts_["lf_check_out"] == 4
    # A preprocessor that returns a new namedtuple works.
    check_out = LabelingFunction(
        "check_out_nt", lambda x: SPAM if "check out" in x.text else -1,
        pre=[lambda x: x._replace(text=x.text.lower())],
    )
    assert LFApplier([check_out]).apply(tuples)[:, 0].tolist() == EXPECTED[:, 0].tolist()
    df = pd.DataFrame(RECORDS, index=["a", "b", "c", "d"])
    np.testing.assert_array_equal(PandasLFApplier(LFS).apply(df), EXPECTED)
    np.testing.assert_array_equal(LFApplier(LFS).apply(df), EXPECTED)
    assert df.loc["c", "text"].startswith("please SUBSCRIBE")  # preprocessors did not mutate the frame


@pytest.mark.parametrize(("top", "dtype"), [(127, np.int8), (128, np.int16), (40_000, np.int32)])
def test_dtype_grows_with_the_largest_label(top, dtype):
    L = LFApplier([lf_big_label]).apply([{"n": 0}, {"n": top}])
    assert L.dtype == dtype and L[:, 0].tolist() == [0, top]
    assert compact_int_dtype(2**40) == np.int64


def test_faults_abstain_and_are_counted_and_logged(caplog):
    applier = LFApplier([lf_short, lf_fails_on_odd])
    with caplog.at_level(logging.WARNING, logger="labelmodel.apply"):
        L = applier.apply(RECORDS)
    # n = 0, 1, 2, 3: the LF raises on rows 1 and 3 and votes HAM on rows 0 and 2.
    assert L[:, 1].tolist() == [0, -1, 0, -1]
    assert L[:, 0].tolist() == [-1, 0, -1, -1]
    assert applier.fault_counts_ == {"lf_short": 0, "lf_fails_on_odd": 2}
    assert "lf_fails_on_odd: 2" in caplog.text


def test_no_fault_tolerance_raises_naming_lf_and_row():
    with pytest.raises(LabelModelError, match=r"lf_fails_on_odd.*KeyError.*row 1\b") as err:
        LFApplier([lf_fails_on_odd]).apply(RECORDS, fault_tolerant=False)
    assert isinstance(err.value.__cause__, KeyError)
    df = pd.DataFrame(RECORDS, index=[10, 20, 30, 40])
    with pytest.raises(LabelModelError, match=r"row 1 \(index label 20\)"):
        PandasLFApplier([lf_fails_on_odd]).apply(df, fault_tolerant=False)


def test_bad_outputs_raise_even_when_fault_tolerant():
    junk = LabelingFunction("junk", lambda x: "spam" if x.n == 2 else -1)
    with pytest.raises(LabelModelError, match=r"junk.*'spam'.*row 2"):
        LFApplier([junk]).apply(RECORDS)
    low = LabelingFunction("low", lambda x: -5)
    with pytest.raises(LabelModelError, match=r"low.*-5"):
        LFApplier([low]).apply(RECORDS)


def test_applier_construction_errors():
    with pytest.raises(LabelModelError, match="duplicate LF names"):
        LFApplier([lf_short, LabelingFunction("lf_short", lambda x: 0)])
    with pytest.raises(LabelModelError, match="no labeling functions"):
        LFApplier([])
    with pytest.raises(LabelModelError, match="not a LabelingFunction"):
        LFApplier([lambda x: 0])


def test_apply_input_errors():
    with pytest.raises(LabelModelError, match="n_jobs"):
        LFApplier(LFS).apply(RECORDS, n_jobs=0)
    with pytest.raises(LabelModelError, match="DataFrame"):
        PandasLFApplier(LFS).apply(RECORDS)
    with pytest.raises(LabelModelError, match="iterable"):
        LFApplier(LFS).apply(42)


def test_empty_input_gives_an_empty_matrix():
    L = LFApplier(LFS).apply([])
    assert L.shape == (0, 4)


def test_parallel_equals_serial_with_faults():
    records = [{"text": f"word {'x ' * (i % 7)} check out" if i % 3 else "short", "n": i} for i in range(203)]
    lfs = [*LFS, lf_fails_on_odd]
    serial = LFApplier(lfs)
    parallel = LFApplier(lfs)
    L1 = serial.apply(records, n_jobs=1)
    L2 = parallel.apply(records, n_jobs=2)
    np.testing.assert_array_equal(L1, L2)
    assert L1.dtype == L2.dtype
    assert parallel.fault_counts_ == serial.fault_counts_ == {**dict.fromkeys(
        ["lf_check_out", "lf_subscribe", "lf_link", "lf_short"], 0), "lf_fails_on_odd": 101}


def test_parallel_error_names_lf_and_global_row():
    records = [{"text": "t", "n": 2 * i} for i in range(50)] + [{"text": "t", "n": 7}]
    with pytest.raises(LabelModelError, match=r"lf_fails_on_odd.*row 50"):
        LFApplier([lf_fails_on_odd]).apply(records, n_jobs=2, fault_tolerant=False)


def test_unpicklable_lf_with_n_jobs_gives_a_clear_error():
    local = LabelingFunction("local_lambda", lambda x: 0)
    with pytest.raises(LabelModelError, match=r"local_lambda.*cannot be pickled.*n_jobs=1"):
        LFApplier([local]).apply(RECORDS, n_jobs=2)


def test_progress_is_logged_not_printed(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="labelmodel.apply"):
        LFApplier(LFS).apply(RECORDS, progress=True)
    assert "4/4 records" in caplog.text
    assert capsys.readouterr().out == ""


def _youtube_frame(split: str) -> pd.DataFrame:
    raw = json.loads((YOUTUBE / f"{split}.json").read_text())
    return pd.DataFrame(
        {"text": [r["data"]["text"] for r in raw.values()], "label": [r["label"] for r in raw.values()]},
        index=[int(k) for k in raw],
    )


@needs_youtube
def test_youtube_keyword_lfs_serial_equals_parallel_and_independent_computation():
    df = _youtube_frame("train")
    applier = PandasLFApplier(LFS)
    L1 = applier.apply(df, n_jobs=1)
    L2 = PandasLFApplier(LFS).apply(df, n_jobs=2)
    np.testing.assert_array_equal(L1, L2)
    assert L1.shape == (len(df), 4) and L1.dtype == np.int8
    assert applier.fault_counts_ == dict.fromkeys(applier.lf_names, 0)
    text = df["text"]
    independent = np.column_stack(
        [
            np.where(text.str.lower().str.contains("check out", regex=False), SPAM, -1),
            np.where(text.str.lower().str.contains("subscribe", regex=False), SPAM, -1),
            np.where(text.str.contains(r"https?://", regex=True), SPAM, -1),
            np.where(text.str.split().str.len() < 5, HAM, -1),
        ]
    )
    np.testing.assert_array_equal(L1, independent)
    # The keyword LFs are real signal on this set: "check out" comments are nearly all spam.
    votes = L1[:, 0] == SPAM
    assert votes.sum() > 50 and (df["label"].to_numpy()[votes] == SPAM).mean() > 0.9
