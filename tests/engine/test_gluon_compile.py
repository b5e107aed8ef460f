"""The Gluon prefill kernel compiled for sm_90 with the installed Triton, on any machine (no GPU needed, CI
included), through ``benchmarks/gluon_sass.py``: every shape the plan launches must compile (a Triton upgrade
renamed the TMA copies once, which only a compile catches), fit shared memory, keep the two-warpgroup shapes
free of register spills, and never overwrite a register that an in-flight wgmma still reads (the kernel leaves
P out of the wgmma waits' deps and relies on ptxas for that)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton.experimental.gluon", reason="this Triton has no Gluon dialect")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gluon_sass  # noqa: E402

SHARED_MEMORY_PER_BLOCK = 227 * 1024  # sm_90's opt-in maximum per thread block


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One compile of every planned shape, in a subprocess: the tests here run under Triton's interpreter on a
    machine without a GPU (conftest.py), and interpreted library functions do not compile."""
    folder = tmp_path_factory.mktemp("sass")
    out = folder / "report.json"
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    # A cache of its own: Triton's cache key misses a change of what a global name binds to (tma_load), so a
    # shared cache could hand back a kernel compiled before the change.
    env["TRITON_CACHE_DIR"] = str(folder / "triton-cache")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gluon_sass.py"), "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return {(r["head_dim"], r["causal"], r["consumers"], r["schedule"]): r for r in json.loads(out.read_text())}


@pytest.mark.parametrize("shape", gluon_sass.PLANNED_SHAPES, ids=lambda s: "-".join(map(str, s)))
def test_planned_shapes_compile_within_shared_memory_and_spill_free_with_two_warpgroups(report, shape):
    row = report[shape]
    assert row["shared_bytes"] <= SHARED_MEMORY_PER_BLOCK
    assert row["counts"]["HGMMA"] > 0  # the wgmma path
    if row["consumers"] == 2:  # three warpgroups get 160 registers each, where some Triton versions spill
        assert row["counts"]["STL"] == 0 and row["counts"]["LDL"] == 0


@pytest.mark.parametrize("shape", gluon_sass.PLANNED_SHAPES, ids=lambda s: "-".join(map(str, s)))
def test_no_register_an_in_flight_wgmma_reads_is_overwritten_before_its_wait(report, shape):
    row = report[shape]
    assert row["register_operand_wgmmas"] > 0  # P V reads P from registers at every shape
    assert row["in_flight_operand_writes"] == []


def test_the_operand_check_catches_an_overwrite():
    """The checker itself, on a hand-written SASS fragment: a write to the A operand's third register between
    the wgmma and the wait is reported; the same write after the wait is not."""
    line = "        /*{:04x}*/                   {} ;"
    wgmma = "HGMMA.64x64x16.F32.BF16 R88, R24, gdesc[UR36].tnspB, R88"
    write = "FMUL R26, R26, R30"
    wait = "WARPGROUP.DEPBAR.LE gsb0, 0x0"
    clobbering = "\n".join(line.format(16 * i, text) for i, text in enumerate((wgmma, write, wait)))
    fine = "\n".join(line.format(16 * i, text) for i, text in enumerate((wgmma, wait, write)))
    seen, offences = gluon_sass.in_flight_operand_writes(clobbering)
    assert seen == 1 and len(offences) == 1 and "R26" in offences[0]
    assert gluon_sass.in_flight_operand_writes(fine) == (1, [])
