"""Selecting checkpoints: the one rule for "the final checkpoint of each run (or each size)".

Every stage that compares model sizes at the end of training (mass fits, backtests, emergence curves, the
demo's checks, ladder tables' final values) calls :func:`final_checkpoints`, so they all agree on which
checkpoint is "final" and on how ties are broken.

The rule
--------
Rows are grouped into runs (see ``by``). Within a run, checkpoints are ordered by ``tokens`` (D, training
tokens), then ``step``, then ``model_id`` (string order); the last one is the run's final checkpoint. So the
checkpoint with the most tokens wins; among checkpoints with the same tokens the one with the largest step;
if that still ties, the largest ``model_id``. Missing ``tokens``/``step`` sort first (a checkpoint with a
known count beats one without). Exactly one checkpoint per run is kept, and all rows of that checkpoint
(every task, metric, item, choice) are returned.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from capscale.errors import InputError, UsageError

__all__ = ["final_checkpoints", "run_keys", "By"]

By = Literal["run", "params", "auto"]


def _run_column(df: pd.DataFrame) -> pd.Series:
    if "run" in df.columns:
        return df["run"].astype(str)
    return df["model_id"].astype(str).str.split("@").str[0]


def _resolve_by(meta: pd.DataFrame, by: By) -> str:
    if by not in ("run", "params", "auto"):
        raise UsageError(f"by must be 'run', 'params' or 'auto', not {by!r}")
    if by != "auto":
        return by
    # "auto": runs when they are identifiable (a run with several checkpoints, or no step information);
    # otherwise, as in a store whose model ids carry no "@step" suffix, the checkpoints of one size.
    one_per_run = _run_column(meta).groupby(_run_column(meta)).size().max() <= 1
    has_steps = "step" in meta.columns and meta["step"].notna().all()
    if one_per_run and has_steps and "params" in meta.columns and meta["params"].nunique() >= 2:
        return "params"
    return "run"


def run_keys(df: pd.DataFrame, by: By = "run") -> pd.Series:
    """The run each row belongs to, as a string Series aligned with ``df``.

    Parameters
    ----------
    df : pandas.DataFrame
        A score store or a ladder table (needs ``model_id``; ``params`` for ``by="params"``).
    by : {"run", "params", "auto"}
        ``"run"``: the ``run`` column if present, else ``model_id`` up to its first ``@`` (ladder tables name
        checkpoints ``<run>@step<k>``). ``"params"``: one run per model size, ``(family, params)`` (``params``
        alone without a ``family`` column). ``"auto"``: ``"run"`` unless every run has a single checkpoint, all
        rows have a ``step`` and there are several sizes; then ``"params"``.
    """
    meta = df.drop_duplicates("model_id")
    how = _resolve_by(meta, by)
    if how == "run":
        return _run_column(df)
    if "params" not in df.columns:
        raise InputError("final checkpoints by size need a 'params' column")
    key = df["params"].astype(str)
    if "family" in df.columns:
        key = df["family"].astype(str) + "\x1f" + key
    return key


def final_checkpoints(df: pd.DataFrame, by: By = "run") -> pd.DataFrame:
    """The rows of the final checkpoint of every run (see the module docstring for the rule and its ties).

    Parameters
    ----------
    df : pandas.DataFrame
        A score store or a ladder table, with columns ``model_id`` and ``tokens`` (optional ``step``,
        ``run``, ``family``, ``params``).
    by : {"run", "params", "auto"}
        How rows are grouped into runs (:func:`run_keys`).

    Returns
    -------
    pandas.DataFrame
        The rows of ``df`` whose ``model_id`` is the final checkpoint of its run, in ``df``'s order and with
        its index.
    """
    if df.empty:
        return df
    if "model_id" not in df.columns:
        raise InputError("final checkpoints need a 'model_id' column")
    cols = [c for c in ("model_id", "run", "family", "params", "tokens", "step") if c in df.columns]
    meta = df[cols].drop_duplicates("model_id").copy()
    meta["_run"] = run_keys(meta, by).to_numpy()
    order = [c for c in ("tokens", "step") if c in meta.columns]
    for c in order:
        meta[c] = pd.to_numeric(meta[c], errors="coerce")
    meta = meta.sort_values(["_run", *order, "model_id"], kind="stable", na_position="first")
    last = set(meta.groupby("_run", sort=False)["model_id"].last())
    return df[df["model_id"].isin(last)]
