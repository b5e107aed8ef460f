"""YAML pipelines: schema errors with their line numbers and a fix, overrides, relative paths."""

import pytest

from orchestra import OrchestraError
from orchestra.build import check, prepare

from .conftest import write_pipeline


def issues_of(path, *overrides):
    return [(i.line, i.where, i.message, i.fix) for i in check(path, list(overrides))]


def test_a_good_file_prepares_with_paths_resolved_against_its_folder(tmp_path, monkeypatch):
    path = write_pipeline(tmp_path / "p")
    monkeypatch.chdir(tmp_path)
    prepared = prepare(path)
    assert prepared.data_path == (tmp_path / "p" / "reviews.csv")
    assert prepared.output_path == tmp_path / "p" / "out" / "reviews.parquet"
    assert len(prepared.frame) == 48
    assert [s.name for s in prepared.pipeline.steps] == ["lfs", "label_model"]
    assert check(path) == []


def test_every_error_is_reported_with_its_line_and_a_fix(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"                                   # 1
        "data: {path: reviews.csv, idd: id}\n"          # 2
        "steps:\n"                                      # 3
        "  - lfs: {module: review_lfs.py}\n"            # 4
        "  - label_model: {method: auto}\n"             # 5
        "output: {path: out.parquet}\n"                 # 6
        "run:\n"                                        # 7
        "  chunk_size: 0\n"                             # 8
    )
    found = issues_of(path)
    assert [(line, where) for line, where, _, _ in found] == [(2, "data.idd"), (8, "run.chunk_size")]
    assert "allowed keys here" in found[0][3]


def test_step_errors_point_at_the_step(tmp_path):
    path = write_pipeline(tmp_path / "p")
    text = path.read_text().replace("label_model: {method: auto", "label_modle: {method: auto")
    path.write_text(text)
    (line, where, message, fix), = issues_of(path)
    assert (line, where) == (8, "steps.1.label_modle")
    assert "unknown step" in message and "did you mean 'label_model'" in fix


def test_data_problems_point_at_data_path(tmp_path):
    path = write_pipeline(tmp_path / "p", data="missing.csv")
    (line, where, message, _), = issues_of(path)
    assert (line, where) == (2, "data.path") and "does not exist" in message


def test_missing_columns_point_at_the_step(tmp_path):
    path = write_pipeline(tmp_path / "p")
    path.write_text(path.read_text().replace("fields: [text]", "fields: [body]"))
    (line, where, message, _), = issues_of(path)
    assert (line, where) == (7, "steps.0") and "['body']" in message


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsteps:\n  - lfs: {module: a\n  - label_model: {}\n")
    (issue,) = check(path)
    assert "not valid YAML" in issue.message and "broken.yaml:" in issue.message
    with pytest.raises(OrchestraError, match="not valid YAML"):
        prepare(path)


def test_overrides_set_values_and_are_named_in_errors(tmp_path):
    path = write_pipeline(tmp_path / "p")
    prepared = prepare(path, ["run.chunk_size=5", "steps.1.label_model.method=majority"])
    assert prepared.config.run.chunk_size == 5
    assert prepared.pipeline.steps[1].method == "majority"
    (issue,) = check(path, ["run.chunk_size=-1"])
    assert "from --set run.chunk_size=-1" in issue.message
    with pytest.raises(OrchestraError, match="use an index"):
        prepare(path, ["steps.9.lfs.module=x"])
    with pytest.raises(OrchestraError, match="key.path=value"):
        prepare(path, ["run.chunk_size"])


def test_the_example_pipelines_validate_without_loading_a_model():
    from .conftest import EXAMPLES

    for name in ("reviews.yaml", "demo.yaml"):
        assert check(EXAMPLES / name) == [], name
    prepared = prepare(EXAMPLES / "demo.yaml")
    assert [s.name for s in prepared.pipeline.steps] == ["lfs", "prompt", "sentiment", "label_model"]
    assert prepared.pipeline.needs_engine


def test_the_legalbench_example_validates_against_the_real_data(shared_data):
    from .conftest import EXAMPLES

    assert check(EXAMPLES / "hearsay.yaml") == []
    prepared = prepare(EXAMPLES / "hearsay.yaml")
    assert len(prepared.frame) > 0 and prepared.config.data.gold == "answer"
    assert prepared.pipeline.steps[0].demo_prefix(prepared.task).count("\nAnswer: ") == 3


ISSUE_YAML = (
    "name: hearsay\n"
    "engine: {backend: local, model: smollm2-135m}\n"
    "data: {path: ../shared/data/legalbench/hearsay/test.tsv, id: index, gold: answer}\n"
    'task: {labels: ["No", "Yes"], input: "{text}"}\n'
    "steps:\n"
    '  - prompt: {template: "Is this hearsay? {text}\\nAnswer:", '
    "demos: {path: ../shared/data/legalbench/hearsay/train.tsv, k: 3}}\n"
    "  - label_model: {method: auto}\n"
    "output: {path: out/hearsay.parquet, report: out/hearsay.html}\n"
)


def test_the_issues_example_yaml_validates_verbatim(shared_data, tmp_path):
    """The YAML of issue 5, unchanged, in a folder beside ../shared (demo answers come from the gold column)."""
    (tmp_path / "shared").symlink_to(shared_data.parent)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "hearsay.yaml").write_text(ISSUE_YAML)
    assert check(folder / "hearsay.yaml") == []
    prepared = prepare(folder / "hearsay.yaml")
    step = prepared.pipeline.steps[0]
    assert step.demos["label"] == "answer"
    prefix = step.demo_prefix(prepared.task)
    assert prefix.count("\nAnswer: ") == 3 and prefix.startswith("Is this hearsay? ")
