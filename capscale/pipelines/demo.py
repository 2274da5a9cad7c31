"""``capscale demo``: the whole toolkit on the embedded default, offline, in a few minutes.

The embedded default is the committed demo family (``capscale/synthetic/family/``): a ladder of ten
small Llama-style models trained by ``capscale ladder train`` on capscale's synthetic micro-world,
with log-spaced checkpoints, and the world's multiple-choice tasks (one-hop recall, two-hop
composition, multi-token birth dates). The demo

1. evaluates every checkpoint on every task with capscale's scoring engine -> ``OUT/store/``;
2. runs the chain and per-item correlation analysis -> ``OUT/analysis/``;
3. fits the per-item correct/incorrect mass laws and predicts accuracy from them -> ``OUT/mass/``;
4. backtests fitted transforms (leave the largest size out) -> ``OUT/predict/``;
5. runs the emergence diagnostics -> ``OUT/emergence/``;
6. checks what the demo family must show -> ``OUT/checks.json``;
7. writes ``OUT/report.html`` (self-contained) and ``OUT/run.json`` (what ran, how long).

A rerun reuses the finished store shards (delete ``OUT/store`` to rescore). :func:`run` takes the family folder
and :class:`Options`; every stage is run through its own runner (:func:`capscale.pipelines.analyze.run`, ...),
each returning a :class:`~capscale.pipelines._base.RunResult`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from capscale._io import atomic_write_text, write_json
from capscale.data.select import final_checkpoints
from capscale.errors import CapscaleError
from capscale.pipelines._base import RunResult, StageOptions
from capscale.synthetic.ladder import longest_increasing

__all__ = ["DEMO_FAMILY", "DemoError", "Options", "run", "demo_checks", "evaluate_family"]

#: The committed demo family (checkpoints, family.yaml, tasks/).
DEMO_FAMILY = Path(__file__).resolve().parents[1] / "synthetic" / "family"


class DemoError(CapscaleError, RuntimeError):
    """The demo cannot start (missing family, unwritable output folder), or one of its stages failed."""


@dataclass(frozen=True)
class Options(StageOptions):
    """Settings of ``capscale demo``.

    Attributes
    ----------
    out : path-like
        Output folder (created; must be writable — checked before any work).
    progress : bool
        Show progress bars.
    log : callable
        Where progress lines go.
    """

    out: str | os.PathLike = "demo-output"
    progress: bool = True
    log: Callable[[str], None] = print

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **overrides: Any) -> Options:
        """Options from ``capscale demo`` arguments (``--quiet``: no progress bars)."""
        return super().from_cli(args, **{"progress": not args.quiet, **overrides})


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".capscale-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise DemoError(f"cannot write to the output folder {str(out)!r} ({e.strerror or e}); choose another "
                        "with --out DIR") from e


def _family_files(family_dir: Path) -> tuple[Path, Path]:
    spec = family_dir / "family.yaml"
    tasks = family_dir / "tasks"
    if not spec.is_file() or not tasks.is_dir():
        raise DemoError(f"demo family not found in {str(family_dir)!r} (expected family.yaml and tasks/); "
                        "reinstall capscale or rebuild it as described in capscale/synthetic/family/README.md")
    return spec, tasks


def _copy_spec(spec: Path, dest: Path) -> None:
    """Copy the family spec with checkpoint paths made absolute (usable from anywhere)."""
    d = yaml.safe_load(spec.read_text())
    for ck in d.get("checkpoints", []):
        p = Path(ck["path"])
        if not p.is_absolute():
            ck["path"] = str((spec.parent / p).resolve())
    atomic_write_text(dest, yaml.safe_dump(d, sort_keys=False))


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------


def _stage_eval(spec: Path, tasks_dir: Path, out: Path, progress: bool) -> pd.DataFrame:
    from capscale.data import store
    from capscale.eval.evaluate import evaluate_item_sets
    from capscale.eval.shards import EvalOptions
    from capscale.synthetic import world as synthetic

    try:  # the per-checkpoint "Loading weights" bars of transformers drown the demo's own progress
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    tasks = synthetic.load_tasks(tasks_dir)
    options = EvalOptions(progress=False, batch_size="auto")  # 50+ tiny shards: one bar each is noise
    evaluate_item_sets(out / "family.yaml", tasks, out=out / "store", options=options, task_source="synthetic")
    return store.read(out / "store")


def evaluate_family(out: str | os.PathLike, family_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Score a family's checkpoints on its tasks into ``OUT/store`` (the demo's first stage alone; reruns reuse the
    finished shards) and return the store (used by ``capscale backtest-suite`` for its demo data set)."""
    spec, tasks = _family_files(Path(family_dir) if family_dir is not None else DEMO_FAMILY)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    _copy_spec(spec, o / "family.yaml")
    return _stage_eval(spec, tasks, o, False)


def _stage_analysis(scores: pd.DataFrame, out: Path, progress: bool) -> RunResult:
    from capscale.pipelines import analyze

    return analyze.run(scores, analyze.Options(out=out / "analysis", progress=progress, source=str(out / "store")))


