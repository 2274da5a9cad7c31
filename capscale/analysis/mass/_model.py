"""The per-item mass laws: trajectories, per-row fits with empirical-Bayes pooling, :func:`fit` and :func:`fit_task`.

See :mod:`capscale.analysis.mass` for the model (quantities, the linear and saturating forms, the form
criterion and the partial pooling). Log-likelihoods in nats; x = log10(compute / FLOPs), C = 6·N·D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from capscale.analysis import chain as _chain
from capscale.analysis._stats import LeastSquares, aicc_penalty, lstsq

__all__ = ["QUANTITIES", "MassConfig", "GroupFit", "TaskFit", "basis", "trajectories", "fit", "fit_task"]

#: The per-item quantities fitted against log10 compute (see :mod:`capscale.analysis.mass`).
QUANTITIES = ["correct", "incorrect", "lse_incorrect", "max_incorrect", "margin"]


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
        return basis(np.asarray(x, dtype=float), self.x_ref, self.k)

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


def basis(x: np.ndarray | float, x_ref: float, k: np.ndarray | float) -> np.ndarray:
    """The basis u_k(x) = (1 − e^{−k(x − x_ref)})/k of the per-item laws, and x − x_ref where k = 0.

    Parameters
    ----------
    x : float or numpy.ndarray
        log10 compute (FLOPs).
    x_ref : float
        Reference log10 compute (the mean of the training models' distinct values).
    k : float or numpy.ndarray
        Saturation rate per decade of compute (0: the linear form); broadcast against ``x``.

    Returns
    -------
    numpy.ndarray
        u in decades of compute (elementwise, broadcasting ``x`` and ``k``): 0 at ``x_ref`` with slope 1
        there, bounded above by 1/k when k > 0.

    Notes
    -----
    Computed as d·exprel(−k·d) with d = x − x_ref (``scipy.special.exprel(z) = (e^z − 1)/z``, 1 at z = 0),
    which is exact for k = 0 and keeps full precision for tiny k, where ``expm1(−k·d)/k`` underflows to 0.
    """
    k = np.asarray(k, dtype=float)
    d = np.asarray(x, dtype=float) - x_ref
    with np.errstate(over="ignore", invalid="ignore"):
        return d * special.exprel(np.where(k > 0, -k * d, 0.0))


def _basis_rows(x: np.ndarray, x_ref: float, k: np.ndarray) -> np.ndarray:
    """(R, M) basis: row r uses rate k[r] at the M compute values x."""
    return basis(np.asarray(x, dtype=float)[None, :], x_ref, np.asarray(k, dtype=float)[:, None])


def _line_fits(U: np.ndarray, Y: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, LeastSquares]:
    """Row-wise least squares of y on [1, u] over the points where ``W`` is True.

    Returns beta (R, 2) and RSS (R,), NaN where a row's points do not determine a line (fewer than two
    distinct u), and the :class:`~capscale.analysis._stats.LeastSquares` solution. A row whose points all
    have the same value gets slope exactly 0 and RSS exactly 0: its rounding-level RSS (~1e-30) would
    otherwise enter the residual-variance prior of :func:`_shrink_variances` as a real variance.
    """
    res = lstsq(np.stack([np.ones_like(U), U], axis=-1), Y, W.astype(float))
    with np.errstate(invalid="ignore"):
        y_hi = np.max(np.where(W, Y, -np.inf), axis=1)
        y_lo = np.min(np.where(W, Y, np.inf), axis=1)
    flat = res.identified & (y_hi == y_lo)
    beta = np.where(flat[:, None], np.stack([y_lo, np.zeros_like(y_lo)], axis=1), res.coef)
    rss = np.where(flat, 0.0, res.rss)
    return beta, rss, res


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
    _, rss0, _ = _line_fits(U0, Yc, W)
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
            _, rssk, _ = _line_fits(np.broadcast_to(basis(xs, x_ref, kk), (R, M)), Yc, W)
            lk = prof(np.where(np.isfinite(rssk), rssk, rss0))
            if lk < best_l:
                best_l, best_k = lk, float(kk)
        if best_k > 0:
            # AICc undefined (NaN, too few points for the extra k) never wins: the group stays linear
            aicc_lin = l_lin + aicc_penalty(N, P)
            aicc_sat = best_l + aicc_penalty(N, P + 1)
            if aicc_sat < aicc_lin - cfg.aicc_margin:
                k_task = best_k
    k = np.where(n_distinct >= cfg.min_points_saturating, k_task, 0.0) if k_task > 0 else np.zeros(R)
    U = _basis_rows(xs, x_ref, k)
    beta_ols, rss, ls = _line_fits(U, Yc, W)
    d = np.maximum(n - 2, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s2_ols = np.where((d > 0) & np.isfinite(rss), rss / np.maximum(d, 1), np.nan)
    s2, d0, s0 = _shrink_variances(s2_ols, d)

    XtX, Xty = ls.xtwx, ls.xtwy  # also for rows that do not determine a line: the prior completes them

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
        inv = ls.xtwx_inv[est]
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
        okr = np.all(np.isfinite(beta_ols), 1) & ls.identified
        if okr.any():
            P[okr] = ls.cov(s2)[okr]

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

