"""Accuracy, p_choices and Brier predicted from the per-item mass laws (Monte Carlo and analytic).

See :mod:`capscale.analysis.mass` for the predictive distribution: at a target compute x* (log10 FLOPs)
the choices of every item are jointly normal (posterior means of the laws, residual plus parameter
variance, exchangeable residual correlations, and a model-level shift of the gold shared by all items).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from capscale.analysis.mass._model import TaskFit

__all__ = ["SUPPORTED_METRICS", "METRIC_ALIASES", "MetricPrediction", "predict_items", "predict_task"]

#: Metrics :func:`predict_task` predicts, with the chain column each is compared with.
SUPPORTED_METRICS = {"acc": "acc", "acc_pair": "acc", "p_choices": "p_choices_correct", "brier": "brier"}
#: Accepted metric names (as a ``metric=`` argument) and the :data:`SUPPORTED_METRICS` key each means.
METRIC_ALIASES = {"acc": "acc", "accuracy": "acc", "acc_pair": "acc_pair", "p_choices": "p_choices",
                  "p_choices_correct": "p_choices", "prob_choices_correct": "p_choices",
                  "brier": "brier", "brier_score": "brier", "brier_mean": "brier"}


@dataclass
class MetricPrediction:
    """A predicted task-level metric with its interval (same fields as ``capscale.analysis.predict.Prediction``)."""

    value: float
    lower: float
    upper: float
    warnings: list[str] = field(default_factory=list)


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

