"""The Gluon (FA3-style, Hopper) prefill kernel against the torch reference on random paged caches.

Runs only on a CUDA device of compute capability 9.x with a Triton whose Gluon dialect imports; everything
else skips. The reference runs in fp32 on the same device.
"""

from __future__ import annotations

import pytest
import torch

if not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9):
    pytest.skip("the Gluon prefill kernel needs a Hopper (sm_90) GPU", allow_module_level=True)
pytest.importorskip("triton.experimental.gluon", reason="this Triton has no Gluon dialect")

from engine.kernels import gluon_attention as ga  # noqa: E402
from engine.kernels import reference  # noqa: E402

from .paged import paged_case as shared_paged_case  # noqa: E402

DEVICE = "cuda"


def paged_case(lens, new, heads, kv_heads, dim, block, dtype, seed=0):
    return shared_paged_case(lens, new, heads, kv_heads, dim, block, dtype, DEVICE, seed=seed)


def full_attention_ref(query, k_cache, v_cache, cu, ctx, tables, scale):
    """Non-causal reference: every new token of a sequence sees its whole context (fp32, one sequence at a time)."""
    outs = []
    block = k_cache.shape[1]
    group = query.shape[1] // k_cache.shape[2]
    for i in range(ctx.shape[0]):
        pos = torch.arange(int(ctx[i]), device=DEVICE)
        slots = tables[i, pos // block].long() * block + pos % block
        k = k_cache.flatten(0, 1)[slots].float().repeat_interleave(group, dim=1).transpose(0, 1)
        v = v_cache.flatten(0, 1)[slots].float().repeat_interleave(group, dim=1).transpose(0, 1)
        q = query[int(cu[i]) : int(cu[i + 1])].float().transpose(0, 1)
        probs = torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1)
        outs.append((probs @ v).transpose(0, 1))
    return torch.cat(outs)


CASES = [
    # (context lengths, new tokens): varlen, lengths off the tile and block grid, cached prefixes
    ([1, 100, 300, 1024 + 37], [1, 100, 300, 1024 + 37]),
    ([1, 100 + 57, 300 + 700, 1024 + 37], [1, 100, 300, 1024 + 37]),
    ([513, 64, 2048], [129, 64, 2048]),
]


def check_against_reference(case, causal, scale, **options):
    """Run the kernel on a ``paged_case`` and compare with the fp32 reference (causal or full)."""
    q, kc, vc, cu, ctx, tables = case
    assert ga.supported(q, kc)
    out = ga.prefill_attention(q, kc, vc, cu, ctx, tables, scale, causal=causal, **options)
    args = [t.float() if t.is_floating_point() else t for t in case]
    if causal:
        ref = reference.prefill_attention(*args, scale=scale)
    else:
        ref = full_attention_ref(*args, scale=scale)
    assert torch.isfinite(out).all()
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 2e-2, f"max abs error {err:.2e} of the reference scale"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block", [256, 128])
@pytest.mark.parametrize("lens,new", CASES)
@pytest.mark.parametrize(
    "pingpong,schedule", [(True, "static"), (True, "dynamic"), (True, "per_item"), (False, "per_item")]
)
def test_gluon_prefill_matches_reference(lens, new, block, causal, dim, dtype, pingpong, schedule):
    case = paged_case(lens, new, 8, 2, dim, block, dtype)
    check_against_reference(case, causal, dim**-0.5, pingpong=pingpong, schedule=schedule)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block", [256, 128])
@pytest.mark.parametrize("lens,new", CASES)
@pytest.mark.parametrize(
    "pingpong,schedule", [(True, "static"), (True, "dynamic"), (True, "per_item"), (False, "static")]
)
def test_three_consumer_warpgroups_at_head_dim_64(lens, new, block, causal, pingpong, schedule):
    """192-row work items: three warpgroups take turns; causal items' first rows skip the key tiles wholly in
    their future and rows past the new tokens skip everything but one tile."""
    case = paged_case(lens, new, 8, 2, 64, block, torch.bfloat16)
    check_against_reference(case, causal, 0.125, pingpong=pingpong, schedule=schedule, consumers=3)


@pytest.mark.parametrize("schedule,consumers", [("static", 2), ("dynamic", 2), ("static", 3), ("dynamic", 3)])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("causal", [True, False])
def test_persistent_walks_many_more_items_than_sms(dim, causal, schedule, consumers):
    """64 sequences of 1..700 new tokens, most behind a cached prefix: thousands of work items (many of them
    empty, many with one key tile) per SM-sized grid, so each program carries its ring, turn, Q-buffer (and,
    dynamic, item-slot) phases across dozens of items."""
    if consumers == 3 and dim == 128:
        pytest.skip("three consumer warpgroups run at head dim 64 only")
    gen = torch.Generator().manual_seed(5)
    new = torch.randint(1, 701, (64,), generator=gen)
    prefix = torch.randint(0, 900, (64,), generator=gen) * (torch.rand(64, generator=gen) < 0.7)
    case = paged_case((new + prefix).tolist(), new.tolist(), 8, 2, dim, 256, torch.bfloat16, seed=6)
    check_against_reference(case, causal, dim**-0.5, schedule=schedule, consumers=consumers)


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_persistent_with_fewer_items_than_sms(schedule):
    """Four work items: a grid of four programs, one item each (the rest of the GPU idle)."""
    case = paged_case([300], [200], 2, 1, 128, 256, torch.bfloat16, seed=7)
    check_against_reference(case, True, 128**-0.5, schedule=schedule)


