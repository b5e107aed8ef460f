"""Logits -> next tokens and their log-probs; sampled rows draw from a counter-based generator.

Each sampled sequence carries a 63-bit seed; its draw at output step t is splitmix64(seed, t) mapped to [0, 1).
The draw depends only on (seed, t), so a seeded request gives the same tokens whatever it is batched with and on
whichever device it runs, and a whole batch draws in a few vectorized integer ops instead of one generator call
per row.
"""

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


class Sampler:
    """Greedy rows take the argmax; sampled rows apply temperature, top-k, top-p and min-p, then invert the CDF at
    the sequence's draw for this step.

    The vocabulary-wide work is a few passes over the logits: one max (which is also the greedy argmax), the
    log-normalizer of the raw distribution, and for sampled rows exp and cumsum of the tempered logits; the full
    log-softmax is never materialized (``logits[i] - log_norm[i]`` is row i's, for the rows that ask for top-k
    log-probs)."""

    def __call__(
        self, logits: torch.Tensor, params: list[SamplingParams], seeds: list[int | None], steps: list[int]
    ) -> tuple[list[int], list[float], torch.Tensor]:
        """Each row's token and the token's log-prob under the raw (untempered) distribution, as host lists (one
        device sync), and each row's log-normalizer ``logsumexp(logits[i])``."""
        maxes, tokens = logits.max(dim=-1)
        shifted = logits - maxes[:, None]
        log_norm = shifted.exp().sum(dim=-1).log_().add_(maxes)
        rows = [i for i, p in enumerate(params) if not p.greedy]
        if rows:
            dev = logits.device
            every = len(rows) == len(params)
            idx = None if every else torch.tensor(rows, device=dev)
            sub = shifted if every else shifted[idx]
            temps = torch.tensor([params[i].temperature for i in rows], dtype=sub.dtype, device=dev)
            sub = sub / temps[:, None]
            top_k = [params[i].top_k for i in rows]
            if any(k > 0 for k in top_k):
                k_t = torch.tensor([k if k > 0 else sub.shape[1] for k in top_k], device=dev)
                kth = sub.sort(dim=-1, descending=True).values.gather(
                    1, (k_t - 1).clamp(max=sub.shape[1] - 1)[:, None]
                )
                sub = sub.masked_fill(sub < kth, float("-inf"))
            # Unnormalized probabilities: each row's largest is exp(0) = 1.
            probs = sub.exp_()
            top_p = [params[i].top_p for i in rows]
            if any(p < 1 for p in top_p):
                probs = probs / probs.sum(dim=-1, keepdim=True)
                top_p_t = torch.tensor(top_p, dtype=probs.dtype, device=dev)
                sorted_p, order = probs.sort(dim=-1, descending=True)
                drop = (sorted_p.cumsum(-1) - sorted_p) > top_p_t[:, None]
                probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
            min_p = [params[i].min_p for i in rows]
            if any(p > 0 for p in min_p):
                min_p_t = torch.tensor(min_p, dtype=probs.dtype, device=dev)
                thresh = probs.max(dim=-1, keepdim=True).values * min_p_t[:, None]
                probs = probs.masked_fill(probs < thresh, 0.0)
            cdf = probs.cumsum(dim=-1)
            draws = uniform_draws(
                torch.tensor([seeds[i] for i in rows], dtype=torch.long, device=dev),
                torch.tensor([steps[i] for i in rows], dtype=torch.long, device=dev),
            )
            target = (draws.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)
            picked = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)
            if every:
                tokens = picked
            else:
                tokens[idx] = picked
        token_logprobs = logits.gather(1, tokens[:, None]).squeeze(1) - log_norm
        both = torch.stack([tokens.to(torch.float64), token_logprobs.to(torch.float64)]).tolist()
        return [int(t) for t in both[0]], both[1], log_norm
