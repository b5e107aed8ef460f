"""Hopper (sm_90) prefill attention in Triton's Gluon dialect: FlashAttention-3 structure, same contract as
``triton_attention.prefill_attention``.

Plain Triton does not give us FA3's producer/consumer split with asynchronous wgmma, so this kernel spells it out:

- Work items are (query tile, sequence, head), query tiles the fastest axis: the
  items running together walk the same sequence and head's keys and share them in L2 (measured on the H200:
  10-25% faster than heads fastest with the longest causal tiles first). Items whose tile lies past the
  sequence's new tokens are empty.
- Persistent grids: about one program per SM, each walking many items. The producer runs ahead across items: it
  loads the next item's Q (double-buffered per warpgroup) and first K/V tiles while the consumers finish the
  current item's last tiles and store its output, which hides the per-item start-up (Q latency, the first
  Q K^T with nothing to overlap) and tail that short sequences cannot amortise. Every barrier phase follows
  from running counts (key tiles, wgmma turns, items) that all partitions keep alike, see ``_prefill_kernel``.
  Two ways to assign the items (``schedule``; ``_plan`` picks one by shape, or one program per item):
  - "static": program p takes items p, p + programs, ... in that order, so the set running at once still
    moves through the items in order; the program count shares no factor with the tiles per (sequence, head),
    which spreads the causal tiles' unequal costs and the empty tiles evenly (see ``_persistent_programs``).
    Still, for long causal runs and mixed batches the fixed assignment leaves programs unequally loaded.
  - "dynamic" (FA3's tile scheduler): the producer draws each next item from a global atomic counter, skips
    empty ones itself, and hands the item index to the consumer warpgroups through a two-slot ring in shared
    memory (one slot per Q buffer, signalled by an mbarrier); the sentinel -1 ends their loops. Programs that
    finish early take more items, so the load balances at any length; causal items go longest tile first
    within each (sequence, head), so the short ones fill the end. The counter is a cached per-device buffer
    that the kernel leaves at zero (the program drawing the launch's last ticket resets it): no memset launch.
- A one-warp producer partition walks the block table and TMA-loads K and V tiles (``BLOCK_N`` rows of one
  cache block, one KV head) into a ``STAGES``-deep shared-memory ring, with separate ready/empty mbarriers for
  K and V so S = Q K^T can start before V has landed.
- Two consumer partitions of one warpgroup each (the default partition and a worker; three at head dim 64 for
  long runs, as in FA3, see ``_config``) own 64 query rows apiece, so a query tile has 128 (192) rows; each
  has its Q rows in shared memory (one TMA load: by the producer when persistent, else by the consumer) and
  its own arrivals on the K/V empty barriers (count: the consumers).
  Per key tile j a consumer issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} as asynchronous wgmmas, waits for S_j
  only, and runs tile j's online softmax (exp2 domain, scale folded into one FMA, row max as a tree) before
  waiting for P V; P stays in registers as the wgmma A operand. At head dim 64 P's row sums come from the
  tensor cores too (a narrow wgmma of P with a block of ones), which takes 64 additions per thread and tile out
  of the softmax, the loop's bottleneck there. With ``pingpong`` (default) the warpgroups take turns issuing their
  wgmmas (one mbarrier each, round robin), FA3's schedule: one warpgroup's softmax runs while the others'
  matrix products keep the tensor cores busy. Inside one warpgroup the softmax overlaps its own P V only at
  head dim 128 (see the fence in ``_consume_item``); at head dim 64 the turn-taking alone hides it. Only tiles
  crossing the context end or the causal diagonal pay for the mask; tiles wholly in a tile's future are never
  loaded, and a warpgroup skips the computation of tiles wholly in its own rows' future (causal) or of any tile
  when its rows lie past the new tokens; at head dim 64 it attends only the first half of a last tile whose
  second half is wholly in its rows' future.
- A warpgroup's output rows go out by one TMA store from its Q buffer, which no wgmma reads any more, so the
  warpgroup starts its next item at once; the buffer returns to the producer only once the store has read it,
  checked after the next item's first tile (the producer needs it two items later). Rows that end past the
  sequence's new tokens take masked register stores instead: a TMA store would spill into the next sequence.
- The dynamic producer hands the consumers each item's whole extent (first row, new tokens, prefix, key tiles)
  in the item slot, so they load nothing from global memory between items (measured: those dependent loads
  cost about 1,000 cycles per item boundary).

Imported only by callers that want it (never by ``engine.kernels`` at import time); ``supported`` says when it
applies.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

# Triton 3.7 renamed the TMA copies: 3.6 (the H200's, where every figure was measured) has only the old names,
# 3.9 (what torch 2.13 brings) only the new ones.
tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global

LOG2E = 1.4426950408889634
WG_M = 64  # query rows per consumer warpgroup
BLOCK_N = 128
CONSUMER_WARPS = 4  # one warpgroup per consumer partition
LONG_RUN = 4096  # new tokens per sequence from which head dim 64 runs best with three warpgroups (_plan)
ITEM_FIELDS = gl.constexpr(8)  # int32 fields of a dynamic work item's record in its item slot
ROW_MAX_FOLDS = gl.constexpr(int(math.log2(BLOCK_N // 8)))  # see _row_max
SUM_COLUMNS = gl.constexpr(8)  # the narrowest wgmma: width of the block of ones that sums P's rows
_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


@dataclasses.dataclass(frozen=True)
class _Config:
    """Launch shape: ``consumers`` warpgroups of ``WG_M`` query rows share each K/V tile; the register file (64K
    per SM, one program per SM) is split by setmaxnreg between them and the producer's warpgroup, ``maxnreg``
    being the even split the kernel launches with."""

    consumers: int
    stages: int  # K/V ring depth: as deep as fits next to Q in 227 KB of shared memory
    consumer_regs: int
    producer_regs: int

    @property
    def block_m(self) -> int:
        return self.consumers * WG_M

    @property
    def maxnreg(self) -> int:
        per_thread = 65536 // (32 * CONSUMER_WARPS * (self.consumers + 1))
        return per_thread - per_thread % 8  # registers are allocated 8 at a time


def _config(head_dim: int, consumers: int) -> _Config:
    """Two consumer warpgroups with 240 registers per thread (head dim 128 needs them for its 64 x 128 output
    accumulator), or, at head dim 64, three with 160 each (FA3's shape there: a third warpgroup's matrix
    products help hide the other two's softmax, which costs as much as at head dim 128 for half the FLOPs)."""
    if consumers == 2:
        return _Config(consumers=2, stages=2 if head_dim == 128 else 4, consumer_regs=240, producer_regs=24)
    if consumers == 3 and head_dim == 64:
        return _Config(consumers=3, stages=4, consumer_regs=160, producer_regs=32)
    raise ValueError(f"consumers must be 2, or 3 at head dim 64 (registers); got {consumers} at head dim {head_dim}")


def supported(query: torch.Tensor, k_cache: torch.Tensor) -> bool:
    """Whether this kernel handles the call: Hopper, 16-bit floats, head dim 64 / 128, key tiles inside a block."""
    return (
        query.is_cuda
        and torch.cuda.get_device_capability(query.device)[0] == 9
        and query.dtype in _GL_DTYPES
        and k_cache.dtype == query.dtype
        and query.shape[-1] in (64, 128)
        and k_cache.shape[1] % BLOCK_N == 0
        and k_cache.is_contiguous()
        and k_cache.data_ptr() % 16 == 0  # the tensor-copy engine needs 16-byte aligned bases and rows
    )


@gluon.jit
def _kv_producer(k_desc, v_desc, ring, table, kv_col, n_tiles, kv0,
                 BLOCK_SIZE: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    """Load K and V tile j (cache rows of context positions j*BLOCK_N ..) into the ring; kv0 is the number of
    tiles this program loaded before (the ring's running position: tile j is the program's tile kv0 + j)."""
    k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, _ = ring
    for j in range(n_tiles):
        c = kv0 + j
        stage = c % STAGES
        phase = (c // STAGES) & 1
        start = j * BLOCK_N
        row = gl.load(table + start // BLOCK_SIZE).to(gl.int32) * BLOCK_SIZE + start % BLOCK_SIZE
        # A fresh mbarrier counts as having completed the phase before 0: the first lap does not wait.
        mbarrier.wait(k_empty.index(stage), phase ^ 1)
        mbarrier.expect(k_ready.index(stage), k_desc.block_type.nbytes)
        tma_load(k_desc, [row, kv_col], k_ready.index(stage), k_bufs.index(stage))
        mbarrier.wait(v_empty.index(stage), phase ^ 1)
        mbarrier.expect(v_ready.index(stage), v_desc.block_type.nbytes)
        tma_load(v_desc, [row, kv_col], v_ready.index(stage), v_bufs.index(stage))


@gluon.jit
def _item_extent(tile, seq, cu_seqlens_q, context_lens,
                 BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
    """Work item (query tile, sequence)'s first query row, new-token count, cached prefix, context length and the
    number of key tiles it visits (ignoring, the caller checks, whether the tile lies past the new tokens)."""
    # The engine's index tensors are int64: shared-memory ring indices and TMA coordinates must be int32.
    q_start = gl.load(cu_seqlens_q + seq).to(gl.int32)
    n_new = gl.load(cu_seqlens_q + seq + 1).to(gl.int32) - q_start
    ctx = gl.load(context_lens + seq).to(gl.int32)
    prefix = ctx - n_new
    if CAUSAL:
        visit_end = gl.minimum(ctx, prefix + (tile + 1) * BLOCK_M)
    else:
        visit_end = ctx
    return q_start, n_new, prefix, ctx, gl.cdiv(visit_end, BLOCK_N)


@gluon.jit
def _item_coords(w, num_m_tiles, num_seqs, LONGEST_FIRST: gl.constexpr):
    """Work item w's (query tile, sequence, head), query tiles the fastest axis; LONGEST_FIRST walks each
    (sequence, head)'s tiles from the last (causal: the most key tiles) down to the first."""
    tile = w % num_m_tiles
    if LONGEST_FIRST:
        tile = num_m_tiles - 1 - tile
    return tile, (w // num_m_tiles) % num_seqs, w // (num_m_tiles * num_seqs)


@gluon.jit
def _persistent_producer(q_desc, k_desc, v_desc, ring, q_ring, sched, block_tables, stride_bt,
                         GROUP: gl.constexpr, BLOCK_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr,
                         BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                         CAUSAL: gl.constexpr):
    """Walk this program's work items and load each one's Q rows (both warpgroups', into the item's half of the
    Q double buffer) then its K/V tiles, without waiting for the consumers to finish the previous item: only
    the ring's and the Q buffers' empty barriers hold it back, so the next item's loads overlap the consumers'
    last tiles and output store."""
    q_bufs, q_ready, q_empty = q_ring
    cu_seqlens_q, context_lens, num_m_tiles, num_seqs, num_items = sched
    WG_M: gl.constexpr = q_desc.block_type.shape[0]
    CONSUMERS: gl.constexpr = BLOCK_M // WG_M
    kv = gl.to_tensor(0)  # key tiles loaded so far
    it = gl.to_tensor(0)  # work items started so far (skipped ones not counted)
    for w in range(gl.program_id(0), num_items, gl.num_programs(0)):
        tile, seq, head = _item_coords(w, num_m_tiles, num_seqs, False)
        q_start, n_new, prefix, ctx, n_tiles = _item_extent(tile, seq, cu_seqlens_q, context_lens,
                                                            BLOCK_M, BLOCK_N, CAUSAL)
        if tile * BLOCK_M < n_new:
            for wg in gl.static_range(CONSUMERS):
                q = 2 * wg + it % 2
                mbarrier.wait(q_empty.index(q), ((it // 2) & 1) ^ 1)
                mbarrier.expect(q_ready.index(q), q_desc.block_type.nbytes)
                tma_load(q_desc, [q_start + tile * BLOCK_M + wg * WG_M, head * HEAD_DIM], q_ready.index(q),
                         q_bufs.index(q))
            table = block_tables + seq.to(gl.int64) * stride_bt
            _kv_producer(k_desc, v_desc, ring, table, (head // GROUP) * HEAD_DIM, n_tiles, kv,
                         BLOCK_SIZE, BLOCK_N, STAGES)
            kv += n_tiles
            it += 1


@gluon.jit
def _dynamic_producer(q_desc, k_desc, v_desc, ring, q_ring, item_ring, sched, work_queue, block_tables, stride_bt,
                      GROUP: gl.constexpr, BLOCK_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr,
                      BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr):
    """Draw work items from the global queue (one atomic ticket each) until it runs dry, skip the empty ones, and
    for each real item publish its index in the item ring for the consumers, then load its Q rows and K/V tiles
    as the static producer does; finally publish the sentinel -1. The program drawing the launch's last ticket
    resets the queue for the next launch."""
    q_bufs, q_ready, q_empty = q_ring
    slots, slot_ready = item_ring
    cu_seqlens_q, context_lens, num_m_tiles, num_seqs, num_items = sched
    WG_M: gl.constexpr = q_desc.block_type.shape[0]
    CONSUMERS: gl.constexpr = BLOCK_M // WG_M
    record_layout: gl.constexpr = gl.BlockedLayout([ITEM_FIELDS], [32], [1], [0])
    kv = gl.to_tensor(0)  # key tiles loaded so far
    it = gl.to_tensor(0)  # work items published so far
    w = gl.atomic_add(work_queue, 1, sem="relaxed")
    while w < num_items:
        tile, seq, head = _item_coords(w, num_m_tiles, num_seqs, CAUSAL)
        q_start, n_new, prefix, ctx, n_tiles = _item_extent(tile, seq, cu_seqlens_q, context_lens,
                                                            BLOCK_M, BLOCK_N, CAUSAL)
        if tile * BLOCK_M < n_new:
            _publish_item(q_empty, slots, slot_ready, it,
                          _item_record(w, tile, head, q_start, n_new, prefix, ctx, n_tiles, record_layout),
                          CONSUMERS)
            for wg in gl.static_range(CONSUMERS):
                q = 2 * wg + it % 2
                mbarrier.expect(q_ready.index(q), q_desc.block_type.nbytes)
                tma_load(q_desc, [q_start + tile * BLOCK_M + wg * WG_M, head * HEAD_DIM], q_ready.index(q),
                         q_bufs.index(q))
            table = block_tables + seq.to(gl.int64) * stride_bt
            _kv_producer(k_desc, v_desc, ring, table, (head // GROUP) * HEAD_DIM, n_tiles, kv,
                         BLOCK_SIZE, BLOCK_N, STAGES)
            kv += n_tiles
            it += 1
        w = gl.atomic_add(work_queue, 1, sem="relaxed")
    _publish_item(q_empty, slots, slot_ready, it, _item_record(-1, 0, 0, 0, 0, 0, 0, 0, record_layout),
                  CONSUMERS)
    # Tickets num_items .. num_items + programs - 1 each end one program's loop, so the last of them is the
    # launch's last increment: every other program has drawn its final ticket, nothing touches the queue after.
    if w == num_items + gl.num_programs(0) - 1:
        gl.store(work_queue, 0)


@gluon.jit
def _item_record(w, tile, head, q_start, n_new, prefix, ctx, n_tiles, layout: gl.constexpr):
    """The fields of a work item that the consumers need, packed for its item slot (``_record_field`` reads
    field i back): the producer has loaded the extent already, the consumers then need no global loads of
    their own between items."""
    f = gl.arange(0, ITEM_FIELDS, layout=layout)
    record = gl.where(f == 0, w, gl.where(f == 1, tile, gl.where(f == 2, head, gl.where(f == 3, q_start, 0))))
    return gl.where(f == 4, n_new, gl.where(f == 5, prefix, gl.where(f == 6, ctx, gl.where(f == 7, n_tiles,
                                                                                              record))))


@gluon.jit
def _record_field(record, i: gl.constexpr):
    """Field i of an item record (every thread holds the whole record, so this is a register select)."""
    return gl.sum(gl.where(gl.arange(0, ITEM_FIELDS, layout=record.type.layout) == i, record, 0), 0)


@gluon.jit
def _publish_item(q_empty, slots, slot_ready, it, record, CONSUMERS: gl.constexpr):
    """Write item position it's record (``_item_record``; index -1: the sentinel) into item slot it % 2 and
    signal it, once every consumer warpgroup has finished item it - 2 (their q_empty releases): they read that
    item's record from the same slot before attending it, so the slot is free, and so are the Q buffers item it
    loads into."""
    for wg in gl.static_range(CONSUMERS):
        mbarrier.wait(q_empty.index(2 * wg + it % 2), ((it // 2) & 1) ^ 1)
    slots.index(it % 2).store(record)
    # Every lane stores the record, lane 0 too, and lane 0 arrives after its store (Triton syncs the warp in
    # between): the arrive's release and the consumers' acquiring wait order the write before their reads.
    mbarrier.arrive(slot_ready.index(it % 2))


@gluon.jit
def _row_max(s):
    """Each row's max of a wgmma accumulator tile, as a tree: gl.max alone chains the 32 columns a thread holds
    one after another (32 dependent max instructions before the first exponential can start), so the columns
    are first halved ROW_MAX_FOLDS times, each half's columns lying in the same threads, down to eight that
    gl.max finishes in one step and two shuffles. Timed alone on the H200 it is within the runs' noise (-2% to
    +2.5% at head dim 64, +0-1% at 128, 1k-2k tokens); the row sums by wgmma were timed on top of it."""
    for _ in gl.static_range(ROW_MAX_FOLDS):
        if s.shape[1] > 8:  # half-tiles need one fold less
            left, right = s.reshape([s.shape[0], 2, s.shape[1] // 2]).permute(0, 2, 1).split()
            s = gl.maximum(left, right)
    return gl.max(s, 1)


@gluon.jit
def _softmax_tile(s, m_i, q_pos, start, ctx, qk_scale, offs_n, masked, CAUSAL: gl.constexpr,
                  COLUMNS_IN_REGISTERS: gl.constexpr):
    """One tile's online-softmax step on raw scores s: returns unnormalised fp32 probabilities, the new running
    max (log2 domain, scaled) and the factor rescaling the previous accumulator and row sums."""
    s_rows: gl.constexpr = gl.SliceLayout(1, s.type.layout)  # for m_i, q_pos (laid out for whole key tiles)
    if masked:
        # One compare per score against the row's first invisible column (the softmax is bound by instruction
        # issue at head dim 64, and masked tiles are a fifth of the work of causal runs at 1k). With
        # COLUMNS_IN_REGISTERS the tile's column offsets, the same every tile, stay in registers and each row's
        # limit moves by start instead: 32 fewer instructions per masked tile and thread; three warpgroups' 160
        # registers would spill them, so there the columns are offset by start.
        if CAUSAL:
            limit = gl.convert_layout(gl.minimum(q_pos + 1, ctx), s_rows, assert_trivial=True)[:, None]
        else:
            limit = ctx
        if COLUMNS_IN_REGISTERS:
            visible = offs_n[None, :] < limit - start
        else:
            visible = (start + offs_n)[None, :] < limit
        s = gl.where(visible, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.convert_layout(_row_max(s), m_i.type.layout, assert_trivial=True) * qk_scale)
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(s * qk_scale - gl.convert_layout(m_new, s_rows, assert_trivial=True)[:, None])
    return p, m_new, alpha


@gluon.jit
def _issue_row_sums(p_op, ones, sums):
    """Issue sums += P ones as an asynchronous wgmma: P (the A operand of P V, in registers) times a block of ones
    adds P's row sums to every column of sums."""
    p_sums = gl.convert_layout(p_op, gl.DotOperandLayout(0, sums.type.layout, 2), assert_trivial=True)
    return warpgroup_mma(p_sums, ones, sums, is_async=True)


@gluon.jit
def _needs_mask(start, ctx, first_q_pos, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
    """Whether key tile [start, start + BLOCK_N) crosses the context end or (causal) some row's diagonal."""
    if CAUSAL:
        return start + BLOCK_N > gl.minimum(ctx, first_q_pos + 1)
    return start + BLOCK_N > ctx


@gluon.jit
def _take_turn(turns, k, WG: gl.constexpr, PINGPONG: gl.constexpr):
    """Wait until it is warpgroup WG's k-th turn to issue wgmmas: the warpgroups issue in the order 0, 1, ..,
    round after round. turns[WG] completes phase k when warpgroup WG - 1 issued its turn k, turns[0] when the
    last warpgroup issued its turn k - 1 (so WG 0's first wait passes on the fresh barrier)."""
    if PINGPONG:
        if WG == 0:
            mbarrier.wait(turns.index(0), (k & 1) ^ 1)
        else:
            mbarrier.wait(turns.index(WG), k & 1)


@gluon.jit
def _pass_turn(turns, WG: gl.constexpr, PINGPONG: gl.constexpr, CONSUMERS: gl.constexpr):
    """Hand the tensor cores to the next warpgroup once this one's wgmmas are issued."""
    if PINGPONG:
        mbarrier.arrive(turns.index((WG + 1) % CONSUMERS))


@gluon.jit
def _attend_key_tile(q_smem, k_tile, v_prev, bars, c, turns, turn, p_op, acc, l_i, m_i, s_init, ones_b, q_pos, start,
                     ctx, first_q_pos, qk_scale, WG: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                     PINGPONG: gl.constexpr, CONSUMERS: gl.constexpr):
    """One step of ``_consume_item``'s loop, on the program's key tile c (ring stage c % STAGES, k_tile: its keys,
    all of them or a first part, as wide as s_init): issue S = Q K^T and the previous tile's P V (v_prev) as
    asynchronous wgmmas on the warpgroup's turn, run the online softmax on S while P V runs, then rescale.
    Returns this tile's P as the next P V's A operand, and the updated accumulator, row sums and row max."""
    k_ready, k_empty, v_ready, v_empty = bars
    HEAD_DIM: gl.constexpr = acc.shape[1]
    SUMS_BY_MMA: gl.constexpr = len(l_i.shape) == 2  # the row sums are a wgmma accumulator (see _consume_item)
    PENDING: gl.constexpr = 2 if SUMS_BY_MMA else 1  # wgmma groups issued after S: P V (and the sums)
    stage = c % STAGES
    prev = (c - 1) % STAGES
    mbarrier.wait(k_ready.index(stage), (c // STAGES) & 1)
    _take_turn(turns, turn, WG, PINGPONG)
    s_tok = warpgroup_mma(q_smem, k_tile.permute((1, 0)), s_init, use_acc=False, is_async=True)
    mbarrier.wait(v_ready.index(prev), ((c - 1) // STAGES) & 1)
    o_tok = warpgroup_mma(p_op, v_prev, acc, is_async=True)
    if SUMS_BY_MMA:
        l_tok = _issue_row_sums(p_op, ones_b, l_i)
    _pass_turn(turns, WG, PINGPONG, CONSUMERS)
    # wgmma groups retire in order: PENDING left outstanding means S is done and the previous P V may run on.
    s = warpgroup_mma_wait(PENDING, deps=(s_tok,))
    mbarrier.arrive(k_empty.index(stage))
    offs_n = gl.arange(0, s_init.shape[1], layout=gl.SliceLayout(0, s_init.type.layout))
    p, m_i, alpha = _softmax_tile(s, m_i, q_pos, start, ctx, qk_scale, offs_n,
                                  _needs_mask(start, ctx, first_q_pos, s_init.shape[1], CAUSAL), CAUSAL,
                                  CONSUMERS == 2)
    if not SUMS_BY_MMA:
        l_i = l_i * alpha + gl.convert_layout(gl.sum(p, 1), l_i.type.layout, assert_trivial=True)
    if HEAD_DIM == 128:
        # A fence: a second wait on the V tile (it has landed, so it returns at once) keeps the softmax
        # ahead of the wgmma wait. Without it ptxas (12.8, bundled with Triton 3.6; 12.9 alike) schedules
        # that wait, which nothing in the softmax depends on, right after the row max, and the exponentials
        # run only once P V has finished. With it they overlap P V: +1.5-2% at head dim 128 from 4k tokens
        # on the H200, but 1-10% slower at head dim 64, where the other warpgroups' products already hide
        # the softmax (docs/benchmarks.md, seventh session).
        mbarrier.wait(v_ready.index(prev), ((c - 1) // STAGES) & 1)
    # P (the A operand in registers) is not among the wait's deps: its registers are not written before the wait
    # anyway (the next P is new values, and ptxas keeps an in-flight operand's registers apart, which
    # tests/engine/test_gluon_compile.py checks in the SASS of every planned shape), and as deps its bf16 halves
    # went through the wait one by one, which cost a PRMT per register pair every tile at head dim 64 (32 of
    # the loop's 408 instructions per tile; +1-2% causal on the H200).
    if SUMS_BY_MMA:
        acc, l_i = warpgroup_mma_wait(0, deps=(o_tok, l_tok))
        l_i = l_i * gl.convert_layout(alpha, gl.SliceLayout(1, l_i.type.layout), assert_trivial=True)[:, None]
    else:
        acc = warpgroup_mma_wait(0, deps=(o_tok,))
    mbarrier.arrive(v_empty.index(prev))
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, acc.type.layout), assert_trivial=True)[:, None]
    p_op = gl.convert_layout(p.to(q_smem.dtype), gl.DotOperandLayout(0, acc.type.layout, 2))
    return p_op, acc, l_i, m_i


@gluon.jit
def _last_p_v(p_op, v_tile, bars, c, turns, turn, acc, l_i, ones_b, WG: gl.constexpr, STAGES: gl.constexpr,
              PINGPONG: gl.constexpr, CONSUMERS: gl.constexpr):
    """The item's last P V, on key tile c (v_tile: its values, all of them or a first part, as many as P has
    columns), on the warpgroup's turn; returns the accumulator and the row sums (as kept by _consume_item)."""
    k_ready, k_empty, v_ready, v_empty = bars
    SUMS_BY_MMA: gl.constexpr = len(l_i.shape) == 2  # the row sums are a wgmma accumulator (see _consume_item)
    last = c % STAGES
    mbarrier.wait(v_ready.index(last), (c // STAGES) & 1)
    _take_turn(turns, turn, WG, PINGPONG)
    o_tok = warpgroup_mma(p_op, v_tile, acc, is_async=True)
    if SUMS_BY_MMA:
        l_tok = _issue_row_sums(p_op, ones_b, l_i)
        _pass_turn(turns, WG, PINGPONG, CONSUMERS)
        acc, l_i = warpgroup_mma_wait(0, deps=(o_tok, l_tok))
    else:
        _pass_turn(turns, WG, PINGPONG, CONSUMERS)
        acc = warpgroup_mma_wait(0, deps=(o_tok,))
    mbarrier.arrive(v_empty.index(last))
    return acc, l_i


@gluon.jit
def _consume_item(q_smem, q_bar, q_phase, ring, turns, outs, rows, head, prefix, ctx, n_tiles, kv0, turn0,
                  qk_scale, stride_ot, stride_oh, prev_q_empty, has_prev,
                  WG: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                  STAGES: gl.constexpr, CAUSAL: gl.constexpr, PINGPONG: gl.constexpr, CONSUMERS: gl.constexpr,
                  num_warps: gl.constexpr):
    """Q K^T, online softmax and P V of warpgroup WG's BLOCK_M query rows of one work item over the key tiles the
    producer streams in; writes those output rows. The item's Q lands on q_bar's phase q_phase; its key tiles are
    the program's tiles kv0 .. kv0 + n_tiles - 1 (ring position) and its n_tiles + 1 wgmma turns the program's
    turns turn0 .. turn0 + n_tiles. With PINGPONG the warpgroups take turns issuing their wgmmas (FA3's
    schedule), so one's softmax overlaps the others' matrix products.
    The item's last key tiles may be wholly in the future of this warpgroup's rows (causal: the item spans
    CONSUMERS * BLOCK_M rows, so its earlier rows see fewer keys), and rows past the sequence's new tokens need
    no attention at all (at least one tile is still attended, keeping the code simple): such tiles are only
    released and their turns passed, not computed.
    Full row blocks leave by a TMA store from q_smem that may still be reading it on return; with has_prev the
    previous item's store (the warpgroup's only one outstanding) is awaited after this item's first tile and
    its Q buffer released on prev_q_empty."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    # At head dim 64 the softmax's instructions, not the tensor cores, bound the loop: P's row sums come from a
    # narrow wgmma, P times a block of ones (every column of its accumulator ends up holding the sums), instead
    # of 64 additions per thread and tile: on the H200 at 1k-2k tokens, -2% to +3% with two warpgroups and +7%
    # with three, which the plan then picks for more shapes (and 480 -> 495-517 TFLOP/s non-causal at 8k-16k).
    # At head dim 128, where the tensor cores bound it, that product costs 3-5%.
    SUMS_BY_MMA: gl.constexpr = HEAD_DIM == 64
    l_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, SUM_COLUMNS, 16])
    dtype: gl.constexpr = q_smem.dtype
    k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, ones = ring
    q_start, n_new, row0 = rows
    out, o_desc = outs

    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    first_q_pos = prefix + row0
    if CAUSAL:
        mine = gl.minimum(gl.cdiv(gl.minimum(ctx, first_q_pos + BLOCK_M), BLOCK_N), n_tiles)
    else:
        mine = n_tiles
    mine = gl.where(row0 < n_new, mine, 1)  # key tiles this warpgroup attends
    q_pos = first_q_pos + gl.arange(0, BLOCK_M, layout=row_layout)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_layout)
    ones_b = ones.permute((1, 0))
    if SUMS_BY_MMA:
        l_i = gl.zeros([BLOCK_M, SUM_COLUMNS], gl.float32, layout=l_layout)
    else:
        l_i = gl.zeros([BLOCK_M], gl.float32, layout=row_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)
    s_init = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    mbarrier.wait(q_bar, q_phase)

    # Tile 0: nothing to overlap with yet.
    stage = kv0 % STAGES
    mbarrier.wait(k_ready.index(stage), (kv0 // STAGES) & 1)
    _take_turn(turns, turn0, WG, PINGPONG)
    s_tok = warpgroup_mma(q_smem, k_bufs.index(stage).permute((1, 0)), s_init, use_acc=False, is_async=True)
    _pass_turn(turns, WG, PINGPONG, CONSUMERS)
    s = warpgroup_mma_wait(0, deps=(s_tok,))
    mbarrier.arrive(k_empty.index(stage))
    if has_prev:
        # The previous item's output left from its Q buffer by a TMA store (see the end): once the store has
        # read it, the buffer goes back to the producer.
        tma.store_wait(0)
        mbarrier.arrive(prev_q_empty)
    p, m_i, alpha = _softmax_tile(s, m_i, q_pos, 0, ctx, qk_scale, offs_n,
                                  _needs_mask(0, ctx, first_q_pos, BLOCK_N, CAUSAL), CAUSAL, CONSUMERS == 2)
    if not SUMS_BY_MMA:
        l_i = gl.sum(p, 1)
    p_op = gl.convert_layout(p.to(dtype), p_layout)

    # Causal: when every row of this warpgroup is at or before the last key tile's middle, that tile's second
    # half is in all their futures, and the warpgroup attends only its first half (without a prefix: the first
    # warpgroup's diagonal tile of every item), saving a masked tile's most expensive half. At head dim 64:
    # +2-3% at 2k tokens on the H200, +0-0.3% at 1k; at head dim 128 it cost 2-5%.
    half = False
    n_full = mine
    if CAUSAL and HEAD_DIM == 64:
        half = (mine > 1) & (first_q_pos + BLOCK_M <= (mine - 1) * BLOCK_N + BLOCK_N // 2)
        n_full = gl.where(half, mine - 1, mine)
    bars = (k_ready, k_empty, v_ready, v_empty)
    for j in range(1, n_full):
        c = kv0 + j
        p_op, acc, l_i, m_i = _attend_key_tile(q_smem, k_bufs.index(c % STAGES), v_bufs.index((c - 1) % STAGES),
                                               bars, c, turns, turn0 + j, p_op, acc, l_i, m_i, s_init, ones_b,
                                               q_pos, j * BLOCK_N, ctx, first_q_pos, qk_scale, WG, STAGES,
                                               CAUSAL, PINGPONG, CONSUMERS)
    c = kv0 + mine - 1
    last = c % STAGES
    if half:
        HALF: gl.constexpr = BLOCK_N // 2
        s_half = gl.zeros([BLOCK_M, HALF], gl.float32, layout=gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, HALF, 16]))
        p_half, acc, l_i, m_i = _attend_key_tile(q_smem, k_bufs.index(last).slice(0, HALF),
                                                 v_bufs.index((c - 1) % STAGES), bars, c, turns, turn0 + mine - 1,
                                                 p_op, acc, l_i, m_i, s_half, ones_b, q_pos, (mine - 1) * BLOCK_N, ctx,
                                                 first_q_pos, qk_scale, WG, STAGES, CAUSAL, PINGPONG, CONSUMERS)
        acc, l_i = _last_p_v(p_half, v_bufs.index(last).slice(0, HALF), bars, c, turns, turn0 + mine, acc, l_i,
                             ones.slice(0, HALF, dim=1).permute((1, 0)), WG, STAGES, PINGPONG, CONSUMERS)
    else:
        acc, l_i = _last_p_v(p_op, v_bufs.index(last), bars, c, turns, turn0 + mine, acc, l_i, ones_b,
                             WG, STAGES, PINGPONG, CONSUMERS)

    if SUMS_BY_MMA:
        l_i = gl.max(l_i, 1)  # its columns are alike

    # Tiles past this warpgroup's rows: release each once it has landed (an earlier release could count
    # towards the stage's previous use), and pass the turns the other warpgroups wait for.
    for j in range(mine, n_tiles):
        c = kv0 + j
        stage = c % STAGES
        mbarrier.wait(k_ready.index(stage), (c // STAGES) & 1)
        mbarrier.arrive(k_empty.index(stage))
        mbarrier.wait(v_ready.index(stage), (c // STAGES) & 1)
        mbarrier.arrive(v_empty.index(stage))
        _take_turn(turns, turn0 + j + 1, WG, PINGPONG)
        _pass_turn(turns, WG, PINGPONG, CONSUMERS)

    # One reciprocal per row, then products: a division per element costs more instructions (+1-4% at head dim
    # 128, 1k-2k tokens, on the H200; within 1% at head dim 64).
    acc = acc * gl.convert_layout(1.0 / l_i, gl.SliceLayout(1, o_layout), assert_trivial=True)[:, None]
    if row0 + BLOCK_M <= n_new:
        # Every row is the sequence's: the rows go out through the Q buffer (no wgmma reads it any more) by one
        # TMA store, so the warpgroup moves on at once; the buffer's release waits for the store to have read
        # it (the next item's first tile, or the end of the program).
        q_smem.store(acc.to(dtype))
        fence_async_shared()
        tma_store(o_desc, [q_start + row0, head * HEAD_DIM], q_smem)
    else:
        # A TMA store would spill into the next sequence's rows: masked, coalesced stores (16 bytes per thread
        # along the head dim).
        cols: gl.constexpr = HEAD_DIM // 8
        store_layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 // cols, cols], [num_warps, 1], [1, 0])
        o = gl.convert_layout(acc.to(dtype), store_layout)
        out_rows = row0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, store_layout))
        offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, store_layout))
        ptrs = out + (q_start + out_rows)[:, None].to(gl.int64) * stride_ot + head * stride_oh + offs_d[None, :]
        gl.store(ptrs, o, mask=(out_rows < n_new)[:, None])


@gluon.jit
def _attention_consumer(args, WG: gl.constexpr, CAUSAL: gl.constexpr, PINGPONG: gl.constexpr,
                        num_warps: gl.constexpr):
    """One work item per program: load warpgroup WG's Q rows itself (one TMA load), then attend them. Tile shapes
    come from the shared-memory buffers (as in the other consumers), so the kernel passes runtime values only."""
    q_desc, ring, turns, q_bufs, q_bars, out, rows, head, prefix, ctx, n_tiles, qk_scale, stride_ot, stride_oh = args
    BLOCK_M: gl.constexpr = q_bufs.shape[1]  # this warpgroup's query rows
    HEAD_DIM: gl.constexpr = q_bufs.shape[2]
    STAGES: gl.constexpr = ring[0].shape[0]
    BLOCK_N: gl.constexpr = ring[0].shape[1]
    CONSUMERS: gl.constexpr = turns.shape[0]
    q_start, n_new, tile_row = rows
    row0 = tile_row + WG * BLOCK_M
    mbarrier.expect(q_bars.index(WG), q_desc.block_type.nbytes)
    tma_load(q_desc, [q_start + row0, head * HEAD_DIM], q_bars.index(WG), q_bufs.index(WG))
    _consume_item(q_bufs.index(WG), q_bars.index(WG), 0, ring, turns, out, (q_start, n_new, row0), head, prefix,
                  ctx, n_tiles, 0, 0, qk_scale, stride_ot, stride_oh, q_bars.index(WG), False,
                  WG, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, CAUSAL, PINGPONG, CONSUMERS, num_warps)
    tma.store_wait(0)


@gluon.jit
def _attend_queued_item(ring, turns, q_ring, out, rows, head, prefix, ctx, n_tiles, kv, it, qk_scale, stride_ot,
                        stride_oh, WG: gl.constexpr, CAUSAL: gl.constexpr, PINGPONG: gl.constexpr,
                        num_warps: gl.constexpr):
    """A persistent program's it-th work item (after kv key tiles): attend warpgroup WG's rows from the item's
    half of the Q double buffer, releasing the other half (item it - 1's, once its output store has read it)
    after the first key tile, so that the producer may load item it + 1's Q there. The item's own half is
    released during item it + 1, or never for the program's last item (nothing waits for it)."""
    q_bufs, q_ready, q_empty = q_ring
    q = 2 * WG + it % 2
    _consume_item(q_bufs.index(q), q_ready.index(q), (it // 2) & 1, ring, turns, out, rows, head, prefix, ctx,
                  n_tiles, kv, kv + it, qk_scale, stride_ot, stride_oh, q_empty.index(q ^ 1), it > 0,
                  WG, q_bufs.shape[1], ring[0].shape[1], q_bufs.shape[2], ring[0].shape[0], CAUSAL, PINGPONG,
                  turns.shape[0], num_warps)


@gluon.jit
def _persistent_consumer(args, WG: gl.constexpr, CAUSAL: gl.constexpr, PINGPONG: gl.constexpr,
                         num_warps: gl.constexpr):
    """Walk this program's work items in the producer's order (skipping the same ones) and attend warpgroup WG's
    query rows of each, keeping the running ring and Q-buffer positions that the phases derive from (its wgmma
    turns so far are kv + it: n_tiles + 1 per item)."""
    ring, turns, q_ring, out, sched, qk_scale, stride_ot, stride_oh = args
    BLOCK_M: gl.constexpr = q_ring[0].shape[1]  # this warpgroup's query rows
    BLOCK_N: gl.constexpr = ring[0].shape[1]
    CONSUMERS: gl.constexpr = turns.shape[0]
    cu_seqlens_q, context_lens, num_m_tiles, num_seqs, num_items = sched
    TILE_M: gl.constexpr = CONSUMERS * BLOCK_M  # query rows per work item
    kv = gl.to_tensor(0)  # key tiles consumed so far
    it = gl.to_tensor(0)  # work items attended so far
    for w in range(gl.program_id(0), num_items, gl.num_programs(0)):
        tile, seq, head = _item_coords(w, num_m_tiles, num_seqs, False)
        q_start, n_new, prefix, ctx, n_tiles = _item_extent(tile, seq, cu_seqlens_q, context_lens,
                                                            TILE_M, BLOCK_N, CAUSAL)
        if tile * TILE_M < n_new:
            _attend_queued_item(ring, turns, q_ring, out, (q_start, n_new, tile * TILE_M + WG * BLOCK_M), head,
                                prefix, ctx, n_tiles, kv, it, qk_scale, stride_ot, stride_oh,
                                WG, CAUSAL, PINGPONG, num_warps)
            kv += n_tiles
            it += 1
    tma.store_wait(0)


@gluon.jit
def _claimed_item(item_ring, it, num_warps: gl.constexpr):
    """The record of the program's it-th work item (index -1: none left), once the producer has published it."""
    slots, slot_ready = item_ring
    mbarrier.wait(slot_ready.index(it % 2), (it // 2) & 1)
    return slots.index(it % 2).load(gl.BlockedLayout([ITEM_FIELDS], [32], [num_warps], [0]))


@gluon.jit
def _dynamic_consumer(args, WG: gl.constexpr, CAUSAL: gl.constexpr, PINGPONG: gl.constexpr,
                      num_warps: gl.constexpr):
    """Attend warpgroup WG's query rows of each work item the producer drew from the queue, reading the item
    records from the item ring until the sentinel; running positions as in ``_persistent_consumer``."""
    ring, turns, q_ring, item_ring, out, qk_scale, stride_ot, stride_oh = args
    BLOCK_M: gl.constexpr = q_ring[0].shape[1]  # this warpgroup's query rows
    CONSUMERS: gl.constexpr = turns.shape[0]
    TILE_M: gl.constexpr = CONSUMERS * BLOCK_M  # query rows per work item
    kv = gl.to_tensor(0)  # key tiles consumed so far
    it = gl.to_tensor(0)  # work items attended so far
    record = _claimed_item(item_ring, it, num_warps)
    while _record_field(record, 0) >= 0:
        tile = _record_field(record, 1)
        head = _record_field(record, 2)
        q_start = _record_field(record, 3)
        n_new = _record_field(record, 4)
        prefix = _record_field(record, 5)
        ctx = _record_field(record, 6)
        n_tiles = _record_field(record, 7)
        # Its Q-buffer release (during the next item) also frees the item slot: all four warps have read the slot
        # by then (Triton syncs the warpgroup before an arrive).
        _attend_queued_item(ring, turns, q_ring, out, (q_start, n_new, tile * TILE_M + WG * BLOCK_M), head,
                            prefix, ctx, n_tiles, kv, it, qk_scale, stride_ot, stride_oh,
                            WG, CAUSAL, PINGPONG, num_warps)
        kv += n_tiles
        it += 1
        record = _claimed_item(item_ring, it, num_warps)
    tma.store_wait(0)


@gluon.jit
def _prefill_kernel(q_desc, k_desc, v_desc, o_desc, out, cu_seqlens_q, context_lens, block_tables, work_queue, qk_scale,
                    stride_ot, stride_oh, stride_bt, num_m_tiles, num_seqs, num_items,
                    GROUP: gl.constexpr, BLOCK_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr,
                    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                    PINGPONG: gl.constexpr, PERSISTENT: gl.constexpr, DYNAMIC: gl.constexpr,
                    CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr, num_warps: gl.constexpr):
    # Barrier phases (u-th completion = phase u; a wait for parity P passes once a phase of parity P completed,
    # and a fresh barrier counts as having completed the phase before 0). Every index below is a running count
    # over this program's (non-skipped) work items, which the producer and all consumers walk identically:
    # - key tile c (c-th tile loaded/consumed by the program): ring stage c % STAGES; k_ready/v_ready[stage]
    #   complete phase c // STAGES when its TMA lands (consumers wait parity (c // STAGES) & 1), and
    #   k_empty/v_empty[stage] (count CONSUMERS) complete phase c // STAGES when every consumer released it (the
    #   producer waits parity ((c // STAGES) & 1) ^ 1 before loading tile c, i.e. for tile c - STAGES's release).
    # - work item i (persistent): warpgroup WG's Q buffer 2 * WG + i % 2; its ready barrier (q_bars, called
    #   q_ready in the partitions) completes phase i // 2 when the rows land (WG waits parity (i // 2) & 1),
    #   q_empty (count 1) phase i // 2 when WG is done with item i's buffer: after item i + 1's first key tile,
    #   once item i's output store has read it (the producer waits parity ((i // 2) & 1) ^ 1 before loading
    #   item i, i.e. for item i - 2's release).
    # - wgmma turn k (an item of n key tiles takes n + 1 turns, in the same order in every warpgroup; see
    #   ``_take_turn``): warpgroup WG's arrive after issuing turn k completes phase k of turns[WG + 1], or of
    #   turns[0] for the last warpgroup; warpgroup 0 waits turns[0] parity (k & 1) ^ 1, the others turns[WG]
    #   parity k & 1.
    # - item position i (DYNAMIC: the program's i-th real item in the order its producer drew them; position n,
    #   n = real items drawn, holds the sentinel -1): item slot i % 2 holds the item's record, written by the
    #   producer once every warpgroup released item i - 2 (it waits their q_empty barriers of position i, as
    #   above, before the write instead of before each Q load), then slot_ready[i % 2] (count 1) completes phase
    #   i // 2 by the producer's arrive (consumers wait parity (i // 2) & 1 before reading the slot). A consumer
    #   reads slot i % 2 before attending item i and releases it with item i's q_empty arrive, so slot and Q
    #   buffers share the empty barriers. The producer skips empty items itself (the consumers see real items
    #   only), so all partitions count the same positions; the sentinel ends the consumers' loops.
    # No barrier can run two phases past a waiter (the parity would alias): its next completion needs that
    # waiter's own later arrival (the ring and Q buffers through their empty/ready pair, turns by the round,
    # slot_ready[i % 2]'s next phase through every warpgroup's q_empty release of item i).
    if not PERSISTENT:  # one work item per program: (query tile, sequence, head) from the grid
        tile = gl.program_id(0)
        seq = gl.program_id(1)
        head = gl.program_id(2)
        q_start, n_new, prefix, ctx, n_tiles = _item_extent(tile, seq, cu_seqlens_q, context_lens,
                                                            BLOCK_M, BLOCK_N, CAUSAL)
        if tile * BLOCK_M >= n_new:
            return
    WG_M: gl.constexpr = q_desc.block_type.shape[0]  # query rows per consumer warpgroup
    CONSUMERS: gl.constexpr = BLOCK_M // WG_M
    Q_BUFS: gl.constexpr = 2 * CONSUMERS if PERSISTENT else CONSUMERS  # persistent: double-buffered
    q_bufs = gl.allocate_shared_memory(q_desc.dtype, [Q_BUFS] + q_desc.block_type.shape, q_desc.layout)
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(v_desc.dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_bars = gl.allocate_shared_memory(gl.int64, [Q_BUFS, 1], mbarrier.MBarrierLayout())
    turns = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(Q_BUFS):
        mbarrier.init(q_bars.index(i), count=1)
    for i in gl.static_range(CONSUMERS):
        mbarrier.init(turns.index(i), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=CONSUMERS)  # one arrival per consumer warpgroup
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=CONSUMERS)
    # P times this block of ones sums P's rows at head dim 64 (see _consume_item; unread at head dim 128, where
    # the compiler drops it).
    ones = gl.allocate_shared_memory(k_desc.dtype, [SUM_COLUMNS, BLOCK_N],
                                     gl.NVMMASharedLayout.get_default_for([SUM_COLUMNS, BLOCK_N], k_desc.dtype),
                                     gl.full([SUM_COLUMNS, BLOCK_N], 1.0, k_desc.dtype,
                                             gl.BlockedLayout([1, 4], [1, 32], [1, num_warps], [1, 0])))
    ring = (k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, ones)

    # The partition lists are written out per consumer count: Gluon takes them as literals (a function bound to
    # a variable, or a list built by concatenation, does not compile). Consumers get runtime values only.
    if PERSISTENT:
        q_empty = gl.allocate_shared_memory(gl.int64, [Q_BUFS, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(Q_BUFS):
            mbarrier.init(q_empty.index(i), count=1)
        q_ring = (q_bufs, q_bars, q_empty)
        sched = (cu_seqlens_q, context_lens, num_m_tiles, num_seqs, num_items)
        if DYNAMIC:
            slots = gl.allocate_shared_memory(gl.int32, [2, ITEM_FIELDS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
            slot_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
            for i in gl.static_range(2):
                mbarrier.init(slot_ready.index(i), count=1)
            fence_async_shared()
            item_ring = (slots, slot_ready)
            consumer_args = (ring, turns, q_ring, item_ring, (out, o_desc), qk_scale, stride_ot, stride_oh)
            if CONSUMERS == 2:
                gl.warp_specialize([
                    (_dynamic_consumer, (consumer_args, 0, CAUSAL, PINGPONG, num_warps)),
                    (_dynamic_consumer, (consumer_args, 1, CAUSAL, PINGPONG, num_warps)),
                    (_dynamic_producer, (q_desc, k_desc, v_desc, ring, q_ring, item_ring, sched, work_queue,
                                         block_tables, stride_bt, GROUP, BLOCK_SIZE, HEAD_DIM, BLOCK_M, BLOCK_N,
                                         STAGES, CAUSAL)),
                ], [num_warps, 1], [CONSUMER_REGS, PRODUCER_REGS])
            else:
                gl.warp_specialize([
                    (_dynamic_consumer, (consumer_args, 0, CAUSAL, PINGPONG, num_warps)),
                    (_dynamic_consumer, (consumer_args, 1, CAUSAL, PINGPONG, num_warps)),
                    (_dynamic_consumer, (consumer_args, 2, CAUSAL, PINGPONG, num_warps)),
                    (_dynamic_producer, (q_desc, k_desc, v_desc, ring, q_ring, item_ring, sched, work_queue,
                                         block_tables, stride_bt, GROUP, BLOCK_SIZE, HEAD_DIM, BLOCK_M, BLOCK_N,
                                         STAGES, CAUSAL)),
                ], [num_warps, num_warps, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])
        else:
            fence_async_shared()
            consumer_args = (ring, turns, q_ring, (out, o_desc), sched, qk_scale, stride_ot, stride_oh)
            if CONSUMERS == 2:
                gl.warp_specialize([
                    (_persistent_consumer, (consumer_args, 0, CAUSAL, PINGPONG, num_warps)),
                    (_persistent_consumer, (consumer_args, 1, CAUSAL, PINGPONG, num_warps)),
                    (_persistent_producer, (q_desc, k_desc, v_desc, ring, q_ring, sched, block_tables, stride_bt,
                                            GROUP, BLOCK_SIZE, HEAD_DIM, BLOCK_M, BLOCK_N, STAGES, CAUSAL)),
                ], [num_warps, 1], [CONSUMER_REGS, PRODUCER_REGS])
            else:
                gl.warp_specialize([
                    (_persistent_consumer, (consumer_args, 0, CAUSAL, PINGPONG, num_warps)),
                    (_persistent_consumer, (consumer_args, 1, CAUSAL, PINGPONG, num_warps)),
                    (_persistent_consumer, (consumer_args, 2, CAUSAL, PINGPONG, num_warps)),
                    (_persistent_producer, (q_desc, k_desc, v_desc, ring, q_ring, sched, block_tables, stride_bt,
                                            GROUP, BLOCK_SIZE, HEAD_DIM, BLOCK_M, BLOCK_N, STAGES, CAUSAL)),
                ], [num_warps, num_warps, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])
    else:
        fence_async_shared()
        table = block_tables + seq.to(gl.int64) * stride_bt
        consumer_args = (q_desc, ring, turns, q_bufs, q_bars, (out, o_desc), (q_start, n_new, tile * BLOCK_M), head,
                         prefix, ctx, n_tiles, qk_scale, stride_ot, stride_oh)
        if CONSUMERS == 2:
            gl.warp_specialize([
                (_attention_consumer, (consumer_args, 0, CAUSAL, PINGPONG, num_warps)),
                (_attention_consumer, (consumer_args, 1, CAUSAL, PINGPONG, num_warps)),
                (_kv_producer, (k_desc, v_desc, ring, table, (head // GROUP) * HEAD_DIM, n_tiles, 0, BLOCK_SIZE,
                               BLOCK_N, STAGES)),
            ], [num_warps, 1], [CONSUMER_REGS, PRODUCER_REGS])
        else:
            gl.warp_specialize([
                (_attention_consumer, (consumer_args, 0, CAUSAL, PINGPONG, num_warps)),
                (_attention_consumer, (consumer_args, 1, CAUSAL, PINGPONG, num_warps)),
                (_attention_consumer, (consumer_args, 2, CAUSAL, PINGPONG, num_warps)),
                (_kv_producer, (k_desc, v_desc, ring, table, (head // GROUP) * HEAD_DIM, n_tiles, 0, BLOCK_SIZE,
                               BLOCK_N, STAGES)),
            ], [num_warps, num_warps, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])


def _descriptor(t: torch.Tensor, rows: int, block_rows: int, head_dim: int) -> TensorDescriptor:
    """TMA descriptor over ``t`` viewed as [rows, heads * head_dim], boxes of one head's [block_rows, head_dim]."""
    flat = t.view(rows, -1)
    layout = gl.NVMMASharedLayout.get_default_for([block_rows, head_dim], _GL_DTYPES[t.dtype])
    return TensorDescriptor(flat, list(flat.shape), list(flat.stride()), [block_rows, head_dim], layout)


@functools.cache
def _num_sms(device_index: int) -> int:
    """Streaming multiprocessors of a device, bounding the persistent grid (queried once per device)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.cache
def _work_queue(device_index: int) -> torch.Tensor:
    """The dynamic schedule's item counter on a device (int32): zeroed once here, then left at zero by every
    launch (the program drawing its last ticket resets it), which saves a memset launch per call. A launch that
    dies midway leaves it nonzero; calls on concurrent streams would share it (prefill runs on one stream)."""
    return torch.zeros(1, dtype=torch.int32, device=torch.device("cuda", device_index))


def _persistent_programs(num_sms: int, num_m_tiles: int, num_items: int) -> int:
    """Programs of the static persistent grid: the most, up to one per SM, that share no factor with the query
    tiles per (sequence, head), so that program p's items p, p + programs, ... cycle through every tile index
    instead of repeating a few (132 programs over 8 tiles would give each program tiles t and t + 4 only: the
    causal costs then differ up to 2x between programs, the skipped tiles of short sequences pile onto some). At
    most one program per item."""
    programs = num_sms
    while math.gcd(programs, num_m_tiles) != 1:
        programs -= 1
    return min(programs, num_items)


SCHEDULES = ("auto", "dynamic", "static", "per_item")


def _plan(head_dim: int, causal: bool, max_new_tokens: int, uniform: bool) -> tuple[int, str]:
    """(consumer warpgroups, schedule) of ``schedule="auto"``, from H200 medians of every combination at each
    benchmarks/attention_gpu.py shape (docs/benchmarks.md, tenth session). The dynamic queue with two warpgroups
    is best or within 2% of it almost everywhere, and on mixed batches. At head dim 64 three warpgroups win from
    ``LONG_RUN`` new tokens on (dynamic queue), and from 1k for non-causal runs that all bring the same number of
    tokens (``uniform``; static grid)."""
    if head_dim == 64 and max_new_tokens >= LONG_RUN:
        return 3, "dynamic"
    if head_dim == 64 and uniform and not causal and max_new_tokens >= 1024:
        return 3, "static"
    return 2, "dynamic"


def _kernel_arguments(out, query, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, work_queue, scale,
                      config: _Config, num_m_tiles: int, causal: bool, pingpong: bool,
                      schedule: str) -> tuple[tuple, dict]:
    """``_prefill_kernel``'s positional arguments and compile-time keywords for one call (shared with
    benchmarks/gluon_sass.py, which compiles the kernel from CPU tensors)."""
    num_tokens, num_heads, head_dim = query.shape
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    num_seqs = cu_seqlens_q.shape[0] - 1
    cache_rows = num_blocks * block_size
    args = (
        _descriptor(query, num_tokens, WG_M, head_dim),
        _descriptor(k_cache, cache_rows, BLOCK_N, head_dim),
        _descriptor(v_cache, cache_rows, BLOCK_N, head_dim),
        _descriptor(out, num_tokens, WG_M, head_dim),
        out, cu_seqlens_q, context_lens, block_tables, work_queue, scale * LOG2E,
        out.stride(0), out.stride(1), block_tables.stride(0), num_m_tiles, num_seqs, num_m_tiles * num_seqs * num_heads,
    )
    meta = dict(
        GROUP=num_heads // num_kv_heads, BLOCK_SIZE=block_size, HEAD_DIM=head_dim,
        BLOCK_M=config.block_m, BLOCK_N=BLOCK_N, STAGES=config.stages, CAUSAL=causal, PINGPONG=pingpong,
        PERSISTENT=schedule != "per_item", DYNAMIC=schedule == "dynamic", CONSUMER_REGS=config.consumer_regs,
        PRODUCER_REGS=config.producer_regs, num_warps=CONSUMER_WARPS, maxnreg=config.maxnreg,
    )
    return args, meta


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
    pingpong: bool = True,
    schedule: str = "auto",
    consumers: int | None = None,
) -> torch.Tensor:
    """Varlen GQA attention of the new tokens over each sequence's cached prefix plus themselves; the contract of
    ``triton_attention.prefill_attention`` (check ``supported`` first).

    ``schedule`` (one of ``SCHEDULES``) assigns the work items: "per_item" launches one program per item;
    "static" and "dynamic" launch about one program per SM, "static" giving program p items p, p + programs, ...,
    "dynamic" handing out the next item to whichever program asks first (a global atomic counter, causal tiles
    longest first). ``consumers`` is the number of consumer warpgroups (2, or 3 at head dim 64). "auto" and
    ``consumers=None`` choose by shape (``_plan``). ``pingpong=False`` lets the consumer warpgroups issue
    wgmmas whenever they are ready instead of taking turns (for A/B timing)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
    num_tokens, num_heads, head_dim = query.shape
    out = torch.empty(query.shape, dtype=query.dtype, device=query.device)  # dense: the TMA store's rows
    if num_tokens == 0:
        return out
    query = query.contiguous()
    num_seqs = cu_seqlens_q.shape[0] - 1
    if max_new_tokens is None:
        max_new_tokens = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    uniform = num_tokens == num_seqs * max_new_tokens  # every sequence brings max_new_tokens new tokens
    planned_consumers, planned_schedule = _plan(head_dim, causal, max_new_tokens, uniform)
    if schedule == "auto":
        schedule = planned_schedule
    config = _config(head_dim, planned_consumers if consumers is None else consumers)
    num_m_tiles = triton.cdiv(max_new_tokens, config.block_m)
    num_items = num_m_tiles * num_seqs * num_heads
    device = query.device.index
    if schedule == "static":
        grid = (_persistent_programs(_num_sms(device), num_m_tiles, num_items),)
    elif schedule == "dynamic":  # any program count balances: items go to whichever program is free
        grid = (min(_num_sms(device), num_items),)
    else:
        grid = (num_m_tiles, num_seqs, num_heads)
    args, meta = _kernel_arguments(out, query, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables,
                                   _work_queue(device), scale, config, num_m_tiles, causal, pingpong, schedule)
    _prefill_kernel[grid](*args, **meta)
    return out
