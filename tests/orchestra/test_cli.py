"""The orchestra CLI, run as a real subprocess on real WRENCH votes."""

import subprocess
import sys

import numpy as np
import pandas as pd

from labelmodel import LabelModel
from labelmodel.datasets import load_wrench


def run(*args, cwd=None):
    command = [sys.executable, "-m", "orchestra.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def test_label_writes_labels_for_wrench_votes(shared_data, tmp_path):
    train = load_wrench(shared_data / "wrench" / "youtube", "train")
    votes = pd.DataFrame(train.L, columns=[f"vote_{j}" for j in range(train.L.shape[1])])
    votes["gold"] = train.y
    path = tmp_path / "votes.parquet"
    votes.to_parquet(path)
    out = tmp_path / "labels.csv"
    done = run("label", str(path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "model: triplet" in done.stdout
    labeled = pd.read_csv(out)
    assert len(labeled) == len(votes)
    np.testing.assert_allclose(labeled[["proba_0", "proba_1"]].sum(axis=1), 1.0, atol=1e-6)
    expected = LabelModel(cardinality=2).fit(votes.filter(like="vote_")).predict(votes.filter(like="vote_"))
    np.testing.assert_array_equal(labeled["label"], expected)
    assert (labeled["label"] == labeled["gold"]).mean() > 0.6


def test_bad_input_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "votes.csv"
    bad.write_text("vote_a,vote_b\n0,1\n0.5,1\n")
    out = tmp_path / "out.csv"
    done = run("label", str(bad), "--out", str(out))
    assert done.returncode == 2
    assert "integers" in done.stderr
    assert not out.exists()
    missing = run("label", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert run("label", str(bad), "--columns", "x").returncode == 2


def test_demo_runs():
    done = run("demo")
    assert done.returncode == 0, done.stderr
    assert "majority vote accuracy" in done.stdout
