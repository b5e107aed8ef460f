"""The Gluon prefill kernel's host-side choices, which run anywhere its module imports (no GPU needed): launch
shapes that fit an SM's registers, the persistent grid size, the shape-based plan, and argument validation."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton.experimental.gluon", reason="this Triton has no Gluon dialect")

from engine.kernels import gluon_attention as ga  # noqa: E402

from .paged import paged_case  # noqa: E402

REGISTERS_PER_SM = 65536
THREADS_PER_WARPGROUP = 128


@pytest.mark.parametrize("head_dim,consumers", [(64, 2), (64, 3), (128, 2)])
def test_launch_shapes_fit_the_register_file(head_dim, consumers):
    """setmaxnreg hands each consumer warpgroup its registers and the producer's warpgroup the rest: the split
    and the launch's even share must both fit one SM's 64K registers, in the units of 8 the hardware allocates."""
    config = ga._config(head_dim, consumers)
    assert config.block_m == consumers * ga.WG_M
    split = THREADS_PER_WARPGROUP * (consumers * config.consumer_regs + config.producer_regs)
    assert split <= REGISTERS_PER_SM
    assert THREADS_PER_WARPGROUP * (consumers + 1) * config.maxnreg <= REGISTERS_PER_SM
    for regs in (config.consumer_regs, config.producer_regs, config.maxnreg):
        assert regs % 8 == 0 and 24 <= regs <= 256


def test_three_consumer_warpgroups_only_at_head_dim_64():
    with pytest.raises(ValueError, match="consumers"):
        ga._config(128, 3)
    with pytest.raises(ValueError, match="consumers"):
        ga._config(64, 4)


@pytest.mark.parametrize("num_sms", [132, 114, 78])
@pytest.mark.parametrize("num_m_tiles", [1, 2, 6, 8, 11, 86, 128])
def test_persistent_grid_shares_no_factor_with_the_tiles_per_head(num_sms, num_m_tiles):
    """When programs walk several items each, program p's items p, p + programs, ... cycle through every
    query-tile index; never more programs than items (one item each needs no such care)."""
    items = num_m_tiles * 512
    programs = ga._persistent_programs(num_sms, num_m_tiles, items)
    assert 0 < programs <= num_sms
    assert math.gcd(programs, num_m_tiles) == 1
    assert {k * programs % num_m_tiles for k in range(num_m_tiles)} == set(range(num_m_tiles))
    assert ga._persistent_programs(num_sms, num_m_tiles, 5) == 5


def test_auto_plan_follows_the_measured_choices():
    """Two warpgroups with the dynamic queue by default; head dim 64: three warpgroups with the queue from
    LONG_RUN new tokens, and with the static grid for equal non-causal runs from 1k up to LONG_RUN."""
    long = ga.LONG_RUN
    assert ga._plan(128, True, 16384, uniform=True) == (2, "dynamic")
    assert ga._plan(128, False, 1024, uniform=False) == (2, "dynamic")
    assert ga._plan(64, True, long - 1, uniform=True) == (2, "dynamic")
    assert ga._plan(64, True, long, uniform=True) == (3, "dynamic")
    assert ga._plan(64, True, long, uniform=False) == (3, "dynamic")
    assert ga._plan(64, False, long, uniform=True) == (3, "dynamic")
    assert ga._plan(64, False, 2048, uniform=True) == (3, "static")
    assert ga._plan(64, False, 2048, uniform=False) == (2, "dynamic")
    assert ga._plan(64, False, 1024, uniform=True) == (3, "static")
    assert ga._plan(64, False, 1023, uniform=True) == (2, "dynamic")


def test_every_plan_is_a_launchable_shape():
    for head_dim in (64, 128):
        for causal in (True, False):
            for uniform in (True, False):
                for new in (1, 1024, 2048, ga.LONG_RUN, ga.LONG_RUN + 1, 32768):
                    consumers, schedule = ga._plan(head_dim, causal, new, uniform)
                    assert schedule in ga.SCHEDULES and schedule != "auto"
                    ga._config(head_dim, consumers)


def test_bad_arguments_are_rejected_before_any_launch():
    """Validation runs on the host before the kernel is touched, so it is checked here on CPU tensors."""
    case = paged_case([300], [200], 2, 1, 128, 256, torch.bfloat16, "cpu", seed=7)
    with pytest.raises(ValueError, match="schedule"):
        ga.prefill_attention(*case, 0.125, schedule="persistent")
    with pytest.raises(ValueError, match="consumers"):
        ga.prefill_attention(*case, 0.125, consumers=3)


def test_cpu_tensors_are_not_supported():
    q, k_cache = paged_case([300], [200], 2, 1, 128, 256, torch.bfloat16, "cpu", seed=7)[:2]
    assert not ga.supported(q, k_cache)
