"""Interactive per-item figures for the HTML report: Plotly figure specs (plain JSON) plus an item inspector.

Why Plotly. The report must stay one file that works offline. The ``plotly`` Python package ships the
complete ``plotly.min.js`` (about 4.8 MB), so inlining it needs no network, no npm and no vendored file in this
repository; hover, zoom, pan, box select and legend toggles come with it and are well tested. Vega-Lite would be
smaller but its JavaScript is not shipped by any Python package we can install offline. The figures are built
here as plain dicts (Plotly's JSON schema), so building them needs no dependency; only the inlined
JavaScript comes from the optional ``plotly`` package (``pip install 'capscale[report]'``). Without it the
report keeps its static PNG figures and the sortable item table, and says that the interactive view is off.

Two per-item views, each with an inspector payload (the question text and every choice's log-likelihood at the
checkpoint of the point hovered):

* :func:`mass_scatter` -- log10 p_vocab(correct) against log10 of the summed incorrect mass, one point per
  (item, checkpoint), coloured by log10 compute;
* :func:`correlation_scatter` -- per item, its correlation with compute of log p_vocab(correct) against that
  of accuracy (or another metric), one point per item.

:func:`item_table` is the table behind the sortable per-item view. Nothing is fitted here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from capscale.plotting import style

__all__ = ["plotly_js", "item_table", "mass_scatter", "correlation_scatter", "ItemText", "CHAIN_METRICS"]

#: The metrics of the chain, in order (columns ``r_<metric>`` of :func:`item_table`).
CHAIN_METRICS: tuple[str, ...] = ("log_p_vocab_correct", "p_choices_correct", "brier", "acc")

#: ``{(task, doc_id as str): {"question": str, "choices": [str, ...], "gold": int or list}}``.
ItemText = Mapping[tuple[str, str], Mapping[str, Any]]

_LN10 = math.log(10.0)


def plotly_js() -> str | None:
    """The complete ``plotly.min.js`` shipped by the optional ``plotly`` package, or None when it is not installed."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        return None
    return get_plotlyjs()


def item_table(corr: pd.DataFrame, items: pd.DataFrame | None = None, *, method: str = "spearman",
               metrics: Sequence[str] = CHAIN_METRICS) -> pd.DataFrame:
    """One row per (family, task, doc_id): its correlation with compute for each chain metric.

    Parameters
    ----------
    corr : pandas.DataFrame
        ``correlations.parquet`` of ``capscale analyze`` (``family, task, metric, method, doc_id, r``).
    items : pandas.DataFrame, optional
        ``per_item.parquet`` (chain metrics per model and item); adds ``acc_largest``, the item's accuracy at the
        checkpoint with the most compute.
    method : str
        Correlation method to keep.
    metrics : sequence of str
        Metrics, in chain order; those absent from ``corr`` are left out.

    Returns
    -------
    pandas.DataFrame
        ``family, task, doc_id, r_<metric>...`` (and ``acc_largest``), ``doc_id`` as str, sorted by task and
        ascending ``r`` of the first metric (the items that scale least first).
    """
    c = corr[corr["method"] == method]
    metrics = [m for m in metrics if m in set(c["metric"])]
    c = c[c["metric"].isin(metrics)].assign(doc_id=lambda d: d["doc_id"].astype(str))
    wide = c.pivot_table(index=["family", "task", "doc_id"], columns="metric", values="r", aggfunc="first",
                         dropna=False)
    wide = wide.reindex(columns=metrics).rename(columns=lambda m: f"r_{m}").reset_index()
    wide.columns.name = None
    if items is not None and len(items) and {"compute", "acc"} <= set(items.columns):
        it = items.assign(doc_id=items["doc_id"].astype(str))
        top = it.loc[it.groupby(["task"])["compute"].transform("max") == it["compute"]]
        acc = top.groupby(["task", "doc_id"])["acc"].mean().rename("acc_largest").reset_index()
        wide = wide.merge(acc, on=["task", "doc_id"], how="left")
    first = f"r_{metrics[0]}" if metrics else None
    order = ["task", first] if first else ["task"]
    return wide.sort_values(order, na_position="first", kind="stable").reset_index(drop=True)


def _sample_items(keys: pd.Series, max_items: int, seed: int) -> set:
    uniq = pd.unique(keys)
    if len(uniq) <= max_items:
        return set(uniq)
    rng = np.random.default_rng(seed)
    return set(uniq[np.sort(rng.choice(len(uniq), size=max_items, replace=False))])


