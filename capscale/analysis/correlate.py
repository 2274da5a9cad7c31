"""Degradation analysis: per-item correlation of each chain metric with log10 compute.

For every (family, task, metric, method) capscale builds the matrix Y (models sorted by compute x
items), negates Brier so that higher is better for every metric, and correlates each item's column
with x = log10(compute / FLOPs) across the family's models (Schaeffer et al. 2024, §4 of
``docs/chain.md``):

* ``pearson``  — Pearson r;
* ``spearman`` — Pearson r of average ranks (scipy's ``spearmanr``);
* ``kendall``  — Kendall τ-b (scipy's ``kendalltau`` default).

An item whose score is the same for every model (very common for accuracy) gets ``r = NaN``: it is
excluded from the summary statistics but counted in ``num_nan`` / ``nan_frac`` — never hidden.
Items missing for some models are correlated over the models that have them (at least 3), and the
number of models used is kept in ``n_models``.

Summary statistics per (family, task, metric, method), over the non-NaN r:

=================  ==========================================================================
``n_items``        items in the task (NaN included)
``n_valid``        items with a defined correlation
``num_nan``        items with a constant score (or fewer than 3 models)
``nan_frac``       ``num_nan / n_items``
``mean``, ``median``, ``std``
``frac_ge_0.75``   fraction of items with r ≥ 0.75 (the paper's headline Ŝ(0.75))
``frac_gt_0``      fraction with r > 0
``auc``            trapezoid area under the complementary ECDF (paper parity; under-estimates
                   when r takes few distinct values)
``auc_exact``      ∫ Ŝ(c) dc over [−1, 1] = 1 + mean
``neg_w1_min``     −min(W1(r, δ₊₁), W1(r, δ₋₁)) = −(1 − |mean|)
=================  ==========================================================================

Examples
--------
>>> from capscale.data import store
>>> from capscale.analysis import chain, correlate
>>> items = chain.compute(store.example_store(n_models=4, n_items=20))
>>> corr = correlate.per_item_correlations(items)
>>> summary = correlate.summarize(corr)
>>> sorted(summary["method"].unique())
['kendall', 'pearson', 'spearman']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "DEFAULT_METRICS",
    "METHODS",
    "per_item_correlations",
    "summarize",
    "ccdf",
    "ordering_check",
    "correlate_matrix",
    "SUMMARY_COLUMNS",
    "ORDERING_COLUMNS",
]

#: Metrics correlated by default (those present in the chain table are used).
DEFAULT_METRICS = [
    "log_p_vocab_correct",
    "p_vocab_correct",
    "p_choices_correct",
    "brier",
    "acc",
    "acc_norm",
    "target_is_greedy",
    "log_p_vocab_incorrect",
]
METHODS = ("pearson", "spearman", "kendall")
#: Metrics negated before correlating so that higher = better.
NEGATED = {"brier"}


def _pearson_cols(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson r of x (M,) with each column of Y (M, S); NaN for constant columns."""
    xc = x - x.mean()
    Yc = Y - Y.mean(axis=0)
    num = xc @ Yc
    den = np.sqrt((xc**2).sum()) * np.sqrt((Yc**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    const = np.ptp(Y, axis=0) == 0
    r[const] = np.nan
    return np.clip(r, -1.0, 1.0)


#: Columns :func:`_kendall_cols` counts at once (its count tables hold 2 x models x this many int64).
KENDALL_CHUNK_COLUMNS = 8192


def _kendall_cols(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of x with each column of Y, in O(M log M) per column and bounded memory.

    tau-b = (n_c − n_d) / sqrt((P − t_x)(P − t_y)) with P = M(M−1)/2 pairs and t_x, t_y the pairs tied in x
    and in y (scipy's ``kendalltau`` default). n_c − n_d is counted exactly in integers: models are visited in
    increasing x, and a Fenwick tree over each column's dense ranks of y counts, for every model, the earlier
    models (strictly smaller x) below and above it. All columns advance together (one vector operation per
    model and tree level), ``KENDALL_CHUNK_COLUMNS`` columns at a time. The counts are the same integers as
    the all-pairs sign sums, so r is identical to them; 500 models x 25,000 items take seconds instead of the
    25 GB all-pairs matrix.
    """
    x = np.asarray(x, dtype=float)
    M, S = Y.shape
    r = np.full(S, np.nan)
    if M < 2:
        return r
    order = np.argsort(x, kind="stable")
    xs = x[order]
    P = M * (M - 1) // 2
    _, xc = np.unique(xs, return_counts=True)
    tx = int((xc * (xc - 1) // 2).sum())
    block_end = np.flatnonzero(np.append(xs[1:] != xs[:-1], True))  # last index of each run of equal x
    for a in range(0, S, KENDALL_CHUNK_COLUMNS):
        Yc = Y[order, a:a + KENDALL_CHUNK_COLUMNS]
        s = Yc.shape[1]
        R = stats.rankdata(Yc, axis=0, method="dense").astype(np.int64)  # 1..n_distinct per column
        top = int(R.max())
        levels = top.bit_length() + 1
        sink = top + 1  # updates past the top rank land here; never queried
        tree = np.zeros((top + 2) * s, dtype=np.int64)
        equal = np.zeros((top + 2) * s, dtype=np.int64)
        cols = np.arange(s)
        num = np.zeros(s, dtype=np.int64)
        start = 0
        for end in block_end:
            for j in range(start, end + 1):  # query the whole block of equal x first (ties in x add 0)
                idx = R[j] - 1
                less = np.zeros(s, dtype=np.int64)
                for _ in range(levels):
                    less += tree[idx * s + cols]
                    idx = idx - (idx & -idx)
                leq = less + equal[R[j] * s + cols]
                num += less - (start - leq)
            for j in range(start, end + 1):
                equal[R[j] * s + cols] += 1
                idx = R[j].copy()
                for _ in range(levels):
                    tree[idx * s + cols] += 1
                    idx = np.minimum(idx + (idx & -idx), sink)
            start = end + 1
        Ys = np.sort(Yc, axis=0)
        eq = Ys[1:] == Ys[:-1]
        k = np.arange(1, M)[:, None]
        run_start = np.maximum.accumulate(np.where(eq, 0, k), axis=0)
        ty = np.where(eq, k - run_start, 0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r[a:a + s] = num / np.sqrt((P - tx) * (P - ty).astype(float))
    const = np.ptp(Y, axis=0) == 0
    r[const] = np.nan
    return np.clip(r, -1.0, 1.0)


def _t_pvalue(r: np.ndarray, n: int | np.ndarray) -> np.ndarray:
    """Two-sided p-value of a correlation via the t distribution (as scipy's pearsonr/spearmanr)."""
    df = np.asarray(n, dtype=float) - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        t = r * np.sqrt(df / np.maximum(1e-300, 1 - r**2))
    p = 2 * stats.t.sf(np.abs(t), df)
    return np.where(np.abs(r) >= 1, 0.0, p)


def correlate_matrix(x: np.ndarray, Y: np.ndarray, method: str) -> np.ndarray:
    """Correlation of ``x`` (M,) with every column of ``Y`` (M, S), no missing values.

    Parameters
    ----------
    x : ndarray, shape (M,)
        Usually log10 compute (FLOPs).
    Y : ndarray, shape (M, S)
        Scores, one column per item.
    method : {"pearson", "spearman", "kendall"}

    Returns
    -------
    ndarray, shape (S,)
        r per column; NaN where the column (or x) is constant.
    """
    x = np.asarray(x, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if method == "pearson":
        return _pearson_cols(x, Y)
    if method == "spearman":
        rx = stats.rankdata(x)
        rY = stats.rankdata(Y, axis=0)
        r = _pearson_cols(rx, rY)
        r[np.ptp(Y, axis=0) == 0] = np.nan
        return r
    if method == "kendall":
        return _kendall_cols(x, Y)
    raise ValueError(f"unknown correlation method {method!r}; choose from {METHODS}")


def _scipy_one(x: np.ndarray, y: np.ndarray, method: str) -> float:
    if np.ptp(y) == 0 or len(y) < 3:
        return np.nan
    f = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}[method]
    return float(f(x, y)[0])


def _pivot(g: pd.DataFrame, metric: str, models: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """``g.pivot(index="model_id", columns="doc_id", values=metric).reindex(models)`` as (doc ids, float matrix).

    The same matrix as pandas' pivot (columns sorted by doc_id, NaN where a model lacks an item, rows in the
    order of ``models``), built from integer codes instead of a MultiIndex unstack: about 5x faster and a
    fraction of the memory on a task of 500 models x 25,000 items.

    Raises
    ------
    ValueError
        A (model_id, doc_id) pair occurs twice (as pandas' pivot does).
    """
    doc_codes, docs = pd.factorize(g["doc_id"], sort=True)
    mid = g["model_id"]
    if isinstance(mid.dtype, pd.CategoricalDtype):  # map the categories, not every row
        codes = mid.cat.codes.to_numpy()
        at = pd.Index(models).get_indexer(mid.cat.categories)
        pos = np.where(codes >= 0, at[codes], -1)
    else:
        pos = pd.Index(models).get_indexer(mid)
    keep = pos >= 0
    rows, cols = pos[keep], doc_codes[keep]
    flat = rows.astype(np.int64) * len(docs) + cols
    if len(flat) and np.bincount(flat, minlength=len(models) * len(docs)).max() > 1:
        raise ValueError("Index contains duplicate entries, cannot reshape")
    V = np.full((len(models), len(docs)), np.nan)
    V.ravel()[flat] = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float)[keep]
    return np.asarray(docs), V


def per_item_correlations(
    items: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] = METHODS,
    *,
    group_by: Sequence[str] = ("family", "task"),
) -> pd.DataFrame:
    """Per-item correlation of each metric with log10 compute, across a family's models.

    Parameters
    ----------
    items : pandas.DataFrame
        Output of :func:`capscale.analysis.chain.compute` (one row per model x task x item, with
        ``family`` and ``compute`` in FLOPs).
    metrics : sequence of str, optional
        Metrics to correlate; default :data:`DEFAULT_METRICS` that are present and not all-NaN.
    methods : sequence of {"pearson", "spearman", "kendall"}
    group_by : sequence of str
        Columns that define one analysis group (default family and task).

    Returns
    -------
    pandas.DataFrame
        One row per (family, task, metric, method, doc_id) with ``r`` (NaN for constant items),
        ``p_value`` (t-distribution p for Pearson and Spearman; NaN for Kendall), ``n_models`` and
        ``negated`` (True for Brier, correlated as −Brier).
    """
    for c in (*group_by, "compute", "model_id", "doc_id"):
        if c not in items.columns:
            raise ValueError(f"per_item_correlations: items table lacks column {c!r} (use capscale.analysis.chain.compute)")
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m in items.columns and items[m].notna().any()]
    else:
        missing = [m for m in metrics if m not in items.columns]
        if missing:
            raise ValueError(f"per_item_correlations: metrics {missing} not in the items table")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown correlation method {m!r}; choose from {METHODS}")

    out = []
    for key, g in items.groupby(list(group_by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        comp = g.groupby("model_id")["compute"].first()
        x_all = np.log10(comp.astype(float))
        finite = np.isfinite(x_all)
        models = comp[finite].sort_values().index
        x = x_all[models].to_numpy()
        for metric in metrics:
            docs, V = _pivot(g, metric, models)
            if metric in NEGATED:
                V = -V
            complete = ~np.isnan(V).any(axis=0)
            n_models = (~np.isnan(V)).sum(axis=0)
            for method in methods:
                r = np.full(V.shape[1], np.nan)
                if len(x) >= 3 and complete.any():
                    r[complete] = correlate_matrix(x, V[:, complete], method)
                for s in np.flatnonzero(~complete):
                    ok = ~np.isnan(V[:, s])
                    if ok.sum() >= 3:
                        r[s] = _scipy_one(x[ok], V[ok, s], method)
                p = _t_pvalue(r, n_models) if method != "kendall" else np.full_like(r, np.nan)
                frame = pd.DataFrame({"doc_id": docs, "r": r, "p_value": p, "n_models": n_models})
                for name, val in zip(group_by, key, strict=True):
                    frame[name] = val
                frame["metric"] = metric
                frame["method"] = method
                frame["negated"] = metric in NEGATED
                out.append(frame)
    if not out:
        return pd.DataFrame(columns=[*group_by, "metric", "method", "doc_id", "r", "p_value", "n_models", "negated"])
    res = pd.concat(out, ignore_index=True)
    return res[[*group_by, "metric", "method", "doc_id", "r", "p_value", "n_models", "negated"]]


def _trapezoid_auc(r: np.ndarray, eps: float = 1e-6) -> float:
    """Paper-parity AUC: trapezoid through (−1−ε, 1), the survival function at sorted unique r, (1+ε, 0)."""
    if len(r) == 0:
        return np.nan
    q = np.unique(r)
    surv = np.array([(r > v).mean() for v in q])
    xs = np.concatenate([[-1 - eps], q, [1 + eps]])
    ys = np.concatenate([[1.0], surv, [0.0]])
    return float(np.trapezoid(ys, xs))


def _summary_row(r_all: np.ndarray) -> dict[str, float]:
    r = r_all[~np.isnan(r_all)]
    n = len(r_all)
    row: dict[str, float] = {"n_items": n, "n_valid": len(r), "num_nan": n - len(r),
                             "nan_frac": (n - len(r)) / n if n else np.nan}
    if len(r):
        mean = float(r.mean())
        row |= {"mean": mean, "median": float(np.median(r)), "std": float(r.std()),
                "frac_ge_0.75": float((r >= 0.75).mean()), "frac_gt_0": float((r > 0).mean()),
                "auc": _trapezoid_auc(r), "auc_exact": 1 + mean, "neg_w1_min": -(1 - abs(mean))}
    else:
        row |= {k: np.nan for k in ("mean", "median", "std", "frac_ge_0.75", "frac_gt_0", "auc", "auc_exact",
                                    "neg_w1_min")}
    return row


#: The statistics columns of :func:`summarize` (after the group keys, ``metric`` and ``method``).
SUMMARY_COLUMNS = ["n_items", "n_valid", "num_nan", "nan_frac", "mean", "median", "std", "frac_ge_0.75",
                   "frac_gt_0", "auc", "auc_exact", "neg_w1_min"]


def summarize(corr: pd.DataFrame, group_by: Sequence[str] = ("family", "task")) -> pd.DataFrame:
    """Summary statistics of per-item correlations (see module docstring for the columns).

    Parameters
    ----------
    corr : pandas.DataFrame
        Output of :func:`per_item_correlations`.

    Returns
    -------
    pandas.DataFrame
        One row per (family, task, metric, method); with no correlations, no rows but the same columns.
    """
    keys = [*group_by, "metric", "method"]
    rows = []
    for key, g in corr.groupby(keys, sort=False):
        rows.append(dict(zip(keys, key, strict=True)) | _summary_row(g["r"].to_numpy(dtype=float)))
    return pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])


def ccdf(corr: pd.DataFrame, grid: np.ndarray | None = None,
         group_by: Sequence[str] = ("family", "task")) -> pd.DataFrame:
    """Complementary ECDF Ŝ(c) = fraction of non-NaN items with r > c, on a grid of c in [−1, 1].

    Returns
    -------
    pandas.DataFrame
        Columns: group keys, metric, method, ``c``, ``ccdf``.
    """
    grid = np.linspace(-1, 1, 201) if grid is None else np.asarray(grid)
    keys = [*group_by, "metric", "method"]
    rows = []
    for key, g in corr.groupby(keys, sort=False):
        r = np.sort(g["r"].dropna().to_numpy())
        if len(r) == 0:
            continue
        s = 1 - np.searchsorted(r, grid, side="right") / len(r)
        frame = pd.DataFrame({"c": grid, "ccdf": s})
        for k, v in zip(keys, key, strict=True):
            frame[k] = v
        rows.append(frame)
    if not rows:
        return pd.DataFrame(columns=[*keys, "c", "ccdf"])
    return pd.concat(rows, ignore_index=True)[[*keys, "c", "ccdf"]]


#: The chain order checked by :func:`ordering_check`.
ORDER = ["log_p_vocab_correct", "p_choices_correct", "brier", "acc"]


def ordering_check(summary: pd.DataFrame, statistics: Sequence[str] = ("mean", "median", "frac_ge_0.75", "auc"),
                   group_by: Sequence[str] = ("family", "task")) -> pd.DataFrame:
    """Does log p_vocab ≥ p_choices ≥ Brier ≥ accuracy hold for each (family, task, method, statistic)?

    Brier enters negated (higher = better), as in every correlation here.

    Returns
    -------
    pandas.DataFrame
        Columns (:data:`ORDERING_COLUMNS`): group keys, ``method``, ``statistic``, the four metric values,
        ``holds`` (bool; None when a value is NaN), ``holds_strict_first`` (log p_vocab > p_choices) and
        ``undefined_reason`` (empty when defined; else which metrics have no defined correlation, e.g. because
        the metric is constant across models in every item, or are missing from the summary). A group without
        any of the four metrics gives no rows; with no rows the columns are still there.
    """
    keys = [*group_by, "method"]
    rows = []
    sub = summary[summary["metric"].isin(ORDER)]
    for key, g in sub.groupby(keys, sort=False):
        vals = g.set_index("metric")
        absent = [m for m in ORDER if m not in vals.index]
        for stat in statistics:
            v = [float(vals.loc[m, stat]) if m not in absent else np.nan for m in ORDER]
            ok = not any(np.isnan(v))
            holds = ok and all(a >= b for a, b in zip(v, v[1:], strict=False))
            reason = ""
            if not ok:
                parts = []
                if absent:
                    parts.append(f"metric(s) {absent} not in the summary")
                undefined = [m for m in ORDER if m not in absent and np.isnan(float(vals.loc[m, stat]))]
                if undefined:
                    const = [m for m in undefined if "n_valid" in vals and float(vals.loc[m, "n_valid"]) == 0]
                    parts.append(f"{stat} undefined for {undefined}"
                                 + (f" ({const}: no item with a defined correlation, every item constant across "
                                    "models)" if const else ""))
                reason = "; ".join(parts)
            rows.append(dict(zip(keys, key, strict=True)) | {"statistic": stat} |
                        dict(zip(ORDER, v, strict=True)) | {"holds": holds if ok else None,
                                                            "holds_strict_first": (v[0] > v[1]) if ok else None,
                                                            "undefined_reason": reason})
    return pd.DataFrame(rows, columns=[*keys, *ORDERING_COLUMNS])


#: The columns of :func:`ordering_check` after the group keys and ``method``.
ORDERING_COLUMNS = ["statistic", *ORDER, "holds", "holds_strict_first", "undefined_reason"]
