"""Attention kernels on the GPU: our Triton prefill / decode vs torch SDPA (flash, cuDNN) and the copy roofline.

Prefill: TFLOP/s for head dims 64 and 128, causal and not, sequence 1k-16k, batch x sequence = 32k tokens,
bf16, 16 query heads (GQA off, so SDPA compares like for like); ours reads K/V from a paged cache
(block size 256, identity block tables). FLOPs counted as 4 * b * h * s^2 * d (halved when causal).
Decode: achieved bandwidth (K/V bytes read / time) at batch 1-256 and context 1k-32k, 32 query heads over
8 KV heads, head dim 128, bf16, against the device's measured copy bandwidth (bytes read + written / time).
Times are medians of triton.testing.do_bench; at each prefill point the contenders (SDPA flash and cuDNN, ours,
the Gluon default) take turns ``--repeats`` times (default 3) and the median is reported. Prints a table and
writes JSON with --json; --gluon adds the Gluon (FA3-style, Hopper only) prefill kernel of
engine/kernels/gluon_attention.py: its default ("auto", which picks consumer warpgroups and schedule by shape) as
a column, every variant (2 or, at head dim 64, 3 consumer warpgroups x static persistent grid, dynamic work
queue, one program per work item; timed once each) in a second table, and a mixed-length batch timing them all.
--prefill-only skips the decode points.

    python benchmarks/attention_gpu.py [--json OUT] [--quick] [--gluon] [--prefill-only] [--repeats N]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.kernels import triton_attention as tk  # noqa: E402

DTYPE = torch.bfloat16


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def write_json(path: Path, result: dict) -> None:
    """Write ``result`` as JSON atomically (a temporary file beside ``path``, then renamed over it), so that a run
    cut short leaves the last complete file."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(result, indent=1))
    partial.replace(path)


def copy_bandwidth() -> float:
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() / (ms * 1e-3) / 1e12


def prefill_point(seq: int, dim: int, causal: bool, tokens: int = 32768, block: int = 256, tiles=None,
                  peers: bool = True, impl: str = "triton", with_gluon: bool = False, repeats: int = 1,
                  **options) -> dict:
    """TFLOP/s of one prefill shape for our kernel (``impl`` "triton" or "gluon"; ``options`` go to it), with
    ``peers`` SDPA's flash and cuDNN backends, with ``with_gluon`` also the Gluon kernel's default (as "gluon").
    Each is timed ``repeats`` times, the contenders taking turns so that clock and thermal drift hit all alike,
    and reported as the median."""
    batch, heads = max(1, tokens // seq), 16 if dim == 128 else 32
    q = torch.randn(batch, heads, seq, dim, device="cuda", dtype=DTYPE)
    k = torch.randn_like(q)
    v = torch.randn_like(q)
    scale = dim**-0.5
    flops = 4 * batch * heads * seq * seq * dim / (2 if causal else 1)
    out = {"seq": seq, "dim": dim, "causal": causal, "batch": batch, "block": block, "tiles": tiles}
    blocks_per = seq // block
    k_cache = k.permute(0, 2, 1, 3).reshape(batch * blocks_per, block, heads, dim).contiguous()
    v_cache = v.permute(0, 2, 1, 3).reshape(batch * blocks_per, block, heads, dim).contiguous()
    tables = torch.arange(batch * blocks_per, device="cuda", dtype=torch.int32).view(batch, blocks_per)
    query = q.permute(0, 2, 1, 3).reshape(batch * seq, heads, dim).contiguous()
    cu = torch.arange(batch + 1, device="cuda", dtype=torch.int32) * seq
    ctx = torch.full((batch,), seq, device="cuda", dtype=torch.int32)
    paged = (query, k_cache, v_cache, cu, ctx, tables, scale)

    def gluon_run(**gluon_options):
        from engine.kernels import gluon_attention

        return functools.partial(gluon_attention.prefill_attention, *paged, causal=causal, max_new_tokens=seq,
                                 **gluon_options)

    if impl == "gluon":
        ours = {"ours": gluon_run(**options)}
    else:
        ours = {"ours": functools.partial(tk.prefill_attention, *paged, causal=causal, max_new_tokens=seq,
                                          tiles=tiles, **options)}
    if with_gluon:
        ours["gluon"] = gluon_run()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    ref = ref.permute(0, 2, 1, 3).reshape(batch * seq, heads, dim).float()
    for name, run in ours.items():
        err_key = "rel_err" if name == "ours" else f"{name}_rel_err"
        out[err_key] = float((run().float() - ref).norm() / ref.norm())

    def sdpa_timer(backend):
        def time_it() -> float:
            with sdpa_kernel(backend):
                return bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal))
        return time_it

    timers = {name: functools.partial(bench, run) for name, run in ours.items()}
    if peers:
        timers = {"sdpa_flash": sdpa_timer(SDPBackend.FLASH_ATTENTION),
                  "sdpa_cudnn": sdpa_timer(SDPBackend.CUDNN_ATTENTION), **timers}
    times = {name: [] for name in timers}
    for _ in range(repeats):
        for name, time_it in timers.items():
            if name in out:  # a backend that failed (reported once)
                continue
            try:
                times[name].append(time_it())
            except RuntimeError as err:
                out[name] = None
                out[name + "_error"] = str(err)[:120]
    for name, ms in times.items():
        if ms:
            out[name] = flops / (statistics.median(ms) * 1e-3) / 1e12
    out["repeats"] = repeats
    return out


