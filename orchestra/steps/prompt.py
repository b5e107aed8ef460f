"""The ``prompt`` step, and the one place orchestra touches the engine.

Engine contract (issue 3):

- ``engine.LLM(model=..., **options)`` builds the local engine (the only backend so far);
- ``llm.score(prompts: list[str], choices: list[list[str]])`` -> per prompt a ScoreOutput whose ``.choices`` (or a
  plain list, as the response cache returns) holds one ChoiceScore per choice; a ChoiceScore has
  ``.logprob`` (total log-probability of the choice given the prompt), ``.mean_logprob`` and ``.num_tokens``;
- ``llm.generate(prompts: list[str], SamplingParams) -> list[RequestOutput]`` (vLLM-style, ``.outputs[0].text``),
  with ``engine.SamplingParams(temperature=..., max_tokens=..., seed=...)``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.steps.base import Context, Step, register_step
from orchestra.task import Task, render, template_fields

logger = logging.getLogger(__name__)

MODES = ("score", "generate")
SCORE_BY = ("total", "mean")


def load_engine(backend: str, model: str, options: dict[str, Any] | None = None) -> Any:
    """Build an engine through ``engine.LLM``.

    Parameters
    ----------
    backend
        Engine backend name (``"local"``, ``"vllm"``, ``"openai"``).
    model
        Model name or local path.
    options
        Extra keyword arguments for ``engine.LLM``.

    Returns
    -------
    engine.LLM
    """
    try:
        from engine import LLM
    except ImportError as err:
        raise OrchestraError(
            f"this pipeline has a step that needs a model, but the engine is not available ({err}); install "
            "the engine package or remove the prompt steps"
        ) from err
    if backend != "local":
        raise OrchestraError(
            f"engine backend {backend!r} is not available yet; use backend: local (the library's own engine)"
        )
    return LLM(model=model, **(options or {}))


def choose(scores: Sequence[Any], classes: Sequence[int], by: str, min_logprob: float | None) -> int:
    """Pick the class of the best-scoring choice, or -1.

    Parameters
    ----------
    scores
        One ChoiceScore per choice.
    classes
        Class index of each choice.
    by
        ``"total"`` (``.logprob``) or ``"mean"`` (``.mean_logprob``, per token).
    min_logprob
        Abstain when the best score is below this.

    Returns
    -------
    int
        Class index, or -1 when the best choices of two classes tie, a score is not finite, or the best is
        below ``min_logprob``.
    """
    values = np.array([s.logprob if by == "total" else s.mean_logprob for s in scores], dtype=np.float64)
    if len(values) != len(classes) or not np.all(np.isfinite(values)):
        return -1
    best = float(values.max())
    winners = {classes[j] for j in np.flatnonzero(np.isclose(values, best, rtol=0.0, atol=1e-9))}
    if len(winners) != 1 or (min_logprob is not None and best < min_logprob):
        return -1
    return winners.pop()


@register_step("prompt")
class PromptStep(Step):
    """One zero-shot prompt -> one vote column (class index, -1 = abstain).

    Parameters
    ----------
    template
        ``str.format`` template over record fields (default: the task's input template).
    mode
        ``"score"``: score every verbalizer word as a continuation and take the best; ``"generate"``: generate
        an answer and map it to a class by the verbalizers.
    by
        In score mode, compare choices by ``"total"`` or ``"mean"`` (per token) log-probability.
    choice_prefix
        Text put before each verbalizer word when scoring (a space, so " Yes" follows "Answer:").
    min_logprob
        Abstain when the best choice scores below this (score mode).
    max_tokens
        Tokens to generate (generate mode).
    keep_text
        Also add the generated text as ``text_<name>`` (generate mode).
    batch_size
        Prompts per engine call.
    demos
        Few-shot demonstrations: ``{path: file, k: 3, label: column, separator: "\\n\\n"}`` (in YAML, ``label``
        defaults to the data's ``gold`` column). The first ``k``
        records of the file are rendered with the template and followed by ``choice_prefix`` and the first
        verbalizer word of their label (a label name or class index), ahead of every prompt.
    """

    needs_engine = True
    path_params: ClassVar[tuple[str, ...]] = ("demos.path",)

    def __init__(
        self,
        template: str | None = None,
        mode: str = "score",
        by: str = "total",
        choice_prefix: str = " ",
        min_logprob: float | None = None,
        max_tokens: int = 8,
        keep_text: bool = False,
        batch_size: int = 64,
        demos: dict[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise OrchestraError(f"prompt: mode must be one of {list(MODES)}, got {mode!r}")
        if by not in SCORE_BY:
            raise OrchestraError(f"prompt: by must be one of {list(SCORE_BY)}, got {by!r}")
        if template is not None:
            template_fields(template)
        self.template = template
        self.mode = mode
        self.by = by
        self.choice_prefix = choice_prefix
        self.min_logprob = min_logprob
        self.max_tokens = max_tokens
        self.keep_text = keep_text
        self.batch_size = batch_size
        self.demos = dict(demos) if demos is not None else None
        self._demo_records = self._load_demos(self.demos) if self.demos is not None else []

    @staticmethod
    def _load_demos(spec: dict[str, Any]) -> list[dict[str, Any]]:
        from orchestra.io import read_records

        unknown = sorted(set(spec) - {"path", "k", "label", "separator"})
        if unknown or "path" not in spec:
            raise OrchestraError(
                f"prompt: demos takes path, k, label, separator; got {sorted(spec)}; write demos: {{path: train.tsv, "
                "k: 3, label: answer}"
            )
        k = spec.get("k", 3)
        if not isinstance(k, int) or k < 1:
            raise OrchestraError(f"prompt: demos.k must be a whole number >= 1, got {k!r}")
        label = spec.get("label", "label")
        frame = read_records(spec["path"], required=[label])
        return frame.head(k).to_dict(orient="records")

    def demo_prefix(self, task: Task) -> str:
        """The rendered demonstrations that precede every prompt ("" without demos).

        Parameters
        ----------
        task
            The task (its labels and verbalizers say each demo's answer).

        Returns
        -------
        str
        """
        if not self._demo_records:
            return ""
        template = self._template(task)
        label = self.demos.get("label", "label")
        separator = self.demos.get("separator", "\n\n")
        shown = []
        for i, record in enumerate(self._demo_records):
            value = record[label]
            if str(value) in task.labels:
                name = str(value)
            elif isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) < task.cardinality:
                name = task.labels[int(value)]
            else:
                raise OrchestraError(
                    f"prompt: demo {i + 1} has {label}={value!r}, which is neither a label of {task.labels} nor a "
                    "class index; fix the demos file or demos.label"
                )
            shown.append(render(template, record) + self.choice_prefix + task.verbalizers[name][0])
        return separator.join(shown) + separator

    def prompts(self, batch: pd.DataFrame, task: Task) -> list[str]:
        """The prompt of every row: the demonstrations, then the template filled with the row's fields.

        Parameters
        ----------
        batch
            The rows.
        task
            The task.

        Returns
        -------
        list of str
        """
        prefix = self.demo_prefix(task)
        template = self._template(task)
        return [prefix + render(template, record) for record in batch.to_dict(orient="records")]

    def fingerprint_extra(self) -> dict[str, Any]:
        if self.demos is None:
            return {}
        return {"demos_sha256": hashlib.sha256(Path(self.demos["path"]).read_bytes()).hexdigest()}

    def _template(self, task: Task | None) -> str:
        if task is None:
            raise OrchestraError("prompt: this step needs a task (labels and verbalizers); pass task=Task(...)")
        return self.template if self.template is not None else task.input

    def inputs(self, available: Sequence[str], task: Task | None) -> list[str]:
        return template_fields(self._template(task))

    def adds(self, available: Sequence[str], task: Task | None) -> list[str]:
        columns = [f"vote_{self.name}"]
        if self.mode == "generate" and self.keep_text:
            columns.append(f"text_{self.name}")
        return columns

    def run(self, batch: pd.DataFrame, context: Context) -> pd.DataFrame:
        if context.engine is None:
            raise OrchestraError(f"prompt step {self.name!r} needs an engine; pass engine=LLM(...) to Pipeline.run")
        task = context.task
        prompts = self.prompts(batch, task)
        votes: list[int] = []
        texts: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            part = prompts[start:start + self.batch_size]
            if self.mode == "score":
                votes.extend(self._score(part, task, context))
            else:
                answers = self._generate(part, context)
                texts.extend(answers)
                votes.extend(task.parse(a) for a in answers)
        out: dict[str, Any] = {f"vote_{self.name}": np.asarray(votes, dtype=np.int64)}
        if self.mode == "generate" and self.keep_text:
            out[f"text_{self.name}"] = texts
        return pd.DataFrame(out, index=batch.index)

    def _score(self, prompts: list[str], task: Task, context: Context) -> list[int]:
        words, classes = task.choices()
        choices = [self.choice_prefix + w for w in words]
        results = context.engine.score(prompts, [choices] * len(prompts))
        # engine.LLM returns ScoreOutput objects holding .choices; the cache returns plain lists.
        rows = [getattr(r, "choices", r) for r in results]
        return [choose(scores, classes, self.by, self.min_logprob) for scores in rows]

    def _generate(self, prompts: list[str], context: Context) -> list[str]:
        from engine import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=self.max_tokens, seed=context.seed)
        outputs = context.engine.generate(prompts, params)
        return [o.outputs[0].text if o.outputs else "" for o in outputs]

