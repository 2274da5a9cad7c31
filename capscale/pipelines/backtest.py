"""Run leave-largest-out backtests over many tasks and write their tables and figures.

:func:`run_backtests` is what ``capscale backtest LADDER --out DIR`` does: for each task it calls
:func:`capscale.analysis.predict.backtest` (fit on the ladder without its largest runs, predict each held-out
run's final value with a 90% interval) and, with ``out``, writes ``<name>.csv``, ``<name>.json`` and a
figure ``<name>_<task>.png`` per task (the fit's runs, the held-out actual values, and each method's
prediction with its interval, against compute 6·N·D in FLOPs). Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from capscale._io import atomic_write_text
from capscale.analysis import predict

__all__ = ["default_metric", "run_backtests", "summarize_backtests", "plot_backtest", "BACKTEST_KEYS"]

#: The keys every backtest row has (the JSON contract of ``capscale backtest --json``).
BACKTEST_KEYS = ["task", "method", "heldout_model", "predicted", "actual", "abs_err", "lower", "upper"]


def default_metric(ladder: pd.DataFrame, task: str, metric: str | None = None) -> str:
    """``metric`` if given, else the task's ``acc``, else its ``acc_norm`` (error if neither exists)."""
    if metric:
        return metric
    have = set(ladder.loc[ladder["task"] == task, "metric"])
    for m in ("acc", "acc_norm"):
        if m in have:
            return m
    raise ValueError(f"task {task!r} has no acc or acc_norm rows; give --metric (metrics: {sorted(have)})")


def clean_json(v: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, numpy scalars Python numbers."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: clean_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean_json(x) for x in v]
    if hasattr(v, "item"):
        return clean_json(v.item())
    return v


def run_backtests(ladder: pd.DataFrame, tasks: Sequence[str], method: str = "auto", *,
                  holdout: str | int = "largest", store: pd.DataFrame | None = None, metric: str | None = None,
                  out: str | os.PathLike | None = None, name: str = "backtest", progress: bool = False,
                  **kw: Any) -> list[dict[str, Any]]:
    """Backtest ``method`` on every task; optionally write CSV, JSON and one figure per task.

    Parameters
    ----------
    ladder : pandas.DataFrame
        Ladder table (see :mod:`capscale.data.ladder_table`).
    tasks : sequence of str
    method : str
        A name of :data:`capscale.analysis.predict.METHODS`, ``"auto"`` or ``"all"``.
    holdout : "largest" or int
        Hold out the runs with the K largest sizes.
    store : pandas.DataFrame, optional
        The per-choice store behind the ladder (needed by ``mass``).
    metric : str, optional
        Accuracy metric (default per task: :func:`default_metric`).
    out : path-like, optional
        Folder for ``<name>.csv``, ``<name>.json`` and ``<name>_<task>.png``.
    **kw
        Passed to :func:`capscale.analysis.predict.backtest` (``bootstrap``, ``seed``, ``x_task``, ...).

    Returns
    -------
    list of dict
        One row per (task, method, held-out run) with at least :data:`BACKTEST_KEYS`, plus ``metric``.
    """
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    for task in tqdm(list(tasks), desc="backtest", disable=not progress):
        m = default_metric(ladder, task, metric)
        res = predict.backtest(ladder, task, method, holdout=holdout, store=store, metric=m, **kw)
        for r in res:
            r["metric"] = m
        rows += res
    if out is not None:
        outdir = Path(out)
        outdir.mkdir(parents=True, exist_ok=True)
        df = pd.DataFrame(rows)
        full = df.drop(columns=[c for c in ("warnings", "cv_scores") if c in df.columns])
        if "cv_scores" in df.columns:
            full["cv_scores"] = [json.dumps(clean_json(s)) if s else "" for s in df["cv_scores"]]
        full["n_warnings"] = [len(w) for w in df.get("warnings", [[]] * len(df))]
        fd, tmp = tempfile.mkstemp(prefix="_tmp.", suffix=".csv", dir=outdir)
        os.close(fd)
        full.to_csv(tmp, index=False, float_format="%.6g")
        os.replace(tmp, outdir / f"{name}.csv")
        atomic_write_text(outdir / f"{name}.json", json.dumps(clean_json(rows), indent=1) + "\n")
        for task in tasks:
            sub = [r for r in rows if r["task"] == task]
            if sub:
                plot_backtest(sub, ladder, task, sub[0]["metric"], outdir / f"{name}_{task}.png")
    return rows


def summarize_backtests(rows: list[dict[str, Any]]) -> str:
    """A printable table of the rows, the overall MAE (points) and 90% coverage, and a per-method summary."""
    df = pd.DataFrame(rows)
    if not len(df):
        return "no backtest rows"
    show = df.assign(method=[r.get("selected") and f"auto->{r['selected']}" or r["method"] for r in rows])
    lines = [show[BACKTEST_KEYS + ["metric"]].to_string(index=False, float_format=lambda v: f"{v:.4f}")]
    cov = df["covered"].dropna() if "covered" in df else pd.Series(dtype=float)
    lines.append(f"\nMAE = {100 * df['abs_err'].mean():.2f} points over {len(df)} predictions; "
                 f"90% interval coverage = {cov.mean():.2f} ({int(cov.sum())}/{len(cov)})")
    if df["method"].nunique() > 1:
        g = df.assign(covered=df["covered"].astype(float)).groupby("method", sort=False)
        summ = pd.DataFrame({"MAE_points": 100 * g["abs_err"].mean(), "max_err_points": 100 * g["abs_err"].max(),
                             "coverage_90": g["covered"].mean(), "n": g["abs_err"].count()})
        lines.append("\nper method:\n" + summ.to_string(float_format=lambda v: f"{v:.2f}"))
    return "\n".join(lines)


def plot_backtest(rows: list[dict[str, Any]], ladder: pd.DataFrame, task: str, metric: str,
                  path: Path) -> None:
    """Figure of one task's backtest: fit runs, held-out actual values, predictions with 90% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from capscale.data.ladder_table import final_values

    rows = [r for r in rows if r.get("params") is not None and r.get("heldout_model") is not None]
    fin = final_values(ladder, task, metric)
    held = {r["heldout_model"] for r in rows}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    tr = fin[~fin["run"].isin(held)]
    ax.scatter(6 * tr["params"] * tr["tokens"], tr["value"], s=14, c="k", label="fit (ladder runs)")
    ho = fin[fin["run"].isin(held)]
    if len(ho):
        ax.scatter(6 * ho["params"] * ho["tokens"], ho["value"], s=40, marker="*", c="r", label="held out (actual)")
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
    ax.set_xlabel("compute 6ND (FLOPs)")
    ax.set_ylabel(metric)
    ax.set_title(task)
    ax.legend(fontsize=6)
    fig.tight_layout()
    from capscale.plotting.chain import save_figure

    save_figure(fig, path, dpi=110)
