"""Task: labels, templates, verbalizers."""

import pytest

from orchestra import OrchestraError, Task
from orchestra.task import template_fields


def test_task_defaults_verbalizers_to_label_names_and_renders_input():
    task = Task("sentiment", ["negative", "positive"], "Review: {text}", {"positive": ["good", "great"]})
    assert task.cardinality == 2
    assert task.fields == ["text"]
    assert task.format({"text": "fine", "id": 3}) == "Review: fine"
    assert task.choices() == (["negative", "good", "great"], [0, 1, 1])


def test_parse_maps_answers_to_classes_and_abstains_otherwise():
    task = Task("yn", ["No", "Yes"])
    assert task.parse(" Yes.") == 1
    assert task.parse("no") == 0
    assert task.parse("Yes it is") == 1
    assert task.parse("maybe") == -1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ["a"]}, "at least 2 labels"),
        ({"labels": ["a", "a"]}, "repeated labels"),
        ({"labels": ["a", "b"], "verbalizers": {"c": ["x"]}}, "not in labels"),
        ({"labels": ["a", "b"], "verbalizers": {"a": ["x"], "b": ["X"]}}, "verbalizes both"),
        ({"labels": ["a", "b"], "input": "{text"}, "not a valid format string"),
    ],
)
def test_bad_tasks_say_what_is_wrong(kwargs, message):
    with pytest.raises(OrchestraError, match=message):
        Task("t", **kwargs)


def test_template_fields_and_missing_fields():
    assert template_fields("{a} and {b.x} and {a}") == ["a", "b"]
    with pytest.raises(OrchestraError, match="does not have"):
        Task("t", ["a", "b"], "{body}").format({"text": "x"})
