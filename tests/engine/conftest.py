"""One real model load per test session: our engine and the transformers reference over the same GGUF.

Without a GPU the Triton kernels run under Triton's interpreter, which must be chosen before Triton is first
imported: set here, before any test module of this directory can import it.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from engine.loader import resolve_model_path

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "Q: What is 12 times 7?\nA:",
    "The three primary colors are",
    "Translate to French: Good morning, my friend.",
    "import numpy as np\n\n# compute the mean of an array\n",
    "<|im_start|>user\nName a fruit that is yellow.<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="session")
def hf_model():
    """transformers' LlamaForCausalLM with weights dequantized by transformers' own GGUF reader."""
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = resolve_model_path("smollm2-135m")
    cfg = load_gguf_checkpoint(path, return_tensors=False)["config"]
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    model.eval()
    torch.set_num_threads(torch.get_num_threads())
    return model


@contextmanager
def recorded_logits(llm) -> Iterator[list[torch.Tensor]]:
    """Every logits tensor the engine's LM head computes while the block runs, in order."""
    runner = llm.engine.runner
    original = runner.logits
    recorded: list[torch.Tensor] = []

    def record(hidden):
        out = original(hidden)
        recorded.append(out.clone())
        return out

    runner.logits = record
    try:
        yield recorded
    finally:
        runner.logits = original
