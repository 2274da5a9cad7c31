"""From a ladder table to per-run trajectories: the data every prediction method and law fit reads.

A *run* is one training run of the ladder (its checkpoints, in training order). Checkpoints are ordered
as :func:`capscale.data.select.final_checkpoints` orders them (``tokens``, then ``step``, then ``model_id``;
missing counts first), so the last checkpoint of a run is the one that rule calls final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from capscale.analysis.predict._base import MethodNotApplicable
from capscale.data.ladder_table import UNIT_METRICS, run_of
from capscale.errors import InputError, UsageError

__all__ = ["Run", "CHECKPOINT_ORDER", "default_metric", "loss_metric", "extract_runs", "auto_window",
           "final_value", "moving_average", "step2_points", "step2_parts", "sort_checkpoints", "QUERY_COLUMNS",
           "query_rows"]

#: Metrics that are losses a chained method can go through.
LOSS_METRICS = ("task_bpb", "task_loss", "val_loss")
#: Sort keys that put each run's checkpoints in training order (the order of ``final_checkpoints``).
CHECKPOINT_ORDER = ["run", "tokens", "step", "model_id"]


#: Columns a holdout or fit query can use (``multiplier`` = tokens / params, the token multiplier).
QUERY_COLUMNS = ("params", "tokens", "compute", "multiplier", "family", "model_id", "run", "step")


def query_rows(ladder: pd.DataFrame, query: str, *, what: str = "--holdout") -> np.ndarray:
    """Boolean mask of the rows of ``ladder`` that the pandas ``query`` expression selects.

    The expression sees the ladder's columns plus ``multiplier`` = tokens / params (:data:`QUERY_COLUMNS`), e.g.
    ``compute > 8.4e22``, ``multiplier >= 50``, ``family == 'xglm'``, ``tokens <= 4e10``.

    Parameters
    ----------
    ladder : pandas.DataFrame
        A ladder table.
    query : str
        The expression.
    what : str
        The option the query came from (``--holdout``, ``--fit``, ``--fit-loss``), named in errors.

    Returns
    -------
    numpy.ndarray of bool
        One entry per row of ``ladder``.

    Raises
    ------
    capscale.errors.UsageError
        The expression does not parse or names an unknown column (the message lists the columns).
    """
    df = ladder.assign(multiplier=ladder["tokens"] / ladder["params"])
    if "run" not in df.columns:
        df = df.assign(run=run_of(df))
    try:
        mask = df.eval(query, engine="python")
    except Exception as e:  # pandas raises UndefinedVariableError, SyntaxError, TypeError, ...
        raise UsageError(f"{what} {query!r} is not a valid query over the ladder ({type(e).__name__}: {e}); columns: "
                         f"{list(QUERY_COLUMNS)}") from e
    if not (isinstance(mask, pd.Series) and mask.dtype == bool):
        raise UsageError(f"{what} {query!r} is not a true/false condition on rows (e.g. 'compute > 8.4e22')")
    return mask.to_numpy()


@dataclass
class Run:
    """One ladder run of a task.

    Attributes
    ----------
    run : str
        The run's name.
    params : float
        N, parameters.
    tokens : numpy.ndarray
        D, training tokens of each checkpoint, in training order.
    y : numpy.ndarray
        The metric at each checkpoint (accuracy: a fraction in [0, 1]).
    x : numpy.ndarray or None
        The task loss at each checkpoint (aligned with ``y``), when a loss was asked for.
    """

    run: str
    params: float
    tokens: np.ndarray
    y: np.ndarray
    x: np.ndarray | None


def sort_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of a ladder (with a ``run`` column) in training order within each run, runs in name order."""
    return df.sort_values([c for c in CHECKPOINT_ORDER if c in df.columns], kind="stable", na_position="first")


def default_metric(ladder: pd.DataFrame, task: str, metric: str | None = None) -> str:
    """The metric to predict: ``metric`` if given, else the task's ``acc``, else its ``acc_norm``.

    Raises
    ------
    capscale.errors.InputError
        Neither ``acc`` nor ``acc_norm`` rows exist for ``task`` (the message lists its metrics).
    """
    if metric:
        return metric
    have = set(ladder.loc[ladder["task"] == task, "metric"])
    for m in ("acc", "acc_norm"):
        if m in have:
            return m
    raise InputError(f"task {task!r} has no acc or acc_norm rows; give --metric (metrics: {sorted(have)})")


def final_value(v: np.ndarray, window: int) -> float:
    """Mean of the last ``window`` values of a trajectory (the run's final value)."""
    return float(np.mean(v[-window:]))


