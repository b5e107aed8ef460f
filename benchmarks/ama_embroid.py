"""AMA and Embroid on real tasks with our engine: zero-shot, few-shot, each chain, majority vote, AMA + label model,
AMA + Embroid + label model, per task, in one process.

    python benchmarks/ama_embroid.py [--tasks DIR [DIR ...]] [--names NAME ...] [--limit N] [--chains P] [--json OUT]
    python benchmarks/ama_embroid.py --timing 1000          # a 5-chain AMA run over 1,000 SST-2 test rows, timed

Without --tasks it runs the built-in set (prompting.tasks.BENCHMARK_TASKS). --tasks takes any folders in
LegalBench layout (train.tsv demos + test.tsv with an `answer` column) and builds their chains from the label set.
Per task the JSON holds zero_shot, few_shot (uncalibrated, as usually reported; *_calibrated too), chains, best_chain
(an oracle: picked with the gold labels), majority_vote, ama (chains + label model with learned dependencies) and
ama_embroid (chains + Embroid votes over MiniLM neighbours, k=10, + label model), each with accuracy and macro_f1,
plus wall_s, tokens_per_example and prefix_cache_hit_rate. Abstains count as wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prompting.ama import AMA, label_votes  # noqa: E402
from prompting.chains import Chain, ChainOutput, run_chain  # noqa: E402
from prompting.tasks import BENCHMARK_TASKS, TaskSpec, get_task, legalbench_task  # noqa: E402

METHODS = ("zero_shot", "few_shot", "best_chain", "majority_vote", "ama", "ama_embroid")


def metrics(pred: np.ndarray, gold: np.ndarray, k: int) -> dict[str, float]:
    """Accuracy and macro-F1 in percent (abstain, -1, is a wrong answer), and the abstain rate."""
    pred = np.asarray(pred)
    gold = np.asarray(gold)
    f1s = []
    for c in range(k):
        tp = np.sum((pred == c) & (gold == c))
        fp = np.sum((pred == c) & (gold != c))
        fn = np.sum((pred != c) & (gold == c))
        if tp + fp + fn > 0:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": round(100 * float(np.mean(pred == gold)), 2),
            "macro_f1": round(100 * float(np.mean(f1s)) if f1s else 0.0, 2),
            "abstain": round(100 * float(np.mean(pred == -1)), 2)}


def majority(votes: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Majority vote over the chains (ties and all-abstain rows broken by the labelmodel's seeded rule)."""
    from labelmodel import MajorityVote

    model = MajorityVote(cardinality=k, seed=seed).fit(votes)
    return np.asarray(model.predict(votes, tie_break="random"), dtype=np.int64)


def embroid_columns(votes: np.ndarray, texts: list[str], k: int, cardinality: int, embedder: Any) -> np.ndarray:
    """Embroid's neighbourhood votes over MiniLM neighbours (k nearest, self excluded)."""
    from prompting.embroid import Embroid
    from prompting.neighbors import nearest_neighbors

    emb = embedder.encode(texts)
    near = nearest_neighbors(emb, min(k, len(texts) - 1))
    return Embroid(k=min(k, len(texts) - 1)).smooth(votes, [near], cardinality=cardinality)


