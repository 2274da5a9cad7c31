"""Planted families with a known answer, for tests, the benchmark and the docs (emergence.md §9.4-G, §9.5).

Two generators of valid score stores (one row per model × task × item × choice, ``loglik`` in nats):
:func:`planted_store` plants per-item latent margins (the emergence diagnostics' known answers) and
:func:`simulate_store` plants per-item laws of every choice's log-likelihood in log10 compute (the mass
model's known answers, ``capscale mass-sim``).

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

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from capscale.analysis import mass

__all__ = ["planted_store", "simulate_store", "sharded_store", "SCALE_ITEMS"]


def planted_store(kind: str = "linear", *, n_models: int = 10, n_items: int = 400, n_choices: int = 4,
                  x_range: tuple[float, float] = (20.0, 24.5), x_center: float | None = None, spread: float = 0.25,
                  slope: float = 2.0, noise: float = 0.5, x_kink: float = 22.5, slope_lo: float = 0.3,
                  slope_hi: float = 4.0, task: str = "planted", family: str = "planted",
                  seed: int = 0) -> pd.DataFrame:
    """A score store (one row per model x item x choice) with a planted per-item latent.

    Parameters
    ----------
    kind : {"linear", "kink", "flat", "const", "saturating"}
        ``linear``: crossing points concentrated around ``x_center`` (thresholding makes accuracy sharp);
        ``kink``: the latent's slope changes at ``x_kink`` (a genuine transition); ``flat``: crossing points
        uniform over the range widened by a quarter on each side (accuracy rises about evenly, no jump);
        ``const``: the latent does not depend on x (margin_i ~ N(0, 1.5) logits: accuracy stays put);
        ``saturating``: crossing points x*_i = lo − span/4 + Exp(span/3) (accuracy rises early and levels off).
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

    Returns
    -------
    DataFrame
        The store; ``attrs["expected_acc"]`` holds the planted truth, the expected accuracy of each model
        (mean over items of P(margin + noise > 0)), for calibration against the noiseless curve.
    """
    if kind not in ("linear", "kink", "flat", "const", "saturating"):
        raise ValueError(f"kind must be 'linear', 'kink', 'flat', 'const' or 'saturating', got {kind!r}")
    rng = np.random.default_rng(seed)
    x = np.linspace(x_range[0], x_range[1], n_models)
    if x_center is None:
        xc = x_kink + 0.5 if kind == "kink" else float(np.mean(x_range))
    else:
        xc = x_center
    beta = slope * np.exp(rng.normal(0, 0.15, n_items))
    span = x_range[1] - x_range[0]
    if kind == "flat":
        xstar = rng.uniform(x_range[0] - 0.25 * span, x_range[1] + 0.25 * span, n_items)
    elif kind == "saturating":
        xstar = x_range[0] - 0.25 * span + rng.exponential(span / 3, n_items)
    else:
        xstar = rng.normal(xc, spread, n_items)
    X = x[:, None]
    if kind == "kink":
        # upper branch: slope_hi·(x − x*); continuous at x_kink with slope_lo below it
        upper = slope_hi * (X - xstar[None, :])
        at_k = slope_hi * (x_kink - xstar)[None, :]
        margin = np.where(X >= x_kink, upper, at_k + slope_lo * (X - x_kink))
    elif kind == "const":
        margin = np.broadcast_to(rng.normal(0.0, 1.5, n_items)[None, :], (n_models, n_items))
    else:
        margin = beta[None, :] * (X - xstar[None, :])
    clean = np.asarray(margin, dtype=np.float64)
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
    # a log-probability cannot be positive: where a distractor would rise above 0 nats (a large negative
    # margin), shift that model x item row down so its largest choice is at 0 (margins and p_choices unchanged)
    ll -= np.maximum(ll.max(axis=2, keepdims=True), 0.0)
    nr = n_items * n_choices
    m_idx = np.repeat(np.arange(n_models), nr)
    ch = np.tile(np.arange(n_choices), n_models * n_items)
    out = pd.DataFrame({
        "model_id": np.array([f"{family}-{m:02d}" for m in range(n_models)])[m_idx], "family": family,
        "params": params[m_idx], "tokens": tokens[m_idx], "task": task,
        "doc_id": np.tile(np.repeat(np.arange(n_items), n_choices), n_models), "choice_idx": ch,
        "is_correct": ch == np.tile(np.repeat(gold_idx, n_choices), n_models), "loglik": ll.ravel(),
        "compute": (6.0 * params * tokens).astype(float)[m_idx], "n_chars": 10, "n_bytes": 10,
    })
    # the planted truth: expected accuracy per model, P(margin + noise > 0) averaged over the items
    expected = ndtr(clean / noise) if noise > 0 else (clean > 0).astype(float)
    out.attrs["expected_acc"] = expected.mean(axis=1).tolist()
    return out


def simulate_store(n_items: int = 400, n_choices: int = 4, x: tuple[float, ...] = (19.0, 19.5, 20.0, 20.5, 21.0,
                   21.5, 22.0), *, task: str = "sim", family: str = "sim", seed: int = 0,
                   slope_correct: tuple[float, float] = (1.2, 0.6), slope_incorrect: tuple[float, float] = (0.8, 0.5),
                   intercept_sd: float = 1.5, item_sd: float = 0.3, choice_sd: float = 0.25, model_sd: float = 0.0,
                   saturation: float = 0.0, x0: float = 20.5, return_truth: bool = False
                   ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """A score store whose per-item log-likelihoods follow known laws in x = log10 compute.

    ℓ_{j,i}(x) = a_{j,i} + b_{j,i}·u(x) + e (nats), with u = x − x0 (or the saturating basis
    :func:`capscale.analysis.mass.basis` with rate ``saturation``); choice 0 is the gold.

    Parameters
    ----------
    n_items, n_choices : int
        Items of the task and choices per item.
    x : tuple of float
        log10 compute (FLOPs) of the models, one model ``<family>-m<index>`` per value.
    task, family : str
        Names written to the store.
    seed : int
        Seed of every random draw.
    slope_correct, slope_incorrect : (float, float)
        Mean and SD of the per-item slopes b (nats per decade of compute) of the gold and of the other
        choices.
    intercept_sd : float
        SD of the intercepts a ~ N(−10, intercept_sd) (nats at x0); the gold's are raised by 0.5.
    item_sd, choice_sd, model_sd : float
        Noise SDs (nats): shared by all choices of an item and model, per choice, and per model (on the
        gold only).
    saturation : float
        Saturation rate k per decade (0: linear laws).
    x0 : float
        log10 compute at which a is the value and b the slope.
    return_truth : bool
        Also return the planted laws.

    Returns
    -------
    pandas.DataFrame or (DataFrame, DataFrame)
        The store (models have tokens = 20·params and 6·N·D = 10^x, rounded to integers); with
        ``return_truth`` also the planted laws (``doc_id, choice_idx, is_correct, intercept, slope``).
    """
    rng = np.random.default_rng(seed)
    K = n_choices
    b = np.empty((n_items, K))
    a = rng.normal(-10.0, intercept_sd, (n_items, K))
    a[:, 0] += 0.5
    b[:, 0] = rng.normal(*slope_correct, n_items)
    b[:, 1:] = rng.normal(*slope_incorrect, (n_items, K - 1))
    rows = []
    for m, xm in enumerate(x):
        C = 10.0**xm
        params = int(round(math.sqrt(C / 120.0)))
        tokens = int(round(C / (6.0 * params)))
        u = mass.basis(np.array([xm]), x0, saturation)[0] if saturation > 0 else xm - x0
        ll = a + b * u + item_sd * rng.standard_normal((n_items, 1)) + choice_sd * rng.standard_normal((n_items, K))
        ll[:, 0] += model_sd * rng.standard_normal()
        for j in range(n_items):
            for c in range(K):
                rows.append((f"{family}-m{m}", family, params, tokens, task, j, c, c == 0, float(ll[j, c])))
    df = pd.DataFrame(rows, columns=["model_id", "family", "params", "tokens", "task", "doc_id", "choice_idx",
                                     "is_correct", "loglik"])
    df["compute"] = 6.0 * df["params"].astype(float) * df["tokens"].astype(float)
    if not return_truth:
        return df
    truth = pd.DataFrame({"doc_id": np.repeat(np.arange(n_items), K), "choice_idx": np.tile(np.arange(K), n_items),
                          "is_correct": np.tile(np.arange(K) == 0, n_items), "intercept": a.ravel(),
                          "slope": b.ravel()})
    return df, truth



#: Items per task of :func:`sharded_store`'s default family at 100M per-choice rows (500 checkpoints, K = 4).
SCALE_ITEMS = (25_000, 12_500, 7_500, 5_000)


def sharded_store(out: str | os.PathLike, *, n_checkpoints: int = 500, n_sizes: int = 10,
                  items: tuple[int, ...] = SCALE_ITEMS, n_choices: int = 4, seed: int = 0, family: str = "simfam",
                  x_range: tuple[float, float] = (18.0, 23.0)) -> dict[str, Any]:
    """Write a family-scale store to disk as ``capscale eval`` does: one Parquet shard per (checkpoint, task).

    A Pythia-shaped family: ``n_sizes`` sizes log-spaced in N, each with ``n_checkpoints / n_sizes`` training
    checkpoints log-spaced in D, so log10 compute spans ``x_range``. Task ``t`` has ``items[t]`` items with
    ``n_choices`` choices; the gold's log-likelihood (nats) rises with a per-item slope in log10 compute, the
    others sit at per-item gaps below it, plus per-(checkpoint, item, choice) noise, so every chain metric moves
    with scale and items differ. Shards carry the columns ``capscale eval`` writes (``step``, ``n_tokens``,
    ``n_chars``, ``n_bytes``, ``is_greedy``, ``revision``; strings as plain Parquet strings, as pandas writes
    them), in rows sorted by item and choice.

    Rows: ``n_checkpoints * sum(items) * n_choices`` (100M with the defaults). Generated shard by shard in bounded
    memory and deterministic in ``seed``.

    Returns
    -------
    dict
        ``rows``, ``shards``, ``bytes`` (on disk), ``checkpoints``, ``items`` (per task).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from capscale.data import store as _store

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    K = n_choices
    per_size = max(1, n_checkpoints // n_sizes)
    lo, hi = x_range
    span = hi - lo
    # sizes: log10 N evenly over 45% of the span; steps: log10 D over the rest (C = 6 N D)
    log_n = np.linspace(7.0, 7.0 + 0.45 * span, n_sizes)
    ckpts = []
    for si, ln in enumerate(log_n):
        for ci in range(per_size):
            if len(ckpts) >= n_checkpoints:
                break
            x = lo + 0.45 * span * si / max(1, n_sizes - 1) + 0.55 * span * (ci + 1) / per_size
            params = int(round(10**ln))
            tokens = int(round(10**x / (6.0 * params)))
            step = (ci + 1) * 1000
            ckpts.append((f"{family}-{si}@step{step}", params, max(tokens, 1), step, x))
    while len(ckpts) < n_checkpoints:  # n_checkpoints not a multiple of n_sizes: more steps of the largest size
        m, params, tokens, step, x = ckpts[-1]
        ckpts.append((f"{family}-{n_sizes - 1}@step{step + 1000}", params, tokens + 1, step + 1000, x))
    n_rows = 0
    n_shards = 0
    n_bytes = 0
    for t, n_items in enumerate(items):
        task = f"task{t}"
        rng = np.random.default_rng([seed, t])
        gold = rng.integers(0, K, n_items)
        a = rng.normal(-9.0, 2.0, n_items)                  # gold log-likelihood at x = lo (nats)
        b = rng.normal(0.9, 0.5, n_items)                   # its slope per decade of compute
        gap = rng.exponential(1.0, (n_items, K))            # the other choices: at per-item gaps below the gold ...
        shift = rng.normal(1.5, 1.5, n_items)               # ... starting above it for small models
        gslope = rng.normal(0.35, 0.2, n_items)
        chars = rng.integers(3, 40, (n_items, K))
        doc = np.repeat(np.arange(n_items, dtype=np.int64), K)
        cidx = np.tile(np.arange(K, dtype=np.int64), n_items)
        is_gold = (cidx == np.repeat(gold, K))
        for mi, (model_id, params, tokens, step, x) in enumerate(ckpts):
            r = np.random.default_rng([seed, t, mi])
            u = x - lo
            g_ll = a + b * u
            others = (g_ll + shift - gslope * u)[:, None] - gap
            ll = np.where(is_gold.reshape(n_items, K), g_ll[:, None], others)
            ll = ll + r.normal(0.0, 0.6, (n_items, 1)) + r.normal(0.0, 0.4, (n_items, K))
            ll -= np.maximum(ll.max(axis=1, keepdims=True), 0.0) + 1e-3   # log-probabilities: below 0
            flat = ll.ravel()
            greedy = is_gold & (flat > -2.0)
            n = n_items * K
            table = pa.table({
                "model_id": pa.array([model_id] * n, pa.string()),
                "family": pa.array([family] * n, pa.string()),
                "params": pa.array(np.full(n, params, dtype=np.int64)),
                "tokens": pa.array(np.full(n, tokens, dtype=np.int64)),
                "step": pa.array(np.full(n, step, dtype=np.int64)),
                "task": pa.array([task] * n, pa.string()),
                "doc_id": pa.array(doc), "choice_idx": pa.array(cidx), "is_correct": pa.array(is_gold),
                "loglik": pa.array(flat), "n_tokens": pa.array((chars.ravel() // 4 + 1).astype(np.int64)),
                "n_chars": pa.array(chars.ravel().astype(np.int64)),
                "n_bytes": pa.array(chars.ravel().astype(np.int64)), "is_greedy": pa.array(greedy),
                "revision": pa.array([f"step{step}"] * n, pa.string()),
            })
            path = out / _store.shard_name(model_id, task)
            tmp = path.with_name("_tmp." + path.name)
            pq.write_table(table, tmp)
            os.replace(tmp, path)
            n_rows += n
            n_shards += 1
            n_bytes += path.stat().st_size
    return {"rows": n_rows, "shards": n_shards, "bytes": n_bytes, "checkpoints": len(ckpts), "items": list(items)}