def moving_average(v: np.ndarray, w: int = 5) -> np.ndarray:
    """Trailing moving average over ``w`` values that keeps the length (the first values average the prefix)."""
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - w, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def loss_metric(ladder: pd.DataFrame, task: str, x_task: str | None, x_metric: str | None) -> tuple[str, str]:
    """The (task, metric) of the loss a chained method goes through for ``task``.

    Parameters
    ----------
    ladder : pandas.DataFrame
        The ladder table.
    task : str
        The task predicted.
    x_task, x_metric : str, optional
        An explicit loss (CLI ``--loss-task`` / ``--loss-metric``); by default the task's own ``task_bpb``,
        else its ``task_loss``, else the ladder's only loss when it has exactly one (Pythia's LAMBADA loss);
        with ``x_task`` alone, that task's ``task_bpb``, ``task_loss`` or ``val_loss``.

    Raises
    ------
    MethodNotApplicable
        No such loss in the ladder, or several and none named (the message lists them).
    """
    if x_metric is not None:
        return (x_task or task), x_metric
    tm = ladder.loc[ladder["task"] == task, "metric"].unique()
    for m in ("task_bpb", "task_loss"):
        if m in tm:
            return task, m
    if x_task is not None:
        xm = ladder.loc[ladder["task"] == x_task, "metric"].unique()
        for m in ("task_bpb", "task_loss", "val_loss"):
            if m in xm:
                return x_task, m
        raise MethodNotApplicable(f"x_task {x_task!r} has no task_bpb, task_loss or val_loss rows in the ladder")
    losses = sorted({(str(t), str(m)) for t, m in ladder.loc[ladder["metric"].isin(LOSS_METRICS), ["task", "metric"]]
                     .drop_duplicates().itertuples(index=False)})
    if len(losses) == 1:
        return losses[0]  # the ladder's only loss (e.g. LAMBADA's for Pythia): chained methods go through it
    if not losses:
        raise MethodNotApplicable(f"task {task!r} has no task loss (task_bpb or task_loss) and the ladder has no loss "
                                  "at all (task_bpb, task_loss, val_loss): chained methods need one")
    raise MethodNotApplicable(f"task {task!r} has no task loss of its own and the ladder has {len(losses)} losses "
                              f"{losses[:8]}: say which to chain through with x_task/x_metric (CLI --loss-task "
                              "TASK [--loss-metric METRIC])")


def extract_runs(ladder: pd.DataFrame, task: str, metric: str, xt: tuple[str, str] | None) -> list[Run]:
    """The runs of ``task``/``metric``, in run-name order, each with its checkpoints in training order.

    Parameters
    ----------
    ladder : pandas.DataFrame
        The ladder table (a missing ``run`` column is derived from ``model_id``).
    task, metric : str
        The trajectory ``y``.
    xt : (task, metric), optional
        The loss ``x``; only checkpoints that have both values are kept.

    Raises
    ------
    capscale.errors.InputError
        No rows for ``task``/``metric`` (the message lists the task's metrics, or the ladder's tasks), or a value
        of a fraction metric (:data:`~capscale.data.ladder_table.UNIT_METRICS`) outside [0, 1] or not finite.
    """
    if "run" not in ladder.columns or ladder["run"].isna().any():
        ladder = ladder.assign(run=run_of(ladder))
    sub = ladder[(ladder["task"] == task) & (ladder["metric"] == metric)]
    if sub.empty:
        have = sorted(ladder.loc[ladder["task"] == task, "metric"].unique())
        tasks = sorted(ladder["task"].unique())
        raise InputError(f"ladder has no rows for task {task!r} and metric {metric!r}"
                         + (f"; metrics of this task: {have}" if have else f"; tasks: {tasks[:20]}"))
    vals = sub["value"].to_numpy(float)
    bad = ~np.isfinite(vals) | ((metric in UNIT_METRICS) & ((vals < 0) | (vals > 1)))
    if bad.any():
        shown = ", ".join(f"model_id={m!r} value={float(v)!r}" for m, v in
                          zip(sub["model_id"].to_numpy()[bad][:10], vals[bad][:10], strict=True))
        raise InputError(f"task {task!r}, metric {metric!r}: {int(bad.sum())} value(s) "
                         + ("outside [0, 1] or " if metric in UNIT_METRICS else "") + f"not finite: {shown}")
    y = sub[["model_id", "run", "params", "tokens", "step", "value"]]
    if xt is not None:
        xs = ladder[(ladder["task"] == xt[0]) & (ladder["metric"] == xt[1])][["model_id", "value"]]
        y = y.merge(xs.rename(columns={"value": "x"}), on="model_id", how="inner")
    y = sort_checkpoints(y)
    runs = []
    for run, g in y.groupby("run", sort=True):
        runs.append(Run(str(run), float(g["params"].iloc[0]), g["tokens"].to_numpy(float),
                        g["value"].to_numpy(float), g["x"].to_numpy(float) if xt is not None else None))
    return runs


def auto_window(runs: list[Run]) -> int:
    """5 when every run's last 5 checkpoints lie within the last 10 % of its tokens (OLMo ladder), else 1."""
    ok = all(len(r.tokens) >= 5 and r.tokens[-5] >= 0.9 * r.tokens[-1] for r in runs)
    return 5 if ok else 1


def step2_points(runs: list[Run], skip: float = 0.1, ma: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The (loss, metric) points of the OLMo ladder's step 2: per run, the first ``skip`` fraction of the
    checkpoints dropped (never the last one) and ``ma``-point trailing moving averages; runs concatenated."""
    xs, ys = [], []
    for _, x, y in step2_parts(runs, skip, ma):
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def step2_parts(runs: list[Run], skip: float = 0.1, ma: int = 5) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per run, (index of its first kept checkpoint, smoothed loss, smoothed metric) of :func:`step2_points`."""
    out = []
    for r in runs:
        if r.x is None:
            raise MethodNotApplicable(f"run {r.run!r}: step 2 needs a task loss at every checkpoint")
        s = min(math.ceil(skip * len(r.y)), len(r.y) - 1)  # never drop a run's only checkpoint
        out.append((s, moving_average(r.x[s:], ma), moving_average(r.y[s:], ma)))
    return out