class Meter:
    """Engine token counters between two points."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.start = dict(llm.stats())

    def delta(self) -> dict[str, float]:
        now = self.llm.stats()
        d = {key: now[key] - self.start[key] for key in ("prefill_tokens", "cached_tokens", "generated_tokens")}
        seen = d["prefill_tokens"] + d["cached_tokens"]
        d["prefix_cache_hit_rate"] = round(d["cached_tokens"] / seen, 4) if seen else 0.0
        return d


def run_task(engine: Any, llm: Any, task: TaskSpec, limit: int | None, chains: int, seed: int, embedder: Any,
             log: Any, generative: bool = False) -> dict[str, Any]:
    """Every method on one task."""
    t0 = time.perf_counter()
    meter = Meter(llm)
    train, test = task.load(limit=limit, seed=seed)
    rows = test.to_dict(orient="records")
    gold = test["label"].to_numpy()
    k = task.cardinality
    pool = task.pool(train)

    def single(chain: Chain) -> ChainOutput:
        return run_chain(engine, chain, rows, pool, seed=seed)

    # Baselines run with batch calibration so one pass gives both the usual (raw) and calibrated votes.
    zero = single(Chain("zero_shot", task.zero_shot().steps, calibrate="batch"))
    few = single(Chain("few_shot", task.few_shot().steps, calibrate="batch"))
    log(f"  baselines done ({time.perf_counter() - t0:.0f}s)")
    ama = AMA(task.chains(chains, seed=seed), cardinality=k, seed=seed)
    result = ama.run(engine, rows, pool)
    log(f"  {len(ama.chains)} chains done ({time.perf_counter() - t0:.0f}s, {result.calls} engine calls)")
    out: dict[str, Any] = {
        "task": task.name, "shape": task.shape, "labels": task.labels, "n": len(rows), "n_demo_pool": len(pool),
        "zero_shot": metrics(zero.raw_votes, gold, k),
        "zero_shot_calibrated": metrics(zero.votes, gold, k),
        "few_shot": metrics(few.raw_votes, gold, k),
        "few_shot_calibrated": metrics(few.votes, gold, k),
    }
    out["chains"] = [{"name": c.name, "kind": c.kind, "k": c.steps[-1].template.k, "calibrate": c.calibrate,
                      **metrics(o.votes, gold, k), "uncalibrated": metrics(o.raw_votes, gold, k)}
                     for c, o in zip(ama.chains, result.outputs, strict=True)]
    best = max(out["chains"], key=lambda c: c["accuracy"])
    out["best_chain"] = {"name": best["name"], "accuracy": best["accuracy"], "macro_f1": best["macro_f1"],
                         "oracle": True}
    out["majority_vote"] = metrics(majority(result.votes, k, seed), gold, k)
    preds, _, model = label_votes(result.votes, k, seed=seed)
    out["ama"] = {**metrics(preds, gold, k), "label_model": getattr(model, "chosen_", "?")}
    preds, _, model = label_votes(result.votes, k, dependencies="learn", seed=seed)
    inner = getattr(model, "model_", model)
    out["ama_learned_dependencies"] = {
        **metrics(preds, gold, k), "label_model": getattr(model, "chosen_", "?"),
        "dependencies": [[int(a), int(b)] for a, b in getattr(inner, "dependencies_", [])]}
    try:
        extra = embroid_columns(result.votes, test["text"].astype(str).tolist(), 10, k, embedder)
        preds_e, _, model_e = label_votes(np.concatenate([result.votes, extra], axis=1), k, seed=seed)
        out["ama_embroid"] = {**metrics(preds_e, gold, k), "label_model": getattr(model_e, "chosen_", "?"),
                              "embroid_columns": int(extra.shape[1])}
    except ImportError as err:  # the embroid half is not merged in this checkout
        out["ama_embroid"] = {"accuracy": None, "macro_f1": None, "error": str(err)}
    out["study"] = study(ama.chains, result.outputs, gold, k, seed)
    if generative and {"premise", "hypothesis"} <= set(test.columns):
        out["generative"] = generative_study(engine, task, rows, gold, pool, seed)
        log(f"  generative chains done ({time.perf_counter() - t0:.0f}s)")
    d = meter.delta()
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["tokens_per_example"] = round((d["prefill_tokens"] + d["cached_tokens"] + d["generated_tokens"]) / len(rows), 1)
    out["computed_tokens_per_example"] = round((d["prefill_tokens"] + d["generated_tokens"]) / len(rows), 1)
    out["prefix_cache_hit_rate"] = d["prefix_cache_hit_rate"]
    out["engine_calls_ama"] = result.calls
    return out


def study(chains: list[Chain], outputs: list[ChainOutput], gold: np.ndarray, k: int, seed: int) -> dict[str, Any]:
    """The same chain scores under each calibration, aggregated by majority vote and by the label model with and
    without learned dependencies (no extra engine calls)."""
    out: dict[str, Any] = {}
    for method in ("none", "content_free", "batch"):
        if method == "content_free" and any(o.content_free is None for o in outputs):
            continue
        votes = np.stack([o.recalibrate(method) if o.word_scores is not None else o.votes for o in outputs], axis=1)
        row = {"mean_chain": round(float(np.mean([metrics(votes[:, j], gold, k)["accuracy"]
                                                   for j in range(votes.shape[1])])), 2),
               "majority_vote": metrics(majority(votes, k, seed), gold, k)["accuracy"]}
        for deps in ("learn", None):
            preds, _, model = label_votes(votes, k, dependencies=deps, seed=seed)
            row[f"lm_{'deps' if deps else 'nodeps'}"] = metrics(preds, gold, k)["accuracy"]
        preds, _, _ = label_votes(votes, k, method="dawid_skene", dependencies=None, seed=seed)
        row["dawid_skene"] = metrics(preds, gold, k)["accuracy"]
        out[method] = row
    return out


def generative_study(engine: Any, task: TaskSpec, rows: list[dict[str, Any]], gold: np.ndarray, pool: Any,
                     seed: int) -> dict[str, Any]:
    """AMA's question() -> answer() chain with a generated answer (parsed) and with a scored answer."""
    from prompting.chains import question_answer_chain

    yes_no = [["no", "false"], ["yes", "true"]] if task.cardinality == 2 else [["yes", "true"], ["no", "false"],
                                                                                ["maybe", "neither"]]
    words = [" No", " Yes"] if task.cardinality == 2 else [" Yes", " No", " Maybe"]
    out = {}
    for name, chain in (
        ("question_answer_generated", question_answer_chain("qa_gen", "{{ premise }}", "{{ hypothesis }}",
                                                            verbalizers=yes_no, max_tokens=24)),
        ("question_answer_scored", question_answer_chain("qa_scored", "{{ premise }}", "{{ hypothesis }}",
                                                         choices=words, calibrate="batch", max_tokens=24)),
    ):
        o = run_chain(engine, chain, rows, pool, seed=seed)
        out[name] = {**metrics(o.votes, gold, task.cardinality), "examples": [
            {"question": q, "answer": a} for q, a in zip(o.texts.get("question", [])[:3],
                                                        o.texts.get("answer", [""] * 3)[:3], strict=False)]}
    return out


