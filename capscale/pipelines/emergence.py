"""``capscale emergence``: emergence verdicts for the tasks of one model family, written to a folder.

:func:`run` takes the input (a path: a score store, a ladder table, Pythia's or OLMo's evaluations; or a score
store as a DataFrame) and :class:`Options`. It reads one family and its tasks (:func:`load_inputs`, which
detects the input's format with :func:`detect_format`), analyses every task with
:func:`capscale.analysis.emergence.scan` (Benjamini–Hochberg control across tasks), and writes

=====================  ==============================================================================
``<task>.json``        one report per task (schema of emergence.md §9.7, plus ``guards`` and ``command``)
``verdicts.csv``       one row per task (:func:`capscale.analysis.emergence.verdict_table`)
``figures/``           ``<task>_P1_ladder.png`` ... (:func:`capscale.plotting.emergence.plot_report`)
=====================  ==============================================================================

into ``Options.out``. Notes on what was read and excluded are recorded under ``guards`` in every report.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from capscale._io import atomic_write, safe_name, write_json
from capscale.analysis import chain
from capscale.analysis.emergence import DEFAULTS, scan, verdict_table
from capscale.analysis.emergence.inputs import (
    TaskInput,
    drop_nonfinite_items,
    final_only,
    from_items,
    from_ladder,
)
from capscale.data import ladder_table
from capscale.data import store as _store
from capscale.errors import InputError, UsageError
from capscale.pipelines._base import RunResult, StageOptions
from capscale.pipelines.inputs import guess_format
from capscale.plotting.emergence import plot_report

__all__ = ["FORMATS", "FIGURES", "Options", "detect_format", "load_inputs", "store_inputs", "run"]

#: Input formats :func:`load_inputs` reads (``"auto"`` detects one of them).
FORMATS = ("store", "ladder", "pythia-evals", "pythia-all", "olmo-ladder")

#: Figure policies of :class:`Options`: every figure for at most 12 tasks, else only for the tasks whose verdict
#: is ``METRIC_INDUCED`` or ``GENUINE_TRANSITION_CANDIDATE`` (``auto``); every figure (``all``); none.
FIGURES = ("auto", "all", "none")

_FIGURE_VERDICTS = ("METRIC_INDUCED", "GENUINE_TRANSITION_CANDIDATE")
_AUTO_FIGURES_MAX_TASKS = 12


def detect_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """The format of ``path``: ``fmt`` itself unless it is ``"auto"``.

    ``"auto"`` guesses with :func:`capscale.pipelines.inputs.guess_format` (the OLMo ladder folder, Pythia's
    evaluations, a ladder table with a ``metric`` column, else a score store).

    Raises
    ------
    capscale.errors.UsageError
        ``fmt`` is neither ``"auto"`` nor one of :data:`FORMATS`.
    """
    if fmt != "auto":
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}; use one of {list(FORMATS)} or 'auto'")
        return fmt
    return guess_format(path)


def _checked_store(df: pd.DataFrame, where: str) -> list[str]:
    """Validate a store, tolerating non-finite logliks (the emergence guard excludes those items).

    Returns the non-finite-loglik problems as notes; raises
    :class:`~capscale.data.store.StoreValidationError` for any other problem.
    """
    problems = _store.validate(df, multi_gold=True)
    hard = [p for p in problems if p.kind != "non_finite_loglik"]
    if hard:
        raise _store.StoreValidationError(hard, where)
    return [str(p) for p in problems if p.kind == "non_finite_loglik"]


def _select(frame: pd.DataFrame, where: str, family: str | None,
            tasks: Sequence[str] | None) -> tuple[str, list[str]]:
    """The family to analyse and its tasks; InputError naming what ``frame`` has when either is not there."""
    fams = sorted(frame["family"].astype(str).unique())
    fam = family or (fams[0] if len(fams) == 1 else None)
    if fam is None or fam not in fams:
        raise InputError(f"family must be one of {fams}" + (f", not {family!r}" if family else "") + f" ({where})")
    have = sorted(frame.loc[frame["family"].astype(str) == fam, "task"].astype(str).unique())
    want = have if tasks is None else list(tasks)
    unknown = [t for t in want if t not in have]
    if unknown:
        raise InputError(f"task(s) {unknown} not in {where} for family {fam!r}; it has {have}")
    return fam, want


def store_inputs(df: pd.DataFrame, *, family: str | None = None, tasks: Sequence[str] | None = None,
                 steps: str = "final", ties: str = "first",
                 where: str = "the score store") -> tuple[list[TaskInput], list[str]]:
    """One :class:`TaskInput` per task of one family of a score store (the per-item input of the analysis).

    Parameters
    ----------
    df : pandas.DataFrame
        A score store (non-finite logliks allowed: those items are excluded and counted).
    family : str, optional
        Required when the store holds several families.
    tasks : sequence of str, optional
        Tasks to use (default: every task of the family).
    steps : {"final", "all"}
        ``"final"`` keeps the final checkpoint of each run (:func:`~capscale.analysis.emergence.inputs.final_only`);
        ``"all"`` keeps every checkpoint.
    ties : {"first", "fractional"}
        Accuracy tie rule (:func:`capscale.analysis.emergence.from_items`).
    where : str
        What the store is, for messages (a path).

    Returns
    -------
    (list of TaskInput, list of str)
        The inputs in task order, and notes (checkpoints kept, non-finite logliks) for the reports' ``guards``.

    Raises
    ------
    capscale.data.store.StoreValidationError
        The store has a problem other than non-finite logliks.
    capscale.errors.InputError
        Unknown family or task (naming what the store has).
    """
    notes = _checked_store(df, where)
    fam, want = _select(df, where, family, tasks)
    df = df[(df["family"].astype(str) == fam) & df["task"].isin(want)]
    if steps == "final":
        df, note = final_only(df)
        if note:
            notes.append(note)
    return [_task_input(df[df["task"] == t], t, fam, ties) for t in want], notes


def _task_input(df: pd.DataFrame, task: str, fam: str, ties: str) -> TaskInput:
    """The TaskInput of one task from its store rows (non-finite items excluded and counted)."""
    df, dropped = drop_nonfinite_items(df)
    ti = from_items(chain.compute(df), task, fam, ties=ties)
    if dropped.get(task):
        ti.exclusions["items_nonfinite_loglik"] = dropped[task]
        ti.guards.append(f"{dropped[task]} item(s) with a NaN/inf loglik were excluded for every model")
    return ti


def _stored_inputs(path: Path, *, family: str | None, tasks: Sequence[str] | None, steps: str,
                   ties: str) -> tuple[list[TaskInput], list[str]]:
    """:func:`store_inputs` of a store on disk, read task by task (memory: one task's rows, not the store's).

    The models (and, with ``steps="final"``, the final checkpoint of each run) come from
    :func:`capscale.data.store.index`; each task's rows of those models are then read and validated on their own,
    so only the selected family and tasks are validated, and non-finite log-likelihoods are noted per task.
    """
    where = str(path)
    idx = _store.index(path)
    fam, want = _select(idx, where, family, tasks)
    meta = idx[(idx["family"] == fam) & idx["task"].isin(want)].drop(columns=["file", "rows"])
    notes: list[str] = []
    if steps == "final":
        meta, note = final_only(meta.drop_duplicates("model_id"))
        if note:
            notes.append(note)
    ids = set(meta["model_id"])
    inputs = []
    for t in want:
        found: list[_store.Problem] = []
        df = _store.read(path, multi_gold=True, tasks=[t], models=ids, store_index=idx,
                         allow=("non_finite_loglik",), warnings=found)
        notes += [f"task {t!r}: {p}" for p in found if p.kind == "non_finite_loglik"]
        inputs.append(_task_input(df, t, fam, ties))
    return inputs, notes


def load_inputs(path: str | os.PathLike, *, family: str | None = None, tasks: Sequence[str] | None = None,
                fmt: str = "auto", steps: str = "final", ties: str = "first",
                shots: int = 0) -> tuple[list[TaskInput], list[str]]:
    """One :class:`TaskInput` per task of one family, read from ``path``.

    Parameters
    ----------
    path : path-like
        A score store (file or shard folder), a ladder table (CSV/Parquet with a ``metric`` column), Pythia's
        evaluation folder or the OLMo ladder folder.
    family : str, optional
        Required when the input holds several families.
    tasks : sequence of str, optional
        Tasks to read (default: every task of the family).
    fmt : str, default "auto"
        One of :data:`FORMATS`, or ``"auto"`` (:func:`detect_format`). ``"pythia-all"`` reads every accuracy task
        of Pythia's ``shots``-shot files.
    steps : {"final", "all"}
        ``"final"`` keeps the last checkpoint of each size; ``"all"`` keeps every checkpoint.
    ties : {"first", "fractional"}
        Accuracy tie rule for per-item inputs (:func:`capscale.analysis.emergence.from_items`).
    shots : int, default 0
        Few-shot setting for ``"pythia-all"``.

    Returns
    -------
    (list of TaskInput, list of str)
        The inputs, in task order, and notes (format read, rows excluded) for the reports' ``guards``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    capscale.errors.UsageError
        Unknown format.
    capscale.errors.InputError
        Unknown family or task (naming what the input has).
    capscale.data.store.StoreValidationError
        An invalid store.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    fmt = detect_format(path, fmt)
    notes: list[str] = [f"input format: {fmt}"]
    if fmt == "store":
        inputs, more = _stored_inputs(path, family=family, tasks=tasks, steps=steps, ties=ties)
        return inputs, notes + more
    if fmt == "pythia-evals":
        from capscale.data import published

        ladder = published.attach_stderr(published.load_pythia_evals(path, params="non_embedding"),
                                         published.pythia_stderr(path))
        notes.append("Pythia: published.load_pythia_evals(params='non_embedding') + stderr from the JSONs")
    elif fmt == "pythia-all":
        from capscale.data import published

        ladder, skipped = published.load_pythia_tasks(path, shots=shots)
        notes.append(f"Pythia, every accuracy task of the {shots}-shot files (capscale.data.published."
                     f"load_pythia_tasks, non-embedding N); skipped: {skipped}")
    elif fmt == "olmo-ladder":
        from capscale.data import published

        ladder = published.load_olmo_ladder(path)
    else:
        ladder = ladder_table.read_ladder(path)
    fam, want = _select(ladder, str(path), family, tasks)
    sub = ladder[ladder["family"] == fam]
    out = []
    for t in want:
        ch = {}
        if fmt in ("pythia-evals", "pythia-all", "olmo-ladder") or t in ladder_table.CHANCE:
            c = ladder_table.chance_of(t)
            ch = {"acc": c, "acc_norm": c, "acc_bytes": c, "p_choices": c}
        out.append(from_ladder(sub, fam, t, steps=steps, chance=ch))
    return out, notes


