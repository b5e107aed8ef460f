"""Read a Hugging Face style folder: config.json, *.safetensors, generation_config.json."""

import glob
import json
import os

import torch
from safetensors.torch import load_file

from engine.config import ModelConfig
from engine.errors import EngineError

_SUPPORTED_TYPES = ("llama", "qwen2", "mistral")


def read_hf_folder(path: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and fp32 state dict (HF names) of a safetensors checkpoint folder."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise EngineError(
            f"{path} has no config.json; pass a HF-style folder, a .gguf file or 'smollm2-135m'"
        )
    with open(cfg_path) as f:
        raw = json.load(f)
    if raw.get("model_type") not in _SUPPORTED_TYPES:
        raise EngineError(
            f"model_type {raw.get('model_type')!r} is not supported; supported: {_SUPPORTED_TYPES}"
        )
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise EngineError(f"{path} holds no *.safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update({k: v.float() for k, v in load_file(file).items()})
    eos = raw.get("eos_token_id")
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.isfile(gen_path):
        with open(gen_path) as f:
            eos = json.load(f).get("eos_token_id", eos)
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    n_head = raw["num_attention_heads"]
    cfg = ModelConfig(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=n_head,
        num_kv_heads=raw.get("num_key_value_heads") or n_head,
        head_dim=raw.get("head_dim") or raw["hidden_size"] // n_head,
        rms_norm_eps=raw.get("rms_norm_eps", 1e-5),
        rope_theta=raw.get("rope_theta") or (raw.get("rope_parameters") or {}).get("rope_theta", 10000.0),
        rope_scaling=raw.get("rope_scaling"),
        max_position_embeddings=raw.get("max_position_embeddings", 4096),
        tie_word_embeddings=raw.get("tie_word_embeddings", False) or "lm_head.weight" not in weights,
        attention_bias=raw.get("attention_bias", False) or raw.get("model_type") == "qwen2",
        eos_token_ids=eos_ids,
        bos_token_id=raw.get("bos_token_id"),
    )
    return cfg, weights
