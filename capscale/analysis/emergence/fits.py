"""Parametric shape fits of emergence.md §8, vectorised over bootstrap replicates.

All fits are unweighted least squares of curves ``Y`` (shape ``(R, n)``; R replicates over n models)
on ``x = log10 C`` (C in FLOPs). Models with a break point or a non-linear parameter are fitted by a
grid search over that parameter with the linear parameters solved in closed form for every grid
point; the point estimate of the sigmoid is then refined with :func:`scipy.optimize.least_squares`.
Bootstrap replicates use the grid only, so their x₀ / break-point CIs have the grid's resolution
(reported as ``grid_step``).

=============  ===============================================  ===========  =====
name           formula (y in the metric's shape space)          k (with σ)   n ≥
=============  ===============================================  ===========  =====
``linear``     a + b·x                                          3            5
``sigmoid2``   σ(k·(x − x₀)), floor 0 (= chance), ceiling 1     3            5
``hinge2``     s·max(0, x − x_b), floor 0 (= chance)            3            5
``quadratic``  a + b·x + c·x²                                   4            6
``broken``     a + b·x + d·max(0, x − x_b)                      5            7
``sigmoid4``   f + (h − f)·σ(k·(x − x₀)) (4-PL, free floor/top)  5            7
=============  ===============================================  ===========  =====

``sigmoid2`` and ``hinge2`` need a bounded metric normalised so that chance = 0 and perfect = 1.
AICc = n·ln(RSS/n) + 2k + 2k(k+1)/(n − k − 1) (k counts σ; :func:`capscale.analysis._stats.aicc`, NaN
where n − k − 1 < 1); RSS is floored at 1e-12 of the total sum of squares so that an exact fit gives a
finite AICc. Every linear least-squares step is :func:`capscale.analysis._stats.lstsq`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from capscale.analysis._stats import aicc, lstsq

__all__ = ["K_PARAMS", "MIN_N", "fit_linear_family", "fit_sigmoid2", "fit_sigmoid4", "fit_hinge2",
           "fit_broken", "fit_all", "LN81"]

#: ln 81: the 10 %→90 % width of a logistic in units of 1/k.
LN81 = float(np.log(81.0))

#: Parameters per model, counting σ.
K_PARAMS = {"linear": 3, "sigmoid2": 3, "hinge2": 3, "quadratic": 4, "broken": 5, "sigmoid4": 5}
#: Minimum number of models for AICc (n − k − 1 ≥ 1).
MIN_N = {m: k + 2 for m, k in K_PARAMS.items()}


def _best_design(D: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Least squares of every row of Y (R, n) on every design D[g] (G, n, p); the design of least RSS per row.

    One QR per design and the RSS from the projections, ‖y‖² − ‖Qᵀy‖², with one matrix product for all rows
    and designs (:func:`capscale.analysis._stats.lstsq`, every design of full rank accepted). Returns
    ``best`` (R,) design index, ``coef`` (R, p) and ``rss`` (R,).
    """
    f = lstsq(D, Y[:, None, :], rcond=0.0, rss="projection")
    best = np.argmin(f.rss, axis=1)
    idx = np.arange(len(Y))
    return {"best": best, "coef": f.coef[idx, best], "rss": f.rss[idx, best]}


def fit_linear_family(x: np.ndarray, Y: np.ndarray, degree: int) -> dict[str, np.ndarray]:
    """Polynomial of ``degree`` in x (centred internally), for every row of Y.

    Returns ``coef`` (R, degree+1) in powers of the *centred* x (``x_mean`` given), ``rss`` (R,).
    """
    x = np.asarray(x, dtype=np.float64)
    xm = float(x.mean())
    V = np.vander(x - xm, degree + 1, increasing=True)
    f = lstsq(V, Y, rcond=0.0)
    return {"coef": f.coef, "rss": f.rss, "x_mean": xm}


