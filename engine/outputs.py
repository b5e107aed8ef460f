"""Result types with vLLM's field names, plus choice scores."""

from dataclasses import dataclass, field


@dataclass
class CompletionOutput:
    """One sampled continuation of a prompt."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float
    logprobs: list[dict[int, float]] | None
    finish_reason: str | None


@dataclass
class RequestOutput:
    """All ``n`` continuations of one prompt."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0
    finished: bool = True


@dataclass
class ChoiceScore:
    """Log-probability of one choice continuing one prompt."""

    choice: str | list[int]
    logprob: float
    mean_logprob: float
    num_tokens: int


@dataclass
class ScoreOutput:
    """Scores of every choice of one prompt, in the order given."""

    prompt: str | list[int]
    choices: list[ChoiceScore] = field(default_factory=list)

    @property
    def best(self) -> int:
        """Index of the choice with the highest total log-probability."""
        return max(range(len(self.choices)), key=lambda i: self.choices[i].logprob)