# Defaults of the command-line flags that _cli_command leaves out of the recorded command line.
_CLI_DEFAULTS = {"format": "auto", "shots": 0, "B": 2000, "seed": 0, "alpha": 0.05, "min_items": 20, "steps": "final",
                 "ties": "first", "min_jex": DEFAULTS["min_jex"], "min_step_z": DEFAULTS["min_step_z"],
                 "max_pre_ratio": DEFAULTS["max_pre_ratio"]}


def _cli_command(args: argparse.Namespace) -> str:
    """The command line that reproduces a ``capscale emergence`` run (recorded in every JSON)."""
    parts = ["capscale emergence", str(args.input)]
    if args.family:
        parts.append(f"--family {args.family}")
    parts.append("--all-tasks" if args.all_tasks else f"--task {args.task}")
    parts.append(f"--out {args.out}")
    for k, v in _CLI_DEFAULTS.items():
        if getattr(args, k) != v:
            parts.append(f"--{k.replace('_', '-')} {getattr(args, k)}")
    if args.no_fdr:
        parts.append("--no-fdr")
    return " ".join(parts)


@dataclass(frozen=True)
class Options(StageOptions):
    """Settings of ``capscale emergence``.

    Attributes
    ----------
    out : path-like, optional
        Results folder (created if missing); None analyses without writing anything.
    family : str, optional
        The family to analyse (required when the input holds several).
    tasks : tuple of str, optional
        Tasks to analyse (default: every task of the family).
    fmt : str
        Input format of a path: one of :data:`FORMATS` or ``"auto"`` (:func:`detect_format`).
    shots : int
        Few-shot setting of the ``"pythia-all"`` format (0 or 5).
    steps : {"final", "all"}
        The final checkpoint (most tokens) of each run/size, or every checkpoint as a point.
    ties : {"first", "fractional"}
        Accuracy tie rule for per-item inputs.
    B, seed, alpha, min_items : int, int, float, int
        Bootstrap replicates, seed, significance level and fewest items for the item bootstrap
        (:func:`capscale.analysis.emergence.analyse`).
    min_jex, min_step_z, max_pre_ratio : float
        Effect-size floor of a "sharp" verdict (J_ex share, excess step in bootstrap SDs, slope before the
        step over the step's slope;
        :func:`capscale.analysis.emergence.analyse`).
    fdr : bool
        Benjamini–Hochberg control across the tasks.
    figures : {"auto", "all", "none"}
        Which reports get figures (:data:`FIGURES`).
    workers : int
        Processes for a multi-task scan (results do not depend on it).
    progress : bool
        Show a progress bar.
    source : str, optional
        What a DataFrame input is, for messages and the default ``command`` (a path is named by itself).
    command : str, optional
        How to reproduce the run, recorded in every report (default: the :func:`run` call).
    """

    out: str | os.PathLike | None = None
    family: str | None = None
    tasks: tuple[str, ...] | None = None
    fmt: str = "auto"
    shots: int = 0
    steps: str = "final"
    ties: str = "first"
    B: int = 2000
    seed: int = 0
    alpha: float = 0.05
    min_items: int = 20
    min_jex: float = DEFAULTS["min_jex"]
    min_step_z: float = DEFAULTS["min_step_z"]
    max_pre_ratio: float = DEFAULTS["max_pre_ratio"]
    fdr: bool = True
    figures: str = "auto"
    workers: int = 1
    progress: bool = False
    source: str | None = None
    command: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("steps", ("final", "all")), ("ties", ("first", "fractional")),
                              ("figures", FIGURES), ("fmt", ("auto", *FORMATS))):
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **overrides: Any) -> Options:
        """Options from ``capscale emergence`` arguments.

        Raises
        ------
        capscale.errors.UsageError
            Neither ``--task`` nor ``--all-tasks`` was given.
        """
        if bool(args.task) == bool(args.all_tasks):
            raise UsageError("give exactly one of --task T or --all-tasks")
        kw: dict[str, Any] = {"tasks": None if args.all_tasks else (args.task,), "fmt": args.format,
                              "fdr": not args.no_fdr, "progress": not args.quiet and sys.stderr.isatty(),
                              "command": _cli_command(args)}
        return super().from_cli(args, **{**kw, **overrides})


