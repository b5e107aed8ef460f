"""The three attention ops every model calls: store K/V, prefill attention, decode attention.

Each op dispatches on the device of its tensors: CUDA tensors go to our Triton kernels
(``engine/kernels/triton_attention.py``), everything else to the torch references (``reference.py``). Both
implementations share one contract; the optional ``max_*`` hints let callers that already know the largest
length (the model runner, CUDA graphs) spare the GPU a device-to-host sync.
"""

import torch

from engine.kernels import reference

_triton = None


def _gpu():
    """The Triton module, imported on first CUDA use so CPU-only installs never need Triton."""
    global _triton
    if _triton is None:
        from engine.kernels import triton_attention

        _triton = triton_attention
    return _triton


def store_kv(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write ``key``/``value`` ``[num_tokens, num_kv_heads, head_dim]`` into the paged cache at ``slot_mapping``."""
    if key.is_cuda:
        _gpu().store_kv(key, value, k_cache, v_cache, slot_mapping)
    else:
        reference.store_kv(key, value, k_cache, v_cache, slot_mapping)


def prefill_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    max_new_tokens: int | None = None,
) -> torch.Tensor:
    """Varlen causal GQA attention of new tokens over their cached prefix plus themselves (see reference)."""
    if query.is_cuda:
        return _gpu().prefill_attention(
            query, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale, max_new_tokens=max_new_tokens
        )
    return reference.prefill_attention(query, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale)


def decode_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    max_context_len: int | None = None,
) -> torch.Tensor:
    """One new token per sequence over its whole paged context (see reference)."""
    if query.is_cuda:
        return _gpu().decode_attention(
            query, k_cache, v_cache, context_lens, block_tables, scale, max_context_len=max_context_len
        )
    return reference.decode_attention(query, k_cache, v_cache, context_lens, block_tables, scale)


__all__ = ["store_kv", "prefill_attention", "decode_attention"]
