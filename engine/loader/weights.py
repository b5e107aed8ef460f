"""Copy HF-named weights into our fused-projection modules."""

import torch

from engine.errors import EngineError
from engine.models.llama import LlamaForCausalLM


def load_weights(model: LlamaForCausalLM, weights: dict[str, torch.Tensor]) -> None:
    """Fill ``model`` from a HF-layout state dict (q/k/v and gate/up are concatenated here)."""
    params = dict(model.named_parameters())
    fused = {
        "q_proj": ("qkv_proj", 0),
        "k_proj": ("qkv_proj", 1),
        "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }
    pending: dict[str, list] = {}
    for name, tensor in weights.items():
        if name.startswith("model."):
            name = name[len("model.") :]
        parts = name.split(".")
        if len(parts) >= 3 and parts[-2] in fused:
            target, idx = fused[parts[-2]]
            key = ".".join(parts[:-2] + [target, parts[-1]])
            pending.setdefault(key, [None, None, None])[idx] = tensor
            continue
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        if name not in params:
            if "rotary_emb" in name:
                continue
            raise EngineError(f"unexpected weight {name!r} for a Llama-family model")
        params[name].data.copy_(tensor)
    for key, chunks in pending.items():
        params[key].data.copy_(torch.cat([c for c in chunks if c is not None]))
