"""The ``embroid`` step on real LegalBench rows with the real MiniLM embedder: in a Pipeline, from YAML, in a
resumed job, and its input checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from orchestra import Pipeline
from orchestra.errors import OrchestraError
from orchestra.steps import make_step
from orchestra.task import Task

from .conftest import EXAMPLES

ROWS = 60

PIPELINE = """\
name: overruling
data: {{path: rows.tsv, id: index, gold: answer}}
task: {{labels: ["No", "Yes"], input: "{{text}}"}}
steps:
  - lfs: {{module: overruling_lfs.py, fields: [text]}}
  - embroid: {{spaces: [minilm], k: 10, max_length: 64}}
  - label_model: {{method: triplet}}
output: {{path: out/overruling.parquet}}
run: {{chunk_size: 20, seed: 0}}
"""

TASK = Task("overruling", ["No", "Yes"], "{text}")


@pytest.fixture(scope="module")
def project(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("overruling")
    # the test file is sorted by answer: take a seeded, balanced sample
    table = pd.read_csv(shared_data / "legalbench" / "overruling" / "test.tsv", sep="\t")
    rows = pd.concat([table[table["answer"] == a].sample(ROWS // 2, random_state=0) for a in ("Yes", "No")])
    rows.sample(frac=1.0, random_state=0).to_csv(folder / "rows.tsv", sep="\t", index=False)
    shutil.copy(EXAMPLES / "overruling_lfs.py", folder / "overruling_lfs.py")
    (folder / "pipeline.yaml").write_text(PIPELINE.format())
    return folder


@pytest.fixture(scope="module")
def minilm_neighbors(project):
    from prompting.embedders import SentenceEmbedder
    from prompting.neighbors import nearest_neighbors

    texts = pd.read_csv(project / "rows.tsv", sep="\t")["text"].tolist()
    vectors = SentenceEmbedder(max_length=64).encode(texts)
    return vectors, nearest_neighbors(vectors, 10)


def test_pipeline_adds_smoothed_columns_that_the_label_model_uses(project, minilm_neighbors):
    from prompting.embroid import smooth_votes

    vectors, knn = minilm_neighbors
    data = pd.read_csv(project / "rows.tsv", sep="\t")
    data["vec"] = list(vectors)  # the same MiniLM vectors as a precomputed-embedding column
    steps = [
        make_step("lfs", {"module": str(project / "overruling_lfs.py")}),
        make_step("embroid", {"spaces": ["minilm", "vec"], "max_length": 64}),
        make_step("label_model", {"method": "triplet"}),
    ]
    context_out = {}
    pipeline = Pipeline(steps)
    from orchestra.steps.base import Context

    context = Context(task=TASK, seed=0, artifacts=context_out)
    out = pipeline.run(data, context=context)
    votes = [f"vote_{n}" for n in ("overrule", "disapprove", "inconsistent", "cites", "holds")]
    added = [f"{v}@embroid_{s}" for s in ("minilm", "vec") for v in votes]
    assert all(c in out.columns for c in added)
    expected = smooth_votes(out[votes].to_numpy(), [knn], k=10, cardinality=2)
    np.testing.assert_array_equal(out[added[:5]].to_numpy(), expected)
    np.testing.assert_array_equal(out[added[5:]].to_numpy(), expected)
    # the smoothed columns cover rows the keyword LFs abstain on
    assert (out[added[:5]] >= 0).any(axis=1).mean() > (out[votes] >= 0).any(axis=1).mean()
    assert context_out["label_model"]["columns"] == votes + added
    assert context_out["embroid"]["spaces"] == ["minilm", "vec"] and len(context_out["embroid"]["thresholds"]) == 5
    assert out["label"].isin([0, 1]).all()


def test_yaml_job_runs_and_resumes_to_the_same_result(project):
    from orchestra.build import prepare
    from orchestra.job import MANIFEST, Job
    from orchestra.steps.base import Context

    prepared = prepare(project / "pipeline.yaml")
    assert [s.step_type for s in prepared.pipeline.steps] == ["lfs", "embroid", "label_model"]
    job_dir = project / "job"
    first = Job(prepared, job_dir).run(Context(task=prepared.task, seed=0))
    assert first.chunks_run == 3
    frame = first.frame
    smoothed = [c for c in frame.columns if "@embroid_minilm" in c]
    assert len(smoothed) == 5 and (frame[smoothed] >= 0).to_numpy().mean() > 0.5
    # a job killed after its first chunk: forget chunks 1 and 2, resume, same table
    manifest = json.loads((job_dir / MANIFEST).read_text())
    manifest["done"] = {"0": manifest["done"]["0"]}
    manifest["state"] = "running"
    (job_dir / MANIFEST).write_text(json.dumps(manifest))
    resumed = Job(prepare(project / "pipeline.yaml"), job_dir).run(Context(task=prepared.task, seed=0))
    assert resumed.chunks_run == 2 and resumed.chunks_resumed == 1
    pd.testing.assert_frame_equal(resumed.frame, frame)
    gold = (frame["answer"] == "Yes").astype(int)
    assert (frame["label"] == gold).mean() > 0.6  # five keyword LFs on a balanced sample: 0.63, above chance


def test_bad_parameters_and_inputs_are_named(project):
    with pytest.raises(OrchestraError, match="unknown spaces \\['bert'\\]"):
        Pipeline([make_step("embroid", {"spaces": ["bert"], "columns": ["vote_a"]})]).plan(["text", "vote_a"], TASK)
    with pytest.raises(OrchestraError, match="no vote columns"):
        Pipeline([make_step("embroid", {})]).plan(["text"], TASK)
    with pytest.raises(OrchestraError, match="k must be a positive integer"):
        make_step("embroid", {"k": 0})
    with pytest.raises(OrchestraError, match="tau_pos"):
        make_step("embroid", {"tau_pos": 2})
    with pytest.raises(OrchestraError, match="abstains must be one of"):
        make_step("embroid", {"abstains": "drop"})
    with pytest.raises(OrchestraError, match="it accepts"):
        make_step("embroid", {"neighbours": 5})
    engine_step = make_step("embroid", {"spaces": ["engine"]})
    assert engine_step.needs_engine and not make_step("embroid", {}).needs_engine
    with pytest.raises(OrchestraError, match="call a model"):
        Pipeline([engine_step]).run(pd.DataFrame({"text": ["a", "b"], "vote_a": [0, 1]}), task=TASK)
    tiny = pd.DataFrame({"text": ["a", "b", "c"], "vote_a": [0, 1, 1], "vec": [[1, 0], [0, 1], [1, 1]]})
    with pytest.raises(OrchestraError, match="only 3 rows"):
        Pipeline([make_step("embroid", {"spaces": ["vec"]})]).run(tiny, task=TASK)
    step = make_step("embroid", {"spaces": ["vec"], "k": 2})
    out = Pipeline([step]).run(tiny, task=TASK)
    assert list(out.columns[3:]) == ["vote_a@embroid_vec"]
    assert step.vote_columns(list(out.columns)) == ["vote_a"], "Embroid columns are not smoothed again"


def test_engine_space_uses_the_pipelines_engine(project, llm, tmp_path):
    """The 'engine' space embeds with our engine's LLM.embed, also behind the response cache."""
    from engine.cache import CachedEngine
    from prompting.embedders import EngineEmbedder
    from prompting.embroid import smooth_votes
    from prompting.neighbors import nearest_neighbors

    data = pd.read_csv(project / "rows.tsv", sep="\t").head(8)
    data["text"] = data["text"].str.slice(0, 100)  # the engine on 2 CPU cores: keep it short
    data["vote_a"] = (data["answer"] == "Yes").astype(int).where(data.index % 3 != 0, -1)
    step = make_step("embroid", {"spaces": ["engine"], "k": 3})
    out = Pipeline([step]).run(data, engine=CachedEngine(llm, tmp_path / "cache.sqlite"), task=TASK)
    knn = nearest_neighbors(EngineEmbedder(llm).encode(data["text"].tolist()), 3)
    expected = smooth_votes(data[["vote_a"]].to_numpy(), [knn], k=3, cardinality=2)[:, 0]
    np.testing.assert_array_equal(out["vote_a@embroid_engine"].to_numpy(), expected)
