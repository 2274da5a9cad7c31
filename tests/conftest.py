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


# Tiny scoring models (tests/test_scoring*.py): tokenizers trained on the fly (GPT-2-style without BOS,
# Llama-style with BOS) and random-init GPT-NeoX / Llama models built from configs.


@pytest.fixture(scope="module")
def toks():
    from capscale.benchmarks.scoring import train_bpe_tokenizer

    return {"gpt2": train_bpe_tokenizer(style="gpt2", vocab_size=600),
            "llama": train_bpe_tokenizer(style="llama", vocab_size=600)}


@pytest.fixture(scope="module")
def models(toks):
    from capscale.benchmarks.scoring import random_model

    return {"gpt2": random_model("pythia-tiny", vocab_size=len(toks["gpt2"])),
            "llama": random_model("llama-tiny", vocab_size=len(toks["llama"]))}
