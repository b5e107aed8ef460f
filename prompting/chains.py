"""Prompt chains: steps that each feed the next, ending in a vote (class index, -1 = abstain).

A :class:`Chain` is a sequence of :class:`ChainStep`. Every step renders a :class:`PromptTemplate` over the row
(plus the outputs of the steps before it). A step with ``choices`` is the final, choice-scored step: every choice
is scored as a continuation of the prompt and the best class wins. Other steps generate text, stored under the
step's ``output`` name for the next steps; a chain whose last step generates maps the answer to a class through its
``verbalizers`` and abstains when no class matches.

Builders for the common shapes: :func:`plain_chain` (one scored prompt), :func:`cloze_chain` (the answer is a
word completing a sentence), :func:`question_answer_chain` (AMA's ``question()`` -> ``answer()``: rewrite a
statement as an open question by generation, then answer it from the context).

Running a chain over rows makes exactly one engine call per step (all rows at once, so the shared instruction and
demos are prefilled once): see :func:`run_chain`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from prompting.errors import PromptingError
from prompting.templates import PromptTemplate, render_text, template_fields

logger = logging.getLogger(__name__)

CALIBRATIONS = ("content_free", "batch", "none")
SCORE_BY = ("total", "mean")
CONTENT_FREE = "N/A"


@dataclass(frozen=True)
class DemoPool:
    """Labelled records that demos are drawn from (a task's train split).

    Parameters
    ----------
    records
        Rows (column -> value), with the same fields as the data.
    labels
        Class index of each record.
    """

    records: tuple[Mapping[str, Any], ...] = ()
    labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.records) != len(self.labels):
            raise PromptingError(f"DemoPool: {len(self.records)} records but {len(self.labels)} labels")

    @classmethod
    def from_frame(cls, frame: Any, label: str = "label") -> DemoPool:
        """A pool from a DataFrame with a class-index column ``label``."""
        if label not in frame.columns:
            raise PromptingError(f"DemoPool: the demo frame has no {label!r} column; its columns are "
                                 f"{list(frame.columns)}")
        records = tuple(frame.to_dict(orient="records"))
        return cls(records, tuple(int(v) for v in frame[label]))

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class ChainStep:
    """One prompt of a chain.

    Parameters
    ----------
    template
        The prompt (instruction, demos, example).
    output
        Field name under which a generating step stores its answer for the next steps.
    choices
        Final step only: ``choices[c]`` lists the continuations (Jinja2 templates over the row, usually fixed
        words such as ``" Yes"``) that say class ``c``. None makes the step generate.
    max_tokens
        Tokens a generating step may produce.
    stop
        Strings that end a generated answer.
    demos
        Fixed demos for this step: records that also hold the step's answer under ``"answer"`` (used for
        intermediate steps such as ``question()``, whose answers the train split does not have). When empty,
        the final step draws ``template.k`` demos from the task's pool and answers them with the class's first
        choice (or verbalizer).
    """

    template: PromptTemplate
    output: str = "answer"
    choices: tuple[tuple[str, ...], ...] | None = None
    max_tokens: int = 24
    stop: tuple[str, ...] = ("\n",)
    demos: tuple[Mapping[str, Any], ...] = ()

    @property
    def scored(self) -> bool:
        """True when this step scores fixed choices (it must then be the last step)."""
        return self.choices is not None


@dataclass(frozen=True)
class Chain:
    """A named prompt chain that ends in a vote.

    Parameters
    ----------
    name
        Unique within a run; names the vote column.
    steps
        The steps in order; only the last may be scored.
    verbalizers
        ``verbalizers[c]`` = words that say class ``c`` in a generated final answer (default: the final step's
        choices, stripped).
    score_by
        Compare choices by ``"total"`` log-probability or ``"mean"`` per token (for multi-token choices of
        different lengths).
    calibrate
        ``"content_free"``: subtract each choice's log-probability under the same prompt with every field set
        to "N/A" (Zhao et al. 2021; one extra prompt per chain, shared prefix cached); ``"batch"``: subtract each
        choice's mean normalized log-probability over the rows scored together; ``"none"``.
    kind
        A short description of the chain's shape ("plain", "cloze", "question-answer", ...), for reports.
    """

    name: str
    steps: tuple[ChainStep, ...]
    verbalizers: tuple[tuple[str, ...], ...] | None = None
    score_by: str = "total"
    calibrate: str = "content_free"
    kind: str = "plain"

    def __post_init__(self) -> None:
        if not self.steps:
            raise PromptingError(f"chain {self.name!r} has no steps; give it at least one ChainStep")
        for i, step in enumerate(self.steps[:-1]):
            if step.scored:
                raise PromptingError(
                    f"chain {self.name!r}: step {i + 1} scores choices but is not the last step; only the final "
                    "step may have choices (earlier steps generate text for the next)"
                )
        if self.score_by not in SCORE_BY:
            raise PromptingError(f"chain {self.name!r}: score_by must be one of {list(SCORE_BY)}, got "
                                 f"{self.score_by!r}")
        if self.calibrate not in CALIBRATIONS:
            raise PromptingError(f"chain {self.name!r}: calibrate must be one of {list(CALIBRATIONS)}, got "
                                 f"{self.calibrate!r}")
        last = self.steps[-1]
        if not last.scored and not self.verbalizers:
            raise PromptingError(
                f"chain {self.name!r} ends in a generating step but has no verbalizers; give verbalizers "
                "(words per class) or choices on the last step"
            )
        if last.scored and any(not words for words in last.choices):
            raise PromptingError(f"chain {self.name!r}: every class needs at least one choice, got {last.choices}")

    @property
    def cardinality(self) -> int:
        """Number of classes the chain votes over."""
        last = self.steps[-1]
        return len(last.choices) if last.scored else len(self.verbalizers)

    @property
    def fields(self) -> list[str]:
        """Row fields the chain reads (not counting the outputs of its own steps)."""
        made: set[str] = set()
        needed: list[str] = []
        for step in self.steps:
            words = [w for ws in (step.choices or ()) for w in ws]
            for name in template_fields(step.template.example) + sum((template_fields(w) for w in words), []):
                if name not in made and name not in needed:
                    needed.append(name)
            made.add(step.output)
        return sorted(needed)

    def answer_words(self) -> list[str]:
        """The first word per class, as a demo's answer shows it."""
        last = self.steps[-1]
        if last.scored:
            return [words[0] for words in last.choices]
        return [" " + words[0].strip() for words in self.verbalizers]

    def with_seed(self, seed: int, name: str | None = None) -> Chain:
        """The same chain with its final step's demos drawn by another seed."""
        steps = list(self.steps)
        steps[-1] = replace(steps[-1], template=steps[-1].template.with_(seed=seed))
        return replace(self, steps=tuple(steps), name=name or f"{self.name}_s{seed}")


