"""The fused Triton sampling kernel vs the torch sampler inside our engine, on an NVIDIA GPU, in one process.

The nano-vllm throughput workload of ``engine_gpu.py`` (256 sequences, lengths 100-1024, temperature 0.6) runs
with the engine's default sampler (greedy and plain-temperature rows go to ``engine/kernels/triton_sampling.py``)
and with that kernel switched off (every row through the torch passes of ``Sampler.sample``), alternating, after
one warm-up run of each; the median of ``--repeats`` runs per sampler is reported.

    PYTHONPATH=. python benchmarks/sampler_gpu.py [--repeats 3] [--json OUT]
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.engine_gpu import nano_vllm_workload, throughput_engine  # noqa: E402
from engine.sampler import Sampler  # noqa: E402


def torch_sampler_only(prepare):
    """``Sampler.prepare`` that never selects the fused kernel."""

    def prepare_unfused(*args, **kwargs):
        batch = prepare(*args, **kwargs)
        batch.fused_temperatures = None
        return batch

    return staticmethod(prepare_unfused)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("sampler_gpu.py needs a CUDA GPU")
    n, hi = 256, 1024
    prompts, params, out_lens = nano_vllm_workload(random.Random(0), n, hi)
    llm = throughput_engine(args.model, n, hi)
    fused_prepare = Sampler.__dict__["prepare"].__func__
    samplers = {"fused": staticmethod(fused_prepare), "torch": torch_sampler_only(fused_prepare)}
    times: dict[str, list[float]] = {name: [] for name in samplers}
    try:
        for run in range(args.repeats + 1):
            for name, prepare in samplers.items():
                Sampler.prepare = prepare
                torch.cuda.synchronize()
                t = time.perf_counter()
                llm.generate(prompts, params)
                torch.cuda.synchronize()
                if run:  # run 0 is each sampler's warm-up
                    times[name].append(time.perf_counter() - t)
    finally:
        Sampler.prepare = samplers["fused"]
    result = {name: sum(out_lens) / statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.2f}s ({', '.join(f'{x:.2f}' for x in ts)}), "
              f"{result[name]:,.0f} output tok/s")
    print(f"fused / torch: {result['fused'] / result['torch']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "tok_s": result, "seconds": times}, f, indent=1)


if __name__ == "__main__":
    main()
