"""Tables of the per-item mass fits and the co-variation of the correct and incorrect masses with compute."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from capscale.analysis.mass._model import TaskFit

__all__ = ["fits_table", "covariation", "covariation_table"]



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

