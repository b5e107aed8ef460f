"""Label-model speed at scale: fit + predict_proba on synthetic matrices with known truth, ours vs Snorkel.

Every (model, shape) runs in a fresh subprocess so peak RSS is that run's own; times are medians of
``--repeats`` runs of fit + predict_proba on the same matrix (data generation is not timed).
Prints one JSON line per run and a table; ``--json OUT`` writes them.
Shapes (issue 2): (1M, 50, 2) ours vs Snorkel's LabelModel; (300k, 15, 1000) and (10M, 100, 2) ours
(Snorkel's dense (m*k)^2 problem is out of reach for k = 1000).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"1M-50-2": (1_000_000, 50, 2), "300k-15-1000": (300_000, 15, 1000), "10M-100-2": (10_000_000, 100, 2)}


def run_one(model: str, shape: str, seed: int, repeats: int) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synthetic import make_label_matrix

    n, m, k = SHAPES[shape]
    L, y, _ = make_label_matrix(n, m, k, seed=seed)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fits, totals = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        if model == "orchestra":
            from labelmodel import LabelModel

            lm = LabelModel(cardinality=k, seed=seed).fit(L)
            fits.append(time.perf_counter() - start)
            probs = lm.predict_proba(L, dtype=np.float32)
            chosen = lm.chosen_
        elif model == "snorkel":
            from snorkel.labeling.model import LabelModel as SnorkelLabelModel

            L64 = L.astype(np.int64)
            start = time.perf_counter()
            lm = SnorkelLabelModel(cardinality=k, verbose=False)
            lm.fit(L64, seed=seed, progress_bar=False)
            fits.append(time.perf_counter() - start)
            probs = lm.predict_proba(L64)
            chosen = "snorkel.LabelModel"
        else:
            raise SystemExit(f"unknown model {model}")
        totals.append(time.perf_counter() - start)
    fit_s, total_s = float(np.median(fits)), float(np.median(totals))
    preds = probs.argmax(axis=1)
    acc = float((preds == y).mean())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model, "chosen": chosen, "shape": shape, "n": n, "m": m, "k": k, "repeats": repeats,
            "fit_s": round(fit_s, 2), "fit_predict_s": round(total_s, 2), "accuracy": round(acc, 4),
            "peak_rss_mb": round(peak_mb), "data_rss_mb": round(rss_data / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per (model, shape); medians reported")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.seed, args.repeats)))
        return
    results = []
    for shape in args.shapes:
        models = ["orchestra", "snorkel"] if shape == "1M-50-2" else ["orchestra"]
        for model in models:
            command = [sys.executable, __file__, "--one", model, shape, "--seed", str(args.seed),
                       "--repeats", str(args.repeats)]
            out = subprocess.run(command, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{model} {shape} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| shape (n, m, k) | model | fit + predict_proba (s) | accuracy | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['n']:,} x {r['m']} x {r['k']} | {r['model']} ({r['chosen']}) | {r['fit_predict_s']} "
              f"| {r['accuracy']:.4f} | {r['peak_rss_mb']} |")
    ours = {r["shape"]: r for r in results if r["model"] == "orchestra"}
    for r in results:
        if r["model"] == "snorkel" and r["shape"] in ours:
            ratio = r["fit_predict_s"] / ours[r["shape"]]["fit_predict_s"]
            print(f"\nspeed-up over Snorkel on {r['shape']}: {ratio:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
