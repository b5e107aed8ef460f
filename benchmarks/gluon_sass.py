"""What the Gluon prefill kernel compiles to on sm_90, on any machine (no GPU needed): per launch shape, shared
memory, register spills, instruction counts by kind, and whether any instruction overwrites a register that an
in-flight wgmma still reads.

The kernel's speed on Hopper is set by what each key tile costs in issued instructions (the softmax, at head dim
64) and by the tensor cores, so the SASS says early, without a GPU, whether a change adds or removes work; the
H200 then times it (``gluon_ab.py``). The last check guards the kernel's reliance on ptxas: P, the register A
operand of P V, is not among the wgmma waits' deps (see ``_attend_key_tile``), so nothing but ptxas keeps its
registers intact until the wait.

Compiles with the installed Triton and its bundled ptxas / cuobjdump, so run it outside Triton's interpreter
(TRITON_INTERPRET unset).

    python benchmarks/gluon_sass.py [--shapes planned|all] [--json OUT] [--sass-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton
import triton.backends.nvidia
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.driver import CudaDriver
from triton.runtime import driver

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.kernels import gluon_attention as ga  # noqa: E402

# (head dim, causal, consumer warpgroups, schedule): every combination the plan picks, for runs short and long,
# uniform and mixed.
PLANNED_SHAPES = sorted({(dim, causal, *ga._plan(dim, causal, new_tokens, uniform)) for dim in (64, 128)
                         for causal in (False, True) for new_tokens in (256, 1024, ga.LONG_RUN)
                         for uniform in (False, True)})
ALL_SHAPES = [(dim, causal, consumers, schedule) for dim in (64, 128) for causal in (False, True)
              for consumers in ((2, 3) if dim == 64 else (2,)) for schedule in ("dynamic", "static", "per_item")]
SASS_LINE = re.compile(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Za-z0-9_.]*)\s*([^;]*);", re.M)
CUOBJDUMP = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin", "cuobjdump")
COUNTED = ("HGMMA", "MUFU", "FFMA", "FMUL", "FADD", "FMNMX", "F2FP", "PRMT", "FSEL", "ISETP", "SHFL", "BAR", "STL",
           "LDL")


def use_sm90_target() -> None:
    """Point Triton's driver at an sm_90 target without loading libcuda (on a Hopper machine this matches what
    the real driver answers)."""

    class HopperWithoutGpu(CudaDriver):
        def __init__(self):
            pass

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

    driver.set_active(HopperWithoutGpu())


def compile_shape(head_dim: int, causal: bool, consumers: int, schedule: str):
    """The compiled kernel for one launch shape, built from CPU tensors of a small varlen case with a prefix."""
    heads, kv_heads, block = 4, 2, 256
    new, lens = [700, 300], [1100, 300]
    blocks = sum(-(-n // block) for n in lens)
    query = torch.zeros(sum(new), heads, head_dim, dtype=torch.bfloat16)
    k_cache = torch.zeros(blocks, block, kv_heads, head_dim, dtype=torch.bfloat16)
    cu = torch.tensor([0, new[0], sum(new)], dtype=torch.int32)
    ctx = torch.tensor(lens, dtype=torch.int32)
    tables = torch.arange(blocks, dtype=torch.int32).view(1, -1).expand(2, -1).contiguous()
    config = ga._config(head_dim, consumers)
    args, meta = ga._kernel_arguments(torch.empty_like(query), query, k_cache, k_cache.clone(), cu, ctx, tables,
                                      torch.zeros(1, dtype=torch.int32), head_dim**-0.5, config,
                                      triton.cdiv(max(new), config.block_m), causal, True, schedule)
    return ga._prefill_kernel.warmup(*args, grid=(1,), **meta)


def sass_of(kernel) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        return subprocess.run([CUOBJDUMP, "-sass", cubin.name], check=True, capture_output=True, text=True).stdout


def written_registers(opcode: str, operands: str) -> set[int]:
    """General registers an instruction writes: its first operand's, widened by .64 / .128 / .WIDE (stores,
    barriers, branches, wgmmas and compares into predicates write none)."""
    if opcode.startswith(("ST", "RED", "ATOM", "BAR", "SYNCS", "WARPGROUP", "HGMMA", "BRA", "EXIT", "UTMA")):
        return set()
    first = re.match(r"R(\d+)\b", operands.split(",")[0].strip())
    if not first:
        return set()
    width = 4 if ".128" in opcode else 2 if (".64" in opcode or ".WIDE" in opcode) else 1
    return set(range(int(first.group(1)), int(first.group(1)) + width))


def in_flight_operand_writes(sass: str) -> tuple[int, list[str]]:
    """Walk the SASS in address order: from a wgmma with a register A operand (four registers from the one
    named) until a wait for all wgmmas, report each instruction writing one of those registers. Returns the
    number of register-operand wgmmas seen and the offending instructions."""
    in_flight: dict[int, str] = {}
    seen, offences = 0, []
    for opcode, operands in SASS_LINE.findall(sass):
        a_operand = re.match(r"R\d+, R(\d+), ", operands) if opcode.startswith("HGMMA") else None
        if a_operand:
            seen += 1
            first = int(a_operand.group(1))
            in_flight.update({r: f"{opcode} {operands}" for r in range(first, first + 4)})
        elif opcode == "WARPGROUP.DEPBAR.LE" and operands.replace(" ", "").endswith("0x0"):
            in_flight.clear()
        else:
            for register in sorted(written_registers(opcode, operands) & in_flight.keys()):
                offences.append(f"{opcode} {operands} writes R{register}, read by {in_flight[register]}")
    return seen, offences


def report(shape: tuple, sass_dir: Path | None) -> dict:
    kernel = compile_shape(*shape)
    sass = sass_of(kernel)
    if sass_dir:
        dim, causal, consumers, schedule = shape
        (sass_dir / f"gluon_{dim}_{'causal' if causal else 'full'}_{consumers}wg_{schedule}.sass").write_text(sass)
    kinds = collections.Counter(opcode.split(".")[0] for opcode, _ in SASS_LINE.findall(sass))
    register_operand_wgmmas, offences = in_flight_operand_writes(sass)
    return {"head_dim": shape[0], "causal": shape[1], "consumers": shape[2], "schedule": shape[3],
            "shared_bytes": kernel.metadata.shared, "instructions": sum(kinds.values()),
            "counts": {kind: kinds[kind] for kind in COUNTED}, "register_operand_wgmmas": register_operand_wgmmas,
            "in_flight_operand_writes": offences}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", choices=("planned", "all"), default="planned")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sass-dir", type=Path, help="also write each shape's SASS here")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("TRITON_INTERPRET=1 turns Triton's library functions into interpreted ones, which do not "
                 "compile: unset it for this script")
    if not os.path.exists(CUOBJDUMP):
        sys.exit(f"no cuobjdump at {CUOBJDUMP}: this Triton wheel does not ship NVIDIA's binary tools")
    use_sm90_target()
    if args.sass_dir:
        args.sass_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| head dim | causal | warpgroups | schedule | shared KB | instructions | "
          + " | ".join(COUNTED) + " | operand overwrites |")
    print("|---" * (6 + len(COUNTED) + 1) + "|")
    for shape in PLANNED_SHAPES if args.shapes == "planned" else ALL_SHAPES:
        row = report(shape, args.sass_dir)
        rows.append(row)
        print(f"| {row['head_dim']} | {row['causal']} | {row['consumers']} | {row['schedule']} | "
              f"{row['shared_bytes'] / 1024:.1f} | {row['instructions']} | "
              + " | ".join(str(row["counts"][kind]) for kind in COUNTED)
              + f" | {len(row['in_flight_operand_writes'])} |", flush=True)
    if args.json:
        partial = args.json.with_name(args.json.name + ".part")
        partial.write_text(json.dumps(rows, indent=1))
        partial.replace(args.json)


if __name__ == "__main__":
    main()
