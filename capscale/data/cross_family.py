"""A cross-family ladder table of public models, built from the public evaluation data capscale reads.

:func:`build_cross_family` reads, with capscale's own loaders, the final checkpoint of every model of

* Pythia and Pythia-deduped (:func:`capscale.data.published.load_pythia_evals`, ``pythia-evals/``; N = total
  parameters, D = 143,000 steps x 2,097,152 tokens),
* BLOOM, XGLM, LLaMA-1 and MPT (:func:`capscale.data.lmeval_results.load_lmeval_results`,
  ``lmeval-2023-results/``; N from the model name, D from :data:`capscale.data.lmeval_results.PAPER_TOKENS`, the
  papers' values the data folder's MANIFEST gives),
* the five BigScience 1.3B data ablations (:func:`capscale.data.lmeval_results.load_bigscience_ladder`,
  ``bigscience-evals/``; one family ``bigscience-1b3``, five models of equal N and D that differ in training data),

and keeps the zero-shot lm-eval tasks that at least ``min_families`` families share, one metric per task for
every family (:func:`harmonise_metric`). The result is a ladder table in capscale's long format (model_id,
family, params, tokens, compute = 6·N·D, step, task, metric, value, run, stderr) with one row per (model,
task); :func:`build_cross_family` also returns a report of everything it left out and why (counts, never silent).

Left out by design, and said so in the report: the OLMo-2 ladder and targets (``olmo-ladder/``): they are 5-shot
evaluations of OLMo's own harness (``rc_5shot``), not comparable with the zero-shot lm-eval scores of the other
families; the BLOOM rows of ``bigscience-evals/tr11`` (the same BLOOM models as ``lmeval-2023-results``, another
harness run); intermediate checkpoints (the table holds final checkpoints only); k-shot tasks (named
``<task>_<k>shot`` by the loaders) unless ``min_families`` of them share it; failed evaluations
(:func:`failed_evaluations`: an accuracy of exactly 0 with standard error 0), listed in the report.

CLI: ``capscale ladder cross-family --data DATA --out table.csv`` (DATA: the public data folder).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from capscale.data.ladder_table import check_ladder, run_of
from capscale.data.lmeval_results import PAPER_TOKENS, load_bigscience_ladder, load_lmeval_results
from capscale.data.published import load_pythia_evals
from capscale.data.select import final_checkpoints
from capscale.errors import InputError

__all__ = ["build_cross_family", "harmonise_metric", "failed_evaluations", "CROSS_FAMILY_SOURCES", "NORM_PREFERRED"]

#: Folder (under the data root) of each source.
CROSS_FAMILY_SOURCES = {"pythia": "pythia-evals", "lmeval": "lmeval-2023-results/results",
                        "bigscience": "bigscience-evals/evaluation/results"}
#: Metrics in order of preference; a task gets ``acc_norm`` only when every family that has the task reports it.
NORM_PREFERRED = ("acc_norm", "acc")


def harmonise_metric(rows: pd.DataFrame) -> dict[str, str]:
    """One metric per task: ``acc_norm`` (length-normalised accuracy) where every family with the task reports it,
    else ``acc``.

    lm-eval reports ``acc_norm`` for the multiple-choice tasks whose answers differ in length (ARC, HellaSwag,
    PIQA, OpenBookQA, SciQ, LogiQA) and only ``acc`` for the others (WinoGrande, LAMBADA, BoolQ, COPA, MMLU in
    Pythia's files is both: there ``acc_norm`` is used only if every family has it).

    Parameters
    ----------
    rows : pandas.DataFrame
        Ladder rows (columns family, task, metric).

    Returns
    -------
    dict of str to str
        Task -> metric (tasks with neither metric are absent).
    """
    out: dict[str, str] = {}
    for task, g in rows[rows["metric"].isin(NORM_PREFERRED)].groupby("task", sort=True):
        fam_all = set(g["family"])
        for m in NORM_PREFERRED:
            if set(g.loc[g["metric"] == m, "family"]) == fam_all:
                out[str(task)] = m
                break
    return out


def failed_evaluations(rows: pd.DataFrame) -> pd.Series:
    """Rows that record a failed evaluation rather than a model's score: an accuracy of exactly 0 with a standard
    error of exactly 0, i.e. every one of the task's items wrong.

    No trained model of a public family gets every item of a benchmark of hundreds or thousands of items wrong (even
    where chance is 0, as on LAMBADA, Pythia-70M scores 0.18); lm-eval reports such a zero when the evaluation
    itself broke, e.g. LLaMA-1 7B/13B's LAMBADA in lmeval-2023-results (acc 0.000, perplexity 2.8e6: the v0.3
    harness and LLaMA's tokenizer). Rows without a standard error are kept.

    Parameters
    ----------
    rows : pandas.DataFrame
        Ladder rows with ``metric``, ``value`` and optionally ``stderr``.

    Returns
    -------
    pandas.Series of bool
        True for the rows to leave out (aligned with ``rows``).
    """
    if "stderr" not in rows.columns:
        return pd.Series(False, index=rows.index)
    acc = rows["metric"].astype(str).str.startswith("acc")
    return acc & (pd.to_numeric(rows["value"], errors="coerce") == 0) & (pd.to_numeric(rows["stderr"],
                                                                                       errors="coerce") == 0)


def _finals(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The final checkpoint's rows of every run, and the number of checkpoints dropped."""
    df = df.assign(run=run_of(df))
    last = final_checkpoints(df[["run", "model_id", "tokens", "step"]].drop_duplicates("model_id"), by="run")
    keep = set(last["model_id"])
    n_ckpt = df["model_id"].nunique()
    return df[df["model_id"].isin(keep)], n_ckpt - len(keep)


def build_cross_family(data: str | os.PathLike, *, min_families: int = 5,
                       sources: tuple[str, ...] = ("pythia", "lmeval", "bigscience"),
                       keep_failed: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Build the cross-family ladder table (see the module docstring).

    Parameters
    ----------
    data : path-like
        The public data folder (holding ``pythia-evals/``, ``lmeval-2023-results/``, ``bigscience-evals/``).
    min_families : int
        A task is kept when at least this many families have it.
    sources : tuple of str
        Which of :data:`CROSS_FAMILY_SOURCES` to read.
    keep_failed : bool, default False
        Keep the :func:`failed_evaluations` rows (they are still listed in the report); the table before this
        rule existed.

    Returns
    -------
    (table, report)
        ``table``: the ladder table (final checkpoints only, one metric per task). ``report``: models per family,
        the metric chosen per task, and what was left out with counts (``excluded``).

    Raises
    ------
    FileNotFoundError
        A source folder is missing (the message names it).
    capscale.errors.InputError
        No task is shared by ``min_families`` families.
    """
    root = Path(data)
    unknown = [s for s in sources if s not in CROSS_FAMILY_SOURCES]
    if unknown:
        raise InputError(f"cross-family: unknown source(s) {unknown}; known: {sorted(CROSS_FAMILY_SOURCES)}")
    for s in sources:
        if not (root / CROSS_FAMILY_SOURCES[s]).is_dir():
            raise FileNotFoundError(f"cross-family: source {s!r} needs the folder {str(root / CROSS_FAMILY_SOURCES[s])!r}")
    parts: list[pd.DataFrame] = []
    excluded: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "pythia" in sources:
            py = load_pythia_evals(root / CROSS_FAMILY_SOURCES["pythia"], params="total")
            py, n = _finals(py)
            excluded["pythia: intermediate checkpoints"] = n
            parts.append(py)
        if "lmeval" in sources:
            lm = load_lmeval_results(root / CROSS_FAMILY_SOURCES["lmeval"], tokens=PAPER_TOKENS, duplicates="first")
            parts.append(lm)
        if "bigscience" in sources:
            bs_root = root / CROSS_FAMILY_SOURCES["bigscience"]
            bs = pd.concat([load_bigscience_ladder(f) for f in sorted(bs_root.glob("tr*/*_agg.json"))],
                           ignore_index=True)
            bs, n = _finals(bs)
            excluded["bigscience: intermediate checkpoints"] = n
            bs = bs.assign(family="bigscience-1b3", model_id=bs["run"])
            parts.append(bs)
            excluded["bigscience: tr11 BLOOM/OPT evaluations (same BLOOM models as lmeval-2023-results; OPT-175B "
                     "alone)"] = len(list(bs_root.glob("tr11/*/bslmeval.json")))
    excluded["olmo-ladder: runs and targets (5-shot OLMo-harness evaluations, not comparable)"] = (
        len(list((root / "olmo-ladder" / "ladder-runs").glob("*.csv"))) if (root / "olmo-ladder").is_dir() else 0)
    allrows = pd.concat(parts, ignore_index=True)
    allrows = allrows[allrows["metric"].isin(NORM_PREFERRED)]
    fam_per_task = allrows.groupby("task")["family"].nunique()
    shared = set(fam_per_task.index[fam_per_task >= min_families])
    dropped_tasks = allrows.loc[~allrows["task"].isin(shared), "task"].unique()
    excluded[f"tasks shared by fewer than {min_families} families"] = int(len(dropped_tasks))
    rows = allrows[allrows["task"].isin(shared)]
    # 0-shot lm-eval tasks only: the loaders name k-shot tasks <task>_<k>shot
    kshot = rows["task"].str.contains(r"_\d+shot$", regex=True)
    excluded["k-shot tasks (shared, but not zero-shot)"] = int(rows.loc[kshot, "task"].nunique())
    rows = rows[~kshot]
    metrics = harmonise_metric(rows)
    keep = [metrics.get(t) == m for t, m in zip(rows["task"], rows["metric"], strict=True)]
    excluded["rows of the metric not chosen for the task"] = int(len(rows) - sum(keep))
    rows = rows[keep]
    failed = failed_evaluations(rows)
    failed_rows = [f"{m} / {t}" for m, t in rows.loc[failed, ["model_id", "task"]].itertuples(index=False)]
    if not keep_failed:
        excluded["failed evaluations (accuracy exactly 0 with standard error 0)"] = int(failed.sum())
        rows = rows[~failed]
    if not len(rows):
        raise InputError(f"cross-family: no task is shared by {min_families} families under {str(root)!r}")
    cols = ["model_id", "family", "params", "tokens", "compute", "step", "task", "metric", "value", "run", "stderr"]
    rows = rows.assign(compute=6.0 * rows["params"] * rows["tokens"])
    table = check_ladder(rows[[c for c in cols if c in rows.columns]].reset_index(drop=True), source=str(root))
    table = table.sort_values(["family", "compute", "task"], kind="stable").reset_index(drop=True)
    report = {
        "models_per_family": {str(k): int(v) for k, v in table.groupby("family")["model_id"].nunique().items()},
        "n_models": int(table["model_id"].nunique()), "n_rows": int(len(table)),
        "metric_per_task": metrics,
        "models_per_task": {str(k): int(v) for k, v in table.groupby("task")["model_id"].nunique().items()},
        "families_per_task": {str(k): int(v) for k, v in table.groupby("task")["family"].nunique().items()},
        "excluded": excluded,
        "failed_evaluations": failed_rows,
        "dropped_tasks": sorted(str(t) for t in dropped_tasks),
    }
    return table, report
