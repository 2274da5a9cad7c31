"""Curve forms from compute to loss to accuracy, with one scikit-learn-like interface.

Every form is a small class with ``fit(x, y, weights=None)``, ``predict(x)``, ``params_`` (dict),
``bounds`` (dict of (low, high)), ``at_bound_`` (dict of bool), ``converged_``, ``objective_``,
``n_points_``, ``warnings_`` and ``to_dict()`` / :func:`from_dict`. Formulas and fitting procedures
follow ``docs/transforms.md`` (§0):

================== ======================================================= ===============================
name               form                                                    fit
================== ======================================================= ===============================
``compute_law``    L = E + exp(a) / C^α                                    Huber(δ=1e-3) on log residuals,
                                                                           L-BFGS-B, analytic gradient,
                                                                           multi-start
``chinchilla_nd``  L = exp(a)/N^α + exp(b)/D^β + E, all ≥ 0               as above; p0 (3, 6, .1, .2, 1)
                                                                           (the OLMo procedure: that single
                                                                           start, maxiter 1e6, ftol 0)
``gadre_exp``      Err = ε − k·exp(−γ·L), ε ∈ (0, 1], k, γ > 0            least squares (TRF), starts
                                                                           (1, 1, 1) and (max Err+.1, .5)
``ladder_sigmoid`` Acc = a/(1 + exp(−k(L − L0))) + b, a ∈ [−1, 0],         least squares (TRF); optional
                   L0, k ≥ 0, b ∈ [0, 1]                                   anchor (L = 0, Acc = 1)
``obs_sigmoid``    Y = (1 − b)·σ(w·S + c) + b, b ∈ [0, 0.2]                least squares (TRF)
``direct``         log(−log Acc') = a·log C + b, Acc' = (Acc − chance)/     OLS
                   (1 − chance)
``loglinear``      y = a + b·log10(x)                                      OLS
================== ======================================================= ===============================

Units: C in FLOPs, N in parameters, D in tokens, losses in whatever unit the caller passes (nats
per token, bits per byte); the fitted parameters carry that unit. Every fit checks its input
(finite, positive where logs are taken, at least as many points as parameters) and raises
:class:`FitInputError` naming the offending positions; a fit whose optimizer does not report
convergence, whose parameters end on a bound, or that has exactly as many points as parameters (zero
degrees of freedom) says so in ``warnings_``.

Examples
--------
>>> import numpy as np
>>> from capscale.analysis.laws import ComputeLaw
>>> c = np.logspace(18, 21, 8)
>>> law = ComputeLaw().fit(c, 1.7 + 400.0 / c ** 0.15)
>>> round(float(law.predict([1e23])[0]), 3)
2.007
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from scipy import optimize

from capscale.analysis._stats import lstsq
from capscale.errors import CapscaleError

try:  # installed with scikit-learn (a capscale dependency); fits still work without it, only slower
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    from contextlib import nullcontext

    def threadpool_limits(*_a: Any, **_k: Any) -> Any:  # type: ignore[no-redef]
        return nullcontext()

__all__ = [
    "FitInputError",
    "FitWarning",
    "Law",
    "ComputeLaw",
    "ChinchillaND",
    "ComputeMultiplierLaw",
    "GadreExp",
    "LadderSigmoid",
    "ObsSigmoid",
    "DirectLaw",
    "LogLinear",
    "FORMS",
    "from_dict",
    "huber",
]

_REL_BOUND_TOL = 1e-6


class FitInputError(CapscaleError, ValueError):
    """The data given to a fit is unusable; the message names the offending positions."""


class FitWarning(UserWarning):
    """A fit did not converge or ended with parameters on a bound."""


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative, quadratic for ``|r| < delta`` (the OLMo-ladder convention)."""
    a = np.abs(r)
    quad = a < delta
    loss = np.where(quad, 0.5 * r**2, delta * (a - 0.5 * delta))
    grad = np.where(quad, r, delta * np.sign(r))
    return loss, grad


def _positions(mask: np.ndarray, labels: list[str] | None = None) -> str:
    idx = np.flatnonzero(mask)
    names = [labels[i] if labels is not None else f"point {i}" for i in idx[:10]]
    return ", ".join(names) + (f" ... and {len(idx) - 10} more" if len(idx) > 10 else "")