def timing(llm: Any, n: int, chains: int, seed: int, log: Any) -> dict[str, Any]:
    """A P-chain AMA run over the first n SST-2 test rows, timed end to end (label model included)."""
    task = get_task("sst2")
    train, test = task.load()
    rows = test.head(n).to_dict(orient="records")
    meter = Meter(llm)
    t0 = time.perf_counter()
    ama = AMA(task.chains(chains, seed=seed), cardinality=task.cardinality, seed=seed)
    result = ama.run(llm, rows, task.pool(train))
    preds = ama.aggregate(result.votes)
    wall = time.perf_counter() - t0
    d = meter.delta()
    gold = test.head(n)["label"].to_numpy()
    log(f"timing: {chains} chains x {len(rows)} rows in {wall:.0f}s")
    return {"task": "sst2", "rows": len(rows), "chains": chains, "wall_s": round(wall, 1),
            "engine_calls": result.calls, "accuracy": metrics(preds, gold, 2)["accuracy"],
            "tokens_per_example": round((d["prefill_tokens"] + d["cached_tokens"]) / len(rows), 1),
            "computed_tokens_per_example": round(d["prefill_tokens"] / len(rows), 1),
            "prefix_cache_hit_rate": d["prefix_cache_hit_rate"]}


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over tasks and the issue's targets."""
    done = [r for r in results.values() if "ama" in r]
    if not done:
        return {}
    mean = {m: round(float(np.mean([r[m]["accuracy"] for r in done if r[m].get("accuracy") is not None])), 2)
            for m in (*METHODS, "few_shot_calibrated", "zero_shot_calibrated", "ama_learned_dependencies")
            if any(r[m].get("accuracy") is not None for r in done)}
    wins = sum(r["ama"]["accuracy"] > r["few_shot"]["accuracy"] for r in done)
    mean_f1 = {m: round(float(np.mean([r[m]["macro_f1"] for r in done if r[m].get("macro_f1") is not None])), 2)
               for m in mean}
    wins_f1 = sum(r["ama"]["macro_f1"] > r["few_shot"]["macro_f1"] for r in done)
    return {"tasks": len(done), "mean_accuracy": mean, "mean_macro_f1": mean_f1,
            "ama_beats_few_shot_macro_f1": f"{wins_f1}/{len(done)}",
            "ama_beats_few_shot": f"{wins}/{len(done)}",
            "ama_minus_few_shot": round(mean["ama"] - mean["few_shot"], 2),
            "embroid_minus_ama": round(mean["ama_embroid"] - mean["ama"], 2) if "ama_embroid" in mean else None,
            "label_model_minus_majority": round(mean["ama"] - mean["majority_vote"], 2)}


