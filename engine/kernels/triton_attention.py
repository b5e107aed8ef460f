"""Triton implementations of the three paged-attention ops, with the torch references' signatures.

Cache layout (per layer): ``k_cache`` / ``v_cache`` are ``[num_blocks, block_size, num_kv_heads, head_dim]``;
token slot = block_id * block_size + offset; ``block_tables[i]`` lists sequence i's blocks (-1 padded);
``context_lens[i]`` counts its tokens including the new ones.

- ``store_kv``: one program per token writes its K and V rows through ``slot_mapping``.
- ``prefill_attention``: FlashAttention-2 style. One program per (query tile, sequence, head); the keys are
  the sequence's cached prefix plus its new tokens, read through the block table row by row. Online softmax
  in the exp2 domain; key tiles entirely in a query tile's future are never visited, and only the tiles on
  the diagonal pay for the causal mask.
- ``decode_attention``: flash-decoding. One program per (sequence, KV head, split) handles all query heads of
  that KV group at once, so each KV tile is read once per group; splits of the context run in parallel and a
  second kernel merges their partial outputs by log-sum-exp, so a batch of one long sequence still fills
  the GPU. The split count is a runtime argument (the merge pads it to a power of two), so the engine's
  changing batch sizes and lengths do not compile a new kernel variant each.

The same kernels run on the CPU under ``TRITON_INTERPRET=1`` (tests use fp32 / fp16 there).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _store_kv_kernel(
    key, value, k_cache, v_cache, slot_mapping,
    stride_kt, stride_vt,
    ROW: tl.constexpr, ROW_PAD: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_mapping + token).to(tl.int64)
    if slot < 0:
        return
    offs = tl.arange(0, ROW_PAD)
    mask = offs < ROW
    k = tl.load(key + token * stride_kt + offs, mask=mask)
    v = tl.load(value + token * stride_vt + offs, mask=mask)
    tl.store(k_cache + slot * ROW + offs, k, mask=mask)
    tl.store(v_cache + slot * ROW + offs, v, mask=mask)


def store_kv(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write ``key`` / ``value`` ``[num_tokens, num_kv_heads, head_dim]`` into the cache at ``slot_mapping``
    (a slot of -1 is skipped)."""
    num_tokens, heads, dim = key.shape
    if num_tokens == 0:
        return
    key = key if key.stride(-1) == 1 and key.stride(1) == dim else key.contiguous()
    value = value if value.stride(-1) == 1 and value.stride(1) == dim else value.contiguous()
    row = heads * dim
    _store_kv_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), value.stride(0),
        ROW=row, ROW_PAD=triton.next_power_of_2(row),
    )


