"""H2O KV eviction (kv_policy="h2o"): exactness with room for everything, the per-sequence block cap, the
per-head compaction, validation, and the engine serving everything else unchanged under the policy."""

import pytest
import torch

from engine import LLM, EngineError, SamplingParams
from engine.h2o import compact, decode_with_probs, kept_positions
from engine.kernels import reference

from .conftest import PROMPTS

PASSAGE = (
    "The lighthouse on the northern cape was built in 1871 after a winter storm drove three cargo ships onto "
    "the rocks. Its keeper, a former sailor named Elias Brandt, lived there alone for twenty-two years. Every "
    "evening he climbed the one hundred and twelve steps to light the lamp, and every morning he wrote the "
    "weather, the passing ships and the state of the sea in a leather logbook. When the lamp was finally "
    "electrified in 1936, the logbooks were given to the town museum, where visitors can still read them. "
    "Question: how many steps did the keeper climb each evening?\nAnswer:"
)
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=0)
LONG = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=0)


def _h2o(max_model_len: int = 512, kv_cache_memory: int = 64 << 20, **kwargs) -> LLM:
    llm = LLM(
        "smollm2-135m",
        device="cpu",
        max_model_len=max_model_len,
        kv_cache_memory=kv_cache_memory,
        max_num_seqs=8,
        kv_policy="h2o",
        **kwargs,
    )
    torch.set_num_threads(1)  # LLM() sets all cores; see one_thread
    return llm


