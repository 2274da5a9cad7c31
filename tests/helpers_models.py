"""Shared test helpers: tiny random-init causal LMs of real architectures saved as HF-format folders.

The tokenizer is a small byte-level BPE trained on the fly (``capscale.benchmarks.scoring.train_bpe_tokenizer``),
the model a 2-layer GPT-NeoX or Llama built from a config (``random_model``): no download, a few seconds.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=4)
def tiny_tokenizer(style: str = "gpt2", vocab_size: int = 600) -> Any:
    from capscale.benchmarks.scoring import train_bpe_tokenizer

    return train_bpe_tokenizer(vocab_size=vocab_size, style=style)


def tiny_model(arch: str = "gpt_neox", *, seed: int = 0, style: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer): a 2-layer model of ``arch`` ("gpt_neox" or "llama") with a matching tokenizer."""
    from capscale.benchmarks.scoring import random_model

    style = style or ("llama" if arch == "llama" else "gpt2")
    tok = tiny_tokenizer(style)
    shape = "llama-tiny" if arch == "llama" else "pythia-tiny"
    model = random_model(shape, vocab_size=len(tok), seed=seed)
    return model, tok


def save_tiny_checkpoint(path: str | Path, arch: str = "gpt_neox", *, seed: int = 0) -> Path:
    """Write a tiny model + tokenizer as an HF-format folder (config.json, model.safetensors, tokenizer)."""
    path = Path(path)
    model, tok = tiny_model(arch, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