@triton.jit
def _kv_tile(k_cache, v_cache, table, start, ctx, kv_head, offs_n, offs_d, d_mask,
             ROW_STRIDE: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Load the K and V rows of context positions start .. start + BLOCK_N through the block table."""
    kv_pos = start + offs_n
    in_range = kv_pos < ctx
    if BLOCK_SIZE >= BLOCK_N:
        # The tile lies inside one cache block: one table read, contiguous rows.
        block_id = tl.load(table + start // BLOCK_SIZE).to(tl.int64)
        slots = block_id * BLOCK_SIZE + (start % BLOCK_SIZE) + offs_n
    else:
        block_ids = tl.load(table + kv_pos // BLOCK_SIZE, mask=in_range, other=0).to(tl.int64)
        slots = block_ids * BLOCK_SIZE + kv_pos % BLOCK_SIZE
    kv_off = slots[:, None] * ROW_STRIDE + kv_head * HEAD_DIM + offs_d[None, :]
    kv_mask = in_range[:, None] & d_mask[None, :]
    k = tl.load(k_cache + kv_off, mask=kv_mask, other=0.0)
    v = tl.load(v_cache + kv_off, mask=kv_mask, other=0.0)
    return k, v, kv_pos, in_range


@triton.jit
def _online_softmax_update(acc, l_i, m_i, s, v):
    """Fold one tile of log2-domain scores s and values v into the running max m, sum l and output acc."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, l_i, m_new


@triton.jit
def _prefill_inner(acc, l_i, m_i, q, q_pos, k_cache, v_cache, k_desc, v_desc, table, lo, hi, ctx, kv_head,
                   offs_n, offs_d, d_mask,
                   MASKED: tl.constexpr, CAUSAL: tl.constexpr, ROW_STRIDE: tl.constexpr,
                   BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                   USE_TMA: tl.constexpr):
    """Online-softmax accumulation over key tiles [lo, hi); q is pre-scaled into the exp2 domain."""
    for start in range(lo, hi, BLOCK_N):
        if USE_TMA:
            # One cache block holds the whole tile: the tensor-copy engine fetches it as one 2-D box.
            block_id = tl.load(table + start // BLOCK_SIZE)
            row0 = block_id * BLOCK_SIZE + start % BLOCK_SIZE
            k = k_desc.load([row0, kv_head * HEAD_DIM])
            v = v_desc.load([row0, kv_head * HEAD_DIM])
            kv_pos = start + offs_n
            in_range = kv_pos < ctx
        else:
            k, v, kv_pos, in_range = _kv_tile(k_cache, v_cache, table, start, ctx, kv_head, offs_n, offs_d,
                                              d_mask, ROW_STRIDE, BLOCK_SIZE, BLOCK_N, HEAD_DIM)
        s = tl.dot(q, tl.trans(k))
        if MASKED:
            visible = in_range[None, :]
            if CAUSAL:
                visible = visible & (kv_pos[None, :] <= q_pos[:, None])
            s = tl.where(visible, s, float("-inf"))
        acc, l_i, m_i = _online_softmax_update(acc, l_i, m_i, s, v)
    return acc, l_i, m_i


@triton.jit
def _prefill_kernel(
    query, k_cache, v_cache, out,
    cu_seqlens_q, context_lens, block_tables,
    qk_scale,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_bt,
    GROUP: tl.constexpr, NUM_KV_HEADS: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    NUM_CACHE_ROWS, USE_TMA: tl.constexpr,
):
    tile = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(cu_seqlens_q + seq)
    n_new = tl.load(cu_seqlens_q + seq + 1) - q_start
    if tile * BLOCK_M >= n_new:
        return
    ctx = tl.load(context_lens + seq)
    prefix = ctx - n_new
    kv_head = head // GROUP

    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    d_mask = offs_d < HEAD_DIM
    m_mask = offs_m < n_new
    q_ptrs = query + (q_start + offs_m)[:, None].to(tl.int64) * stride_qt + head * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_mask[:, None] & d_mask[None, :], other=0.0)
    q = (q * qk_scale).to(q.dtype)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], dtype=tl.float32)
    q_pos = prefix + offs_m
    table = block_tables + seq.to(tl.int64) * stride_bt
    ROW_STRIDE: tl.constexpr = NUM_KV_HEADS * HEAD_DIM
    k_desc = k_cache
    v_desc = v_cache
    if USE_TMA:
        k_desc = tl.make_tensor_descriptor(k_cache, shape=[NUM_CACHE_ROWS, ROW_STRIDE], strides=[ROW_STRIDE, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(v_cache, shape=[NUM_CACHE_ROWS, ROW_STRIDE], strides=[ROW_STRIDE, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])

    if CAUSAL:
        # Keys up to the tile's first query position are visible to every row: no mask there. Tiles
        # wholly after the tile's last query are never visited.
        free_end = ((prefix + tile * BLOCK_M + 1) // BLOCK_N) * BLOCK_N
        visit_end = tl.minimum(ctx, prefix + (tile + 1) * BLOCK_M)
    else:
        free_end = (ctx // BLOCK_N) * BLOCK_N
        visit_end = ctx
    acc, l_i, m_i = _prefill_inner(acc, l_i, m_i, q, q_pos, k_cache, v_cache, k_desc, v_desc, table, 0, free_end,
                                   ctx, kv_head, offs_n, offs_d, d_mask, False, CAUSAL, ROW_STRIDE, BLOCK_SIZE,
                                   BLOCK_N, HEAD_DIM, USE_TMA)
    acc, l_i, m_i = _prefill_inner(acc, l_i, m_i, q, q_pos, k_cache, v_cache, k_desc, v_desc, table, free_end,
                                   visit_end, ctx, kv_head, offs_n, offs_d, d_mask, True, CAUSAL, ROW_STRIDE,
                                   BLOCK_SIZE, BLOCK_N, HEAD_DIM, USE_TMA)
    acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_ptrs = out + (q_start + offs_m)[:, None].to(tl.int64) * stride_ot + head * stride_oh + offs_d[None, :]
    tl.store(o_ptrs, acc.to(out.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


def _prefill_tiles(head_dim: int, max_new: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages): measured on an H200 at 16k tokens (docs/benchmarks.md);
    tiny tiles for the CPU interpreter."""
    if INTERPRET:
        return 16, 16, 1, 1
    if max_new <= 64:
        return 64, 64, 4, 2
    if head_dim <= 64:
        return 128, 64, 4, 3
    return 128, 128, 8, 3


def _alloc_scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    return torch.empty(size, device="cuda", dtype=torch.int8)


def prefill_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    causal: bool = True,
    max_new_tokens: int | None = None,
    tiles: tuple[int, int, int, int] | None = None,
    use_tma: bool | None = None,
) -> torch.Tensor:
    """Varlen GQA attention of the new tokens over each sequence's cached prefix plus themselves.

    Same contract as the torch reference; ``causal=False`` lets every new token see the whole context.
    ``max_new_tokens`` (the largest cu_seqlens_q difference) saves a device sync when the caller knows it.
    ``tiles`` = (BLOCK_M, BLOCK_N, num_warps, num_stages) overrides the per-head-dim choice (for tuning);
    ``use_tma`` (default: when the GPU is Hopper or newer, the head dim a power of two and every key tile
    inside one cache block) reads K/V tiles with the tensor-copy engine.
    """
    num_tokens, num_heads, head_dim = query.shape
    num_kv_heads = k_cache.shape[2]
    out = torch.empty_like(query)
    if num_tokens == 0:
        return out
    num_seqs = cu_seqlens_q.shape[0] - 1
    if max_new_tokens is None:
        max_new_tokens = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    block_m, block_n, warps, stages = tiles or _prefill_tiles(head_dim, max_new_tokens)
    block_size = k_cache.shape[1]
    tma_ok = (not INTERPRET and query.is_cuda and torch.cuda.get_device_capability(query.device)[0] >= 9
              and head_dim == triton.next_power_of_2(head_dim) and block_size >= block_n)
    use_tma = tma_ok if use_tma is None else (use_tma and tma_ok)
    if use_tma:
        triton.set_allocator(_alloc_scratch)
    grid = (triton.cdiv(max_new_tokens, block_m), num_seqs, num_heads)
    _prefill_kernel[grid](
        query, k_cache, v_cache, out,
        cu_seqlens_q, context_lens, block_tables,
        scale * LOG2E,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        block_tables.stride(0),
        GROUP=num_heads // num_kv_heads, NUM_KV_HEADS=num_kv_heads, BLOCK_SIZE=k_cache.shape[1],
        HEAD_DIM=head_dim, HEAD_PAD=triton.next_power_of_2(head_dim),
        BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
        NUM_CACHE_ROWS=k_cache.shape[0] * block_size, USE_TMA=use_tma,
        num_warps=warps, num_stages=stages,
    )
    return out


@triton.jit
def _decode_split_kernel(
    query, k_cache, v_cache, partial_out, partial_lse,
    context_lens, block_tables,
    qk_scale,
    stride_qs, stride_qh, stride_bt,
    tokens_per_split, num_splits,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, NUM_KV_HEADS: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(context_lens + seq)
    lo = split * tokens_per_split
    hi = tl.minimum(ctx, lo + tokens_per_split)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    g_mask = offs_g < GROUP
    d_mask = offs_d < HEAD_DIM
    heads = kv_head * GROUP + offs_g
    q_ptrs = query + seq.to(tl.int64) * stride_qs + heads[:, None] * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=g_mask[:, None] & d_mask[None, :], other=0.0)

    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_PAD], dtype=tl.float32)
    row_stride: tl.constexpr = NUM_KV_HEADS * HEAD_DIM
    table = block_tables + seq.to(tl.int64) * stride_bt
    for start in range(lo, hi, BLOCK_N):
        k, v, kv_pos, in_range = _kv_tile(k_cache, v_cache, table, start, hi, kv_head, offs_n, offs_d, d_mask,
                                          row_stride, BLOCK_SIZE, BLOCK_N, HEAD_DIM)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(in_range[None, :], s, float("-inf"))
        acc, l_i, m_i = _online_softmax_update(acc, l_i, m_i, s, v)
    # Partial result of this split, normalised, with its log2-sum-exp for the merge (-inf when empty).
    lse = tl.where(l_i > 0.0, m_i + tl.math.log2(tl.where(l_i > 0.0, l_i, 1.0)), float("-inf"))
    acc = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    row = (seq.to(tl.int64) * (NUM_KV_HEADS * GROUP) + heads) * num_splits + split
    tl.store(partial_out + row[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=g_mask[:, None] & d_mask[None, :])
    tl.store(partial_lse + row, lse, mask=g_mask)


@triton.jit
def _decode_merge_kernel(
    partial_out, partial_lse, out, stride_os, stride_oh, num_splits,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_PAD: tl.constexpr, SPLIT_PAD: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, SPLIT_PAD)
    offs_d = tl.arange(0, HEAD_PAD)
    s_mask = offs_s < num_splits
    d_mask = offs_d < HEAD_DIM
    row0 = (seq.to(tl.int64) * NUM_HEADS + head) * num_splits
    lse = tl.load(partial_lse + row0 + offs_s, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, 0)
    w = tl.where(lse == float("-inf"), 0.0, tl.math.exp2(lse - m))
    parts = tl.load(partial_out + (row0 + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
                    mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    o = tl.sum(parts * w[:, None], 0) / tl.sum(w, 0)
    tl.store(out + seq.to(tl.int64) * stride_os + head * stride_oh + offs_d, o.to(out.dtype.element_ty), mask=d_mask)


@functools.cache
def _shared_mem_and_sms(device_index: int) -> tuple[int, int]:
    """(opt-in shared memory per block in bytes, SM count) of a device, queried once."""
    props = triton.runtime.driver.active.utils.get_device_properties(device_index)
    return props["max_shared_mem"], props["multiprocessor_count"]


def _num_splits(num_seqs: int, num_kv_heads: int, max_len: int, block_n: int, split_tokens: int | None,
                sms: int | None) -> int:
    """Enough splits that (sequences x KV heads x splits) fills the ``sms`` SMs about twice (4 splits under the
    interpreter, ``sms=None``), each at least BLOCK_N keys, and with ``split_tokens`` also enough that no split
    holds more keys than that (64 splits at most)."""
    splits = 4 if sms is None else triton.cdiv(2 * sms, max(1, num_seqs * num_kv_heads))
    if split_tokens:
        splits = max(splits, triton.cdiv(max_len, split_tokens))
    return int(max(1, min(splits, triton.cdiv(max_len, block_n), 64)))


def _decode_block_n(head_dim: int, groups: int, shared_mem: int, sms: int) -> int:
    """Keys per tile of the decode split kernel, from an H200 sweep (docs/benchmarks.md, eighth session).

    With Hopper's shared memory (>= 200 KiB per block): 128 (fewer, larger loads in flight per program hide more
    of the memory latency), except at head dims above 64 once the (sequence, KV head) groups fill the SMs, where
    64 reads faster. Smaller shared memories keep the earlier 64 / 32: the pipelined 128-key K and V tiles would
    not fit."""
    if shared_mem < 200 * 1024:
        return 64 if head_dim <= 64 else 32
    if head_dim <= 64 or groups < sms:
        return 128
    return 64


def decode_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    max_context_len: int | None = None,
    split_tokens: int | None = None,
    tiles: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """One new token per sequence attending over its whole paged context (split-KV, then merged).

    ``max_context_len`` saves a device sync when the caller knows it (CUDA graphs must pass it).
    ``split_tokens`` caps the keys per split: when a batch mixes short and long contexts, one split per
    sequence leaves the kernel waiting on the program that walks the longest one while most SMs idle; capped
    splits even the programs out, at the price of a larger merge (worse for batches of equal lengths).
    ``tiles`` = (BLOCK_N, num_warps, num_stages) of the split kernel overrides the default choice (for tuning:
    ``benchmarks/decode_tiles_gpu.py``).
    """
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_heads // num_kv_heads
    out = torch.empty_like(query)
    if num_seqs == 0:
        return out
    if max_context_len is None:
        max_context_len = int(context_lens.max())
    shared_mem, sms = (None, None) if INTERPRET else _shared_mem_and_sms(query.device.index)
    if tiles is not None:
        block_n, warps, stages = tiles
        if block_n < 16 or block_n & (block_n - 1) or warps < 1 or stages < 1:
            raise ValueError(f"tiles must be (BLOCK_N, num_warps, num_stages) with BLOCK_N a power of two >= 16 "
                             f"and both counts >= 1, not {tiles!r}")
    elif INTERPRET:
        block_n, warps, stages = 16, 1, 1
    else:
        block_n, warps, stages = _decode_block_n(head_dim, num_seqs * num_kv_heads, shared_mem, sms), 4, 3
    splits = _num_splits(num_seqs, num_kv_heads, max_context_len, block_n, split_tokens, sms)
    tokens_per_split = triton.cdiv(triton.cdiv(max_context_len, splits), block_n) * block_n
    splits = triton.cdiv(max_context_len, tokens_per_split)
    partial_out = torch.empty((num_seqs * num_heads * splits, head_dim), dtype=torch.float32, device=query.device)
    partial_lse = torch.empty((num_seqs * num_heads * splits,), dtype=torch.float32, device=query.device)
    head_pad = triton.next_power_of_2(head_dim)
    _decode_split_kernel[(num_seqs, num_kv_heads, splits)](
        query, k_cache, v_cache, partial_out, partial_lse,
        context_lens, block_tables,
        scale * LOG2E,
        query.stride(0), query.stride(1), block_tables.stride(0),
        tokens_per_split, splits,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), NUM_KV_HEADS=num_kv_heads,
        BLOCK_SIZE=block_size, HEAD_DIM=head_dim, HEAD_PAD=head_pad, BLOCK_N=block_n,
        num_warps=warps, num_stages=stages,
    )
    _decode_merge_kernel[(num_seqs, num_heads)](
        partial_out, partial_lse, out, out.stride(0), out.stride(1), splits,
        NUM_HEADS=num_heads, HEAD_DIM=head_dim, HEAD_PAD=head_pad, SPLIT_PAD=max(2, triton.next_power_of_2(splits)),
        num_warps=1 if INTERPRET else 4,
    )
    return out