def _inspector(keys: Sequence[str], text: ItemText | None, logliks: pd.DataFrame | None,
               models: Sequence[str] | None) -> dict[str, Any]:
    """The inspector payload: item text per key and choice log-likelihoods per (key, model)."""
    items: dict[str, Any] = {}
    for k in keys:
        task, doc = k.split("\x1f", 1)
        t = (text or {}).get((task, doc))
        items[k] = {"task": task, "doc_id": doc,
                    "question": None if t is None else str(t.get("question", "")),
                    "choices": None if t is None else [str(x) for x in t.get("choices", [])],
                    "gold": None if t is None else t.get("gold")}
    ll: dict[str, list] = {}
    if logliks is not None and len(logliks):
        lk = logliks.assign(key=logliks["task"].astype(str) + "\x1f" + logliks["doc_id"].astype(str))
        lk = lk[lk["key"].isin(set(keys))]
        if models is not None:
            lk = lk[lk["model_id"].isin(set(models))]
        lk = lk.sort_values(["key", "model_id", "choice_idx"])
        group = (lk["key"] + "\x1e" + lk["model_id"].astype(str)).to_numpy()
        idx = lk["choice_idx"].to_numpy(int).tolist()
        val = [None if not np.isfinite(v) else round(v, 3) for v in lk["loglik"].to_numpy(float).tolist()]
        cor = lk["is_correct"].to_numpy(bool).tolist()
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]).tolist() + [len(group)]
        for a, z in zip(starts[:-1], starts[1:]):
            ll[str(group[a])] = [[idx[j], val[j], cor[j]] for j in range(a, z)]
    return {"items": items, "ll": ll}


def mass_scatter(items: pd.DataFrame, task: str, *, text: ItemText | None = None,
                 logliks: pd.DataFrame | None = None, max_items: int = 400, seed: int = 0) -> dict[str, Any]:
    """The interactive correct-vs-incorrect mass figure of one task.

    Parameters
    ----------
    items : pandas.DataFrame
        ``per_item.parquet`` rows (``model_id, task, doc_id, compute, log_p_vocab_correct,
        log_p_vocab_incorrect``; log-likelihoods in nats).
    task : str
        The task drawn.
    text : mapping, optional
        Question text and choices per ``(task, doc_id)`` for the inspector.
    logliks : pandas.DataFrame, optional
        Score-store rows (``model_id, task, doc_id, choice_idx, loglik, is_correct``) for the inspector.
    max_items : int
        At most this many items are drawn (every checkpoint of each), chosen at random with ``seed``; the
        returned ``note`` says how many of how many.
    seed : int
        Seed of the item sample.

    Returns
    -------
    dict
        ``figure`` (Plotly ``data`` and ``layout``), ``inspector`` (see :func:`correlation_scatter`),
        ``n_items``, ``n_items_shown``, ``n_points``, ``n_nonfinite`` and ``note``.
    """
    d = items[items["task"] == task]
    d = d.assign(key=d["task"].astype(str) + "\x1f" + d["doc_id"].astype(str),
                 x=d["log_p_vocab_correct"].astype(float) / _LN10,
                 y=d["log_p_vocab_incorrect"].astype(float) / _LN10,
                 c=np.log10(d["compute"].astype(float)))
    n_items = int(d["key"].nunique())
    keep = _sample_items(d["key"], max_items, seed)
    d = d[d["key"].isin(keep)]
    ok = np.isfinite(d["x"]) & np.isfinite(d["y"]) & np.isfinite(d["c"])
    n_bad = int((~ok).sum())
    d = d[ok].sort_values(["c", "key"])
    lo = float(min(d["x"].min(), d["y"].min())) if len(d) else -10.0
    cmin, cmax = (float(d["c"].min()), float(d["c"].max())) if len(d) else (0.0, 1.0)
    ticks = list(range(math.ceil(cmin), math.floor(cmax) + 1)) or [round(cmin, 1)]
    trace = {
        "type": "scatter", "mode": "markers", "name": task,
        "x": d["x"].round(4).tolist(), "y": d["y"].round(4).tolist(),
        "customdata": [[doc, m, k] for doc, m, k in zip(d["doc_id"].astype(str), d["model_id"], d["key"])],
        "marker": {"size": 5, "opacity": 0.65, "color": d["c"].round(3).tolist(), "colorscale": "Viridis",
                   "cmin": cmin, "cmax": cmax,
                   "colorbar": {"title": {"text": "compute<br>(FLOPs)"}, "tickvals": ticks,
                                "ticktext": [f"1e{t}" for t in ticks]}},
        "hovertemplate": (f"task: {task}<br>doc_id: %{{customdata[0]}}<br>checkpoint: %{{customdata[1]}}<br>"
                          "log10 p(correct) = %{x:.2f}<br>log10 Σ p(incorrect) = %{y:.2f}<extra></extra>"),
    }
    diag = {"type": "scatter", "mode": "lines", "x": [lo, 0], "y": [lo, 0], "name": "equal mass",
            "line": {"color": "#7f7f7f", "dash": "dash", "width": 1}, "hoverinfo": "skip"}
    layout = _layout(f"{task}: correct vs incorrect vocabulary mass, one point per item and checkpoint",
                     "log10 p_vocab(correct) (log10 probability)",
                     "log10 Σ p_vocab(incorrect) (log10 probability)")
    shown = int(d["key"].nunique())
    note = (f"{shown} of {n_items} items" + (f" (a random sample, seed {seed})" if shown < n_items else "")
            + f", {len(d)} points" + (f"; {n_bad} point(s) with −inf mass not drawn" if n_bad else ""))
    return {"figure": {"data": [trace, diag], "layout": layout},
            "inspector": _inspector(sorted(set(d["key"])), text, logliks, None),
            "n_items": n_items, "n_items_shown": shown, "n_points": len(d), "n_nonfinite": n_bad, "note": note}