@dataclass
class ChainOutput:
    """What one chain produced over n rows.

    Attributes
    ----------
    votes
        (n,) class index per row, -1 = abstain (after calibration).
    raw_votes
        (n,) votes without calibration (equal to ``votes`` for generated answers).
    scores
        (n, C) calibrated class scores (max over a class's choices), or None for generated answers.
    texts
        Step output name -> generated text per row.
    calls
        Engine calls made (one per step).
    """

    votes: np.ndarray
    raw_votes: np.ndarray
    scores: np.ndarray | None = None
    texts: dict[str, list[str]] = field(default_factory=dict)
    calls: int = 0
    word_scores: np.ndarray | None = None
    content_free: np.ndarray | None = None
    word_class: np.ndarray | None = None

    def recalibrate(self, method: str) -> np.ndarray:
        """The votes this chain's scores give under another calibration (``"content_free"`` needs its scores)."""
        if self.word_scores is None:
            return self.votes
        k = int(self.word_class.max()) + 1
        return _argmax_classes(calibrate_scores(self.word_scores, method, self.content_free), self.word_class, k)[0]


def parse_answer(text: str, verbalizers: Sequence[Sequence[str]]) -> int:
    """Map a generated answer to a class: the class whose word appears first in its first line, else -1.

    Parameters
    ----------
    text
        The model's answer.
    verbalizers
        ``verbalizers[c]`` = words for class ``c`` (matched case-insensitively as whole words).

    Returns
    -------
    int
        Class index, or -1 when no word matches or two classes' words start at the same place.
    """
    lines = [line for line in text.strip().lower().splitlines() if line.strip()]
    if not lines:
        return -1
    line = lines[0]
    best: dict[int, int] = {}
    for c, words in enumerate(verbalizers):
        for word in words:
            w = word.strip().lower()
            if not w:
                continue
            m = re.search(r"(?<![a-z0-9])" + re.escape(w) + r"(?![a-z0-9])", line)
            if m is not None:
                best[c] = min(best.get(c, m.start()), m.start())
    if not best:
        return -1
    first = min(best.values())
    winners = [c for c, pos in best.items() if pos == first]
    return winners[0] if len(winners) == 1 else -1