def predict_poly(coef: np.ndarray, x_mean: float, xnew: np.ndarray) -> np.ndarray:
    """Evaluate the centred polynomial of :func:`fit_linear_family` at ``xnew``: (R, len(xnew))."""
    V = np.vander(np.asarray(xnew, dtype=np.float64) - x_mean, coef.shape[1], increasing=True)
    return coef @ V.T


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def sigmoid_grid(x: np.ndarray, n_x0: int = 61, n_k: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The (x₀, k) grid: x₀ over [x₁ − span/2, x_n + span/2], k log-spaced for 10–90 % widths 0.01 to 5·span decades."""
    x = np.asarray(x, dtype=np.float64)
    span = float(x[-1] - x[0])
    x0 = np.linspace(x[0] - 0.5 * span, x[-1] + 0.5 * span, n_x0)
    k = np.logspace(np.log10(LN81 / (5 * span)), np.log10(LN81 / 0.01), n_k)
    return x0, k


def fit_sigmoid2(x: np.ndarray, Y: np.ndarray, *, refine: bool = False) -> dict[str, np.ndarray]:
    """Sigmoid with floor 0 and ceiling 1 (chance-normalised space): y = σ(k(x − x₀)), k > 0.

    Grid search for every row; with ``refine`` the first row is polished by least squares.
    Returns ``x0``, ``k``, ``rss`` (R,), ``width_dec`` = ln 81 / k (10–90 % width in decades) and
    ``grid_step`` (x₀ spacing).
    """
    x = np.asarray(x, dtype=np.float64)
    gx0, gk = sigmoid_grid(x)
    X0, K = np.meshgrid(gx0, gk, indexing="ij")
    X0, K = X0.ravel(), K.ravel()
    P = _sigmoid(K[:, None] * (x[None, :] - X0[:, None]))  # (G, n)
    yy = (Y**2).sum(axis=1)
    score = Y @ (-2.0 * P.T)  # RSS − ‖y‖² = −2 y·P + ‖P‖²
    score += (P**2).sum(axis=1)[None, :]
    best = np.argmin(score, axis=1)
    x0, k = X0[best].copy(), K[best].copy()
    r = (yy + score[np.arange(len(Y)), best]).clip(min=0)
    if refine:
        y0 = Y[0]

        def res(th: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore", invalid="ignore"):
                return _sigmoid(np.exp(th[1]) * (x - th[0])) - y0

        try:
            sol = least_squares(res, [x0[0], np.log(k[0])], method="lm", max_nfev=400)
            rr = float((sol.fun**2).sum())
            if np.all(np.isfinite(sol.x)) and rr <= r[0]:
                x0[0], k[0], r[0] = sol.x[0], np.exp(sol.x[1]), rr
        except (ValueError, RuntimeError):  # pragma: no cover - keep the grid optimum
            pass
    return {"x0": x0, "k": k, "rss": r, "width_dec": LN81 / k, "grid_step": float(gx0[1] - gx0[0])}


def fit_sigmoid4(x: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """4-PL y = f + (h − f)·σ(k(x − x₀)): (x₀, k) by grid, floor f and top h in closed form per grid point."""
    x = np.asarray(x, dtype=np.float64)
    gx0, gk = sigmoid_grid(x, 41, 24)
    X0, K = np.meshgrid(gx0, gk, indexing="ij")
    X0, K = X0.ravel(), K.ravel()
    P = _sigmoid(K[:, None] * (x[None, :] - X0[:, None]))  # (G, n)
    ok = P.std(axis=1) > 1e-9  # a flat σ over the models makes the design rank-deficient
    X0, K, P = X0[ok], K[ok], P[ok]
    D = np.stack([np.ones_like(P), P], axis=2)
    f = _best_design(D, Y)
    best, c = f["best"], f["coef"]
    return {"x0": X0[best], "k": K[best], "floor": c[:, 0], "top": c[:, 0] + c[:, 1], "rss": f["rss"],
            "width_dec": LN81 / K[best], "grid_step": float(gx0[1] - gx0[0])}


def _break_grid(x: np.ndarray, lo: float, hi: float, n: int = 100) -> np.ndarray:
    return np.linspace(lo, hi, n + 2)[1:-1]


def fit_hinge2(x: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Flat at chance (0) then linear: y = s·max(0, x − x_b); x_b by grid over (x₁ − span/2, x_{n−1})."""
    x = np.asarray(x, dtype=np.float64)
    span = float(x[-1] - x[0])
    g = _break_grid(x, x[0] - 0.5 * span, x[-2], 160)
    H = np.maximum(0.0, x[None, :] - g[:, None])  # (G, n): one single-column design per break point
    f = _best_design(H[:, :, None], Y)
    return {"x_b": g[f["best"]], "s": f["coef"][:, 0], "rss": f["rss"], "grid_step": float(g[1] - g[0])}


def fit_broken(x: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Continuous broken line y = a + b·x + d·max(0, x − x_b), x_b by grid over (x₁, x_{n−1})."""
    x = np.asarray(x, dtype=np.float64)
    xm = float(x.mean())
    g = _break_grid(x, x[0], x[-2], 100)
    xc = x - xm
    D = np.stack([np.ones((len(g), len(x))), np.broadcast_to(xc, (len(g), len(x))),
                  np.maximum(0.0, x[None, :] - g[:, None])], axis=2)
    f = _best_design(D, Y)
    best, c = f["best"], f["coef"]
    return {"x_b": g[best], "a": c[:, 0] - c[:, 1] * xm, "b": c[:, 1], "d": c[:, 2],
            "rss": f["rss"], "grid_step": float(g[1] - g[0])}


def fit_all(x: np.ndarray, Y: np.ndarray, *, bounded: bool, refine: bool = True) -> dict[str, dict]:
    """Every applicable model for every row of Y (row 0 is taken as the point estimate and refined).

    Returns ``{name: {param arrays..., "rss", "aicc"}}`` for the models whose minimum n is met;
    ``sigmoid2``/``hinge2`` only when ``bounded`` (chance-normalised metric).
    """
    x = np.asarray(x, dtype=np.float64)
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    n = len(x)
    tss = ((Y - Y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    out: dict[str, dict] = {}
    if n >= 3:
        lin = fit_linear_family(x, Y, 1)
        out["linear"] = {"a": lin["coef"][:, 0] - lin["coef"][:, 1] * lin["x_mean"], "b": lin["coef"][:, 1],
                         "rss": lin["rss"]}
    if n >= 4:
        q = fit_linear_family(x, Y, 2)
        out["quadratic"] = {"c": q["coef"][:, 2], "rss": q["rss"]}
    if bounded and n >= 3:
        out["sigmoid2"] = fit_sigmoid2(x, Y, refine=refine)
        out["hinge2"] = fit_hinge2(x, Y)
    if n >= 5:
        out["broken"] = fit_broken(x, Y)
    if n >= MIN_N["sigmoid4"]:
        out["sigmoid4"] = fit_sigmoid4(x, Y[:1])  # descriptive: point estimate only (no bootstrap CI)
    for name, f in out.items():
        f["aicc"] = aicc(f["rss"], n, K_PARAMS[name], tss[: len(f["rss"])])  # NaN where n − k − 1 < 1
    return out
