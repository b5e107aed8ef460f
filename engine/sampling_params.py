"""vLLM-compatible sampling parameters, validated at construction."""

from dataclasses import dataclass, field

from engine.errors import EngineError


@dataclass
class SamplingParams:
    """How to sample one request: ``temperature=0`` is greedy; ``n`` samples share the prompt's KV blocks."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    stop_list: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def bad(msg: str) -> EngineError:
            return EngineError(f"invalid SamplingParams: {msg}")

        if not isinstance(self.n, int) or self.n < 1:
            raise bad(f"n must be an int >= 1, got {self.n!r}")
        if not isinstance(self.temperature, int | float) or self.temperature < 0:
            raise bad(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise bad(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or (self.top_k < 1 and self.top_k not in (-1, 0)):
            raise bad(f"top_k must be -1/0 (disabled) or >= 1, got {self.top_k!r}")
        if not isinstance(self.min_p, int | float) or not 0 <= self.min_p <= 1:
            raise bad(f"min_p must be in [0, 1], got {self.min_p!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise bad(f"seed must be an int or None, got {self.seed!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise bad(f"max_tokens must be an int >= 1 or None, got {self.max_tokens!r}")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or self.logprobs < 0):
            raise bad(f"logprobs must be an int >= 0 or None, got {self.logprobs!r}")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if not all(isinstance(s, str) and s for s in stop):
            raise bad(f"stop must be a non-empty string or a list of them, got {self.stop!r}")
        self.stop_list = stop
        ids = list(self.stop_token_ids or [])
        if not all(isinstance(i, int) and i >= 0 for i in ids):
            raise bad(f"stop_token_ids must be non-negative ints, got {self.stop_token_ids!r}")
        self.stop_token_ids = ids

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