def _argmax_classes(word_scores: np.ndarray, word_class: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the class of the best word (-1 on a tie between classes or non-finite scores), class scores."""
    n = word_scores.shape[0]
    class_scores = np.full((n, k), -np.inf)
    for c in range(k):
        cols = word_class == c
        if cols.any():
            class_scores[:, c] = word_scores[:, cols].max(axis=1)
    votes = np.full(n, -1, dtype=np.int64)
    finite = np.isfinite(class_scores).all(axis=1)
    best = class_scores.max(axis=1, initial=-np.inf)
    ties = np.isclose(class_scores, best[:, None], rtol=0.0, atol=1e-9).sum(axis=1)
    ok = finite & (ties == 1)
    votes[ok] = class_scores[ok].argmax(axis=1)
    return votes, class_scores


def _choice_values(result: Any, by: str) -> np.ndarray:
    rows = getattr(result, "choices", result)  # engine.LLM gives ScoreOutput; the response cache plain lists
    values = []
    for s in rows:
        if isinstance(s, Mapping):
            values.append(s["logprob"] if by == "total" else s["mean_logprob"])
        else:
            values.append(s.logprob if by == "total" else s.mean_logprob)
    return np.asarray(values, dtype=np.float64)


def _demos_for(step: ChainStep, chain: Chain, pool: DemoPool, final: bool) -> list[tuple[Mapping[str, Any], str]]:
    if step.demos:
        return [(d, " " + str(d["answer"]).strip()) for d in step.demos[: step.template.k or len(step.demos)]]
    if not final or step.template.k == 0 or len(pool) == 0:
        return []
    picks = step.template.select_demos(pool.records, pool.labels)
    words = chain.answer_words()
    demos = []
    for i in picks:
        label = pool.labels[i]
        if not 0 <= label < len(words):
            raise PromptingError(f"chain {chain.name!r}: demo {i} has class {label}, outside 0..{len(words) - 1}")
        demos.append((pool.records[i], render_text(words[label], pool.records[i])))
    return demos


def chain_prompts(chain: Chain, rows: Sequence[Mapping[str, Any]], pool: DemoPool | None = None,
                  step_index: int | None = None) -> list[str]:
    """The prompts of one step (default: the last) for rows that already hold the earlier steps' outputs."""
    pool = pool if pool is not None else DemoPool()
    index = len(chain.steps) - 1 if step_index is None else step_index
    step = chain.steps[index]
    demos = _demos_for(step, chain, pool, final=index == len(chain.steps) - 1)
    return [step.template.render(r, demos) for r in rows]


def run_chain(engine: Any, chain: Chain, rows: Sequence[Mapping[str, Any]], pool: DemoPool | None = None,
              seed: int = 0) -> ChainOutput:
    """Run one chain over all rows: exactly one engine call per step.

    Parameters
    ----------
    engine
        Engine-like object with ``score(prompts, choices)`` and ``generate(prompts, SamplingParams)``.
    chain
        The chain.
    rows
        The rows (column -> value); they are not modified.
    pool
        Labelled demos for the final step.
    seed
        Seed of generation requests (greedy decoding ignores it).

    Returns
    -------
    ChainOutput
    """
    pool = pool if pool is not None else DemoPool()
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return ChainOutput(empty, empty.copy(), None, {}, 0)
    missing = sorted(set(chain.fields) - set(rows[0]))
    if missing:
        raise PromptingError(
            f"chain {chain.name!r} reads fields {missing} that the rows do not have; the rows have {sorted(rows[0])}"
            " (rename your columns or use a chain written for them)"
        )
    work = [dict(r) for r in rows]
    texts: dict[str, list[str]] = {}
    calls = 0
    last = len(chain.steps) - 1
    for i, step in enumerate(chain.steps):
        prompts = chain_prompts(chain, work, pool, i)
        if step.scored:
            return _score_step(engine, chain, step, work, prompts, pool, texts, calls)
        from engine import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=step.max_tokens, stop=list(step.stop) or None,
                                seed=seed)
        outputs = engine.generate(prompts, params)
        calls += 1
        answers = [(o.outputs[0].text if o.outputs else "").strip() for o in outputs]
        texts[step.output] = answers
        for r, a in zip(work, answers, strict=True):
            r[step.output] = a
        if i == last:
            votes = np.asarray([parse_answer(a, chain.verbalizers) for a in answers], dtype=np.int64)
            return ChainOutput(votes, votes.copy(), None, texts, calls)
    raise AssertionError("unreachable")


