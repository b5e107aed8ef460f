"""Prompt templates: an instruction, k in-context demos picked from a pool by seed, and the input.

Fields are Jinja2 expressions over record columns (``{{ text }}``, ``{{ hypothesis | rstrip_period }}``)::

    t = PromptTemplate(example="Passage: {{ text }}\\nAnswer:", instruction="Answer Yes or No.", k=3, seed=1)
    demos = t.select_demos(pool, labels=pool_labels)     # same seed -> same demos
    t.render(record, [(demo, " Yes") for demo in demos])

A demo is rendered with ``example`` followed by its answer text; the input is rendered with ``example`` alone, so
the model's next words are its answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
import numpy as np

from prompting.errors import PromptingError


def _lower_first(value: Any) -> str:
    text = str(value)
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) == 1 else text


def _rstrip_period(value: Any) -> str:
    return str(value).rstrip().rstrip(".!?").rstrip()


def _truncate_words(value: Any, limit: int) -> str:
    return truncate(str(value), limit)


def truncate(text: str, limit: int | None) -> str:
    """Cut ``text`` to at most ``limit`` characters at a word boundary, marking the cut with "..."."""
    if limit is None or len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + " ..."


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment every template uses (strict: a missing field is an error)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["lower_first"] = _lower_first
    env.filters["rstrip_period"] = _rstrip_period
    env.filters["clip"] = _truncate_words
    return env


def _syntax_error(source: str, err: Exception) -> PromptingError:
    return PromptingError(f"template {source!r} is not valid Jinja2 ({err}); write fields as {{{{ name }}}}")


@lru_cache(maxsize=4096)
def compile_template(source: str) -> jinja2.Template:
    """Compile a Jinja2 template, raising :class:`PromptingError` with the template on a syntax error."""
    try:
        return environment().from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(source, err) from err


def template_fields(source: str) -> list[str]:
    """Record fields a Jinja2 template reads, sorted."""
    try:
        parsed = environment().parse(source)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(source, err) from err
    return sorted(jinja2.meta.find_undeclared_variables(parsed))


def render_text(source: str, record: Mapping[str, Any], max_chars: int | None = None) -> str:
    """Render one Jinja2 template over one record; string fields longer than ``max_chars`` are truncated."""
    values = {k: truncate(v, max_chars) if isinstance(v, str) else v for k, v in record.items()}
    try:
        return compile_template(source).render(values)
    except jinja2.UndefinedError as err:
        raise PromptingError(
            f"template {source!r} reads a field the record does not have ({err.message}); the record has "
            f"{sorted(record)}"
        ) from err


@dataclass(frozen=True)
class PromptTemplate:
    """Instruction + ``k`` demos + input, with demos drawn from a pool by ``seed``.

    Parameters
    ----------
    example
        Jinja2 template of one example up to where the answer starts (``"Review: {{ text }}\\nSentiment:"``).
    instruction
        Text put once before the demos (may be empty).
    k
        Number of demos.
    seed
        Picks the demos from the pool; chains that differ only in ``seed`` differ only in their demos.
    separator
        Between the instruction, each demo and the input.
    max_chars
        String fields of the input are cut to this many characters (keeps prompts inside the context window).
    demo_max_chars
        The same for demos (shorter: demos are repeated in every prompt's prefix).
    """

    example: str
    instruction: str = ""
    k: int = 0
    seed: int = 0
    separator: str = "\n\n"
    max_chars: int | None = 1500
    demo_max_chars: int | None = 500
    _fields: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 0:
            raise PromptingError(f"PromptTemplate: k (number of demos) must be a whole number >= 0, got {self.k!r}")
        compile_template(self.example)
        compile_template(self.instruction)
        object.__setattr__(self, "_fields", tuple(template_fields(self.example)))

    @property
    def fields(self) -> list[str]:
        """Record fields the example template reads."""
        return list(self._fields)

    def with_(self, **changes: Any) -> PromptTemplate:
        """A copy with some parameters changed (``t.with_(seed=2)``)."""
        params = {k: getattr(self, k) for k in ("example", "instruction", "k", "seed", "separator", "max_chars",
                                                 "demo_max_chars")}
        params.update(changes)
        return PromptTemplate(**params)

    def select_demos(self, pool: Sequence[Any], labels: Sequence[int] | None = None) -> list[int]:
        """Indices of the ``k`` demos this template shows, chosen from ``pool`` by ``seed``.

        With ``labels`` (the class of each pool item), demos are taken class by class in turn (each class's
        items in seeded random order) so a small k still shows every class it can; the shown order is shuffled
        by the same seed. Deterministic: the same pool, labels and seed give the same indices.

        Parameters
        ----------
        pool
            Candidate demos (any items; only their count and labels matter here).
        labels
            Class index per pool item, or None for plain seeded sampling.

        Returns
        -------
        list of int
        """
        n = len(pool)
        k = min(self.k, n)
        if k == 0:
            return []
        rng = np.random.default_rng(self.seed)
        if labels is None:
            return [int(i) for i in rng.choice(n, size=k, replace=False)]
        if len(labels) != n:
            raise PromptingError(f"select_demos: got {len(labels)} labels for a pool of {n} demos")
        by_class: dict[int, list[int]] = {}
        for i in rng.permutation(n):
            by_class.setdefault(int(labels[i]), []).append(int(i))
        classes = list(by_class)
        rng.shuffle(classes)
        chosen: list[int] = []
        while len(chosen) < k:
            for c in classes:
                if by_class[c] and len(chosen) < k:
                    chosen.append(by_class[c].pop(0))
        order = rng.permutation(len(chosen))
        return [chosen[i] for i in order]

    def render_example(self, record: Mapping[str, Any], demo: bool = False) -> str:
        """One example (no answer) rendered over ``record``."""
        return render_text(self.example, record, self.demo_max_chars if demo else self.max_chars)

    def prefix(self, demos: Sequence[tuple[Mapping[str, Any], str]] = ()) -> str:
        """Instruction and rendered demos: the part every prompt of this template shares."""
        parts = [self.instruction] if self.instruction else []
        parts += [self.render_example(record, demo=True) + answer for record, answer in demos]
        return "".join(p + self.separator for p in parts)

    def render(self, record: Mapping[str, Any], demos: Sequence[tuple[Mapping[str, Any], str]] = ()) -> str:
        """The full prompt: instruction, demos (each followed by its answer text), then ``record``'s example.

        Parameters
        ----------
        record
            The input row (column -> value).
        demos
            ``(demo record, answer text)`` pairs, e.g. from :meth:`select_demos` and a verbalizer.

        Returns
        -------
        str
        """
        return self.prefix(demos) + self.render_example(record)