def test_dynamic_queue_is_reset_between_calls():
    """The work counter is a cached buffer the kernel resets (the last ticket's program): back-to-back calls,
    with different grids and item counts, each see every item, and leave the counter at zero."""
    big = paged_case([900, 1500], [700, 1500], 8, 2, 128, 256, torch.bfloat16, seed=9)  # grid of one per SM
    small = paged_case([300], [200], 2, 1, 128, 256, torch.bfloat16, seed=7)  # grid of four programs
    for case in (big, big, small, big):
        check_against_reference(case, True, 128**-0.5, schedule="dynamic")
        assert int(ga._work_queue(case[0].device.index)[0]) == 0


@pytest.mark.parametrize("dim", [64, 128])
def test_dynamic_walks_long_causal_sequences_longest_tile_first(dim):
    """A 4.5k-token causal run next to short ones: 36 query tiles per (sequence, head) taken last tile first."""
    case = paged_case([4500, 700, 130], [4500, 300, 130], 4, 2, dim, 256, torch.bfloat16, seed=10)
    check_against_reference(case, True, dim**-0.5, schedule="dynamic")


def test_gluon_prefill_matches_triton_kernel_on_the_bench_shape():
    """The benchmark's layout (identity tables, equal lengths, MHA) against our Triton kernel."""
    from engine.kernels import triton_attention as tk

    seq, batch, heads, dim, block = 2048, 2, 16, 128, 256
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    kc = torch.randn(batch * seq // block, block, heads, dim, device=DEVICE, generator=gen, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    q = torch.randn(batch * seq, heads, dim, device=DEVICE, generator=gen, dtype=torch.bfloat16)
    tables = torch.arange(batch * seq // block, device=DEVICE, dtype=torch.int32).view(batch, -1)
    cu = torch.arange(batch + 1, device=DEVICE, dtype=torch.int32) * seq
    ctx = torch.full((batch,), seq, device=DEVICE, dtype=torch.int32)
    for causal in (True, False):
        out = ga.prefill_attention(q, kc, vc, cu, ctx, tables, dim**-0.5, causal=causal, max_new_tokens=seq)
        ref = tk.prefill_attention(q, kc, vc, cu, ctx, tables, dim**-0.5, causal=causal, max_new_tokens=seq)
        assert (out.float() - ref.float()).abs().max() < 2e-2


def test_supported_rejects_what_the_kernel_cannot_do():
    q = torch.empty(4, 8, 128, device=DEVICE, dtype=torch.bfloat16)
    assert ga.supported(q, torch.empty(2, 256, 2, 128, device=DEVICE, dtype=torch.bfloat16))
    assert not ga.supported(q, torch.empty(2, 16, 2, 128, device=DEVICE, dtype=torch.bfloat16))  # block < BLOCK_N
    assert not ga.supported(q.float(), torch.empty(2, 256, 2, 128, device=DEVICE))  # fp32
    q96 = torch.empty(4, 8, 96, device=DEVICE, dtype=torch.bfloat16)
    assert not ga.supported(q96, torch.empty(2, 256, 2, 96, device=DEVICE, dtype=torch.bfloat16))
    assert not ga.supported(q.cpu(), torch.empty(2, 256, 2, 128, dtype=torch.bfloat16))


def test_engine_op_runs_the_gluon_kernel_for_large_blocks_and_triton_for_small():
    """``engine.kernels.prefill_attention`` (what the models call) picks Gluon for 256-token blocks and the
    Triton kernel for the engine's default 16-token blocks; both agree with the reference."""
    from engine import kernels
    from engine.kernels import triton_attention as tk

    for block, impl in ((256, ga), (16, tk)):
        q, kc, vc, cu, ctx, tables = paged_case([300, 45], [200, 45], 9, 3, 64, block, torch.bfloat16, seed=4)
        out = kernels.prefill_attention(q, kc, vc, cu, ctx, tables, 0.125)
        assert torch.equal(out, impl.prefill_attention(q, kc, vc, cu, ctx, tables, 0.125))
        args = [t.float() if t.is_floating_point() else t for t in (q, kc, vc, cu, ctx, tables)]
        ref = reference.prefill_attention(*args, scale=0.125)
        assert (out.float() - ref).abs().max() / ref.abs().max() < 2e-2


@pytest.mark.parametrize("dim,new", [(64, [1000]), (64, [4300]), (128, [4300]), (64, [4300, 700])])
def test_auto_plan_runs_right(dim, new):
    check_against_reference(paged_case(new, new, 4, 2, dim, 256, torch.bfloat16, seed=7), True, dim**-0.5)


@pytest.mark.parametrize("schedule", ["static", "dynamic", "per_item"])
def test_int64_index_tensors_as_the_engine_passes_them(schedule):
    """The engine's cu_seqlens / context lengths / block tables are int64 (torch.long)."""
    q, kc, vc, cu, ctx, tables = paged_case([300, 45], [200, 45], 9, 3, 64, 256, torch.bfloat16, seed=8)
    case = [q, kc, vc, cu.long(), ctx.long(), tables.long()]
    check_against_reference(case, True, 0.125, schedule=schedule)
