"""Decode attention on the GPU at the engine's shape: how capping the keys per split-KV program changes the time.

SmolLM2-135M's attention (9 query heads over 3 KV heads, head dim 64, bf16, block size 16, shuffled block
tables), each batch's context lengths drawn uniformly from a range, timed by CUDA-graph replay of 20 calls
(median of 5) with the bound the engine's captured graphs pass (``max_context_len`` = 2064). Compares
``split_tokens`` = None (as many splits as fill the GPU) with caps of 1024 down to 64 keys per split.

    python benchmarks/decode_splits_gpu.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.kernels import triton_attention as tk  # noqa: E402

HEADS, KV_HEADS, DIM, BLOCK, BOUND = 9, 3, 64, 16, 2064
CASES = {"256x100-2048": (256, 100, 2048), "256x600-1000": (256, 600, 1000), "64x100-2048": (64, 100, 2048),
         "16x100-2048": (16, 100, 2048), "4x100-2048": (4, 100, 2048)}
CAPS = (None, 1024, 512, 256, 128, 64)


def make_case(batch: int, lo: int, hi: int) -> tuple:
    lens = torch.randint(lo, hi, (batch,), device="cuda")
    blocks = (lens + BLOCK - 1) // BLOCK
    total = int(blocks.sum()) + 8
    k_cache = torch.randn(total, BLOCK, KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    perm = torch.randperm(total, device="cuda")
    tables = torch.full((batch, BOUND // BLOCK + 1), -1, dtype=torch.int32, device="cuda")
    used = 0
    for i in range(batch):
        n = int(blocks[i])
        tables[i, :n] = perm[used : used + n].int()
        used += n
    q = torch.randn(batch, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    kv_bytes = int(lens.sum()) * KV_HEADS * DIM * 2 * 2
    return q, k_cache, v_cache, lens.int(), tables, kv_bytes


def graph_us(case: tuple, cap: int | None) -> float:
    q, k_cache, v_cache, lens, tables, _ = case

    def run() -> torch.Tensor:
        return tk.decode_attention(q, k_cache, v_cache, lens, tables, DIM**-0.5, max_context_len=BOUND,
                                   split_tokens=cap)

    for _ in range(3):
        run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(20):
            run()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 20 * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    torch.manual_seed(0)
    result: dict = {"device": torch.cuda.get_device_name(), "cases": {}}
    for name, shape in CASES.items():
        case = make_case(*shape)
        base = tk.decode_attention(*case[:5], DIM**-0.5, max_context_len=BOUND)
        for cap in CAPS:
            us = graph_us(case, cap)
            out = tk.decode_attention(*case[:5], DIM**-0.5, max_context_len=BOUND, split_tokens=cap)
            err = float((out.float() - base.float()).norm() / base.float().norm())
            result["cases"].setdefault(name, {})[str(cap)] = {"us": us, "tb_s": case[5] / us / 1e6, "rel_diff": err}
            print(f"{name} split_tokens={cap}: {us:.1f} us, {case[5] / us / 1e6:.2f} TB/s, "
                  f"rel. diff vs uncapped {err:.1e}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
