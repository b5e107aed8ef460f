"""The Python API: Pipeline, built-in lfs + label_model steps, user steps through the registry."""

import numpy as np
import pandas as pd
import pytest

from labelmodel import LabelModel
from orchestra import LabelingFunctions, LabelModelStep, OrchestraError, Pipeline, Step, Task, register_step
from orchestra.steps import make_step, registered_steps

from .conftest import EXAMPLES

TASK = Task("reviews", ["negative", "positive"], "{text}")


@pytest.fixture(scope="module")
def reviews():
    return pd.read_csv(EXAMPLES / "inputs" / "reviews.csv").rename(columns={"label": "gold"})


def test_lfs_and_label_model_match_the_label_model_used_directly(reviews):
    lfs = LabelingFunctions(str(EXAMPLES / "review_lfs.py"))
    out = Pipeline([lfs, LabelModelStep(method="majority")]).run(reviews, task=TASK)
    votes = [f"vote_{lf.name}" for lf in lfs.lfs]
    assert list(out.columns) == [*reviews.columns, *votes, "label", "proba_negative", "proba_positive"]
    pd.testing.assert_frame_equal(out[reviews.columns], reviews)
    model = LabelModel(method="majority", cardinality=2).fit(out[votes])
    np.testing.assert_array_equal(out["label"], model.predict(out[votes]))
    np.testing.assert_allclose(out[["proba_negative", "proba_positive"]].sum(axis=1), 1.0)
    assert (out["label"] == out["gold"]).mean() > 0.9


def test_chunking_does_not_change_the_result_and_data_may_be_records_or_a_path(reviews, tmp_path):
    steps = [LabelingFunctions("examples.review_lfs"), LabelModelStep()]
    whole = Pipeline(steps).run(reviews, task=TASK)
    chunked = Pipeline(steps).run(reviews.to_dict(orient="records"), task=TASK, chunk_size=7)
    pd.testing.assert_frame_equal(whole, chunked)
    path = tmp_path / "reviews.jsonl"
    reviews.to_json(path, orient="records", lines=True)
    pd.testing.assert_frame_equal(whole, Pipeline(steps).run(path, task=TASK))


def test_a_user_step_in_ten_lines_is_usable_from_the_registry(reviews):
    @register_step("text_length")
    class TextLength(Step):
        def __init__(self, field: str = "text") -> None:
            self.field = field

        def inputs(self, available, task):
            return [self.field]

        def adds(self, available, task):
            return ["length"]

        def run(self, batch, context):
            return pd.DataFrame({"length": batch[self.field].str.len()}, index=batch.index)

    assert "text_length" in registered_steps()
    out = Pipeline([make_step("text_length", {"field": "text"})]).run(reviews)
    assert out["length"].tolist() == reviews["text"].str.len().tolist()


def test_missing_columns_clashes_and_misbehaving_steps_are_refused(reviews):
    with pytest.raises(OrchestraError, match=r"needs columns \['body'\]"):
        Pipeline([LabelingFunctions("examples.review_lfs", fields=["body"])]).run(reviews, task=TASK)
    with pytest.raises(OrchestraError, match="already exist"):
        Pipeline([LabelingFunctions("examples.review_lfs"), LabelModelStep(output="gold")]).run(reviews, task=TASK)
    with pytest.raises(OrchestraError, match="no vote columns"):
        Pipeline([LabelModelStep()]).run(reviews, task=TASK)
    with pytest.raises(OrchestraError, match="no rows"):
        Pipeline([LabelModelStep()]).run(reviews.iloc[:0], task=TASK)

    class Liar(Step):
        def adds(self, available, task):
            return ["x"]

        def run(self, batch, context):
            return pd.DataFrame({"y": 1}, index=batch.index)

    with pytest.raises(OrchestraError, match="adds\\(\\) announced"):
        Pipeline([Liar()]).run(reviews)


def test_unknown_steps_and_bad_parameters_say_what_is_accepted():
    with pytest.raises(OrchestraError, match="unknown step 'promt'"):
        make_step("promt", {})
    with pytest.raises(OrchestraError, match="it accepts"):
        make_step("label_model", {"methd": "auto"})
    with pytest.raises(OrchestraError, match="method must be one of"):
        make_step("label_model", {"method": "best"})
    with pytest.raises(OrchestraError, match="cannot import LF module"):
        make_step("lfs", {"module": "no_such_module_xyz"})
