"""The emergence report for one task x family (emergence.md §9.3–§9.5, §9.7).

:func:`analyse` takes a :class:`~capscale.analysis.emergence.inputs.TaskInput` and returns the report as a
JSON-ready dict (schema §9.7 plus a few documented extra keys). All statistics are computed once on a
stacked array whose row 0 is the observed curve and rows 1..B are paired item-bootstrap replicates
(one set of resampled item indices per replicate, shared by every model and metric), so each
statistic and its percentile CI come from one vectorised call.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from capscale.analysis.emergence import fits as _fits
from capscale.analysis.emergence import stats as _st
from capscale.analysis.emergence.inputs import BOUNDED, TaskInput

__all__ = ["analyse", "decide", "to_shape", "VERDICTS", "DEFAULTS", "bootstrap_weights"]

VERDICTS = ("METRIC_INDUCED", "GENUINE_TRANSITION_CANDIDATE", "SMOOTH", "INVERSE_OR_NONMONOTONE",
            "INSUFFICIENT_DATA")

#: Defaults of §9.8 and of the decision procedure. The effect-size floor (``min_jex``, ``min_step_z``,
#: ``max_pre_ratio``), ``min_kink_change`` and ``crossing_tol`` were chosen on a development run of the planted
#: classes (8 families per grid point, seeds 50000+, disjoint from the committed calibration run's) and frozen
#: before ``capscale bench emergence-calibration`` was run with them (results/emergence/calibration/).
DEFAULTS = {"B": 2000, "alpha": 0.05, "seed": 0, "min_items": 20, "min_models_shape": 4, "min_models_sig": 5,
            "min_models_kink": 7, "z_thresh": 2.0, "daicc_thresh": 2.0, "jex_ci_width_max": 0.5,
            "crossing_tol": 4.0, "min_jex": 0.10, "min_step_z": 3.5, "max_pre_ratio": 0.6,
            "min_kink_change": 0.5}

#: Order in which metrics are reported.
METRIC_ORDER = ("acc", "acc_norm", "acc_bytes", "exact_match_greedy", "choice_logodds", "margin", "logp_vocab",
                "neg_bpb", "p_vocab", "p_choices", "neg_brier")

CAVEAT_ITEM_BOOT = "item-bootstrap only; seed variance (training noise) not included, so CIs are optimistic"
CAVEAT_PARAM_BOOT = ("aggregate-only input: replicates are drawn as independent normals from the reported "
                     "per-model standard errors (no item pairing), so step CIs are conservative and "
                     "training noise is not included")


def bootstrap_weights(n_items: int, B: int, rng: np.random.Generator) -> np.ndarray:
    """Item-count matrix (B, n_items): W[b, i] = times item i is drawn in replicate b (rows sum to n_items)."""
    idx = rng.integers(0, n_items, size=(B, n_items))
    flat = (idx + (np.arange(B) * n_items)[:, None]).ravel()
    return np.bincount(flat, minlength=B * n_items).reshape(B, n_items).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------
# replicates


def _seed_combine(R: np.ndarray, group: np.ndarray, n_groups: int, rng: np.random.Generator,
                  point: bool) -> np.ndarray:
    """Average seed rows into sizes; for replicates resample seeds within each size first."""
    Bn = R.shape[0]
    out = np.empty((Bn, n_groups))
    for g in range(n_groups):
        rows = np.flatnonzero(group == g)
        if len(rows) == 1:
            out[:, g] = R[:, rows[0]]
        elif point:
            out[:, g] = R[:, rows].mean(axis=1)
        else:
            pick = rng.integers(0, len(rows), size=(Bn, len(rows)))
            w = np.stack([(pick == j).sum(axis=1) for j in range(len(rows))], axis=1) / len(rows)
            out[:, g] = (R[:, rows] * w).sum(axis=1)
    return out


def _replicates(ti: TaskInput, B: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], str]:
    """Per metric an array (1 + B, n): row 0 the observed aggregate, rows 1.. the replicates (B may be 0)."""
    n = ti.n_models
    out: dict[str, np.ndarray] = {}
    if ti.items:
        names = list(ti.items)
        n_it = ti.n_items
        mats = [ti.items[k] for k in names]
        # analytic PassUntil, computed in log space: log PU = max + log mean exp(ℓ - max)
        lpv = ti.items.get("logp_vocab")
        if lpv is not None:
            mx = lpv.max(axis=1, keepdims=True)
            mats.append(np.exp(lpv - mx))
            names.append("_pu_scaled")
        stack = np.concatenate(mats, axis=0)  # (M * n_rows, I)
        point = stack.mean(axis=1)[None, :]
        if B > 0:
            W = bootstrap_weights(n_it, B, rng)
            reps = (W @ stack.T) / n_it
            allr = np.vstack([point, reps])
        else:
            allr = point
        nr = len(ti.group)
        for j, k in enumerate(names):
            R = allr[:, j * nr:(j + 1) * nr]
            if k == "_pu_scaled":
                with np.errstate(divide="ignore"):
                    R = np.log(R) + mx[:, 0][None, :]
                k = "log_pu"
            comb = np.vstack([_seed_combine(R[:1], ti.group, n, rng, True),
                              _seed_combine(R[1:], ti.group, n, rng, False)]) if len(R) > 1 else \
                _seed_combine(R, ti.group, n, rng, True)
            out[k] = comb
        return out, "paired item bootstrap"
    for k, (y, se) in (ti.agg or {}).items():
        ok = B > 0 and bool(np.isfinite(se).all())
        reps = y[None, :] + se[None, :] * rng.standard_normal((B, n)) if ok else np.empty((0, n))
        out[k] = np.vstack([y[None, :], reps])
    return out, "parametric (normal, from reported standard errors)"


# ----------------------------------------------------------------------------------------------------------
# metric spaces


def _chance_levels(ti: TaskInput) -> dict[str, float]:
    """Chance level per metric in raw units (None where undefined)."""
    ch: dict[str, float] = dict(ti.chance)
    if ti.n_choices is not None and len(ti.n_choices):
        K = ti.n_choices
        c = float(np.mean(1.0 / K))
        for m in ("acc", "acc_norm", "acc_bytes", "p_choices"):
            ch.setdefault(m, c)
        ch.setdefault("exact_match_greedy", 0.0)
        with np.errstate(divide="ignore"):
            ch.setdefault("choice_logodds", float(np.mean(np.log(1.0 / np.maximum(K - 1, 1)))))
        ch.setdefault("margin", 0.0)
        ch.setdefault("neg_brier", float(-np.mean((K - 1) / K**2)))
    return ch


def to_shape(metric: str, Y: np.ndarray, chance: float | None) -> tuple[np.ndarray, str]:
    """Map raw curves to the metric's shape space (§9.4-C); returns (array, description).

    Bounded metrics with a chance level are chance-normalised, ``logp_vocab``/``neg_bpb`` go to negated log-NLL
    space, ``log_pu`` to negated PassUntil space; any other metric is returned as it is. ``Y`` holds one curve
    per row (models along the last axis).
    """
    if metric in BOUNDED and chance is not None:
        top = 0.0 if metric == "neg_brier" else 1.0
        return (Y - chance) / (top - chance), "chance-normalised: (y - chance)/(perfect - chance)"
    if metric in ("logp_vocab", "neg_bpb"):
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.log(-Y), "log NLL space, negated: -ln(-y)"
    if metric == "log_pu":
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.log(-Y), "PassUntil space, negated: -u = -ln(-ln PU)"
    return Y, "raw"


# ----------------------------------------------------------------------------------------------------------
# helpers


def _ci(a: np.ndarray, alpha: float) -> list | None:
    """Percentile CI over replicates (rows 1..); None without replicates."""
    if a.shape[0] < 2:
        return None
    return _st.percentile_ci(a[1:], alpha, axis=0).tolist()


def _f(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if np.isnan(v) else v


def _extrapolate(x: np.ndarray, S: np.ndarray, k: int) -> dict:
    """Leave-top-k-out linear extrapolation in shape space (§9.4-E)."""
    n = len(x)
    lin = _fits.fit_linear_family(x[: n - k], S[:, : n - k], 1)
    pred = _fits.predict_poly(lin["coef"], lin["x_mean"], x[n - k:])  # (R, k)
    obs = S[:, n - k:]
    if S.shape[0] > 2:
        se_obs = obs[1:].std(axis=0, ddof=1)
        se_pred = pred[1:].std(axis=0, ddof=1)
        den = np.sqrt(se_obs**2 + se_pred**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(den > 0, (obs[0] - pred[0]) / den, np.nan)
    else:
        z = np.full(k, np.nan)
    return {"k": k, "x": x[n - k:].tolist(), "obs": obs[0].tolist(), "pred": pred[0].tolist(),
            "z": [_f(v) for v in z]}


def _fit_summary(x: np.ndarray, S: np.ndarray, bounded: bool, alpha: float, n: int) -> dict:
    F = _fits.fit_all(x, S, bounded=bounded)
    out: dict = {}
    for name, f in F.items():
        d = {key: _f(v[0]) for key, v in f.items() if isinstance(v, np.ndarray)}
        d["aicc_defined"] = n - _fits.K_PARAMS[name] - 1 >= 1
        if name in ("sigmoid2", "sigmoid4"):
            d["x0_ci"] = _ci(f["x0"], alpha)
            d["width_dec"] = _f(f["width_dec"][0])
            d["x0_in_range"] = bool(x[0] <= f["x0"][0] <= x[-1])
            d["grid_step"] = f["grid_step"]
        if name in ("hinge2", "broken"):
            d["x_b_ci"] = _ci(f["x_b"], alpha)
            d["grid_step"] = f["grid_step"]
        out[name] = d
    da: dict = {}

    def diff(a: str, b: str) -> float | None:
        if a in F and b in F and out[a]["aicc_defined"] and out[b]["aicc_defined"]:
            return _f(F[a]["aicc"][0] - F[b]["aicc"][0])
        return None

    da["sigmoid2_minus_linear"] = diff("sigmoid2", "linear")
    da["hinge2_minus_linear"] = diff("hinge2", "linear")
    da["quadratic_minus_linear"] = diff("quadratic", "linear")
    da["broken_minus_quadratic"] = diff("broken", "quadratic")  # the kink test
    da["sigmoid4_minus_linear"] = diff("sigmoid4", "linear")  # descriptive (4-PL, n >= 7)
    out["dAICc"] = da
    return out


# ----------------------------------------------------------------------------------------------------------
# per-metric statistics


def _jump_shape(x: np.ndarray, S: np.ndarray, i: int) -> dict:
    """Effect sizes of the largest adjacent step ``i`` of a curve (row 0 of S; rows 1.. replicates).

    * ``excess_step``: the step minus what an even rise over log compute would give there,
      Δy_i − (y_n − y_1)·Δx_i/(x_n − x_1) (units of y), and ``excess_step_z``: that over the bootstrap SD of
      Δy_i (the task's item noise).
    * ``pre_slope_ratio``: mean slope from the smallest model to the start of the step, over the step's own
      slope, ((y_i − y_1)/(x_i − x_1)) / (Δy_i/Δx_i). A jump after a slow phase has a small ratio; a curve
      that is steepest where it starts (saturation, diminishing returns) has a ratio near or above 1.
      ``None`` when the step is the first one (no models before it).
    """
    dx = np.diff(x)
    dS = np.diff(S, axis=1)
    total = S[:, -1] - S[:, 0]
    exc = dS[:, i] - total * dx[i] / (x[-1] - x[0])
    out: dict = {"excess_step": _f(exc[0]), "excess_step_z": None, "pre_slope_ratio": None}
    if S.shape[0] > 2:
        sd = dS[1:, i].std(ddof=1)
        out["excess_step_z"] = _f(exc[0] / sd) if sd > 0 else None
    if i >= 1 and dS[0, i] != 0:
        pre = (S[0, i] - S[0, 0]) / (x[i] - x[0])
        out["pre_slope_ratio"] = _f(pre / (dS[0, i] / dx[i]))
    return out


def _metric_report(metric: str, x: np.ndarray, Y: np.ndarray, chance: float | None, alpha: float,
                   model_ids: list[str], per_item: np.ndarray | None, cfg: dict) -> dict:
    n = len(x)
    S, space = to_shape(metric, Y, chance)
    has_reps = Y.shape[0] > 1
    rep: dict = {"space": space, "chance": _f(chance)}
    rep["y"] = Y[0].tolist()
    rep["ci"] = _ci(Y, alpha)
    rep["se"] = Y[1:].std(axis=0, ddof=1).tolist() if Y.shape[0] > 2 else None
    not_computed: dict[str, str] = {}
    finite_shape = np.isfinite(S[0]).all()
    if not finite_shape:
        not_computed["shape"] = "non-finite value in the shape space (e.g. PassUntil exactly 0 or 1)"
    tau, p, method = _st.kendall_exact(x, S[0]) if finite_shape else (np.nan, np.nan, "undefined")
    rep["tau_model"] = _f(tau)
    rep["tau_p"] = _f(p)
    rep["tau_method"] = method
    if n < cfg["min_models_sig"]:
        not_computed["tau_significance"] = (f"n = {n} < {cfg['min_models_sig']}: the exact p-value can never be "
                                            f"< 0.05 (minimum 2/n! = {_st.factorial_p(n):.4f})")
    rep["sign_monotonicity"] = _f(_st.sign_monotonicity(S[0])) if finite_shape else None
    if per_item is not None:
        rep["per_item_tau"] = _st.per_item_tau(per_item)
    if n < cfg["min_models_shape"] or not finite_shape:
        if n < cfg["min_models_shape"]:
            not_computed["shape_statistics"] = f"n = {n} < {cfg['min_models_shape']} models (B = L for n <= 3)"
        rep["not_computed"] = not_computed
        return rep
    # rows with non-finite values (possible in PassUntil space) are dropped from the replicate set
    okrows = np.isfinite(S).all(axis=1)
    okrows[0] = True
    n_dropped = int((~okrows).sum())
    S = S[okrows]
    Iv = np.asarray(_st.interestingness(S))
    Bv = np.asarray(_st.breakthroughness(S))
    Lv = np.asarray(_st.linearity(S))
    Jv = np.asarray(_st.jump_share(S))
    jl = _st.j_lin(x)
    Jex = Jv - jl
    dS = np.diff(S, axis=1)
    istar = int(np.argmax(np.abs(dS[0])))
    rep.update({
        "I": _f(Iv[0]), "B": float(Bv[0]), "B_norm": float(Bv[0] / (n - 1)), "B_ci": _ci(Bv[:, None], alpha),
        "B_frac_infinite_or_nan": float(np.mean(~np.isfinite(Bv[1:]))) if has_reps else None,
        "L": _f(Lv[0]), "L_norm": _f(Lv[0] / (n - 1)), "J": _f(Jv[0]), "J_lin": jl, "J_ex": _f(Jex[0]),
        "J_ex_ci": None, "jump_x": float((x[istar] + x[istar + 1]) / 2), "jump_step": istar,
        "tau_model_ci": None,
    })
    if rep["B_ci"] is not None:
        rep["B_ci"] = [v[0] for v in rep["B_ci"]]
        rep["J_ex_ci"] = [v[0] for v in _ci(Jex[:, None], alpha)]
        rep["tau_model_ci"] = [v[0] for v in _ci(np.asarray(_st.kendall_tau_rows(S))[:, None], alpha)]
        rep["replicates_dropped_nonfinite"] = n_dropped
        sd = dS[1:].std(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rep["step_z"] = [_f(v) for v in np.where(sd > 0, dS[0] / sd, np.nan)]
        rep.update(_jump_shape(x, S, istar))
        # a drop is significant when its CI at the Bonferroni level alpha / (n - 1) lies below 0: with n - 1
        # steps tested, the unadjusted CI calls a drop on a flat curve in about half the families
        dci = _st.percentile_ci(dS[1:], alpha / (n - 1), axis=0)
        rep["significant_drops"] = [int(i) for i in np.flatnonzero(dci[1] < 0)]
        rep["drop_alpha"] = alpha / (n - 1)
        order = np.argsort(dS[0])[::-1]
        if n >= 3:
            a, b = int(order[0]), int(order[1])
            gap = dS[:, a] - dS[:, b]
            gci = _st.percentile_ci(gap[1:], alpha)
            rep["dominant_jump"] = {"step": a, "second_step": b, "gap": float(gap[0]), "gap_ci": gci.tolist(),
                                    "dominant": bool(gci[0] > 0)}
        # bootstrap p-value of "J_ex > 0" (two-sided-equivalent, so p < alpha <=> lower CI bound > 0)
        jb = Jex[1:]
        jb = jb[np.isfinite(jb)]
        rep["p_sharp"] = float(min(1.0, 2 * (np.sum(jb <= 0) + 1) / (len(jb) + 1))) if len(jb) else None
        se_m = Y[1:].std(axis=0, ddof=1)
        med = float(np.median(se_m))
        rep["resolution_snr"] = _f((Y[0].max() - Y[0].min()) / med) if med > 0 else None
        if chance is not None:
            lo = _st.percentile_ci(Y[1:], alpha, axis=0)[0]
            above = np.flatnonzero(lo > chance)
            rep["detect_x"] = float(x[above[0]]) if len(above) else None
            rep["first_above_chance_model"] = model_ids[above[0]] if len(above) else None
    rep["fits"] = _fit_summary(x, S, metric in BOUNDED and chance is not None, alpha, n)
    ex = {}
    for k in (1, 2):
        if n - k >= 3 and (k == 1 or n >= 7):
            ex[str(k)] = _extrapolate(x, S, k)
    if ex:
        rep["extrapolation"] = dict(ex["1"]) if "1" in ex else {}
        rep["extrapolation"]["by_k"] = ex
    if n < cfg["min_models_kink"]:
        not_computed["kink_test"] = f"n = {n} < {cfg['min_models_kink']} models"
    rep["not_computed"] = not_computed
    return rep


# ----------------------------------------------------------------------------------------------------------
# per-item analyses


def _theil_sen(x: np.ndarray, Yi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Theil–Sen slope and intercept per row of Yi (items x models)."""
    i, j = np.triu_indices(len(x), k=1)
    slopes = (Yi[:, j] - Yi[:, i]) / (x[j] - x[i])
    b = np.median(slopes, axis=1)
    a = np.median(Yi - b[:, None] * x[None, :], axis=1)
    return a, b


def crossing_points(x: np.ndarray, latent: np.ndarray, acc_items: np.ndarray | None, alpha: float,
                    latent_name: str, tol: float = 4.0) -> dict:
    """Crossing-point analysis (§9.4-G) of a per-item latent (models x items) whose sign gives accuracy.

    Per item latent ≈ α_i + β_i·x (OLS for n ≥ 7, Theil–Sen otherwise); x*_i = −α_i/β_i for β_i > 0;
    implied accuracy â_m = mean_i Φ(ŷ_im / (σ̂_i·sqrt(1 − h_m))), with ŷ_im the fitted latent, σ̂_i the
    residual SD (n − 2 degrees of freedom, floored) and h_m the model's leverage
    1/n + (x_m − x̄)²/Σ(x − x̄)². The factor sqrt(1 − h_m) removes the flattening that plugging in a fitted
    value causes: if ŷ ~ N(μ, h·σ²) then E[Φ(ŷ / (σ·sqrt(1 − h)))] = Φ(μ/σ) = P(latent > 0), so the implied
    curve is unbiased for the observed accuracy when the latent is linear with normal noise (without the factor
    the implied curve is Φ(μ/(σ·sqrt(1 + h))): flatter than the truth, which made correctly planted
    thresholding look unexplained at high noise).

    ``implied_inside_band`` compares observed and implied accuracy at every model with the paired standard
    error of their difference over items, SE_m = SD_i(acc_im − â_im)/sqrt(I), floored at the resolution
    1/I: True when max_m |observed − implied| / SE_m ≤ ``tol`` (default 4: the implied curve rests on per-item
    fits on n points and a normal-noise model, so its |z| run above the nominal normal; 4 was chosen on
    planted families, see :data:`DEFAULTS`).

    Parameters
    ----------
    x : array (n,)
        log10 compute of the models (FLOPs).
    latent : array (n, I)
        Per-model, per-item latent (the margin, nats).
    acc_items : array (n, I) or None
        Per-model, per-item accuracy (0/1, fractional for ties).
    alpha : float
        Unused (kept for a uniform signature with the other analyses).
    latent_name : str
        Name of the latent recorded in the output.
    tol : float
        Tolerance in paired standard errors.
    """
    n = len(x)
    Yi = latent.T  # items x models
    xm = x.mean()
    sxx = float(((x - xm) ** 2).sum())
    if n >= 7:
        b = ((x - xm) * (Yi - Yi.mean(axis=1, keepdims=True))).sum(axis=1) / sxx
        a = Yi.mean(axis=1) - b * xm
        method = "OLS"
    else:
        a, b = _theil_sen(x, Yi)
        method = "Theil-Sen"
    resid = Yi - (a[:, None] + b[:, None] * x[None, :])
    sig = np.sqrt((resid**2).sum(axis=1) / max(n - 2, 1))
    scale = np.median(np.abs(Yi)) if np.isfinite(Yi).all() else 1.0
    sig = np.maximum(sig, 1e-6 * max(scale, 1e-12))
    improving = b > 0
    xstar = -a[improving] / b[improving]
    out: dict = {"latent": latent_name, "fit": method, "n_items": int(len(a)),
                 "frac_nonimproving": float(1 - improving.mean()) if len(a) else None}
    if improving.sum() >= 2:
        q1, med, q3 = np.percentile(xstar, [25, 50, 75])
        out.update({"iqr_dec": float(q3 - q1), "median_x": float(med),
                    "frac_inside_range": float(np.mean((xstar >= x[0]) & (xstar <= x[-1])))})
    else:
        out.update({"iqr_dec": None, "median_x": None})
    lev = 1.0 / n + (x - xm) ** 2 / sxx if sxx > 0 else np.full(n, 1.0 / n)
    shrink = np.sqrt(np.clip(1.0 - lev, 1e-3, None))
    per_item = ndtr((a[:, None] + b[:, None] * x[None, :]) / (sig[:, None] * shrink[None, :]))  # items x models
    implied = per_item.mean(axis=0)
    out["implied_acc"] = implied.tolist()
    out["leverage"] = lev.tolist()
    out["xstar_sample"] = np.sort(xstar).tolist() if len(xstar) <= 5000 else \
        np.sort(np.random.default_rng(0).choice(xstar, 5000, replace=False)).tolist()
    if acc_items is not None:
        n_it = acc_items.shape[1]
        acc = acc_items.mean(axis=1)
        out["observed_acc"] = acc.tolist()
        resid_acc = acc - implied
        out["max_abs_resid"] = float(np.max(np.abs(resid_acc)))
        if n_it > 1:
            diff = acc_items - per_item.T  # models x items
            res = 1.0 / n_it
            se = np.maximum(diff.std(axis=1, ddof=1) / np.sqrt(n_it), res)
            z95 = 1.959963984540054
            out["band"] = [(implied - z95 * se).tolist(), (implied + z95 * se).tolist()]
            out["paired_se"] = se.tolist()
            out["se_floor"] = res
            out["max_abs_z"] = float(np.max(np.abs(resid_acc) / se))
            out["tolerance_z"] = tol
            out["implied_inside_band"] = bool(out["max_abs_z"] <= tol)
    return out


def _resolution(acc: np.ndarray, n_items: int, n_choices: np.ndarray | None, model_ids: list[str],
                x: np.ndarray) -> dict:
    """Wilson CIs, Poisson-binomial z against chance and the minimum detectable lift (§9.4-F)."""
    z95 = 1.959963984540054
    p = acc
    lo, hi = _st.wilson_interval(p, n_items, z95)
    out = {"wilson_ci": [lo.tolist(), hi.tolist()],
           "resolution_1_over_n": 1.0 / n_items}
    if n_choices is not None:
        q = 1.0 / n_choices
        c = float(q.mean())
        sd = np.sqrt((q * (1 - q)).sum()) / n_items
        z = (p - c) / sd
        out.update({"chance": c, "z_vs_chance": z.tolist(),
                    "min_detectable_lift": float(1.959963984540054 * np.sqrt(c * (1 - c) / n_items))})
        above = np.flatnonzero(z > z95)
        out["first_above_chance_model"] = model_ids[above[0]] if len(above) else None
        out["detect_x"] = float(x[above[0]]) if len(above) else None
    return out


def _passuntil(x: np.ndarray, log_pu: np.ndarray, alpha: float) -> dict:
    """PassUntil space (§3.4, §9.4-D): u = ln(−ln PU) vs x, β₂ of a quadratic with bootstrap CI."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.log(-log_pu)
    out: dict = {"log_PU": log_pu[0].tolist(), "PU": np.exp(log_pu[0]).tolist(), "u": u[0].tolist()}
    if not np.isfinite(u[0]).all():
        out["not_computed"] = "u not finite (PU = 0 or 1 for some model)"
        return out
    if len(x) < 4:
        out["not_computed"] = f"n = {len(x)} < 4 models for a quadratic"
        return out
    ok = np.isfinite(u).all(axis=1)
    U = u[ok]
    q = _fits.fit_linear_family(x, U, 2)
    lin = _fits.fit_linear_family(x, U, 1)
    out["beta1"] = float(lin["coef"][0, 1])
    out["beta2"] = float(q["coef"][0, 2])
    out["beta2_ci"] = _st.percentile_ci(q["coef"][1:, 2], alpha).tolist() if len(U) > 2 else None
    out["accelerated"] = bool(out["beta2_ci"] is not None and out["beta2_ci"][1] < 0)
    out["quad_fit"] = {"coef_centred": q["coef"][0].tolist(), "x_mean": q["x_mean"]}
    out["lin_fit"] = {"coef_centred": lin["coef"][0].tolist(), "x_mean": lin["x_mean"]}
    return out


# ----------------------------------------------------------------------------------------------------------
# decision procedure


def _n(v, spec: str) -> str:
    """Format a number for a reason string; None/NaN as 'n/a'."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    return format(v, spec)


def _effect_floor(d: dict, cfg: dict) -> dict:
    """Effect-size floor of a discrete metric's largest adjacent step (see :func:`decide`).

    Three conditions, each a size and not a significance test: the step's excess share of the total change
    (``J_ex >= min_jex``), its excess over an even rise in bootstrap SDs (``excess_step_z >= min_step_z``),
    and a slow phase before it (``pre_slope_ratio <= max_pre_ratio``; saturation-aware: a curve that is
    steepest at its start is levelling off, not jumping). Returns the statistics, the thresholds, the
    failed conditions in words and ``passes``.
    """
    jex, z, pre = d.get("J_ex"), d.get("excess_step_z"), d.get("pre_slope_ratio")
    failed = []
    if jex is None or not jex >= cfg["min_jex"]:
        failed.append(f"J_ex = {_n(jex, '.3f')} < {cfg['min_jex']} (largest step is not a large share of the "
                      f"total change beyond an even spread)")
    if z is None or not z >= cfg["min_step_z"]:
        failed.append(f"largest step exceeds an even rise by {_n(z, '.2f')} bootstrap SD < {cfg['min_step_z']}")
    if pre is not None and not pre <= cfg["max_pre_ratio"]:
        failed.append(f"slope before the step = {_n(pre, '.2f')} x the step's slope > {cfg['max_pre_ratio']} "
                      f"(steepest at the start: saturating, not a jump after a slow phase)")
    return {"J_ex": jex, "min_jex": cfg["min_jex"], "excess_step": d.get("excess_step"), "excess_step_z": z,
            "min_step_z": cfg["min_step_z"], "pre_slope_ratio": pre, "max_pre_ratio": cfg["max_pre_ratio"],
            "failed": failed, "passes": not failed}


def _kink_change(k: dict) -> float | None:
    """Relative slope change of the broken-line fit: |d| / max(|b|, |b + d|) in [0, 2] (0 = no kink)."""
    br = (k.get("fits") or {}).get("broken") or {}
    b, dd = br.get("b"), br.get("d")
    if b is None or dd is None:
        return None
    den = max(abs(b), abs(b + dd))
    return float(abs(dd) / den) if den > 0 else None


def decide(rep: dict, cfg: dict, sharp_a_override: bool | None = None) -> tuple[str, list[str], dict]:
    """Verdict of §9.5 from a report's metric blocks; returns (verdict, reasons, components).

    ``sharp_a_override`` replaces criterion 1(a) (used after Benjamini–Hochberg control in a scan).
    """
    n = rep["n_models"]
    D, K = rep.get("decision_metric"), rep.get("continuous_metric")
    M = rep["metrics"]
    reasons: list[str] = []
    comp: dict = {"D": D, "K": K}
    zt, dt = cfg["z_thresh"], cfg["daicc_thresh"]
    if rep.get("input_problems"):
        return "INSUFFICIENT_DATA", list(rep["input_problems"]), comp
    if n < cfg["min_models_sig"]:
        return "INSUFFICIENT_DATA", [f"n_models = {n} < {cfg['min_models_sig']}: no significance claim possible "
                                     f"(a perfectly monotone curve has Kendall p = 2/n! = "
                                     f"{_n(_st.factorial_p(n), '.4f')})"], comp
    if D is None:
        return "INSUFFICIENT_DATA", ["no discrete metric (acc, acc_norm, exact match) available"], comp
    d = M[D]
    if d.get("B") is None:
        return "INSUFFICIENT_DATA", [f"shape statistics of {D} not computed: {d.get('not_computed')}"], comp
    # nonmonotone / inverse
    inv = []
    for m in [D] + ([K] if K else []):
        mm = M[m]
        tp = mm.get("tau_p")
        if mm.get("tau_model") is not None and mm["tau_model"] < 0 and tp is not None and tp < cfg["alpha"]:
            inv.append(f"tau_model({m}) = {_n(mm['tau_model'], '.3f')} < 0 (exact p = {_n(tp, '.3g')} < "
                       f"{cfg['alpha']})")
        if mm.get("significant_drops"):
            steps = [f"{rep['models'][i]}->{rep['models'][i + 1]}" for i in mm["significant_drops"]]
            inv.append(f"significant drop(s) in {m} (bootstrap CI of Δy below 0): {steps}")
    if inv:
        return "INVERSE_OR_NONMONOTONE", inv, comp
    if d.get("J_ex") is None:
        return "SMOOTH", [f"{D} does not change across the models (constant curve): nothing sharp to explain"], comp
    jci = d.get("J_ex_ci")
    if jci is None:
        return "INSUFFICIENT_DATA", ["no bootstrap replicates (too few items or B = 0): no CI for J_ex"], comp
    width = jci[1] - jci[0]
    comp["J_ex_ci_width"] = width
    if width > cfg["jex_ci_width_max"]:
        return "INSUFFICIENT_DATA", [f"CI width of J_ex({D}) = {_n(width, '.3f')} > {cfg['jex_ci_width_max']}"], comp
    # 0. effect-size floor (not in §9.5): criteria 1(a)-(c) are significance tests, and with many items they
    # fire on mild S shapes (a planted gradual rise of 400 items gave J_ex = 0.028 with CI > 0). A discrete
    # metric can only be "sharp" when its largest adjacent step is large against the curve's own range
    # (J_ex >= min_jex: the step holds at least that much more of the total change than an even spread over
    # log compute would) and against the task's binomial noise (step / bootstrap SE >= min_step_z).
    floor = _effect_floor(d, cfg)
    comp["effect_size"] = floor
    if not floor["passes"]:
        return "SMOOTH", [f"{D} jump below the effect-size floor: " + "; ".join(floor["failed"]) +
                          " (significance alone does not make a curve sharp)"], comp
    # 1. is D sharp?
    sharp_a = bool(jci[0] > 0 and d["B_norm"] > 1 + 1e-9)  # tolerance: equal steps give 1 up to rounding
    if sharp_a_override is not None:
        comp["sharp_a_before_fdr"] = sharp_a
        sharp_a = sharp_a and sharp_a_override
    da = d["fits"]["dAICc"]
    sa, ha = da.get("sigmoid2_minus_linear"), da.get("hinge2_minus_linear")
    sharp_b = bool((sa is not None and sa <= -dt) or (ha is not None and ha <= -dt))
    zD = [z for z in (d.get("extrapolation") or {}).get("z", []) if z is not None]
    sharp_c = bool(any(z > zt for z in zD))
    comp.update({"sharp_a": sharp_a, "sharp_b": sharp_b, "sharp_c": sharp_c})
    fired = []
    if sharp_a:
        fired.append(f"1a: J_ex({D}) = {_n(d['J_ex'], '.3f')} with CI [{_n(jci[0], '.3f')}, {_n(jci[1], '.3f')}] > 0 and "
                     f"B/(n-1) = {_n(d['B_norm'], '.2f')} > 1")
    if sharp_b:
        fired.append(f"1b: dAICc(sigmoid2 - linear) = {sa}, dAICc(hinge2 - linear) = {ha} (<= -{dt})")
    if sharp_c:
        fired.append(f"1c: leave-top-1-out z({D}) = {_n(max(zD), '.2f')} > {zt}")
    if not (sharp_a or sharp_b or sharp_c):
        return "SMOOTH", [f"{D} not sharp: J_ex = {_n(d['J_ex'], '.3f')} CI [{_n(jci[0], '.3f')}, {_n(jci[1], '.3f')}], "
                          f"B/(n-1) = {_n(d['B_norm'], '.2f')}, dAICc sigmoid2/hinge2 - linear = {sa}/{ha}, "
                          f"top-1 z = {zD}"], comp
    reasons += fired
    i = d["jump_step"]
    left, right = i + 1, n - i - 1
    if left < 2 or right < 2:
        return "INSUFFICIENT_DATA", reasons + [f"fewer than 2 models on a side of the candidate transition at "
                                               f"x = {_n(d['jump_x'], '.2f')} ({left} below, {right} above)"], comp
    if K is None:
        return "INSUFFICIENT_DATA", reasons + ["no continuous metric (needs per-choice log-likelihoods, or a "
                                               "perplexity): cannot tell metric-induced from genuine"], comp
    # 2. is K smooth?
    k = M[K]
    fails = []
    if k.get("tau_model") is None or not k["tau_model"] > 0:
        fails.append(f"tau_model({K}) = {k.get('tau_model')} not > 0")
    kink = k.get("fits", {}).get("dAICc", {}).get("broken_minus_quadratic")
    kchange = _kink_change(k)
    comp["kink_slope_change"] = kchange
    if kink is not None and kink <= -dt and kchange is not None and kchange < cfg["min_kink_change"]:
        reasons.append(f"note: {K} prefers a broken line (dAICc {_n(kink, '.2f')}) but its slope changes by only "
                       f"{_n(kchange, '.2f')} of the larger slope (< {cfg['min_kink_change']}): not a material kink")
    if kink is not None and kink <= -dt and (kchange is None or kchange >= cfg["min_kink_change"]):
        xb = k["fits"]["broken"]["x_b"]
        fails.append(f"kink in {K}: dAICc(broken - quadratic) = {_n(kink, '.2f')} <= -{dt} at x_b = {_n(xb, '.2f')} "
                     f"({D} jump at x = {_n(d['jump_x'], '.2f')})")
    zK = [z for z in (k.get("extrapolation") or {}).get("z", []) if z is not None]
    # deviation from §9.5 (|z| < 2): only an unpredicted *gain* (z > 2) counts against smoothness; z < −2 is
    # under-performance (saturation / diminishing returns), reported but not evidence of a transition
    if any(z > zt for z in zK):
        fails.append(f"leave-top-1-out z({K}) = {_n(max(zK), '.2f')} > {zt} (unpredicted gain)")
    elif any(z < -zt for z in zK):
        reasons.append(f"note: leave-top-1-out z({K}) = {_n(min(zK), '.2f')} < -{zt} (under-performance, e.g. "
                       f"saturation; not counted as a transition)")
    comp["K_smooth"] = not fails
    comp["kink_test_computed"] = kink is not None
    if fails:
        return "GENUINE_TRANSITION_CANDIDATE", reasons + fails, comp
    reasons.append(f"{K} smooth: tau = {_n(k['tau_model'], '.3f')}, kink dAICc = {kink}, top-1 z = {zK}")
    if kink is None:
        reasons.append(f"kink test not computed (n = {n} < {cfg['min_models_kink']})")
    # 3. does thresholding explain D?
    cp = rep.get("crossing_points") or {}
    inside = cp.get("implied_inside_band")
    comp["crossing_explains"] = inside
    if inside is False:
        return "GENUINE_TRANSITION_CANDIDATE", reasons + [
            f"crossing-point implied accuracy departs from observed {D} "
            f"(max |obs - implied| = {_n(cp.get('max_abs_resid'), '.3f')} = "
            f"{_n(cp.get('max_abs_z'), '.2f')} paired SE > {cp.get('tolerance_z')})"], comp
    if inside:
        reasons.append(f"crossing points explain {D}: max |obs - implied| = "
                       f"{_n(cp.get('max_abs_z'), '.2f')} paired SE (<= "
                       f"{cp.get('tolerance_z')}); IQR of x* = {_n(cp.get('iqr_dec'), '.3f')} decades")
    else:
        reasons.append("crossing-point check not computed")
    return "METRIC_INDUCED", reasons, comp


# ----------------------------------------------------------------------------------------------------------


def analyse(ti: TaskInput, *, B: int = 2000, seed: int = 0, alpha: float = 0.05, min_items: int = 20,
            keep_curves: bool = False, min_jex: float = DEFAULTS["min_jex"],
            min_step_z: float = DEFAULTS["min_step_z"], max_pre_ratio: float = DEFAULTS["max_pre_ratio"]) -> dict:
    """The emergence report of one task x family (emergence.md §9), as a JSON-ready dict.

    Parameters
    ----------
    ti : TaskInput
        From :func:`capscale.analysis.emergence.from_items`, :func:`from_arrays` or :func:`from_ladder`.
    B : int, default 2000
        Bootstrap replicates (paired item bootstrap; parametric for aggregate-only input).
    seed : int, default 0
    alpha : float, default 0.05
        1 − confidence level of every percentile CI.
    min_items : int, default 20
        Below this many items no bootstrap is run and the verdict is ``INSUFFICIENT_DATA``.
    keep_curves : bool
        Also return the replicate arrays under ``"_replicates"`` (for plots; not serialised).
    min_jex, min_step_z, max_pre_ratio : float
        Effect-size floor of a "sharp" discrete metric (defaults in :data:`DEFAULTS`): its largest adjacent
        step must exceed an even spread over log compute by ``min_jex`` of the total change (J_ex, unitless
        share), exceed an even rise by at least ``min_step_z`` bootstrap standard deviations of the step, and
        follow a slower phase (mean slope before it at most ``max_pre_ratio`` times its own slope). Below it
        the verdict is ``SMOOTH`` whatever the significance tests say (``decision["effect_size"]`` holds the
        numbers).

    Returns
    -------
    dict with the keys of §9.7 (``task``, ``family``, ``n_models``, ``n_items``, ``x``, ``x_spacing``,
    ``metrics``, ``passuntil``, ``crossing_points``, ``verdict``, ``reasons``, ``caveats``) plus
    ``models``, ``input``, ``guards``, ``exclusions``, ``not_computed``, ``decision``, ``settings``.
    """
    cfg = dict(DEFAULTS, B=B, seed=seed, alpha=alpha, min_items=min_items, min_jex=min_jex, min_step_z=min_step_z,
               max_pre_ratio=max_pre_ratio)
    rng = np.random.default_rng(seed)
    n = ti.n_models
    x = np.asarray(ti.x, dtype=np.float64)
    rep: dict = {"task": ti.task, "family": ti.family, "n_models": n, "n_items": ti.n_items,
                 "models": list(ti.model_ids), "x": x.tolist(),
                 "input": "per-item scores" if ti.items else "aggregate scores (ladder)",
                 "guards": list(ti.guards), "exclusions": dict(ti.exclusions), "not_computed": {},
                 "settings": {"B": B, "alpha": alpha, "seed": seed, "min_items": min_items,
                              "min_jex": min_jex, "min_step_z": min_step_z, "max_pre_ratio": max_pre_ratio,
                              "x_axis": "log10 training compute C (FLOPs)"}}
    caveats = []
    insufficient = []
    if n >= 2:
        dx = np.diff(x)
        rep["x_spacing"] = {"min_dx": float(dx.min()), "max_dx": float(dx.max()), "J_lin": _st.j_lin(x),
                            "span_dec": float(x[-1] - x[0])}
    else:
        rep["x_spacing"] = None
        insufficient.append(f"only {n} model size(s)")
    nb = B
    if ti.items is not None:
        n_it = ti.n_items or 0
        if n_it < min_items:
            insufficient.append(f"n_items = {n_it} < {min_items}: too few items for the item bootstrap")
            nb = 0
        caveats.append(CAVEAT_ITEM_BOOT)
    else:
        caveats.append(CAVEAT_PARAM_BOOT)
        for key, why in {
            "per_item_tau": "needs per-item scores",
            "crossing_points": "needs per-item, per-choice log-likelihoods (the latent margin)",
            "passuntil": "needs per-item log p(gold) (analytic PassUntil = mean of exp(loglik), not exp(mean))",
            "continuous_metrics": "choice_logodds, p_choices, Brier and margin need per-choice log-likelihoods",
            "resolution": "Wilson CIs need the item count, which the ladder table does not carry",
        }.items():
            rep["not_computed"][key] = why
    if ti.unavailable:
        rep["not_computed"]["metrics"] = dict(ti.unavailable)
    if n < 2 or (ti.items is not None and (ti.n_items or 0) == 0) or (ti.items is None and not ti.agg):
        rep.update({"input_problems": insufficient, "metrics": {}, "passuntil": None, "crossing_points": None, "verdict": "INSUFFICIENT_DATA",
                    "reasons": insufficient or ["no usable metric"], "caveats": caveats})
        return rep
    reps, kind = _replicates(ti, nb, rng)
    rep["settings"]["bootstrap"] = kind
    chance = _chance_levels(ti)
    per_item_g = None
    if ti.items:
        per_item_g = {}
        for k, v in ti.items.items():
            per_item_g[k] = np.stack([v[ti.group == g].mean(axis=0) for g in range(n)]) \
                if len(ti.group) != n else v
    if ti.items and len(ti.group) != n:
        # several seeds per size: seed SD of each aggregate, reported separately from the bootstrap (§9.3)
        sv: dict = {"n_seeds": [int((ti.group == g).sum()) for g in range(n)]}
        for k, v in ti.items.items():
            means = v.mean(axis=1)
            sv[k] = [float(means[ti.group == g].std(ddof=1)) if (ti.group == g).sum() > 1 else None
                     for g in range(n)]
        rep["seed_variance"] = sv
        caveats.append("several seeds per size: hierarchical bootstrap (seeds within size, then items); "
                       "seed SD per size under 'seed_variance'")
    metrics: dict = {}
    for m in METRIC_ORDER:
        key = "log_pu" if m == "p_vocab" else m
        if key not in reps:
            continue
        if m == "p_vocab":
            continue  # reported in the "passuntil" block (PU = p_vocab aggregate)
        if m == "margin":
            continue  # used by the crossing-point analysis; acc = 1[margin > 0]
        metrics[m] = _metric_report(m, x, reps[key], chance.get(m), alpha, rep["models"],
                                    per_item_g.get(m) if per_item_g else None, cfg)
    rep["metrics"] = metrics
    rep["decision_metric"] = next((m for m in ("acc", "acc_norm", "exact_match_greedy") if m in metrics), None)
    rep["continuous_metric"] = next((m for m in ("choice_logodds", "logp_vocab", "neg_bpb") if m in metrics), None)
    # detection scales: "hidden progress" = how many decades earlier the continuous metric leaves chance (§9.4-F)
    Dm, Km = rep["decision_metric"], rep["continuous_metric"]
    dxD = metrics.get(Dm, {}).get("detect_x") if Dm else None
    dxK = metrics.get(Km, {}).get("detect_x") if Km else None
    rep["detection"] = {"D": Dm, "K": Km, "detect_x_D": dxD, "detect_x_K": dxK,
                        "hidden_progress_dec": (dxD - dxK) if dxD is not None and dxK is not None else None}
    # per-item τ ordering of the chain (§9.4-B): logp_vocab ≥ p_choices ≥ −Brier ≥ acc expected
    order = [m for m in ("logp_vocab", "p_choices", "neg_brier", "acc") if (metrics.get(m, {}).get("per_item_tau") or {})
             .get("mean") is not None]
    if len(order) >= 2:
        means = [metrics[m]["per_item_tau"]["mean"] for m in order]
        rep["per_item_tau_ordering"] = {"metrics": order, "mean_tau": means,
                                        "holds": bool(all(a >= b for a, b in zip(means, means[1:])))}
    # PassUntil
    if "log_pu" in reps:
        rep["passuntil"] = _passuntil(x, reps["log_pu"], alpha)
    else:
        rep["passuntil"] = None
    # crossing points and resolution
    rep["crossing_points"] = None
    D = rep["decision_metric"]
    if per_item_g is not None:
        lat = "margin" if "margin" in per_item_g else ("choice_logodds" if "choice_logodds" in per_item_g else None)
        if lat is not None and n >= 3:
            rep["crossing_points"] = crossing_points(x, per_item_g[lat], per_item_g.get("acc"), alpha, lat,
                                                     cfg["crossing_tol"])
        if "acc" in reps:
            rep["resolution"] = _resolution(reps["acc"][0], ti.n_items, ti.n_choices, rep["models"], x)
    rep["input_problems"] = insufficient
    verdict, reasons, comp = decide(rep, cfg)
    rep["verdict"], rep["reasons"], rep["decision"] = verdict, reasons, comp
    if D and "p_sharp" in metrics.get(D, {}):
        rep["decision"]["p_sharp"] = metrics[D]["p_sharp"]
    caveats.append("shape statistics (B, L, J) of discrete metrics on chance-normalised scores; of logp_vocab "
                   "in log-NLL space; fits unweighted; sigmoid/hinge/break-point CIs have grid resolution")
    if n < 7:
        caveats.append(f"n = {n} < 7: kink test and leave-top-2-out not computed")
    if ti.items is None:
        caveats.append("accuracy-only input: the decision's steps 2 (continuous metric smooth?) and 3 (crossing "
                       "points) cannot be computed except where a perplexity gives logp_vocab")
    rep["caveats"] = caveats
    if keep_curves:
        rep["_replicates"] = reps
        rep["_per_item"] = per_item_g
    return rep
