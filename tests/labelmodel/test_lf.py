"""Tests for labelmodel.lf: LabelingFunction, the decorator, records and preprocessors."""

from __future__ import annotations

import pickle
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest

from labelmodel.errors import LabelModelError
from labelmodel.lf import ABSTAIN, LabelingFunction, Record, as_record, check_vote, labeling_function

Comment = namedtuple("Comment", ["text", "author"])


@labeling_function()
def lf_has_link(x):
    return 1 if "http" in x.text else ABSTAIN


@labeling_function(name="short", resources={"max_len": 5})
def lf_short_text(x, max_len):
    return 0 if len(x.text) <= max_len else ABSTAIN


def test_abstain_is_minus_one():
    assert ABSTAIN == -1


def test_decorator_uses_function_name_and_reads_every_record_kind():
    assert lf_has_link.name == "lf_has_link"
    text = "see http://x.co"
    assert lf_has_link({"text": text}) == 1
    assert lf_has_link(Comment(text, "a")) == 1
    assert lf_has_link(pd.Series({"text": text})) == 1
    assert lf_has_link({"text": "nothing here"}) == ABSTAIN


def test_resources_are_passed_as_keyword_arguments():
    assert lf_short_text.name == "short"
    assert lf_short_text({"text": "hi"}) == 0
    assert lf_short_text({"text": "hello world"}) == ABSTAIN


def test_decorator_without_parentheses_is_an_error():
    with pytest.raises(LabelModelError, match="parentheses"):
        labeling_function(lambda x: 0)


def test_record_attribute_and_item_access():
    r = as_record({"text": "a", "n": 2})
    assert isinstance(r, Record)
    assert r.text == "a" and r["n"] == 2
    r.extra = 3
    assert r["extra"] == 3
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _ = r.missing
    nt = Comment("t", "u")
    assert as_record(nt) is nt


def test_preprocessors_run_in_order_on_copies():
    def add_a(x):
        x.text = x.text + "a"
        return x

    def add_b(x):
        x.text = x.text + "b"
        return x

    ends_ab = LabelingFunction("ab", lambda x: 1 if x.text.endswith("ab") else 0, pre=[add_a, add_b])
    ends_ba = LabelingFunction("ba", lambda x: 1 if x.text.endswith("ab") else 0, pre=[add_b, add_a])
    record = {"text": "x"}
    assert ends_ab(record) == 1
    assert ends_ba(record) == 0
    assert record == {"text": "x"}  # the caller's record is untouched


def test_preprocessor_returning_none_is_an_error():
    lf = LabelingFunction("bad_pre", lambda x: 0, pre=[lambda x: None])
    with pytest.raises(LabelModelError, match="returned None"):
        lf({"text": "a"})


def test_preprocessor_cache_runs_a_shared_prefix_once():
    calls = []

    def expensive(x):
        calls.append(1)
        x.n_words = len(x.text.split())
        return x

    a = LabelingFunction("a", lambda x: 1 if x.n_words > 2 else -1, pre=[expensive])
    b = LabelingFunction("b", lambda x: 0 if x.n_words <= 2 else -1, pre=[expensive])
    cache: dict = {}
    x = {"text": "one two three"}
    assert a.raw_vote(x, cache) == 1
    assert b.raw_vote(x, cache) == -1
    assert len(calls) == 1


@pytest.mark.parametrize("value", [1.0, "1", None, True, np.bool_(False), [1]])
def test_non_int_outputs_are_rejected_naming_lf_and_value(value):
    lf = LabelingFunction("returns_junk", lambda x: value)
    with pytest.raises(LabelModelError, match="returns_junk") as err:
        lf({"text": "a"})
    assert repr(value) in str(err.value)


def test_labels_below_minus_one_are_rejected():
    lf = LabelingFunction("minus_two", lambda x: -2)
    with pytest.raises(LabelModelError, match=r"minus_two.*-2"):
        lf({})


def test_numpy_ints_are_accepted_as_python_ints():
    assert check_vote("np", np.int8(3)) == 3
    assert type(check_vote("np", np.int64(-1))) is int


def test_bad_construction_is_rejected():
    with pytest.raises(LabelModelError, match="name"):
        LabelingFunction("", lambda x: 0)
    with pytest.raises(LabelModelError, match="callable"):
        LabelingFunction("x", 3)
    with pytest.raises(LabelModelError, match="preprocessor"):
        LabelingFunction("x", lambda x: 0, pre=["lower"])


def test_module_level_decorated_lf_pickles_by_reference():
    restored = pickle.loads(pickle.dumps(lf_has_link))
    assert restored is lf_has_link


def test_plain_lf_with_module_level_function_pickles():
    lf = LabelingFunction("plain", _plain_function, resources={"word": "spam"})
    restored = pickle.loads(pickle.dumps(lf))
    assert restored.name == "plain" and restored({"text": "spam!"}) == 1


def _plain_function(x, word):
    return 1 if word in x.text else -1


def test_repr_names_lf_and_preprocessors():
    def lower(x):
        return x

    assert repr(LabelingFunction("k", lambda x: 0, pre=[lower])) == "LabelingFunction('k', pre=['lower'])"