def _stage_mass(scores: pd.DataFrame, out: Path, progress: bool) -> RunResult:
    from capscale.pipelines import mass

    # read from disk task by task, as `capscale mass OUT/store` does (the same results as `scores` in memory)
    res = mass.run(out / "store", mass.Options(out=str(out / "mass"), backtest="loglinear,sigmoid,direct",
                                               source=str(out / "store"), command="capscale demo"))
    (out / "logs" / "mass.log").write_text("\n".join(res.notes) + "\n")
    return res


def _stage_predict(scores: pd.DataFrame, out: Path, progress: bool) -> RunResult:
    from capscale.analysis.chain import ladder_from_store
    from capscale.data.ladder_table import with_chance
    from capscale.pipelines import backtest

    ladder = with_chance(ladder_from_store(scores), scores)
    tasks = tuple(sorted(ladder.loc[ladder["metric"] == "acc", "task"].unique()))
    res = backtest.run(ladder, backtest.Options(tasks=tasks, method="all", holdout="largest", bootstrap=20, seed=0,
                                                out=str(out / "predict"), progress=progress), store=scores)
    (out / "logs" / "predict.log").write_text(backtest.summarize_backtests(res.summary["rows"]) + "\n")
    return res


def _stage_emergence(scores: pd.DataFrame, out: Path, progress: bool) -> RunResult:
    from capscale.pipelines import emergence

    # final checkpoint of each size: the family's scaling axis (mixing sizes and steps is not
    # monotone in compute); B = 500 keeps the demo fast
    return emergence.run(scores, emergence.Options(out=out / "emergence", B=500, steps="final", progress=progress,
                                                   source=str(out / "store"), command="capscale demo"))


#: The stages after evaluation: (name, progress line, runner, the key of the runner's ``summary`` that
#: ``run.json`` records for the stage, or None).
_STAGES: list[tuple[str, str, Callable[[pd.DataFrame, Path, bool], RunResult], str | None]] = [
    ("analysis", "[2/6] chain metrics and per-item correlations", _stage_analysis, None),
    ("mass", "[3/6] correct vs incorrect probability mass laws", _stage_mass, "backtest"),
    ("predict", "[4/6] fitted transforms: leave-largest-out backtests", _stage_predict, None),
    ("emergence", "[5/6] emergence diagnostics", _stage_emergence, "verdicts"),
]


# ----------------------------------------------------------------------------------------------
# Checks of what the demo family must show
# ----------------------------------------------------------------------------------------------


def demo_checks(out: str | os.PathLike) -> dict[str, dict]:
    """Evaluate the three properties the demo family must show, from the demo's outputs.

    Returns
    -------
    dict
        ``{name: {"passed": bool, "detail": str}}``.
    """
    out = Path(out)
    checks: dict[str, dict] = {}
    items = pd.read_parquet(out / "analysis" / "per_item.parquet")

    # 1. knowledge scaling on one-hop recall (final checkpoint of each size)
    one = items[items["task"] == "synth_onehop"]
    if len(one):
        acc = final_checkpoints(one, by="params").groupby("params")["acc"].mean().sort_index()
        inc = longest_increasing(acc.to_numpy())
        need = min(4, len(acc))
        ok = inc >= need and acc.iloc[-1] >= 0.6
        checks[f"knowledge scaling (one-hop accuracy increases with size across >= {need} of {len(acc)} sizes; "
               "largest >= 0.6 at K = 4)"] = {
            "passed": bool(ok),
            "detail": "final-checkpoint accuracy by size (N): " + ", ".join(
                f"{int(n):,}: {a:.3f}" for n, a in acc.items())
            + f"; increasing across {inc} of {len(acc)} sizes (longest strictly increasing subsequence)"}

    # 2. the Schaeffer et al. ordering of median per-item Spearman correlations
    summ = pd.read_csv(out / "analysis" / "summary.csv")
    sp = summ[summ["method"] == "spearman"].pivot_table(index="task", columns="metric", values="median")
    rows, any_ok = [], False
    for task, r in sp.iterrows():
        need = ["log_p_vocab_correct", "p_choices_correct", "acc"]
        if not all(c in r and np.isfinite(r[c]) for c in need):
            continue
        ok = r["log_p_vocab_correct"] > r["p_choices_correct"] > r["acc"]
        any_ok |= bool(ok)
        rows.append(f"{task}: {r['log_p_vocab_correct']:.3f} > {r['p_choices_correct']:.3f} > {r['acc']:.3f} "
                    f"{'holds' if ok else 'fails'}")
    checks["ordering of median per-item Spearman: log p_vocab > p_choices > accuracy (at least one task)"] = {
        "passed": any_ok, "detail": "; ".join(rows)}

    # 3. emergence-looking accuracy / exact match on the multi-token task with a smooth log-likelihood
    ej = out / "emergence" / "synth_birthdate.json"
    if ej.exists():
        rep = json.loads(ej.read_text())
        m = rep.get("metrics", {})
        D = "exact_match_greedy" if "exact_match_greedy" in m else rep.get("decision_metric", "acc")
        K = "logp_vocab"
        bd, bk = (m.get(D) or {}).get("B_norm"), (m.get(K) or {}).get("B_norm")
        jd, jk = (m.get(D) or {}).get("J_ex"), (m.get(K) or {}).get("J_ex")

        def _f(v: Any) -> float:
            try:
                return float(v)
            except (TypeError, ValueError):
                return float("nan")

        sharper = _f(jd) > _f(jk) or _f(bd) > _f(bk)
        ok = rep.get("verdict") == "METRIC_INDUCED" or sharper
        checks["multi-token task: sharp exact-match/accuracy curve beside a smooth log-likelihood"] = {
            "passed": bool(ok),
            "detail": f"verdict {rep.get('verdict')}; {D}: B/(n-1) = {_f(bd):.2f}, J_ex = {_f(jd):.2f}; "
                      f"{K}: B/(n-1) = {_f(bk):.2f}, J_ex = {_f(jk):.2f}"}
    return checks


