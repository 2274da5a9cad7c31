"""A simulated cross-family table with planted capability factors and family compute efficiencies.

:func:`simulate_cross_family` draws the data-generating process the observational method assumes (Ruan et al.
2024), so that tests can check that the method recovers what was planted:

* each family f has a compute efficiency θ_f (K values) and every family shares the slope β: a model of family f
  with compute C has capabilities S = θ_f + β·log10(C / 1e21) + η, η ~ N(0, ``capability_noise``²);
* benchmark b has loadings w_b (K values), an intercept a_b and a chance level c_b (its floor; ceiling 1); its
  score is y_b = c_b + (1 − c_b)·σ(a_b + w_b·S) + ε, ε ~ N(0, ``score_noise``²), clipped to [0, 1].

Values are fractions in [0, 1]; C = 6·N·D FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["CrossFamilyTruth", "simulate_cross_family"]


@dataclass
class CrossFamilyTruth:
    """What :func:`simulate_cross_family` planted.

    Attributes
    ----------
    loadings : numpy.ndarray
        w, benchmarks x K.
    intercepts : numpy.ndarray
        a per benchmark.
    chance : dict of str to float
        c per benchmark.
    slope : numpy.ndarray
        β (K,), capability per decade of compute.
    offsets : dict of str to numpy.ndarray
        θ_f per family (K,).
    capabilities : pandas.DataFrame
        Per model: model_id, family and S (columns ``s0`` .. ``s{K-1}``), noise included.
    """

    loadings: np.ndarray
    intercepts: np.ndarray
    chance: dict[str, float]
    slope: np.ndarray
    offsets: dict[str, np.ndarray]
    capabilities: pd.DataFrame


def simulate_cross_family(*, n_families: int = 5, models_per_family: int = 6, n_benchmarks: int = 8, rank: int = 1,
                          offset_sd: float = 0.6, score_noise: float = 0.005, capability_noise: float = 0.03,
                          seed: int = 0) -> tuple[pd.DataFrame, CrossFamilyTruth]:
    """Simulate a cross-family ladder table (final checkpoints; long format of :mod:`capscale.data.ladder_table`).

    Parameters
    ----------
    n_families, models_per_family : int
        Families ``fam0`` .. and models per family; family f spans N from 1e8 to about 1e10 (log-uniform, jittered),
        D = 20·N·(1 + f/2) tokens (families differ in tokens per parameter too).
    n_benchmarks : int
        Benchmarks ``bench0`` ..; chance levels cycle through 0.25, 0.5, 0 and 0.2.
    rank : int
        K, the number of capability factors.
    offset_sd : float
        Spread of the families' compute efficiencies θ_f (capability units).
    score_noise, capability_noise : float
        Standard deviations of ε (fraction) and η (capability units).
    seed : int
        Seed.

    Returns
    -------
    (ladder, truth)
        The table (columns model_id, family, params, tokens, compute, step, task, metric = ``acc``, value, run) and
        the planted :class:`CrossFamilyTruth`.
    """
    rng = np.random.default_rng(seed)
    K = int(rank)
    slope = np.abs(rng.normal(1.0, 0.25, K)) * np.r_[1.0, rng.uniform(0.3, 0.7, K - 1)]
    W = np.abs(rng.normal(1.0, 0.3, (n_benchmarks, K)))
    if K > 1:  # benchmarks lean on different factors
        W = W * rng.uniform(0.1, 1.0, (n_benchmarks, K))
        W[np.arange(n_benchmarks), np.arange(n_benchmarks) % K] += 1.0
    a = rng.uniform(-1.5, 0.5, n_benchmarks)
    cycle = [0.25, 0.5, 0.0, 0.2]
    tasks = [f"bench{j}" for j in range(n_benchmarks)]
    chance = {t: cycle[j % len(cycle)] for j, t in enumerate(tasks)}
    offsets = {f"fam{i}": rng.normal(0.0, offset_sd, K) for i in range(n_families)}
    rows, caps = [], []
    for i in range(n_families):
        fam = f"fam{i}"
        lo = 8.0 + rng.uniform(-0.2, 0.2)
        logn = np.sort(lo + np.linspace(0.0, 2.0, models_per_family) + rng.normal(0, 0.05, models_per_family))
        for k, ln in enumerate(logn):
            n = 10.0**ln
            d = 20.0 * n * (1 + i / 2)
            c = 6.0 * n * d
            s = offsets[fam] + slope * np.log10(c / 1e21) + rng.normal(0, capability_noise, K)
            mid = f"{fam}-m{k}"
            caps.append({"model_id": mid, "family": fam, **{f"s{q}": s[q] for q in range(K)}})
            for j, t in enumerate(tasks):
                y = chance[t] + (1 - chance[t]) / (1 + np.exp(-(a[j] + W[j] @ s)))
                y = float(np.clip(y + rng.normal(0, score_noise), 0.0, 1.0))
                rows.append({"model_id": mid, "family": fam, "params": n, "tokens": d, "compute": c, "step": np.nan,
                             "task": t, "metric": "acc", "value": y, "run": mid, "chance": chance[t]})
    truth = CrossFamilyTruth(W, a, chance, slope, offsets, pd.DataFrame(caps))
    return pd.DataFrame(rows), truth