def _api_command(source: str, options: Options) -> str:
    """The :func:`run` call of a run made from Python (its settings that differ from the defaults)."""
    skip = {"out", "progress", "workers", "source", "command"}
    changed = [f"{f.name}={getattr(options, f.name)!r}" for f in dataclasses.fields(options)
               if f.name not in skip and getattr(options, f.name) != f.default]
    return f"capscale.pipelines.emergence.run({source!r}, Options({', '.join(changed)}))"


def run(inputs: str | os.PathLike | pd.DataFrame, options: Options | None = None) -> RunResult:
    """Emergence verdicts for every task of one family: the Python equivalent of ``capscale emergence``.

    Parameters
    ----------
    inputs : path-like or pandas.DataFrame
        A path read by :func:`load_inputs` (store, ladder table, published evaluations), or a score store in
        memory (per-choice log-likelihoods in nats; see :mod:`capscale.data.store`).
    options : Options, optional
        Settings (default ``Options()``: every task of the only family, nothing written).

    Returns
    -------
    RunResult
        ``summary``: ``family``, ``reports`` (tasks analysed), ``figures`` (figures written) and
        ``verdicts`` (verdict per task); ``tables["verdicts"]``: the verdict table; ``notes``: what was
        read and excluded (also under ``guards`` in every report).

    Raises
    ------
    FileNotFoundError, capscale.errors.InputError, capscale.data.store.StoreValidationError
        As :func:`load_inputs` / :func:`store_inputs`: a missing input, an unknown family or task, an invalid
        store.
    """
    options = options or Options()
    if isinstance(inputs, pd.DataFrame):
        source = options.source or "the score store"
        task_inputs, notes = store_inputs(inputs, family=options.family, tasks=options.tasks, steps=options.steps,
                                          ties=options.ties, where=source)
    else:
        source = str(inputs)
        task_inputs, notes = load_inputs(inputs, family=options.family, tasks=options.tasks, fmt=options.fmt,
                                         steps=options.steps, ties=options.ties, shots=options.shots)
    out = Path(options.out) if options.out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    keep = out is not None and options.figures != "none"
    reports = scan(task_inputs, B=options.B, seed=options.seed, alpha=options.alpha, min_items=options.min_items,
                   fdr=options.fdr, progress=options.progress, keep_curves=keep, workers=options.workers,
                   min_jex=options.min_jex, min_step_z=options.min_step_z, max_pre_ratio=options.max_pre_ratio)
    command = options.command or _api_command(source, options)
    files: list[Path] = []
    n_fig = 0
    for r in reports:
        r.setdefault("guards", []).extend(notes)
        r["command"] = command
        if out is None:
            continue
        files.append(write_json(out / f"{safe_name(r['task'])}.json", r, drop_private=True))
        if keep and (options.figures == "all" or r["verdict"] in _FIGURE_VERDICTS
                     or len(reports) <= _AUTO_FIGURES_MAX_TASKS):
            figs = plot_report(r, out / "figures")
            files += figs
            n_fig += len(figs)
    table = verdict_table(reports)
    if out is not None:
        files.append(atomic_write(out / "verdicts.csv", lambda tmp: table.to_csv(tmp, index=False)))
    summary = {"family": task_inputs[0].family if task_inputs else options.family, "reports": len(reports),
               "figures": n_fig, "verdicts": {r["task"]: r["verdict"] for r in reports}}
    return RunResult(stage="emergence", out=out, files=files, summary=summary, tables={"verdicts": table},
                     notes=list(notes))
