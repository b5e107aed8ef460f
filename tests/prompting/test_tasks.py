"""The task library and the LegalBench-layout loader (real folders and tiny ones made here)."""

from pathlib import Path

import pytest

from prompting.ama import AMA
from prompting.errors import PromptingError
from prompting.tasks import BENCHMARK_TASKS, TASKS, get_task, legalbench_task, read_legalbench_dir


def write(folder: Path, header: str, rows: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", rows[:3]), ("test", rows[3:])):
        (folder / f"{split}.tsv").write_text("\n".join([header, *part]) + "\n")


def test_generic_loader_on_a_real_legalbench_folder(shared_data):
    train, test, labels = read_legalbench_dir(shared_data / "legalbench" / "hearsay")
    assert labels == ["No", "Yes"]
    assert len(train) == 5 and len(test) == 94
    assert {"text", "label", "answer"} <= set(test.columns)
    assert (test["label"] == (test["answer"] == "Yes")).all()
    task = legalbench_task(shared_data / "legalbench" / "hearsay")
    chains = task.chains(5)
    assert len(chains) == 5 and all(c.cardinality == 2 for c in chains)
    assert all(c.steps[-1].template.k == 3 for c in chains), "no question known: every chain is few-shot"


def test_generic_loader_on_a_real_folder_without_a_text_column(shared_data):
    train, test, labels = read_legalbench_dir(shared_data / "legalbench" / "ucc_v_common_law")
    assert labels == ["Common Law", "UCC"]
    assert test["text"].str.len().gt(0).all()


def test_tiny_yes_no_folder(tmp_path):
    write(tmp_path / "yn", "index\ttext\tanswer", [f"{i}\tclause {i}\t{'Yes' if i % 2 else 'No'}" for i in range(8)])
    task = legalbench_task(tmp_path / "yn")
    train, test = task.load()
    assert task.labels == ["No", "Yes"] and task.shape == "yes/no"
    assert list(test["label"]) == [1, 0, 1, 0, 1]
    assert task.chains(3)[0].steps[-1].choices == ((" No",), (" Yes",))


def test_tiny_multi_class_folder_renders_other_columns_as_text(tmp_path):
    rows = [f"{i}\tmark {i}\tgood {i}\t{['generic', 'fanciful', 'arbitrary'][i % 3]}" for i in range(9)]
    write(tmp_path / "mc", "index\tmark\tgoods\tanswer", rows)
    task = legalbench_task(tmp_path / "mc")
    train, test = task.load()
    assert task.labels == ["arbitrary", "fanciful", "generic"] and task.shape == "multi-class"
    assert test["text"].iloc[0] == "Mark: mark 3\nGoods: good 3"
    chains = task.chains(4)
    assert chains[0].steps[-1].choices == ((" arbitrary",), (" fanciful",), (" generic",))
    assert len({c.name for c in chains}) == 4


def test_layout_errors_name_the_fix(tmp_path):
    (tmp_path / "bad").mkdir()
    with pytest.raises(PromptingError, match="train.tsv is missing"):
        legalbench_task(tmp_path / "bad")
    write(tmp_path / "noanswer", "index\ttext\tlabel", [f"{i}\tx\tYes" for i in range(5)])
    with pytest.raises(PromptingError, match="no 'answer' column"):
        legalbench_task(tmp_path / "noanswer")


def test_unknown_task_and_chain_count_out_of_range():
    with pytest.raises(PromptingError, match="unknown task 'nope'.*legalbench_task"):
        get_task("nope")
    with pytest.raises(PromptingError, match="3 to 10 chains"):
        AMA([])
    assert set(BENCHMARK_TASKS) <= set(TASKS) and len(BENCHMARK_TASKS) >= 12


@pytest.mark.parametrize("name", BENCHMARK_TASKS + ["unfair_tos"])
def test_every_library_task_loads_with_text_and_label_and_builds_its_chains(shared_data, name):
    task = get_task(name)
    train, test = task.load(limit=20)
    assert len(test) == 20 and len(train) > 0
    assert {"text", "label"} <= set(test.columns)
    assert test["label"].between(0, task.cardinality - 1).all()
    for count in (3, 10):
        chains = task.chains(count)
        assert len(chains) == count and len({c.name for c in chains}) == count
        assert all(c.cardinality == task.cardinality for c in chains)
        assert all(set(c.fields) <= set(test.columns) for c in chains)
    assert task.few_shot().steps[-1].template.k == 3 and task.zero_shot().steps[-1].template.k == 0
