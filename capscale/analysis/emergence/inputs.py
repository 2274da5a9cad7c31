"""Inputs of the emergence report: per-item score matrices from a score store, or aggregate curves from a ladder.

Two kinds of input reach :func:`capscale.analysis.emergence.analyse`:

* :class:`TaskInput` with ``items`` — per-item scores (one ``(n_rows, n_items)`` matrix per metric)
  built from :func:`capscale.analysis.chain.compute` output by :func:`from_items`, or from arrays by
  :func:`from_arrays`. Everything in emergence.md §9 can be computed.
* :class:`TaskInput` with ``agg`` — one value and standard error per model and metric (a ladder
  table, e.g. Pythia's eval JSONs) built by :func:`from_ladder`. Per-item statistics are not
  available (see the package docstring).

Guards (emergence.md §9.8) applied here, each recorded in ``TaskInput.guards``: models not sorted by
compute are sorted; tied compute is treated as seeds of one size (averaged; hierarchical bootstrap);
items with a NaN/inf score for any model or missing for some model are excluded and counted;
non-positive or non-finite compute raises ``ValueError`` naming the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from capscale.data import select as _select
from capscale.errors import InputError

__all__ = ["TaskInput", "from_items", "from_arrays", "from_ladder", "drop_nonfinite_items", "final_only",
           "CHAIN_TO_METRIC",
           "DISCRETE", "BOUNDED"]

#: chain.compute column -> emergence metric name (emergence.md §9.2).
CHAIN_TO_METRIC = {
    "acc_first": "acc",
    "acc_norm": "acc_norm",
    "acc_bytes": "acc_bytes",
    "target_is_greedy": "exact_match_greedy",
    "log_p_vocab_correct": "logp_vocab",
    "neg_bpb": "neg_bpb",
    "p_choices_correct": "p_choices",
    "brier": "neg_brier",  # negated
    "choice_logodds": "choice_logodds",
    "margin": "margin",
}
#: Discrete metrics (0/1 per item).
DISCRETE = ("acc", "acc_norm", "acc_bytes", "exact_match_greedy")
#: Bounded metrics normalised to chance = 0, perfect = 1 for shape statistics and sigmoid/hinge fits.
BOUNDED = DISCRETE + ("p_choices", "neg_brier")


@dataclass
class TaskInput:
    """One task x family, ready for :func:`capscale.analysis.emergence.analyse`.

    Attributes
    ----------
    task, family : str
    model_ids : list of str
        One label per size (group of tied-compute rows), sorted by compute.
    x : ndarray (n,)
        log10 compute (FLOPs) per size.
    group : ndarray (n_rows,)
        Size index of every row of the item matrices (several rows = seeds).
    items : dict metric -> ndarray (n_rows, n_items), optional
        Per-item scores, higher is better (Brier negated).
    n_choices : ndarray (n_items,), optional
    agg : dict metric -> (y, se), optional
        Aggregate-only input: per-size value and standard error.
    chance : dict metric -> float
        Chance level per metric in raw units (aggregate input; item input derives it from ``n_choices``).
    guards, exclusions : list / dict
        What the guards did (reported in the JSON).
    """

    task: str
    family: str
    model_ids: list[str]
    x: np.ndarray
    group: np.ndarray
    items: dict[str, np.ndarray] | None = None
    n_choices: np.ndarray | None = None
    agg: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    chance: dict[str, float] = field(default_factory=dict)
    guards: list[str] = field(default_factory=list)
    exclusions: dict[str, int] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    row_ids: list[str] = field(default_factory=list)

    @property
    def n_models(self) -> int:
        return len(self.x)

    @property
    def n_items(self) -> int | None:
        if self.items:
            return int(next(iter(self.items.values())).shape[1])
        return None


def _check_compute(compute: np.ndarray, ids: list[str], where: str) -> None:
    bad = ~np.isfinite(compute) | (compute <= 0)
    if bad.any():
        names = [ids[i] for i in np.flatnonzero(bad)[:10]]
        raise ValueError(f"{where}: compute (FLOPs) must be positive and finite; bad for model(s) {names}")


def _groups(compute: np.ndarray, ids: list[str], guards: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Order rows by compute and group tied compute. Returns (row order, group per ordered row, labels)."""
    if np.any(np.diff(compute) < 0):
        guards.append("models were not sorted by compute; sorted by compute (FLOPs) before analysis")
    order = np.argsort(compute, kind="stable")
    c = compute[order]
    uniq, grp = np.unique(c, return_inverse=True)
    labels = []
    for g in range(len(uniq)):
        members = [ids[order[i]] for i in np.flatnonzero(grp == g)]
        labels.append(members[0] if len(members) == 1 else "+".join(members))
        if len(members) > 1:
            guards.append(f"tied compute {uniq[g]:.4g} FLOPs for {members}: treated as seeds of one size "
                          f"(averaged; hierarchical bootstrap over seeds then items)")
    return order, grp, labels


