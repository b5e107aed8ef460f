"""Llama-family decoder (RMSNorm, RoPE, GQA, SwiGLU, optional tied embeddings) over a paged KV cache."""

import math

import torch
from torch import nn

from engine import h2o, kernels
from engine.config import ModelConfig
from engine.models.context import AttentionMetadata

# Continuous batching mixes short and long contexts in one decode batch, so the engine caps the keys per
# split-KV program: on an H200, 256 sequences of 100-2048 tokens ran 11% faster (docs/benchmarks.md).
DECODE_SPLIT_TOKENS = 1024


class RMSNorm(nn.Module):
    """Root-mean-square layer norm, computed in fp32; given the residual stream, it first adds the sub-layer's
    output to it and returns both the normalized input and the new residual (one fused kernel on CUDA)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return kernels.add_rms_norm(x, residual, self.weight, self.eps)


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    """Inverse RoPE frequencies, with Llama-3 style or linear scaling when the config asks for it."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if not scaling:
        return inv.float()
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        return (inv / scaling["factor"]).float()
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        low_wl, high_wl = old_len / low, old_len / high
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > low_wl, inv / factor, inv)
        mid = (1 - smooth) * inv / factor + smooth * inv
        is_mid = (wavelen <= low_wl) & (wavelen >= high_wl)
        return torch.where(is_mid, mid, scaled).float()
    if kind == "default":
        return inv.float()
    raise ValueError(f"unsupported rope scaling {kind!r}; supported: linear, llama3")


class Rotary(nn.Module):
    """Rotate-half RoPE tables indexed by position: ``x * cos + rotate_half(x) * sin`` with
    ``rotate_half(x) = (x2, x1)`` and the sign folded into the sin table (``(-sin, sin)``); the rotation itself
    is ``kernels.rotary_store``."""

    def __init__(self, head_dim: int, max_pos: int, theta: float, scaling: dict | None) -> None:
        super().__init__()
        inv = rope_inv_freq(head_dim, theta, scaling)
        freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32), inv)
        cos, sin = freqs.cos(), freqs.sin()
        self.register_buffer("cos", torch.cat((cos, cos), dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat((-sin, sin), dim=-1), persistent=False)


class Attention(nn.Module):
    """GQA self-attention with fused QKV projection, writing to and reading from the paged cache."""

    def __init__(self, cfg: ModelConfig, rotary: Rotary) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        self.rotary = rotary
        self.scale = cfg.head_dim**-0.5
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)
        self.layer_idx = 0

    def forward(self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        if meta.h2o is not None:
            q, k, v = kernels.reference.rotate(
                qkv, positions, self.rotary.cos, self.rotary.sin, self.num_heads, self.num_kv_heads, self.head_dim
            )
            return self.o_proj(h2o.attention(self, self.layer_idx, q, k, v, meta).flatten(1))
        q = kernels.rotary_store(
            qkv,
            positions,
            self.rotary.cos,
            self.rotary.sin,
            self.k_cache,
            self.v_cache,
            meta.slot_mapping,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
        )
        nd = meta.num_decode
        parts = []
        if nd:
            parts.append(
                kernels.decode_attention(
                    q[:nd],
                    self.k_cache,
                    self.v_cache,
                    meta.decode_context_lens,
                    meta.decode_block_tables,
                    self.scale,
                    max_context_len=meta.decode_max_context_len,
                    split_tokens=DECODE_SPLIT_TOKENS,
                )
            )
        if q.shape[0] > nd:
            parts.append(
                kernels.prefill_attention(
                    q[nd:],
                    self.k_cache,
                    self.v_cache,
                    meta.prefill_cu_seqlens_q,
                    meta.prefill_context_lens,
                    meta.prefill_block_tables,
                    self.scale,
                    max_new_tokens=meta.prefill_max_new_tokens,
                )
            )
        o = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self.o_proj(o.flatten(1))


class MLP(nn.Module):
    """SwiGLU feed-forward with fused gate/up projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(kernels.silu_and_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    """Pre-norm attention + MLP block. It carries the residual stream separately (vLLM's layout): each norm adds
    the previous sub-layer's output to it, so the adds fuse into the norms."""

    def __init__(self, cfg: ModelConfig, rotary: Rotary) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, rotary)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, positions: torch.Tensor, h: torch.Tensor, residual: torch.Tensor | None, meta: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``h`` is the previous layer's MLP output (the embeddings, with ``residual=None``, for the first)."""
        x, residual = self.input_layernorm(h, residual)
        x, residual = self.post_attention_layernorm(self.self_attn(positions, x, meta), residual)
        return self.mlp(x), residual


class LlamaForCausalLM(nn.Module):
    """Token ids + positions + attention metadata -> final hidden states; ``logits`` maps chosen rows."""

    def __init__(self, cfg: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.config = cfg
        rotary = Rotary(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.rotary = rotary
        self.layers = nn.ModuleList(DecoderLayer(cfg, rotary) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        h, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            h, residual = layer(positions, h, residual, meta)
        return self.norm(h, residual)[0]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (fp32) for the given final hidden states."""
        return self.lm_head(hidden).float()