def correlation_scatter(table: pd.DataFrame, *, x: str = "log_p_vocab_correct", y: str = "acc",
                        method: str = "spearman", text: ItemText | None = None,
                        logliks: pd.DataFrame | None = None, inspect_model: Mapping[str, str] | None = None,
                        max_items: int = 3000, seed: int = 0) -> dict[str, Any]:
    """The interactive per-item correlation figure: one point per item, one colour per task.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`item_table` output (``task, doc_id, r_<x>, r_<y>``).
    x, y : str
        Metrics on the axes (default: log p_vocab(correct), where the chain starts, and accuracy, where it
        ends); items above the diagonal gained predictability, items below lost it.
    method : str
        The correlation method of ``table`` (for the axis titles).
    text : mapping, optional
        Question text and choices per ``(task, doc_id)``.
    logliks : pandas.DataFrame, optional
        Score-store rows for the inspector.
    inspect_model : mapping, optional
        ``{task: model_id}``: the checkpoint whose log-likelihoods the inspector shows (the largest).
    max_items : int
        At most this many items per task are drawn (random sample with ``seed``).
    seed : int
        Seed of the sample.

    Returns
    -------
    dict
        ``figure``, ``inspector`` (``items``: per key ``task, doc_id, question, choices, gold``; ``ll``: per
        ``key + "\\x1e" + model_id`` a list of ``[choice_idx, loglik (nats), is_correct]``), ``n_items``,
        ``n_items_shown``, ``n_undefined`` (items whose ``x`` or ``y`` correlation is undefined: a constant
        score) and ``note``.
    """
    cx, cy = f"r_{x}", f"r_{y}"
    t = table.assign(key=table["task"].astype(str) + "\x1f" + table["doc_id"].astype(str))
    traces, keys, shown, n_bad = [], [], 0, 0
    for i, (task, g) in enumerate(t.groupby("task", sort=True)):
        keep = _sample_items(g["key"], max_items, seed)
        g = g[g["key"].isin(keep)]
        ok = np.isfinite(g[cx].astype(float)) & np.isfinite(g[cy].astype(float))
        n_bad += int((~ok).sum())
        g = g[ok]
        shown += len(g)
        keys += g["key"].tolist()
        model = (inspect_model or {}).get(str(task), "")
        traces.append({
            "type": "scatter", "mode": "markers", "name": str(task),
            "x": g[cx].astype(float).round(4).tolist(), "y": g[cy].astype(float).round(4).tolist(),
            "customdata": [[doc, model, k] for doc, k in zip(g["doc_id"].astype(str), g["key"])],
            "marker": {"size": 6, "opacity": 0.7, "color": style.color(i)},
            "hovertemplate": (f"task: {task}<br>doc_id: %{{customdata[0]}}<br>r({_short(x)}) = %{{x:.2f}}<br>"
                              f"r({_short(y)}) = %{{y:.2f}}<extra></extra>"),
        })
    traces.append({"type": "scatter", "mode": "lines", "x": [-1, 1], "y": [-1, 1], "name": "no change",
                   "line": {"color": "#7f7f7f", "dash": "dash", "width": 1}, "hoverinfo": "skip"})
    layout = _layout(f"per-item {method} correlation with log10 compute: {_short(x)} against {_short(y)}",
                     f"{method} r of {_short(x)} with compute (unitless)",
                     f"{method} r of {_short(y)} with compute (unitless)")
    layout["xaxis"]["range"] = [-1.05, 1.05]
    layout["yaxis"]["range"] = [-1.05, 1.05]
    n_items = len(t)
    note = (f"{shown} of {n_items} items drawn" + (f"; {n_bad} with an undefined correlation (a score constant "
                                                     "across the models) not drawn" if n_bad else ""))
    models = sorted(set((inspect_model or {}).values())) or None
    return {"figure": {"data": traces, "layout": layout}, "inspector": _inspector(keys, text, logliks, models),
            "n_items": n_items, "n_items_shown": shown, "n_undefined": n_bad, "note": note}


def _short(metric: str) -> str:
    return {"log_p_vocab_correct": "log p_vocab(correct)", "p_choices_correct": "p_choices(correct)",
            "brier": "−Brier", "acc": "accuracy"}.get(metric, metric)


def _layout(title: str, xtitle: str, ytitle: str) -> dict[str, Any]:
    return {"title": {"text": title, "font": {"size": 13}, "x": 0.0, "xanchor": "left", "y": 0.99,
                      "yanchor": "top"},
            "height": 480, "autosize": True, "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
            "hovermode": "closest",
            "colorway": list(style.PALETTE), "template": None,
            "xaxis": {"title": {"text": xtitle}, "zeroline": False, "gridcolor": "#e5e5e5"},
            "yaxis": {"title": {"text": ytitle}, "zeroline": False, "gridcolor": "#e5e5e5"},
            "legend": {"orientation": "h", "y": -0.18}, "plot_bgcolor": "white"}
