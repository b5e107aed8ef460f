"""Read a llama-architecture GGUF file: config, dequantized weights (HF names and layout), tokenizer."""

import logging

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from engine.config import ModelConfig
from engine.errors import EngineError

logger = logging.getLogger(__name__)

_SUPPORTED_ARCHS = ("llama", "qwen2", "mistral")

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _field(reader: GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _hf_name(name: str) -> str:
    base, _, kind = name.rpartition(".")
    if base.startswith("blk."):
        _, idx, part = base.split(".", 2)
        return f"model.layers.{idx}.{_LAYER_NAMES[part]}.{kind}"
    return f"{_TOP_NAMES[base]}.{kind}"


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row interleaving so rows follow HF's rotate-half RoPE layout."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str) -> tuple[ModelConfig, dict[str, torch.Tensor], GGUFReader]:
    """Config and fp32 HF-named state dict of a GGUF file (the reader is returned for tokenizer metadata)."""
    reader = GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if arch not in _SUPPORTED_ARCHS:
        raise EngineError(
            f"GGUF architecture {arch!r} is not supported; supported: {', '.join(_SUPPORTED_ARCHS)}"
        )
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv", n_head))
    head_dim = int(_field(reader, f"{arch}.attention.key_length", hidden // n_head))
    scaling = None
    if _field(reader, f"{arch}.rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": float(_field(reader, f"{arch}.rope.scaling.factor"))}
    weights: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            arr = np.asarray(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        else:
            arr = dequantize(t.data, t.tensor_type)
        name = _hf_name(t.name)
        if arch == "llama" and name.endswith("q_proj.weight"):
            arr = _unpermute(arr, n_head)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            arr = _unpermute(arr, n_kv)
        weights[name] = torch.from_numpy(np.array(arr, dtype=np.float32, order="C"))
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    vocab = weights["model.embed_tokens.weight"].shape[0]
    cfg = ModelConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        num_layers=int(_field(reader, f"{arch}.block_count")),
        num_heads=n_head,
        num_kv_heads=n_kv,
        head_dim=head_dim,
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 4096)),
        tie_word_embeddings="lm_head.weight" not in weights,
        attention_bias="model.layers.0.self_attn.q_proj.bias" in weights,
        eos_token_ids=[] if eos is None else [int(eos)],
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
    )
    logger.info("read GGUF %s: %d layers, hidden %d, vocab %d", path, cfg.num_layers, hidden, vocab)
    return cfg, weights, reader