# ----------------------------------------------------------------------------------------------


def run(family_dir: str | os.PathLike | None = None, options: Options | None = None) -> RunResult:
    """Run the demo end to end and write ``OUT/report.html``.

    Parameters
    ----------
    family_dir : path-like, optional
        A family folder with ``family.yaml`` and ``tasks/`` (default: the committed demo family,
        :data:`DEMO_FAMILY`).
    options : Options, optional
        Output folder, progress bars, where progress lines go (default ``Options()``).

    Returns
    -------
    RunResult
        ``summary``: the run record written to ``OUT/run.json`` (stages with their wall times, errors and
        headline results; the checks; the report's path) plus ``failed``, the stages that failed; ``files``:
        the files the stages and the demo wrote; ``notes``: one line per failed stage.

    Raises
    ------
    DemoError
        When the output folder is not writable or the family is missing (before any work).
    """
    options = options or Options()
    log = options.log
    progress = options.progress
    out = Path(options.out)
    family_dir = Path(family_dir) if family_dir else DEMO_FAMILY
    spec, tasks_dir = _family_files(family_dir)
    _check_writable(out)
    (out / "logs").mkdir(exist_ok=True)
    t_all = time.time()
    _copy_spec(spec, out / "family.yaml")
    (out / "tasks").mkdir(exist_ok=True)
    for f in tasks_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, out / "tasks" / f.name)
    record: dict[str, Any] = {"command": "capscale demo" + (f" --out {out}" if str(out) != "demo-output" else ""),
                              "family": str(family_dir), "output": str(out.resolve()), "stages": {}}
    log(f"capscale demo: family {family_dir} -> {out}/")

    t0 = time.time()
    log("[1/6] evaluating every checkpoint on the synthetic tasks (capscale scoring engine)")
    scores = _stage_eval(spec, tasks_dir, out, progress)
    record["stages"]["eval"] = {"seconds": round(time.time() - t0, 1), "rows": len(scores),
                                "models": int(scores["model_id"].nunique()),
                                "tasks": sorted(scores["task"].unique())}
    log(f"      {len(scores):,} per-choice rows, {scores['model_id'].nunique()} checkpoints, "
        f"{scores['task'].nunique()} tasks")

    failed: list[str] = []
    notes: list[str] = []
    files: list[Path] = []
    for name, title, stage, summary_key in _STAGES:
        log(title)
        t0 = time.time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = stage(scores, out, progress)
            record["stages"][name] = {"seconds": round(time.time() - t0, 1), "status": "ok"}
            if summary_key is not None:
                record["stages"][name]["summary"] = result.summary.get(summary_key, {})
            files += result.files
        except Exception as e:  # noqa: BLE001 - a failed stage is reported, the others still run
            failed.append(name)
            notes.append(f"stage {name} failed: {type(e).__name__}: {e}")
            record["stages"][name] = {"seconds": round(time.time() - t0, 1), "status": "failed",
                                      "error": f"{type(e).__name__}: {e}",
                                      "traceback": traceback.format_exc(limit=6)}
            log(f"      FAILED: {type(e).__name__}: {e}")

    log("[6/6] checks and report")
    try:
        checks = demo_checks(out)
    except Exception as e:  # noqa: BLE001
        checks = {"checks could be computed": {"passed": False, "detail": f"{type(e).__name__}: {e}"}}
    files.append(write_json(out / "checks.json", checks, indent=2))
    record["checks"] = {k: v["passed"] for k, v in checks.items()}
    record["seconds_total"] = round(time.time() - t_all, 1)
    write_json(out / "run.json", record, indent=2)
    from capscale.pipelines import report

    page = report.run(out, report.Options(output=out / "report.html",
                                          title="capscale demo: a ladder trained on a synthetic world"))
    record["report"] = str(page.files[0])
    files += [*page.files, write_json(out / "run.json", record, indent=2)]
    for k, v in checks.items():
        log(f"  [{'ok' if v['passed'] else 'NO'}] {k}: {v['detail']}")
    if failed:
        log(f"stages that failed: {failed} (details in {out}/run.json)")
    log(f"done in {record['seconds_total']:.0f} s. Report: {record['report']}")
    return RunResult(stage="demo", out=out, files=files, summary={**record, "failed": failed}, notes=notes)
