"""Backtests of ``observational`` against the compute-only methods on the public cross-family table.

Run from the repository root (the table is rebuilt from the public data, never committed)::

    flock /tmp/capscale-heavy.lock .venv/bin/python results/backtests/observational/run.py \\
        --data ../shared/data --split dev|confirm|family --bootstrap 50

Each split calls :func:`capscale.pipelines.backtest.run` (what ``capscale backtest`` runs) once per (method, task
set): the ``--all-tasks`` CLI runs for the pooled methods and observational, and one run per family for ``sigmoid``
fitted on that family's rows alone (``--fit "family=='F' and ..."``). A run that cannot be fitted (a family without
2 training sizes) is recorded as not applicable, with the reason. Writes ``<split>_rows.csv`` (every prediction),
``<split>_by_task.csv`` (MAE in points per method and task), ``<split>_summary.csv`` (pooled MAE, coverage, n per
method, also on the targets every method predicted) and ``<split>_notes.txt``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import pandas as pd

from capscale.data.cross_family import build_cross_family
from capscale.pipelines import backtest as bt

HERE = Path(__file__).resolve().parent

#: The splits. dev was used to choose the observational defaults; confirm is run once with them frozen.
SPLITS = {
    "dev": {"holdout": "compute>1e22 and compute<3e22", "fit": "compute<=1e22"},
    "confirm": {"holdout": "compute>3e22", "fit": None},
}


def _run(table: pd.DataFrame, method: str, holdout: str, fit: str | None, tasks: list[str], label: str,
         bootstrap: int, notes: list[str], given: str | None = None) -> list[dict]:
    rows: list[dict] = []
    for task in tasks:
        opts = bt.Options(tasks=(task,), method=method, holdout=holdout, fit=fit, bootstrap=bootstrap, seed=0,
                          given=given)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = bt.run(table, opts)
        except Exception as e:  # noqa: BLE001 - recorded, never silent
            notes.append(f"{label} / {task}: not applicable ({type(e).__name__}: {str(e)[:200]})")
            continue
        for r in res.summary["rows"]:
            r["label"] = label
        rows += res.summary["rows"]
    return rows


def run_split(table: pd.DataFrame, split: str, bootstrap: int) -> tuple[pd.DataFrame, list[str]]:
    tasks = sorted(table["task"].unique())
    notes: list[str] = []
    rows: list[dict] = []
    fams = sorted(table["family"].unique())
    if split in SPLITS:
        s = SPLITS[split]
        parts = [(s["holdout"], s["fit"], None)]
    else:  # family: each family's largest model left out in turn
        parts = [(f"family-largest:{f}", None, f) for f in fams if table.loc[table["family"] == f, "model_id"]
                 .nunique() >= 2]
    for holdout, fit, fam in parts:
        rows += _run(table, "observational", holdout, fit, tasks, "observational", bootstrap, notes, "compute")
        rows += _run(table, "observational", holdout, fit, tasks, "observational+scores", bootstrap, notes, "scores")
        rows += _run(table, "sigmoid", holdout, fit, tasks, "sigmoid (pooled)", bootstrap, notes)
        rows += _run(table, "loglinear", holdout, fit, tasks, "loglinear (pooled)", bootstrap, notes)
        for f in ([fam] if fam else fams):
            q = f"family=='{f}'"
            if fam is None:
                held = table[table.eval(SPLITS[split]["holdout"], engine="python") & (table["family"] == f)]
                if not len(held):
                    continue
                h, ft = f"({holdout}) and {q}", f"({fit}) and {q}" if fit else q
            else:
                h, ft = holdout, q
            rows += _run(table, "sigmoid", h, ft, tasks, "sigmoid (per family)", bootstrap, notes)
    return pd.DataFrame(rows), notes


def summarise(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = df[df["heldout_model"].notna()].copy()
    df["err_points"] = 100 * df["abs_err"]
    by_task = df.pivot_table(index="task", columns="label", values="err_points", aggfunc="mean").round(2)
    key = ["task", "heldout_model"]
    common = set.intersection(*[set(map(tuple, g[key].to_numpy())) for _, g in df.groupby("label")])
    df["common"] = [tuple(k) in common for k in df[key].to_numpy()]
    g = df.groupby("label")
    summ = pd.DataFrame({"mae_points": g["err_points"].mean(), "coverage_90": g["covered"].mean(),
                         "n": g["err_points"].size()})
    gc = df[df["common"]].groupby("label")
    summ["mae_points_common"] = gc["err_points"].mean()
    summ["coverage_90_common"] = gc["covered"].mean()
    summ["n_common"] = gc["err_points"].size()
    return by_task, summ.round(3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("CAPSCALE_SHARED_DATA", "data"))
    ap.add_argument("--split", required=True, choices=["dev", "confirm", "family"])
    ap.add_argument("--bootstrap", type=int, default=50)
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--exclude", default=None, help="post-hoc diagnostics only: a query over the table's rows to drop "
                    "before the backtest (e.g. broken evaluations); outputs are named <split>_<name>_*")
    ap.add_argument("--name", default=None, help="the name of a variant (needed with --exclude, and to rerun without "
                    "--keep-failed-evaluations); outputs are named <split>_<name>_*")
    ap.add_argument("--keep-failed-evaluations", action="store_true",
                    help="build the table as before the failed-evaluation rule (the original dev/confirm/family runs)")
    a = ap.parse_args(argv)
    table, report = build_cross_family(a.data, keep_failed=a.keep_failed_evaluations)
    stem = a.split if a.name is None else f"{a.split}_{a.name}"
    if not a.keep_failed_evaluations and a.name is None:
        ap.error("the committed <split>_* files were made with --keep-failed-evaluations; name a variant (--name)")
    if a.exclude:
        if not a.name:
            ap.error("--exclude needs --name")
        drop = table.eval(a.exclude, engine="python").to_numpy()
        print(f"--exclude {a.exclude!r}: {int(drop.sum())} row(s) dropped", file=sys.stderr)
        table = table[~drop]
    df, notes = run_split(table, a.split, a.bootstrap)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = ["label", "task", "metric", "heldout_model", "params", "tokens", "predicted", "actual", "abs_err", "lower",
            "upper", "covered", "given", "verdict"]
    df[[c for c in keep if c in df.columns]].to_csv(out / f"{stem}_rows.csv", index=False, float_format="%.5g")
    by_task, summ = summarise(df)
    by_task.to_csv(out / f"{stem}_by_task.csv")
    summ.to_csv(out / f"{stem}_summary.csv")
    (out / f"{stem}_notes.txt").write_text("\n".join(notes) + "\n", encoding="utf-8")
    print(summ.to_string())
    print(by_task.to_string())
    print(f"{len(notes)} not-applicable runs (see {stem}_notes.txt)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