def gluon_variants(dim: int) -> list[tuple[int, str]]:
    """(consumer warpgroups, schedule) pairs the Gluon kernel runs at a head dim."""
    consumers = (2, 3) if dim == 64 else (2,)
    return [(c, s) for c in consumers for s in ("static", "dynamic", "per_item")]


def variant_name(consumers: int, schedule: str) -> str:
    return f"{consumers}wg_{schedule}"


def gluon_varlen_point(dim: int, causal: bool, seed: int = 0) -> dict:
    """TFLOP/s of the Gluon prefill kernel, its default and each variant (``gluon_variants``), on a mixed batch:
    one 4k sequence plus 63 of 64-1024 new tokens, half behind a cached prefix of up to 2k (paged, block 256)."""
    gen = torch.Generator().manual_seed(seed)
    new = torch.cat([torch.tensor([4096]), torch.randint(64, 1025, (63,), generator=gen)])
    prefix = torch.randint(0, 2049, (64,), generator=gen) * (torch.rand(64, generator=gen) < 0.5)
    ctx = new + prefix
    heads, block = (16 if dim == 128 else 32), 256
    blocks_per = (ctx + block - 1) // block
    k_cache = torch.randn(int(blocks_per.sum()), block, heads, dim, device="cuda", dtype=DTYPE)
    v_cache = torch.randn_like(k_cache)
    tables = torch.zeros(64, int(blocks_per.max()), dtype=torch.int32)
    for i, start in enumerate((blocks_per.cumsum(0) - blocks_per).tolist()):
        tables[i, : blocks_per[i]] = torch.arange(start, start + int(blocks_per[i]))
    query = torch.randn(int(new.sum()), heads, dim, device="cuda", dtype=DTYPE)
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), new.cumsum(0)]).to(torch.int32).cuda()
    pairs = (new * prefix + new * (new + 1) / 2) if causal else new * ctx  # visible (query, key) pairs
    flops = 4 * heads * dim * float(pairs.sum())
    from engine.kernels import gluon_attention

    args = (query, k_cache, v_cache, cu, ctx.to(torch.int32).cuda(), tables.cuda(), dim**-0.5)
    out = {"dim": dim, "causal": causal}
    out["auto"] = flops / (bench(functools.partial(gluon_attention.prefill_attention, *args, causal=causal))
                           * 1e-3) / 1e12
    for consumers, schedule in gluon_variants(dim):
        ms = bench(functools.partial(gluon_attention.prefill_attention, *args, causal=causal, schedule=schedule,
                                     consumers=consumers))
        out[variant_name(consumers, schedule)] = flops / (ms * 1e-3) / 1e12
    return out


