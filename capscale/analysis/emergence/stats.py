"""Curve statistics of emergence.md §2, §6 and §9.4-A/B/C, vectorised over bootstrap replicates.

Every function takes curves as a 2-D array ``Y`` of shape ``(R, n)`` (R curves, e.g. bootstrap
replicates, over n models sorted by compute) or a 1-D array of shape ``(n,)`` and returns one value
per curve. Scores are oriented so that higher is better.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as _sst

__all__ = [
    "interestingness",
    "breakthroughness",
    "linearity",
    "jump_share",
    "j_lin",
    "kendall_tau_rows",
    "kendall_exact",
    "per_item_tau",
    "sign_monotonicity",
    "benjamini_hochberg",
    "percentile_ci",
    "wilson_interval",
]


def _rows(Y: np.ndarray) -> tuple[np.ndarray, bool]:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        return Y[None, :], True
    if Y.ndim != 2:
        raise ValueError(f"expected a curve (n,) or curves (R, n), got shape {Y.shape}")
    return Y, False


def _out(v: np.ndarray, single: bool) -> np.ndarray | float:
    return float(v[0]) if single else v


def interestingness(Y: np.ndarray) -> np.ndarray | float:
    """I(y) = sign(argmax − argmin) · (max y − min y) (BIG-bench, §2.2); first index on ties."""
    Y, single = _rows(Y)
    imax = np.argmax(Y, axis=1)
    imin = np.argmin(Y, axis=1)
    return _out(np.sign(imax - imin) * (Y.max(axis=1) - Y.min(axis=1)), single)


def _ratio(num: np.ndarray, den: np.ndarray, zero_den_inf: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
        signed_inf = np.sign(num) * np.inf
    zero = den == 0
    if zero_den_inf:
        r = np.where(zero & (num != 0), signed_inf, r)
    else:
        r = np.where(zero & (num != 0), 0.0, r)
    return np.where(zero & (num == 0), 0.0, r)


def breakthroughness(Y: np.ndarray) -> np.ndarray | float:
    """B = I / sqrt(median_i Δy_i²) (§2.2; Mirage's Emergence Score).

    Returns ±inf when more than half of the steps are exactly 0 and I ≠ 0, and 0 when I = 0 and
    the denominator is 0 (§9.10). Divide by (n − 1) for ``B_norm``.
    """
    Y, single = _rows(Y)
    if Y.shape[1] < 2:
        raise ValueError("breakthroughness needs at least 2 models")
    num = np.asarray(interestingness(Y))
    den = np.sqrt(np.median(np.diff(Y, axis=1) ** 2, axis=1))
    return _out(_ratio(num, den, True), single)


def linearity(Y: np.ndarray) -> np.ndarray | float:
    """BIG-bench-style linearity, reconstructed (§2.3): L = I / sqrt(mean_i Δy_i²); 0 if constant."""
    Y, single = _rows(Y)
    if Y.shape[1] < 2:
        raise ValueError("linearity needs at least 2 models")
    num = np.asarray(interestingness(Y))
    den = np.sqrt(np.mean(np.diff(Y, axis=1) ** 2, axis=1))
    return _out(_ratio(num, den, False), single)


def jump_share(Y: np.ndarray) -> np.ndarray | float:
    """Max-jump share J = max_i |Δy_i| / Σ_i |Δy_i| ∈ [1/(n−1), 1] (§9.4-C); NaN for a constant curve."""
    Y, single = _rows(Y)
    a = np.abs(np.diff(Y, axis=1))
    s = a.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.where(s > 0, a.max(axis=1) / s, np.nan), single)


def j_lin(x: np.ndarray) -> float:
    """Spacing-aware baseline J_lin = max_i Δx_i / (x_n − x_1) (1/(n−1) when evenly spaced)."""
    x = np.asarray(x, dtype=np.float64)
    dx = np.diff(x)
    return float(dx.max() / (x[-1] - x[0]))


def kendall_tau_rows(Y: np.ndarray) -> np.ndarray | float:
    """Kendall τ_b between model index (strictly increasing compute) and each row of ``Y``.

    With x untied, τ_b = S / sqrt(n0 · (n0 − n_tied_y)), S = Σ_{i<j} sign(y_j − y_i), n0 = n(n−1)/2.
    NaN for a constant row.
    """
    Y, single = _rows(Y)
    n = Y.shape[1]
    i, j = np.triu_indices(n, k=1)
    sg = np.sign(Y[:, j] - Y[:, i])
    s = sg.sum(axis=1)
    n0 = len(i)
    ties = (sg == 0).sum(axis=1)
    den = np.sqrt(n0 * (n0 - ties).astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.where(den > 0, s / den, np.nan), single)


def kendall_exact(x: np.ndarray, y: np.ndarray) -> tuple[float, float, str]:
    """Kendall τ_b(x, y) with the exact two-sided p-value when neither variable has ties.

    A perfectly monotone curve of n untied points has p = 2/n! (n = 4: 0.0833; n = 5: 0.0167).
    With ties the asymptotic p-value is returned and the method says so.

    Returns
    -------
    (tau, p, method) with method ``"exact"`` or ``"asymptotic (ties)"``; NaNs for a constant y.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(np.unique(y)) < 2 or len(x) < 2:
        return float("nan"), float("nan"), "undefined (constant)"
    tied = len(np.unique(x)) < len(x) or len(np.unique(y)) < len(y)
    method = "asymptotic" if tied else "exact"
    r = _sst.kendalltau(x, y, method=method)
    return float(r.statistic), float(r.pvalue), ("asymptotic (ties)" if tied else "exact")


def per_item_tau(S: np.ndarray) -> dict[str, float]:
    """Per-item compute correlation (§9.4-B): τ_i = τ_b(x, s_{·,i}) over the models, for each item.

    Parameters
    ----------
    S : array (n_models, n_items)
        Per-item scores, models sorted by strictly increasing compute.

    Returns
    -------
    dict with ``mean``, ``median``, ``frac_pos`` (over non-constant items), ``frac_nan`` (constant
    items, excluded from the other statistics but counted here) and ``n_constant``.
    """
    tau = np.asarray(kendall_tau_rows(np.asarray(S, dtype=np.float64).T))
    ok = np.isfinite(tau)
    n = len(tau)
    if not ok.any():
        return {"mean": None, "median": None, "frac_pos": None, "frac_nan": 1.0 if n else None,
                "n_constant": int(n - ok.sum())}
    t = tau[ok]
    return {"mean": float(t.mean()), "median": float(np.median(t)), "frac_pos": float((t > 0).mean()),
            "frac_nan": float(1 - ok.mean()), "n_constant": int(n - ok.sum())}


def sign_monotonicity(y: np.ndarray) -> float:
    """(#Δ > 0 − #Δ < 0) / #(Δ ≠ 0) (Heineman et al. 2025, §6); NaN when every step is 0."""
    d = np.diff(np.asarray(y, dtype=np.float64))
    nz = (d != 0).sum()
    return float(((d > 0).sum() - (d < 0).sum()) / nz) if nz else float("nan")


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values); NaNs stay NaN and are not counted in m."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    pv = p[ok]
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def percentile_ci(samples: np.ndarray, alpha: float = 0.05, axis: int = 0) -> np.ndarray:
    """Percentile (1 − α) interval over ``axis``; ±inf samples are kept (they sort to the ends), NaNs ignored.

    Returns an array whose first axis holds (low, high).
    """
    s = np.asarray(samples, dtype=np.float64)
    # interpolating between two infinities gives NaN: use the order statistics when any sample is infinite
    has_inf = bool(np.isinf(s).any())
    q = np.nanquantile if np.isnan(s).any() else np.quantile  # nanquantile is much slower
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds, reported as null
        lo = q(s, alpha / 2, axis=axis, method="lower" if has_inf else "linear")
        hi = q(s, 1 - alpha / 2, axis=axis, method="higher" if has_inf else "linear")
    return np.stack([lo, hi])


def factorial_p(n: int) -> float:
    """2/n!, the exact two-sided Kendall p-value of a perfectly monotone curve of n untied points."""
    return 2.0 / math.factorial(n)


def wilson_interval(p: np.ndarray | float, n: np.ndarray | int, z: float = 1.959963984540054
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion ``p`` observed over ``n`` trials (default 95 %).

    Returns (lower, upper), each with the broadcast shape of ``p`` and ``n``.
    """
    p = np.asarray(p, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    den = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return centre - half, centre + half