def from_arrays(task: str, family: str, model_ids: list[str], compute: np.ndarray,
                scores: dict[str, np.ndarray], n_choices: np.ndarray | None = None) -> TaskInput:
    """Build a :class:`TaskInput` from per-item score matrices.

    Parameters
    ----------
    model_ids : list of str, length n_rows
    compute : array (n_rows,)
        Training compute in FLOPs (any order; ties = seeds).
    scores : dict metric -> array (n_rows, n_items)
        Per-item scores with metric names of emergence.md §9.2 (``acc``, ``choice_logodds``,
        ``logp_vocab`` [nats], ``p_choices``, ``neg_brier``, ``margin``, ...), higher is better.
        Items with a non-finite score in any metric or model are excluded and counted.
    n_choices : array (n_items,), optional
        Number of choices per item (for chance levels); without it chance is unknown.
    """
    compute = np.asarray(compute, dtype=np.float64)
    ids = [str(m) for m in model_ids]
    dup = sorted({m for m in ids if ids.count(m) > 1})
    if dup:
        raise InputError(f"task {task!r}: model id(s) {dup[:10]} appear more than once; give each model (or "
                         f"seed) its own id")
    _check_compute(compute, ids, f"task {task!r}")
    guards: list[str] = []
    order, grp, labels = _groups(compute, ids, guards)
    mats = {}
    for k, v in scores.items():
        a = np.asarray(v, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != len(ids):
            raise ValueError(f"task {task!r}: scores[{k!r}] must have shape (n_models={len(ids)}, n_items), "
                             f"got {a.shape}")
        mats[k] = a[order]
    exclusions: dict[str, int] = {}
    if mats:
        shapes = {v.shape[1] for v in mats.values()}
        if len(shapes) != 1:
            raise ValueError(f"task {task!r}: metrics have different numbers of items {sorted(shapes)}")
        bad = np.zeros(next(iter(mats.values())).shape[1], dtype=bool)
        for v in mats.values():
            bad |= ~np.isfinite(v).all(axis=0)
        if bad.any():
            exclusions["items_nonfinite_or_missing"] = int(bad.sum())
            guards.append(f"{int(bad.sum())} item(s) with a NaN/inf or missing score for some model were "
                          f"excluded (of {len(bad)})")
            mats = {k: v[:, ~bad] for k, v in mats.items()}
            if n_choices is not None:
                n_choices = np.asarray(n_choices)[~bad]
    xs = np.log10(np.unique(compute[order]))
    return TaskInput(task=task, family=family, model_ids=labels, x=xs, group=grp, items=mats,
                     n_choices=None if n_choices is None else np.asarray(n_choices, dtype=np.float64),
                     guards=guards, exclusions=exclusions, row_ids=[ids[i] for i in order])


def final_only(store_df: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """Keep, per run, only its final checkpoint (a store with several checkpoints per size).

    The run is the ``run`` column if present, else the model size (one training run per size); the rule and its
    ties are :func:`capscale.data.select.final_checkpoints`. Returns the filtered store and a note (None when
    nothing was removed).
    """
    out = _select.final_checkpoints(store_df, by="run" if "run" in store_df.columns else "params")
    if len(out) == len(store_df):
        return store_df, None
    n0 = store_df["model_id"].nunique()
    return out, (f"kept the final checkpoint (most tokens) of each run: {out['model_id'].nunique()} of {n0} "
                 f"checkpoints (use --steps all for every checkpoint)")


def drop_nonfinite_items(store_df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Remove every row of an item (task, doc_id) that has a NaN/inf loglik for any model or choice.

    Returns the cleaned store and the number of items removed per task (the NaN guard of §9.8, applied
    before :func:`capscale.analysis.chain.compute`, which needs finite log-likelihoods).
    """
    bad = ~np.isfinite(pd.to_numeric(store_df["loglik"], errors="coerce").to_numpy(dtype=np.float64))
    if not bad.any():
        return store_df, {}
    keys = store_df.loc[bad, ["task", "doc_id"]].drop_duplicates()
    counts = keys.groupby("task").size().astype(int).to_dict()
    idx = pd.MultiIndex.from_frame(store_df[["task", "doc_id"]])
    drop = idx.isin(pd.MultiIndex.from_frame(keys))
    return store_df[~drop], {str(k): int(v) for k, v in counts.items()}


def from_items(items: pd.DataFrame, task: str, family: str | None = None, *, ties: str = "first") -> TaskInput:
    """Build a :class:`TaskInput` from :func:`capscale.analysis.chain.compute` output for one task (and family).

    ``ties="first"`` (lm-eval, default) uses ``acc_first`` as ``acc``; ``"fractional"`` uses chain's
    fractional-tie ``acc``. Metrics whose column is absent or entirely NaN are recorded as unavailable.
    """
    d = items[items["task"] == task]
    if family is not None:
        d = d[d["family"] == family]
    if d.empty:
        raise ValueError(f"no items for task {task!r}" + (f" and family {family!r}" if family else ""))
    fam = family if family is not None else "+".join(sorted(d["family"].astype(str).unique()))
    mcols = d.groupby("model_id", sort=False)["compute"].agg(["first", "nunique"])
    if (mcols["nunique"] > 1).any():
        bad = mcols.index[mcols["nunique"] > 1].tolist()[:10]
        raise ValueError(f"task {task!r}: model(s) {bad} have several compute values")
    dup = d.duplicated(["model_id", "doc_id"], keep=False)
    if dup.any():
        ex = d.loc[dup, ["model_id", "doc_id"]].drop_duplicates().head(5).to_dict("records")
        raise InputError(f"task {task!r}: {int(dup.sum())} per-item rows share a (model_id, doc_id) with another "
                         f"row, e.g. {ex}; one row per model and item is expected (the same checkpoint stored "
                         f"twice?)")
    model_order = list(mcols.index)
    compute = mcols["first"].to_numpy(dtype=np.float64)
    mapping = dict(CHAIN_TO_METRIC)
    if ties == "fractional":
        mapping.pop("acc_first")
        mapping["acc"] = "acc"
    elif ties != "first":
        raise ValueError(f"ties must be 'first' or 'fractional', got {ties!r}")
    unavailable = {}
    scores = {}
    doc_index = pd.Index(pd.unique(d["doc_id"]))
    for col, name in mapping.items():
        if col not in d.columns or d[col].isna().all():
            unavailable[name] = f"column {col!r} absent or empty in the per-item table (store lacks the inputs)"
            continue
        piv = d.pivot(index="model_id", columns="doc_id", values=col).reindex(index=model_order, columns=doc_index)
        v = piv.to_numpy(dtype=np.float64)
        scores[name] = -v if col == "brier" else v
    kk = d.groupby("doc_id")["n_choices"].first().reindex(doc_index).to_numpy(dtype=np.float64) \
        if "n_choices" in d.columns else None
    ti = from_arrays(task, fam, model_order, compute, scores, kk)
    ti.unavailable.update(unavailable)
    return ti


#: ladder metric -> (emergence metric, transform to "higher is better" in the emergence metric's units).
LADDER_METRICS: dict[str, tuple[str, str]] = {
    "acc": ("acc", "identity"),
    "acc_norm": ("acc_norm", "identity"),
    "acc_bytes": ("acc_bytes", "identity"),
    "exact_match": ("exact_match_greedy", "identity"),
    "ppl": ("logp_vocab", "neg_log"),        # lm-eval ppl = exp(−mean loglik): logp_vocab = −ln ppl
    "task_loss": ("logp_vocab", "neg"),      # mean NLL of the gold (nats); used when ppl is absent
    "task_bpb": ("neg_bpb", "neg"),
    "p_choices": ("p_choices", "identity"),
    "brier": ("neg_brier", "neg"),
}


def from_ladder(ladder: pd.DataFrame, family: str, task: str, *, steps: str = "final",
                chance: dict[str, float] | None = None) -> TaskInput:
    """Build an aggregate-only :class:`TaskInput` from a long ladder table.

    Parameters
    ----------
    ladder : DataFrame
        Columns ``model_id, family, params, tokens, compute, step, task, metric, value`` and the
        standard error either in a ``stderr`` column or as rows with metric ``<metric>_stderr``.
        ``ppl`` (perplexity of the target, lm-eval's exp(−mean loglik)) becomes ``logp_vocab`` =
        −ln ppl [nats] with SE ≈ ppl_stderr/ppl (delta method).
    steps : {"final", "all"}
        ``final`` keeps, for every model size (``params``), only its largest training step;
        ``all`` keeps every checkpoint as a point (intermediate checkpoints are mid-schedule).
    chance : dict metric -> chance level (raw units), optional
    """
    d = ladder[(ladder["family"] == family) & (ladder["task"] == task)].copy()
    if d.empty:
        raise ValueError(f"ladder has no rows for family {family!r} and task {task!r}")
    if "compute" not in d.columns or d["compute"].isna().any():
        d["compute"] = 6.0 * d["params"].astype(float) * d["tokens"].astype(float)
    guards: list[str] = []
    d["_mid"] = d["model_id"].astype(str)
    if "step" in d.columns and d["step"].notna().any() and not d["_mid"].str.contains("@").any():
        d["_mid"] = d["_mid"] + "@step" + d["step"].astype("Int64").astype(str)
    if steps == "final":
        run = d["run"].astype(str) if "run" in d.columns else d["_mid"].str.split("@").str[0]
        d["_run"] = run
        key = d["tokens"].astype(float) + (d["step"].fillna(0).astype(float) * 1e-30 if "step" in d else 0.0)
        last_key = key.groupby(d["_run"]).transform("max")
        n_before = d["_mid"].nunique()
        d = d[key == last_key]
        n_after = d["_mid"].nunique()
        if n_after < n_before:
            guards.append(f"kept the final checkpoint (most tokens) of each run: {n_after} of {n_before} checkpoints")
    elif steps != "all":
        raise ValueError(f"steps must be 'final' or 'all', got {steps!r}")
    metric = d["metric"].astype(str)
    is_se = metric.str.endswith("_stderr")
    vals = d[~is_se]
    ses = d[is_se].assign(metric=metric[is_se].str[: -len("_stderr")])
    models = vals.groupby("_mid")["compute"].first()
    ids = list(models.index)
    compute = models.to_numpy(dtype=np.float64)
    _check_compute(compute, ids, f"family {family!r} task {task!r}")
    order, grp, labels = _groups(compute, ids, guards)
    ids_sorted = [ids[i] for i in order]
    agg: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    unavailable: dict[str, str] = {}
    exclusions: dict[str, int] = {}
    for raw, (name, how) in LADDER_METRICS.items():
        v = vals[vals["metric"] == raw]
        if v.empty or name in agg:
            continue
        y = v.groupby("_mid")["value"].mean().reindex(ids_sorted).to_numpy(dtype=np.float64)
        if "stderr" in v.columns and v["stderr"].notna().any():
            se = v.groupby("_mid")["stderr"].mean().reindex(ids_sorted).to_numpy(dtype=np.float64)
        else:
            s = ses[ses["metric"] == raw]
            se = s.groupby("_mid")["value"].mean().reindex(ids_sorted).to_numpy(dtype=np.float64)
        if how == "neg_log":
            se = se / y
            y = -np.log(y)
        elif how == "neg":
            y = -y
        if not np.isfinite(se).any():
            guards.append(f"{name}: no standard errors in the ladder table (column 'stderr' or rows "
                          f"'{raw}_stderr'): no bootstrap, point statistics only")
        bad = ~np.isfinite(y) | (~np.isfinite(se) & np.isfinite(se).any())
        if bad.any():
            missing = [ids_sorted[i] for i in np.flatnonzero(bad)]
            exclusions[f"{name}_models_missing_or_nonfinite"] = int(bad.sum())
            unavailable[name] = f"value or stderr missing/non-finite for model(s) {missing}"
            continue
        # average seeds (tied compute) per size
        ng = len(labels)
        ym = np.array([y[grp == g].mean() for g in range(ng)])
        sem = np.array([np.sqrt((se[grp == g] ** 2).sum()) / (grp == g).sum() for g in range(ng)])
        agg[name] = (ym, sem)
    if not agg:
        present = sorted(vals["metric"].astype(str).unique())
        unavailable["all"] = f"no accuracy-type metric among {present}"
    xs = np.log10(np.unique(compute[order]))
    return TaskInput(task=task, family=family, model_ids=labels, x=xs, group=grp, agg=agg,
                     chance=dict(chance or {}), guards=guards, exclusions=exclusions, unavailable=unavailable,
                     row_ids=ids_sorted)
