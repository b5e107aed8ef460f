"""Multi-step decoding (``num_scheduler_steps``) gives the same outputs as one step per schedule."""

from contextlib import contextmanager

import pytest

from engine import LLM, EngineError, SamplingParams

from .conftest import PROMPTS

MIXED = [
    SamplingParams(temperature=0, max_tokens=13),
    SamplingParams(temperature=0.8, seed=3, max_tokens=21),
    SamplingParams(temperature=0.7, top_p=0.9, top_k=40, seed=5, max_tokens=9, stop=[","]),
    SamplingParams(temperature=1.0, min_p=0.05, n=3, seed=11, max_tokens=17),
    SamplingParams(temperature=0, max_tokens=30, stop=["\n\n"]),
    SamplingParams(temperature=0.9, seed=8, max_tokens=25, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=6, logprobs=2),
    SamplingParams(temperature=0.6, seed=2, max_tokens=40, stop_token_ids=[13]),
]


@contextmanager
def scheduler_steps(llm, steps):
    config = llm.engine.config
    before = config.num_scheduler_steps
    config.num_scheduler_steps = steps
    try:
        yield llm
    finally:
        config.num_scheduler_steps = before


def outputs(llm, prompts, params):
    return [
        [(c.token_ids, c.text, c.finish_reason, round(c.cumulative_logprob, 3)) for c in o.outputs]
        for o in llm.generate(prompts, params)
    ]


def test_mixed_requests_match_single_steps(llm):
    before = llm.stats()
    single = outputs(llm, PROMPTS, MIXED)
    middle = llm.stats()
    with scheduler_steps(llm, 5):
        multi = outputs(llm, PROMPTS, MIXED)
    after = llm.stats()
    assert multi == single
    assert middle["schedules"] - before["schedules"] == middle["steps"] - before["steps"]
    # Multi-step rounds ran: under half as many schedules as model steps, and some requests stopped early.
    assert after["schedules"] - middle["schedules"] < (after["steps"] - middle["steps"]) / 2
    assert any(len(c[0]) < p.max_tokens for o, p in zip(single, MIXED, strict=True) for c in o)


def test_generated_blocks_enter_the_prefix_cache(llm):
    prompt = PROMPTS[2]
    params = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
    with scheduler_steps(llm, 8):
        first = llm.generate(prompt, params)[0]
        again = llm.generate(first.prompt_token_ids + first.outputs[0].token_ids, SamplingParams(max_tokens=1))[0]
    total = len(first.prompt_token_ids) + 48
    block = llm.config.block_size
    # Every full block of prompt + output, except the one holding the last token, is served from the cache.
    assert again.num_cached_tokens == (total - 1) // block * block


def test_tight_memory_and_preemption_match(llm):
    small = LLM(
        "smollm2-135m",
        device="cpu",
        max_model_len=64,
        kv_cache_memory=10 * 737280,
        max_num_seqs=8,
        num_scheduler_steps=6,
    )
    params = SamplingParams(temperature=0.8, seed=4, max_tokens=24, ignore_eos=True)
    prompts = PROMPTS[:6]
    assert outputs(small, prompts, params) == outputs(llm, prompts, params)
    stats = small.stats()
    assert stats["preemptions"] > 0
    assert stats["schedules"] < stats["steps"], "no multi-step round ran beside the preemptions"


@pytest.mark.parametrize("steps", [0, -2, 1.5, True, "8"])
def test_invalid_scheduler_steps(steps):
    with pytest.raises(EngineError, match="num_scheduler_steps"):
        LLM("smollm2-135m", num_scheduler_steps=steps)
