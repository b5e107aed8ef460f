"""Torch reference implementations of the paged-attention ops.

Cache layout (per layer): ``k_cache``/``v_cache`` of shape ``[num_blocks, block_size, num_kv_heads, head_dim]``.
A token's slot is ``block_id * block_size + offset``; ``block_tables[i]`` lists sequence i's blocks (padded
with -1), ``context_lens[i]`` is its total length including the new tokens.
"""

import torch
import torch.nn.functional as F


def store_kv(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write ``key``/``value`` ``[num_tokens, num_kv_heads, head_dim]`` into the cache at ``slot_mapping``."""
    num_blocks, block_size, h, d = k_cache.shape
    k_cache.view(num_blocks * block_size, h, d).index_copy_(0, slot_mapping, key)
    v_cache.view(num_blocks * block_size, h, d).index_copy_(0, slot_mapping, value)


def _gather(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` cached tokens of one sequence as ``[length, num_kv_heads, head_dim]``."""
    block_size = cache.shape[1]
    n = (length + block_size - 1) // block_size
    return cache[block_table[:n]].flatten(0, 1)[:length]


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
    num_heads = query.shape[1]
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.empty_like(query)
    cu = cu_seqlens_q.tolist()
    lens = context_lens.tolist()
    for i, ctx in enumerate(lens):
        start, end = cu[i], cu[i + 1]
        n_new = end - start
        k = _gather(k_cache, block_tables[i], ctx).transpose(0, 1)
        v = _gather(v_cache, block_tables[i], ctx).transpose(0, 1)
        q = query[start:end].transpose(0, 1).unflatten(0, (num_kv_heads, group))
        k = k.unsqueeze(1)
        v = v.unsqueeze(1)
        if n_new == ctx:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        else:
            mask = torch.ones(n_new, ctx, dtype=torch.bool).tril(ctx - n_new)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        out[start:end] = o.flatten(0, 1).transpose(0, 1)
    return out


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
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    max_len = int(context_lens.max())
    n_blocks = (max_len + block_size - 1) // block_size
    table = block_tables[:, :n_blocks].clamp(min=0)
    k = k_cache[table].flatten(1, 2)[:, :max_len]
    v = v_cache[table].flatten(1, 2)[:, :max_len]
    q = query.view(num_seqs, num_kv_heads, group, head_dim)
    scores = torch.einsum("bhgd,blhd->bhgl", q, k) * scale
    pad = torch.arange(max_len) >= context_lens[:, None]
    scores.masked_fill_(pad[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhgl,blhd->bhgd", probs, v)
    return out.reshape(num_seqs, num_heads, head_dim)
