"""A labeling task: the label space, how the model may say each label, and which fields form the input."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra.errors import OrchestraError


def template_fields(template: str) -> list[str]:
    """Names of the record fields a ``str.format`` template reads.

    Parameters
    ----------
    template
        A template such as ``"Review: {text}\\nSentiment:"``.

    Returns
    -------
    list of str
        The field names in order of first use (``{text}`` and ``{text!r}`` both give ``text``).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise OrchestraError(
            f"template {template!r} is not a valid format string ({err}); write fields as {{name}} and a literal "
            "brace as {{ or }}"
        ) from err
    names: list[str] = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name or not name.split(".")[0].split("[")[0].isidentifier():
            raise OrchestraError(
                f"template {template!r} has a field {{{name}}} that is not a record field name; use {{text}}-style "
                "names of your data's columns"
            )
        base = name.split(".")[0].split("[")[0]
        if base not in names:
            names.append(base)
    return names


def render(template: str, record: Mapping[str, Any]) -> str:
    """Fill ``template`` with the fields of one record.

    Parameters
    ----------
    template
        A ``str.format`` template over record fields.
    record
        The record (column -> value).

    Returns
    -------
    str
        The rendered text.
    """
    try:
        return template.format_map(record)
    except KeyError as err:
        raise OrchestraError(
            f"template {template!r} reads field {err} which the record does not have; its fields are "
            f"{sorted(record)}"
        ) from err


@dataclass
class Task:
    """What is being labeled.

    Parameters
    ----------
    name
        A short name (it names reports and outputs).
    labels
        The class names; class index ``i`` is ``labels[i]``.
    input
        A ``str.format`` template over record fields that forms the model's input, e.g. ``"{text}"``.
    verbalizers
        Label -> words the model may say for it. Defaults to the label name itself for every label.
    """

    name: str = "task"
    labels: Sequence[str] = ("0", "1")
    input: str = "{text}"
    verbalizers: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = [str(label) for label in self.labels]
        if len(self.labels) < 2:
            raise OrchestraError(f"task {self.name!r} needs at least 2 labels, got {self.labels}")
        if len(set(self.labels)) != len(self.labels):
            raise OrchestraError(f"task {self.name!r} has repeated labels {self.labels}; give each class once")
        template_fields(self.input)
        unknown = [k for k in self.verbalizers if str(k) not in self.labels]
        if unknown:
            raise OrchestraError(
                f"task {self.name!r}: verbalizers name labels {unknown} that are not in labels {self.labels}"
            )
        words = {str(k): [str(w) for w in v] for k, v in self.verbalizers.items()}
        for label in self.labels:
            words.setdefault(label, [label])
            if not words[label]:
                raise OrchestraError(f"task {self.name!r}: verbalizer of label {label!r} is empty; give it a word")
        self.verbalizers = words
        owner: dict[str, str] = {}
        for label in self.labels:
            for word in words[label]:
                if owner.setdefault(word.strip().lower(), label) != label:
                    raise OrchestraError(
                        f"task {self.name!r}: the word {word!r} verbalizes both {owner[word.strip().lower()]!r} "
                        f"and {label!r}; a word must name one label"
                    )

    @property
    def cardinality(self) -> int:
        """Number of classes."""
        return len(self.labels)

    @property
    def fields(self) -> list[str]:
        """Record fields the input template reads."""
        return template_fields(self.input)

    def format(self, record: Mapping[str, Any]) -> str:
        """Render the task's input for one record.

        Parameters
        ----------
        record
            Column -> value.

        Returns
        -------
        str
            The input text.
        """
        return render(self.input, record)

    def choices(self) -> tuple[list[str], list[int]]:
        """All verbalizer words and the class index of each.

        Returns
        -------
        (words, classes)
            Parallel lists: ``words[j]`` says class ``classes[j]``.
        """
        words: list[str] = []
        classes: list[int] = []
        for i, label in enumerate(self.labels):
            for word in self.verbalizers[label]:
                words.append(word)
                classes.append(i)
        return words, classes

    def parse(self, text: str) -> int:
        """Map generated text to a class index by its verbalizer words, or -1 when none or several match.

        Parameters
        ----------
        text
            The model's answer.

        Returns
        -------
        int
            Class index, or -1 (abstain).
        """
        answer = text.strip().lower()
        hits = set()
        for i, label in enumerate(self.labels):
            for word in self.verbalizers[label]:
                w = word.strip().lower()
                if w and (answer == w or answer.startswith(w + " ") or answer.split("\n")[0].strip(" .!,") == w):
                    hits.add(i)
        return hits.pop() if len(hits) == 1 else -1

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (used to fingerprint jobs)."""
        return {"name": self.name, "labels": list(self.labels), "input": self.input,
                "verbalizers": {k: list(v) for k, v in self.verbalizers.items()}}
