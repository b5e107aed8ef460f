"""The ops every model calls: the three attention ops (store K/V, prefill attention, decode attention) and the
fused per-layer ops around the matmuls (add + RMSNorm, RoPE + K/V store, SiLU-and-multiply).

Each op dispatches on the device of its tensors: CUDA tensors go to our Triton kernels
(``triton_attention.py``, ``triton_fused.py``), everything else to the torch references (``reference.py``). Both
implementations share one contract; the optional ``max_*`` hints let callers that already know the largest
length (the model runner, CUDA graphs) spare the GPU a device-to-host sync.
"""

import torch

from engine.kernels import reference

_triton = None
_fused = None
_gluon = None


def _gpu():
    """The Triton attention module, imported on first CUDA use so CPU-only installs never need Triton."""
    global _triton
    if _triton is None:
        from engine.kernels import triton_attention

        _triton = triton_attention
    return _triton


def _gpu_gluon():
    """The Gluon (Hopper) prefill module, or None when this Triton has no Gluon dialect."""
    global _gluon
    if _gluon is None:
        try:
            from engine.kernels import gluon_attention
        except ImportError:
            _gluon = False
        else:
            _gluon = gluon_attention
    return _gluon or None


def _gpu_fused():
    global _fused
    if _fused is None:
        from engine.kernels import triton_fused

        _fused = triton_fused
    return _fused


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight * rms_norm(x + residual), x + residual)``; ``residual=None`` normalizes ``x`` (see reference)."""
    if x.is_cuda:
        return _gpu_fused().add_rms_norm(x, residual, weight, eps)
    return reference.add_rms_norm(x, residual, weight, eps)


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
    """RoPE on fused QKV rows; keys and values go to the paged cache; returns the queries (see reference)."""
    impl = _gpu_fused() if qkv.is_cuda else reference
    return impl.rotary_store(
        qkv, positions, cos, sin, k_cache, v_cache, slot_mapping, num_heads, num_kv_heads, head_dim
    )


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of a fused gate/up projection (see reference)."""
    if gate_up.is_cuda:
        return _gpu_fused().silu_and_mul(gate_up)
    return reference.silu_and_mul(gate_up)


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
    """Varlen causal GQA attention of new tokens over their cached prefix plus themselves (see reference).

    On a Hopper GPU with cache blocks of 128 tokens or more the FA3-style Gluon kernel runs
    (``gluon_attention.py``); any other CUDA device or block size gets the Triton kernel."""
    if query.is_cuda:
        gluon = _gpu_gluon()
        if gluon is not None and gluon.supported(query, k_cache):
            return gluon.prefill_attention(
                query, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                max_new_tokens=max_new_tokens,
            )
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
    split_tokens: int | None = None,
) -> torch.Tensor:
    """One new token per sequence over its whole paged context (see reference); ``split_tokens`` caps the
    keys per split-KV program on the GPU (see triton_attention.decode_attention)."""
    if query.is_cuda:
        return _gpu().decode_attention(
            query, k_cache, v_cache, context_lens, block_tables, scale, max_context_len=max_context_len,
            split_tokens=split_tokens,
        )
    return reference.decode_attention(query, k_cache, v_cache, context_lens, block_tables, scale)


__all__ = [
    "store_kv",
    "prefill_attention",
    "decode_attention",
    "add_rms_norm",
    "rotary_store",
    "silu_and_mul",
]
