"""``capscale backtest``: leave-largest-out backtests over many tasks, with their tables and figures.

:func:`run` (and :func:`run_backtests` under it) calls :func:`capscale.analysis.predict.backtest` for each task:
fit on the ladder without its largest runs, predict each held-out run's final value with a 90% interval.
With ``out`` it writes ``<name>.csv``, ``<name>.json`` and a figure ``<name>_<task>.png`` per task (the fit's
runs, the held-out actual values, and each method's prediction with its interval, against compute 6·N·D in
FLOPs). Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from capscale._io import atomic_write, dumps_json, write_json
from capscale.analysis import predict
from capscale.data.store import TaskReader
from capscale.errors import UsageError
from capscale.pipelines._base import RunResult, StageOptions
from capscale.pipelines.fit import parse_chance, parse_tasks, predictor_options, select_tasks
from capscale.plotting.predict import plot_backtest

__all__ = ["Options", "run", "run_backtests", "summarize_backtests", "backtest_table", "BACKTEST_KEYS"]

#: The keys every backtest row has (the JSON contract of ``capscale backtest --json``).
BACKTEST_KEYS = ["task", "method", "heldout_model", "predicted", "actual", "abs_err", "lower", "upper", "verdict"]


@dataclass(frozen=True)
class Options(StageOptions):
    """Settings of ``capscale backtest``.

    Attributes
    ----------
    tasks : tuple of str
        Tasks to backtest (checked against the ladder).
    all_tasks : bool
        Instead: every task with an ``acc`` or ``acc_norm`` metric.
    metric : str, optional
        Accuracy metric (default per task: its ``acc``, else ``acc_norm``).
    method : str
        A name of :data:`capscale.analysis.predict.METHODS`, ``"auto"`` or ``"all"``.
    holdout : "largest", int or str
        Hold out the runs of the K largest sizes, or the runs a query over the ladder's columns selects
        (``compute>8.4e22``, ``multiplier<1``, ``family=='xglm'``; :func:`capscale.analysis.predict.split_holdout`).
    fit : str, optional
        A query that restricts the training rows (``tokens<=4e10``); default every row not held out.
    fit_loss, fit_link : str, optional
        Queries selecting, among the training rows, those the chained methods' loss step and link step are fitted
        on (``params<=1.2e9``; default all of them for both).
    bootstrap : int
        Bootstrap resamples over ladder runs.
    seed : int
        Random seed.
    loss_task, loss_metric : str, optional
        The loss to chain through where a task has none.
    chance : dict of str to float, optional
        Chance accuracy per task (CLI ``--chance TASK=P,...``) for tasks the ladder and capscale's table do not know.
    given : {"compute", "scores"}, optional
        ``observational``: predict each held-out model from its (family, N, D) only, or also from its scores on the
        other tasks (CLI ``--given``); default the method's (``compute``).
    out : str, optional
        Folder for ``<name>.csv``, ``<name>.json`` and the figures (nothing is written without it).
    name : str
        File stem of the outputs.
    progress : bool
        Show a progress bar over tasks.
    """

    tasks: tuple[str, ...] = ()
    all_tasks: bool = False
    metric: str | None = None
    method: str = "auto"
    holdout: str | int = "largest"
    fit: str | None = None
    fit_loss: str | None = None
    fit_link: str | None = None
    bootstrap: int = 50
    seed: int = 0
    loss_task: str | None = None
    loss_metric: str | None = None
    chance: dict[str, float] | None = None
    given: str | None = None
    out: str | None = None
    name: str = "backtest"
    progress: bool = False

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **overrides: Any) -> Options:
        """Options from ``capscale backtest`` arguments (``--task`` split at commas, ``--holdout`` an integer K,
        ``largest`` or a query, ``--name`` defaulting to ``backtest``)."""
        holdout = str(getattr(args, "holdout", "largest") or "largest").strip()
        if holdout.lstrip("-").isdigit():
            holdout = int(holdout)
            if holdout < 1:
                raise UsageError(f"--holdout {holdout}: K must be a positive integer")
        conv: dict[str, Any] = {"tasks": parse_tasks(getattr(args, "task", None)), "holdout": holdout,
                                "chance": parse_chance(getattr(args, "chance", None)),
                                "name": getattr(args, "name", None) or "backtest"}
        return super().from_cli(args, **{**conv, **overrides})

    def predictor_options(self) -> dict[str, Any]:
        """The predictor options (``bootstrap``, ``seed``, ``x_task``, ``x_metric``) these settings give."""
        kw = predictor_options(self.bootstrap, self.seed, self.loss_task, self.loss_metric, self.chance,
                               self.fit_loss, self.fit_link)
        if self.given is not None:
            kw["given"] = self.given
        return kw


def run(ladder: pd.DataFrame, options: Options, store: pd.DataFrame | TaskReader | None = None) -> RunResult:
    """Backtest ``options.method`` on the tasks of ``options`` (see the module docstring).

    Parameters
    ----------
    ladder : pandas.DataFrame
        Ladder table (see :mod:`capscale.data.ladder_table`), with the runs to hold out.
    options : Options
        The settings.
    store : pandas.DataFrame or capscale.data.store.TaskReader, optional
        The per-choice store behind the ladder (needed by ``mass``); a ``TaskReader`` is read one task at a time.

    Returns
    -------
    RunResult
        ``summary``: ``tasks``, ``method``, ``n_predictions``, ``mae`` (mean absolute error, as a fraction),
        ``coverage_90`` (share of actual values inside their interval) and ``rows`` (every backtest row, as
        :func:`run_backtests` returns them); ``tables["backtest"]``: the CSV table; ``notes``: the methods whose
        fit failed (``method="all"``), with the reason.
    """
    tasks = select_tasks(ladder, options.tasks, options.all_tasks)
    rows = run_backtests(ladder, tasks, options.method, holdout=options.holdout, store=store, fit=options.fit,
                         metric=options.metric, progress=options.progress, **options.predictor_options())
    out = Path(options.out) if options.out is not None else None
    files = _write(rows, ladder, tasks, out, options.name) if out is not None else []
    df = pd.DataFrame(rows)
    cov = df["covered"].dropna() if "covered" in df else pd.Series(dtype=float)
    summary = {"tasks": tasks, "method": options.method, "n_predictions": len(rows),
               "mae": float(df["abs_err"].mean()) if len(df) else float("nan"),
               "coverage_90": float(cov.mean()) if len(cov) else float("nan"), "rows": rows}
    notes = [f"{r['task']} / {r['method']}: {'; '.join(r['warnings'])}" for r in rows if r["heldout_model"] is None]
    return RunResult(stage="backtest", out=out, files=files, summary=summary, tables={"backtest": backtest_table(rows)},
                     notes=notes)


def backtest_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as the ``<name>.csv`` table: warnings counted (``n_warnings``), CV scores as compact JSON."""
    df = pd.DataFrame(rows)
    full = df.drop(columns=[c for c in ("warnings", "cv_scores") if c in df.columns])
    if "cv_scores" in df.columns:
        full["cv_scores"] = [dumps_json(s, indent=None) if s else "" for s in df["cv_scores"]]
    full["n_warnings"] = [len(w) for w in df.get("warnings", [[]] * len(df))]
    return full


