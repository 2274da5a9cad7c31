"""Correct vs incorrect probability mass with scale: per-item laws and accuracy predicted from them.

Schaeffer et al. (2024) show that accuracy is hard to predict because it compares the correct
choice with a few specific incorrect ones; they suggest that "scaling laws for incorrect choices
might be achievable" but fit none (``docs/chain.md`` §5). This module fits them.

Quantities (per item, per model; log-likelihoods in nats; x = log10(compute / FLOPs), C = 6·N·D)
------------------------------------------------------------------------------------------------
==================  ==================================================================
``correct``         ℓ_c, log p_vocab of the gold continuation (max over golds)
``incorrect``       ℓ_i for every incorrect choice i ≠ c (one trajectory per choice)
``lse_incorrect``   LSE_{i≠c} ℓ_i, the log of the summed incorrect vocabulary mass
``max_incorrect``   max_{i≠c} ℓ_i, the best-competing incorrect choice
``margin``          ℓ_c − max_{i≠c} ℓ_i (acc = 1[margin > 0])
==================  ==================================================================

Per-item fits
-------------
Every trajectory is fitted against x with a two-coefficient law y = a + b·u_k(x), where
u_k(x) = (1 − exp(−k (x − x_ref)))/k and x_ref is the mean log10 compute of the training models:

* ``linear``: k = 0, u = x − x_ref (y is linear in log compute);
* ``saturating``: k > 0 (per decade), y approaches the asymptote a + b/k as compute grows (upwards
  when b > 0, downwards when b < 0).

In both forms a is the value and b the slope (nats per decade) at x_ref, so coefficients of items
with different forms are comparable and pooled together. The saturation rate k is shared by all
items of a (task, quantity) group: it minimises the summed residual sum of squares over the group
on a grid (0 … 3 per decade) by profile likelihood. **Form criterion** (per group, since a single
item's 5-10 points cannot tell the forms apart): the saturating form is used when the group has at
least ``min_models_saturating`` (default 5) distinct training computes and its AICc, summed over the
items with per-item residual variances and with k counted as one extra parameter, is lower than
the all-linear AICc by more than ``aicc_margin`` (default 2), AICc = Σ_j n_j ln(RSS_j/n_j) + 2P +
2P(P + 1)/(N − P − 1) (P = 3 per item (a, b, σ), + 1 for k; N = all points). Items with fewer than
``min_points_saturating`` (default 4) distinct computes stay linear.

Partial pooling (empirical Bayes). Within each (task, quantity) group the item coefficients
β_j = (a_j, b_j) are drawn from N(μ, T). μ and the between-item covariance T are estimated by the
method of moments from the per-item least-squares fits (T = Cov(β̂) − mean sampling covariance,
projected to positive definite); residual variances are shrunk toward a pooled value with a scaled
inverse-χ² prior whose degrees of freedom are estimated from the spread of log s² (limma's
moment estimator). The posterior of each item, computed in information form so that items with a
single model or a constant trajectory still get one, is

    P_j = (T⁻¹ + X_j'X_j / s̃_j²)⁻¹,   β̃_j = P_j (T⁻¹ μ + X_j'y_j / s̃_j²).

Accuracy from the masses
------------------------
At a target compute x*, the choices of item j have a joint normal predictive distribution: means
from the posterior laws of ``correct`` and of each ``incorrect`` choice, variances s̃² + u*'P u*
(residual plus parameter uncertainty), and correlations corr(correct, incorrect) and
corr(incorrect, incorrect) estimated per task from the standardised residuals (exchangeable;
never assumed zero). The predicted accuracy (``acc``, the default) is

    acc(x*) = (1/I) Σ_j P(ℓ_c > max_{i≠c} ℓ_i) = (1/I) Σ_j P(margin_j > 0),

by Monte Carlo over that distribution, so the best-competing incorrect choice is whichever wins in
each draw; ``p_choices`` (mean softmax probability of the gold) and ``brier`` (mean over choices, as
``chain.brier``) come from the same draws. Every draw also carries a model-level shift of the gold
shared by all items (its variance estimated from the training models' mean margin residuals,
widened by the leverage of x*), so the 90 % interval (5th-95th percentile of the draws' item means)
covers the realised metric of one held-out model, not only the item noise.

``acc_pair`` is the analytic two-variable version: the correct and the best-competing incorrect
log-likelihood (law fitted to the observed max_{i≠c} ℓ_i) are bivariate normal with correlation ρ_j
of the two laws' residuals (per item, shrunk toward the task's pooled value on the Fisher-z scale),
and acc = (1/I) Σ_j Φ(E[margin_j]/SD[margin_j]) with Var[margin] = v_c + v_m − 2ρ_j √(v_c v_m).
A maximum of diverging lines is convex in x, so a linear law for max_{i≠c} ℓ_i under-predicts the
best competitor when extrapolating; on simulated stores ``acc_pair`` over-predicts by 2-3 points
where ``acc`` is unbiased, hence the default.

Bad input: items observed by a single model, constant trajectories and non-finite (−inf)
log-likelihoods are handled and counted (``TaskFit.counts``), never dropped silently. Tasks marked
``multiple_input`` (Winogrande style, where ℓ_i are conditionals of the same suffix under different
contexts) are flagged in every output so that they are reported separately.

Examples
--------
>>> from capscale import mass
>>> sim = mass.simulate_store(n_items=200, seed=0)
>>> fits = mass.fit(sim[sim["model_id"] != "sim-m6"])
>>> pred = mass.predict_task(fits["sim"], 22.0)
>>> 0.0 <= pred["acc"].value <= 1.0
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from capscale.analysis import chain as _chain

__all__ = [
    "MassConfig",
    "GroupFit",
    "TaskFit",
    "MetricPrediction",
    "QUANTITIES",
    "SUPPORTED_METRICS",
    "trajectories",
    "fit",
    "fit_task",
    "predict_task",
    "predict_items",
    "fits_table",
    "covariation",
    "covariation_table",
    "simulate_store",
    "MassPredictor",
    "plot_mass_scatter",
    "plot_slope_scatter",
    "plot_predicted_vs_observed",
]

#: The per-item quantities fitted against log10 compute (see the module docstring).
QUANTITIES = ["correct", "incorrect", "lse_incorrect", "max_incorrect", "margin"]

#: Metrics :func:`predict_task` predicts, with the chain column each is compared with.
SUPPORTED_METRICS = {"acc": "acc", "acc_pair": "acc", "p_choices": "p_choices_correct", "brier": "brier"}
_METRIC_ALIASES = {"acc": "acc", "accuracy": "acc", "acc_pair": "acc_pair", "p_choices": "p_choices",
                   "p_choices_correct": "p_choices", "prob_choices_correct": "p_choices",
                   "brier": "brier", "brier_score": "brier", "brier_mean": "brier"}

_K_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class MassConfig:
    """Settings of the per-item fits and predictions.

    Attributes
    ----------
    min_models_saturating : int
        Minimum distinct training computes before the saturating form is considered for a group.
    min_points_saturating : int
        Minimum distinct computes of an item for it to use its group's saturating form (items with
        fewer stay linear).
    aicc_margin : float
        The saturating form must beat the linear one by more than this many AICc units.
    allow_saturating : bool
        Set False to force the linear form everywhere.
    k_grid : tuple of float
        Candidate saturation rates (per decade of compute); 0 is the linear form.
    pool : bool
        Partial pooling across the items of a task (False: independent per-item least squares,
        items with fewer than 2 distinct computes are then unfittable).
    n_draws : int
        Monte Carlo draws for intervals, ``p_choices`` and Brier.
    interval : float
        Central probability of the reported interval (0.9 = 5th to 95th percentile).
    seed : int
        Seed of the Monte Carlo draws.
    """

    min_models_saturating: int = 5
    min_points_saturating: int = 4
    aicc_margin: float = 2.0
    allow_saturating: bool = True
    k_grid: tuple[float, ...] = _K_GRID
    pool: bool = True
    n_draws: int = 400
    interval: float = 0.9
    seed: int = 0


@dataclass
class GroupFit:
    """Fits of one quantity for all rows (items, or item × choice) of one task.

    Arrays are indexed by row; ``keys`` names the rows (``doc_id``, plus ``choice_idx`` for the
    per-choice ``incorrect`` group). Coefficients (a, b) are value and slope (nats per decade of
    compute) at ``x_ref``; ``beta_ols`` are per-row least squares (NaN where not identified),
    ``beta`` the pooled posterior means, ``post_cov`` their posterior covariances.
    """

    quantity: str
    keys: pd.DataFrame
    x: np.ndarray  # (M,) log10 compute of the training models
    Y: np.ndarray  # (R, M) observed values, NaN where missing or non-finite
    x_ref: float
    k_task: float
    k: np.ndarray  # (R,) 0 = linear, >0 = saturating
    n: np.ndarray  # (R,) finite points
    n_distinct_x: np.ndarray
    beta_ols: np.ndarray  # (R, 2)
    s2_ols: np.ndarray  # (R,)
    beta: np.ndarray  # (R, 2)
    post_cov: np.ndarray  # (R, 2, 2)
    s2: np.ndarray  # (R,) shrunk residual variance
    status: np.ndarray  # (R,) str
    mu: np.ndarray  # (2,)
    T: np.ndarray  # (2, 2)
    prior_df: float
    prior_s2: float
    n_nonfinite: np.ndarray  # (R,) points excluded because not finite
    pooled: bool

    @property
    def form(self) -> np.ndarray:
        return np.where(self.k > 0, "saturating", "linear")

    def basis(self, x: float | np.ndarray) -> np.ndarray:
        """u_k(x) for every row at the given x (shape (R,) or (R, len(x)))."""
        return _basis(np.asarray(x, dtype=float), self.x_ref, self.k)

    def mean(self, x: float) -> np.ndarray:
        u = self.basis(x)
        return self.beta[:, 0] + self.beta[:, 1] * u

    def param_var(self, x: float) -> np.ndarray:
        u = self.basis(x)
        P = self.post_cov
        return P[:, 0, 0] + 2 * u * P[:, 0, 1] + u * u * P[:, 1, 1]

    def fitted(self) -> np.ndarray:
        """Posterior fitted values at the training x, (R, M)."""
        U = _basis_rows(self.x, self.x_ref, self.k)
        return self.beta[:, :1] + self.beta[:, 1:] * U

    def residuals(self) -> np.ndarray:
        return self.Y - self.fitted()


@dataclass
class TaskFit:
    """All fits of one task (one family): see :func:`fit_task`."""

    task: str
    family: str | None
    multiple_input: bool
    models: pd.DataFrame  # model_id, params, tokens, compute, x (training models, sorted by compute)
    groups: dict[str, GroupFit]
    items: pd.DataFrame  # doc_id, n_choices, gold choice_idx, row index into each item group
    rho: np.ndarray  # (I,) residual correlation of correct vs max_incorrect, shrunk
    rho_pooled: float
    corr_ci: float  # exchangeable residual correlation correct vs incorrect choices
    corr_ii: float  # between incorrect choices
    shared_var: float  # variance of the model-level margin shift (nats^2)
    counts: dict[str, int]
    config: MassConfig = field(default_factory=MassConfig)


@dataclass
class MetricPrediction:
    """A predicted task-level metric with its interval (same fields as ``capscale.analysis.predict.Prediction``)."""

    value: float
    lower: float
    upper: float
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Trajectories
# ----------------------------------------------------------------------------------------------


def _log10_compute(df: pd.DataFrame) -> np.ndarray:
    c = df["compute"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(c)


def trajectories(store_df: pd.DataFrame, *, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-item trajectories over log10 compute, in long form.

    Parameters
    ----------
    store_df : pandas.DataFrame
        A score store (one row per model × task × item × choice, ``loglik`` in nats).
    items : pandas.DataFrame, optional
        ``chain.compute(store_df)`` if already computed.

    Returns
    -------
    pandas.DataFrame
        Columns ``family, task, doc_id, model_id, compute`` (FLOPs), ``log10_compute``,
        ``quantity`` (one of :data:`QUANTITIES`), ``choice_idx`` (−1 except for ``incorrect``),
        ``value`` (nats; may be ±inf or NaN where a log-likelihood is −inf) and ``multiple_input``.
    """
    if items is None:
        items = _chain.compute(store_df)
    mi = items["multiple_input"].astype(bool) if "multiple_input" in items else False
    base = items[["task", "doc_id", "model_id", "compute"]].copy()
    base["family"] = items["family"].to_numpy() if "family" in items else None
    base["log10_compute"] = _log10_compute(items)
    base["multiple_input"] = mi
    frames = []
    for q, col in (("correct", "log_p_vocab_correct"), ("lse_incorrect", "log_p_vocab_incorrect"),
                   ("max_incorrect", "max_incorrect"), ("margin", "margin")):
        f = base.copy()
        f["quantity"] = q
        f["choice_idx"] = -1
        f["value"] = items[col].to_numpy(dtype=float)
        frames.append(f)
    inc = _incorrect_rows(store_df)
    if len(inc):
        key = items[["task", "doc_id", "model_id", "family", "multiple_input"]].copy() if "multiple_input" in \
            items else items[["task", "doc_id", "model_id", "family"]].assign(multiple_input=False)
        f = inc.merge(key, on=["task", "doc_id", "model_id"], how="left", suffixes=("_s", ""))
        f["log10_compute"] = _log10_compute(f)
        f["quantity"] = "incorrect"
        f["value"] = f["loglik"].astype(float)
        frames.append(f[["family", "task", "doc_id", "model_id", "compute", "log10_compute", "quantity",
                         "choice_idx", "value", "multiple_input"]])
    out = pd.concat(frames, ignore_index=True)
    cols = ["family", "task", "doc_id", "model_id", "compute", "log10_compute", "quantity", "choice_idx", "value",
            "multiple_input"]
    return out[cols].sort_values(["task", "quantity", "doc_id", "choice_idx", "compute"], kind="stable"
                                 ).reset_index(drop=True)


