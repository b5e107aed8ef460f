"""Torch reference implementations of the paged-attention ops.

Cache layout (per layer): ``k_cache``/``v_cache`` shaped ``[num_blocks, block_size, num_kv_heads, head_dim]``.
A token's slot is ``block_id * block_size + offset``; ``block_tables[i]`` lists sequence i's blocks (padded
with -1), ``context_lens[i]`` is its total length including the new tokens. Both attention ops gather each
sequence's context through its block table into one padded batch (one ``index_select`` of whole blocks) and run
torch's ``scaled_dot_product_attention`` on it, GQA included without repeating K/V (few, large ops are what a CPU
does well).
"""

import torch
import torch.nn.functional as F


def store_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write ``key``/``value`` ``[num_tokens, num_kv_heads, head_dim]`` into the cache at ``slot_mapping``."""
    num_blocks, block_size, h, d = k_cache.shape
    k_cache.view(num_blocks * block_size, h, d).index_copy_(0, slot_mapping, key)
    v_cache.view(num_blocks * block_size, h, d).index_copy_(0, slot_mapping, value)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual`` (or ``x``); returns ``(weight * rms_norm(s), s)`` with the norm computed in fp32."""
    summed = x if residual is None else x + residual
    dtype = summed.dtype
    h = summed.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype), summed


def rotate(
    qkv: torch.Tensor,
    positions: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split fused QKV rows ``[tokens, (heads + 2 kv_heads) * dim]`` into queries, keys and values, with
    rotate-half RoPE applied to the queries and keys (``cos``/``sin``: ``[max_pos, dim]`` tables holding
    ``(cos, cos)`` and ``(-sin, sin)``)."""
    q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
    qk = qkv[:, : q_size + kv_size].view(-1, num_heads + num_kv_heads, head_dim)
    c, s = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
    x1, x2 = qk.chunk(2, dim=-1)
    qk = torch.addcmul(qk * c, torch.cat((x2, x1), dim=-1), s)
    q, k = qk.split([num_heads, num_kv_heads], dim=1)
    return q, k, qkv[:, q_size + kv_size :].view(-1, num_kv_heads, head_dim)


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
    """``rotate``, then store the keys and values at ``slot_mapping``; returns the rotated queries."""
    q, k, v = rotate(qkv, positions, cos, sin, num_heads, num_kv_heads, head_dim)
    store_kv(k, v, k_cache, v_cache, slot_mapping)
    return q


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of a fused ``[tokens, 2 * width]`` projection (gate first)."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate).mul_(up)


def _gather_context(cache: torch.Tensor, block_tables: torch.Tensor, max_len: int) -> torch.Tensor:
    """Each sequence's cached tokens as ``[num_seqs, num_kv_heads, L, head_dim]``, ``L >= max_len`` rounded up
    to whole blocks (positions past a sequence's length hold junk the caller masks). One ``index_select`` copies
    whole blocks; the result is a transposed view of that copy, which SDPA reads without another copy."""
    num_seqs = block_tables.shape[0]
    _, block_size, h, d = cache.shape
    n_blocks = (max_len + block_size - 1) // block_size
    table = block_tables[:, :n_blocks].clamp(min=0).reshape(-1)
    return cache.index_select(0, table).view(num_seqs, n_blocks * block_size, h, d).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention of ``q`` ``[B, heads, R, D]`` over ``k``/``v`` ``[B, kv_heads, L, D]`` where ``allowed``
    (``[B, 1, R, L]``); query head i reads KV head ``i // (heads // kv_heads)``."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=allowed, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )


def prefill_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Varlen causal GQA attention of new tokens over each sequence's cached prefix plus themselves.

    ``query`` is ``[num_tokens, num_heads, head_dim]`` with sequence i's new tokens at rows
    ``cu_seqlens_q[i]:cu_seqlens_q[i+1]``; they are the last tokens of a context of ``context_lens[i]`` tokens
    whose K/V (new tokens included) are already in the cache. Returns ``[num_tokens, num_heads, head_dim]``.
    """
    num_tokens, num_heads, head_dim = query.shape
    num_seqs = context_lens.shape[0]
    dev = query.device
    q_lens = cu_seqlens_q[1:] - cu_seqlens_q[:-1]
    max_q, max_len = int(q_lens.max()), int(context_lens.max())
    seq_of = torch.repeat_interleave(torch.arange(num_seqs, device=dev), q_lens)
    row_of = torch.arange(num_tokens, device=dev) - cu_seqlens_q[:-1][seq_of]
    flat = seq_of * max_q + row_of
    q = query.new_zeros(num_seqs * max_q, num_heads, head_dim).index_copy_(0, flat, query)
    q = q.view(num_seqs, max_q, num_heads, head_dim).transpose(1, 2)
    k = _gather_context(k_cache, block_tables, max_len)
    v = _gather_context(v_cache, block_tables, max_len)
    q_pos = (context_lens - q_lens)[:, None] + torch.arange(max_q, device=dev)[None, :]
    key_pos = torch.arange(k.shape[2], device=dev)
    allowed = (key_pos[None, None, :] <= q_pos[:, :, None]).unsqueeze(1)
    out = _attend(q, k, v, allowed, scale)
    return out.transpose(1, 2).reshape(num_seqs * max_q, num_heads, head_dim)[flat]


def decode_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One new token per sequence attending over its whole paged context.

    ``query`` is ``[num_seqs, num_heads, head_dim]``; ``block_tables`` is ``[num_seqs, max_blocks]``.
    Returns ``[num_seqs, num_heads, head_dim]``.
    """
    num_seqs, num_heads, head_dim = query.shape
    k = _gather_context(k_cache, block_tables, int(context_lens.max()))
    v = _gather_context(v_cache, block_tables, int(context_lens.max()))
    key_pos = torch.arange(k.shape[2], device=query.device)
    allowed = (key_pos[None, :] < context_lens[:, None])[:, None, None, :]
    return _attend(query.unsqueeze(2), k, v, allowed, scale).view(num_seqs, num_heads, head_dim)
