"""Fixtures for the orchestra tests: a CLI runner (real subprocess) and a pipeline folder with real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

PIPELINE = """\
name: reviews
data: {{path: {data}, id: id, gold: label}}
task:
  labels: [negative, positive]
  input: "{{text}}"
steps:
  - lfs: {{module: review_lfs.py, fields: [text]}}
  - label_model: {{method: auto, output: weak_label}}
output: {{path: out/reviews.{suffix}, report: out/reviews.html}}
run: {{chunk_size: {chunk_size}, seed: 0}}
"""


def cli_command(*args: str) -> list[str]:
    """The command line of ``orchestra ARGS`` run from the worktree's code."""
    return [sys.executable, "-m", "orchestra.cli", *args]


def cli_env() -> dict[str, str]:
    """Environment that makes the worktree's packages win."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """Run ``orchestra ARGS`` as a subprocess from the repository root."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=ROOT, env=cli_env(),
                              timeout=timeout)

    return run


def write_pipeline(folder: Path, data: str = "reviews.csv", suffix: str = "parquet", chunk_size: int = 16) -> Path:
    """A pipeline folder: the example reviews, their LF module and a YAML over them."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "inputs" / "reviews.csv", folder / "reviews.csv")
    shutil.copy(EXAMPLES / "review_lfs.py", folder / "review_lfs.py")
    path = folder / "pipeline.yaml"
    path.write_text(PIPELINE.format(data=data, suffix=suffix, chunk_size=chunk_size))
    return path


@pytest.fixture
def pipeline_yaml(tmp_path: Path) -> Path:
    """A pipeline YAML over the example reviews in a fresh folder."""
    return write_pipeline(tmp_path / "project")


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder`` (relative paths)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
