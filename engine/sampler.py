"""Logits -> next tokens and their log-probs, with one seeded generator per sequence."""

import torch

from engine.sampling_params import SamplingParams


class Sampler:
    """Greedy rows take the argmax; sampled rows apply temperature, top-k, top-p and min-p, then invert the
    CDF at one uniform draw from the sequence's own generator (so results do not depend on batching).

    The vocabulary-wide work is a few passes over the logits: one max (which is also the greedy argmax), the
    log-normalizer of the raw distribution, and for sampled rows exp and cumsum of the tempered logits; the full
    log-softmax is never materialized (``logits[i] - log_norm[i]`` is row i's, for the rows that ask for
    top-k log-probs)."""

    def __call__(
        self, logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
    ) -> tuple[list[int], list[float], torch.Tensor]:
        """Returns each row's token, the token's log-prob under the raw (untempered) distribution, and each
        row's log-normalizer ``logsumexp(logits[i])``."""
        maxes, tokens = logits.max(dim=-1)
        shifted = logits - maxes[:, None]
        log_norm = shifted.exp().sum(dim=-1).log_().add_(maxes)
        rows = [i for i, p in enumerate(params) if not p.greedy]
        if rows:
            every = len(rows) == len(params)
            idx = None if every else torch.tensor(rows, device=logits.device)
            sub = shifted if every else shifted[idx]
            temps = torch.tensor([params[i].temperature for i in rows], dtype=sub.dtype, device=sub.device)
            sub = sub / temps[:, None]
            top_k = [params[i].top_k for i in rows]
            if any(k > 0 for k in top_k):
                k_t = torch.tensor([k if k > 0 else sub.shape[1] for k in top_k], device=sub.device)
                kth = sub.sort(dim=-1, descending=True).values.gather(
                    1, (k_t - 1).clamp(max=sub.shape[1] - 1)[:, None]
                )
                sub = sub.masked_fill(sub < kth, float("-inf"))
            # Unnormalized probabilities: each row's largest is exp(0) = 1.
            probs = sub.exp_()
            top_p = [params[i].top_p for i in rows]
            if any(p < 1 for p in top_p):
                probs = probs / probs.sum(dim=-1, keepdim=True)
                top_p_t = torch.tensor(top_p, dtype=probs.dtype, device=probs.device)
                sorted_p, order = probs.sort(dim=-1, descending=True)
                drop = (sorted_p.cumsum(-1) - sorted_p) > top_p_t[:, None]
                probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
            min_p = [params[i].min_p for i in rows]
            if any(p > 0 for p in min_p):
                min_p_t = torch.tensor(min_p, dtype=probs.dtype, device=probs.device)
                thresh = probs.max(dim=-1, keepdim=True).values * min_p_t[:, None]
                probs = probs.masked_fill(probs < thresh, 0.0)
            cdf = probs.cumsum(dim=-1)
            draws = torch.cat([torch.rand(1, generator=generators[i], dtype=torch.float64) for i in rows])
            target = (draws.to(device=cdf.device, dtype=cdf.dtype) * cdf[:, -1]).unsqueeze(1)
            picked = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)
            if every:
                tokens = picked
            else:
                tokens[idx] = picked
        token_logprobs = logits.gather(1, tokens[:, None]).squeeze(1) - log_norm
        return tokens.tolist(), token_logprobs.tolist(), log_norm
