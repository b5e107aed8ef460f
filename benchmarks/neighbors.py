"""k-NN backends of prompting.neighbors on the same data: scikit-learn brute force vs faiss (exact and IVF).

Prints, per n, the wall time of each backend, the speed ratio, whether the exact backends agree, and IVF's
recall@k against exact search. Data: random unit vectors mixed with cluster structure (d = 384, like MiniLM).

    python benchmarks/neighbors.py [--sizes 2000 5000 20000] [--k 10] [--ivf] [--no-sklearn] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from prompting.neighbors import nearest_neighbors


def data(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(2, n // 50), d))
    x = centers[rng.integers(0, len(centers), n)] + 0.8 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed(fn, repeat: int = 2) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 20000])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--ivf", action="store_true", help="also time the approximate IVF index")
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn (large n)")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    args = parser.parse_args()
    header = f"{'n':>8} {'sklearn s':>10} {'faiss s':>10} {'speedup':>8} {'same':>6}"
    print(header + ("  ivf s  recall" if args.ivf else ""))
    for n in args.sizes:
        x = data(n, args.d)
        tf, b = timed(lambda x=x: nearest_neighbors(x, args.k, backend="faiss"), args.repeat)
        if args.no_sklearn:
            line = f"{n:>8} {'-':>10} {tf:>10.3f} {'-':>8} {'-':>6}"
        else:
            ts, a = timed(lambda x=x: nearest_neighbors(x, args.k, backend="sklearn"), args.repeat)
            same = float(np.mean([set(r) == set(s) for r, s in zip(a, b, strict=True)]))
            line = f"{n:>8} {ts:>10.3f} {tf:>10.3f} {ts / tf:>7.1f}x {same:>6.3f}"
        if args.ivf:
            ti, c = timed(lambda x=x: nearest_neighbors(x, args.k, backend="ivf"), repeat=1)
            recall = float(np.mean([len(set(r) & set(s)) / args.k for r, s in zip(b, c, strict=True)]))
            line += f" {ti:>7.3f} {recall:>7.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