def _score_step(engine: Any, chain: Chain, step: ChainStep, rows: list[dict[str, Any]], prompts: list[str],
                pool: DemoPool, texts: dict[str, list[str]], calls: int) -> ChainOutput:
    words = [w for ws in step.choices for w in ws]
    word_class = np.asarray([c for c, ws in enumerate(step.choices) for _ in ws])
    per_row = any(template_fields(w) for w in words)
    choices = [[render_text(w, r) for w in words] for r in rows] if per_row else [list(words)] * len(rows)
    calibrate = chain.calibrate
    if calibrate == "content_free" and per_row:
        logger.info("chain %s: choices depend on the row, so content-free calibration is skipped", chain.name)
        calibrate = "none"
    if calibrate == "batch" and len(rows) < 2:
        logger.info("chain %s: batch calibration needs 2+ rows; this batch has %d, so it is skipped", chain.name,
                    len(rows))
        calibrate = "none"
    all_prompts, all_choices = list(prompts), list(choices)
    if calibrate == "content_free":
        blank = {name: CONTENT_FREE for name in rows[0]}
        demos = _demos_for(step, chain, pool, final=True)
        all_prompts.append(step.template.render(blank, demos))
        all_choices.append(list(words))
    results = engine.score(all_prompts, all_choices)
    values = np.stack([_choice_values(r, chain.score_by) for r in results])
    raw = values[: len(rows)]
    k = len(step.choices)
    raw_votes, _ = _argmax_classes(raw, word_class, k)
    cf = values[len(rows)] if calibrate == "content_free" else None
    votes, class_scores = _argmax_classes(calibrate_scores(raw, calibrate, cf), word_class, k)
    return ChainOutput(votes, raw_votes, class_scores, texts, calls + 1, raw, cf, word_class)


def calibrate_scores(raw: np.ndarray, method: str, content_free: np.ndarray | None = None) -> np.ndarray:
    """Calibrated choice scores: (n, W) log-probabilities -> (n, W) scores to take the argmax of.

    ``"content_free"`` subtracts the choices' log-probabilities under the content-free prompt; ``"batch"``
    normalizes each row over its choices and subtracts each choice's mean over the rows; ``"none"`` returns
    ``raw``.
    """
    if method == "content_free":
        if content_free is None:
            raise PromptingError("content-free calibration needs the content-free prompt's scores")
        return raw - content_free[None, :]
    if method == "batch":
        norm = raw - np.logaddexp.reduce(raw, axis=1, keepdims=True)
        return norm - norm.mean(axis=0, keepdims=True)
    return raw


