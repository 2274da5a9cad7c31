"""The per-choice transformation chain (Schaeffer et al. 2024), one row per (model, task, item).

From the per-choice log-likelihoods ℓ_i of an item with K choices and gold index c:

==========================  ===============================================================
metric                      formula (computed in log space with logsumexp)
==========================  ===============================================================
``log_p_vocab_correct``     ℓ_c (nats); with several golds, the max over golds
``p_vocab_correct``         exp(ℓ_c)
``log_p_choices_correct``   ℓ_c − LSE_i ℓ_i  (several golds: LSE over golds − LSE_i ℓ_i)
``p_choices_correct``       softmax(ℓ)_c
``acc``                     1[c ∈ argmax_i ℓ_i] / |argmax_i ℓ_i|  (fractional ties, see below)
``acc_norm``                as ``acc`` on ℓ_i / n_chars_i   (needs ``n_chars``)
``acc_bytes``               as ``acc`` on ℓ_i / n_bytes_i   (needs ``n_bytes``)
``brier``                   (1/K) Σ_i (p_i − 1[i = c])², p = softmax(ℓ)  (mean over choices)
``log_p_vocab_incorrect``   LSE_{i≠c} ℓ_i, the summed vocabulary mass of the incorrect choices
``log_p_vocab_choices``     LSE_i ℓ_i
``max_incorrect``           max_{i≠c} ℓ_i
``margin``                  ℓ_c − max_{i≠c} ℓ_i
``choice_logodds``          ℓ_c − LSE_{i≠c} ℓ_i = logit(p_choices_correct)
``neg_bpb``                 ℓ_c / (n_bytes_c · ln 2), minus the bits per byte of the gold (needs ``n_bytes``)
``target_is_greedy``        is_greedy of the gold choice (needs ``is_greedy``)
==========================  ===============================================================

Ties. ``acc`` gives an item whose maximal log-likelihood is shared by m choices the fractional score
1/m if the gold is among them (0 otherwise). lm-eval instead takes the first maximal index
(numpy ``argmax``); with float log-likelihoods exact ties are rare and the two agree otherwise.
``acc_first`` holds lm-eval's first-index convention for parity checks.

Brier is the *mean* over the K choices (the authors' code); lm-eval's ``brier_score`` is the sum,
``brier_sum = K * brier``.

Examples
--------
>>> import pandas as pd
>>> from capscale.analysis import chain
>>> df = pd.DataFrame(dict(model_id="m", family="f", params=1, tokens=1, task="t", doc_id=0,
...                        choice_idx=[0, 1, 2, 3], is_correct=[False, True, False, False],
...                        loglik=[-2.0, -1.0, -3.0, -4.0]))
>>> row = chain.compute(df).iloc[0]
>>> round(row.p_choices_correct, 6), round(row.brier, 6), row.margin
(0.643914, 0.047883, 1.0)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capscale.data import store as _store
from capscale.data.ladder_table import LADDER_COLUMNS, check_ladder
from capscale.errors import InputError, UsageError

__all__ = ["compute", "ladder_from_store", "select_items", "metric_coverage", "metric_coverage_counts",
           "merge_metric_coverage", "metric_coverage_report", "METRICS", "METRIC_INPUTS",
           "HIGHER_IS_BETTER", "CHAIN_ORDER", "ITEM_SELECTIONS"]

ITEM_KEYS = ["model_id", "task", "doc_id"]

#: Every metric :func:`compute` may produce.
METRICS = [
    "log_p_vocab_correct",
    "p_vocab_correct",
    "log_p_choices_correct",
    "p_choices_correct",
    "acc",
    "acc_first",
    "acc_norm",
    "acc_bytes",
    "brier",
    "log_p_vocab_incorrect",
    "log_p_vocab_choices",
    "max_incorrect",
    "margin",
    "choice_logodds",
    "neg_bpb",
    "target_is_greedy",
]

#: Whether a larger value of the metric means a better model (Brier is the exception).
HIGHER_IS_BETTER = {m: True for m in METRICS} | {"brier": False, "log_p_vocab_incorrect": False,
                                                 "max_incorrect": False, "log_p_vocab_choices": True}

#: The chain in the paper's order: stage 0/A, B, C', C.
CHAIN_ORDER = ["log_p_vocab_correct", "p_choices_correct", "brier", "acc"]

_MODEL_COLS = ["family", "params", "tokens", "compute", "step", "seed", "revision"]

#: Metrics that need an optional store column; they are NaN for the items whose choices lack it.
METRIC_INPUTS = {"acc_norm": "n_chars", "acc_bytes": "n_bytes", "neg_bpb": "n_bytes", "target_is_greedy": "is_greedy"}

#: The values of ``items=`` accepted by :func:`select_items` (and ``capscale analyze --items``).
ITEM_SELECTIONS = ("common", "all")


def _seg_max(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.maximum.reduceat(values, starts)


def _seg_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(values, starts)


def _seg_lse(values: np.ndarray, starts: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Log-sum-exp per segment; ``-inf`` entries are ignored, an all ``-inf`` segment gives ``-inf``."""
    mx = _seg_max(values, starts)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(invalid="ignore"):
        ex = np.exp(values - safe[seg])
    ex = np.where(np.isneginf(values), 0.0, ex)
    with np.errstate(divide="ignore"):
        return safe + np.log(_seg_sum(ex, starts))


