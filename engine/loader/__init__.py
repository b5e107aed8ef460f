"""Turn a model name or path into a config, HF-named fp32 weights, a tokenizer and a chat template."""

from engine.loader.export import hf_config, save_hf_folder
from engine.loader.resolve import LoadedModel, load_model_files, resolve_model_path

__all__ = ["LoadedModel", "hf_config", "load_model_files", "resolve_model_path", "save_hf_folder"]
