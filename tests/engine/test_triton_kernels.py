"""The Triton attention ops against the torch references, on random paged caches.

On a CUDA device they run compiled, in bf16 and fp16; in CI (no GPU) the same kernels run under Triton's
interpreter (TRITON_INTERPRET=1, set by conftest.py before Triton is imported) on tiny shapes in fp32 and
fp16 (the interpreter mishandles bf16 dot products).
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from engine.kernels import reference  # noqa: E402
from engine.kernels import triton_attention as tk  # noqa: E402

from .paged import paged_case as shared_paged_case  # noqa: E402

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
DTYPES = [torch.bfloat16, torch.float16] if ON_GPU else [torch.float32, torch.float16]


def tolerance(dtype: torch.dtype) -> float:
    return {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}[dtype]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-12))


def paged_case(lens, new, heads, kv_heads, dim, block, dtype, seed=0):
    return shared_paged_case(lens, new, heads, kv_heads, dim, block, dtype, DEVICE, seed=seed)


def cpu_ref(fn, *tensors, **kw):
    return fn(*[t.cpu().float() if t.is_floating_point() else t.cpu().long() for t in tensors], **kw)


PREFILL_CASES = [
    # (context lengths, new tokens, heads, kv heads, head dim, block size)
    ([1], [1], 2, 1, 16, 4),                 # length 1
    ([37, 5], [37, 5], 4, 2, 16, 8),         # no prefix, lengths not a multiple of tile or block
    ([40, 23], [9, 23], 6, 2, 32, 16),       # cached prefix + new tokens, GQA 3:1
    ([16], [16], 2, 2, 64, 16),              # exactly one block
    ([70], [3], 3, 1, 24, 4),                # MQA, head dim not a power of two, short suffix
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lens,new,heads,kv_heads,dim,block", PREFILL_CASES)
def test_prefill_matches_reference(lens, new, heads, kv_heads, dim, block, dtype):
    q, kc, vc, cu, ctx, tables = paged_case(lens, new, heads, kv_heads, dim, block, dtype)
    scale = dim**-0.5
    out = tk.prefill_attention(q, kc, vc, cu, ctx, tables, scale)
    ref = cpu_ref(reference.prefill_attention, q, kc, vc, cu, ctx, tables, scale=scale)
    assert rel_err(out.cpu(), ref) < tolerance(dtype)


DECODE_CASES = [
    ([1], 2, 1, 16, 4),
    ([5, 33, 64], 6, 2, 32, 8),
    ([130, 7], 9, 3, 64, 16),                # SmolLM2's 9:3 grouping
    ([300], 4, 4, 16, 4),                    # many blocks, several splits
    ([200, 90], 16, 1, 128, 16),             # a wide group at the largest head dim
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lens,heads,kv_heads,dim,block", DECODE_CASES)
def test_decode_matches_reference(lens, heads, kv_heads, dim, block, dtype):
    q, kc, vc, _, ctx, tables = paged_case(lens, [1] * len(lens), heads, kv_heads, dim, block, dtype, seed=1)
    scale = dim**-0.5
    out = tk.decode_attention(q, kc, vc, ctx, tables, scale)
    ref = cpu_ref(reference.decode_attention, q, kc, vc, ctx, tables, scale=scale)
    assert rel_err(out.cpu(), ref) < tolerance(dtype)


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a GPU")
def test_decode_in_a_cuda_graph_replays_on_new_data():
    q, kc, vc, _, ctx, tables = paged_case([700, 33, 2048], [1] * 3, 9, 3, 64, 16, torch.bfloat16, seed=5)
    scale = 64**-0.5
    tk.decode_attention(q, kc, vc, ctx, tables, scale, max_context_len=2048, split_tokens=256)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = tk.decode_attention(q, kc, vc, ctx, tables, scale, max_context_len=2048, split_tokens=256)
    for seed in (6, 7):
        q2, kc2, vc2, _, _, _ = paged_case([700, 33, 2048], [1] * 3, 9, 3, 64, 16, torch.bfloat16, seed=seed)
        q.copy_(q2)
        kc.copy_(kc2)
        vc.copy_(vc2)
        graph.replay()
        ref = cpu_ref(reference.decode_attention, q, kc, vc, ctx, tables, scale=scale)
        assert rel_err(out.cpu(), ref) < tolerance(torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("split_tokens", [16, 48, 1024])
def test_decode_with_capped_splits_matches_reference(split_tokens, dtype):
    """Mixed lengths, as continuous batching gives them: capped splits (many of them empty for the short
    sequences) merge to the same attention."""
    lens = [3, 300, 41, 17]
    q, kc, vc, _, ctx, tables = paged_case(lens, [1] * len(lens), 6, 2, 32, 8, dtype, seed=2)
    scale = 32**-0.5
    out = tk.decode_attention(q, kc, vc, ctx, tables, scale, max_context_len=320, split_tokens=split_tokens)
    ref = cpu_ref(reference.decode_attention, q, kc, vc, ctx, tables, scale=scale)
    assert rel_err(out.cpu(), ref) < tolerance(dtype)


DECODE_TILES = [(32, 4, 2), (64, 4, 3), (128, 4, 3), (128, 8, 4)] if ON_GPU else [(16, 1, 1), (32, 1, 1)]


@pytest.mark.parametrize("tiles", DECODE_TILES)
@pytest.mark.parametrize("dim", [64, 128])
def test_decode_with_explicit_tiles_matches_reference(tiles, dim):
    """Every tile choice the tuning benchmark sweeps computes the same attention, including tiles longer than a
    split or than the shortest contexts."""
    dtype = torch.float16
    lens = [1, 130, 77, 513]
    q, kc, vc, _, ctx, tables = paged_case(lens, [1] * len(lens), 8, 2, dim, 16, dtype, seed=3)
    scale = dim**-0.5
    out = tk.decode_attention(q, kc, vc, ctx, tables, scale, max_context_len=520, tiles=tiles)
    ref = cpu_ref(reference.decode_attention, q, kc, vc, ctx, tables, scale=scale)
    assert rel_err(out.cpu(), ref) < tolerance(dtype)


def test_decode_tile_rule_keeps_long_tiles_off_small_shared_memories():
    """128-key tiles only where their pipelined K/V buffers fit (an A100's 164 KiB or a consumer GPU's 99 KiB
    would fail to launch them); with Hopper's 227 KiB they are taken until the groups fill the SMs."""
    for shared_mem in (99 * 1024, 164 * 1024):
        for dim in (64, 128):
            for groups in (8, 4096):
                assert tk._decode_block_n(dim, groups, shared_mem, 132) < 128
    hopper = 227 * 1024
    assert tk._decode_block_n(128, 8, hopper, 132) == 128
    assert tk._decode_block_n(128, 4096, hopper, 132) == 64
    assert tk._decode_block_n(64, 4096, hopper, 132) == 128