def run_backtests(ladder: pd.DataFrame, tasks: Sequence[str], method: str = "auto", *,
                  holdout: str | int = "largest", store: pd.DataFrame | TaskReader | None = None,
                  metric: str | None = None,
                  out: str | os.PathLike | None = None, name: str = "backtest", progress: bool = False,
                  fit: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """Backtest ``method`` on every task; optionally write CSV, JSON and one figure per task.

    Parameters
    ----------
    ladder : pandas.DataFrame
        Ladder table (see :mod:`capscale.data.ladder_table`).
    tasks : sequence of str
        The tasks.
    method : str
        A name of :data:`capscale.analysis.predict.METHODS`, ``"auto"`` or ``"all"``.
    holdout : "largest", int or str
        Hold out the runs with the K largest sizes, or the runs a query selects.
    store : pandas.DataFrame or capscale.data.store.TaskReader, optional
        The per-choice store behind the ladder (needed by ``mass``); a ``TaskReader`` is read one task at a time.
    fit : str, optional
        A query restricting the training rows.
    metric : str, optional
        Accuracy metric (default per task: :func:`capscale.analysis.predict.default_metric`).
    out : path-like, optional
        Folder for ``<name>.csv``, ``<name>.json`` and ``<name>_<task>.png``.
    name : str
        File stem of the outputs.
    progress : bool
        Show a progress bar over tasks.
    **options
        Predictor options for :func:`capscale.analysis.predict.backtest` (``bootstrap``, ``seed``, ``x_task``, ...).

    Returns
    -------
    list of dict
        One row per (task, method, held-out run) with at least :data:`BACKTEST_KEYS`, plus ``metric``.
    """
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    for task in tqdm(list(tasks), desc="backtest", disable=not progress):
        m = predict.default_metric(ladder, task, metric)
        sto = store.read_task(task) if isinstance(store, TaskReader) else store  # one task's rows at a time
        res = predict.backtest(ladder, task, method, holdout=holdout, store=sto, metric=m, fit=fit, **options)
        for r in res:
            r["metric"] = m
        rows += res
    if out is not None:
        _write(rows, ladder, tasks, Path(out), name)
    return rows


def _write(rows: list[dict[str, Any]], ladder: pd.DataFrame, tasks: Sequence[str], outdir: Path,
           name: str) -> list[Path]:
    """Write ``<name>.csv``, ``<name>.json`` and a figure per task with rows; returns the paths written."""
    outdir.mkdir(parents=True, exist_ok=True)
    full = backtest_table(rows)
    files = [atomic_write(outdir / f"{name}.csv", lambda tmp: full.to_csv(tmp, index=False, float_format="%.6g")),
             write_json(outdir / f"{name}.json", rows)]
    for task in tasks:
        sub = [r for r in rows if r["task"] == task]
        if sub:
            files.append(Path(plot_backtest(sub, ladder, task, sub[0]["metric"], outdir / f"{name}_{task}.png")))
    return files


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