def _choices(words: Sequence[Sequence[str] | str]) -> tuple[tuple[str, ...], ...]:
    return tuple((w,) if isinstance(w, str) else tuple(w) for w in words)


def plain_chain(name: str, example: str, choices: Sequence[Sequence[str] | str], *, instruction: str = "",
                k: int = 3, seed: int = 0, calibrate: str = "content_free", score_by: str = "total",
                kind: str = "plain") -> Chain:
    """A single scored prompt: instruction, ``k`` demos from the pool, the row, then the choices.

    Parameters
    ----------
    name
        Chain name.
    example
        Jinja2 template of one example up to its answer (``"{{ text }}\\nAnswer:"``).
    choices
        Per class, the continuation(s) that say it (``[" No", " Yes"]``); include the leading space.
    instruction, k, seed
        See :class:`PromptTemplate`.
    calibrate, score_by, kind
        See :class:`Chain`.

    Returns
    -------
    Chain
    """
    template = PromptTemplate(example=example, instruction=instruction, k=k, seed=seed)
    return Chain(name, (ChainStep(template, choices=_choices(choices)),), calibrate=calibrate, score_by=score_by,
                 kind=kind)


def cloze_chain(name: str, example: str, choices: Sequence[Sequence[str] | str], **options: Any) -> Chain:
    """A chain whose answer is the word completing a sentence (``"{{ text }} It was"`` -> ``" great"``)."""
    return plain_chain(name, example, choices, kind="cloze", **options)


QUESTION_DEMOS: tuple[dict[str, str], ...] = (
    {"statement": "The company was founded in 1998.", "answer": "When was the company founded?"},
    {"statement": "Maria lives in Spain.", "answer": "Where does Maria live?"},
    {"statement": "The defendant signed the contract.", "answer": "Who signed the contract?"},
    {"statement": "The court ruled in favor of the tenant.", "answer": "In whose favor did the court rule?"},
)


def question_answer_chain(name: str, context: str, statement: str,
                          choices: Sequence[Sequence[str] | str] | None = None,
                          verbalizers: Sequence[Sequence[str]] | None = None, *, k: int = 0, seed: int = 0,
                          question_demos: Sequence[Mapping[str, str]] = QUESTION_DEMOS,
                          calibrate: str = "content_free", max_tokens: int = 24) -> Chain:
    """AMA's canonical chain: ``question()`` rewrites a statement as an open question (generated), ``answer()``
    answers it from the context (scored when ``choices`` are given, generated and parsed otherwise).

    Parameters
    ----------
    name
        Chain name.
    context
        Jinja2 expression of the context (``"{{ premise }}"``).
    statement
        Jinja2 expression of the statement to turn into a question (``"{{ hypothesis }}"``).
    choices
        Per class, continuations of ``"Answer:"`` to score; None to generate the answer.
    verbalizers
        Per class, words that say it in a generated answer (needed when ``choices`` is None).
    k, seed
        Demos from the pool for the answer step.
    question_demos
        Statement -> question examples for the ``question()`` step (records with ``statement`` and ``answer``).
    calibrate
        See :class:`Chain`.
    max_tokens
        Tokens the ``question()`` step may generate (the generated answer gets a third of it, at least 4).

    Returns
    -------
    Chain
    """
    ask = PromptTemplate(
        example="Statement: " + statement + "\nQuestion:",
        instruction="Rewrite the statement as a question.",
        k=len(question_demos),
    )
    q_demos = tuple({**{f: d["statement"] for f in template_fields(statement)}, "answer": d["answer"]}
                    for d in question_demos)
    answer = PromptTemplate(example=context + "\nQuestion: {{ question }}\nAnswer:", k=k, seed=seed)
    steps = (
        ChainStep(ask, output="question", max_tokens=max_tokens, demos=q_demos),
        ChainStep(answer, choices=_choices(choices) if choices is not None else None,
                  max_tokens=max(4, max_tokens // 3)),
    )
    verb = tuple(tuple(v) for v in verbalizers) if verbalizers is not None else None
    return Chain(name, steps, verbalizers=verb, calibrate=calibrate, kind="question-answer")
