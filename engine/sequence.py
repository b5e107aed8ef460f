"""One token sequence moving through the scheduler: a sample, a score continuation or an embedding input."""

from dataclasses import dataclass, field
from enum import Enum, auto

from engine.sampling_params import SamplingParams


class SeqKind(Enum):
    GENERATE = auto()
    SCORE = auto()
    EMBED = auto()


class SeqStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass(eq=False)
class Sequence:
    """Token ids plus the bookkeeping the block manager, scheduler and engine need.

    ``logits_from`` is the first position whose output row is needed; cache hits never reach past it, so
    every position from ``logits_from`` on is computed (and its hidden state returned) by the prefill.
    ``siblings`` are the other samples of an ``n > 1`` request: they are not prefilled; once this sequence's
    prompt is computed each draws its first token from the same logits and forks the prompt's KV blocks.
    """

    seq_id: int
    token_ids: list[int]
    kind: SeqKind
    params: SamplingParams | None = None
    logits_from: int = 0
    cacheable: bool = True
    sample_seed: int | None = None
    parent: "Sequence | None" = None
    pending_children: int = 0
    siblings: list["Sequence"] = field(default_factory=list)
    status: SeqStatus = SeqStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    table_cache: tuple | None = None  # (block_table list, its tensor), kept by the model runner
    num_cached_tokens: int = 0
    num_prefix_hit_tokens: int = -1
    num_prompt_tokens: int = 0
    cumulative_logprob: float = 0.0
    logprobs: list[dict[int, float]] | None = None
    finish_reason: str | None = None
    text: str = ""
    stop_text: str | None = None
    stop_scan_from: int = 0
    score_targets: list[int] = field(default_factory=list)
    result: object = None
    kv_row: int = -1  # row of the h2o state (engine/h2o.py) while a kv_policy="h2o" sequence holds blocks
    forced: list[int] | None = None  # teacher-forced continuation (LLM.stream_logprobs) instead of sampling

    def __post_init__(self) -> None:
        self.num_prompt_tokens = self.num_prompt_tokens or len(self.token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_new_tokens(self) -> int:
        return len(self.token_ids) - self.num_cached_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SeqStatus.FINISHED