def _incorrect_rows(store_df: pd.DataFrame) -> pd.DataFrame:
    from capscale.data import store as _store

    df = store_df
    if "compute" not in df.columns or df["compute"].isna().any():
        df = _store.normalize(df)
    corr = df["is_correct"].astype(str).str.lower().isin(["true", "1"]) if df["is_correct"].dtype != bool \
        else df["is_correct"]
    return df.loc[~corr.to_numpy(), ["task", "doc_id", "model_id", "compute", "choice_idx", "loglik"]]


# ----------------------------------------------------------------------------------------------
# Numerical core: per-row two-coefficient fits with empirical-Bayes pooling
# ----------------------------------------------------------------------------------------------


def _basis(x: np.ndarray | float, x_ref: float, k: np.ndarray | float) -> np.ndarray:
    """u_k(x) = (1 − e^{−k(x − x_ref)})/k, and x − x_ref where k = 0 (elementwise, broadcasting).

    Computed as d·exprel(−k·d) with d = x − x_ref (``scipy.special.exprel(z) = (e^z − 1)/z``, 1 at z = 0), which is
    exact for k = 0 and keeps full precision for tiny k, where ``expm1(−k·d)/k`` underflows to 0.
    """
    from scipy.special import exprel

    k = np.asarray(k, dtype=float)
    d = np.asarray(x, dtype=float) - x_ref
    with np.errstate(over="ignore", invalid="ignore"):
        return d * exprel(np.where(k > 0, -k * d, 0.0))


def _basis_rows(x: np.ndarray, x_ref: float, k: np.ndarray) -> np.ndarray:
    """(R, M) basis: row r uses rate k[r] at the M compute values x."""
    return _basis(np.asarray(x, dtype=float)[None, :], x_ref, np.asarray(k, dtype=float)[:, None])