def table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table of accuracy (macro-F1) per task and method."""
    head = ("| task | n | zero-shot | few-shot | best chain (oracle) | majority vote | AMA + LM | AMA + Embroid + LM "
            "| s |")
    lines = [head, "|" + "---|" * 9]
    for name, r in results.items():
        if "ama" not in r:
            lines.append(f"| {name} | error: {r.get('error')} |")
            continue

        def cell(m: dict[str, Any]) -> str:
            return "-" if m.get("accuracy") is None else f"{m['accuracy']:.1f} ({m['macro_f1']:.1f})"

        lines.append(f"| {name} | {r['n']} | " + " | ".join(cell(r[m]) for m in METHODS) + f" | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", type=Path, help="folders in LegalBench layout (default: built-in set)")
    parser.add_argument("--names", nargs="+", help=f"built-in task names (default: {' '.join(BENCHMARK_TASKS)})")
    parser.add_argument("--limit", type=int, default=200, help="test rows per task (seeded sample; default 200)")
    parser.add_argument("--chains", type=int, default=5, help="chains per task, 3..10 (default 5)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--model", default="smollm2-135m", help="engine model (name, .gguf file or folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine more threads run slower)")
    parser.add_argument("--timing", type=int, metavar="N", help="also time a 5-chain AMA run over N SST-2 rows")
    parser.add_argument("--generative", action="store_true",
                        help="also measure the generative question() -> answer() chain on entailment tasks")
    parser.add_argument("--cache", type=Path, help="response cache (SQLite) so re-runs skip engine calls")
    parser.add_argument("--timing-only", action="store_true", help="run only the --timing measurement")
    args = parser.parse_args(argv)
    if not 3 <= args.chains <= 10:
        parser.error(f"--chains must be 3..10, got {args.chains}")
    logging.basicConfig(level=logging.WARNING)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import torch

    from engine import LLM

    llm = LLM(args.model, max_model_len=2048, kv_cache_memory=768 << 20, max_num_seqs=64)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"model": args.model, "limit": args.limit, "chains": args.chains, "seed": args.seed,
                              "command": "python " + " ".join(sys.argv), "tasks": {}}
    if not args.timing_only:
        from prompting.embedders import SentenceEmbedder

        embedder = SentenceEmbedder()
        if args.tasks:
            specs = [lambda d=d: legalbench_task(d) for d in args.tasks]
        else:
            specs = [lambda n=n: get_task(n) for n in (args.names or BENCHMARK_TASKS)]
        for build in specs:
            task = build()
            log(f"{task.name}: ...")
            engine = llm
            if args.cache:
                from engine.cache import CachedEngine

                engine = CachedEngine(llm, args.cache, backend="local", model="smollm2-135m")
            report["tasks"][task.name] = run_task(engine, llm, task, args.limit, args.chains, args.seed, embedder, log,
                                                 args.generative)
            r = report["tasks"][task.name]
            log(f"{task.name}: few-shot {r['few_shot']['accuracy']} | MV {r['majority_vote']['accuracy']} | "
                f"AMA {r['ama']['accuracy']} | AMA+Embroid {r['ama_embroid']['accuracy']} ({r['wall_s']}s)")
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
        report["summary"] = summary(report["tasks"])
    if args.timing:
        report["timing"] = timing(llm, args.timing, 5, args.seed, log)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if report["tasks"]:
        print(table(report["tasks"]))
        print(json.dumps(report.get("summary", {}), indent=2))
    if "timing" in report:
        print(json.dumps(report["timing"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
