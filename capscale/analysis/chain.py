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

__all__ = ["compute", "ladder_from_store", "METRICS", "HIGHER_IS_BETTER", "CHAIN_ORDER"]

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


def compute(df: pd.DataFrame, *, validate: bool = False) -> pd.DataFrame:
    """Chain metrics per (model, task, item) from a score store.

    Parameters
    ----------
    df : pandas.DataFrame
        A score store (see :mod:`capscale.data.store`). Optional columns ``n_chars``, ``n_bytes`` and
        ``is_greedy`` enable ``acc_norm``, ``acc_bytes``/``neg_bpb`` and ``target_is_greedy``.
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

    order = np.lexsort((df["choice_idx"].to_numpy(), df["doc_id"].astype(str).to_numpy(),
                        df["task"].to_numpy(), df["model_id"].to_numpy()))
    d = df.iloc[order]
    mid = d["model_id"].to_numpy()
    task = d["task"].to_numpy()
    doc = d["doc_id"].astype(str).to_numpy() if d["doc_id"].dtype == object else d["doc_id"].to_numpy()
    n = len(d)
    if n == 0:
        return pd.DataFrame(columns=ITEM_KEYS + METRICS)
    new = np.ones(n, dtype=bool)
    new[1:] = (mid[1:] != mid[:-1]) | (task[1:] != task[:-1]) | (doc[1:] != doc[:-1])
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

    out = {
        "model_id": mid[starts],
        "task": task[starts],
        "doc_id": d["doc_id"].to_numpy()[starts],
    }
    for c in _MODEL_COLS:
        if c in d.columns:
            out[c] = d[c].to_numpy()[starts]
    out["n_choices"] = k
    out["log_p_vocab_correct"] = max_corr
    out["p_vocab_correct"] = np.exp(max_corr)
    out["log_p_choices_correct"] = lse_corr - lse_all
    out["p_choices_correct"] = np.exp(lse_corr - lse_all)
    out["acc"] = acc
    out["acc_first"] = acc_first
    if "n_chars" in d.columns and d["n_chars"].notna().all():
        nc = d["n_chars"].to_numpy(dtype=np.float64)
        if (nc <= 0).any():
            bad = d.loc[nc <= 0, ["task", "doc_id", "choice_idx"]].head(5).to_dict("records")
            raise ValueError(f"acc_norm: empty choice strings (n_chars = 0) at {bad}")
        out["acc_norm"] = _seg_acc(ll / nc, corr, starts, seg)[0]
    if "n_bytes" in d.columns and d["n_bytes"].notna().all():
        nb = d["n_bytes"].to_numpy(dtype=np.float64)
        if (nb <= 0).any():
            bad = d.loc[nb <= 0, ["task", "doc_id", "choice_idx"]].head(5).to_dict("records")
            raise ValueError(f"acc_bytes: empty choice strings (n_bytes = 0) at {bad}")
        out["acc_bytes"] = _seg_acc(ll / nb, corr, starts, seg)[0]
        # bits per byte of the (first) gold continuation
        gold_first = np.minimum.reduceat(np.where(corr, np.arange(n), n), starts)
        out["neg_bpb"] = ll[gold_first] / (nb[gold_first] * np.log(2.0))
    out["brier"] = brier
    out["log_p_vocab_incorrect"] = lse_inc
    out["log_p_vocab_choices"] = lse_all
    out["max_incorrect"] = max_inc
    out["margin"] = max_corr - max_inc
    out["choice_logodds"] = lse_corr - lse_inc
    if "is_greedy" in d.columns and d["is_greedy"].notna().all():
        g = d["is_greedy"].to_numpy(dtype=bool)
        out["target_is_greedy"] = _seg_max((g & corr).astype(np.int8), starts).astype(float)
    for extra in ("multiple_input", "task_source"):
        if extra in d.columns:
            out[extra] = d[extra].to_numpy()[starts]
    res = pd.DataFrame(out)
    sort_cols = ["task", "compute", "model_id", "doc_id"] if "compute" in res else ["task", "model_id", "doc_id"]
    return res.sort_values(sort_cols, kind="stable").reset_index(drop=True)


def ladder_from_store(store_df: pd.DataFrame) -> pd.DataFrame:
    """Build a ladder table from a score store: per (checkpoint, task) mean metrics over items.

    Metrics: ``acc`` (fractional ties), ``acc_norm`` (if ``n_chars``), ``acc_bytes`` and ``task_bpb``
    (bits per byte of the gold continuation; if ``n_bytes``), ``task_loss`` (mean negative
    log-likelihood of the gold continuation, nats per item), ``brier`` (mean over choices),
    ``p_choices`` and ``log_p_choices`` (softmax over the choices).

    Parameters
    ----------
    store_df : pandas.DataFrame
        A score store (:mod:`capscale.data.store`).

    Returns
    -------
    pandas.DataFrame
        Ladder table; ``run`` is the model_id without its ``@...`` suffix; step is NaN without a
        ``step`` column.
    """
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