def _ols_rows(U: np.ndarray, Y: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise least squares of y on [1, u] with 0/1 weights; returns beta (R,2), RSS (R,), det (R,)."""
    Yz = np.where(W, Y, 0.0)
    Uz = np.where(W, U, 0.0)
    S0 = W.sum(1).astype(float)
    S1 = Uz.sum(1)
    S2 = (Uz * Uz).sum(1)
    Sy = Yz.sum(1)
    Suy = (Uz * Yz).sum(1)
    det = S0 * S2 - S1 * S1
    scale = np.maximum(S0 * S2, 1e-300)
    ok = det > 1e-10 * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(ok, (S0 * Suy - S1 * Sy) / np.where(ok, det, 1.0), np.nan)
        a = np.where(ok, (Sy - b * S1) / np.where(S0 > 0, S0, 1.0), np.nan)
    res = np.where(W, Y - a[:, None] - b[:, None] * U, 0.0)
    rss = np.where(ok, (res * res).sum(1), np.nan)
    return np.stack([a, b], 1), rss, np.where(ok, det, 0.0)


def _aicc(n: np.ndarray, rss: np.ndarray, p: int) -> np.ndarray:
    n = n.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rss_f = np.maximum(rss, 1e-12 * np.maximum(n, 1.0))
        out = n * np.log(rss_f / n) + 2 * p + 2 * p * (p + 1) / (n - p - 1)
    return np.where(n - p - 1 >= 1, out, np.inf)


def _shrink_variances(s2: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, float, float]:
    """limma-style moment estimate of a scaled inverse-χ² prior (d0, s0²) and posterior variances."""
    use = (d >= 1) & np.isfinite(s2) & (s2 > 0)
    if use.sum() == 0:
        pos = s2[np.isfinite(s2) & (s2 > 0)]
        s0 = float(np.median(pos)) if len(pos) else 1e-12
        return np.full_like(s2, s0, dtype=float), math.inf, s0
    dd = d[use].astype(float)
    e = np.log(s2[use]) - special.digamma(dd / 2) + np.log(dd / 2)
    emean = float(e.mean())
    extra = float(e.var(ddof=1) - special.polygamma(1, dd / 2).mean()) if use.sum() > 2 else 0.0
    if extra > 0:
        d0 = 2.0 * _trigamma_inverse(extra)
        s0 = float(np.exp(emean + special.digamma(d0 / 2) - np.log(d0 / 2)))
    else:
        d0 = math.inf
        s0 = float(np.exp(emean))
    s0 = max(s0, 1e-12)
    s2c = np.where(np.isfinite(s2), s2, 0.0)
    dz = np.where(np.isfinite(s2), d, 0).astype(float)
    post = np.full_like(s2, s0, dtype=float) if math.isinf(d0) else (d0 * s0 + dz * s2c) / (d0 + dz)
    return np.maximum(post, 1e-12), d0, s0


def _trigamma_inverse(y: float) -> float:
    """Solve trigamma(x) = y for x > 0 (Newton's method, as in limma)."""
    if y > 1e7:
        return 1.0 / math.sqrt(y)
    if y < 1e-6:
        return 1.0 / y
    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = float(special.polygamma(1, x))
        dif = tri * (1 - tri / y) / float(special.polygamma(2, x))
        x = x + dif
        if -dif / x < 1e-8:
            break
    return x


def _fit_group(quantity: str, keys: pd.DataFrame, Y: np.ndarray, x: np.ndarray, cfg: MassConfig) -> GroupFit:
    """Fit one (task, quantity) group: form choice, per-row least squares, empirical-Bayes pooling."""
    R, M = Y.shape
    raw = np.asarray(Y, dtype=float)
    W = np.isfinite(raw)
    n_nonfinite = ((~W) & ~np.isnan(raw)).sum(1)  # ±inf points (from −inf logliks)
    Yc = np.where(W, raw, np.nan)
    n = W.sum(1)
    xs = np.asarray(x, dtype=float)
    n_distinct = np.array([len(np.unique(xs[w])) for w in W]) if R else np.zeros(0, int)
    x_ref = float(np.mean(np.unique(xs))) if M else 0.0

    # form choice: one saturation rate k per group (profile likelihood over the grid), accepted when the
    # group's AICc (per-row σ, k counted once) beats the all-linear fit by more than cfg.aicc_margin
    good = n_distinct >= 3
    k_task = 0.0
    U0 = np.broadcast_to(xs - x_ref, (R, M))
    _, rss0, _ = _ols_rows(U0, Yc, W)
    good &= np.isfinite(rss0)
    if cfg.allow_saturating and good.any() and len(np.unique(xs)) >= cfg.min_models_saturating:
        ng = n[good].astype(float)

        def prof(rss: np.ndarray) -> float:
            return float(np.sum(ng * np.log(np.maximum(rss[good], 1e-12) / ng)))

        N, P = float(ng.sum()), 3.0 * good.sum()
        l_lin = prof(rss0)
        best_l, best_k = l_lin, 0.0
        for kk in cfg.k_grid:
            if kk <= 0:
                continue
            _, rssk, _ = _ols_rows(np.broadcast_to(_basis(xs, x_ref, kk), (R, M)), Yc, W)
            lk = prof(np.where(np.isfinite(rssk), rssk, rss0))
            if lk < best_l:
                best_l, best_k = lk, float(kk)
        if best_k > 0 and N - P - 2 >= 1:
            aicc_lin = l_lin + 2 * P + 2 * P * (P + 1) / (N - P - 1)
            aicc_sat = best_l + 2 * (P + 1) + 2 * (P + 1) * (P + 2) / (N - P - 2)
            if aicc_sat < aicc_lin - cfg.aicc_margin:
                k_task = best_k
    k = np.where(n_distinct >= cfg.min_points_saturating, k_task, 0.0) if k_task > 0 else np.zeros(R)
    U = _basis_rows(xs, x_ref, k)
    beta_ols, rss, det = _ols_rows(U, Yc, W)
    d = np.maximum(n - 2, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s2_ols = np.where((d > 0) & np.isfinite(rss), rss / np.maximum(d, 1), np.nan)
    s2, d0, s0 = _shrink_variances(s2_ols, d)

    Uz = np.where(W, U, 0.0)
    Yz = np.where(W, Yc, 0.0)
    XtX = np.empty((R, 2, 2))
    XtX[:, 0, 0] = W.sum(1)
    XtX[:, 0, 1] = XtX[:, 1, 0] = Uz.sum(1)
    XtX[:, 1, 1] = (Uz * Uz).sum(1)
    Xty = np.stack([Yz.sum(1), (Uz * Yz).sum(1)], 1)

    # between-row distribution of the coefficients (method of moments)
    est = (n_distinct >= 3) & np.all(np.isfinite(beta_ols), 1)
    mu = np.array([np.nan, np.nan])
    T = np.full((2, 2), np.nan)
    pooled = bool(cfg.pool and est.sum() >= 3)
    if est.any():
        mu = beta_ols[est].mean(0)
    if pooled:
        B = beta_ols[est]
        covb = np.cov(B.T, ddof=1)
        inv = np.linalg.inv(XtX[est])
        samp = (s2[est, None, None] * inv).mean(0)
        T = covb - samp
        w, V = np.linalg.eigh((T + T.T) / 2)
        floor = 1e-6 * max(float(np.max(np.diag(covb))), 1e-12)
        T = (V * np.maximum(w, floor)) @ V.T
        Tinv = np.linalg.inv(T)
        A = Tinv[None] + XtX / s2[:, None, None]
        P = np.linalg.inv(A)
        rhs = (Tinv @ mu)[None] + Xty / s2[:, None]
        beta = np.einsum("rij,rj->ri", P, rhs)
    else:
        beta = beta_ols.copy()
        P = np.full((R, 2, 2), np.nan)
        okr = np.all(np.isfinite(beta_ols), 1) & (det > 0)
        if okr.any():
            P[okr] = s2[okr, None, None] * np.linalg.inv(XtX[okr])

    status = np.full(R, "ok", dtype=object)
    yr = np.where(W, Yc, np.nan)
    with np.errstate(invalid="ignore"):
        const = (n >= 2) & (np.nanmax(np.where(W, yr, -np.inf), 1) == np.nanmin(np.where(W, yr, np.inf), 1))
    status[n_nonfinite > 0] = "nonfinite_points"
    status[const] = "constant"
    status[(n_distinct <= 1) & (n >= 1)] = "single_model"
    status[n == 0] = "no_points"
    unfit = ~np.all(np.isfinite(beta), 1)
    status[unfit & (n > 0)] = np.where(n[unfit & (n > 0)] == 1, "single_model_unpooled", "unfittable")
    return GroupFit(quantity=quantity, keys=keys.reset_index(drop=True), x=xs, Y=Yc, x_ref=x_ref, k_task=k_task, k=k,
                    n=n, n_distinct_x=n_distinct, beta_ols=beta_ols, s2_ols=s2_ols, beta=beta, post_cov=P, s2=s2,
                    status=status, mu=mu, T=T, prior_df=d0, prior_s2=s0, n_nonfinite=n_nonfinite, pooled=pooled)


def _eb_fisher(r: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrink per-row correlations toward their pooled value on the Fisher-z scale."""
    r = np.clip(r, -0.999, 0.999)
    ok = np.isfinite(r) & (df >= 2)
    if not ok.any():
        return np.zeros_like(r), 0.0
    z = np.arctanh(r)
    v = 1.0 / np.maximum(df - 1.0, 1.0)
    w = 1.0 / v[ok]
    z0 = float(np.sum(w * z[ok]) / np.sum(w))
    tau2 = max(0.0, float(np.var(z[ok], ddof=1) - np.mean(v[ok]))) if ok.sum() > 2 else 0.0
    if tau2 <= 0:
        zt = np.full_like(r, z0)
    else:
        zt = np.where(ok, (z / v + z0 / tau2) / (1 / v + 1 / tau2), z0)
    return np.tanh(zt), float(np.tanh(z0))


def _row_corr(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise Pearson correlation of two residual matrices over their common finite points."""
    W = np.isfinite(A) & np.isfinite(B)
    a = np.where(W, A, 0.0)
    b = np.where(W, B, 0.0)
    n = W.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        am = a.sum(1) / np.maximum(n, 1)
        bm = b.sum(1) / np.maximum(n, 1)
        da = np.where(W, a - am[:, None], 0.0)
        db = np.where(W, b - bm[:, None], 0.0)
        r = (da * db).sum(1) / np.sqrt((da * da).sum(1) * (db * db).sum(1))
    return r, n


# ----------------------------------------------------------------------------------------------
# Fitting a task
# ----------------------------------------------------------------------------------------------


def fit(store_df: pd.DataFrame, *, task: str | list[str] | None = None, family: str | None = None,
        config: MassConfig | None = None, items: pd.DataFrame | None = None) -> dict[str, TaskFit]:
    """Fit the per-item mass laws of every task (or the given ones) of one family.

    Parameters
    ----------
    store_df : pandas.DataFrame
        Score store with the training models (``loglik`` in nats).
    task : str or list of str, optional
        Restrict to these tasks.
    family : str, optional
        Restrict to this family (required when the store holds several).
    config : MassConfig, optional
    items : pandas.DataFrame, optional
        ``chain.compute(store_df)`` if already computed.

    Returns
    -------
    dict of str to TaskFit
    """
    cfg = config or MassConfig()
    df = store_df
    if family is not None:
        df = df[df["family"].astype(str) == str(family)]
        if df.empty:
            raise ValueError(f"mass.fit: no rows of family {family!r} in the store "
                             f"(families: {sorted(store_df['family'].astype(str).unique())})")
    elif "family" in df and df["family"].nunique() > 1:
        raise ValueError(f"mass.fit: the store holds several families {sorted(df['family'].astype(str).unique())};"
                         " pass family=")
    if task is not None:
        tasks = [task] if isinstance(task, str) else list(task)
        missing = [t for t in tasks if t not in set(df["task"].astype(str))]
        if missing:
            raise ValueError(f"mass.fit: task(s) {missing} not in the store "
                             f"(tasks: {sorted(df['task'].astype(str).unique())})")
        df = df[df["task"].astype(str).isin(tasks)]
    if df.empty:
        raise ValueError("mass.fit: the store is empty")
    if items is None:
        items = _chain.compute(df)
    else:
        items = items[items["task"].isin(df["task"].unique()) & items["model_id"].isin(df["model_id"].unique())]
    inc = _incorrect_rows(df)
    out = {}
    for t in sorted(items["task"].astype(str).unique()):
        out[t] = fit_task(items[items["task"] == t], inc[inc["task"] == t], config=cfg)
    return out


def fit_task(items: pd.DataFrame, incorrect: pd.DataFrame, *, config: MassConfig | None = None) -> TaskFit:
    """Fit one task from its chain rows and its incorrect per-choice rows.

    Parameters
    ----------
    items : pandas.DataFrame
        ``chain.compute`` rows of one task (one row per model × item).
    incorrect : pandas.DataFrame
        Store rows of the incorrect choices of the same task (``doc_id, model_id, choice_idx, loglik``).
    config : MassConfig, optional
    """
    cfg = config or MassConfig()
    if items.empty:
        raise ValueError("mass.fit_task: no items")
    task = str(items["task"].iloc[0])
    if items["task"].nunique() > 1:
        raise ValueError(f"mass.fit_task: several tasks {sorted(items['task'].unique())}")
    models = (items[["model_id", "params", "tokens", "compute"]].drop_duplicates("model_id")
              .sort_values(["compute", "model_id"], kind="stable").reset_index(drop=True))
    models["x"] = _log10_compute(models)
    bad_x = ~np.isfinite(models["x"].to_numpy())
    counts: dict[str, int] = {"n_models": int(len(models)), "n_models_nonfinite_compute": int(bad_x.sum())}
    models = models[~bad_x].reset_index(drop=True)
    if len(models) == 0:
        raise ValueError(f"mass.fit_task: task {task!r}: no model has a positive finite compute")
    mi = bool(items["multiple_input"].astype(bool).any()) if "multiple_input" in items else False
    family = str(items["family"].iloc[0]) if "family" in items else None
    xs = models["x"].to_numpy()
    mids = models["model_id"].to_list()
    it = items[items["model_id"].isin(mids)]

    docs = pd.Index(pd.unique(it.sort_values("doc_id", kind="stable")["doc_id"]))
    groups: dict[str, GroupFit] = {}
    for q, col in (("correct", "log_p_vocab_correct"), ("lse_incorrect", "log_p_vocab_incorrect"),
                   ("max_incorrect", "max_incorrect"), ("margin", "margin")):
        Y = it.pivot(index="doc_id", columns="model_id", values=col).reindex(index=docs, columns=mids)
        groups[q] = _fit_group(q, pd.DataFrame({"doc_id": docs}), Y.to_numpy(dtype=float), xs, cfg)
    inc = incorrect[incorrect["model_id"].isin(mids)]
    if len(inc):
        # only (item, choice) pairs that exist: no cartesian product of doc_id x choice_idx
        Yi = (inc.set_index(["doc_id", "choice_idx", "model_id"])["loglik"].unstack("model_id")
              .reindex(columns=mids).sort_index())
        Yi = Yi[Yi.index.get_level_values(0).isin(docs)]
        keys = Yi.index.to_frame(index=False)
        groups["incorrect"] = _fit_group("incorrect", keys, Yi.to_numpy(dtype=float), xs, cfg)

    nch = it.groupby("doc_id")["n_choices"].max().reindex(docs)
    item_tab = pd.DataFrame({"doc_id": docs, "n_choices": nch.to_numpy()})

    # residual correlation of correct vs best competitor, per item, shrunk
    gc, gm = groups["correct"], groups["max_incorrect"]
    r, nr = _row_corr(gc.residuals(), gm.residuals())
    rho, rho_pooled = _eb_fisher(r, nr - 2)
    # exchangeable correlations among all choices (pooled standardised residuals)
    corr_ci, corr_ii = _exchangeable_corr(groups, docs)
    # model-level shift of the margin (common to all items)
    shared_var = _shared_margin_var(gc, gm)

    for q, g in groups.items():
        for s in ("single_model", "single_model_unpooled", "constant", "nonfinite_points", "no_points", "unfittable"):
            c = int((g.status == s).sum())
            if c:
                counts[f"{q}:{s}"] = c
        c = int((g.k > 0).sum())
        if c:
            counts[f"{q}:saturating"] = c
        counts[f"{q}:nonfinite_points_excluded"] = int(g.n_nonfinite.sum())
    counts["n_items"] = int(len(docs))
    counts["items_no_incorrect_choice"] = int((item_tab["n_choices"] <= 1).sum())
    return TaskFit(task=task, family=family, multiple_input=mi, models=models, groups=groups, items=item_tab,
                   rho=rho, rho_pooled=rho_pooled, corr_ci=corr_ci, corr_ii=corr_ii, shared_var=shared_var,
                   counts=counts, config=cfg)


def _std_resid(g: GroupFit) -> np.ndarray:
    return g.residuals() / np.sqrt(g.s2)[:, None]


def _exchangeable_corr(groups: dict[str, GroupFit], docs: pd.Index) -> tuple[float, float]:
    """Pooled correlations of standardised residuals: correct vs each incorrect, incorrect vs incorrect."""
    if "incorrect" not in groups:
        return 0.0, 0.0
    gi = groups["incorrect"]
    rc = _std_resid(groups["correct"])
    ri = _std_resid(gi)
    pos = pd.Index(docs).get_indexer(gi.keys["doc_id"])
    num_ci = den_c = den_i = 0.0
    a = rc[pos]
    w = np.isfinite(a) & np.isfinite(ri)
    num_ci = float(np.sum(np.where(w, a * ri, 0.0)))
    den_c = float(np.sum(np.where(w, a * a, 0.0)))
    den_i = float(np.sum(np.where(w, ri * ri, 0.0)))
    ci = num_ci / math.sqrt(den_c * den_i) if den_c > 0 and den_i > 0 else 0.0
    # incorrect vs incorrect: pairs within the same item
    num = d1 = d2 = 0.0
    order = np.argsort(pos, kind="stable")
    ps = pos[order]
    bounds = np.flatnonzero(np.diff(ps)) + 1
    for grp in np.split(order, bounds):
        if len(grp) < 2:
            continue
        Rg = ri[grp]
        for i in range(len(grp)):
            for j in range(i + 1, len(grp)):
                ww = np.isfinite(Rg[i]) & np.isfinite(Rg[j])
                num += float(np.sum(np.where(ww, Rg[i] * Rg[j], 0.0)))
                d1 += float(np.sum(np.where(ww, Rg[i] ** 2, 0.0)))
                d2 += float(np.sum(np.where(ww, Rg[j] ** 2, 0.0)))
    ii = num / math.sqrt(d1 * d2) if d1 > 0 and d2 > 0 else 0.0
    return float(np.clip(ci, -0.99, 0.99)), float(np.clip(ii, -0.99, 0.99))


def _shared_margin_var(gc: GroupFit, gm: GroupFit) -> float:
    """Variance (nats²) of a model-level shift of every item's margin around the per-item laws.

    The mean over items of the margin residuals of model m estimates its shift δ_m (plus averaged
    item noise); after the per-item fits absorbed a line, Σ δ_m² / (M − 2) estimates τ².
    """
    R = gc.residuals() - gm.residuals()
    M = R.shape[1]
    if M <= 2:
        return 0.0
    with np.errstate(invalid="ignore"):
        cnt = np.isfinite(R).sum(0)
        delta = np.where(cnt > 0, np.nansum(np.where(np.isfinite(R), R, 0.0), 0) / np.maximum(cnt, 1), np.nan)
    delta = delta[np.isfinite(delta)]
    if len(delta) <= 2:
        return 0.0
    item_var = np.nanmean(gc.s2 + gm.s2) / max(float(np.mean(cnt[cnt > 0])), 1.0)
    return max(0.0, float(np.sum(delta**2) / (len(delta) - 2) - item_var))


# ----------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------


def _leverage(tf: TaskFit, x_star: float) -> float:
    xs = tf.models["x"].to_numpy()
    if len(np.unique(xs)) < 2:
        return 0.0
    d = xs - xs.mean()
    return 1.0 / len(xs) + (x_star - xs.mean()) ** 2 / float(np.sum(d * d))


def predict_items(tf: TaskFit, x_star: float) -> pd.DataFrame:
    """Per-item predictive distribution of the correct and best-competing incorrect log-likelihoods.

    Parameters
    ----------
    tf : TaskFit
    x_star : float
        Target log10 compute (FLOPs).

    Returns
    -------
    pandas.DataFrame
        One row per item: ``mean_correct, sd_correct, mean_max_incorrect, sd_max_incorrect`` (nats),
        ``rho``, ``mean_margin, sd_margin`` and ``p_correct`` = P(margin > 0), plus ``status``
        (``ok``, or why the item has no prediction: ``unfittable``, ``single_model_unpooled``;
        ``no_incorrect_choice`` items get p_correct = 1, ``correct_never_finite`` items, whose gold
        log-likelihood was −inf at every training model, get 0, as the observed accuracy counts them).
    """
    gc, gm = tf.groups["correct"], tf.groups["max_incorrect"]
    mc, mm = gc.mean(x_star), gm.mean(x_star)
    vc = gc.s2 + gc.param_var(x_star)
    vm = gm.s2 + gm.param_var(x_star)
    rho = tf.rho
    cov = rho * np.sqrt(np.maximum(vc, 0) * np.maximum(vm, 0))
    var = np.maximum(vc + vm - 2 * cov, 1e-12)
    mu = mc - mm
    with np.errstate(invalid="ignore"):
        p = stats.norm.cdf(mu / np.sqrt(var))
    status = np.full(len(mu), "ok", dtype=object)
    bad = ~(np.isfinite(mu) & np.isfinite(var))
    status[bad] = np.where(gc.status[bad] == "ok", gm.status[bad], gc.status[bad])
    noinc = (tf.items["n_choices"].to_numpy() <= 1) | (np.all(np.isneginf(gm.Y) | np.isnan(gm.Y), 1)
                                                        & (gm.n_nonfinite > 0) & (gc.n > 0))
    p = np.where(noinc, 1.0, p)
    status[noinc] = "no_incorrect_choice"
    # the gold's log-likelihood was -inf at every training model: it cannot win (a tie if every choice was)
    never = gc.n == 0
    k_items = tf.items["n_choices"].to_numpy(dtype=float)
    p = np.where(never, np.where(gm.n == 0, 1.0 / np.maximum(k_items, 1.0), 0.0), p)
    status[never] = "correct_never_finite"
    return pd.DataFrame({"doc_id": tf.items["doc_id"].to_numpy(), "mean_correct": mc, "sd_correct": np.sqrt(vc),
                         "mean_max_incorrect": mm, "sd_max_incorrect": np.sqrt(vm), "rho": rho,
                         "mean_margin": mu, "sd_margin": np.sqrt(var), "p_correct": p, "status": status})


def predict_task(tf: TaskFit, x_star: float, *, metrics: tuple[str, ...] = ("acc", "acc_pair", "p_choices", "brier"),
                 n_draws: int | None = None, seed: int | None = None) -> dict[str, MetricPrediction]:
    """Predict task-level metrics of a model at log10 compute ``x_star`` from the per-item laws.

    Parameters
    ----------
    tf : TaskFit
    x_star : float
        log10 of the target compute in FLOPs (C = 6·N·D).
    metrics : tuple of str
        Any of ``acc`` (mean over items of P(margin > 0), the best competitor being the maximum of the
        incorrect choices' joint predictive draws), ``acc_pair`` (the same with the best competitor
        taken from the fitted ``max_incorrect`` trajectory, bivariate normal, analytic),
        ``p_choices`` (mean softmax probability of the gold over the choices) and ``brier`` (mean
        over choices, as ``chain.brier``).
    n_draws, seed : int, optional
        Monte Carlo settings (default from the config).

    Returns
    -------
    dict of str to MetricPrediction
        ``value`` and a ``config.interval`` central interval (default 90 %) for the realised metric of
        one model at that compute; ``warnings`` name excluded items and extrapolation.
    """
    cfg = tf.config
    R = int(n_draws or cfg.n_draws)
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    q_lo, q_hi = (1 - cfg.interval) / 2, 1 - (1 - cfg.interval) / 2
    warn = _warnings(tf, x_star)
    pi = predict_items(tf, x_star)
    usable = np.isfinite(pi["p_correct"].to_numpy())
    n_excl = int((~usable).sum())
    if n_excl:
        warn.append(f"{n_excl} of {len(pi)} item(s) have no prediction and are excluded "
                    f"({pi.loc[~usable, 'status'].value_counts().to_dict()})")
    if usable.sum() == 0:
        raise ValueError(f"mass.predict_task: task {tf.task!r}: no item could be fitted")
    sv = tf.shared_var * (1.0 + _leverage(tf, x_star))
    delta = rng.normal(0.0, math.sqrt(sv), R) if sv > 0 else np.zeros(R)
    out: dict[str, MetricPrediction] = {}
    no_choices = "incorrect" not in tf.groups
    if "acc_pair" in metrics or ("acc" in metrics and no_choices):
        mu = pi["mean_margin"].to_numpy()[usable]
        sd = pi["sd_margin"].to_numpy()[usable]
        p = pi["p_correct"].to_numpy()[usable]
        st_u = pi["status"].to_numpy()[usable]
        fixed = np.isin(st_u, ["no_incorrect_choice", "correct_never_finite"])
        fixed_p = p.copy()
        mu = np.where(fixed, 0.0, mu)
        sd = np.where(fixed, 0.0, sd)
        isd = np.sqrt(np.maximum(sd**2 - sv, 0.0))
        accs = np.empty(R)
        for r0 in range(0, R, 64):
            r1 = min(R, r0 + 64)
            z = rng.standard_normal((r1 - r0, len(mu)))
            draw = (mu[None] + delta[r0:r1, None] + isd[None] * z) > 0
            accs[r0:r1] = np.where(fixed[None], fixed_p[None], draw).mean(1)
        out["acc_pair"] = MetricPrediction(float(p.mean()), float(np.quantile(accs, q_lo)),
                                           float(np.quantile(accs, q_hi)), list(warn))
        if "acc" in metrics and no_choices:
            a = out["acc_pair"]
            out["acc"] = MetricPrediction(a.value, a.lower, a.upper, a.warnings + [
                "no per-choice incorrect rows: accuracy from the fitted max_incorrect law (acc_pair)"])
        if "acc_pair" not in metrics:
            del out["acc_pair"]
    want_mc = [m for m in ("acc", "p_choices", "brier") if m in metrics and m not in out]
    if want_mc:
        if "incorrect" not in tf.groups:
            raise ValueError(f"mass.predict_task: task {tf.task!r} has no incorrect choices to simulate")
        draws = _simulate_choices(tf, x_star, delta, rng)
        for m in want_mc:
            v = draws[m]
            out[m] = MetricPrediction(float(v.mean()), float(np.quantile(v, q_lo)), float(np.quantile(v, q_hi)),
                                      list(warn) + draws["warnings"])
    return out


def _warnings(tf: TaskFit, x_star: float) -> list[str]:
    w = []
    xs = tf.models["x"].to_numpy()
    if len(xs) and x_star > xs.max() + 1e-9:
        w.append(f"extrapolating {x_star - xs.max():.2f} decades of compute beyond the largest training model")
    if len(np.unique(xs)) < 3:
        w.append(f"only {len(np.unique(xs))} distinct training compute value(s): per-item laws are weakly determined")
    if tf.multiple_input:
        w.append("multiple-input task (Winogrande style): the per-choice logliks are not one event space")
    return w


def _simulate_choices(tf: TaskFit, x_star: float, delta: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Monte Carlo over the joint predictive distribution of all choices of every item.

    Returns per-draw item means of acc, p_choices and Brier (arrays of length len(delta)).
    """
    gc, gi = tf.groups["correct"], tf.groups["incorrect"]
    R = len(delta)
    sv = tf.shared_var * (1.0 + _leverage(tf, x_star))
    mc = gc.mean(x_star)
    vc = np.maximum(gc.s2 + gc.param_var(x_star) - sv, 0.0)
    mi_ = gi.mean(x_star)
    vi = gi.s2 + gi.param_var(x_star)
    docs = pd.Index(tf.items["doc_id"])
    pos = docs.get_indexer(gi.keys["doc_id"])
    never = gc.n == 0  # gold -inf at every training model: simulated as -inf (never wins, p = 0)
    mc = np.where(never, -np.inf, mc)
    vc = np.where(never, 0.0, vc)
    ok_c = (np.isfinite(mc) | never) & np.isfinite(vc)
    ok_i = np.isfinite(mi_) & np.isfinite(vi) & (gi.n > 0)  # no finite point: -inf, never wins
    warnings: list[str] = []
    # drop incorrect choices that cannot be fitted (e.g. -inf at every model): they never win
    n_drop = int((~ok_i).sum())
    if n_drop:
        warnings.append(f"{n_drop} incorrect choice(s) without a finite fit are treated as never winning "
                        "(log-likelihood −inf)")
    acc = np.zeros(R)
    pch = np.zeros(R)
    bri = np.zeros(R)
    n_used = 0
    by_item: dict[int, list[int]] = {}
    for row, p in enumerate(pos):
        if ok_i[row]:
            by_item.setdefault(int(p), []).append(row)
    # group items by number of simulated incorrect choices
    kgroups: dict[int, list[int]] = {}
    for j in range(len(docs)):
        if not ok_c[j]:
            continue
        kgroups.setdefault(len(by_item.get(j, [])), []).append(j)
    a, b = tf.corr_ci, tf.corr_ii
    n_choices = tf.items["n_choices"].to_numpy()
    for kinc, js in kgroups.items():
        K = kinc + 1
        C = np.full((K, K), b)
        C[0, :] = C[:, 0] = a
        np.fill_diagonal(C, 1.0)
        w, V = np.linalg.eigh(C)
        C = (V * np.maximum(w, 1e-6)) @ V.T
        dg = np.sqrt(np.diag(C))
        C = C / dg[:, None] / dg[None, :]
        L = np.linalg.cholesky(C)
        js_a = np.array(js)
        mean = np.empty((len(js), K))
        sd = np.empty((len(js), K))
        mean[:, 0] = mc[js_a]
        sd[:, 0] = np.sqrt(vc[js_a])
        if kinc:
            rows = np.array([by_item[j] for j in js])
            mean[:, 1:] = mi_[rows]
            sd[:, 1:] = np.sqrt(vi[rows])
        Kfull = n_choices[js_a]
        for c0 in range(0, len(js), 512):
            c1 = min(len(js), c0 + 512)
            z = rng.standard_normal((R, c1 - c0, K)) @ L.T
            with np.errstate(invalid="ignore"):
                ll = mean[None, c0:c1] + np.where(sd[None, c0:c1] > 0, sd[None, c0:c1] * z, 0.0)
            ll[:, :, 0] += delta[:, None]
            if K == 1:
                acc += (c1 - c0)
                pch += (c1 - c0)
                continue
            mx = ll.max(2, keepdims=True)
            mx = np.where(np.isfinite(mx), mx, 0.0)
            e = np.exp(ll - mx)
            pr = e / np.maximum(e.sum(2, keepdims=True), 1e-300)
            acc += (ll[:, :, 0] > ll[:, :, 1:].max(2)).sum(1)
            pch += pr[:, :, 0].sum(1)
            sq = (pr[:, :, 0] - 1.0) ** 2 + (pr[:, :, 1:] ** 2).sum(2)
            bri += (sq / Kfull[None, c0:c1]).sum(1)
        n_used += len(js)
    if n_used == 0:
        raise ValueError(f"mass.predict_task: task {tf.task!r}: no item could be simulated")
    if n_used < len(docs):
        warnings.append(f"{len(docs) - n_used} of {len(docs)} item(s) have no fit of the correct choice and are "
                        "excluded from acc/p_choices/brier")
    return {"acc": acc / n_used, "p_choices": pch / n_used, "brier": bri / n_used, "warnings": warnings}


# ----------------------------------------------------------------------------------------------
# Tables and co-variation statistics
# ----------------------------------------------------------------------------------------------


def fits_table(tf: TaskFit) -> pd.DataFrame:
    """One row per (item, quantity[, choice]) with the fitted laws.

    Columns: ``task, family, multiple_input, quantity, doc_id, choice_idx`` (−1 except for
    ``incorrect``), ``form`` (linear / saturating), ``k`` (per decade), ``x_ref`` (log10 FLOPs),
    ``n_points``, ``n_nonfinite``, ``intercept_ols, slope_ols`` (nats, nats per decade),
    ``sigma_ols``, ``intercept, slope`` (pooled posterior), ``slope_sd``, ``sigma`` (shrunk residual
    SD, nats) and ``status``.
    """
    frames = []
    for q, g in tf.groups.items():
        f = pd.DataFrame({"task": tf.task, "family": tf.family, "multiple_input": tf.multiple_input, "quantity": q,
                          "doc_id": g.keys["doc_id"].to_numpy(),
                          "choice_idx": g.keys["choice_idx"].to_numpy() if "choice_idx" in g.keys else -1,
                          "form": g.form, "k": g.k, "x_ref": g.x_ref, "n_points": g.n, "n_nonfinite": g.n_nonfinite,
                          "intercept_ols": g.beta_ols[:, 0], "slope_ols": g.beta_ols[:, 1],
                          "sigma_ols": np.sqrt(g.s2_ols), "intercept": g.beta[:, 0], "slope": g.beta[:, 1],
                          "slope_sd": np.sqrt(g.post_cov[:, 1, 1]), "sigma": np.sqrt(g.s2), "status": g.status})
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def covariation(tf: TaskFit) -> dict[str, Any]:
    """How the correct and incorrect masses move together with compute in one task.

    Returns
    -------
    dict
        ``slope_corr_pearson`` / ``slope_corr_spearman``: correlation over items of the per-item
        least-squares slopes (nats per decade) of ℓ_c and of LSE_{i≠c} ℓ_i (``*_shrunk``: of the
        pooled slopes; ``*_max``: against max_{i≠c} ℓ_i); ``share_incorrect_faster``: fraction of
        items whose incorrect mass grows faster than the correct mass (slope of LSE_incorrect >
        slope of ℓ_c, i.e. choice log-odds falling with compute: the items that turn or stay wrong),
        with the same on pooled slopes; ``share_both_increasing``; median slopes; the pooled
        residual correlations; the number of items used and the counts of excluded/flagged items.
    """
    gc, gl, gm = tf.groups["correct"], tf.groups["lse_incorrect"], tf.groups["max_incorrect"]
    out: dict[str, Any] = {"task": tf.task, "family": tf.family, "multiple_input": tf.multiple_input,
                           "n_models": int(len(tf.models)), "n_items": int(len(tf.items))}
    for tag, bc, bl, bm in (("", gc.beta_ols[:, 1], gl.beta_ols[:, 1], gm.beta_ols[:, 1]),
                            ("_shrunk", gc.beta[:, 1], gl.beta[:, 1], gm.beta[:, 1])):
        ok = np.isfinite(bc) & np.isfinite(bl)
        out[f"n_items_with_slopes{tag}"] = int(ok.sum())
        if ok.sum() >= 3 and np.std(bc[ok]) > 0 and np.std(bl[ok]) > 0:
            out[f"slope_corr_pearson{tag}"] = float(stats.pearsonr(bc[ok], bl[ok])[0])
            out[f"slope_corr_spearman{tag}"] = float(stats.spearmanr(bc[ok], bl[ok])[0])
        else:
            out[f"slope_corr_pearson{tag}"] = out[f"slope_corr_spearman{tag}"] = None
        okm = np.isfinite(bc) & np.isfinite(bm)
        out[f"slope_corr_pearson_max{tag}"] = (float(stats.pearsonr(bc[okm], bm[okm])[0])
                                               if okm.sum() >= 3 and np.std(bc[okm]) > 0 and np.std(bm[okm]) > 0
                                               else None)
        out[f"share_incorrect_faster{tag}"] = float(np.mean(bl[ok] > bc[ok])) if ok.any() else None
        out[f"share_both_increasing{tag}"] = float(np.mean((bl[ok] > 0) & (bc[ok] > 0))) if ok.any() else None
        out[f"median_slope_correct{tag}"] = float(np.median(bc[ok])) if ok.any() else None
        out[f"median_slope_lse_incorrect{tag}"] = float(np.median(bl[ok])) if ok.any() else None
    out["residual_corr_correct_vs_max_incorrect"] = tf.rho_pooled
    out["residual_corr_correct_vs_incorrect"] = tf.corr_ci
    out["residual_corr_incorrect_vs_incorrect"] = tf.corr_ii
    out["shared_margin_sd"] = math.sqrt(tf.shared_var)
    out["k_saturation"] = {q: g.k_task for q, g in tf.groups.items()}
    out["counts"] = dict(tf.counts)
    return out


def covariation_table(fits: dict[str, TaskFit]) -> pd.DataFrame:
    """:func:`covariation` of every task as a table (multiple-input tasks flagged, sorted last)."""
    rows = []
    for tf in fits.values():
        c = covariation(tf)
        c.pop("k_saturation")
        counts = c.pop("counts")
        c["n_excluded_or_flagged"] = int(sum(v for k, v in counts.items() if ":" in k and "saturating" not in k
                                             and "excluded" not in k))
        rows.append(c)
    df = pd.DataFrame(rows)
    return df.sort_values(["multiple_input", "task"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Simulation with planted per-item laws
# ----------------------------------------------------------------------------------------------


def simulate_store(n_items: int = 400, n_choices: int = 4, x: tuple[float, ...] = (19.0, 19.5, 20.0, 20.5, 21.0,
                   21.5, 22.0), *, task: str = "sim", family: str = "sim", seed: int = 0,
                   slope_correct: tuple[float, float] = (1.2, 0.6), slope_incorrect: tuple[float, float] = (0.8, 0.5),
                   intercept_sd: float = 1.5, item_sd: float = 0.3, choice_sd: float = 0.25, model_sd: float = 0.0,
                   saturation: float = 0.0, x0: float = 20.5, return_truth: bool = False
                   ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """A score store whose per-item log-likelihoods follow known laws in x = log10 compute.

    ℓ_{j,i}(x) = a_{j,i} + b_{j,i}·u(x) + e, with u = x − x0 (or the saturating basis with rate
    ``saturation`` per decade); slopes b ~ N(mean, sd) given by ``slope_correct`` for the gold
    (choice 0) and ``slope_incorrect`` for the others; intercepts a ~ N(−10, intercept_sd), the
    gold's raised by 0.5. Noise e = item_sd·(shared by all choices of an item and model) +
    choice_sd·(per choice) + model_sd·(per model, on the gold only). Models have tokens = 20·params
    and 6·N·D = 10^x (rounded to integers).

    Returns
    -------
    pandas.DataFrame or (DataFrame, DataFrame)
        The store; with ``return_truth`` also the planted laws (``doc_id, choice_idx, is_correct,
        intercept, slope``).
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
        u = _basis(np.array([xm]), x0, saturation)[0] if saturation > 0 else xm - x0
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


# ----------------------------------------------------------------------------------------------
# Predictor (capscale.analysis.predict interface)
# ----------------------------------------------------------------------------------------------


def _final_per_run(lt: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint (most tokens, then step) of every run of a ladder table.

    A ladder built from a score store whose model ids carry no ``@step`` suffix has one run per
    checkpoint; when it has a ``step`` column and several sizes, the checkpoints of one size
    (``family``, ``params``) are then taken as one run.
    """
    order = [c for c in ("tokens", "step") if c in lt.columns]
    key = ["run"]
    one_per_run = lt.groupby("run")["model_id"].nunique().max() <= 1
    if one_per_run and "step" in lt.columns and lt["step"].notna().all() and lt["params"].nunique() >= 2:
        key = [c for c in ("family", "params") if c in lt.columns]
    return lt.sort_values(key + order, kind="stable").groupby(key, sort=False).tail(1)


def _not_applicable(msg: str) -> Exception:
    """``capscale.analysis.predict.MethodNotApplicable`` when available (so ``--method all`` skips us), else ValueError."""
    try:
        from capscale.analysis.predict import MethodNotApplicable  # type: ignore[attr-defined]
    except ImportError:
        return ValueError(msg)
    return MethodNotApplicable(msg)


class MassPredictor:
    """``capscale.analysis.predict`` predictor ``mass``: accuracy (and p_choices, Brier) from per-item mass laws.

    ``fit(ladder, task, metric=..., store=...)`` needs the per-choice ``store`` rows of the training
    models; ``predict(params, tokens)`` returns a ``capscale.analysis.predict.Prediction`` (90 % interval) at
    compute C = 6·N·D FLOPs.
    """

    name = "mass"
    needs_store = True
    #: the held-out actual is the last checkpoint's value (no smoothing window), as read by ``capscale.analysis.predict``
    window_ = 1

    def __init__(self, config: MassConfig | None = None, *, seed: int | None = None, level: float | None = None,
                 n_draws: int | None = None, checkpoints: str = "final", inflate: bool = True, **ignored: Any):
        """Options ``seed``, ``level`` (interval probability) and ``n_draws`` override ``config``;
        ``checkpoints="final"`` (default) fits the laws on the last checkpoint (most tokens) of each
        ladder run only (see :func:`_final_per_run`), ``"all"`` on every checkpoint. Intermediate checkpoints of a run follow the
        run's data-scaling trajectory (learning-rate schedule not finished), not the across-size law,
        and mixing them in made the size backtests worse. ``inflate`` (default True) widens the
        interval by the leave-largest-out error on the training models, as ``capscale.analysis.predict`` does
        for its other methods. Their other options (``bootstrap``, ...) do not apply and are ignored."""
        if checkpoints not in ("final", "all"):
            raise ValueError(f"MassPredictor: checkpoints must be 'final' or 'all', not {checkpoints!r}")
        self.checkpoints = checkpoints
        self.inflate = bool(inflate)
        self.cv_err_ = float("nan")
        cfg = config or MassConfig()
        upd = {k: v for k, v in (("seed", seed), ("interval", level), ("n_draws", n_draws)) if v is not None}
        self.config = dataclasses.replace(cfg, **upd) if upd else cfg
        self.ignored_options = sorted(ignored)
        self.task: str | None = None
        self.metric = "acc"
        self.fit_: TaskFit | None = None

    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> MassPredictor:
        """Fit the per-item laws of ``task`` on the training models.

        Parameters
        ----------
        ladder : pandas.DataFrame
            The training models' aggregate table; its ``model_id`` column (if any) selects the store
            rows used, otherwise every model of the store is used.
        task : str
        metric : str
            ``acc`` (default), ``acc_pair``, ``p_choices`` (``p_choices_correct``) or ``brier``.
        store : pandas.DataFrame
            Per-choice score-store rows (required).
        """
        if store is None:
            raise _not_applicable("the 'mass' method needs the per-choice score store of the training models "
                             "(store=...): it fits per-item, per-choice log-likelihood laws, which an aggregate "
                             "ladder table does not contain")
        m = _METRIC_ALIASES.get(str(metric))
        if m is None:
            raise ValueError(f"the 'mass' method predicts {sorted(SUPPORTED_METRICS)}, not {metric!r}")
        s = store[store["task"].astype(str) == str(task)]
        if s.empty:
            raise ValueError(f"mass: task {task!r} has no rows in the store")
        if ladder is not None and "model_id" in ladder.columns:
            lt = ladder
            if "task" in ladder.columns and (ladder["task"].astype(str) == str(task)).any():
                lt = ladder[ladder["task"].astype(str) == str(task)]
            if self.checkpoints == "final" and {"run", "tokens"} <= set(lt.columns):
                lt = _final_per_run(lt)
            keep = set(lt["model_id"].astype(str))
            s = s[s["model_id"].astype(str).isin(keep)]
            if s.empty:
                raise ValueError(f"mass: none of the ladder's models {sorted(keep)[:5]} has rows of task {task!r} "
                                 "in the store")
        fam = None
        if "family" in s and s["family"].nunique() > 1:
            fam_l = ladder["family"].astype(str).unique() if ladder is not None and "family" in ladder else []
            if len(fam_l) != 1:
                raise ValueError(f"mass: store rows of task {task!r} span several families "
                                 f"{sorted(s['family'].astype(str).unique())}; filter the store first")
            fam = str(fam_l[0])
        n_x = s.drop_duplicates("model_id")
        if len(n_x) < 2:
            raise ValueError(f"mass: task {task!r}: need at least 2 training models, got {len(n_x)}")
        self.fit_ = fit(s, task=str(task), family=fam, config=self.config)[str(task)]
        self.task, self.metric = str(task), m
        self.cv_err_ = self._cv_error(s, fam) if self.inflate else float("nan")
        return self

    def _cv_error(self, s: pd.DataFrame, fam: str | None) -> float:
        """|error| on the largest-compute training model when fitting on the others (NaN if < 3 sizes).

        As for ``capscale.analysis.predict``'s other methods, the interval is widened in quadrature by
        z·cv_err: the Monte Carlo interval knows the item noise and a model-level shift estimated
        from few models, not how far the laws themselves extrapolate wrong.
        """
        mods = self.fit_.models
        if mods["compute"].nunique() < 4:
            return float("nan")
        big = mods["model_id"].iloc[-1]
        try:
            sub = fit(s[s["model_id"] != big], task=str(self.task), family=fam, config=self.config)[str(self.task)]
            x = math.log10(float(mods["compute"].iloc[-1]))
            pred = predict_task(sub, x, metrics=(self.metric,), n_draws=100)[self.metric].value
        except (ValueError, np.linalg.LinAlgError):
            return float("nan")
        col = SUPPORTED_METRICS[self.metric]
        obs = _chain.compute(s[s["model_id"] == big])[col].mean()
        return float(abs(pred - obs))

    def predict(self, params: float, tokens: float) -> Any:
        """Prediction at N = ``params``, D = ``tokens`` (compute 6·N·D FLOPs), 90 % interval."""
        if self.fit_ is None:
            raise RuntimeError("MassPredictor.predict called before fit")
        C = 6.0 * float(params) * float(tokens)
        if not (C > 0 and math.isfinite(C)):
            raise ValueError(f"mass: compute 6·N·D must be positive and finite, got N={params}, D={tokens}")
        p = predict_task(self.fit_, math.log10(C), metrics=(self.metric,))[self.metric]
        if self.inflate and math.isfinite(self.cv_err_):
            extra = stats.norm.ppf(0.5 + self.config.interval / 2) * self.cv_err_
            lo = p.value - math.hypot(p.value - p.lower, extra)
            hi = p.value + math.hypot(p.upper - p.value, extra)
            p = MetricPrediction(p.value, max(lo, 0.0), min(hi, 1.0), p.warnings + [
                f"interval widened by the leave-largest-out error on the training models ({self.cv_err_:.3f})"])
        try:
            from capscale.analysis.predict import Prediction  # type: ignore[attr-defined]
        except ImportError:  # predict.py not present: a duck-typed equivalent
            return p
        return Prediction(value=p.value, lower=p.lower, upper=p.upper, warnings=list(p.warnings))


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def plot_mass_scatter(items: pd.DataFrame, path: str, *, title: str = "") -> None:
    """p_vocab(correct) vs summed incorrect vocabulary mass, log-log, coloured by compute.

    Axes are log10 probabilities (log10 p = ℓ / ln 10), so masses far below float64's range
    (1e-308) still plot; items with −inf log-likelihoods are left out of the picture and counted
    in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    xc = items["log_p_vocab_correct"].to_numpy(float) / math.log(10)
    yi = items["log_p_vocab_incorrect"].to_numpy(float) / math.log(10)
    ok = np.isfinite(xc) & np.isfinite(yi)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sc = ax.scatter(xc[ok], yi[ok], c=items["compute"].to_numpy(float)[ok], s=6, alpha=0.6, cmap="viridis",
                    norm=LogNorm())
    lo = float(min(xc[ok].min(), yi[ok].min())) if ok.any() else -10.0
    ax.plot([lo, 0], [lo, 0], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("log10 p_vocab(correct)")
    ax.set_ylabel("log10 Σ_incorrect p_vocab")
    fig.colorbar(sc, ax=ax, label="compute (FLOPs)")
    excl = int((~ok).sum())
    ax.set_title("\n".join(t for t in (title, f"{excl} point(s) with -inf not shown" if excl else "") if t),
                 fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def plot_slope_scatter(tf: TaskFit, path: str) -> None:
    """Per-item slope of ℓ_c vs slope of LSE_{i≠c} ℓ_i (nats per decade), diagonal = equal growth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gc, gl = tf.groups["correct"], tf.groups["lse_incorrect"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for b1, b2, lab, kw in ((gc.beta_ols[:, 1], gl.beta_ols[:, 1], "least squares", dict(alpha=0.3, s=8)),
                            (gc.beta[:, 1], gl.beta[:, 1], "pooled", dict(alpha=0.6, s=8))):
        ok = np.isfinite(b1) & np.isfinite(b2)
        ax.scatter(b1[ok], b2[ok], label=lab, **kw)
    allv = np.concatenate([gc.beta[:, 1], gl.beta[:, 1]])
    allv = allv[np.isfinite(allv)]
    if len(allv):
        lo, hi = float(allv.min()), float(allv.max())
        ax.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=0.8)
    c = covariation(tf)
    ax.set_xlabel("slope of log p_vocab(correct) [nats/decade]")
    ax.set_ylabel("slope of log Σ incorrect [nats/decade]")
    ax.set_title(f"{tf.task}: corr {_fmt(c['slope_corr_pearson'])}, "
                 f"incorrect faster {_fmt(c['share_incorrect_faster'])}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def plot_predicted_vs_observed(table: pd.DataFrame, path: str, *, title: str = "") -> None:
    """Predicted accuracy (with interval) vs observed accuracy against log10 compute.

    ``table`` has columns ``log10_compute, observed, predicted, lower, upper`` and ``kind``
    (``in-sample`` or ``held-out``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, mk, col in (("in-sample", "o", "C0"), ("held-out", "s", "C3")):
        t = table[table["kind"] == kind]
        if t.empty:
            continue
        ax.errorbar(t["log10_compute"], t["predicted"], yerr=[t["predicted"] - t["lower"], t["upper"] - t["predicted"]],
                    fmt=mk, color=col, capsize=3, label=f"predicted ({kind}, 90% interval)", mfc="none")
        ax.plot(t["log10_compute"], t["observed"], "x", color="k", label=None)
    ax.plot([], [], "x", color="k", label="observed")
    ax.set_xlabel("log10 compute (FLOPs)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"


def _savefig(fig: Any, path: str) -> None:
    from capscale.plotting.chain import save_figure

    save_figure(fig, path, close=False)
