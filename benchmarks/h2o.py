"""H2O KV eviction (``kv_policy="h2o"``) vs the full KV cache, in one run: quality cost and memory saved.

Data: SuperGLUE BoolQ validation (../shared/data/superglue/BoolQ/val.jsonl), real Wikipedia passages.

1. Perplexity, streaming: each text (consecutive BoolQ passages joined until ``--text-tokens`` tokens) is
   prefilled for its first 32 tokens, then every later true token goes through a decode step
   (``LLM.stream_logprobs``), so the h2o cache evicts exactly as during generation. Budgets are fractions of the
   text length; ``recent_window`` is half the budget (the H2O paper's split). A "local" row keeps only the
   recent window (``recent_window = kv_budget - 1``: one heavy-hitter slot), the paper's baseline.
2. Greedy answers: BoolQ passage + question prompts, greedy ``--max-tokens`` tokens under the full cache and
   under h2o at budgets that are fractions of the median prompt length (the prompt is compacted after its
   prefill). Reported: position-wise identical tokens, tokens until the first divergence, identical yes/no
   answers, and BoolQ accuracy of the answer word (the first "yes"/"no" word of the completion; neither: wrong).
3. Memory: KV blocks (and bytes) held at the end of each step, peak over the run, per sequence; the h2o state
   (scores, positions) is reported too.

    python benchmarks/h2o.py [--device cpu|cuda] [--json OUT] [--texts 4] [--text-tokens 512] [--qa 16]
"""

import argparse
import functools
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.llm  # noqa: E402
from engine import LLM, SamplingParams  # noqa: E402

# Every configuration builds its own LLM; read and dequantize the model file once (weights are copied into each
# model, so sharing the loaded dict is safe).
engine.llm.load_model_files = functools.lru_cache(maxsize=2)(engine.llm.load_model_files)

BOOLQ = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "superglue" / "BoolQ" / "val.jsonl"
PREFILL = 32


def load_boolq() -> list[dict]:
    with open(BOOLQ) as f:
        return [json.loads(line) for line in f]


