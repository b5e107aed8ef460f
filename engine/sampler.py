"""Logits -> next tokens and their log-probs, with one seeded generator per sequence."""

import torch

from engine.sampling_params import SamplingParams


class Sampler:
    """Greedy rows take the argmax; sampled rows apply temperature, top-k, top-p and min-p, then invert the
    CDF at one uniform draw from the sequence's own generator (so results do not depend on batching)."""

    def __call__(
        self, logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
    ) -> tuple[list[int], torch.Tensor]:
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        rows = [i for i, p in enumerate(params) if not p.greedy]
        if rows:
            idx = torch.tensor(rows)
            sub = logits[idx]
            temps = torch.tensor([params[i].temperature for i in rows], dtype=sub.dtype)
            sub = sub / temps[:, None]
            top_k = [params[i].top_k for i in rows]
            if any(k > 0 for k in top_k):
                k_t = torch.tensor([k if k > 0 else sub.shape[1] for k in top_k])
                kth = sub.sort(dim=-1, descending=True).values.gather(
                    1, (k_t - 1).clamp(max=sub.shape[1] - 1)[:, None]
                )
                sub = sub.masked_fill(sub < kth, float("-inf"))
            probs = torch.softmax(sub, dim=-1)
            top_p = torch.tensor([params[i].top_p for i in rows], dtype=probs.dtype)
            if bool((top_p < 1).any()):
                sorted_p, order = probs.sort(dim=-1, descending=True)
                drop = (sorted_p.cumsum(-1) - sorted_p) > top_p[:, None]
                probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
            min_p = torch.tensor([params[i].min_p for i in rows], dtype=probs.dtype)
            if bool((min_p > 0).any()):
                thresh = probs.max(dim=-1, keepdim=True).values * min_p[:, None]
                probs = probs.masked_fill(probs < thresh, 0.0)
            cdf = probs.cumsum(dim=-1)
            draws = torch.cat([torch.rand(1, generator=generators[i], dtype=torch.float64) for i in rows])
            target = (draws.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)
            picked = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)
            tokens[idx] = picked
        return tokens.tolist(), logprobs
