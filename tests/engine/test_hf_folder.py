"""The safetensors-folder loading path, on the default model exported to a HF-style folder."""

import json
import os

import pytest
import torch

from engine import LLM, SamplingParams
from engine.errors import EngineError
from engine.loader import load_model_files, save_hf_folder

from .conftest import PROMPTS


@pytest.fixture(scope="module")
def folder(tmp_path_factory, llm):
    path = tmp_path_factory.mktemp("export") / "smollm2-hf"
    return str(save_hf_folder("smollm2-135m", str(path), dtype=torch.float32))


def test_exported_folder_has_the_hf_files(folder):
    config = json.load(open(f"{folder}/config.json"))
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert os.path.getsize(f"{folder}/{name}") > 0


def test_folder_loads_to_the_same_model(folder, llm):
    loaded = load_model_files(folder)
    gguf = load_model_files("smollm2-135m")
    assert loaded.config == gguf.config
    prompt = PROMPTS[0]
    assert loaded.tokenizer.encode(prompt) == gguf.tokenizer.encode(prompt)
    assert loaded.tokenizer.chat_template == gguf.tokenizer.chat_template
    for name, tensor in gguf.weights.items():
        if name == "lm_head.weight" and gguf.config.tie_word_embeddings:
            continue
        assert torch.equal(loaded.weights[name], tensor), name


def test_folder_engine_generates_what_the_gguf_engine_does(folder, llm):
    engine = LLM(folder, device="cpu", max_model_len=256, kv_cache_memory=64 << 20, max_num_seqs=8)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    ours = engine.generate(PROMPTS[:4], params)
    ref = llm.generate(PROMPTS[:4], params)
    assert [o.outputs[0].token_ids for o in ours] == [o.outputs[0].token_ids for o in ref]
    chat = [{"role": "user", "content": "Name a fruit."}]
    assert engine.tokenizer.apply_chat_template(chat) == llm.tokenizer.apply_chat_template(chat)


def test_transformers_reads_the_exported_folder(folder, llm):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ids = llm.tokenizer.encode(PROMPTS[3])
    assert tok(PROMPTS[3], add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0, -1]
    out = llm.generate(ids, SamplingParams(temperature=0, max_tokens=1, logprobs=5))[0].outputs[0]
    top = ref.log_softmax(-1).topk(5)
    assert out.token_ids[0] == int(top.indices[0])
    assert abs(out.logprobs[0][out.token_ids[0]] - float(top.values[0])) < 2e-3


def test_existing_folder_is_refused(folder):
    with pytest.raises(FileExistsError, match="already exists"):
        save_hf_folder("smollm2-135m", folder)


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(EngineError, match="config.json"):
        LLM(str(tmp_path), device="cpu")
