"""``LLM(quantization="int8")`` against the fp32 engine on the default model: log-probs, greedy text, scores."""

import pytest
import torch

from engine import LLM, SamplingParams
from engine.errors import EngineError
from engine.llm import _check_quantization
from engine.models.quantize import Int8Linear

from .conftest import PROMPTS, recorded_logits

LABEL_PROMPTS = [
    "Review: The food was cold and the staff ignored us.\nSentiment:",
    "Review: Fast delivery, and the screen is bright and sharp.\nSentiment:",
    "Review: The battery died after two days and support never answered.\nSentiment:",
    "Review: Brilliant plot, great actors, I would watch it again.\nSentiment:",
    "Q: Is Paris the capital of France?\nA:",
    "Q: Is the sun colder than ice?\nA:",
]
LABELS = [[" positive", " negative"]] * 4 + [[" yes", " no"]] * 2


@pytest.fixture(scope="session")
def llm_int8(llm):
    """A second engine with int8 weights (small cache; loaded once per session, after the fp32 one)."""
    return LLM(
        "smollm2-135m",
        device="cpu",
        max_model_len=256,
        kv_cache_memory=32 << 20,
        max_num_seqs=64,
        quantization="int8",
    )


def teacher_forced_logprobs(llm: LLM, prompt_ids: list[int], continuation: list[int]) -> torch.Tensor:
    """Log-softmax of the next-token logits after ``prompt_ids + continuation[:k]`` for every k, one batch."""
    with recorded_logits(llm) as recorded:
        prefixes = [prompt_ids + continuation[:k] for k in range(len(continuation))]
        llm.generate(prefixes, SamplingParams(temperature=0, max_tokens=1))
    logits = torch.cat(recorded)
    assert logits.shape[0] == len(continuation)
    return torch.log_softmax(logits, dim=-1)


def test_int8_replaces_every_linear_layer(llm_int8):
    model = llm_int8.engine.runner.model
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 4 * len(model.layers) + 1
    assert model.embed_tokens.weight.dtype == torch.float32


def test_int8_logprobs_close_to_fp32(llm, llm_int8):
    """32 teacher-forced steps on 4 prompts: top-1 agreement, the chosen token's log-prob, the whole vocabulary.

    Measured when written: top-1 agreement 119/128, max |diff| over the vocabulary 3.5, mean |diff| over the
    vocabulary 0.39 (dominated by the far tail) and 0.09 for the greedy token."""
    sp = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    agree = total = 0
    chosen, worst, mean = [], 0.0, []
    for prompt in PROMPTS[:4]:
        out = llm.generate(prompt, sp)[0]
        ids, cont = out.prompt_token_ids, out.outputs[0].token_ids
        ref = teacher_forced_logprobs(llm, ids, cont)
        ours = teacher_forced_logprobs(llm_int8, ids, cont)
        diff = (ours - ref).abs()
        worst = max(worst, diff.max().item())
        mean.append(diff.mean().item())
        chosen.append(diff.gather(1, torch.tensor(cont)[:, None]).mean().item())
        agree += int((ours.argmax(-1) == ref.argmax(-1)).sum())
        total += len(cont)
    print(
        f"int8 vs fp32: top-1 {agree}/{total}, max {worst:.2f}, mean {sum(mean) / len(mean):.3f}, "
        f"chosen {sum(chosen) / len(chosen):.3f}"
    )
    assert agree >= 0.85 * total
    assert sum(chosen) / len(chosen) < 0.2
    assert sum(mean) / len(mean) < 0.6
    assert worst < 6.0


def test_int8_greedy_text_starts_like_fp32(llm, llm_int8):
    """Free-running greedy text drifts once one token differs, so only the start is checked. Measured when
    written: common prefixes of 12 tokens [12, 12, 5, 9, 8, 3, 4, 2] over the 8 prompts (2/8 identical)."""
    sp = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    ref = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, sp)]
    ours = [o.outputs[0].token_ids for o in llm_int8.generate(PROMPTS, sp)]
    common = []
    for a, b in zip(ours, ref, strict=True):
        k = 0
        while k < len(a) and a[k] == b[k]:
            k += 1
        common.append(k)
    print(f"int8 greedy common prefix with fp32 (of 12): {common}")
    assert all(k >= 1 for k in common)
    assert sum(common) >= 0.4 * 12 * len(PROMPTS)


def test_int8_score_argmax_matches_fp32(llm, llm_int8):
    ref = llm.score(LABEL_PROMPTS, LABELS)
    ours = llm_int8.score(LABEL_PROMPTS, LABELS)
    assert [o.best for o in ours] == [r.best for r in ref]
    diff = max(
        abs(a.logprob - b.logprob)
        for o, r in zip(ours, ref, strict=True)
        for a, b in zip(o.choices, r.choices, strict=True)
    )
    assert diff < 1.0


def test_int8_rows_do_not_depend_on_their_batch(llm_int8):
    """Per-row activation scales: a prompt's greedy tokens are the same alone and batched with others."""
    sp = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    batched = [o.outputs[0].token_ids for o in llm_int8.generate(PROMPTS, sp)]
    for prompt, tokens in zip(PROMPTS[:3], batched, strict=False):
        assert llm_int8.generate(prompt, sp)[0].outputs[0].token_ids == tokens


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantization": "int4"}, "unknown quantization 'int4'"),
        ({"quantization": "int8", "dtype": "bfloat16"}, "needs dtype='float32'"),
    ],
)
def test_bad_quantization_settings_are_clear_errors(kwargs, message):
    with pytest.raises(EngineError, match=message):
        LLM("smollm2-135m", device="cpu", max_model_len=64, kv_cache_memory=8 << 20, **kwargs)


def test_int8_on_cuda_is_a_clear_error():
    """Checked before any device is touched, so it runs without a GPU too."""
    with pytest.raises(EngineError, match="CPU only.*use device='cpu' or quantization=None"):
        _check_quantization("int8", torch.device("cuda", 0), torch.float32)
