"""Figures of fitted laws and of backtests (PNG, matplotlib's Agg backend), against compute C = 6·N·D (FLOPs).

The figures draw result objects of :mod:`capscale.analysis.predict`; nothing is fitted here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from capscale.analysis.predict import LawFit
from capscale.data.ladder_table import final_values
from capscale.plotting import style
from capscale.plotting.chain import save_figure

__all__ = ["plot_law_fit", "plot_backtest", "plot_reliability"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style.apply()
    return plt


def plot_law_fit(fit: LawFit, path: str | os.PathLike) -> str:
    """Figure of one fitted law with the data it was fitted to.

    Forms fitted on every checkpoint (``gadre_exp``, ``ladder_sigmoid``) are drawn against the task loss, with
    every checkpoint (error 1 − accuracy for ``gadre_exp``); the others against compute 6·N·D (FLOPs, log
    scale), with each run's final value and the law extrapolated two decades past the largest run
    (``chinchilla_nd``: its fitted value at each run).

    Parameters
    ----------
    fit : LawFit
        The result of :func:`capscale.analysis.predict.fit_law`.
    path : path-like
        The PNG written (its folder is created if missing).

    Returns
    -------
    str
        ``path``.
    """
    plt = _plt()
    law, form = fit.law, fit.form
    fig, ax = plt.subplots(figsize=(5, 3.6))
    if form in ("gadre_exp", "ladder_sigmoid"):
        x = fit.checkpoints["loss"].to_numpy(float)
        y = fit.checkpoints["value"].to_numpy(float)
        ax.scatter(x, 1 - y if form == "gadre_exp" else y, s=3, alpha=0.4, label="checkpoints")
        grid = np.linspace(max(x.min() * 0.8, 1e-6), x.max() * 1.1, 200)
        ax.plot(grid, law.predict(grid), "k-", label=law.name)
        ax.set_xlabel("loss")
    else:
        c = fit.points["compute"].to_numpy(float)
        ax.scatter(c, fit.points["y"].to_numpy(float), label="ladder runs (final)")
        grid = np.logspace(np.log10(c.min()), np.log10(c.max()) + 2, 200)
        if form == "chinchilla_nd":
            ax.scatter(c, law.predict(np.c_[fit.points["params"].to_numpy(float), fit.points["tokens"].to_numpy(float)]),
                       marker="x", label="fit")
        elif form == "obs_sigmoid":
            ax.plot(grid, law.predict(np.log10(grid)), "k-", label=law.name)
        else:
            ax.plot(grid, law.predict(grid), "k-", label=law.name)
        ax.set_xscale("log")
        ax.set_xlabel(style.COMPUTE_LABEL)
    ax.set_title(f"{fit.task}: {form}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_backtest(rows: list[dict[str, Any]], ladder: pd.DataFrame, task: str, metric: str,
                  path: str | os.PathLike) -> str:
    """Figure of one task's backtest (or prediction): ladder runs, held-out actual values, predictions.

    Parameters
    ----------
    rows : list of dict
        Backtest rows of :func:`capscale.analysis.predict.backtest` (``params``, ``tokens``, ``predicted``,
        ``lower``, ``upper``, ``method``, ``selected``, ``heldout_model``); rows without a held-out model
        (failed fits) are left out. Each method's predictions are drawn with their 90 % intervals, shifted
        by 6 % in compute per method so they do not overlap.
    ladder : pandas.DataFrame
        The ladder table; its runs' final values of ``task``/``metric`` are drawn, the held-out ones as stars.
    task, metric : str
        The task and metric (the y axis).
    path : path-like
        The PNG written.

    Returns
    -------
    str
        ``path``.
    """
    plt = _plt()
    rows = [r for r in rows if r.get("params") is not None and r.get("heldout_model") is not None]
    fin = final_values(ladder, task, metric)
    held = {r["heldout_model"] for r in rows}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    tr = fin[~fin["run"].isin(held)]
    ax.scatter(6 * tr["params"] * tr["tokens"], tr["value"], s=14, c="k", label="fit (ladder runs)")
    ho = fin[fin["run"].isin(held)]
    if len(ho):
        ax.scatter(6 * ho["params"] * ho["tokens"], ho["value"], s=40, marker="*", c="C3", label="held out (actual)")
    methods = sorted({r.get("selected") or r["method"] for r in rows})
    for i, m in enumerate(methods):
        sub = [r for r in rows if (r.get("selected") or r["method"]) == m]
        c = np.array([6 * r["params"] * r["tokens"] for r in sub]) * (1 + 0.06 * i)
        v = np.array([r["predicted"] for r in sub])
        lo = np.array([r["lower"] for r in sub])
        hi = np.array([r["upper"] for r in sub])
        ax.errorbar(c, v, yerr=[np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)], fmt="o", ms=4, capsize=2,
                    label=f"{m} (90%)")
    ax.set_xscale("log")
    ax.set_xlabel(style.COMPUTE_LABEL)
    ax.set_ylabel(metric)
    ax.set_title(task)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_reliability(table: pd.DataFrame, path: str | os.PathLike, *, method: str = "auto") -> str:
    """Reliability diagram: empirical coverage of nominal 50/80/90/95 % intervals, one line per data set.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``dataset``, ``method``, ``n`` and ``coverage_<pct>`` for each nominal level (shares in [0, 1]), as
        :func:`capscale.pipelines.suite.summarize` writes them; ``dataset == "pooled"`` is drawn thick.
    path : path-like
        The PNG to write.
    method : str
        The method whose intervals are drawn.
    """
    plt = _plt()
    sub = table[(table["method"] == method) & (table["n"] > 0)]
    levels = sorted(int(c.split("_")[1]) for c in sub.columns if c.startswith("coverage_"))
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 100], [0, 100], color="0.6", lw=1, ls="--", label="perfect calibration")
    for _, r in sub.iterrows():
        ys = [100 * r[f"coverage_{lv}"] for lv in levels]
        pooled = r["dataset"] == "pooled"
        ax.plot(levels, ys, marker="o", lw=2.5 if pooled else 1.2, color="black" if pooled else None,
                label=f"{r['dataset']} (n={int(r['n'])})")
    ax.set_xlim(40, 100)
    ax.set_ylim(0, 102)
    ax.set_xlabel("nominal coverage of the interval (%)")
    ax.set_ylabel("empirical coverage of held-out actuals (%)")
    ax.set_title(f"interval reliability: {method}")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path, bbox_inches="tight")
