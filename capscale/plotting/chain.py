"""Figures of the chain analysis (PNG via matplotlib's Agg backend).

* :func:`ccdf_figure` — complementary CDF of per-item correlations with compute, one line per
  metric along the chain, one panel per correlation method (Schaeffer et al. 2024, Fig. 3).
* :func:`mass_figure` — p_vocab(correct) against the summed vocabulary mass of the incorrect
  choices, both in log10, coloured by log10 compute (Schaeffer et al. 2024, Fig. 6).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from capscale.plotting import style

LN10 = np.log(10.0)

METRIC_LABELS = {
    "log_p_vocab_correct": "log p_vocab(correct)",
    "p_vocab_correct": "p_vocab(correct)",
    "p_choices_correct": "p_choices(correct)",
    "brier": "−Brier",
    "acc": "accuracy",
    "acc_norm": "acc_norm",
    "target_is_greedy": "target is greedy",
    "log_p_vocab_incorrect": "log p_vocab(incorrect)",
}
#: The unit of each metric, for axis labels.
METRIC_UNITS = {
    "log_p_vocab_correct": "nats",
    "p_vocab_correct": "probability",
    "p_choices_correct": "probability",
    "brier": "Brier score (lower is better)",
    "acc": "fraction correct",
    "acc_norm": "fraction correct",
    "target_is_greedy": "fraction of items",
    "log_p_vocab_incorrect": "nats",
}
#: Okabe--Ito colours (:data:`capscale.plotting.style.PALETTE`), one per metric of the chain.
METRIC_COLORS = {
    "log_p_vocab_correct": "#0072B2",
    "p_vocab_correct": "#56B4E9",
    "p_choices_correct": "#009E73",
    "brier": "#E69F00",
    "acc": "#D55E00",
    "acc_norm": "#CC79A7",
    "target_is_greedy": "#000000",
    "log_p_vocab_incorrect": "#F0E442",
}


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110, close: bool = True, **kw) -> str:
    """Write a matplotlib figure atomically (temporary file in the same folder, then rename).

    The folder is created if needed; the figure is closed afterwards unless ``close=False``.
    Extra keyword arguments go to ``Figure.savefig`` (e.g. ``bbox_inches="tight"``).
    """
    from capscale._io import atomic_write

    try:  # the temporary file keeps the destination's suffix, so savefig picks the same format
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, **kw))
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return str(path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style.apply()
    return plt


def ccdf_figure(corr: pd.DataFrame, path: str | os.PathLike, *, title: str = "",
                metrics: Sequence[str] | None = None) -> str:
    """Plot the complementary CDF of per-item correlations for one (family, task).

    Parameters
    ----------
    corr : pandas.DataFrame
        Rows of :func:`capscale.analysis.correlate.per_item_correlations` for one family and task.
    path : path-like
        Output PNG.
    """
    plt = _plt()
    methods = [m for m in ("pearson", "spearman", "kendall") if m in set(corr["method"])]
    metrics = metrics or [m for m in METRIC_LABELS if m in set(corr["metric"]) and m != "log_p_vocab_incorrect"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), sharey=True, squeeze=False)
    grid = np.linspace(-1, 1, 401)
    for ax, method in zip(axes[0], methods, strict=True):
        sub = corr[corr["method"] == method]
        for metric in metrics:
            r = np.sort(sub.loc[sub["metric"] == metric, "r"].dropna().to_numpy())
            n_all = int((sub["metric"] == metric).sum())
            if len(r) == 0:
                continue
            s = 1 - np.searchsorted(r, grid, side="right") / len(r)
            ax.plot(grid, s, color=METRIC_COLORS.get(metric), lw=1.8,
                    label=f"{METRIC_LABELS.get(metric, metric)} (NaN {n_all - len(r)}/{n_all})")
        ax.axvline(0.75, color="0.6", ls=":", lw=1)
        ax.set_xlim(-1, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"{method} correlation with log10 compute (unitless)")
        ax.set_title(method)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of items with correlation > x")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def mass_figure(items: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> str:
    """Scatter log10 p_vocab(correct) against log10 Σ_incorrect p_vocab, coloured by log10 compute.

    Parameters
    ----------
    items : pandas.DataFrame
        Rows of :func:`capscale.analysis.chain.compute` for one family and task (nats are converted to log10).
    """
    plt = _plt()
    x = items["log_p_vocab_correct"].to_numpy() / LN10
    y = items["log_p_vocab_incorrect"].to_numpy() / LN10
    c = np.log10(items["compute"].to_numpy(dtype=float))
    ok = np.isfinite(x) & np.isfinite(y)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    sc = ax.scatter(x[ok], y[ok], c=c[ok], cmap="viridis", s=8, alpha=0.6, linewidths=0)
    lo = float(np.nanmin(np.r_[x[ok], y[ok]])) if ok.any() else -1.0
    ax.plot([lo, 0], [lo, 0], color="0.5", ls="--", lw=1, label="equal mass")
    ax.set_xlabel("log10 p_vocab(correct) (log10 probability)")
    ax.set_ylabel("log10 Σ p_vocab(incorrect) (log10 probability)")
    fig.colorbar(sc, ax=ax, label="log10 compute C = 6ND (FLOPs)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    if (~ok).any():
        ax.text(0.01, 0.99, f"{int((~ok).sum())} point(s) with -inf mass not shown", transform=ax.transAxes,
                va="top", fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def metric_curves_figure(items: pd.DataFrame, path: str | os.PathLike, *, title: str = "",
                         metrics: Sequence[str] = ("log_p_vocab_correct", "p_choices_correct", "brier", "acc")) -> str:
    """Task means of chain metrics against log10 compute (one panel per metric, ±2 SE over items).

    Checkpoints of one model size (``params``) are joined by a line, so a family of sizes x steps
    shows one training curve per size.
    """
    plt = _plt()
    metrics = [m for m in metrics if m in items.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.0), squeeze=False)
    per_model = items.groupby("model_id").agg(compute=("compute", "first"), params=("params", "first"),
                                              **{f"{m}__mean": (m, "mean") for m in metrics},
                                              **{f"{m}__se": (m, "sem") for m in metrics})
    per_model["x"] = np.log10(per_model["compute"].astype(float))
    sizes = sorted(per_model["params"].unique())
    cmap = plt.get_cmap("viridis")
    for ax, m in zip(axes[0], metrics, strict=True):
        for i, n in enumerate(sizes):
            g = per_model[per_model["params"] == n].sort_values("x")
            color = cmap(i / max(1, len(sizes) - 1)) if len(sizes) > 1 else METRIC_COLORS.get(m)
            label = f"N = {n:,.3g}" if len(sizes) > 1 else None
            ax.errorbar(g["x"], g[f"{m}__mean"], yerr=2 * g[f"{m}__se"].fillna(0), marker="o", ms=3, lw=1.2,
                        color=color, label=label)
        style.compute_axis(ax)
        ax.set_title(METRIC_LABELS.get(m, m).replace("−", ""), fontsize=9)
        ax.set_ylabel(f"task mean ({METRIC_UNITS.get(m, 'value')})", fontsize=8)
        ax.grid(alpha=0.3)
    if len(sizes) > 1:
        axes[0][0].legend(fontsize=6, title="size (one line per model size)", title_fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