def _seg_acc(scores: np.ndarray, correct: np.ndarray, starts: np.ndarray, seg: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Fractional-tie accuracy and lm-eval's first-index accuracy per segment."""
    mx = _seg_max(scores, starts)
    at_max = scores == mx[seg]
    n_max = _seg_sum(at_max.astype(np.int64), starts)
    n_gold_max = _seg_sum((at_max & correct).astype(np.int64), starts)
    frac = n_gold_max / n_max
    # first maximal index within the segment
    pos = np.arange(len(scores))
    first_pos = np.minimum.reduceat(np.where(at_max, pos, len(scores)), starts)
    first = correct[first_pos].astype(float)
    return frac, first


def _seg_all(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.minimum.reduceat(mask.astype(np.int8), starts).astype(bool)


def _length_column(d: pd.DataFrame, col: str, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The lengths in ``col`` (1 where missing) and which choices have one; None if no choice has one."""
    if col not in d.columns:
        return None
    v = pd.to_numeric(d[col], errors="coerce").to_numpy(dtype=np.float64)
    have = np.isfinite(v)
    if not have.any():
        return None
    if (v[have] <= 0).any():
        bad = d.loc[have & (v <= 0), ["model_id", "task", "doc_id", "choice_idx"]].head(5).to_dict("records")
        raise InputError(f"{metric}: empty choice strings ({col} <= 0) at {bad}")
    return np.where(have, v, 1.0), have


def _item_order(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows grouped by item, choices in ``choice_idx`` order, and where each item starts.

    Items are keyed by integer codes of (model_id, task, doc_id) in order of first appearance, so a store whose
    rows already come item by item (every shard ``capscale eval`` writes, and any concatenation of them) is used
    as it is, without a sort or a copy; otherwise the rows are sorted by the codes. (``compute`` sorts its
    output, so the order of items here does not change it.)
    """
    n = len(df)
    docs = df["doc_id"].astype(str) if df["doc_id"].dtype == object else df["doc_id"]
    codes = [pd.factorize(df["model_id"])[0], pd.factorize(df["task"])[0], pd.factorize(docs)[0]]
    choice = df["choice_idx"].to_numpy(dtype=np.int64)
    sizes = [int(c.max()) + 1 for c in codes] + [int(choice.max()) + 1]
    if float(np.prod(np.array(sizes, dtype=float))) < 2.0**62:
        item = (codes[0] * sizes[1] + codes[1]) * sizes[2] + codes[2]
        key = item * sizes[3] + choice
        if n > 1 and not (key[1:] >= key[:-1]).all():
            order = np.argsort(key, kind="stable")
            df, item = df.iloc[order], item[order]
    else:  # pragma: no cover - more than 2^62 distinct keys
        order = np.lexsort((choice, codes[2], codes[1], codes[0]))
        df = df.iloc[order]
        item = np.stack([c[order] for c in codes])
        new = np.ones(n, dtype=bool)
        new[1:] = (item[:, 1:] != item[:, :-1]).any(axis=0)
        return df, new
    new = np.ones(n, dtype=bool)
    new[1:] = item[1:] != item[:-1]
    return df, new


def compute(df: pd.DataFrame, *, validate: bool = False) -> pd.DataFrame:
    """Chain metrics per (model, task, item) from a score store.

    Parameters
    ----------
    df : pandas.DataFrame
        A score store (see :mod:`capscale.data.store`). Optional columns ``n_chars``, ``n_bytes`` and
        ``is_greedy`` enable ``acc_norm``, ``acc_bytes``/``neg_bpb`` and ``target_is_greedy``
        (:data:`METRIC_INPUTS`): each is computed for the items whose every choice has the column's value and
        NaN for the others (a store whose shards only partly carry ``n_chars`` keeps ``acc_norm`` where it
        can be computed; :func:`metric_coverage` counts and explains the gaps).
    validate : bool, default False
        Validate the store first (raises :class:`capscale.data.store.StoreValidationError`).

    Returns
    -------
    pandas.DataFrame
        One row per (model_id, task, doc_id) with the model's columns (``family``, ``params``,
        ``tokens``, ``compute`` in FLOPs, and ``step``/``seed``/``revision`` when present),
        ``n_choices`` and the metrics listed in the module docstring. Log-likelihoods in nats.
        Rows are sorted by (task, compute, model_id, doc_id).
    """
    if validate:
        _store.check(df, multi_gold=True)
    missing = [c for c in _store.REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"chain.compute: store lacks required column(s) {missing}")
    if "compute" not in df.columns or df["compute"].isna().any():
        df = _store.normalize(df)

    n = len(df)
    if n == 0:
        return pd.DataFrame(columns=ITEM_KEYS + METRICS)
    d, new = _item_order(df)
    starts = np.flatnonzero(new)
    seg = np.cumsum(new) - 1
    k = np.diff(np.append(starts, n))

    ll = d["loglik"].to_numpy(dtype=np.float64)
    corr = d["is_correct"].to_numpy(dtype=bool)
    neg_inf = np.full(n, -np.inf)

    lse_all = _seg_lse(ll, starts, seg)
    ll_corr = np.where(corr, ll, neg_inf)
    ll_inc = np.where(corr, neg_inf, ll)
    max_corr = _seg_max(ll_corr, starts)
    lse_corr = _seg_lse(ll_corr, starts, seg)
    lse_inc = _seg_lse(ll_inc, starts, seg)
    max_inc = _seg_max(ll_inc, starts)

    p = np.exp(ll - lse_all[seg])
    brier = _seg_sum((p - corr) ** 2, starts) / k
    acc, acc_first = _seg_acc(ll, corr, starts, seg)

    first = d.iloc[starts]
    out = {
        "model_id": first["model_id"].to_numpy(),
        "task": first["task"].to_numpy(),
        "doc_id": first["doc_id"].to_numpy(),
    }
    for c in _MODEL_COLS:
        if c in d.columns:
            out[c] = first[c].to_numpy()
    out["n_choices"] = k
    out["log_p_vocab_correct"] = max_corr
    out["p_vocab_correct"] = np.exp(max_corr)
    out["log_p_choices_correct"] = lse_corr - lse_all
    out["p_choices_correct"] = np.exp(lse_corr - lse_all)
    out["acc"] = acc
    out["acc_first"] = acc_first
    chars = _length_column(d, "n_chars", "acc_norm")
    if chars is not None:
        nc, have = chars
        out["acc_norm"] = np.where(_seg_all(have, starts), _seg_acc(ll / nc, corr, starts, seg)[0], np.nan)
    nbytes = _length_column(d, "n_bytes", "acc_bytes")
    if nbytes is not None:
        nb, have = nbytes
        ok = _seg_all(have, starts)
        out["acc_bytes"] = np.where(ok, _seg_acc(ll / nb, corr, starts, seg)[0], np.nan)
        # bits per byte of the (first) gold continuation
        gold_first = np.minimum.reduceat(np.where(corr, np.arange(n), n), starts)
        gold_first = np.minimum(gold_first, n - 1)  # an item without a gold fails validation; never index past the end
        out["neg_bpb"] = np.where(ok, ll[gold_first] / (nb[gold_first] * np.log(2.0)), np.nan)
    out["brier"] = brier
    out["log_p_vocab_incorrect"] = lse_inc
    out["log_p_vocab_choices"] = lse_all
    out["max_incorrect"] = max_inc
    out["margin"] = max_corr - max_inc
    out["choice_logodds"] = lse_corr - lse_inc
    if "is_greedy" in d.columns and d["is_greedy"].notna().any():
        have = d["is_greedy"].notna().to_numpy()
        g = d["is_greedy"].fillna(False).to_numpy(dtype=bool)
        out["target_is_greedy"] = np.where(_seg_all(have, starts),
                                           _seg_max((g & corr).astype(np.int8), starts).astype(float), np.nan)
    for extra in ("multiple_input", "task_source"):
        if extra in d.columns:
            out[extra] = first[extra].to_numpy()
    res = pd.DataFrame(out)
    sort_cols = ["task", "compute", "model_id", "doc_id"] if "compute" in res else ["task", "model_id", "doc_id"]
    return res.sort_values(sort_cols, kind="stable").reset_index(drop=True)


def select_items(df: pd.DataFrame, items: str = "common", by: tuple[str, ...] = ("family", "task")
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The one rule for which items enter a comparison of models: those every model of the group scored.

    A model evaluated on a subset of a task's items would otherwise have its accuracy averaged over other
    items than its neighbours' (say 20 of 40), which shifts its point on every curve. With ``items="common"``
    each (family, task) keeps the items scored by all of its models; ``"all"`` keeps every row. Both return
    the same coverage report, so what was excluded is always counted.

    Parameters
    ----------
    df : pandas.DataFrame
        A score store (one row per choice) or a per-item table such as :func:`compute`'s; needs
        ``model_id``, ``doc_id`` and the ``by`` columns.
    items : {"common", "all"}, default "common"
    by : tuple of str, default ("family", "task")
        The columns of one group.

    Returns
    -------
    selected : pandas.DataFrame
        The rows kept (``df`` itself for ``"all"``).
    report : pandas.DataFrame
        One row per group: the ``by`` columns, ``n_models``, ``n_items_all`` (items any model scored),
        ``n_items_common`` (scored by every model), ``n_items_excluded`` (0 for ``"all"``) and
        ``models_missing_items`` (``{model_id: items it scored}`` for the models short of items).

    Raises
    ------
    capscale.errors.UsageError
        ``items`` is not one of :data:`ITEM_SELECTIONS`.
    capscale.errors.InputError
        With ``"common"``: a group in which no item is scored by every model (often a ``doc_id`` spelled
        differently in different files, see :func:`capscale.data.store.coverage_warnings`).
    """
    if items not in ITEM_SELECTIONS:
        raise UsageError(f"items must be one of {ITEM_SELECTIONS}, not {items!r}")
    by = list(by)
    if len(df) == 0:
        return df, pd.DataFrame(columns=[*by, "n_models", "n_items_all", "n_items_common", "n_items_excluded",
                                         "models_missing_items"])
    cov = _store.item_coverage(df, by)
    doc = _store._canonical_doc_id(df)
    keys = df[[*by, "model_id"]].assign(doc_id=doc.to_numpy()).drop_duplicates()
    rows = []
    for key, g in cov.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        sel = np.ones(len(keys), dtype=bool)
        for c, v in zip(by, key, strict=True):
            sel &= (keys[c] == v).to_numpy()
        have = keys[sel].groupby("model_id", sort=True)["doc_id"].nunique()
        n_all, n_common = len(g), int(g["covered"].sum())
        short = {str(m): int(k) for m, k in have[have < n_all].sort_values(kind="stable").items()}
        rows.append(dict(zip(by, key, strict=True)) | {
            "n_models": int(g["n_models_group"].iloc[0]), "n_items_all": n_all, "n_items_common": n_common,
            "n_items_excluded": (n_all - n_common) if items == "common" else 0, "models_missing_items": short})
        if items == "common" and n_common == 0:
            where = ", ".join(f"{c}={v!r}" for c, v in zip(by, key, strict=True))
            counts = ", ".join(f"{m}: {k} of {n_all}" for m, k in list(short.items())[:10])
            raise InputError(f"{where}: no item is scored by every model ({counts}); check that doc_id is spelled "
                             "the same way in every file (`capscale validate` names them), or use items='all' "
                             "(`--items all`)")
    report = pd.DataFrame(rows)
    if items == "all" or not (report["n_items_excluded"] > 0).any():
        return df, report
    common = cov.loc[cov["covered"], [*by, "doc_id"]].assign(_keep=True)
    mark = df[by].assign(doc_id=doc.to_numpy()).merge(common, on=[*by, "doc_id"], how="left")["_keep"]
    return df[mark.fillna(False).to_numpy(dtype=bool)], report


def metric_coverage_counts(items: pd.DataFrame, metrics: list[str] | None = None) -> dict[str, dict]:
    """The counts behind :func:`metric_coverage`, which add up over parts of a table (tasks, shards).

    Returns
    -------
    dict
        ``{metric: {"present": bool, "rows": int, "rows_total": int, "models": set, "models_missing": set}}``:
        whether the column exists, rows where it is not NaN, all rows, every model, and the models with at least
        one NaN row. :func:`merge_metric_coverage` adds two of these; :func:`metric_coverage_report` turns one
        into :func:`metric_coverage`'s answer.
    """
    total = int(len(items))
    models = {str(m) for m in items["model_id"].unique()} if total else set()
    out: dict[str, dict] = {}
    for m in metrics or METRICS:
        if m not in items.columns:
            out[m] = {"present": False, "rows": 0, "rows_total": total, "models": models, "models_missing": models}
            continue
        ok = items[m].notna()
        lacking = {str(m) for m in items.loc[~ok.to_numpy(), "model_id"].unique()}
        out[m] = {"present": True, "rows": int(ok.sum()), "rows_total": total, "models": models,
                  "models_missing": lacking}
    return out


def merge_metric_coverage(a: dict[str, dict], b: dict[str, dict]) -> dict[str, dict]:
    """The :func:`metric_coverage_counts` of two disjoint parts of a table, added."""
    out = {}
    for m in dict.fromkeys([*a, *b]):
        x, y = a.get(m), b.get(m)
        if x is None or y is None:
            out[m] = x or y
            continue
        out[m] = {"present": x["present"] or y["present"], "rows": x["rows"] + y["rows"],
                  "rows_total": x["rows_total"] + y["rows_total"], "models": x["models"] | y["models"],
                  "models_missing": x["models_missing"] | y["models_missing"]}
    return out


def metric_coverage_report(counts: dict[str, dict]) -> dict[str, dict]:
    """:func:`metric_coverage`'s answer from :func:`metric_coverage_counts` (possibly merged over parts)."""
    out: dict[str, dict] = {}
    for m, c in counts.items():
        need = METRIC_INPUTS.get(m)
        total = c["rows_total"]
        if not c["present"]:
            reason = (f"the store has no {need} values" if need else "not computed")
            out[m] = {"rows": 0, "rows_total": total, "models_missing": sorted(c["models"]) if total else [],
                      "missing_reason": reason}
            continue
        lacking = sorted(c["models_missing"])
        if c["rows"] == total:
            reason = ""
        elif need:
            reason = f"{need} is missing for some choices of {len(lacking)} model(s)"
        else:
            reason = "undefined for some items (non-finite log-likelihoods)"
        out[m] = {"rows": c["rows"], "rows_total": total, "models_missing": lacking, "missing_reason": reason}
    return out


def metric_coverage(items: pd.DataFrame, metrics: list[str] | None = None) -> dict[str, dict]:
    """How many rows of a :func:`compute` table each metric covers, and why the others are missing.

    Parameters
    ----------
    items : pandas.DataFrame
        Output of :func:`compute`.
    metrics : list of str, optional
        Default :data:`METRICS`; a metric absent from ``items`` is reported with 0 rows.

    Returns
    -------
    dict
        ``{metric: {"rows", "rows_total", "models_missing", "missing_reason"}}``: ``models_missing`` lists
        the models with at least one row without the metric; ``missing_reason`` is ``""`` when every row has
        it, else what is missing (the store column the metric needs, per :data:`METRIC_INPUTS`). The same as
        :func:`metric_coverage_report` of :func:`metric_coverage_counts`, which the streamed analysis adds up
        task by task.
    """
    return metric_coverage_report(metric_coverage_counts(items, metrics))


def ladder_from_store(store_df: pd.DataFrame, items: str = "common") -> pd.DataFrame:
    """Build a ladder table from a score store: per (checkpoint, task) mean metrics over items.

    Metrics: ``acc`` (fractional ties), ``acc_norm`` (if ``n_chars``), ``acc_bytes`` and ``task_bpb``
    (bits per byte of the gold continuation; if ``n_bytes``), ``task_loss`` (mean negative
    log-likelihood of the gold continuation, nats per item), ``brier`` (mean over choices),
    ``p_choices`` and ``log_p_choices`` (softmax over the choices).

    Parameters
    ----------
    store_df : pandas.DataFrame
        A score store (:mod:`capscale.data.store`).
    items : {"common", "all"}, default "common"
        Which items the means are taken over (:func:`select_items`): by default those every checkpoint of
        the (family, task) scored, so that all checkpoints are compared on the same items.

    Returns
    -------
    pandas.DataFrame
        Ladder table; ``run`` is the model_id without its ``@...`` suffix; step is NaN without a
        ``step`` column.
    """
    store_df, _report = select_items(store_df, items)
    items = compute(store_df)
    items["task_loss"] = -items["log_p_vocab_correct"]
    items["log_p_choices"] = items["log_p_choices_correct"]
    items["p_choices"] = items["p_choices_correct"]
    metrics = ["acc", "task_loss", "brier", "p_choices", "log_p_choices"]
    if "acc_norm" in items:
        metrics.insert(1, "acc_norm")
    if "neg_bpb" in items:
        items["task_bpb"] = -items["neg_bpb"]
        metrics += ["acc_bytes", "task_bpb"]
    keys = ["model_id", "task"]
    model_cols = ["family", "params", "tokens", "compute"] + (["step"] if "step" in items else [])
    agg = items.groupby(keys, sort=False)[metrics].mean()
    meta = items.groupby("model_id", sort=False)[model_cols].first()
    long = agg.reset_index().melt(id_vars=keys, value_vars=metrics, var_name="metric", value_name="value")
    long = long.merge(meta.reset_index(), on="model_id", how="left")
    if "step" not in long:
        long["step"] = np.nan
    return check_ladder(long[LADDER_COLUMNS], source="ladder_from_store")