@pytest.mark.parametrize("tiles", [(24, 4, 3), (8, 4, 3), (64, 0, 3), (64, 4, 0)])
def test_decode_rejects_bad_tiles(tiles):
    q, kc, vc, _, ctx, tables = paged_case([5], [1], 4, 2, 32, 8, torch.float16)
    with pytest.raises(ValueError, match="tiles must be"):
        tk.decode_attention(q, kc, vc, ctx, tables, 32**-0.5, tiles=tiles)


@pytest.mark.parametrize("dtype", DTYPES)
def test_store_kv_writes_exactly_the_mapped_slots(dtype):
    gen = torch.Generator().manual_seed(2)
    k_cache = torch.full((6, 4, 2, 8), 7.0).to(dtype).to(DEVICE)
    v_cache = torch.full((6, 4, 2, 8), 7.0).to(dtype).to(DEVICE)
    key = torch.randn(5, 2, 8, generator=gen).to(dtype).to(DEVICE)
    value = torch.randn(5, 2, 8, generator=gen).to(dtype).to(DEVICE)
    slots = torch.tensor([0, 5, 23, 9, 12], dtype=torch.int64, device=DEVICE)
    ref_k, ref_v = k_cache.clone().cpu(), v_cache.clone().cpu()
    reference.store_kv(key.cpu(), value.cpu(), ref_k, ref_v, slots.cpu())
    tk.store_kv(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache.cpu(), ref_k)
    assert torch.equal(v_cache.cpu(), ref_v)


from engine.kernels import triton_fused as tf  # noqa: E402


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [64, 96])
@pytest.mark.parametrize("with_residual", [False, True])
def test_add_rms_norm_matches_reference(dtype, hidden, with_residual):
    gen = torch.Generator().manual_seed(hidden)
    x, residual = (torch.randn(5, hidden, generator=gen).to(dtype).to(DEVICE) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(hidden, generator=gen)).to(dtype).to(DEVICE)
    out, summed = tf.add_rms_norm(x, residual if with_residual else None, weight, 1e-5)
    ref_out, ref_summed = reference.add_rms_norm(x, residual if with_residual else None, weight, 1e-5)
    assert rel_err(summed, ref_summed) < tolerance(dtype)
    assert rel_err(out, ref_out) < tolerance(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 2, 16), (3, 1, 24)])
