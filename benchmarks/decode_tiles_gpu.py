"""Tile sweep of the split-KV decode kernel on one GPU: which (BLOCK_N, warps, stages) reads the paged cache fastest.

For each head dim and (batch, context) point of ``attention_gpu.py``'s decode grid (32 query / 8 KV heads, block
size 16, shuffled block tables, CUDA-graph replay), times ``decode_attention`` with its default tiles and with
every configuration of the sweep, and prints each point's default against its best, as % of the device's copy
bandwidth. The default (``_decode_block_n``) was chosen from this sweep; re-run it on a new GPU before trusting
the defaults there.

    python benchmarks/decode_tiles_gpu.py [--dims 64 128] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import attention_gpu  # noqa: E402

POINTS = ((1, 1024), (1, 4096), (1, 16384), (4, 4096), (8, 4096), (64, 4096), (256, 4096))
TILES = list(itertools.product((32, 64, 128), (4, 8), (3, 4)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    copy = attention_gpu.copy_bandwidth()
    result: dict = {"device": torch.cuda.get_device_name(), "copy_tb_s": copy, "points": []}
    print(f"copy bandwidth {copy:.2f} TB/s")
    print("| head dim | batch | context | default % of copy | best % of copy | best tiles (BLOCK_N, warps, stages) |")
    print("|---|---|---|---|---|---|")
    for dim, (batch, ctx) in itertools.product(args.dims, POINTS):
        default = attention_gpu.decode_point(batch, ctx, dim=dim, eager=False)["graph_tb_s"]
        swept = {}
        for tiles in TILES:
            try:
                swept[tiles] = attention_gpu.decode_point(batch, ctx, dim=dim, eager=False, tiles=tiles)["graph_tb_s"]
            except Exception as err:  # a configuration the GPU cannot hold (shared memory) is skipped
                print(f"  skipped {tiles}: {str(err)[:80]}")
        best = max(swept, key=swept.get)
        print(f"| {dim} | {batch} | {ctx} | {100 * default / copy:.1f}% | {100 * swept[best] / copy:.1f}% | {best} |",
              flush=True)
        result["points"].append({"dim": dim, "batch": batch, "ctx": ctx, "default_tb_s": default,
                                 "tiles_tb_s": {str(t): v for t, v in swept.items()}})
        torch.cuda.empty_cache()
        if args.json:
            attention_gpu.write_json(args.json, result)


if __name__ == "__main__":
    main()
