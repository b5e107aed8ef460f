"""Our CPU engine vs Hugging Face transformers on the default model, in one run.

Workloads (issue 3): (1) label scoring: prompts sharing an instruction+demos prefix, each with its own input,
2-4 choices of 1-3 tokens; (2) sampling n=8 at temperature 0.8; (3) greedy decoding. Prints tokens/s, the
speed ratio, peak RSS and our prefix-cache hit rate.

    python benchmarks/engine_cpu.py            # full sizes
    python benchmarks/engine_cpu.py --quick    # smaller sizes, same shapes
    python benchmarks/engine_cpu.py --only sampling,greedy   # a subset of the workloads
"""

import argparse
import os
import platform
import random
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine import LLM, SamplingParams  # noqa: E402
from engine.loader import resolve_model_path  # noqa: E402

WORDS = (
    "the a service was slow food cold staff friendly price fair room clean noisy view great terrible movie "
    "plot actors boring brilliant ending package arrived late broken quality excellent support helpful "
    "refund never again would recommend battery lasts long screen bright app crashes often update fixed bug "
    "delivery fast"
).split()
CHOICE_SETS = [
    [" positive", " negative"],
    [" yes", " no", " not sure"],
    [" sports", " politics", " science", " business news"],
    [" good", " bad", " very good"],
]
PREFIX = (
    "You are a careful annotator. Read the customer review and answer the question with one of the allowed "
    "labels. Be strict and consistent.\nReview: The food was cold and the staff ignored us.\n"
    "Answer: negative\n"
    "Review: Fast delivery and the screen is bright and sharp.\nAnswer: positive\n"
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def review(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def hf_model(path: str):
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = {k: v for k, v in load_gguf_checkpoint(path, return_tensors=False)["config"].items() if k[0] != "_"}
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    model.load_state_dict(
        load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"], strict=False
    )
    model.tie_weights()
    return model.eval()


@torch.inference_mode()
def hf_score(model, items: list[tuple[list[int], list[list[int]]]], batch_size: int) -> list[list[float]]:
    """lm-eval-harness style: one forward per (prompt + choice) row, right-padded batches."""
    rows = [(i, k, p + c, len(p), c) for i, (p, cs) in enumerate(items) for k, c in enumerate(cs)]
    out = [[0.0] * len(cs) for _, cs in items]
    for b in range(0, len(rows), batch_size):
        chunk = rows[b : b + batch_size]
        width = max(len(r[2]) for r in chunk)
        ids = torch.tensor([r[2] + [0] * (width - len(r[2])) for r in chunk])
        mask = torch.tensor([[1] * len(r[2]) + [0] * (width - len(r[2])) for r in chunk])
        lp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for j, (i, k, _, plen, c) in enumerate(chunk):
            pos = torch.arange(plen - 1, plen - 1 + len(c))
            out[i][k] = float(lp[j, pos, torch.tensor(c)].sum())
    return out


@torch.inference_mode()
def hf_generate(model, prompts: list[list[int]], batch_size: int, **kwargs) -> int:
    """Left-padded batched ``generate``; returns the number of new tokens produced."""
    total = 0
    for b in range(0, len(prompts), batch_size):
        chunk = prompts[b : b + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[2] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        out = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=2, **kwargs)
        total += out[:, width:].numel()
    return total


def hit_rate(before: dict, after: dict) -> float:
    """Share of the prompt tokens seen between two ``LLM.stats()`` that the prefix cache (or a shared n > 1
    prompt) served."""
    cached = after["cached_tokens"] - before["cached_tokens"]
    return cached / max(1, cached + after["prefill_tokens"] - before["prefill_tokens"])


def line(name: str, ours_tps: float, peer_tps: float, target: float, extra: str = "") -> str:
    ratio = ours_tps / peer_tps
    ok = "meets" if ratio >= target else "below"
    return (
        f"{name:<10} ours {ours_tps:9.1f} tok/s | transformers {peer_tps:9.1f} tok/s | ratio {ratio:5.2f}x "
        f"(target {target:.0f}x, {ok}){extra}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="128 scoring prompts, 8x8 samples, 16 greedy prompts"
    )
    ap.add_argument(
        "--only",
        default="scoring,sampling,greedy",
        help="comma-separated workloads to run (scoring, sampling, greedy); default all",
    )
    args = ap.parse_args()
    only = set(args.only.split(","))
    if not only or only - {"scoring", "sampling", "greedy"}:
        ap.error(f"--only takes scoring, sampling, greedy; got {args.only!r}")
    n_score, n_sample, n_greedy = (128, 8, 16) if args.quick else (512, 32, 64)
    rng = random.Random(0)
    torch.manual_seed(0)
    print(
        f"# engine_cpu  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
        f"{platform.processor() or platform.machine()}"
        f"  torch threads {torch.get_num_threads()}  cores {os.cpu_count()}  quick={args.quick}"
        f"  workloads {','.join(w for w in ('scoring', 'sampling', 'greedy') if w in only)}"
    )

    t = time.perf_counter()
    llm = LLM("smollm2-135m", max_model_len=1024, max_num_seqs=256, kv_cache_memory=2 << 30)
    print(f"ours: model load {time.perf_counter() - t:.1f}s")
    tok = llm.tokenizer
    score_prompts = [
        PREFIX + "Review: " + review(rng, 45) + "\nQuestion: what is the label?\nAnswer:"
        for _ in range(n_score)
    ]
    score_choices = [CHOICE_SETS[i % len(CHOICE_SETS)] for i in range(n_score)]
    gen_prompts = [
        f"Write a short story about {review(rng, 6)}. Story:" for _ in range(max(n_sample, n_greedy))
    ]
    prompt_ids = [tok.encode(p) for p in score_prompts]
    choice_ids = [[tok.tokenizer.encode(c, add_special_tokens=False).ids for c in cs] for cs in score_choices]
    score_tokens = sum(
        len(p) * len(cs) + sum(map(len, cs)) for p, cs in zip(prompt_ids, choice_ids, strict=False)
    )
    print(
        f"scoring: {n_score} prompts, mean prompt {sum(map(len, prompt_ids)) / n_score:.0f} tokens "
        f"(shared prefix {len(tok.encode(PREFIX))}), {sum(map(len, choice_ids))} choices"
    )

    llm.generate(gen_prompts[:2], SamplingParams(temperature=0, max_tokens=4))
    ours: dict[str, float] = {}
    if "scoring" in only:
        s0 = llm.stats()
        t = time.perf_counter()
        ours_scores = llm.score(score_prompts, score_choices)
        ours["scoring"] = time.perf_counter() - t
        score_hit = hit_rate(s0, llm.stats())
        print(f"ours: score {ours['scoring']:.1f}s, prefix-cache hit rate {score_hit:.1%}", flush=True)
    if "sampling" in only:
        s0 = llm.stats()
        t = time.perf_counter()
        ours_samples = llm.generate(
            gen_prompts[:n_sample], SamplingParams(n=8, temperature=0.8, max_tokens=64, ignore_eos=True, seed=0)
        )
        ours["sampling"] = time.perf_counter() - t
        sample_tokens = sum(len(o.token_ids) for r in ours_samples for o in r.outputs)
        print(
            f"ours: sample {ours['sampling']:.1f}s, prompt tokens served from shared blocks "
            f"{hit_rate(s0, llm.stats()):.1%}",
            flush=True,
        )
    if "greedy" in only:
        t = time.perf_counter()
        ours_greedy = llm.generate(
            gen_prompts[:n_greedy], SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
        )
        ours["greedy"] = time.perf_counter() - t
        greedy_tokens = sum(len(r.outputs[0].token_ids) for r in ours_greedy)
        print(f"ours: greedy {ours['greedy']:.1f}s", flush=True)
    print(f"ours: peak RSS {peak_rss_mb():.0f} MB, stats {llm.stats()}")
    del llm

    t = time.perf_counter()
    model = hf_model(resolve_model_path("smollm2-135m"))
    print(f"transformers: model load {time.perf_counter() - t:.1f}s")
    peer: dict[str, float] = {}
    results = []
    if "scoring" in only:
        t = time.perf_counter()
        peer_scores = hf_score(model, list(zip(prompt_ids, choice_ids, strict=False)), batch_size=32)
        peer["scoring"] = time.perf_counter() - t
        print(f"transformers: score {peer['scoring']:.1f}s", flush=True)
        same = sum(
            max(range(len(p)), key=p.__getitem__) == o.best
            for p, o in zip(peer_scores, ours_scores, strict=False)
        )
        max_diff = max(
            abs(a - c.logprob)
            for p, o in zip(peer_scores, ours_scores, strict=False)
            for a, c in zip(p, o.choices, strict=False)
        )
        results.append(
            line(
                "scoring",
                score_tokens / ours["scoring"],
                score_tokens / peer["scoring"],
                5,
                f"; argmax identical {same}/{n_score}, max |logprob diff| {max_diff:.2e}",
            )
        )
    gen_ids = [tok.encode(p) for p in gen_prompts]
    if "sampling" in only:
        t = time.perf_counter()
        peer_sample_tokens = hf_generate(
            model,
            gen_ids[:n_sample],
            32,
            do_sample=True,
            temperature=0.8,
            top_k=0,
            top_p=1.0,
            max_new_tokens=64,
            min_new_tokens=64,
            num_return_sequences=8,
        )
        peer["sampling"] = time.perf_counter() - t
        print(f"transformers: sample {peer['sampling']:.1f}s", flush=True)
        results.append(
            line("sampling", sample_tokens / ours["sampling"], peer_sample_tokens / peer["sampling"], 3)
        )
    if "greedy" in only:
        t = time.perf_counter()
        peer_greedy_tokens = hf_generate(
            model, gen_ids[:n_greedy], 64, do_sample=False, max_new_tokens=128, min_new_tokens=128
        )
        peer["greedy"] = time.perf_counter() - t
        print(f"transformers: greedy {peer['greedy']:.1f}s", flush=True)
        results.append(line("greedy", greedy_tokens / ours["greedy"], peer_greedy_tokens / peer["greedy"], 2))
    print(f"transformers: peak RSS (whole process) {peak_rss_mb():.0f} MB")
    for r in results:
        print(r)


if __name__ == "__main__":
    main()
