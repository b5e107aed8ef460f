"""The task library: data loaders and default prompt chains for the shapes of data in ../shared/data.

    from prompting.tasks import get_task, legalbench_task, TASKS

    task = get_task("rte")                 # or any name in TASKS
    train, test = task.load(limit=200)     # DataFrames with `text`, gold `label` (class index) and the raw fields
    chains = task.chains(5)                # 5 choice-scored chains; demos come from task.pool(train)
    task.zero_shot(), task.few_shot()      # the baselines, run through the same chain code

    task = legalbench_task("path/to/any/legalbench_style_folder")   # train.tsv + test.tsv with `answer`

Defaults, chosen for the 135M default model (see docs/prompting.md): every chain scores its choices (no
generation) and is calibrated against a content-free input; zero-shot reformulations put the row first, so all
of them share the row's prefix in the engine's cache and cost one prefill of the row together; two or more chains
carry k demos drawn from the train split by seed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompting.chains import Chain, DemoPool, plain_chain
from prompting.errors import PromptingError

logger = logging.getLogger(__name__)

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Format:
    """One way of asking: a template and the words per class.

    Parameters
    ----------
    name
        Short name (names the chain).
    example
        Jinja2 template of a row up to its answer.
    choices
        Per class, the continuation(s) to score (with their leading space).
    k
        Demos from the train split (0 = zero-shot).
    instruction
        Text before the demos.
    kind
        "plain", "cloze", "question" (a reformulation as a yes/no question), ...
    score_by, calibrate
        See :class:`prompting.chains.Chain`.
    """

    name: str
    example: str
    choices: tuple[tuple[str, ...], ...]
    k: int = 0
    instruction: str = ""
    kind: str = "plain"
    score_by: str = "total"
    calibrate: str = "batch"

    def chain(self, seed: int = 0, name: str | None = None, **changes: Any) -> Chain:
        """This format as a chain whose demos are drawn with ``seed``."""
        options = {"k": self.k, "calibrate": self.calibrate, "score_by": self.score_by, **changes}
        return plain_chain(name or self.name, self.example, self.choices, instruction=self.instruction,
                           seed=seed, kind=self.kind, **options)


def _c(*words: str | Sequence[str]) -> tuple[tuple[str, ...], ...]:
    return tuple((w,) if isinstance(w, str) else tuple(w) for w in words)


@dataclass
class TaskSpec:
    """A task of the library: its labels, loader, default chains and baselines.

    Parameters
    ----------
    name
        Task name (``get_task(name)``).
    labels
        Class names; class ``i`` is ``labels[i]``.
    loader
        ``loader(data_root) -> (train, test)`` DataFrames with ``text`` and ``label`` (class index).
    formats
        The ways of asking, in order; :meth:`chains` takes them in turn, then repeats the few-shot ones with
        new demo seeds.
    baseline
        The format of the zero-shot and few-shot baselines (uncalibrated, as usually reported).
    shape
        "yes/no", "entailment", "alternatives", "sentiment", "spam", "multi-class".
    source
        Where the data comes from (for reports).
    """

    name: str
    labels: list[str]
    loader: Callable[[Path], tuple[pd.DataFrame, pd.DataFrame]]
    formats: list[Format]
    baseline: Format
    shape: str = "yes/no"
    source: str = ""
    notes: str = ""
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for fmt in [*self.formats, self.baseline]:
            if len(fmt.choices) != len(self.labels):
                missing = self.labels[len(fmt.choices):]
                raise PromptingError(
                    f"task {self.name!r}: format {fmt.name!r} gives choices for {len(fmt.choices)} classes but the "
                    f"task has labels {self.labels}; add verbalizer words for {missing or 'the extra classes'}"
                )

    @property
    def cardinality(self) -> int:
        """Number of classes."""
        return len(self.labels)

    def load(self, data_root: str | Path | None = None, limit: int | None = None,
             seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(train, test)`` frames; ``limit`` keeps a seeded random sample of that many test rows.

        Raises :class:`PromptingError` naming the folder when the data is missing.
        """
        root = Path(data_root) if data_root is not None else DATA_ROOT
        key = str(root)
        if key not in self._cache:
            try:
                self._cache[key] = self.loader(root)
            except FileNotFoundError as err:
                raise PromptingError(
                    f"task {self.name!r}: data not found ({err}); pass data_root= the folder holding the shared "
                    "evaluation data (../shared/data beside the repository)"
                ) from err
        train, test = self._cache[key]
        if limit is not None and limit < len(test):
            test = test.sample(n=limit, random_state=seed).sort_index()
        return train.reset_index(drop=True), test.reset_index(drop=True)

    @staticmethod
    def pool(train: pd.DataFrame) -> DemoPool:
        """The demo pool of a train frame."""
        return DemoPool.from_frame(train)

    def chains(self, count: int = 5, seed: int = 0) -> list[Chain]:
        """``count`` chains: the task's formats in order, then its few-shot formats again with new demo seeds.

        Parameters
        ----------
        count
            Number of chains (1 to 10; AMA uses 3 to 10).
        seed
            Offsets every chain's demo seed.

        Returns
        -------
        list of Chain
        """
        if not isinstance(count, int) or not 1 <= count <= 10:
            raise PromptingError(f"task {self.name!r}: chains(count) takes 1 to 10, got {count!r}")
        out = [fmt.chain(seed=seed + i, name=f"{i}_{fmt.name}") for i, fmt in enumerate(self.formats[:count])]
        shots = [f for f in self.formats if f.k > 0] or [replace(self.baseline, k=3, calibrate="batch")]
        i = len(out)
        while len(out) < count:
            fmt = shots[(i - len(self.formats)) % len(shots)]
            out.append(fmt.chain(seed=seed + i, name=f"{i}_{fmt.name}"))
            i += 1
        return out

    def zero_shot(self) -> Chain:
        """The zero-shot baseline: the baseline format, no demos, no calibration."""
        return self.baseline.chain(seed=0, name="zero_shot", k=0, calibrate="none")

    def few_shot(self, k: int = 3, seed: int = 0) -> Chain:
        """The few-shot baseline: the baseline format with ``k`` demos from the train split, no calibration."""
        return self.baseline.chain(seed=seed, name="few_shot", k=k, calibrate="none")


