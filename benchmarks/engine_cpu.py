"""Our CPU engine vs Hugging Face transformers on the default model, in one run.

Workloads (issue 3): (1) label scoring: prompts sharing an instruction+demos prefix, each with its own input,
2-4 choices of 1-3 tokens; (2) sampling n=8 at temperature 0.8; (3) greedy decoding. Prints tokens/s, the
speed ratio, peak RSS and our prefix-cache hit rate.

    python benchmarks/engine_cpu.py            # full sizes
    python benchmarks/engine_cpu.py --quick    # smaller sizes, same shapes
    python benchmarks/engine_cpu.py --only sampling,greedy   # a subset of the workloads
    python benchmarks/engine_cpu.py --quantization int8      # ours with int8 weights

With ``--quantization int8`` ours runs ``LLM(quantization="int8")`` and the peer runs twice: as shipped (fp32, the
accuracy reference: scoring argmax and greedy tokens are compared against it) and with torch's dynamic int8
quantization (per-channel weights) applied to its ``nn.Linear`` layers, so both speed ratios are printed.
"""

import argparse
import os
import platform
import random
import resource
import sys
import time
import warnings

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
def hf_generate(model, prompts: list[list[int]], batch_size: int, **kwargs) -> list[list[int]]:
    """Left-padded batched ``generate``; returns the new tokens of each returned sequence."""
    new: list[list[int]] = []
    for b in range(0, len(prompts), batch_size):
        chunk = prompts[b : b + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[2] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        out = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=2, **kwargs)
        new.extend(out[:, width:].tolist())
    return new


def hf_int8(model):
    """The peer with torch's dynamic int8 quantization (per-channel weights) on every ``nn.Linear``, in place.

    torch 2.13 deprecates ``torch.ao.quantization`` and qint8 tensor creation; only those warnings are silenced."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantized tensor).*deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\.quantization")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)


def run_peer(model, tag: str, only: set[str], score_items, gen_ids, n_sample: int, n_greedy: int) -> dict:
    """Time the peer on the selected workloads; returns seconds per workload plus its outputs."""
    peer: dict = {}
    if "scoring" in only:
        t = time.perf_counter()
        peer["scores"] = hf_score(model, score_items, batch_size=32)
        peer["scoring"] = time.perf_counter() - t
        print(f"{tag}: score {peer['scoring']:.1f}s", flush=True)
    if "sampling" in only:
        t = time.perf_counter()
        out = hf_generate(
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
        peer["sample_tokens"] = sum(map(len, out))
        print(f"{tag}: sample {peer['sampling']:.1f}s", flush=True)
    if "greedy" in only:
        t = time.perf_counter()
        peer["greedy_ids"] = hf_generate(
            model, gen_ids[:n_greedy], 64, do_sample=False, max_new_tokens=128, min_new_tokens=128
        )
        peer["greedy"] = time.perf_counter() - t
        print(f"{tag}: greedy {peer['greedy']:.1f}s", flush=True)
    return peer


def common_prefix(a: list[int], b: list[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def hit_rate(before: dict, after: dict) -> float:
    """Share of the prompt tokens seen between two ``LLM.stats()`` that the prefix cache (or a shared n > 1
    prompt) served."""
    cached = after["cached_tokens"] - before["cached_tokens"]
    return cached / max(1, cached + after["prefill_tokens"] - before["prefill_tokens"])


def line(name: str, ours_tps: float, peer_tps: float, target: float, extra: str = "", peer: str = "") -> str:
    ratio = ours_tps / peer_tps
    ok = "meets" if ratio >= target else "below"
    return (
        f"{name:<10} ours {ours_tps:9.1f} tok/s | transformers{peer} {peer_tps:9.1f} tok/s | ratio {ratio:5.2f}x "
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
    ap.add_argument(
        "--quantization",
        choices=["int8"],
        default=None,
        help="run ours with LLM(quantization=...); the peer then also runs with dynamic int8 on its nn.Linear",
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
        f"  quantization {args.quantization}"
        f"  workloads {','.join(w for w in ('scoring', 'sampling', 'greedy') if w in only)}"
    )

    t = time.perf_counter()
    llm = LLM(
        "smollm2-135m",
        max_model_len=1024,
        max_num_seqs=256,
        kv_cache_memory=2 << 30,
        quantization=args.quantization,
    )
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
    gen_ids = [tok.encode(p) for p in gen_prompts]
    score_items = list(zip(prompt_ids, choice_ids, strict=False))
    peers = [("", run_peer(model, "transformers", only, score_items, gen_ids, n_sample, n_greedy))]
    if args.quantization:
        hf_int8(model)
        peers.append((" int8", run_peer(model, "transformers int8", only, score_items, gen_ids, n_sample, n_greedy)))
    print(f"transformers: peak RSS (whole process) {peak_rss_mb():.0f} MB")
    ref = peers[0][1]  # the fp32 peer: the accuracy reference
    for tag, peer in peers:
        if "scoring" in only:
            same = sum(
                max(range(len(p)), key=p.__getitem__) == o.best
                for p, o in zip(ref["scores"], ours_scores, strict=False)
            )
            max_diff = max(
                abs(a - c.logprob)
                for p, o in zip(ref["scores"], ours_scores, strict=False)
                for a, c in zip(p, o.choices, strict=False)
            )
            extra = f"; argmax vs fp32 transformers identical {same}/{n_score}, max |logprob diff| {max_diff:.2e}"
            print(line("scoring", score_tokens / ours["scoring"], score_tokens / peer["scoring"], 5, extra, tag))
        if "sampling" in only:
            ours_tps, peer_tps = sample_tokens / ours["sampling"], peer["sample_tokens"] / peer["sampling"]
            print(line("sampling", ours_tps, peer_tps, 3, peer=tag))
        if "greedy" in only:
            ours_ids = [r.outputs[0].token_ids for r in ours_greedy]
            prefix = [common_prefix(a, b) for a, b in zip(ours_ids, ref["greedy_ids"], strict=False)]
            same = sum(k == 128 for k in prefix)
            extra = (
                f"; vs fp32 transformers: {same}/{n_greedy} identical, mean common prefix "
                f"{sum(prefix) / len(prefix):.0f}/128 tokens"
            )
            if peer is not ref:
                own = [common_prefix(a, b) for a, b in zip(peer["greedy_ids"], ref["greedy_ids"], strict=False)]
                extra += (
                    f"; the int8 peer vs fp32: {sum(k == 128 for k in own)}/{n_greedy} identical, mean common "
                    f"prefix {sum(own) / len(own):.0f}/128"
                )
            peer_tokens = sum(map(len, peer["greedy_ids"]))
            print(line("greedy", greedy_tokens / ours["greedy"], peer_tokens / peer["greedy"], 2, extra, tag))


if __name__ == "__main__":
    main()
