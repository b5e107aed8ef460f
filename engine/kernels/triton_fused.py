"""Triton kernels fusing the small per-layer ops around the matmuls (CUDA path).

A 135M model's decode step is dominated by launches of tiny elementwise kernels, not by math: RMSNorm alone is
five torch kernels, RoPE four more, SwiGLU two. Each op here is one kernel with the torch reference's contract
(``engine/kernels/__init__.py`` dispatches), computing in fp32 and rounding once:

- ``add_rms_norm``: ``s = x + residual``; returns ``(rms_norm(s) * weight, s)`` (the residual stream and the
  next sub-layer's input in one pass; ``residual=None`` normalizes ``x`` alone).
- ``rotary_store``: rotates the query and key heads of a fused QKV row by the token's position (rotate-half
  RoPE), returns the rotated queries and writes the rotated keys and the values straight into the paged cache
  (slot -1 skipped), so neither rotated keys nor a separate store pass ever exist.
- ``silu_and_mul``: ``silu(gate) * up`` of a fused gate/up projection.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(
    x, residual, weight, out, residual_out, stride_x, stride_r, eps,
    HIDDEN: tl.constexpr, BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < HIDDEN
    s = tl.load(x + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        s += tl.load(residual + row * stride_r + offs, mask=mask, other=0.0).to(tl.float32)
        s = s.to(residual_out.dtype.element_ty)
        tl.store(residual_out + row * HIDDEN + offs, s, mask=mask)
        s = s.to(tl.float32)
    rms = tl.rsqrt(tl.sum(s * s, axis=0) / HIDDEN + eps)
    w = tl.load(weight + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + row * HIDDEN + offs, (s * rms).to(out.dtype.element_ty).to(tl.float32) * w, mask=mask)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rms_norm(x + residual) * weight, x + residual)`` for ``[tokens, hidden]`` rows (see module doc)."""
    tokens, hidden = x.shape
    out = torch.empty(tokens, hidden, dtype=x.dtype, device=x.device)
    if tokens == 0:
        return out, x if residual is None else x + residual
    if x.stride(-1) != 1:
        x = x.contiguous()
    if residual is None:
        _add_rms_norm_kernel[(tokens,)](
            x, x, weight, out, out, x.stride(0), 0, eps,
            HIDDEN=hidden, BLOCK=triton.next_power_of_2(hidden), HAS_RESIDUAL=False,
        )
        return out, x
    if residual.stride(-1) != 1:
        residual = residual.contiguous()
    summed = torch.empty_like(out)
    _add_rms_norm_kernel[(tokens,)](
        x, residual, weight, out, summed, x.stride(0), residual.stride(0), eps,
        HIDDEN=hidden, BLOCK=triton.next_power_of_2(hidden), HAS_RESIDUAL=True,
    )
    return out, summed


@triton.jit
def _rotary_store_kernel(
    qkv, positions, cos, sin, q_out, k_cache, v_cache, slot_mapping, stride_qkv,
    HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HALF: tl.constexpr,
    HEADS_PAD: tl.constexpr, HALF_PAD: tl.constexpr, V_PAD: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions + token).to(tl.int64)
    slot = tl.load(slot_mapping + token).to(tl.int64)
    h = tl.arange(0, HEADS_PAD)[:, None]
    d = tl.arange(0, HALF_PAD)[None, :]
    d_ok = d < HALF
    ok = (h < HEADS + KV_HEADS) & d_ok
    row = qkv + token * stride_qkv + h * HEAD_DIM + d
    x1 = tl.load(row, mask=ok, other=0.0).to(tl.float32)
    x2 = tl.load(row + HALF, mask=ok, other=0.0).to(tl.float32)
    # The tables hold (cos, cos) and (-sin, sin) over the head dim; their second halves are cos and sin.
    c = tl.load(cos + pos * HEAD_DIM + HALF + d, mask=d_ok, other=0.0).to(tl.float32)
    s = tl.load(sin + pos * HEAD_DIM + HALF + d, mask=d_ok, other=0.0).to(tl.float32)
    r1 = (x1 * c - x2 * s).to(q_out.dtype.element_ty)
    r2 = (x2 * c + x1 * s).to(q_out.dtype.element_ty)
    is_q = ok & (h < HEADS)
    q_row = q_out + token * (HEADS * HEAD_DIM) + h * HEAD_DIM + d
    tl.store(q_row, r1, mask=is_q)
    tl.store(q_row + HALF, r2, mask=is_q)
    if slot >= 0:
        is_k = ok & (h >= HEADS)
        k_row = k_cache + slot * (KV_HEADS * HEAD_DIM) + (h - HEADS) * HEAD_DIM + d
        tl.store(k_row, r1, mask=is_k)
        tl.store(k_row + HALF, r2, mask=is_k)
        offs = tl.arange(0, V_PAD)
        v_ok = offs < KV_HEADS * HEAD_DIM
        v = tl.load(qkv + token * stride_qkv + (HEADS + KV_HEADS) * HEAD_DIM + offs, mask=v_ok)
        tl.store(v_cache + slot * (KV_HEADS * HEAD_DIM) + offs, v, mask=v_ok)


def rotary_store(
    qkv: torch.Tensor,
    positions: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """Rotated queries ``[tokens, num_heads, head_dim]``; rotated keys and values go to the cache (module doc)."""
    tokens = qkv.shape[0]
    q = torch.empty(tokens, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    if tokens == 0:
        return q
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    half = head_dim // 2
    _rotary_store_kernel[(tokens,)](
        qkv, positions, cos, sin, q, k_cache, v_cache, slot_mapping, qkv.stride(0),
        HEADS=num_heads, KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, HALF=half,
        HEADS_PAD=triton.next_power_of_2(num_heads + num_kv_heads), HALF_PAD=triton.next_power_of_2(half),
        V_PAD=triton.next_power_of_2(num_kv_heads * head_dim),
    )
    return q


@triton.jit
def _silu_and_mul_kernel(gate_up, out, stride_in, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < WIDTH
    g = tl.load(gate_up + row * stride_in + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gate_up + row * stride_in + WIDTH + offs, mask=mask, other=0.0).to(tl.float32)
    silu = (g / (1.0 + tl.exp(-g))).to(out.dtype.element_ty).to(tl.float32)
    tl.store(out + row * WIDTH + offs, silu * u, mask=mask)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` where ``gate_up`` is ``[tokens, 2 * width]`` (gate first)."""
    tokens, double = gate_up.shape
    width = double // 2
    out = torch.empty(tokens, width, dtype=gate_up.dtype, device=gate_up.device)
    if tokens == 0:
        return out
    if gate_up.stride(-1) != 1:
        gate_up = gate_up.contiguous()
    block = min(1024, triton.next_power_of_2(width))
    _silu_and_mul_kernel[(tokens, triton.cdiv(width, block))](gate_up, out, gate_up.stride(0), WIDTH=width, BLOCK=block)
    return out
