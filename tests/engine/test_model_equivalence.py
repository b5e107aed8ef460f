"""Our model against transformers' LlamaForCausalLM from the same GGUF: logits and greedy text."""

import torch

from engine import SamplingParams

from .conftest import PROMPTS, recorded_logits


def test_prefill_and_decode_logits_match_transformers(llm, hf_model):
    with recorded_logits(llm) as recorded:
        out = llm.generate(PROMPTS[2], SamplingParams(temperature=0, max_tokens=32, ignore_eos=True))[0]
    ids = out.prompt_token_ids + out.outputs[0].token_ids
    assert len(recorded) == 32
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0]
    p = len(out.prompt_token_ids)
    for step, ours in enumerate(recorded):
        diff = (ours[0] - ref[p - 1 + step]).abs().max().item()
        assert diff < 2e-3, f"step {step}: max abs logit diff {diff}"


def test_greedy_text_matches_transformers_generate(llm, hf_model):
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    outs = llm.generate(PROMPTS, params)
    for prompt, out in zip(PROMPTS, outs, strict=False):
        ids = torch.tensor([out.prompt_token_ids])
        with torch.no_grad():
            ref = hf_model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, pad_token_id=2
            )
        ref_ids = ref[0, ids.shape[1] :].tolist()
        assert out.outputs[0].token_ids == ref_ids, prompt
        assert out.outputs[0].text == llm.tokenizer.decode(ref_ids)
