"""Planted families with a known answer, for tests, the benchmark and the docs (emergence.md §9.4-G, §9.5).

:func:`planted_store` writes a valid score store (per-choice log-likelihoods) for a ladder of
``n_models`` log-spaced in compute, where each item's latent margin ℓ_gold − max_{c≠gold} ℓ_c is

* ``"linear"``: m_{m,i} = β_i·(x_m − x*_i) + ε — improves linearly in x = log10 C, so mean
  choice log-odds is linear in x while accuracy = mean 1[m > 0] rises sharply where the crossing
  points x*_i ~ N(x_c, spread) cluster (metric-induced emergence);
* ``"kink"``: slope β_lo below ``x_kink`` and β_hi above it (a genuine change of the latent's
  scaling, visible in the continuous metric too);
* ``"flat"``: x* uniform over the range widened by a quarter on each side, so accuracy rises
  roughly linearly (smooth).

Below its crossing point an item's margin is negative for every model, so accuracy starts at 0, not at
chance 1/K (like exact-match scoring in the Mirage toy model). The gold's log-likelihood ``logp_vocab`` follows a smooth power law in compute (nats); the best
distractor sits ``margin`` below it and the others at fixed per-item gaps below that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["planted_store"]


def planted_store(kind: str = "linear", *, n_models: int = 10, n_items: int = 400, n_choices: int = 4,
                  x_range: tuple[float, float] = (20.0, 24.5), x_center: float | None = None, spread: float = 0.25,
                  slope: float = 2.0, noise: float = 0.5, x_kink: float = 22.5, slope_lo: float = 0.3,
                  slope_hi: float = 4.0, task: str = "planted", family: str = "planted",
                  seed: int = 0) -> pd.DataFrame:
    """A score store (one row per model x item x choice) with a planted per-item latent.

    Parameters
    ----------
    kind : {"linear", "kink", "flat"}
    x_range : (lo, hi)
        log10 compute (FLOPs) of the smallest and largest model; models are evenly spaced in x.
    x_center, spread : float
        Crossing points x*_i ~ N(x_center, spread) decades (default centre: middle of the range;
        ``x_kink + 0.5`` for ``kind="kink"``, so accuracy is near 0 below the kink).
    slope, noise : float
        Latent slope β (logits per decade; per item β_i = slope·exp(N(0, 0.15))) and per-model noise SD.
    x_kink, slope_lo, slope_hi : float
        For ``kind="kink"``: slopes below / above ``x_kink`` (the latent is continuous at the kink and
        crosses 0 at x*_i ~ N(x_center, spread) on the upper branch).
    """
    if kind not in ("linear", "kink", "flat"):
        raise ValueError(f"kind must be 'linear', 'kink' or 'flat', got {kind!r}")
    rng = np.random.default_rng(seed)
    x = np.linspace(x_range[0], x_range[1], n_models)
    if x_center is None:
        xc = x_kink + 0.5 if kind == "kink" else float(np.mean(x_range))
    else:
        xc = x_center
    beta = slope * np.exp(rng.normal(0, 0.15, n_items))
    if kind == "flat":
        span = x_range[1] - x_range[0]
        xstar = rng.uniform(x_range[0] - 0.25 * span, x_range[1] + 0.25 * span, n_items)
    else:
        xstar = rng.normal(xc, spread, n_items)
    X = x[:, None]
    if kind == "kink":
        # upper branch: slope_hi·(x − x*); continuous at x_kink with slope_lo below it
        upper = slope_hi * (X - xstar[None, :])
        at_k = slope_hi * (x_kink - xstar)[None, :]
        margin = np.where(X >= x_kink, upper, at_k + slope_lo * (X - x_kink))
    else:
        margin = beta[None, :] * (X - xstar[None, :])
    margin = margin + rng.normal(0, noise, margin.shape)
    # distractors: fixed per-item gaps below the best distractor; base = smooth power law (nats)
    gaps = np.concatenate([np.zeros((n_items, 1)), rng.exponential(1.0, (n_items, n_choices - 2))], axis=1)
    base = -(8.0 + rng.gamma(4.0, 1.0, n_items))[None, :] * 10 ** (-0.15 * (X - x_range[0]))
    gold_idx = rng.integers(0, n_choices, n_items)
    C = 10**x
    params = np.sqrt(C / 120.0).astype(np.int64)  # D = 20 N  =>  C = 6 N D = 120 N^2
    tokens = (20 * params).astype(np.int64)
    # distractor log-likelihoods: the best sits `margin` below the gold, the others fixed gaps lower
    dist = (base - margin)[:, :, None] - gaps[None, :, :]  # (n_models, n_items, n_choices - 1)
    ll = np.empty((n_models, n_items, n_choices))
    slot = np.arange(n_choices)[None, :] != gold_idx[:, None]  # (n_items, n_choices): distractor slots
    ll[:, slot] = dist.reshape(n_models, -1)
    ll[:, np.arange(n_items), gold_idx] = base
    nr = n_items * n_choices
    m_idx = np.repeat(np.arange(n_models), nr)
    ch = np.tile(np.arange(n_choices), n_models * n_items)
    return pd.DataFrame({
        "model_id": np.array([f"{family}-{m:02d}" for m in range(n_models)])[m_idx], "family": family,
        "params": params[m_idx], "tokens": tokens[m_idx], "task": task,
        "doc_id": np.tile(np.repeat(np.arange(n_items), n_choices), n_models), "choice_idx": ch,
        "is_correct": ch == np.tile(np.repeat(gold_idx, n_choices), n_models), "loglik": ll.ravel(),
        "compute": (6.0 * params * tokens).astype(float)[m_idx], "n_chars": 10, "n_bytes": 10,
    })
