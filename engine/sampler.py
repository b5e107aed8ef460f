"""Logits -> next tokens and their log-probs; sampled rows draw from a counter-based generator.

Each sampled sequence carries a 63-bit seed; its draw at output step t is splitmix64(seed, t) mapped to [0, 1).
The draw depends only on (seed, t), so a seeded request gives the same tokens whatever it is batched with and on
whichever device it runs, and a whole batch draws in a few vectorized integer ops instead of one generator call
per row.
"""

from dataclasses import dataclass

import torch

from engine.sampling_params import SamplingParams

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """A 64-bit unsigned constant as the int64 torch holds (multiplication wraps the same way)."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniform_draws(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """splitmix64 of (seed, step) as float64 uniforms in [0, 1); ``seeds`` and ``steps`` are int64 tensors."""
    z = seeds + (steps + 1) * _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    z = z ^ _shr(z, 31)
    return _shr(z, 11).to(torch.float64) * (1.0 / (1 << 53))


# Tokens per block of the two-level CDF inversion.
CDF_BLOCK = 1024


def invert_cdf(probs: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Per row, the first token whose cumulative unnormalized probability exceeds ``draw * total``.

    A full-vocabulary cumsum is a slow sequential scan on the CPU (20 ms for 256 x 49,152 floats on 2 cores), so
    this goes in two levels: block sums (a vectorized reduction) and their cumsum pick the block holding the
    target, and only that block's ``CDF_BLOCK`` probabilities are scanned. Same draw, same token as one cumsum
    up to the order of the floating-point sums; a token of zero probability is never picked, also when the
    draw rounds to 1 in the logits' precision.
    """
    rows, vocab = probs.shape
    whole = vocab // CDF_BLOCK * CDF_BLOCK
    block_sums = probs[:, :whole].reshape(rows, whole // CDF_BLOCK, CDF_BLOCK).sum(-1)
    if whole < vocab:
        block_sums = torch.cat([block_sums, probs[:, whole:].sum(-1, keepdim=True)], dim=1)
    block_cdf = block_sums.cumsum(dim=-1)
    target = (draws.to(probs.dtype) * block_cdf[:, -1]).unsqueeze(1)
    block = torch.searchsorted(block_cdf, target, right=True)
    # A draw that rounds to 1 finds no block whose cumulative sum exceeds it: take the last block with any mass
    # (and below, that block's last token with any), never a zero-probability token at the vocabulary's end.
    block = torch.minimum(block, _last_positive(block_sums))
    before = block_cdf.gather(1, block) - block_sums.gather(1, block)
    offsets = torch.arange(CDF_BLOCK, device=probs.device)
    index = block * CDF_BLOCK + offsets
    local = probs.gather(1, index.clamp(max=vocab - 1)).masked_fill_(index >= vocab, 0.0)
    local_cdf = local.cumsum(dim=-1).add_(before)
    pos = torch.searchsorted(local_cdf, target, right=True)
    return (block * CDF_BLOCK + torch.minimum(pos, _last_positive(local))).squeeze(1)


def _last_positive(x: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the last positive entry (as a ``[rows, 1]`` tensor)."""
    return x.shape[1] - 1 - (x.flip(-1) > 0).to(torch.uint8).argmax(dim=-1, keepdim=True)


@dataclass
class SamplingBatch:
    """One batch's sampling settings as device tensors, built once and reused for every step it decodes.

    ``rows`` are the sampled (non-greedy) rows, ``index`` their positions as a tensor (``None`` when every row
    samples); the per-row filters are ``None`` when no row of the batch uses them. ``fused_temperatures`` (every
    row's temperature, 0 for greedy) is set when the batch can use the fused CUDA kernel (no row filters);
    ``fused_draws`` is then the per-row draw buffer it reads."""

    rows: list[int]
    index: torch.Tensor | None
    temperatures: torch.Tensor | None = None
    top_k: torch.Tensor | None = None
    top_p: torch.Tensor | None = None
    min_p: torch.Tensor | None = None
    seeds: torch.Tensor | None = None
    fused_temperatures: torch.Tensor | None = None
    fused_draws: torch.Tensor | None = None


class Sampler:
    """Greedy rows take the argmax; sampled rows apply temperature, top-k, top-p and min-p, then invert the CDF at
    the sequence's draw for this step.

    The vocabulary-wide work is a few passes over the logits: one max (which is also the greedy argmax), the
    log-normalizer of the raw distribution, and for sampled rows exp and block sums of the tempered logits (the
    CDF is inverted in two levels, ``invert_cdf``); the full log-softmax is never materialized
    (``logits[i] - log_norm[i]`` is row i's, for the rows that ask for top-k log-probs)."""

    @staticmethod
    def prepare(
        params: list[SamplingParams], seeds: list[int | None], device: torch.device, dtype: torch.dtype
    ) -> SamplingBatch:
        """The batch's settings on ``device`` (``dtype``: the logits' dtype)."""
        rows = [i for i, p in enumerate(params) if not p.greedy]
        fusable = device.type == "cuda" and all(p.top_k <= 0 and p.top_p >= 1 and p.min_p <= 0 for p in params)
        every = len(rows) == len(params)
        batch = SamplingBatch(rows, None if every or not rows else torch.tensor(rows, device=device))
        if fusable:
            batch.fused_temperatures = torch.tensor(
                [0.0 if p.greedy else p.temperature for p in params], dtype=torch.float32, device=device
            )
            batch.fused_draws = torch.zeros(len(params), dtype=torch.float64, device=device)
        if not rows:
            return batch
        picked = [params[i] for i in rows]
        batch.temperatures = torch.tensor([p.temperature for p in picked], dtype=dtype, device=device)
        if any(p.top_k > 0 for p in picked):
            batch.top_k = torch.tensor([p.top_k if p.top_k > 0 else 1 << 62 for p in picked], device=device)
        if any(p.top_p < 1 for p in picked):
            batch.top_p = torch.tensor([p.top_p for p in picked], dtype=dtype, device=device)
        if any(p.min_p > 0 for p in picked):
            batch.min_p = torch.tensor([p.min_p for p in picked], dtype=dtype, device=device)
        batch.seeds = torch.tensor([seeds[i] for i in rows], dtype=torch.long, device=device)
        return batch

    @staticmethod
    def sample(
        logits: torch.Tensor, batch: SamplingBatch, draws: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens, their log-probs under the raw distribution and each row's log-normalizer, all on the logits'
        device (no sync); ``draws`` holds each sampled row's uniform draw for this step (``uniform_draws`` of its
        seed and output position)."""
        if batch.fused_temperatures is not None:
            from engine.kernels import triton_sampling

            if draws is not None:
                if batch.index is None:
                    batch.fused_draws.copy_(draws)
                else:
                    batch.fused_draws[batch.index] = draws
            return triton_sampling.sample(logits, batch.fused_temperatures, batch.fused_draws)
        maxes, tokens = logits.max(dim=-1)
        shifted = logits - maxes[:, None]
        sub = None
        if batch.rows:
            sub = shifted if batch.index is None else shifted[batch.index]
            sub = sub / batch.temperatures[:, None]
        # In place: ``shifted`` is a temporary nothing else reads (a fresh exp() output costs ~3x on the CPU).
        log_norm = shifted.exp_().sum(dim=-1).log_().add_(maxes)
        if sub is not None:
            if batch.top_k is not None:
                kth = sub.sort(dim=-1, descending=True).values.gather(
                    1, (batch.top_k - 1).clamp(max=sub.shape[1] - 1)[:, None]
                )
                sub = sub.masked_fill(sub < kth, float("-inf"))
            # Unnormalized probabilities: each row's largest is exp(0) = 1.
            probs = sub.exp_()
            if batch.top_p is not None:
                probs = probs / probs.sum(dim=-1, keepdim=True)
                sorted_p, order = probs.sort(dim=-1, descending=True)
                drop = (sorted_p.cumsum(-1) - sorted_p) > batch.top_p[:, None]
                probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
            if batch.min_p is not None:
                thresh = probs.max(dim=-1, keepdim=True).values * batch.min_p[:, None]
                probs = probs.masked_fill(probs < thresh, 0.0)
            picked = invert_cdf(probs, draws)
            if batch.index is None:
                tokens = picked
            else:
                tokens[batch.index] = picked
        token_logprobs = logits.gather(1, tokens[:, None]).squeeze(1) - log_norm
        return tokens, token_logprobs, log_norm

    def __call__(
        self, logits: torch.Tensor, params: list[SamplingParams], seeds: list[int | None], steps: list[int]
    ) -> tuple[list[int], list[float], torch.Tensor]:
        """One step: each row's token and the token's log-prob under the raw (untempered) distribution, as host
        lists (one device sync), and each row's log-normalizer ``logsumexp(logits[i])``."""
        batch = self.prepare(params, seeds, logits.device, logits.dtype)
        draws = None
        if batch.rows:
            step_t = torch.tensor([steps[i] for i in batch.rows], dtype=torch.long, device=logits.device)
            draws = uniform_draws(batch.seeds, step_t)
        tokens, token_logprobs, log_norm = self.sample(logits, batch, draws)
        both = torch.stack([tokens.to(torch.float64), token_logprobs.to(torch.float64)]).tolist()
        return [int(t) for t in both[0]], both[1], log_norm
