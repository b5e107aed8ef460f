"""What the prompt step sends: templates and few-shot demonstrations (rendering only; no engine involved)."""

import pandas as pd
import pytest

from orchestra import OrchestraError, PromptStep, Task
from orchestra.build import prepare

from .conftest import write_pipeline

TASK = Task("hearsay", ["No", "Yes"], "Q: {text}\nA:", {"No": ["No"], "Yes": ["Yes"]})


def test_prompts_fill_the_template_after_the_demonstrations(tmp_path):
    demos = tmp_path / "train.tsv"
    demos.write_text("text\tanswer\nhe said it rained\tYes\nthe sky is blue\tNo\nunused\tYes\n")
    step = PromptStep(demos={"path": str(demos), "k": 2, "label": "answer"})
    batch = pd.DataFrame({"text": ["she told me so"]})
    (prompt,) = step.prompts(batch, TASK)
    assert prompt == "Q: he said it rained\nA: Yes\n\nQ: the sky is blue\nA: No\n\nQ: she told me so\nA:"
    plain = PromptStep(template="{text}?")
    assert plain.prompts(batch, TASK) == ["she told me so?"]


def test_demo_labels_may_be_class_indices_and_bad_ones_are_named(tmp_path):
    demos = tmp_path / "train.jsonl"
    demos.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 7}\n')
    assert PromptStep(demos={"path": str(demos), "k": 1}).demo_prefix(TASK).endswith("A: Yes\n\n")
    with pytest.raises(OrchestraError, match="demo 2 has label=7"):
        PromptStep(demos={"path": str(demos), "k": 2}).demo_prefix(TASK)
    with pytest.raises(OrchestraError, match="demos takes path, k, label, separator"):
        PromptStep(demos={"file": str(demos)})
    with pytest.raises(OrchestraError, match="does not exist"):
        PromptStep(demos={"path": str(tmp_path / "none.tsv")})


def test_yaml_demo_paths_resolve_against_the_yaml_folder(tmp_path):
    path = write_pipeline(tmp_path / "p")
    (tmp_path / "p" / "demos.csv").write_text("id,text,label\n1,great,1\n")
    text = path.read_text().replace(
        "  - label_model:", "  - prompt: {demos: {path: demos.csv, k: 1}}\n  - label_model:")
    path.write_text("engine: {backend: local, model: smollm2-135m}\n" + text)
    prepared = prepare(path)
    step = prepared.pipeline.steps[1]
    assert step.demos["path"] == str(tmp_path / "p" / "demos.csv")
    assert step.demo_prefix(prepared.task) == "great positive\n\n"
