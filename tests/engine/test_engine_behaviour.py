"""Engine invariants on the real model: caching, batching and preemption do not change results."""

import numpy as np
import pytest
import torch

from engine import LLM, EngineError, SamplingParams

from .conftest import PROMPTS

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
SHARED = "Classify the sentiment of the review as positive or negative.\nReview: "
SCORE_PROMPTS = [
    SHARED + r + "\nSentiment:" for r in ("I loved it.", "Terrible, boring film.", "It was fine.")
]
CHOICES = [" positive", " negative", " mixed feelings"]


def greedy_ids(llm, prompts, params=GREEDY):
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params)]


def score_table(llm, prompts=SCORE_PROMPTS):
    return np.array([[c.logprob for c in s.choices] for s in llm.score(prompts, CHOICES)])


def test_prefix_caching_on_and_off_agree(llm):
    bm = llm.engine.block_manager
    with_cache = greedy_ids(llm, PROMPTS[:4] + PROMPTS[:4])
    scores = score_table(llm)
    bm.enable_prefix_caching = False
    try:
        without = greedy_ids(llm, PROMPTS[:4] + PROMPTS[:4])
        scores_off = score_table(llm)
    finally:
        bm.enable_prefix_caching = True
    assert with_cache == without
    np.testing.assert_allclose(scores, scores_off, atol=1e-3)


def test_batched_and_one_by_one_agree(llm):
    batched = greedy_ids(llm, PROMPTS)
    single = [greedy_ids(llm, [p])[0] for p in PROMPTS]
    assert batched == single
    scores = score_table(llm)
    one = np.concatenate([score_table(llm, [p]) for p in SCORE_PROMPTS])
    np.testing.assert_allclose(scores, one, atol=1e-3)


def test_preempted_and_not_agree(llm):
    small = LLM("smollm2-135m", max_model_len=64, kv_cache_memory=10 * 737280, max_num_seqs=8)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    prompts = PROMPTS[:6]
    assert greedy_ids(small, prompts, params) == greedy_ids(llm, prompts, params)
    assert small.stats()["preemptions"] > 0
    np.testing.assert_allclose(score_table(small), score_table(llm), atol=1e-3)


def test_score_reuses_the_prompt_and_agrees_with_choice_lengths(llm):
    before = llm.stats()["cached_tokens"]
    out = llm.score(SCORE_PROMPTS[0], CHOICES)[0]
    lengths = [len(llm.tokenizer.encode(c)) for c in CHOICES]
    assert [c.num_tokens for c in out.choices] == lengths and lengths[2] > 1
    assert llm.stats()["cached_tokens"] > before
    c = out.choices[2]
    assert c.mean_logprob == pytest.approx(c.logprob / lengths[2])


def test_seeded_sampling_is_reproducible_and_n_samples_differ(llm):
    params = SamplingParams(n=4, temperature=0.9, top_p=0.95, top_k=50, seed=7, max_tokens=12)
    a = llm.generate(PROMPTS[2], params)[0]
    b = llm.generate([PROMPTS[0], PROMPTS[2]], params)[1]
    assert [o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
    assert len({tuple(o.token_ids) for o in a.outputs}) > 1
    c = llm.generate(PROMPTS[2], SamplingParams(n=4, temperature=0.9, seed=8, max_tokens=12))[0]
    assert [o.token_ids for o in a.outputs] != [o.token_ids for o in c.outputs]


def test_stop_strings_across_token_boundaries_and_max_tokens(llm):
    full = llm.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))[0].outputs[
        0
    ]
    assert len(full.token_ids) == 20 and full.finish_reason == "length"
    pieces = [llm.tokenizer.decode([t]) for t in full.token_ids]
    k = next(i for i in range(3, len(pieces)) if pieces[i].strip() and pieces[i + 1].strip())
    stop = pieces[k][-1] + pieces[k + 1][:1]
    cut = full.text.find(stop)
    out = llm.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=20, stop=[stop]))[0].outputs[0]
    assert out.finish_reason == "stop"
    assert out.text == full.text[:cut]
    assert stop not in out.text


def test_logprobs_are_consistent_with_score(llm):
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=3, ignore_eos=True)
    out = llm.generate(PROMPTS[0], params)[0]
    comp = out.outputs[0]
    assert len(comp.logprobs) == 6
    for tok, entry in zip(comp.token_ids, comp.logprobs, strict=False):
        assert tok in entry and entry[tok] == max(entry.values())
    scored = llm.score([out.prompt_token_ids], [comp.token_ids])[0].choices[0]
    assert scored.logprob == pytest.approx(comp.cumulative_logprob, abs=1e-3)
    assert scored.num_tokens == 6


def test_chat_and_embed(llm):
    reply = llm.chat(
        [{"role": "user", "content": "What is 2+2?"}], SamplingParams(temperature=0, max_tokens=12)
    )
    assert "4" in reply[0].outputs[0].text
    emb = llm.embed(["a cat sat on the mat", "a cat sat on the mat", "quarterly revenue grew"])
    assert emb.shape == (3, 576) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-5)


@pytest.mark.parametrize(
    "call",
    [
        lambda llm: llm.generate(""),
        lambda llm: llm.generate("word " * 600),
        lambda llm: llm.generate(123),
        lambda llm: llm.generate([None]),
        lambda llm: llm.generate("hi", SamplingParams(temperature=-1)),
        lambda llm: llm.score("hi", []),
        lambda llm: llm.score("hi", [""]),
        lambda llm: llm.chat([{"content": "no role"}]),
    ],
)
def test_bad_input_is_rejected_and_the_engine_keeps_serving(llm, call):
    with pytest.raises((EngineError, ValueError)):
        call(llm)
    assert greedy_ids(llm, [PROMPTS[0]], SamplingParams(temperature=0, max_tokens=3))[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0),
        dict(top_p=0),
        dict(top_k=-2),
        dict(min_p=2),
        dict(max_tokens=0),
        dict(stop=[""]),
        dict(logprobs=-1),
    ],
)
def test_invalid_sampling_params(kwargs):
    with pytest.raises(EngineError):
        SamplingParams(**kwargs)


def test_unknown_model_name():
    with pytest.raises(EngineError, match="unknown model"):
        LLM("no-such-model")


def test_tight_token_budget_gives_the_same_scores(llm):
    tight = LLM("smollm2-135m", max_model_len=128, max_num_batched_tokens=128, kv_cache_memory=64 << 20)
    prompts = [
        SHARED + f"Review number {i}: the plot was {w} and the acting {w}.\nSentiment:"
        for i, w in enumerate(["dull", "superb", "odd", "fine", "weak", "great", "messy"])
    ]
    np.testing.assert_allclose(score_table(tight, prompts), score_table(llm, prompts), atol=1e-3)


@pytest.mark.parametrize(("device", "message"), [("banana", "unknown device"), ("meta", "not supported")])
def test_unusable_device_names_the_choices(device, message):
    with pytest.raises(EngineError, match=message):
        LLM("smollm2-135m", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where torch sees no GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(EngineError, match="no CUDA GPU"):
        LLM("smollm2-135m", device="cuda")