def make_llm(args, max_len: int, **policy) -> LLM:
    llm = LLM(
        args.model,
        device=args.device,
        max_model_len=max_len,
        kv_cache_memory=args.kv_memory << 20,
        max_num_seqs=64,
        **policy,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    return llm


class StepMeter:
    """KV blocks in use after every engine step (the steady state, after h2o compaction) and inside steps."""

    def __init__(self, llm: LLM) -> None:
        self.llm, self.after = llm, 0
        engine = llm.engine
        engine.block_manager.reset_peak()
        inner = engine.step

        def step():
            inner()
            self.after = max(self.after, engine.block_manager.num_used_blocks)

        engine.step = step
        self.restore = lambda: setattr(engine, "step", inner)

    def result(self, num_seqs: int) -> dict:
        self.restore()
        bm, block = self.llm.engine.block_manager, self.llm.engine.kv_block_bytes
        state = self.llm.engine.runner.h2o
        return {
            "peak_blocks_between_steps": self.after,
            "peak_blocks_within_steps": bm.peak_used,
            "kv_bytes_per_seq": self.after * block / num_seqs,
            "h2o_state_bytes_per_seq": state.nbytes() / state.score.shape[1] if state is not None else 0,
        }


def texts_for_perplexity(tok, rows: list[dict], count: int, length: int) -> list[list[int]]:
    """``count`` texts of ``length`` tokens, each consecutive passages (disjoint across texts)."""
    texts, i = [], 0
    while len(texts) < count:
        ids: list[int] = []
        while len(ids) < length:
            ids += tok.encode(rows[i]["passage"] + "\n\n")
            i += 1
        texts.append(ids[:length])
    return texts


def perplexity(args, texts: list[list[int]], policy: dict) -> dict:
    llm = make_llm(args, len(texts[0]), **policy)
    meter = StepMeter(llm)
    start = time.perf_counter()
    lps = llm.stream_logprobs(texts, prefill=PREFILL)
    wall = time.perf_counter() - start
    flat = [x for t in lps for x in t]
    out = {"ppl": math.exp(-sum(flat) / len(flat)), "tokens": len(flat), "wall_s": round(wall, 1)}
    out.update(meter.result(len(texts)))
    del llm
    return out


def qa_prompts(tok, rows: list[dict], count: int, lo: int, hi: int) -> list[tuple[list[int], bool]]:
    picked = []
    for r in rows[2000:]:
        text = f"{r['passage']}\nQuestion: {r['question']}?\nAnswer (yes or no):"
        ids = tok.encode(text)
        if lo <= len(ids) <= hi:
            picked.append((ids, r["label"] in (True, "true")))
        if len(picked) == count:
            break
    return picked


def answer_word(text: str) -> str:
    """The first "yes" or "no" word of a completion ("" if neither occurs)."""
    hit = re.search(r"\b(yes|no)\b", text.lower())
    return hit.group(1) if hit else ""


def greedy(args, prompts, max_len: int, policy: dict) -> tuple[list[list[int]], list[str], dict]:
    llm = make_llm(args, max_len, **policy)
    meter = StepMeter(llm)
    start = time.perf_counter()
    outs = llm.generate([p for p, _ in prompts], SamplingParams(temperature=0, max_tokens=args.max_tokens))
    wall = time.perf_counter() - start
    stats = meter.result(len(prompts))
    stats["wall_s"] = round(wall, 1)
    del llm
    return [o.outputs[0].token_ids for o in outs], [o.outputs[0].text for o in outs], stats


def agreement(ref: list[list[int]], ours: list[list[int]], max_tokens: int) -> dict:
    same, prefix = 0, 0
    for a, b in zip(ref, ours, strict=True):
        a, b = a + [-1] * (max_tokens - len(a)), b + [-2] * (max_tokens - len(b))  # early stops never match
        same += sum(x == y for x, y in zip(a, b, strict=True))
        k = 0
        while k < max_tokens and a[k] == b[k]:
            k += 1
        prefix += k
    return {"token_agreement": same / (len(ref) * max_tokens), "mean_prefix_agreement": prefix / len(ref)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--texts", type=int, default=4, help="perplexity texts")
    ap.add_argument("--text-tokens", type=int, default=512, help="tokens per perplexity text")
    ap.add_argument("--fractions", default="0.25,0.5", help="h2o budgets as fractions of the text/prompt length")
    ap.add_argument("--qa", type=int, default=16, help="BoolQ prompts for the greedy-answer comparison")
    ap.add_argument("--qa-len", default="150,400", help="token-length range of the BoolQ prompts")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--kv-memory", type=int, default=512, help="KV pool in MiB")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: the engine's default)")
    args = ap.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    rows = load_boolq()
    start = time.perf_counter()
    probe = make_llm(args, 64)
    tok = probe.tokenizer
    del probe

    texts = texts_for_perplexity(tok, rows, args.texts, args.text_tokens)
    ppl = {"full": perplexity(args, texts, {})}
    print(f"perplexity, {args.texts} texts x {args.text_tokens} tokens: full {ppl['full']['ppl']:.3f}", flush=True)
    for f in fractions:
        b = int(f * args.text_tokens)
        for name, recent in ((f"h2o@{f:g}", b // 2), (f"local@{f:g}", b - 1)):
            ppl[name] = perplexity(args, texts, {"kv_policy": "h2o", "kv_budget": b, "recent_window": recent})
            ppl[name]["kv_budget"], ppl[name]["recent_window"] = b, recent
            print(
                f"  {name} (budget {b}, recent {recent}): ppl {ppl[name]['ppl']:.3f}, "
                f"KV bytes/seq {ppl[name]['kv_bytes_per_seq']:.0f} vs {ppl['full']['kv_bytes_per_seq']:.0f}",
                flush=True,
            )

    lo, hi = (int(x) for x in args.qa_len.split(","))
    prompts = qa_prompts(tok, rows, args.qa, lo, hi)
    lens = sorted(len(p) for p, _ in prompts)
    median = lens[len(lens) // 2]
    max_len = hi + args.max_tokens + 1
    ref_ids, ref_text, ref_mem = greedy(args, prompts, max_len, {})
    gold = [y for _, y in prompts]

    def accuracy(texts: list[str]) -> float:
        return sum(answer_word(t) == ("yes" if y else "no") for t, y in zip(texts, gold, strict=True)) / len(gold)

    qa = {"full": {"boolq_accuracy": accuracy(ref_text), **ref_mem}}
    print(
        f"greedy answers, {len(prompts)} BoolQ prompts ({lens[0]}-{lens[-1]} tokens, median {median}): "
        f"full accuracy {qa['full']['boolq_accuracy']:.3f}",
        flush=True,
    )
    for f in fractions:
        b = max(int(f * median), 2)
        ids, text, mem = greedy(args, prompts, max_len, {"kv_policy": "h2o", "kv_budget": b})
        same_answer = sum(answer_word(a) == answer_word(c) for a, c in zip(ref_text, text, strict=True))
        qa[f"h2o@{f:g}"] = {
            "kv_budget": b,
            "recent_window": b // 2,
            **agreement(ref_ids, ids, args.max_tokens),
            "same_answer_word": same_answer / len(prompts),
            "boolq_accuracy": accuracy(text),
            **mem,
        }
        r = qa[f"h2o@{f:g}"]
        print(
            f"  h2o@{f:g} (budget {b}): tokens identical {r['token_agreement']:.3f}, prefix "
            f"{r['mean_prefix_agreement']:.1f}/{args.max_tokens}, same answer {r['same_answer_word']:.3f}, "
            f"accuracy {r['boolq_accuracy']:.3f}, KV bytes/seq {r['kv_bytes_per_seq']:.0f} vs "
            f"{qa['full']['kv_bytes_per_seq']:.0f}",
            flush=True,
        )

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "args": vars(args),
        "perplexity": ppl,
        "greedy_answers": qa,
        "total_s": round(time.perf_counter() - start, 1),
    }
    print(f"total {result['total_s']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
