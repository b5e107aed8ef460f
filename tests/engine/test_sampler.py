"""The torch sampler's two-level CDF inversion against a plain full-vocabulary cumsum."""

import pytest
import torch

from engine.sampler import CDF_BLOCK, invert_cdf, uniform_draws


def full_cumsum_pick(probs: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    cdf = probs.double().cumsum(-1)
    target = (draws * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.shape[1] - 1)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("vocab", [7, CDF_BLOCK, 3 * CDF_BLOCK + 17, 49152])
def test_two_level_inversion_picks_the_full_cumsums_token(vocab, device):
    gen = torch.Generator().manual_seed(vocab)
    rows = 64
    logits = 3 * torch.randn(rows, vocab, generator=gen)
    probs = (logits - logits.max(-1, keepdim=True).values).exp()
    probs[::3, : vocab // 2] = 0.0  # filtered tokens (top-k / top-p / min-p leave zeros)
    draws = uniform_draws(torch.arange(rows) * 7919 + 1, torch.full((rows,), 3))
    picked = invert_cdf(probs.to(device), draws.to(device)).cpu()
    ref = full_cumsum_pick(probs, draws)
    # The sums run in another order (and the reference in float64): a draw may sit within rounding of a token
    # boundary, and then the neighbour is as right; nowhere else may they differ.
    assert (picked != ref).sum() <= 1
    assert (probs.gather(1, picked[:, None]) > 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_a_draw_at_the_very_end_never_picks_a_zero_probability_token(device):
    probs = torch.zeros(2, 3 * CDF_BLOCK, device=device)
    probs[0, 5] = 1.0
    probs[1, CDF_BLOCK + 9] = 0.25
    probs[1, 2 * CDF_BLOCK + 1] = 0.75
    draws = torch.tensor([1.0 - 2**-53, 1.0 - 2**-53], dtype=torch.float64, device=device)
    assert invert_cdf(probs, draws).tolist() == [5, 2 * CDF_BLOCK + 1]
    zero = torch.tensor([0.0, 0.0], dtype=torch.float64, device=device)
    assert invert_cdf(probs, zero).tolist() == [5, CDF_BLOCK + 9]


def test_draw_frequencies_follow_the_probabilities():
    vocab, n = 3000, 4000
    probs = torch.rand(1, vocab, generator=torch.Generator().manual_seed(0)) ** 8
    draws = uniform_draws(torch.full((n,), 99), torch.arange(n))
    picked = invert_cdf(probs.expand(n, vocab).contiguous(), draws)
    # Aggregate into 10 equal-mass-agnostic buckets of tokens: observed vs expected share per bucket.
    bucket = torch.arange(vocab) * 10 // vocab
    expected = torch.zeros(10).index_add_(0, bucket, probs[0]) / probs.sum()
    observed = torch.bincount(bucket[picked], minlength=10).double() / n
    assert (observed - expected.double()).abs().max() < 0.03