class Law:
    """Base class of the curve forms (see the module docstring).

    Parameters
    ----------
    labels : list of str, optional
        Names of the data points (e.g. model ids), used in error messages.
    """

    name: ClassVar[str] = "law"
    param_names: ClassVar[tuple[str, ...]] = ()
    x_dims: ClassVar[int] = 1  # columns of x
    positive_x: ClassVar[bool] = True
    positive_y: ClassVar[bool] = False

    def __init__(self, labels: list[str] | None = None):
        self.labels = labels
        self.params_: dict[str, float] = {}
        self.at_bound_: dict[str, bool] = {}
        self.converged_: bool = False
        self.objective_: float = float("nan")
        self.n_points_: int = 0
        self.rmse_: float = float("nan")
        self.warnings_: list[str] = []
        self.cov_: np.ndarray | None = None
        self.meta_: dict[str, Any] = {}

    # -- to be provided by subclasses ------------------------------------------------------------
    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {p: (-np.inf, np.inf) for p in self.param_names}

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        raise NotImplementedError

    # -- common machinery ------------------------------------------------------------------------
    def _check_x(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.x_dims == 1:
            x = x.reshape(-1)
        elif x.ndim == 1:
            x = x.reshape(-1, 1) if self.x_dims in (None, -1) else x.reshape(-1, self.x_dims)
        return x

    def _validate(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> None:
        n = len(y)
        if x.shape[0] != n:
            raise FitInputError(f"{self.name}: x has {x.shape[0]} points but y has {n}")
        bad = ~np.isfinite(x).reshape(n, -1).all(axis=1)
        if bad.any():
            raise FitInputError(f"{self.name}: NaN or infinite x at {_positions(bad, self.labels)}")
        bad = ~np.isfinite(y)
        if bad.any():
            raise FitInputError(f"{self.name}: NaN or infinite y at {_positions(bad, self.labels)}")
        if self.positive_x:
            bad = ~(x.reshape(n, -1) > 0).all(axis=1)
            if bad.any():
                raise FitInputError(f"{self.name}: x must be positive (compute in FLOPs, N, D, loss); "
                                    f"non-positive at {_positions(bad, self.labels)}")
        if self.positive_y:
            bad = ~(y > 0)
            if bad.any():
                raise FitInputError(f"{self.name}: y must be positive (a loss); non-positive at "
                                    f"{_positions(bad, self.labels)}")
        if w is not None:
            if len(w) != n or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise FitInputError(f"{self.name}: weights must be {n} finite non-negative numbers")
        if n < len(self.param_names):
            raise FitInputError(f"{self.name}: {n} point(s) for {len(self.param_names)} parameters "
                                f"{list(self.param_names)}; need at least {len(self.param_names)}")

    def fit(self, x: Any, y: Any, weights: Any = None) -> Law:
        """Fit the form to points ``(x, y)`` with optional non-negative weights; returns ``self``."""
        x = self._check_x(x)
        y = np.asarray(y, dtype=float).reshape(-1)
        w = None if weights is None else np.asarray(weights, dtype=float).reshape(-1)
        self._validate(x, y, w)
        self.warnings_ = []
        self.n_points_ = len(y)
        # multi-threaded BLAS inside L-BFGS-B's tiny vector operations costs ~10 ms a call on a busy machine
        with threadpool_limits(1, "blas"):
            self._fit(x, y, np.ones(len(y)) if w is None else w)
        pred = self._f(x, self._p())
        self.rmse_ = float(np.sqrt(np.mean((pred - y) ** 2)))
        self._flag_bounds()
        used = int(np.count_nonzero(w > 0)) if w is not None else len(y)
        if used == len(self.param_names):
            self.warnings_.append(f"{self.name}: {used} points for {used} parameters: zero degrees of freedom (the "
                                  "curve passes through every point; its fit measures no noise)")
        if not self.converged_:
            msg = f"{self.name}: optimizer did not report convergence ({self.meta_.get('message', '')})"
            self.warnings_.append(msg)
            warnings.warn(msg, FitWarning, stacklevel=2)
        return self

    def _p(self) -> np.ndarray:
        if not self.params_:
            raise RuntimeError(f"{self.name}: not fitted yet (call fit first)")
        return np.array([self.params_[k] for k in self.param_names], dtype=float)

    def _set(self, p: np.ndarray) -> None:
        self.params_ = {k: float(v) for k, v in zip(self.param_names, p)}

    def _flag_bounds(self) -> None:
        self.at_bound_ = {}
        for k, (lo, hi) in self.bounds.items():
            v = self.params_.get(k)
            if v is None:
                continue
            tol = _REL_BOUND_TOL * max(1.0, abs(v))
            hit = (np.isfinite(lo) and v - lo <= tol) or (np.isfinite(hi) and hi - v <= tol)
            self.at_bound_[k] = bool(hit)
            if hit:
                self.warnings_.append(f"{self.name}: parameter {k} = {v:.6g} is at its bound "
                                      f"[{lo:.6g}, {hi:.6g}]")

    def predict(self, x: Any) -> np.ndarray:
        """Values of the fitted form at ``x``."""
        return self._f(self._check_x(x), self._p())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (form, parameters, bounds, diagnostics)."""
        return {
            "form": self.name,
            "params": dict(self.params_),
            "bounds": {k: [float(lo), float(hi)] for k, (lo, hi) in self.bounds.items()},
            "at_bound": dict(self.at_bound_),
            "converged": bool(self.converged_),
            "objective": float(self.objective_),
            "n_points": int(self.n_points_),
            "rmse": float(self.rmse_),
            "warnings": list(self.warnings_),
            "options": self._options(),
            "meta": dict(self.meta_),
        }

    def _options(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"{type(self).__name__}({ps})"


# ----------------------------------------------------------------------------------------------
# Loss laws: Huber on log residuals, L-BFGS-B with analytic gradient
# ----------------------------------------------------------------------------------------------


class _HuberLogLaw(Law):
    """Common fitting of loss laws: Σ w·Huber_δ(log f − log y), L-BFGS-B, several starts, best objective."""

    positive_y = True

    def __init__(self, *, delta: float = 1e-3, starts: list[list[float]] | None = None, maxiter: int = 5_000,
                 ftol: float = 1e-12, labels: list[str] | None = None):
        super().__init__(labels)
        self.delta = delta
        self.starts = starts
        self.maxiter = maxiter
        self.ftol = ftol

    def _grad(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:  # (n, k)
        raise NotImplementedError

    def _default_starts(self, x: np.ndarray, y: np.ndarray) -> list[list[float]]:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        return {"delta": self.delta, "starts": self.starts, "maxiter": self.maxiter, "ftol": self.ftol}

    def _fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        ly = np.log(y)
        delta = self.delta

        def obj(p: np.ndarray) -> tuple[float, np.ndarray]:
            f = self._f(x, p)
            if not np.all(f > 0) or not np.all(np.isfinite(f)):
                return 1e30, np.zeros_like(p)
            r = np.log(f) - ly
            loss, dl = huber(r, delta)
            g = ((w * dl / f)[:, None] * self._grad(x, p)).sum(axis=0)
            return float(np.sum(w * loss)), g

        bnds = [self.bounds[k] for k in self.param_names]
        sb = [(None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi) for lo, hi in bnds]
        best = None
        starts = self.starts if self.starts is not None else self._default_starts(x, y)
        n_ok = 0
        for p0 in starts:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = optimize.minimize(obj, np.asarray(p0, dtype=float), jac=True, method="L-BFGS-B", bounds=sb,
                                        tol=0.0, options={"ftol": self.ftol, "gtol": 1e-10, "maxiter": self.maxiter})
            if not np.isfinite(res.fun) or res.fun >= 1e30:
                continue
            n_ok += 1
            if best is None or res.fun < best.fun:
                best = res
        if best is None:
            raise FitInputError(f"{self.name}: no start gave a finite objective ({len(starts)} starts)")
        self._set(best.x)
        self.objective_ = float(best.fun)
        # L-BFGS-B with ftol = 0 usually stops on "ABNORMAL" line searches on the flat Huber surface: accept
        # a stationary point when the projected gradient is tiny relative to the objective.
        pg = self._projected_grad(best.x, best.jac, bnds)
        self.converged_ = bool(best.success or pg <= 1e-6 * max(1.0, abs(best.fun)) / max(1e-12, delta))
        self.meta_ = {"message": str(best.message), "n_starts": len(starts), "n_finite_starts": n_ok,
                      "projected_grad": pg, "nit": int(best.nit)}

    @staticmethod
    def _projected_grad(p: np.ndarray, g: np.ndarray, bnds: list[tuple[float, float]]) -> float:
        g = np.array(g, dtype=float)
        for i, (lo, hi) in enumerate(bnds):
            if np.isfinite(lo) and p[i] <= lo + 1e-12 and g[i] > 0:
                g[i] = 0.0
            if np.isfinite(hi) and p[i] >= hi - 1e-12 and g[i] < 0:
                g[i] = 0.0
        return float(np.max(np.abs(g))) if len(g) else 0.0


class ComputeLaw(_HuberLogLaw):
    """Power law with offset in compute: L(C) = E + exp(a)/C^α (C in FLOPs), α ≥ 0, E ≥ 0."""

    name = "compute_law"
    param_names = ("a", "alpha", "E")

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {"a": (-np.inf, np.inf), "alpha": (0.0, np.inf), "E": (0.0, np.inf)}

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.exp(p[0] - p[1] * np.log(x)) + p[2]

    def _grad(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        t = np.exp(p[0] - p[1] * np.log(x))
        return np.stack([t, -np.log(x) * t, np.ones_like(x)], axis=1)

    def _default_starts(self, x: np.ndarray, y: np.ndarray) -> list[list[float]]:
        lc = float(np.mean(np.log(x)))
        out = []
        for alpha in (0.1, 0.3):
            for e_frac in (0.0, 0.5, 0.9):
                e = e_frac * float(np.min(y))
                a = float(np.log(max(np.mean(y) - e, 1e-6)) + alpha * lc)
                out.append([a, alpha, e])
        return out


class ComputeMultiplierLaw(_HuberLogLaw):
    """Loss in compute and token multiplier (Gadre et al. 2024, eq. 4): L(C, M) = E + (e^a·M^η + e^b·M^−η)·C^−η.

    ``x`` is an (n, 2) array of (C FLOPs, M = D/N tokens per parameter). At a fixed M it is a compute power law;
    across M it says how over-training (large M) or under-training (small M) moves the loss at equal compute. The
    two prefactors are identified only when the points span several multipliers.
    """

    name = "compute_multiplier_law"
    param_names = ("a", "b", "eta", "E")
    x_dims = 2

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {"a": (-np.inf, np.inf), "b": (-np.inf, np.inf), "eta": (0.0, 2.0), "E": (0.0, np.inf)}

    def _terms(self, x: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lc, lm = np.log(x[:, 0]), np.log(x[:, 1])
        return np.exp(p[0] + p[2] * (lm - lc)), np.exp(p[1] - p[2] * (lm + lc)), lc, lm

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        t1, t2, _, _ = self._terms(x, p)
        return t1 + t2 + p[3]

    def _grad(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        t1, t2, lc, lm = self._terms(x, p)
        return np.stack([t1, t2, t1 * (lm - lc) - t2 * (lm + lc), np.ones_like(t1)], axis=1)

    def _default_starts(self, x: np.ndarray, y: np.ndarray) -> list[list[float]]:
        lc, lm = float(np.mean(np.log(x[:, 0]))), float(np.mean(np.log(x[:, 1])))
        out = []
        for eta in (0.05, 0.15, 0.3):
            for e_frac in (0.0, 0.5, 0.9):
                e = e_frac * float(np.min(y))
                base = float(np.log(max((np.mean(y) - e) / 2, 1e-6)) + eta * lc)
                out.append([base - eta * lm, base + eta * lm, eta, e])
        return out


class ChinchillaND(_HuberLogLaw):
    """Chinchilla loss law L(N, D) = exp(a)/N^α + exp(b)/D^β + E, all parameters ≥ 0 (OLMo ladder step 1).

    ``x`` is an (n, 2) array of (N parameters, D tokens). The OLMo-ladder procedure is the single
    start ``starts=[[3, 6, 0.1, 0.2, 1]]`` (:data:`OLMO_P0`); by default a grid around it is also tried.
    """

    name = "chinchilla_nd"
    param_names = ("a", "b", "alpha", "beta", "E")
    x_dims = 2
    OLMO_P0: ClassVar[list[float]] = [3.0, 6.0, 0.1, 0.2, 1.0]

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {k: (0.0, np.inf) for k in self.param_names}

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        ln, ld = np.log(x[:, 0]), np.log(x[:, 1])
        return np.exp(p[0] - ln * p[2]) + np.exp(p[1] - ld * p[3]) + p[4]

    def _grad(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        ln, ld = np.log(x[:, 0]), np.log(x[:, 1])
        tn, td = np.exp(p[0] - ln * p[2]), np.exp(p[1] - ld * p[3])
        return np.stack([tn, td, -ln * tn, -ld * td, np.ones_like(tn)], axis=1)

    def _default_starts(self, x: np.ndarray, y: np.ndarray) -> list[list[float]]:
        out = [list(self.OLMO_P0)]
        for alpha in (0.2, 0.5):
            for beta in (0.2, 0.5):
                for a in (5.0, 10.0):
                    for b in (5.0, 10.0):
                        for e in (0.0, 0.5 * float(np.min(y))):
                            out.append([a, b, alpha, beta, e])
        return out


# ----------------------------------------------------------------------------------------------
# Links from a loss (or score) to accuracy: bounded least squares
# ----------------------------------------------------------------------------------------------


def _curve_fit(f, x, y, p0s, lo, hi, w, maxfev=500_000):
    """Bounded TRF least squares from several starts; the best by weighted SSE. Returns (p, cov, sse, ok, msg)."""
    sigma = None
    if w is not None and not np.allclose(w, 1.0):
        sigma = 1.0 / np.sqrt(np.maximum(w, 1e-300))
    best = None
    msgs = []
    for p0 in p0s:
        p0 = np.clip(np.asarray(p0, dtype=float), lo, hi)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, cov = optimize.curve_fit(f, x, y, p0=p0, bounds=(lo, hi), sigma=sigma, maxfev=maxfev,
                                            method="trf")
        except (RuntimeError, ValueError) as e:
            msgs.append(str(e))
            continue
        r = f(x, *p) - y
        sse = float(np.sum((w if w is not None else 1.0) * r**2))
        if best is None or sse < best[2]:
            best = (p, cov, sse)
    if best is None:
        return None, None, float("nan"), False, "; ".join(msgs)
    return best[0], best[1], best[2], True, ""


class GadreExp(Law):
    """Gadre et al. 2024: top-1 error from loss, Err(L) = ε − k·exp(−γ·L), ε ∈ (0, 1], k > 0, γ > 0.

    ``y`` is the error 1 − accuracy (raw, not chance-corrected); ``x`` the loss (nats per token).
    Starts: the authors' (k, γ, ε) = (1, 1, 1) and the doc's robust (1, 0.5, max Err + 0.1).
    """

    name = "gadre_exp"
    param_names = ("eps", "k", "gamma")
    positive_x = False

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {"eps": (1e-9, 1.0), "k": (1e-12, np.inf), "gamma": (1e-12, np.inf)}

    @staticmethod
    def _fn(x, eps, k, gamma):
        return eps - k * np.exp(-gamma * x)

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        return self._fn(x, *p)

    def _fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        if np.any((y < 0) | (y > 1)):
            raise FitInputError(f"{self.name}: errors must lie in [0, 1]; outside at "
                                f"{_positions((y < 0) | (y > 1), self.labels)}")
        lo = np.array([v[0] for v in self.bounds.values()])
        hi = np.array([v[1] for v in self.bounds.values()])
        starts = [[1.0, 1.0, 1.0], [min(1.0, float(y.max()) + 0.1), 1.0, 0.5]]
        p, cov, sse, ok, msg = _curve_fit(self._fn, x, y, starts, lo, hi, w, maxfev=10_000)
        if p is None:
            raise FitInputError(f"{self.name}: least squares failed from every start: {msg}")
        self._set(p)
        self.cov_ = cov
        self.objective_ = sse
        self.converged_ = ok


class LadderSigmoid(Law):
    """OLMo-ladder step 2: Acc(L) = a/(1 + exp(−k·(L − L0))) + b, a ∈ [−1, 0], L0 ≥ 0, k ≥ 0, b ∈ [0, 1].

    Parameters
    ----------
    chance : float
        Chance accuracy; used in the start p0 = (chance − 1, 0.9, 3.0, 1.0) (the authors' choice).
    anchor : bool
        Append the synthetic point (L = 0, Acc = 1) as the authors do.
    chance_floor : bool
        Constrain the floor: a = chance − b, so Acc → chance as L → ∞ (three free parameters).
    starts : list, optional
        Extra starts beyond the authors' p0 (the best by SSE wins).
    """

    name = "ladder_sigmoid"
    positive_x = False

    def __init__(self, *, chance: float = 0.25, anchor: bool = True, chance_floor: bool = False,
                 starts: list[list[float]] | None = None, labels: list[str] | None = None):
        super().__init__(labels)
        self.chance = float(chance)
        self.anchor = anchor
        self.chance_floor = chance_floor
        self.starts = starts

    @property
    def param_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("a", "L0", "k", "b")

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {"a": (-1.0, 0.0), "L0": (0.0, np.inf), "k": (0.0, np.inf), "b": (0.0, 1.0)}

    def _options(self) -> dict[str, Any]:
        return {"chance": self.chance, "anchor": self.anchor, "chance_floor": self.chance_floor,
                "starts": self.starts}

    @staticmethod
    def _fn(x, a, x0, k, b):
        return a / (1 + np.exp(-k * (x - x0))) + b

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return self._fn(x, *p)

    def _fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        if np.any((y < 0) | (y > 1)):
            raise FitInputError(f"{self.name}: accuracies must lie in [0, 1]; outside at "
                                f"{_positions((y < 0) | (y > 1), self.labels)}")
        if self.anchor:
            x = np.append(x, 0.0)
            y = np.append(y, 1.0)
            w = np.append(w, 1.0)
        p0 = [self.chance - 1.0, 0.9, 3.0, 1.0]
        starts = [p0] + list(self.starts or [])
        if self.chance_floor:
            chance = self.chance

            def fn3(xx, x0, k, b):
                return (chance - b) / (1 + np.exp(-k * (xx - x0))) + b

            lo, hi = np.array([0.0, 0.0, chance]), np.array([np.inf, np.inf, 1.0])
            s3 = [[s[1], s[2], s[3]] for s in starts]
            p, cov, sse, ok, msg = _curve_fit(fn3, x, y, s3, lo, hi, w)
            if p is None:
                raise FitInputError(f"{self.name}: least squares failed: {msg}")
            full = np.array([chance - p[2], p[0], p[1], p[2]])
            jac = np.array([[0, 0, -1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
            cov = jac @ cov @ jac.T if cov is not None else None
        else:
            lo = np.array([-1.0, 0.0, 0.0, 0.0])
            hi = np.array([0.0, np.inf, np.inf, 1.0])
            p, cov, sse, ok, msg = _curve_fit(self._fn, x, y, starts, lo, hi, w)
            if p is None:
                raise FitInputError(f"{self.name}: least squares failed: {msg}")
            full = p
        self._set(full)
        self.cov_ = cov
        self.objective_ = sse
        self.converged_ = ok and cov is not None and bool(np.all(np.isfinite(np.diag(cov))))
        if not self.converged_ and ok:
            self.converged_ = True
            self.warnings_.append(f"{self.name}: parameter covariance is not finite (delta-method bands unavailable)")

    def _flag_bounds(self) -> None:
        super()._flag_bounds()
        if self.chance_floor:
            # a = chance − b is a constraint, not a bound hit
            self.at_bound_["a"] = False
            self.warnings_ = [w for w in self.warnings_ if "parameter a " not in w]

    def predict_se(self, x: Any) -> np.ndarray:
        """Delta-method standard error of the prediction from the fit covariance (NaN if unavailable)."""
        x = self._check_x(x)
        if self.cov_ is None or not np.all(np.isfinite(self.cov_)):
            return np.full(len(x), np.nan)
        a, x0, k, _b = self._p()
        e = np.exp(-k * (x - x0))
        d = 1 + e
        jac = np.stack([1 / d, -a * k * e / d**2, a * (x - x0) * e / d**2, np.ones_like(x)], axis=1)
        return np.sqrt(np.clip(np.einsum("ij,jk,ik->i", jac, self.cov_, jac), 0, None))

    def inverse(self, acc: Any) -> np.ndarray:
        """The loss at which the fitted sigmoid reaches accuracy ``acc`` (NaN outside its range)."""
        acc = np.asarray(acc, dtype=float)
        a, x0, k, b = self._p()
        with np.errstate(all="ignore"):
            z = a / (acc - b) - 1.0
            return np.where(z > 0, x0 - np.log(z) / k, np.nan)


class ObsSigmoid(Law):
    """Observational scaling law: Y = (1 − b)·σ(w·S + c) + b, floor b ∈ [b_low, b_high] (default [0, 0.2]).

    ``x`` is an (n, K) array of capability scores S (e.g. principal components, or log10 compute
    for K = 1). Least squares (TRF) from p0 = (c, w…, b) = (0, 0.03, …, 0.03, 0) and a data-driven start.
    """

    name = "obs_sigmoid"
    positive_x = False
    x_dims = -1  # any number of columns

    def __init__(self, *, floor: tuple[float, float] = (0.0, 0.2), labels: list[str] | None = None):
        super().__init__(labels)
        self.floor = (float(floor[0]), float(floor[1]))
        self._k = 1

    @property
    def param_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("c",) + tuple(f"w{i}" for i in range(self._k)) + ("b",)

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        out = {k: (-np.inf, np.inf) for k in self.param_names}
        out["b"] = self.floor
        return out

    def _options(self) -> dict[str, Any]:
        return {"floor": list(self.floor), "k": self._k}

    def _check_x(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return x.reshape(-1, 1) if x.ndim == 1 else x

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        z = p[0] + x @ p[1:-1]
        return (1 - p[-1]) / (1 + np.exp(-z)) + p[-1]

    def fit(self, x: Any, y: Any, weights: Any = None) -> ObsSigmoid:
        self._k = self._check_x(x).shape[1]
        return super().fit(x, y, weights)  # type: ignore[return-value]

    def _fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        k = self._k

        def fn(xx, *p):
            return self._f(xx, np.asarray(p))

        lo = np.array([-np.inf] * (k + 1) + [self.floor[0]])
        hi = np.array([np.inf] * (k + 1) + [self.floor[1]])
        starts = [[0.0] + [0.03] * k + [self.floor[0]]]
        # data-driven start: slope from a logit regression on the first column
        yy = np.clip((y - self.floor[0]) / (1 - self.floor[0]), 1e-3, 1 - 1e-3)
        if np.ptp(x[:, 0]) > 0:
            slope, icpt = np.polyfit(x[:, 0], np.log(yy / (1 - yy)), 1)
            starts.append([icpt, slope] + [0.0] * (k - 1) + [self.floor[0]])
        p, cov, sse, ok, msg = _curve_fit(fn, x, y, starts, lo, hi, w, maxfev=100_000)
        if p is None:
            raise FitInputError(f"{self.name}: least squares failed: {msg}")
        self._set(p)
        self.cov_ = cov
        self.objective_ = sse
        self.converged_ = ok


# ----------------------------------------------------------------------------------------------
# Closed-form laws
# ----------------------------------------------------------------------------------------------


def _weighted_line(name: str, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted least squares of y on [1, x] (:func:`capscale.analysis._stats.lstsq`).

    Returns (coef [intercept, slope], covariance, residual variance Σ w r² / max(n − 2, 1) with n all the
    points, zero-weight ones included). Raises :class:`FitInputError` when the points of positive weight do
    not determine a line.
    """
    res = lstsq(np.stack([np.ones_like(x), x], axis=1), y, w, rcond=0.0)
    if not res.identified:
        raise FitInputError(f"{name}: the points with positive weight ({int(res.n)} of {len(y)}) do not "
                            "determine a line (a single distinct x)")
    s2 = float(res.rss) / max(len(y) - 2, 1)
    return res.coef, res.cov(s2), s2


class LogLinear(Law):
    """Log-linear baseline: y = a + b·log10(x), x > 0 (e.g. compute in FLOPs). Weighted OLS."""

    name = "loglinear"
    param_names = ("a", "b")

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        return p[0] + p[1] * np.log10(x)

    def _fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        lx = np.log10(x)
        if np.ptp(lx) == 0:
            raise FitInputError(f"{self.name}: every x is identical ({x[0]:.4g}); the slope is not identifiable")
        coef, cov, s2 = _weighted_line(self.name, lx, y, w)
        self._set(coef)
        self.cov_ = cov
        self.objective_ = float(s2)
        self.converged_ = True

    def predict_se(self, x: Any) -> np.ndarray:
        """Standard error of the fitted mean at ``x`` (OLS covariance)."""
        lx = np.log10(self._check_x(x))
        X = np.stack([np.ones_like(lx), lx], axis=1)
        return np.sqrt(np.clip(np.einsum("ij,jk,ik->i", X, self.cov_, X), 0, None))


class DirectLaw(Law):
    """Direct law on chance-normalised accuracy (Krajewski et al. 2025, Eq. 2).

    Acc' = (Acc − chance)/(1 − chance) = exp(−exp(a·log C + b)), i.e. log(−log Acc') = a·log C + b,
    fitted by weighted OLS on (ln C, log(−log Acc')). Points with Acc' outside (0, 1) cannot enter the
    linearised fit: they are excluded, counted and named in ``warnings_`` (``meta_["excluded"]``).
    """

    name = "direct"
    param_names = ("a", "b")

    def __init__(self, *, chance: float = 0.0, labels: list[str] | None = None):
        super().__init__(labels)
        self.chance = float(chance)

    def _options(self) -> dict[str, Any]:
        return {"chance": self.chance}

    def _f(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        accp = np.exp(-np.exp(p[0] * np.log(x) + p[1]))
        return self.chance + (1 - self.chance) * accp

    def _fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        accp = (y - self.chance) / (1 - self.chance)
        ok = (accp > 0) & (accp < 1)
        excluded = int((~ok).sum())
        self.meta_ = {"excluded": excluded}
        if excluded:
            self.warnings_.append(f"{self.name}: {excluded} point(s) with accuracy at or below chance "
                                  f"({self.chance:.3g}) or at 1 excluded: {_positions(~ok, self.labels)}")
        if ok.sum() < 2 or np.ptp(np.log(x[ok])) == 0:
            raise FitInputError(f"{self.name}: fewer than 2 usable points above chance {self.chance:.3g} "
                                f"with distinct compute ({int(ok.sum())} usable of {len(y)})")
        lx = np.log(x[ok])
        t = np.log(-np.log(accp[ok]))
        coef, cov, s2 = _weighted_line(self.name, lx, t, w[ok])
        self._set(np.array([coef[1], coef[0]]))
        self.cov_ = cov[::-1, ::-1]
        self.objective_ = float(s2)
        self.converged_ = True


FORMS: dict[str, type[Law]] = {
    cls.name: cls for cls in (ComputeLaw, ChinchillaND, ComputeMultiplierLaw, GadreExp, LadderSigmoid, ObsSigmoid, DirectLaw, LogLinear)
}


def from_dict(d: dict[str, Any]) -> Law:
    """Rebuild a fitted law from :meth:`Law.to_dict` output."""
    form = d.get("form")
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; known: {sorted(FORMS)}")
    cls = FORMS[form]
    opts = dict(d.get("options") or {})
    k = opts.pop("k", None)
    law = cls(**opts)
    if k is not None:
        law._k = int(k)  # type: ignore[attr-defined]
    law.params_ = {kk: float(v) for kk, v in d["params"].items()}
    law.at_bound_ = dict(d.get("at_bound") or {})
    law.converged_ = bool(d.get("converged", False))
    law.objective_ = float(d.get("objective", float("nan")))
    law.n_points_ = int(d.get("n_points", 0))
    law.rmse_ = float(d.get("rmse", float("nan")))
    law.warnings_ = list(d.get("warnings") or [])
    law.meta_ = dict(d.get("meta") or {})
    return law
