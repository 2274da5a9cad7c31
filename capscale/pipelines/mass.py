"""Run the mass stage end to end: fit, predict, compare with other methods, write tables and figures.

:func:`run_mass` is what ``capscale mass STORE --out DIR`` does, as a function of a score store and a
:class:`MassRunOptions`; the model itself lives in :mod:`capscale.analysis.mass`.

Outputs in ``opts.out``: ``mass_fits.csv`` (per-item law parameters), ``mass_predictions.csv``
(predicted vs observed acc / p_choices / Brier per model, in-sample and for the held-out largest
model), ``mass_covariation.csv`` (how correct and incorrect mass move together per task),
``mass_summary.json``, figures ``mass_{scatter,slopes,pred}_<task>.png`` and, with ``backtest``,
``mass_backtest.{csv,md}`` (leave-largest-out comparison with other :mod:`capscale.analysis.predict` methods).
Log-likelihoods in nats; compute C = 6·N·D FLOPs, x = log10 C.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from capscale._io import atomic_write_text, to_jsonable, write_json
from capscale.analysis import chain, mass
from capscale.data import store
from capscale.data.select import final_checkpoints
from capscale.errors import InputError
from capscale.pipelines._base import RunResult, StageOptions
from capscale.plotting import mass as mass_plots

__all__ = ["Options", "run"]


@dataclass(frozen=True)
class Options(StageOptions):
    """Options of :func:`run` (the flags of ``capscale mass``).

    Attributes
    ----------
    out : str
        Output folder.
    family : str, optional
        Model family (required when the store holds several).
    tasks : tuple of str, optional
        Tasks to analyse (default: every task).
    final_only : bool
        Analyse only the last checkpoint of each model size.
    linear_only : bool
        Never use the saturating form.
    draws : int
        Monte Carlo draws of the predictive distribution.
    seed : int
        Random seed of the Monte Carlo draws.
    figures : bool
        Write the PNG figures.
    backtest : str, optional
        Comma-separated :mod:`capscale.analysis.predict` methods to compare with ``mass`` (leave-largest-out).
    baseline_bootstrap : int
        Bootstrap resamples of the other methods in the backtest.
    backtest_axis : {"params", "tokens"}
        Hold out the largest size, or, within each size, the checkpoint with the most tokens.
    skip_first : int
        Drop the N earliest checkpoints of every size before fitting.
    run_from_params : bool
        In the backtest, treat all checkpoints of one size as one run.
    source : str, optional
        Where the store came from (recorded in the summary and error messages).
    command : str, optional
        The command line recorded in the backtest table.
    """

    out: str
    family: str | None = None
    tasks: tuple[str, ...] | None = None
    final_only: bool = False
    linear_only: bool = False
    draws: int = 400
    seed: int = 0
    figures: bool = True
    backtest: str | None = None
    baseline_bootstrap: int = 20
    backtest_axis: str = "params"
    skip_first: int = 0
    run_from_params: bool = False
    source: str | None = None
    command: str | None = None

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **overrides: Any) -> Options:
        """The options of ``capscale mass`` from its parsed arguments (``overrides`` win)."""
        kw: dict[str, Any] = {
            "out": args.out, "family": args.family, "tasks": tuple(args.task) if args.task else None,
            "final_only": args.final_only, "linear_only": args.linear_only, "draws": args.draws, "seed": args.seed,
            "figures": not args.no_figures, "backtest": args.backtest, "baseline_bootstrap": args.baseline_bootstrap,
            "backtest_axis": args.backtest_axis, "skip_first": args.skip_first,
            "run_from_params": args.run_from_params, "source": str(args.store), "command": None}
        kw.update(overrides)
        return cls(**kw)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


class _TaskRows:
    """The rows of a score store, task by task, from a DataFrame in memory or a store on disk.

    A store on disk is never read whole: a :class:`capscale.data.store.TaskReader` lists its models and tasks from
    the model-level columns (:func:`capscale.data.store.index`), and :meth:`rows` reads (and validates) one task's
    rows of the chosen models, opening only the files that hold them. A DataFrame is validated once, whole.
    """

    def __init__(self, scores: pd.DataFrame | str | os.PathLike, source: str | None) -> None:
        self.where = source or (str(scores) if not isinstance(scores, pd.DataFrame) else "the store")
        if isinstance(scores, pd.DataFrame):
            store.check(scores, multi_gold=True, source=source)
            self.df: pd.DataFrame | None = store.normalize(scores)
            self.path = None
            cols = [c for c in ("model_id", "family", "task", "params", "tokens", "compute", "run", "step")
                    if c in self.df.columns]
            self.meta = self.df[cols].drop_duplicates(["model_id", "task"])
        else:
            self.df, self.reader = None, store.TaskReader(scores, multi_gold=True)
            self.meta = self.reader.index.drop(columns=["file", "rows"]).drop_duplicates(["model_id", "task"])

    def rows(self, task: str, models: set[str]) -> pd.DataFrame:
        """One task's validated, normalised rows of ``models``."""
        if self.df is not None:
            return self.df[(self.df["task"] == task) & self.df["model_id"].isin(models)]
        return self.reader.restrict(models).read_task(task)


