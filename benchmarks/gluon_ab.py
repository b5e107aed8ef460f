"""A/B timing of the Gluon prefill kernel against other versions of it, on one Hopper GPU, in one process.

Each contender is a copy of ``engine/kernels/gluon_attention.py``: the working tree's ("current"), the one at a
git revision or in a file (``--baseline REV|PATH``, default HEAD~1) and any extra files (``--variant
NAME=PATH``). Every point of ``attention_gpu.py``'s prefill grid (head dims, causal and not, 1k-16k tokens, 32k
tokens per batch, block size 256, the default plan) is timed ``--repeats`` times per contender, the contenders
interleaved so that clock and thermal drift hit all alike; the table gives medians, each contender's ratio to
the baseline and to SDPA's cuDNN backend (timed once per point in the same run), and the relative error against
SDPA's flash backend.

    python benchmarks/gluon_ab.py [--baseline REV|PATH] [--variant NAME=PATH ...] [--dims 64 128]
        [--seqs 1024 ...] [--masks both|causal|full] [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import attention_gpu  # noqa: E402

import engine.kernels  # noqa: E402
from engine.kernels import gluon_attention  # noqa: E402

KERNEL = "engine/kernels/gluon_attention.py"


def load_module(name: str, path: Path):
    """Import a copy of the kernel module under its own name (Gluon compiles each copy's kernels separately)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def use(module) -> None:
    """Make ``attention_gpu.prefill_point(impl="gluon")`` call this copy of the kernel."""
    sys.modules["engine.kernels.gluon_attention"] = module
    engine.kernels.gluon_attention = module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD~1", help="git revision of the baseline kernel, or a file")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                        help="another copy of the kernel module to time")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seqs", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--masks", choices=("both", "causal", "full"), default="both",
                        help="time causal points, full (non-causal) ones, or both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    if Path(args.baseline).is_file():
        baseline_file = Path(args.baseline)
    else:
        source = subprocess.run(["git", "show", f"{args.baseline}:{KERNEL}"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout
        baseline_file = Path(tempfile.mkdtemp()) / "gluon_baseline.py"
        baseline_file.write_text(source)
    contenders = {"baseline": load_module("gluon_baseline", baseline_file), "current": gluon_attention}
    for spec in args.variant:
        name, _, path = spec.partition("=")
        if not name or not path or name in contenders:
            parser.error(f"--variant takes NAME=PATH with a new name, got {spec!r}")
        contenders[name] = load_module(f"gluon_{name}", Path(path))

    rows = []
    print(f"| dim | causal | seq | cuDNN | {' | '.join(contenders)} | "
          + " | ".join(f"{n} / baseline" for n in contenders if n != "baseline")
          + f" | {' | '.join(f'{n} / cuDNN' for n in contenders)} | rel err |")
    print("|---" * (4 + 3 * len(contenders)) + "|")
    for dim in args.dims:
        for causal in {"both": (False, True), "causal": (True,), "full": (False,)}[args.masks]:
            for seq in args.seqs:
                use(gluon_attention)
                peers = attention_gpu.prefill_point(seq, dim, causal, impl="gluon")
                row = {"dim": dim, "causal": causal, "seq": seq, "sdpa_cudnn": peers["sdpa_cudnn"],
                       "sdpa_flash": peers["sdpa_flash"], "runs": {n: [] for n in contenders}, "rel_err": {}}
                for _ in range(args.repeats):
                    for name, module in contenders.items():
                        use(module)
                        point = attention_gpu.prefill_point(seq, dim, causal, peers=False, impl="gluon")
                        row["runs"][name].append(point["ours"])
                        row["rel_err"][name] = point["rel_err"]
                use(gluon_attention)
                row["median"] = {n: statistics.median(r) for n, r in row["runs"].items()}
                rows.append(row)
                med, cudnn = row["median"], row["sdpa_cudnn"]
                print(f"| {dim} | {causal} | {seq} | {cudnn:.0f} | "
                      + " | ".join(f"{med[n]:.0f}" for n in contenders) + " | "
                      + " | ".join(f"{med[n] / med['baseline']:.3f}" for n in contenders if n != "baseline")
                      + " | " + " | ".join(f"{med[n] / cudnn:.2f}" for n in contenders)
                      + f" | {max(row['rel_err'].values()):.1e} |", flush=True)
                if args.json:  # after every point, so that a run cut short keeps what it measured
                    attention_gpu.write_json(args.json, {"baseline": args.baseline, "rows": rows})


if __name__ == "__main__":
    main()
