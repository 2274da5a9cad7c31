"""Figures of the mass stage (PNG via matplotlib's Agg backend), drawn from :mod:`capscale.analysis.mass` results.

* :func:`plot_mass_scatter` — p_vocab(correct) against the summed incorrect vocabulary mass, log-log,
  coloured by compute;
* :func:`plot_slope_scatter` — per-item slope of the correct against the incorrect log-likelihood law;
* :func:`plot_predicted_vs_observed` — accuracy predicted from the per-item laws against the observed one.

Nothing is fitted here: the figures read chain rows, a :class:`~capscale.analysis.mass.TaskFit` and
prediction tables. Every figure is written with :func:`capscale.plotting.chain.save_figure`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from capscale.analysis import mass
from capscale.plotting import style
from capscale.plotting.chain import save_figure

__all__ = ["plot_mass_scatter", "plot_slope_scatter", "plot_predicted_vs_observed"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style.apply()
    return plt


def plot_mass_scatter(items: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> str:
    """p_vocab(correct) vs summed incorrect vocabulary mass, log-log, coloured by compute.

    Parameters
    ----------
    items : pandas.DataFrame
        ``capscale.analysis.chain.compute`` rows (``log_p_vocab_correct``, ``log_p_vocab_incorrect`` in
        nats, ``compute`` in FLOPs).
    path : path-like
        Output PNG.
    title : str
        Figure title.

    Returns
    -------
    str
        ``path``.

    Notes
    -----
    Axes are log10 probabilities (log10 p = ℓ / ln 10), so masses far below float64's range (1e-308)
    still plot; items with −inf log-likelihoods are left out of the picture and counted in the title.
    """
    plt = _plt()
    from matplotlib.colors import LogNorm

    xc = items["log_p_vocab_correct"].to_numpy(float) / math.log(10)
    yi = items["log_p_vocab_incorrect"].to_numpy(float) / math.log(10)
    ok = np.isfinite(xc) & np.isfinite(yi)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sc = ax.scatter(xc[ok], yi[ok], c=items["compute"].to_numpy(float)[ok], s=6, alpha=0.6, cmap="viridis",
                    norm=LogNorm())
    lo = float(min(xc[ok].min(), yi[ok].min())) if ok.any() else -10.0
    ax.plot([lo, 0], [lo, 0], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("log10 p_vocab(correct) (log10 probability)")
    ax.set_ylabel("log10 Σ_incorrect p_vocab (log10 probability)")
    fig.colorbar(sc, ax=ax, label="compute (FLOPs)")
    excl = int((~ok).sum())
    ax.set_title("\n".join(t for t in (title, f"{excl} point(s) with -inf not shown" if excl else "") if t),
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_slope_scatter(tf: mass.TaskFit, path: str | os.PathLike, *, cov: dict[str, Any] | None = None) -> str:
    """Per-item slope of ℓ_c vs slope of LSE_{i≠c} ℓ_i (nats per decade); the diagonal is equal growth.

    Parameters
    ----------
    tf : capscale.analysis.mass.TaskFit
        The task's fits (least-squares and pooled slopes of ``correct`` and ``lse_incorrect``).
    path : path-like
        Output PNG.
    cov : dict, optional
        ``capscale.analysis.mass.covariation(tf)`` if already computed (its slope correlation and share of
        items whose incorrect mass grows faster go into the title).

    Returns
    -------
    str
        ``path``.
    """
    plt = _plt()
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
    c = cov if cov is not None else mass.covariation(tf)
    ax.set_xlabel("slope of log p_vocab(correct) [nats/decade]")
    ax.set_ylabel("slope of log Σ incorrect [nats/decade]")
    ax.set_title(f"{tf.task}: corr {_fmt(c['slope_corr_pearson'])}, "
                 f"incorrect faster {_fmt(c['share_incorrect_faster'])}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_predicted_vs_observed(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> str:
    """Predicted accuracy (with interval) vs observed accuracy against log10 compute.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``log10_compute`` (log10 FLOPs), ``observed``, ``predicted``, ``lower``, ``upper``
        (accuracy, 0-1) and ``kind`` (``in-sample`` or ``held-out``).
    path : path-like
        Output PNG.
    title : str
        Figure title.

    Returns
    -------
    str
        ``path``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, mk, col in (("in-sample", "o", "C0"), ("held-out", "s", "C3")):
        t = table[table["kind"] == kind]
        if t.empty:
            continue
        ax.errorbar(t["log10_compute"], t["predicted"], yerr=[t["predicted"] - t["lower"], t["upper"] - t["predicted"]],
                    fmt=mk, color=col, capsize=3, label=f"predicted ({kind}, 90% interval)", mfc="none")
        ax.plot(t["log10_compute"], t["observed"], "x", color="k", label=None)
    ax.plot([], [], "x", color="k", label="observed")
    style.compute_axis(ax)
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"
