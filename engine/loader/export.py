"""Write a loaded model as a Hugging Face style folder, e.g. to serve a GGUF-shipped model with real vLLM or
transformers (which read config.json + model.safetensors + tokenizer.json)."""

import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file

from engine.config import ModelConfig
from engine.loader.resolve import LoadedModel, load_model_files


def hf_config(c: ModelConfig) -> dict:
    """``c`` as the fields of a llama-type HF ``config.json`` (also ``transformers.LlamaConfig(**...)``'s)."""
    eos = c.eos_token_ids[0] if len(c.eos_token_ids) == 1 else (c.eos_token_ids or None)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": c.rope_scaling,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": c.attention_bias,
        "hidden_act": "silu",
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos,
    }


def save_hf_folder(model: str | LoadedModel, path: str, dtype: torch.dtype = torch.bfloat16) -> str:
    """Save ``model`` (a name, path or ``LoadedModel``) under ``path`` as a llama-type HF checkpoint.

    Parameters
    ----------
    model
        Anything ``LLM(model=...)`` accepts, or what ``load_model_files`` returned.
    path
        Folder to create; it must not exist yet (a half-written folder is never left behind: the files are
        written to a temporary sibling folder that is renamed at the end).
    dtype
        Dtype of the saved weights (bfloat16 by default, float32 keeps a dequantized GGUF exactly).

    Returns
    -------
    The folder's path.
    """
    loaded = load_model_files(model) if isinstance(model, str) else model
    if os.path.exists(path):
        raise FileExistsError(f"{path} already exists; pass a new folder")
    c = loaded.config
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        weights = {k: v.to(dtype).contiguous() for k, v in loaded.weights.items()}
        if c.tie_word_embeddings:
            weights.pop("lm_head.weight", None)
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        config = {**hf_config(c), "torch_dtype": str(dtype).removeprefix("torch.")}
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        tok = loaded.tokenizer
        tok.tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        tok_config = {
            "bos_token": tok.bos_token or None,
            "eos_token": tok.eos_token or None,
            "add_bos_token": tok.add_bos,
            "chat_template": tok.chat_template,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump(tok_config, f, indent=2)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
