"""Chains and AMA on the real default model over real LegalBench rows, and the ``ama`` pipeline step."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prompting.ama import AMA
from prompting.chains import Chain, ChainStep, parse_answer, plain_chain, question_answer_chain, run_chain
from prompting.tasks import get_task
from prompting.templates import PromptTemplate

ROOT = Path(__file__).resolve().parents[2]


class CountingEngine:
    """The real engine, counting the calls made to it (not a mock: every call goes through)."""

    def __init__(self, llm):
        self.llm = llm
        self.calls: list[tuple[str, int]] = []

    def score(self, prompts, choices):
        self.calls.append(("score", len(prompts)))
        return self.llm.score(prompts, choices)

    def generate(self, prompts, params):
        self.calls.append(("generate", len(prompts)))
        return self.llm.generate(prompts, params)


@pytest.fixture(scope="module")
def hearsay(shared_data):
    task = get_task("hearsay")
    train, test = task.load(limit=4, seed=1)
    return task, train, test


def test_ama_runs_every_chain_step_as_one_engine_call(llm, hearsay):
    task, train, test = hearsay
    rows = test.to_dict(orient="records")
    chains = [
        *task.chains(2),
        question_answer_chain("qa", "{{ text }}", "{{ text | clip(200) }}", verbalizers=[["no"], ["yes"]],
                              max_tokens=12),
    ]
    engine = CountingEngine(llm)
    result = AMA(chains, cardinality=2).run(engine, rows, task.pool(train))
    assert result.votes.shape == (4, 3) and result.votes.dtype == np.int64
    assert set(np.unique(result.votes)) <= {-1, 0, 1}
    # chains 1 and 2 (batch-calibrated): one score call each; chain 3: question() then answer(), one call each
    assert engine.calls == [("score", 4), ("score", 4), ("generate", 4), ("generate", 4)]
    cf = run_chain(engine, plain_chain("cf", "{{ text }}\nAnswer:", [" No", " Yes"], calibrate="content_free"), rows)
    assert engine.calls[-1] == ("score", 5) and cf.votes.shape == (4,), "rows + the content-free prompt, one call"
    assert result.calls == 4
    qa = result.outputs[2]
    assert len(qa.texts["question"]) == 4 and len(qa.texts["answer"]) == 4
    assert [parse_answer(a, [["no"], ["yes"]]) for a in qa.texts["answer"]] == list(result.votes[:, 2])
    preds = AMA(chains, cardinality=2).aggregate(result.votes)
    assert preds.shape == (4,) and set(np.unique(preds)) <= {0, 1}


def test_generated_answers_that_match_no_verbalizer_abstain(llm, hearsay):
    task, train, test = hearsay
    step = ChainStep(PromptTemplate(example="{{ text }}\nIs there hearsay?"), max_tokens=4)
    chain = Chain("gen", (step,), verbalizers=(("zqxv",), ("vxqz",)))
    out = run_chain(llm, chain, test.to_dict(orient="records"), task.pool(train))
    assert (out.votes == -1).all() and out.calls == 1
    assert all(isinstance(t, str) for t in out.texts["answer"])


def test_scored_chain_is_deterministic_and_calibration_changes_only_the_decision(llm, hearsay):
    task, train, test = hearsay
    rows = test.to_dict(orient="records")
    chain = plain_chain("p", "{{ text }}\nQuestion: Is there hearsay?\nAnswer:", [" No", " Yes"], k=3)
    a = run_chain(llm, chain, rows, task.pool(train))
    b = run_chain(llm, chain, rows, task.pool(train))
    np.testing.assert_array_equal(a.votes, b.votes)
    assert a.scores.shape == (4, 2) and a.content_free.shape == (2,)
    np.testing.assert_array_equal(a.recalibrate("none"), a.raw_votes)
    np.testing.assert_array_equal(a.recalibrate("content_free"), a.votes)


def test_ama_step_in_a_pipeline_feeds_the_label_model(llm, hearsay):
    from orchestra import LabelModelStep, Pipeline, Task
    from orchestra.steps.ama import AMAStep

    _, _, test = hearsay
    task = Task("hearsay", ["No", "Yes"], "{text}")
    out = Pipeline([AMAStep(library="hearsay", chains=3), LabelModelStep(dependencies="learn")]).run(
        test[["text", "answer"]], engine=llm, task=task)
    votes = [c for c in out.columns if c.startswith("vote_ama_")]
    assert len(votes) == 3 and out[votes].isin([-1, 0, 1]).all().all()
    assert out["label"].isin([0, 1]).all() and {"proba_No", "proba_Yes"} <= set(out.columns)


def test_ama_step_builds_chains_from_the_task_verbalizers_and_a_demo_file(llm, hearsay, shared_data):
    from orchestra import Pipeline, Task
    from orchestra.steps.ama import AMAStep

    _, _, test = hearsay
    task = Task("hearsay", ["No", "Yes"], "Evidence: {text}", {"No": ["No"], "Yes": ["Yes"]})
    step = AMAStep(chains=3, k=1, demos={"path": str(shared_data / "legalbench" / "hearsay" / "train.tsv"),
                                    "label": "answer"})
    out = Pipeline([step]).run(test[["text"]], engine=llm, task=task)
    assert out.shape[1] == 4 and out.filter(like="vote_").isin([-1, 0, 1]).all().all()


def test_ama_step_errors_name_the_fix():
    from orchestra import Task
    from orchestra.errors import OrchestraError
    from orchestra.steps.ama import AMAStep

    with pytest.raises(OrchestraError, match="3 to 10"):
        AMAStep(chains=11)
    with pytest.raises(OrchestraError, match="unknown library task"):
        AMAStep(library="nope")
    step = AMAStep(library="sst2")
    with pytest.raises(OrchestraError, match="no verbalizers"):
        step.adds([], Task("t", ["neg", "pos", "neutral"], "{text}"))


def test_ama_yaml_validates_and_runs(llm, shared_data):
    from orchestra.build import prepare

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "orchestra.cli", "validate", "examples/ama_hearsay.yaml"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    prepared = prepare(ROOT / "examples" / "ama_hearsay.yaml", limit=2)
    out = prepared.pipeline.run(prepared.frame, engine=llm, task=prepared.task)
    assert len([c for c in out.columns if c.startswith("vote_ama_")]) == 5
    assert out["label"].isin([0, 1]).all()
    assert isinstance(out, pd.DataFrame)


@pytest.mark.slow
def test_benchmark_script_writes_the_documented_keys(shared_data, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "benchmarks/ama_embroid.py", "--tasks",
                           str(shared_data / "legalbench" / "hearsay"), "--limit", "8", "--chains", "3", "--json",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    report = json.loads(out.read_text())
    result = report["tasks"]["hearsay"]
    for key in ("zero_shot", "few_shot", "best_chain", "majority_vote", "ama", "ama_embroid"):
        assert 0 <= result[key]["accuracy"] <= 100 and 0 <= result[key]["macro_f1"] <= 100, key
    assert len(result["chains"]) == 3 and result["best_chain"]["oracle"] is True
    assert result["n"] == 8 and result["wall_s"] > 0 and result["tokens_per_example"] > 0
    assert 0 <= result["prefix_cache_hit_rate"] <= 1
    assert "| hearsay | 8 |" in done.stdout