@pytest.fixture(scope="module", autouse=True)
def one_thread(llm):
    """Tiny per-head ops pay an OpenMP barrier each on a shared 2-core box; one thread is faster here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def roomy(llm):
    return _h2o(kv_budget=400, recent_window=16)


@pytest.fixture(scope="module")
def tight(llm):
    return _h2o(kv_budget=48, recent_window=16)


def _lps(out) -> list[float]:
    return [entry[t] for t, entry in zip(out.token_ids, out.logprobs, strict=True)]


def test_h2o_with_room_for_every_token_matches_the_full_cache(llm, roomy):
    prompts = PROMPTS[:4] + [PASSAGE]
    full = llm.generate(prompts, GREEDY)
    ours = roomy.generate(prompts, GREEDY)
    for a, b in zip(full, ours, strict=True):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert max(abs(x - y) for x, y in zip(_lps(a.outputs[0]), _lps(b.outputs[0]), strict=True)) < 1e-4


def test_small_budget_caps_blocks_keeps_the_recent_window_and_is_deterministic(llm, tight):
    engine, bm = tight.engine, tight.engine.block_manager
    state = engine.runner.h2o
    budget, recent = 48, 16
    seen = {"max_blocks": 0, "checked": 0}
    step = engine.step

    def checked_step():
        step()
        for seq in engine.scheduler.running:
            seen["max_blocks"] = max(seen["max_blocks"], len(seq.block_table))
            cached = len(seq) - 1  # the token just sampled is written by the next step
            if cached > budget:  # every (layer, head) holds exactly kv_budget tokens, the recent window among them
                pos = state.pos[:, seq.kv_row]
                assert ((pos >= 0).sum(-1) == budget).all()
                for t in range(cached - recent, cached):
                    assert ((pos == t).sum(-1) == 1).all()
                seen["checked"] += 1

    engine.step = checked_step
    try:
        first = tight.generate([PASSAGE], LONG)[0]
    finally:
        engine.step = step
    assert len(first.prompt_token_ids) > 100
    assert bm.cap_blocks == 4  # ceil((48 + 1) / 16)
    assert 0 < seen["max_blocks"] <= bm.cap_blocks
    assert seen["checked"] >= 38
    assert bm.num_used_blocks == 0  # everything released at the end
    again = tight.generate([PASSAGE], LONG)[0]
    assert again.outputs[0].token_ids == first.outputs[0].token_ids
    assert _lps(again.outputs[0]) == _lps(first.outputs[0])
    # Quality against the full cache. The first token comes from the (full) prefill; the next ones already
    # attend to 48 of ~120 prompt tokens per head. Measured: the first 8 tokens agree (see docs/engine.md).
    full = llm.generate([PASSAGE], LONG)[0].outputs[0]
    ours = first.outputs[0]
    assert ours.token_ids[:8] == full.token_ids[:8]
    # ... while eviction is really at work: the log-probs along those same tokens already differ.
    gaps = [abs(a - b) for a, b in zip(_lps(ours)[1:8], _lps(full)[1:8], strict=True)]
    assert max(gaps) > 1e-3
    assert abs(_lps(ours)[0] - _lps(full)[0]) < 1e-4  # the first token comes from the uncompacted prefill


def test_kept_set_and_compaction_match_a_direct_reference():
    gen = torch.Generator().manual_seed(0)
    layers, heads, bs, d, n, budget, recent = 2, 3, 4, 5, 14, 6, 2
    cache = torch.randn(2, layers, 7, bs, heads, d, generator=gen)
    table = [5, 1, 6, 0]  # 16 slots for 14 tokens, blocks out of order
    mass = torch.rand(layers, heads, n, generator=gen)
    keep = kept_positions(mass, budget, recent)
    before = cache.clone()
    compact(cache, table, keep, bs)
    for l in range(layers):
        for h in range(heads):
            old = mass[l, h, : n - recent].tolist()
            heavy = sorted(range(n - recent), key=lambda t: -old[t])[: budget - recent]
            expected = sorted(set(heavy) | set(range(n - recent, n)))
            assert keep[l, h].tolist() == expected
            for j, t in enumerate(expected):
                src = before[:, l, table[t // bs], t % bs, h]
                assert torch.equal(cache[:, l, table[j // bs], j % bs, h], src)
    untouched = [b for b in range(7) if b not in table]
    assert torch.equal(cache[:, :, untouched], before[:, :, untouched])


def test_decode_with_probs_matches_the_reference_op():
    gen = torch.Generator().manual_seed(1)
    k = torch.randn(6, 4, 2, 8, generator=gen)
    v = torch.randn(6, 4, 2, 8, generator=gen)
    q = torch.randn(2, 6, 8, generator=gen)
    tables = torch.tensor([[3, 0, 5], [1, 4, -1]])
    ctx = torch.tensor([10, 7])
    out, mass = decode_with_probs(q, k, v, tables, ctx, 10, 0.3)
    ref = reference.decode_attention(q, k, v, ctx, tables, 0.3)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(mass.sum(-1), torch.full((2, 2), 3.0), atol=1e-5)  # 3 query heads per KV head
    assert (mass[1, :, 7:] == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"kv_policy": "lru"}, "kv_policy must be"),
        ({"kv_policy": "h2o"}, "needs kv_budget"),
        ({"kv_policy": "h2o", "kv_budget": 16, "recent_window": 16}, r"at least recent_window \+ 1"),
        ({"kv_policy": "h2o", "kv_budget": 16, "recent_window": 0}, "recent_window must be"),
        ({"kv_policy": "h2o", "kv_budget": True}, "needs kv_budget"),
        ({"kv_policy": "h2o", "kv_budget": 8.5}, "needs kv_budget"),
        ({"kv_policy": "h2o", "kv_budget": 32, "enable_prefix_caching": True}, "enable_prefix_caching=False"),
        ({"kv_budget": 32}, "apply only to kv_policy='h2o'"),
    ],
)
def test_bad_kv_policy_settings_are_clear_errors(kwargs, needle):
    with pytest.raises(EngineError, match=needle):
        LLM("smollm2-135m", device="cpu", **kwargs)


def test_n_above_one_is_refused_and_the_engine_keeps_serving(roomy, llm):
    with pytest.raises(EngineError, match="n > 1 is not supported"):
        roomy.generate(PROMPTS[:2], SamplingParams(n=2, temperature=0.8, max_tokens=4))
    out = roomy.generate(PROMPTS[:1], GREEDY)[0].outputs[0].token_ids
    assert out == llm.generate(PROMPTS[:1], GREEDY)[0].outputs[0].token_ids


def test_score_and_embed_are_unchanged_under_h2o(tight, llm):
    choices = [" positive", " negative", " mixed feelings"]
    prompt = ["Review: I loved every minute of it.\nSentiment:"]
    a = [c.logprob for c in llm.score(prompt, choices)[0].choices]
    b = [c.logprob for c in tight.score(prompt, choices)[0].choices]
    assert a == pytest.approx(b, abs=1e-4)
    assert torch.allclose(
        torch.from_numpy(llm.embed(PROMPTS[:2])), torch.from_numpy(tight.embed(PROMPTS[:2])), atol=1e-4
    )
    assert tight.engine.block_manager.num_used_blocks == 0


def test_stream_logprobs_teacher_forces_the_text(llm, roomy):
    ids = llm.tokenizer.encode(PASSAGE)
    full = llm.stream_logprobs([ids], prefill=32)[0]
    assert len(full) == len(ids) - 32
    scored = llm.score([ids[:32]], [[ids[32:]]])[0].choices[0].logprob
    assert sum(full) == pytest.approx(scored, abs=1e-2)
    assert roomy.stream_logprobs([ids], prefill=32)[0] == pytest.approx(full, abs=1e-4)
    with pytest.raises(EngineError, match="needs more than prefill"):
        llm.stream_logprobs([ids[:10]], prefill=32)


def test_preemption_under_h2o_recomputes_and_releases_everything(llm):
    """A pool of 12 blocks for 8 sequences that each need 2 under the cap: the newest are preempted,
    re-prefilled (and compacted) later, and every sequence completes."""
    small = _h2o(max_model_len=128, kv_cache_memory=12 * 737280, kv_budget=24, recent_window=8)
    outs = small.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
    assert small.stats()["preemptions"] > 0
    assert all(len(o.outputs[0].token_ids) == 30 for o in outs)
    assert small.stats()["kv_blocks_in_use"] == 0
    assert sorted(small.engine.block_manager.free_rows) == list(range(8))
    # Sequences that were never preempted are the h2o run without pressure.
    roomy = _h2o(max_model_len=128, kv_budget=24, recent_window=8)
    ref = roomy.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
    assert outs[0].outputs[0].token_ids == ref[0].outputs[0].token_ids
