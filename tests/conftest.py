"""Shared fixtures: where the real evaluation data lives (../shared/data beside the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real evaluation data not found at {SHARED_DATA} (CI provides ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def model_installed() -> None:
    """Skip (with the reason) when the default model's package is not installed."""
    from engine.loader import resolve_model_path

    try:
        resolve_model_path("smollm2-135m")
    except Exception as exc:  # noqa: BLE001 - any failure to find the model is a reason to skip
        pytest.skip(f"default model not installed: {exc}")


@pytest.fixture(scope="session")
def llm(model_installed):
    """The default model in our engine, loaded once for the whole test session."""
    from engine import LLM

    return LLM("smollm2-135m", device="cpu", max_model_len=512, kv_cache_memory=256 << 20, max_num_seqs=64)
