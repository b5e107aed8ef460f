"""``orchestra run / validate / status / report`` as real subprocesses on real files."""

import os
import shutil

import pandas as pd
import pytest

from .conftest import EXAMPLES, files_under


def test_run_status_report_and_an_idempotent_rerun(cli, pipeline_yaml):
    project = pipeline_yaml.parent
    done = cli("run", str(pipeline_yaml))
    assert done.returncode == 0, done.stderr
    assert "48 rows" in done.stdout and "3 chunks run, 0 resumed" in done.stdout
    assert "cache: no model calls" in done.stdout
    assert "48/48 rows (100%)" in done.stderr and "rows/s" in done.stderr, "no TTY: plain progress lines"
    assert "against gold (48 rows): accuracy" in done.stdout
    output = project / "out" / "reviews.parquet"
    frame = pd.read_parquet(output)
    assert len(frame) == 48 and {"weak_label", "proba_negative", "proba_positive"} <= set(frame.columns)
    assert (frame["weak_label"] == frame["label"]).mean() > 0.9
    html = (project / "out" / "reviews.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Label distribution" in html and "<script" not in html
    job = project / "out" / "reviews.parquet.job"
    status = cli("status", str(job))
    assert status.returncode == 0 and "done" in status.stdout and "3/3 committed (48/48 rows" in status.stdout
    before = output.read_bytes()
    again = cli("run", str(pipeline_yaml))
    assert again.returncode == 0, again.stderr
    assert "0 chunks run, 3 resumed" in again.stdout
    assert output.read_bytes() == before
    (job / "summary.json").unlink()
    report = cli("report", str(job))
    assert report.returncode == 0, report.stderr
    assert (job / "summary.json").exists() and "label model:" in report.stdout


def test_limit_and_set_change_the_job_and_a_changed_pipeline_is_refused(cli, pipeline_yaml):
    project = pipeline_yaml.parent
    job = str(project / "job")
    done = cli("run", str(pipeline_yaml), "--job-dir", job, "--limit", "20", "--set", "run.chunk_size=5")
    assert done.returncode == 0, done.stderr
    assert "20 rows" in done.stdout and "4 chunks run" in done.stdout
    output = project / "out" / "reviews.parquet"
    before = output.read_bytes()
    changed = cli("run", str(pipeline_yaml), "--job-dir", job, "--limit", "20", "--set", "run.chunk_size=5",
                  "--set", "steps.1.label_model.method=majority")
    assert changed.returncode == 2
    assert "holds a different job (changed: steps)" in changed.stderr and "new --job-dir" in changed.stderr
    (project / "review_lfs.py").write_text((project / "review_lfs.py").read_text().replace('"love"', '"adore"'))
    edited = cli("run", str(pipeline_yaml), "--job-dir", job, "--limit", "20", "--set", "run.chunk_size=5")
    assert edited.returncode == 2 and "changed: steps" in edited.stderr, "editing an LF changes the job"
    assert output.read_bytes() == before


def test_validate_reports_every_problem_and_passes_good_files(cli, pipeline_yaml, tmp_path):
    good = cli("validate", str(pipeline_yaml))
    assert good.returncode == 0 and "OK — 48 records" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata: {path: nowhere.csv}\nsteps:\n  - promt: {}\noutput: {path: o.parquet}\n")
    done = cli("validate", str(bad))
    assert done.returncode == 2
    assert f"{bad}:4: steps.0.promt: unknown step 'promt'" in done.stderr
    assert f"{bad}:2: data.path:" in done.stderr and "2 problem(s)" in done.stderr
    assert "fix: did you mean 'prompt'?" in done.stderr


def bad_malformed(project):
    (project / "pipeline.yaml").write_text("name: x\nsteps:\n  - lfs: {module: a\n")
    return "not valid YAML"


def bad_unknown_step(project):
    path = project / "pipeline.yaml"
    path.write_text(path.read_text().replace("- label_model:", "- label_modl:"))
    return "unknown step 'label_modl'"


def bad_missing_column(project):
    path = project / "pipeline.yaml"
    path.write_text(path.read_text().replace("fields: [text]", "fields: [body]"))
    return "needs columns ['body']"


def bad_empty_data(project):
    (project / "reviews.csv").write_text("id,text,label\n")
    return "no records"


def bad_duplicate_ids(project):
    path = project / "reviews.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    return "ids in column 'id' repeat: 1 (line 2), 1 (line 50)"


def bad_unreadable_file(project):
    (project / "reviews.csv").write_bytes(b"id,text,label\n1,\xff\xfe broken,1\n")
    return "reviews.csv:2: bytes b'\\xff' at column 3 are not UTF-8"


def bad_data_is_a_folder(project):
    (project / "reviews.csv").unlink()
    (project / "reviews.csv").mkdir()
    return "is not a file"


def bad_missing_gold(project):
    path = project / "pipeline.yaml"
    path.write_text(path.read_text().replace("gold: label", "gold: answer"))
    return "no column(s) ['answer']"


@pytest.mark.parametrize("breaker", [bad_malformed, bad_unknown_step, bad_missing_column, bad_empty_data,
                                     bad_duplicate_ids, bad_unreadable_file, bad_data_is_a_folder, bad_missing_gold])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(cli, pipeline_yaml, breaker):
    project = pipeline_yaml.parent
    message = breaker(project)
    before = files_under(project)
    done = cli("run", str(pipeline_yaml))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert files_under(project) == before


def test_runtime_failure_exits_1(cli, pipeline_yaml):
    out = pipeline_yaml.parent / "out" / "reviews.parquet"
    out.mkdir(parents=True)
    done = cli("run", str(pipeline_yaml))
    assert done.returncode == 1
    assert "orchestra: failed:" in done.stderr


def test_status_and_report_of_a_folder_that_is_not_a_job(cli, tmp_path):
    for command in ("status", "report"):
        done = cli(command, str(tmp_path))
        assert done.returncode == 2 and "not a job directory" in done.stderr


def test_the_example_pipeline_runs(cli, tmp_path):
    project = tmp_path / "examples"
    shutil.copytree(EXAMPLES, project, ignore=shutil.ignore_patterns("out", "__pycache__"))
    done = cli("run", str(project / "reviews.yaml"))
    assert done.returncode == 0, done.stderr
    assert os.path.exists(project / "out" / "reviews.parquet")


USER_STEP = '''
import pandas as pd

from orchestra import Step, register_step


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
'''


def test_a_user_step_from_a_plugin_runs_from_yaml(cli, pipeline_yaml):
    project = pipeline_yaml.parent
    (project / "my_steps.py").write_text(USER_STEP)
    text = pipeline_yaml.read_text().replace("steps:\n", "plugins: [my_steps.py]\nsteps:\n  - text_length: {}\n")
    pipeline_yaml.write_text(text)
    done = cli("run", str(pipeline_yaml))
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(project / "out" / "reviews.parquet")
    assert frame["length"].tolist() == frame["text"].str.len().tolist()
    (project / "my_steps.py").write_text(USER_STEP.replace("str.len()", "str.len() + 1"))
    changed = cli("run", str(pipeline_yaml))
    assert changed.returncode == 2 and "plugins_sha256" in changed.stderr


def test_a_missing_model_is_bad_input_found_before_anything_is_written(cli, tmp_path):
    project = tmp_path / "examples"
    shutil.copytree(EXAMPLES, project, ignore=shutil.ignore_patterns("out", "__pycache__"))
    before = files_under(project)
    done = cli("run", str(project / "demo.yaml"), "--set", "engine.model=models/missing.gguf")
    assert done.returncode == 2, done.stderr
    assert f"engine.model: unknown model '{project / 'models' / 'missing.gguf'}'" in done.stderr, \
        "a relative model path resolves against the YAML's folder"
    assert files_under(project) == before
