"""Reports of a real job: summary printed, summary.json and a self-contained HTML page with embedded plots;
and the progress display on a real terminal (a pseudo-terminal) versus a pipe."""

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import termios

import numpy as np
import pandas as pd
import pytest

from .conftest import EXAMPLES, ROOT, cli_command, cli_env


def test_the_report_holds_every_figure_the_issue_lists(cli, pipeline_yaml):
    project = pipeline_yaml.parent
    pipeline_yaml.write_text(pipeline_yaml.read_text().replace("method: auto", "method: dawid_skene"))
    done = cli("run", str(pipeline_yaml))
    assert done.returncode == 0, done.stderr
    assert "label model: dawid_skene" in done.stdout and "labels: negative:" in done.stdout
    job = project / "out" / "reviews.parquet.job"
    summary = json.loads((job / "summary.json").read_text())
    frame = pd.read_parquet(project / "out" / "reviews.parquet")
    votes = [c for c in frame.columns if c.startswith("vote_")]

    dist = summary["label_distribution"]
    assert sum(dist.values()) == len(frame) == summary["rows"]
    assert dist["positive"] == int((frame["weak_label"] == 1).sum())
    assert sorted(summary["sources"]) == sorted(votes)
    for name, row in summary["sources"].items():
        covered = frame[name] >= 0
        assert row["Coverage"] == pytest.approx(covered.mean(), abs=1e-9)
        assert {"Overlaps", "Conflicts", "Learned accuracy", "Empirical accuracy"} <= set(row)
        assert 0.5 < row["Learned accuracy"] <= 1.0, "dawid_skene learns an accuracy per source"
    matrix = np.array(summary["agreement"]["matrix"], dtype=float)
    assert summary["agreement"]["sources"] == votes and matrix.shape == (len(votes), len(votes))
    assert np.allclose(np.diag(matrix), 1.0)
    gold = summary["gold"]
    assert gold["rows"] == len(frame)
    assert gold["accuracy"] == round(float((frame["weak_label"] == frame["label"]).mean()), 4)
    confusion = np.array(gold["confusion"]["matrix"])
    assert confusion.sum() == int((frame["weak_label"] >= 0).sum())
    assert f"against gold (48 rows): accuracy {gold['accuracy']:.3f}" in done.stdout

    page = (project / "out" / "reviews.html").read_text()
    assert page == (job / "report.html").read_text()
    for heading in ("Label distribution", "Against gold", "Sources", "Agreement between sources"):
        assert heading in page
    images = re.findall(r"<img alt='([^']+)' src='data:image/png;base64,", page)
    assert images == ["label distribution", "sources", "confusion matrix", "agreement"]
    assert "<script" not in page and "src='http" not in page and 'href="http' not in page


def test_progress_lines_in_a_pipe(cli, pipeline_yaml):
    piped = cli("run", str(pipeline_yaml))
    assert piped.returncode == 0
    assert re.search(r"orchestra: reviews: 48/48 rows \(100%\), [\d.e+]+ rows/s", piped.stderr)
    assert "\r" not in piped.stderr


def test_progress_is_a_bar_with_rows_tokens_and_eta_on_a_terminal(llm, tmp_path):
    """A real pseudo-terminal on stderr: tqdm's bar (rows/s, ETA) with the engine's tokens/s and cache hits."""
    project = tmp_path / "examples"
    shutil.copytree(EXAMPLES, project, ignore=shutil.ignore_patterns("out", "__pycache__"))
    args = ("run", str(project / "demo.yaml"), "--limit", "4", "--set", "run.chunk_size=2",
            "--set", "engine.options={max_model_len: 256, kv_cache_memory: 67108864}")
    shown = read_pty(cli_command(*args), columns=160)
    assert "\r" in shown, "tqdm redraws one line on a terminal"
    assert re.search(r"demo: +50%\|.*\| 2/4 \[[\d:]+<[\d:?]+, +[\d.?]+s?/?rows?/?s?, [\d.]+ tokens/s, 0 cache hits\]",
                     shown), shown[-600:]
    assert "orchestra: demo: 4/4 rows" not in shown, "no plain log lines on a terminal"


def read_pty(command, columns=None):
    """Run ``command`` with stderr on a new pseudo-terminal (of ``columns`` width, or the size 0 x 0 some CI
    runners report); return what it drew."""
    leader, follower = pty.openpty()
    if columns:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(command, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=600) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_that_reports_no_size_still_gets_a_bar():
    code = "from orchestra.cli import Progress; p = Progress('x'); p(0, 4); p(2, 4); p(4, 4); p.close()"
    import sys

    shown = read_pty([sys.executable, "-c", code])
    assert "x: 100%|" in shown and "4/4 [" in shown