def decode_point(batch: int, ctx_len: int, heads: int = 32, kv_heads: int = 8, dim: int = 128,
                 eager: bool = True, **options) -> dict:
    """Achieved KV bandwidth of one decode shape, replayed in a CUDA graph and (with ``eager``) launched eagerly;
    ``options`` go to ``decode_attention``."""
    block = 16
    blocks_per = ctx_len // block
    k_cache = torch.randn(batch * blocks_per, block, kv_heads, dim, device="cuda", dtype=DTYPE)
    v_cache = torch.randn_like(k_cache)
    perm = torch.randperm(batch * blocks_per, device="cuda").to(torch.int32)
    tables = perm.view(batch, blocks_per)
    ctx = torch.full((batch,), ctx_len, device="cuda", dtype=torch.int32)
    q = torch.randn(batch, heads, dim, device="cuda", dtype=DTYPE)
    scale = dim**-0.5
    def run():
        return tk.decode_attention(q, k_cache, v_cache, ctx, tables, scale, max_context_len=ctx_len, **options)

    graph_ms = triton.testing.do_bench_cudagraph(run, rep=100, return_mode="median")
    kv_bytes = 2 * k_cache.numel() * k_cache.element_size()
    point = {"batch": batch, "ctx": ctx_len, "dim": dim, "graph_ms": graph_ms,
             "graph_tb_s": kv_bytes / (graph_ms * 1e-3) / 1e12}
    if eager:
        ms = bench(run)
        point.update(ms=ms, tb_s=kv_bytes / (ms * 1e-3) / 1e12)
    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="a few points only")
    parser.add_argument("--sweep", action="store_true", help="time prefill tile configurations at 16k and stop")
    parser.add_argument("--gluon", action="store_true", help="add the Gluon prefill kernel and its variants")
    parser.add_argument("--prefill-only", action="store_true", help="skip the decode points")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timings per prefill contender and point, interleaved (medians are reported)")
    args = parser.parse_args()
    props = torch.cuda.get_device_properties(0)
    result = {"device": props.name, "torch": torch.__version__, "triton": triton.__version__}
    result["copy_tb_s"] = copy_bandwidth()
    if args.sweep:
        configs = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3)]
        variants = [{"use_tma": False}, {"use_tma": True}]
        print("| dim | causal | tiles (M, N, warps, stages) | options | TFLOP/s |")
        for dim in (64, 128):
            for causal in (False, True):
                for cfg in configs:
                    for opt in variants:
                        try:
                            r = prefill_point(16384, dim, causal, tiles=cfg, peers=False, **opt)
                            print(f"| {dim} | {causal} | {cfg} | {opt} | {r['ours']:.0f} | err {r['rel_err']:.1e}",
                                  flush=True)
                        except Exception as err:  # noqa: BLE001 - a config that does not compile is reported
                            print(f"| {dim} | {causal} | {cfg} | {opt} | failed: {str(err)[:100]}", flush=True)
        r = prefill_point(16384, 128, True, block=16, peers=False)
        print(f"block size 16 (gathered rows), dim 128 causal 16k: {r['ours']:.0f} TFLOP/s", flush=True)
        return
    seqs = [1024, 4096, 16384] if args.quick else [1024, 2048, 4096, 8192, 16384]
    result["prefill"] = [prefill_point(s, d, c, with_gluon=args.gluon, repeats=args.repeats)
                         for d in (64, 128) for c in (False, True) for s in seqs]
    if args.gluon:
        for p in result["prefill"]:
            p["gluon_variants"] = {}
            for consumers, schedule in gluon_variants(p["dim"]):
                g = prefill_point(p["seq"], p["dim"], p["causal"], peers=False, impl="gluon", schedule=schedule,
                                  consumers=consumers)
                p["gluon_variants"][variant_name(consumers, schedule)] = g["ours"]
        result["gluon_varlen"] = [gluon_varlen_point(d, c) for d in (64, 128) for c in (False, True)]
    batches = [] if args.prefill_only else [1, 64, 256] if args.quick else [1, 8, 64, 256]
    ctxs = [1024, 4096, 32768] if args.quick else [1024, 4096, 16384, 32768]
    result["decode"] = []
    for b in batches:
        for c in ctxs:
            if b * c * 8 * 128 * 2 * 2 > 48 * 1024**3:
                continue
            result["decode"].append(decode_point(b, c))
            torch.cuda.empty_cache()
    if args.json:
        write_json(args.json, result)
    print(f"device {result['device']}, copy bandwidth {result['copy_tb_s']:.2f} TB/s")
    gl_head = " gluon default | default / cuDNN | gluon rel err | best variant |" if args.gluon else ""
    print(f"\nprefill TFLOP/s (bf16)\n| dim | causal | seq | ours | sdpa flash | sdpa cuDNN | ours / cuDNN | rel err |"
          f"{gl_head}")
    print("|---|---|---|---|---|---|---|---|" + "---|---|---|---|" * args.gluon)
    for p in result["prefill"]:
        cud = p.get("sdpa_cudnn")
        ratio = f"{p['ours'] / cud:.2f}" if cud else "-"
        fl = f"{p['sdpa_flash']:.0f}" if p.get("sdpa_flash") else "-"
        cud_s = f"{cud:.0f}" if cud else "-"
        row = (f"| {p['dim']} | {p['causal']} | {p['seq']} | {p['ours']:.0f} | {fl} | {cud_s} | {ratio} | "
               f"{p['rel_err']:.1e} |")
        if args.gluon:
            gl_ratio = f"{p['gluon'] / cud:.2f}" if cud else "-"
            best = max(p["gluon_variants"], key=p["gluon_variants"].get)
            row += (f" {p['gluon']:.0f} | {gl_ratio} | {p['gluon_rel_err']:.1e} |"
                    f" {best} {p['gluon_variants'][best]:.0f} |")
        print(row)
    if args.gluon:
        names = [variant_name(c, s) for c, s in gluon_variants(64)]
        print("\nGluon prefill variants, TFLOP/s (consumer warpgroups x schedule)")
        print("| dim | causal | seq | " + " | ".join(names) + " |\n|---|---|---|" + "---|" * len(names))
        for p in result["prefill"]:
            cells = [f"{p['gluon_variants'][n]:.0f}" if n in p["gluon_variants"] else "-" for n in names]
            print(f"| {p['dim']} | {p['causal']} | {p['seq']} | " + " | ".join(cells) + " |")
        print("\nGluon prefill TFLOP/s on a mixed batch (1 x 4k + 63 x 64-1024 new tokens, half with prefixes)")
        print("| dim | causal | default | " + " | ".join(names) + " |\n|---|---|---|" + "---|" * len(names))
        for v in result["gluon_varlen"]:
            cells = [f"{v[n]:.0f}" if n in v else "-" for n in names]
            print(f"| {v['dim']} | {v['causal']} | {v['auto']:.0f} | " + " | ".join(cells) + " |")
    if not result["decode"]:
        return
    print("\ndecode (bf16, 32 q heads / 8 kv heads, dim 128; eager launch and CUDA-graph replay)")
    print("| batch | context | ms | TB/s | % of copy | graph ms | graph TB/s | graph % of copy |")
    print("|---|---|---|---|---|---|---|---|")
    copy = result["copy_tb_s"]
    for d in result["decode"]:
        print(f"| {d['batch']} | {d['ctx']} | {d['ms']:.3f} | {d['tb_s']:.2f} | {100 * d['tb_s'] / copy:.0f}% "
              f"| {d['graph_ms']:.3f} | {d['graph_tb_s']:.2f} | {100 * d['graph_tb_s'] / copy:.0f}% |")


if __name__ == "__main__":
    main()