# ----------------------------------------------------------------------------------------------------------------
# Loaders


def _with_labels(frame: pd.DataFrame, column: str, labels: Sequence[str]) -> pd.DataFrame:
    index = {str(v): i for i, v in enumerate(labels)}
    values = frame[column].astype(str)
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise PromptingError(f"labels {unknown} in column {column!r} are not among the task's labels {list(labels)}")
    frame = frame.copy()
    frame["label"] = values.map(index).astype(np.int64)
    return frame


def _jsonl(path: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def _superglue(name: str, labels: Sequence[str], text: Callable[[pd.DataFrame], pd.Series],
               n_train: int = 0) -> Callable[[Path], tuple[pd.DataFrame, pd.DataFrame]]:
    def load(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        val = _jsonl(root / "superglue" / name / "val.jsonl")
        train_file = root / "superglue" / "train_from_cbu" / f"{name}_train.jsonl"
        if train_file.exists():
            train, test = _jsonl(train_file), val
        else:  # no train split shipped: the first n_train validation rows are the demo pool, the rest the test
            train, test = val.iloc[:n_train], val.iloc[n_train:]
        out = []
        for frame in (train, test):
            frame = _with_labels(frame, "label", labels)
            frame["text"] = text(frame)
            out.append(frame)
        return out[0], out[1]

    return load


def _bool_labels(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["label"] = frame["label"].map(lambda v: str(v).strip().lower() == "true").astype(np.int64)
    return frame


def _boolq(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    val = _bool_labels(_jsonl(root / "superglue" / "BoolQ" / "val.jsonl"))
    val["text"] = val["passage"]
    val["question"] = val["question"].str.strip().str.rstrip("?") + "?"
    return val.iloc[:200], val.iloc[200:]


def _copa(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    val = _jsonl(root / "superglue" / "COPA" / "val.jsonl")
    val["label"] = val["label"].astype(np.int64)
    val["text"] = val["premise"] + " (" + val["question"] + ") 1: " + val["choice1"] + " 2: " + val["choice2"]
    return val.iloc[:20], val.iloc[20:]


def _sst2(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    def read(split: str) -> pd.DataFrame:
        rows = [line.split(" ", 1) for line in (root / "sst2" / f"stsa.binary.{split}").read_text().splitlines()
                if line.strip()]
        return pd.DataFrame({"label": [int(a) for a, _ in rows], "text": [b.strip() for _, b in rows]})

    return read("train"), read("test")


def _wrench(name: str) -> Callable[[Path], tuple[pd.DataFrame, pd.DataFrame]]:
    def load(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        def read(split: str) -> pd.DataFrame:
            data = json.loads((root / "wrench" / name / f"{split}.json").read_text())
            return pd.DataFrame({"text": [v["data"]["text"].replace("\ufeff", "").strip() for v in data.values()],
                                 "label": [int(v["label"]) for v in data.values()]})

        return read("train"), read("test")

    return load


LEGALBENCH_SKIP = ("index", "answer", "label", "slice", "document_name", "case id")


def read_legalbench_dir(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Read a folder in LegalBench's layout: ``train.tsv`` (demos) and ``test.tsv``, both with ``answer``.

    The input column ``text`` is kept when present; otherwise ``text`` is made of the other columns (except
    index, answer and bookkeeping columns), one ``name: value`` line each. Labels are the answers' distinct values,
    sorted (so Yes/No tasks get ``["No", "Yes"]``: class 1 is Yes).

    Returns
    -------
    (train, test, labels)
    """
    folder = Path(folder)
    frames = []
    for split in ("train", "test"):
        path = folder / f"{split}.tsv"
        if not path.is_file():
            raise PromptingError(
                f"{folder} is not in LegalBench layout: {path.name} is missing (it needs train.tsv with demos and "
                "test.tsv, both with an 'answer' column)"
            )
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        if "answer" not in frame.columns:
            raise PromptingError(f"{path} has no 'answer' column (its columns are {list(frame.columns)}); LegalBench "
                                 "layout puts the gold label in 'answer'")
        frames.append(frame)
    train, test = frames
    labels = sorted(set(train["answer"]) | set(test["answer"]))
    if len(labels) < 2:
        raise PromptingError(f"{folder}: the answers have fewer than 2 distinct values ({labels}); nothing to classify")
    for frame in (train, test):
        if "text" not in frame.columns:
            columns = [c for c in frame.columns if c not in LEGALBENCH_SKIP]
            if not columns:
                raise PromptingError(f"{folder}: no input columns besides {list(frame.columns)}")
            frame["text"] = ["\n".join(f"{c.replace('_', ' ').capitalize()}: {row[c]}" for c in columns)
                             for _, row in frame.iterrows()] if len(columns) > 1 else frame[columns[0]]
    return _with_labels(train, "answer", labels), _with_labels(test, "answer", labels), labels


def _yes_no_labels(labels: Sequence[str]) -> bool:
    return [label.lower() for label in labels] == ["no", "yes"]


def label_set_formats(labels: Sequence[str], words: Sequence[Sequence[str]] | None = None, k: int = 3,
                      field: str = "text") -> tuple[list[Format], Format]:
    """Few-shot formats (and the baseline format) for any label set, when nothing is known about the task but
    its labels: the demos say what is asked; the formats differ in layout, answer cue and calibration.

    Parameters
    ----------
    labels
        Class names.
    words
        Per class, the words that say it (default: the label name; Yes/No label sets also get True/False).
    k
        Demos per chain.
    field
        The row field holding the input.

    Returns
    -------
    (formats, baseline)
    """
    x = "{{ " + field + " }}"
    yes_no = words is None and _yes_no_labels(labels)
    if yes_no:
        yn, tf = _c(" No", " Yes"), _c(" False", " True")
        shots = [
            Format("text_answer", x + "\nAnswer:", yn, k=k),
            Format("input_label", "Input: " + x + "\nLabel:", yn, k=k),
            Format("text_true_false", "Text: " + x + "\nTrue or False?\nAnswer:", tf, k=k),
            Format("text_answer_cf", x + "\nAnswer:", yn, k=k, calibrate="content_free"),
            Format("passage_yes_no", "Passage: " + x + "\nYes or No?\nAnswer:", yn, k=k),
        ]
        return shots, Format("baseline", x + "\nAnswer:", yn)
    if words is None:
        words = [[label] for label in labels]
    if len(words) != len(labels) or any(not w for w in words):
        missing = [label for label, w in zip(labels, list(words) + [[]] * len(labels), strict=False) if not w]
        raise PromptingError(f"labels {missing} have no verbalizer words; give each label at least one word")
    choices = tuple(tuple(" " + str(w).strip() for w in ws) for ws in words)
    options = ", ".join(str(ws[0]).strip() for ws in words).replace("{", "{{ '{' }}")
    shots = [
        Format("text_label", x + "\nLabel:", choices, k=k),
        Format("input_category", "Input: " + x + "\nCategory:", choices, k=k),
        Format("options", "Text: " + x + "\nOptions: " + options + "\nAnswer:", choices, k=k),
        Format("text_label_cf", x + "\nLabel:", choices, k=k, calibrate="content_free"),
        Format("passage_class", "Passage: " + x + "\nClass:", choices, k=k),
    ]
    return shots, Format("baseline", x + "\nLabel:", choices)


def legalbench_task(folder: str | Path, name: str | None = None, question: str | None = None) -> TaskSpec:
    """A task for any folder in LegalBench layout, with chains built from its label set.

    Yes/No tasks score " No" / " Yes" (and True/False); other label sets score the label names. Without a
    ``question`` every chain is few-shot (the demos say what is asked), each with its own format and demo seed;
    with one, zero-shot reformulations of the question lead.

    Parameters
    ----------
    folder
        The folder (train.tsv + test.tsv with ``answer``).
    name
        Task name (default: the folder's name).
    question
        The task's yes/no question, when known (``"Is there hearsay?"``).

    Returns
    -------
    TaskSpec
    """
    folder = Path(folder)
    _, _, labels = read_legalbench_dir(folder)
    yes_no = _yes_no_labels(labels)
    k = 3 if yes_no else min(len(labels), 6)
    shots, baseline = label_set_formats(labels, k=k)
    formats = shots
    if question and yes_no:
        q = question.replace("{", "{{ '{' }}")
        formats = [
            Format("question_yes_no", "{{ text }}\nQuestion: " + q + " Yes or No?\nAnswer:", _c(" No", " Yes"),
                   kind="question"),
            Format("question_true_false", "{{ text }}\nQuestion: " + q + "\nTrue or False? The answer is",
                   _c(" False", " True"), kind="question"),
            Format("question_fewshot", "Text: {{ text }}\nQuestion: " + q + "\nAnswer:", _c(" No", " Yes"), k=k),
            Format("question_qa_lower", "{{ text }}\nQ: " + q + "\nA:", _c(" no", " yes"), kind="question"),
            *shots[:2],
        ]
        baseline = Format("baseline", "{{ text }}\nQuestion: " + q + "\nAnswer:", _c(" No", " Yes"))

    def load(_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        train, test, _ = read_legalbench_dir(folder)
        return train, test

    return TaskSpec(name or folder.name, labels, load, formats, baseline,
                    shape="yes/no" if yes_no else "multi-class", source=f"LegalBench-layout folder {folder}")


# ----------------------------------------------------------------------------------------------------------------
# Built-in tasks

LEGALBENCH_QUESTIONS = {
    "hearsay": "Is there hearsay?",
    "personal_jurisdiction": "Does the court have personal jurisdiction over the defendant?",
    "overruling": "Does this sentence overrule a previous case?",
    "definition_classification": "Does this sentence define a term?",
    "opp115_do_not_track": "Does this clause describe how the website responds to Do Not Track signals?",
    "diversity_1": "Is there diversity jurisdiction?",
    "textualism_tool_plain": "Does the court rely on the plain meaning of the words of the statute?",
    "cuad_governing_law": "Does this clause say which law governs the contract?",
}


def _legalbench_builtin(name: str) -> Callable[[], TaskSpec]:
    def build() -> TaskSpec:
        return legalbench_task(DATA_ROOT / "legalbench" / name, name=name, question=LEGALBENCH_QUESTIONS.get(name))

    return build


def _abercrombie() -> TaskSpec:
    spec = legalbench_task(DATA_ROOT / "legalbench" / "abercrombie", name="abercrombie")
    words = _c(*[" " + label for label in spec.labels])
    spectrum = "generic, descriptive, suggestive, arbitrary or fanciful"
    spec.formats = [
        Format("spectrum_question", "{{ text }}\nQuestion: Is this mark " + spectrum + "?\nAnswer:", words,
               kind="question"),
        Format("mark_is_cloze", "{{ text }}\nUnder trademark law the mark is", words, kind="cloze"),
        *spec.formats[:3],
    ]
    return spec


def _rte() -> TaskSpec:
    labels = ["not_entailment", "entailment"]
    return TaskSpec(
        "rte", labels, _superglue("RTE", labels, lambda f: f["premise"] + "\n" + f["hypothesis"]),
        [
            Format("true_false", "{{ premise }}\nQuestion: {{ hypothesis }} True or False?\nAnswer:",
                   _c(" False", " True")),
            Format("is_it_true", "{{ premise }}\nQuestion: Is it true that {{ hypothesis | rstrip_period | lower_first "
                   "}}? Yes or No?\nAnswer:", _c(" No", " Yes"), kind="question"),
            Format("claim_cloze", "{{ premise }}\nBased on the passage, the claim \"{{ hypothesis | rstrip_period }}\" "
                   "is", _c(" false", " true"), kind="cloze"),
            Format("fewshot_true_false", "{{ premise }}\nQuestion: {{ hypothesis }} True or False?\nAnswer:",
                   _c(" False", " True"), k=3),
            Format("fewshot_implies", "Premise: {{ premise }}\nHypothesis: {{ hypothesis }}\nDoes the premise imply "
                   "the hypothesis? Yes or No?\nAnswer:", _c(" No", " Yes"), k=3),
        ],
        Format("baseline", "{{ premise }}\nQuestion: {{ hypothesis }} True or False?\nAnswer:", _c(" False", " True")),
        shape="entailment", source="SuperGLUE RTE val; demos from RTE train",
    )


def _cb() -> TaskSpec:
    labels = ["entailment", "contradiction", "neutral"]
    return TaskSpec(
        "cb", labels, _superglue("CB", labels, lambda f: f["premise"] + "\n" + f["hypothesis"]),
        [
            Format("true_false_neither", "{{ premise }}\nQuestion: {{ hypothesis }} True, False, or Neither?\nAnswer:",
                   _c(" True", " False", " Neither")),
            Format("is_it_true", "{{ premise }}\nQuestion: Is it true that {{ hypothesis | rstrip_period | lower_first "
                   "}}? Yes, No, or Maybe?\nAnswer:", _c(" Yes", " No", " Maybe"), kind="question"),
            Format("claim_cloze", "{{ premise }}\nBased on the passage, the claim \"{{ hypothesis | rstrip_period }}\" "
                   "is", _c(" true", " false", " unclear"), kind="cloze"),
            Format("fewshot_true_false", "{{ premise }}\nQuestion: {{ hypothesis }} True, False, or Neither?\nAnswer:",
                   _c(" True", " False", " Neither"), k=3),
            Format("fewshot_implies", "Premise: {{ premise }}\nHypothesis: {{ hypothesis }}\nRelation:",
                   _c(" entailment", " contradiction", " neutral"), k=3),
        ],
        Format("baseline", "{{ premise }}\nQuestion: {{ hypothesis }} True, False, or Neither?\nAnswer:",
               _c(" True", " False", " Neither")),
        shape="entailment", source="SuperGLUE CB val; demos from CB train",
    )


def _boolq_task() -> TaskSpec:
    return TaskSpec(
        "boolq", ["False", "True"], _boolq,
        [
            Format("question_yes_no", "{{ text }}\nQuestion: {{ question }}\nAnswer:", _c(" No", " Yes")),
            Format("true_false", "{{ text }}\nQuestion: {{ question }} True or False?\nAnswer:",
                   _c(" False", " True")),
            Format("qa_lower", "{{ text }}\nQ: {{ question }}\nA:", _c(" no", " yes"), kind="question"),
            Format("fewshot_passage", "Passage: {{ text }}\nQuestion: {{ question }}\nAnswer:", _c(" No", " Yes"), k=2),
            Format("fewshot_true_false", "{{ text }}\nQuestion: {{ question }} True or False?\nAnswer:",
                   _c(" False", " True"), k=2),
        ],
        Format("baseline", "{{ text }}\nQuestion: {{ question }}\nAnswer:", _c(" No", " Yes")),
        shape="yes/no", source="SuperGLUE BoolQ val: rows 0-199 are the demo pool, the rest the test",
    )


COPA_CONNECTIVE = "{% if question == 'cause' %} because{% else %} so{% endif %}"


def _copa_task() -> TaskSpec:
    alt = _c(" {{ choice1 | lower_first }}", " {{ choice2 | lower_first }}")
    return TaskSpec(
        "copa", ["choice1", "choice2"], _copa,
        [
            Format("connective_mean", "{{ premise | rstrip_period }}" + COPA_CONNECTIVE, alt, score_by="mean",
                   calibrate="none", kind="cloze"),
            Format("connective_total", "{{ premise | rstrip_period }}" + COPA_CONNECTIVE, alt, calibrate="none",
                   kind="cloze"),
            Format("what_happened", "{{ premise }}{% if question == 'cause' %} What was the cause?{% else %} What "
                   "happened as a result?{% endif %}", _c(" {{ choice1 }}", " {{ choice2 }}"), score_by="mean",
                   calibrate="none", kind="question"),
            Format("fewshot_connective", "{{ premise | rstrip_period }}" + COPA_CONNECTIVE, alt, k=3,
                   score_by="mean", calibrate="none", kind="cloze"),
            Format("fewshot_batch", "{{ premise | rstrip_period }}" + COPA_CONNECTIVE, alt, k=3, score_by="mean",
                   calibrate="batch", kind="cloze"),
        ],
        Format("baseline", "{{ premise | rstrip_period }}" + COPA_CONNECTIVE, alt, score_by="mean",
               calibrate="none"),
        shape="alternatives", source="SuperGLUE COPA val: rows 0-19 are the demo pool, the rest the test",
    )


def _sst2_task() -> TaskSpec:
    return TaskSpec(
        "sst2", ["negative", "positive"], _sst2,
        [
            Format("sentiment", "{{ text }}\nSentiment:", _c(" negative", " positive")),
            Format("it_was_cloze", "{{ text }} It was", _c(" terrible", " great"), kind="cloze"),
            Format("liked_it", "{{ text }}\nQuestion: Did the author like the movie? Yes or No?\nAnswer:",
                   _c(" No", " Yes"), kind="question"),
            Format("fewshot_review", "Review: {{ text }}\nSentiment:", _c(" negative", " positive"), k=3),
            Format("fewshot_cloze", "Review: {{ text }}\nOverall, the movie was", _c(" bad", " good"), k=3,
                   kind="cloze"),
        ],
        Format("baseline", "Review: {{ text }}\nSentiment:", _c(" negative", " positive")),
        shape="sentiment", source="SST-2 (stsa.binary) test; demos from its train split",
    )


def _spam_task(name: str, what: str) -> TaskSpec:
    return TaskSpec(
        name, ["ham", "spam"], _wrench(name),
        [
            Format("is_spam", "{{ text }}\nQuestion: Is this " + what + " spam? Yes or No?\nAnswer:",
                   _c(" No", " Yes"), kind="question"),
            Format("advert", "{{ text }}\nQuestion: Is this " + what + " an advertisement? Yes or No?\nAnswer:",
                   _c(" No", " Yes"), kind="question"),
            Format("this_is_cloze", "{{ text }}\nThis " + what + " is", _c(" normal", " spam"), kind="cloze"),
            Format("fewshot_label", what.capitalize() + ": {{ text }}\nSpam:", _c(" No", " Yes"), k=3),
            Format("fewshot_ham_spam", what.capitalize() + ": {{ text }}\nLabel:", _c(" ham", " spam"), k=4),
        ],
        Format("baseline", what.capitalize() + ": {{ text }}\nIs it spam? Answer:", _c(" No", " Yes")),
        shape="spam", source=f"WRENCH {name} test texts (gold labels only, not the LF votes); demos from train",
    )


BUILDERS: dict[str, Callable[[], TaskSpec]] = {
    **{name: _legalbench_builtin(name) for name in LEGALBENCH_QUESTIONS},
    "abercrombie": _abercrombie,
    "unfair_tos": lambda: legalbench_task(DATA_ROOT / "legalbench" / "unfair_tos", name="unfair_tos"),
    "rte": _rte,
    "cb": _cb,
    "boolq": _boolq_task,
    "copa": _copa_task,
    "sst2": _sst2_task,
    "youtube": lambda: _spam_task("youtube", "comment"),
    "sms": lambda: _spam_task("sms", "message"),
}
TASKS = sorted(BUILDERS)
BENCHMARK_TASKS = ["hearsay", "personal_jurisdiction", "overruling", "definition_classification",
                   "opp115_do_not_track", "abercrombie", "rte", "cb", "boolq", "copa", "sst2", "youtube", "sms"]


def get_task(name: str) -> TaskSpec:
    """A built-in task by name (see ``TASKS``)."""
    if name not in BUILDERS:
        raise PromptingError(f"unknown task {name!r}; built-in tasks are {TASKS}, or use legalbench_task(folder) for "
                             "any folder in LegalBench layout")
    try:
        return BUILDERS[name]()
    except PromptingError:
        raise
    except FileNotFoundError as err:
        raise PromptingError(f"task {name!r}: data not found ({err}); it expects ../shared/data beside the "
                             "repository") from err
