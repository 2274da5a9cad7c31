"""``capscale analyze``: the chain and degradation analysis of a score store, written to a folder.

Outputs (``OUT`` is the folder)

=========================  =====================================================================
``per_item.parquet``       chain metrics, one row per (model, task, item) — :func:`capscale.analysis.chain.compute`
``correlations.parquet``   one row per (family, task, metric, method, doc_id) with column ``r``
``summary.csv``            per (family, task, metric, method): n_items, nan_frac, mean, median,
                           frac_ge_0.75, ... — :func:`capscale.analysis.correlate.summarize`
``ccdf.csv``               the complementary CDF of r on a grid of 201 points in [−1, 1]
``ordering.csv``           does log p_vocab ≥ p_choices ≥ Brier ≥ acc hold, per task/method/statistic
``excluded.csv``           models left out of the correlations (non-finite compute), if any
``figures/``               ``ccdf_<family>_<task>.png``, ``mass_<family>_<task>.png``,
                           ``curves_<family>_<task>.png``
``analysis.json``          what ran: input, counts, the files written
=========================  =====================================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from capscale._io import atomic_write
from capscale.analysis import chain, correlate
from capscale.data import store as _store
from capscale.plotting import chain as plots

__all__ = ["run_analysis", "safe_name"]


def safe_name(s: str) -> str:
    """A file-name-safe version of a family or task name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(s))


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def run_analysis(scores: pd.DataFrame, out: str | os.PathLike, *, figures: bool = True,
                 methods: tuple[str, ...] = correlate.METHODS, progress: bool = True,
                 source: str | None = None) -> dict[str, object]:
    """Run the chain metrics and per-item correlation analysis and write the outputs.

    Parameters
    ----------
    scores : pandas.DataFrame
        A valid score store (at least 3 models per family for meaningful correlations).
    out : path-like
        Output folder (created if missing).
    figures : bool, default True
        Also write the PNG figures.
    methods : tuple of str
        Correlation methods.
    progress : bool
        Show progress bars.
    source : str, optional
        Where the store came from (recorded in ``analysis.json``).

    Returns
    -------
    dict
        Summary of the run: counts, the ordering-check pass rates and the paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    scores = _store.normalize(scores)
    items = chain.compute(scores)
    _atomic_parquet(items, out / "per_item.parquet")

    excluded = items.groupby("model_id").agg(family=("family", "first"), compute=("compute", "first")).reset_index()
    excluded = excluded[~np.isfinite(np.log10(excluded["compute"].astype(float)))]
    if len(excluded):
        _atomic_csv(excluded.assign(reason="non-finite log10 compute"), out / "excluded.csv")

    groups = list(items.groupby(["family", "task"], sort=True))
    corr_parts = []
    for _key, g in tqdm(groups, desc="correlations", disable=not progress, unit="task"):
        n_models = g["model_id"].nunique()
        if n_models < 3:
            continue
        corr_parts.append(correlate.per_item_correlations(g, methods=methods))
    corr = pd.concat(corr_parts, ignore_index=True) if corr_parts else pd.DataFrame(
        columns=["family", "task", "metric", "method", "doc_id", "r", "p_value", "n_models", "negated"])
    _atomic_parquet(corr, out / "correlations.parquet")
    summary = correlate.summarize(corr) if len(corr) else pd.DataFrame()
    _atomic_csv(summary, out / "summary.csv")
    _atomic_csv(correlate.ccdf(corr) if len(corr) else pd.DataFrame(), out / "ccdf.csv")
    ordering = correlate.ordering_check(summary) if len(summary) else pd.DataFrame()
    _atomic_csv(ordering, out / "ordering.csv")

    fig_paths: list[str] = []
    if figures:
        for (fam, task), g in tqdm(groups, desc="figures", disable=not progress, unit="task"):
            stem = f"{safe_name(fam)}_{safe_name(task)}"
            title = f"{fam} / {task} ({g['model_id'].nunique()} models, {g['doc_id'].nunique()} items)"
            c = corr[(corr["family"] == fam) & (corr["task"] == task)] if len(corr) else corr
            if len(c):
                fig_paths.append(plots.ccdf_figure(c, out / "figures" / f"ccdf_{stem}.png", title=title))
            fig_paths.append(plots.mass_figure(g, out / "figures" / f"mass_{stem}.png", title=title))
            fig_paths.append(plots.metric_curves_figure(g, out / "figures" / f"curves_{stem}.png", title=title))

    too_few = [(f, t) for (f, t), g in groups if g["model_id"].nunique() < 3]
    info: dict[str, object] = {
        "source": source,
        "rows": int(len(scores)),
        "models": int(scores["model_id"].nunique()),
        "tasks": sorted(scores["task"].unique().tolist()),
        "items": int(len(items)),
        "groups_skipped_fewer_than_3_models": [list(x) for x in too_few],
        "models_excluded_non_finite_compute": excluded["model_id"].tolist(),
        "ordering_holds_fraction": (
            ordering.dropna(subset=["holds"]).groupby("method")["holds"].mean().round(4).to_dict()
            if len(ordering) else {}),
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) ,
        "figures": [str(Path(p).relative_to(out)) for p in fig_paths],
    }
    info["files"] = sorted({*info["files"], "analysis.json"})
    with open(out / "_tmp.analysis.json", "w") as f:
        json.dump(info, f, indent=2, default=str)
    os.replace(out / "_tmp.analysis.json", out / "analysis.json")
    return info