def run(scores: pd.DataFrame | str | os.PathLike, opts: Options) -> RunResult:
    """Fit, predict, compare and plot (see the module docstring), task by task.

    Parameters
    ----------
    scores : pandas.DataFrame or path-like
        A score store (``loglik`` in nats) in memory, or its path (file or shard folder). A path is read one task
        at a time (:func:`capscale.data.store.index`, then :func:`capscale.data.store.read` with ``tasks=[task]``):
        memory is bounded by the largest task, not by the store, and the results are those of the same store in
        memory. Only the selected family and tasks are validated.
    opts : Options

    Returns
    -------
    RunResult
        ``summary`` (also in ``mass_summary.json``), ``out``, ``files`` written, ``tables`` ``fits``,
        ``predictions`` and ``covariation`` (and ``backtest`` with ``opts.backtest``), and ``notes``: the printable
        report (tables of covariation, held-out predictions and the backtest).

    Raises
    ------
    capscale.errors.InputError
        Unknown family or task, several families without ``opts.family``, fewer than 2 compute values.
    capscale.data.store.StoreValidationError
        The store (or, read from disk, the selected tasks of the family) is invalid.
    """
    report: list[str] = []
    src = _TaskRows(scores, opts.source)
    meta = src.meta
    fams = sorted(meta["family"].astype(str).unique())
    fam = opts.family
    if fam is None:
        if len(fams) > 1:
            raise InputError(f"{src.where} holds several families {fams}; choose one with --family")
        fam = fams[0]
    if fam not in fams:
        raise InputError(f"family {fam!r} not in {src.where} (families: {fams})")
    meta = meta[meta["family"] == fam]
    have = sorted(meta["task"].unique())
    tasks = list(opts.tasks or []) or have
    missing = [t for t in tasks if t not in set(have)]
    if missing:
        raise InputError(f"task(s) {missing} not in family {fam!r} (tasks: {have})")
    meta = meta[meta["task"].isin(tasks)]
    if opts.skip_first:
        meta = _skip_first(meta, opts.skip_first)
    backtest_ids = set(meta["model_id"])  # the backtest gives every method every checkpoint (mass keeps each
    if opts.final_only:                   # run's final one)
        meta = final_checkpoints(meta, by="params")
    fit_ids = set(meta["model_id"])
    cfg = mass.MassConfig(n_draws=opts.draws, seed=opts.seed, allow_saturating=not opts.linear_only)
    out = opts.out
    models = (meta[["model_id", "params", "tokens", "compute"]].drop_duplicates("model_id")
              .sort_values(["compute", "model_id"], kind="stable").reset_index(drop=True))
    if models["compute"].nunique() < 2:
        raise InputError(f"family {fam!r} has {models['compute'].nunique()} distinct compute value(s); the per-item "
                         "laws need at least 2 (3 or more recommended)")
    os.makedirs(out, exist_ok=True)
    _log(f"mass: family {fam!r}, {len(models)} models, {len(tasks)} task(s)")
    largest = models["model_id"].iloc[-1]
    # held-out fit: the largest-compute model is predicted from the final checkpoint (most tokens) of
    # every smaller size, as MassPredictor does; a single-size family holds out its last checkpoint
    p_big = models["params"].iloc[-1]
    if (models["params"] < p_big).any():
        smaller = models[models["params"] < p_big].sort_values(["params", "tokens"], kind="stable")
        train_ids = set(smaller.groupby("params").tail(1)["model_id"])
    else:
        train_ids = set(models["model_id"].iloc[:-1])
    train_c = models.loc[models["model_id"].isin(train_ids), "compute"]
    holdout = len(train_ids) >= 2 and train_c.nunique() >= 2

    summary: dict = {"store": str(opts.source), "family": fam, "n_models": int(len(models)),
                     "models": models.assign(log10_compute=np.log10(models["compute"])).to_dict("records"),
                     "tasks": {}, "multiple_input_tasks": {}}
    fits: dict[str, mass.TaskFit] = {}
    fit_tabs, pred_rows, bt_parts = [], [], []
    methods = (["mass"] + [m for m in opts.backtest.split(",") if m and m != "mass"]) if opts.backtest else []
    read_ids = backtest_ids if methods else fit_ids
    # figures go to a staging folder and into `out` only when every task has succeeded (a bad shard of a later
    # task leaves no partial output); the figures listed are this run's, never an earlier run's left in `out`
    staging = Path(out) / "_tmp_mass_figures"
    shutil.rmtree(staging, ignore_errors=True)
    figure_names: list[str] = []
    try:
        for t in sorted(tasks):
            rows_t = src.rows(t, read_ids)
            df_t = rows_t[rows_t["model_id"].isin(fit_ids)]
            it = chain.compute(df_t)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                tf = mass.fit(df_t, items=it, config=cfg)[t]
                train_rows = df_t[df_t["model_id"].isin(train_ids)] if holdout else df_t.iloc[:0]
                tf_ho = mass.fit(train_rows, config=cfg).get(t) if len(train_rows) else None
            fits[t] = tf
            fit_tabs.append(mass.fits_table(tf))
            cov = mass.covariation(tf)
            obs = it.groupby("model_id")[["acc", "p_choices_correct", "brier"]].mean()
            rows = []
            for m in models.itertuples(index=False):
                x = math.log10(m.compute)
                pr = mass.predict_task(tf, x)
                rows.append(_pred_row(t, fam, tf.multiple_input, m, x, "in-sample", pr, obs))
            if tf_ho is not None:
                m = models.iloc[-1]
                x = math.log10(m["compute"])
                pr = mass.predict_task(tf_ho, x)
                rows.append(_pred_row(t, fam, tf.multiple_input, m, x, "held-out", pr, obs))
            pred_rows += rows
            section = "multiple_input_tasks" if tf.multiple_input else "tasks"
            summary[section][t] = {"covariation": cov,
                                   "held_out": next((r for r in rows if r["kind"] == "held-out"), None)}
            if opts.figures:
                safe = t.replace("/", "_")
                mass_plots.plot_mass_scatter(it, _stage(staging, figure_names, f"mass_scatter_{safe}.png"),
                                             title=f"{fam} / {t}" + (" (multiple input)" if tf.multiple_input else ""))
                mass_plots.plot_slope_scatter(tf, _stage(staging, figure_names, f"mass_slopes_{safe}.png"), cov=cov)
                acc_tab = pd.DataFrame([{"log10_compute": r["log10_compute"], "observed": r["acc_observed"],
                                         "predicted": r["acc_predicted"], "lower": r["acc_lower"],
                                         "upper": r["acc_upper"], "kind": r["kind"]} for r in rows])
                mass_plots.plot_predicted_vs_observed(acc_tab, _stage(staging, figure_names, f"mass_pred_{safe}.png"),
                                                      title=f"{fam} / {t}: accuracy from per-item mass laws"
                                                      + (f"\n(red: {largest} predicted from the smaller sizes)"
                                                         if holdout else ""))
            if methods:
                bt_parts.append((_backtest_tokens if opts.backtest_axis == "tokens" else _backtest)(
                    rows_t, t, methods, fam, opts, first=not bt_parts))
            del rows_t, df_t, it
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in figure_names:
        os.replace(staging / name, Path(out) / name)
    shutil.rmtree(staging, ignore_errors=True)
    fits_df = pd.concat(fit_tabs, ignore_index=True)
    pred_df = pd.DataFrame(pred_rows)
    cov_df = mass.covariation_table(fits)
    _write_csv(fits_df, os.path.join(out, "mass_fits.csv"))
    _write_csv(pred_df, os.path.join(out, "mass_predictions.csv"))
    _write_csv(cov_df, os.path.join(out, "mass_covariation.csv"))
    if methods:
        bt = _backtest_table(bt_parts, tasks, methods, tokens=opts.backtest_axis == "tokens")
        _write_csv(bt, os.path.join(out, "mass_backtest.csv"))
        summary["backtest"] = _backtest_summary(bt)
        atomic_write_text(os.path.join(out, "mass_backtest.md"), _backtest_markdown(bt, fam, opts))
        report.append(_backtest_markdown(bt, fam, opts))
    write_json(os.path.join(out, "mass_summary.json"), summary)
    for section, title in (("tasks", "tasks"), ("multiple_input_tasks", "multiple-input tasks (reported apart)")):
        sub = cov_df[cov_df["multiple_input"] == (section != "tasks")]
        if len(sub):
            report.append(f"# {title}")
            cols = ["task", "n_items", "slope_corr_pearson", "share_incorrect_faster", "share_both_increasing",
                    "median_slope_correct", "median_slope_lse_incorrect", "n_excluded_or_flagged"]
            report.append(sub[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ho = pred_df[pred_df["kind"] == "held-out"]
    if len(ho):
        report.append("# held-out largest model: accuracy predicted from the other models' per-item laws")
        report.append(ho[["task", "model_id", "acc_observed", "acc_predicted", "acc_lower", "acc_upper"]]
              .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _log(f"wrote {out}/mass_fits.csv, mass_predictions.csv, mass_covariation.csv, mass_summary.json"
         + (" and figures" if opts.figures else ""))
    tables = {"fits": fits_df, "predictions": pred_df, "covariation": cov_df}
    files = ["mass_fits.csv", "mass_predictions.csv", "mass_covariation.csv", "mass_summary.json"]
    if methods:
        tables["backtest"] = bt
        files += ["mass_backtest.csv", "mass_backtest.md"]
    figures = sorted(figure_names)
    stale = sorted(p for p in os.listdir(out) if p.startswith("mass_") and p.endswith((".png", ".csv", ".md", ".json"))
                   and p not in set(files) | set(figures))
    for p in stale:  # an earlier run's outputs (other tasks, a backtest not asked for now): never mixed with this one's
        os.remove(os.path.join(out, p))
    if stale:
        _log(f"removed {len(stale)} output file(s) of an earlier run from {out}: {stale[:5]}")
    return RunResult(stage="mass", out=Path(out), files=[Path(out) / f for f in files + figures],
                     summary=to_jsonable(summary), tables=tables, notes=["\n".join(report)] if report else [])


def _stage(staging: Path, names: list[str], name: str) -> str:
    """The staging path of figure ``name`` (recorded in ``names``)."""
    staging.mkdir(parents=True, exist_ok=True)
    names.append(name)
    return str(staging / name)


def _skip_first(df, n: int):
    """Drop the ``n`` earliest checkpoints (by tokens) of every model size (params)."""
    m = df[["model_id", "params", "tokens"]].drop_duplicates("model_id").sort_values(["params", "tokens"])
    keep = m.groupby("params").apply(lambda g: g.iloc[n:], include_groups=False)["model_id"]
    return df[df["model_id"].isin(set(keep))]


def _method_kwargs(m: str, opts: Options) -> dict[str, Any]:
    return {"bootstrap": opts.baseline_bootstrap} if m != "mass" else {"seed": opts.seed, "n_draws": opts.draws}


def _backtest_tokens(df: pd.DataFrame, task: str, methods: list[str], fam: str, opts: Options, *,
                     first: bool = True) -> pd.DataFrame:
    """Data-scaling backtest of one task: within each model size, hold out the checkpoint with the most tokens.

    ``df`` holds the task's rows; ``first`` logs the sizes skipped (once, not once per task).
    """
    from capscale.analysis import laws, predict
    from capscale.analysis.chain import ladder_from_store
    from capscale.data.ladder_table import with_chance

    rows = []
    for p, g in df.groupby("params"):
        ids = g.drop_duplicates("model_id").sort_values(["tokens", "model_id"])["model_id"].tolist()
        if len(ids) < 4:
            if first:
                _log(f"backtest: size N={p} has {len(ids)} checkpoint(s); need 4 (3 to fit), skipped")
            continue
        train, held = ids[:-1], ids[-1]
        lad = with_chance(ladder_from_store(g), g)
        ltr = lad[lad["model_id"].isin(train)]
        gtr = g[g["model_id"].isin(train)]
        hd = g[g["model_id"] == held]
        items = chain.compute(hd)
        tokens = float(hd["tokens"].iloc[0])
        actual = float(items["acc"].mean())
        for m in methods:
            t0 = time.time()
            base = {"task": task, "method": m, "heldout_model": held, "size_params": int(p), "actual": actual}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pr = predict.get_method(m, **_method_kwargs(m, opts)).fit(
                        ltr, task, metric="acc", store=gtr if m == "mass" else None)
                    pp = pr.predict(float(p), tokens)
                rows.append(base | {"predicted": pp.value, "abs_err": abs(pp.value - actual), "lower": pp.lower,
                                    "upper": pp.upper, "covered": bool(pp.lower <= actual <= pp.upper),
                                    "error": "", "seconds": round(time.time() - t0, 1)})
            except (predict.MethodNotApplicable, laws.FitInputError, ValueError, RuntimeError) as e:
                rows.append(base | {"predicted": math.nan, "abs_err": math.nan, "lower": math.nan,
                                    "upper": math.nan, "covered": None, "error": f"{type(e).__name__}: {e}"[:200],
                                    "seconds": round(time.time() - t0, 1)})
    return pd.DataFrame(rows)


def _backtest_table(parts: list[pd.DataFrame], tasks: list[str], methods: list[str], *, tokens: bool) -> pd.DataFrame:
    """The per-task backtest rows as one table, in the order of ``tasks`` and ``methods`` (by size first on the
    tokens axis, where each (size, task) pair is one "task" of the summary tables)."""
    out = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else pd.DataFrame()
    if not len(out):
        return out
    key = [out["task"].map({t: i for i, t in enumerate(tasks)}), out["method"].map({m: i for i, m in
                                                                                    enumerate(methods)})]
    if tokens:
        key.insert(0, out["size_params"])
    order = np.lexsort(tuple(k.to_numpy() for k in reversed(key)))
    out = out.iloc[order].reset_index(drop=True)
    if tokens:
        out["task"] = out["task"] + " @N=" + out["size_params"].astype(str)
    return out


def _pred_row(task, fam, mi, m, x, kind, pr, obs) -> dict:
    mid = m.model_id if hasattr(m, "model_id") else m["model_id"]
    row = {"task": task, "family": fam, "multiple_input": mi, "model_id": mid, "log10_compute": x, "kind": kind}
    for key, col in (("acc", "acc"), ("acc_pair", "acc"), ("p_choices", "p_choices_correct"), ("brier", "brier")):
        p = pr[key]
        row[f"{key}_observed"] = float(obs.loc[mid, col]) if mid in obs.index else float("nan")
        row[f"{key}_predicted"], row[f"{key}_lower"], row[f"{key}_upper"] = p.value, p.lower, p.upper
    row["warnings"] = "; ".join(pr["acc"].warnings)
    return row


def _backtest(df: pd.DataFrame, task: str, methods: list[str], fam: str, opts: Options, *,
              first: bool = True) -> pd.DataFrame:
    """Leave-largest-out backtest of one task with capscale.analysis.predict, on the ladder built from the task's
    store rows ``df``."""
    from capscale.analysis import laws, predict
    from capscale.analysis.chain import ladder_from_store
    from capscale.data.ladder_table import with_chance

    lad = with_chance(ladder_from_store(df), df)
    if opts.run_from_params:
        # checkpoints of one size form one run (so the largest size's checkpoints are all held out)
        lad = lad.assign(run=lad["params"].map(lambda p: f"{fam}-N{int(p)}"))
    rows = []
    for m in methods:
        t0 = time.time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = predict.backtest(lad, task, m, holdout="largest", store=df, **_method_kwargs(m, opts))
            for r in res:
                rows.append({k: r.get(k) for k in ("task", "method", "heldout_model", "predicted", "actual",
                                                   "abs_err", "lower", "upper", "covered")}
                            | {"error": "", "seconds": round(time.time() - t0, 1)})
        except (predict.MethodNotApplicable, laws.FitInputError, ValueError, RuntimeError) as e:
            rows.append({"task": task, "method": m, "heldout_model": None, "predicted": float("nan"),
                         "actual": float("nan"), "abs_err": float("nan"), "lower": float("nan"),
                         "upper": float("nan"), "covered": None, "error": f"{type(e).__name__}: {e}"[:200],
                         "seconds": round(time.time() - t0, 1)})
        _log(f"backtest {task} {m}: {rows[-1]['abs_err']:.4f} ({rows[-1]['seconds']} s)"
             if rows[-1]["error"] == "" else f"backtest {task} {m}: {rows[-1]['error']}")
    return pd.DataFrame(rows)


def _backtest_summary(bt) -> dict:
    ok = bt[bt["error"] == ""]
    per_task = ok.groupby(["task", "method"])["abs_err"].mean().unstack()
    med = per_task.median().to_dict()
    wins = (per_task.idxmin(axis=1).value_counts().to_dict()) if len(per_task) else {}
    return {"median_abs_err": med, "n_tasks_best": wins, "per_task": per_task.to_dict()}


def _backtest_markdown(bt, fam, opts) -> str:
    ok = bt[bt["error"] == ""]
    per_task = ok.groupby(["task", "method"])["abs_err"].mean().unstack()
    methods = list(dict.fromkeys(bt["method"]))
    per_task = per_task.reindex(columns=[m for m in methods if m in per_task.columns])
    what = ("within each model size, the checkpoint with the most tokens held out (data scaling)"
            if opts.backtest_axis == "tokens" else "the largest model size held out")
    lines = [f"Leave-largest-out backtest, family `{fam}`, {what}: absolute error of the predicted accuracy "
             "(`acc`) of the held-out model, in points (mean over held-out models of a task).", ""]
    if opts.command:
        lines += [f"Command: `{opts.command}`", ""]
    lines += ["| task | " + " | ".join(per_task.columns) + " | best |",
              "|---|" + "---|" * (len(per_task.columns) + 1)]
    for t, r in per_task.iterrows():
        best = r.idxmin() if r.notna().any() else "-"
        lines.append(f"| {t} | " + " | ".join("n/a" if v != v else f"{100 * v:.2f}" for v in r) + f" | {best} |")
    med = per_task.median()
    lines.append("| **median** | " + " | ".join("n/a" if v != v else f"**{100 * v:.2f}**" for v in med)
                 + f" | {med.idxmin() if med.notna().any() else '-'} |")
    mrows = ok[ok["method"] == "mass"]
    if len(mrows):
        cov = mrows["covered"].astype(bool)
        lines += ["", f"`mass` 90 % interval covers the actual in {int(cov.sum())} of {len(cov)} held-out case(s)."]
    errs = bt[bt["error"] != ""]
    if len(errs):
        lines += ["", "Methods that could not run:"]
        for r in errs.itertuples(index=False):
            lines.append(f"- {r.task} / {r.method}: {r.error}")
    return "\n".join(lines) + "\n"


def _write_csv(df, path: str) -> None:
    atomic_write_text(path, df.to_csv(index=False))
