"""Shared test fixtures. Tests never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the checkout (or ``$CAPSCALE_SHARED_DATA``), if present."""
    env = os.environ.get("CAPSCALE_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data", REPO / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real public data; skips the test with a clear reason where it is absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("real data not found: expected ../shared/data beside the checkout "
                    "(or set CAPSCALE_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def mc_data(shared_data: Path) -> Path:
    """Root of the real multiple-choice items (``../shared/data/mc``)."""
    d = shared_data / "mc"
    if not d.is_dir():
        pytest.skip(f"multiple-choice data not found at {d}")
    return d