def test_rotary_store_matches_reference(dtype, heads, kv_heads, dim):
    gen = torch.Generator().manual_seed(dim)
    tokens, blocks, block = 6, 4, 4
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim, generator=gen).to(dtype).to(DEVICE)
    positions = torch.tensor([0, 1, 7, 3, 30, 31], device=DEVICE)
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    freqs = torch.outer(torch.arange(32, dtype=torch.float64), inv)
    cos = torch.cat((freqs.cos(), freqs.cos()), -1).to(dtype).to(DEVICE)
    sin = torch.cat((-freqs.sin(), freqs.sin()), -1).to(dtype).to(DEVICE)
    slots = torch.tensor([5, 0, 15, 9, -1, 2], device=DEVICE)
    caches = [torch.zeros(blocks, block, kv_heads, dim, dtype=dtype, device=DEVICE) for _ in range(4)]
    q = tf.rotary_store(qkv, positions, cos, sin, caches[0], caches[1], slots, heads, kv_heads, dim)
    keep = slots >= 0  # the reference has no skipped slot: give it only the stored rows
    ref_q = reference.rotary_store(qkv, positions, cos, sin, caches[2], caches[3], slots.clamp(min=0), heads,
                                   kv_heads, dim)
    ref_q_kept = reference.rotary_store(qkv[keep], positions[keep], cos, sin, caches[2], caches[3], slots[keep],
                                        heads, kv_heads, dim)
    assert rel_err(q, ref_q) < tolerance(dtype)
    assert rel_err(q[keep], ref_q_kept) < tolerance(dtype)
    assert rel_err(caches[0], caches[2]) < tolerance(dtype)
    assert rel_err(caches[1], caches[3]) < tolerance(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [48, 1536])
def test_silu_and_mul_matches_reference(dtype, width):
    gate_up = torch.randn(3, 2 * width, generator=torch.Generator().manual_seed(width)).to(dtype).to(DEVICE)
    assert rel_err(tf.silu_and_mul(gate_up), reference.silu_and_mul(gate_up.clone())) < tolerance(dtype)


from engine.kernels import triton_sampling  # noqa: E402
from engine.sampler import Sampler, SamplingBatch, uniform_draws  # noqa: E402


@pytest.mark.parametrize("vocab", [1000, 5000])
def test_fused_sampling_matches_the_torch_sampler(vocab):
    gen = torch.Generator().manual_seed(vocab)
    rows = 24
    logits = (3 * torch.randn(rows, vocab, generator=gen)).to(DEVICE)
    temperatures = torch.tensor([0.0, 0.3, 0.7, 1.0, 1.5, 0.0] * 4, device=DEVICE)
    sampled = [i for i in range(rows) if temperatures[i] > 0]
    draws = uniform_draws(torch.arange(rows, device=DEVICE) * 7919 + 3, torch.full((rows,), 5, device=DEVICE))
    tokens, logprobs, log_norm = triton_sampling.sample(logits, temperatures, draws)
    batch = SamplingBatch(sampled, torch.tensor(sampled, device=DEVICE), temperatures=temperatures[sampled])
    ref_tokens, ref_logprobs, ref_log_norm = Sampler.sample(logits, batch, draws[sampled])
    assert torch.equal(tokens, ref_tokens)
    assert torch.allclose(log_norm, ref_log_norm, atol=1e-4)
    assert torch.allclose(logprobs, ref_logprobs, atol=1e-4)
    greedy = temperatures == 0
    assert torch.equal(tokens[greedy], logits[greedy].argmax(-1))


def test_fused_sampling_frequencies_follow_the_distribution():
    # One row repeated with 600 different draws: token frequencies must follow softmax(logits / T), not softmax.
    vocab, draws_n, temperature = 10, 600, 0.5
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(1)).repeat(draws_n, 1).to(DEVICE)
    draws = uniform_draws(torch.full((draws_n,), 12345, device=DEVICE), torch.arange(draws_n, device=DEVICE))
    tokens, _, _ = triton_sampling.sample(logits, torch.full((draws_n,), temperature, device=DEVICE), draws)
    freq = torch.bincount(tokens.cpu(), minlength=vocab).double() / draws_n
    tempered = torch.softmax(logits[0].cpu().double() / temperature, -1)
    untempered = torch.softmax(logits[0].cpu().double(), -1)
    distance = (freq - tempered).abs().sum() / 2
    assert distance < 0.08  # expected ~0.05 for a correct sampler at this n
    assert distance < (freq - untempered).abs().sum() / 2
