"""Read emergence inputs from a file or folder: a score store, a ladder table, Pythia's or OLMo's evaluations.

:func:`load_inputs` is what ``capscale emergence INPUT`` runs before :func:`capscale.analysis.emergence.scan`: it detects
the input's format (:func:`detect_format`), selects one family and its tasks, and returns one
:class:`~capscale.analysis.emergence.inputs.TaskInput` per task plus notes on what was read and excluded (recorded under
``guards`` in every report).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from capscale.analysis.emergence.inputs import TaskInput

__all__ = ["FORMATS", "detect_format", "load_inputs"]

#: Input formats :func:`load_inputs` reads (``"auto"`` detects one of them).
FORMATS = ("store", "ladder", "pythia-evals", "pythia-all", "olmo-ladder")


def detect_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """The format of ``path``: ``fmt`` itself unless it is ``"auto"``.

    A folder with ``configs/final.json`` is the OLMo ladder, a folder with ``pythia-v1/`` or ``pythia-*`` is
    Pythia's evaluations, a CSV/Parquet file with a ``metric`` column is a ladder table, anything else a score
    store.
    """
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {list(FORMATS)} or 'auto'")
        return fmt
    path = Path(path)
    if path.is_dir() and (path / "configs" / "final.json").exists():
        return "olmo-ladder"
    if path.is_dir() and ((path / "pythia-v1").is_dir() or any(path.glob("pythia-*"))):
        return "pythia-evals"
    if path.is_file() and path.suffix in (".csv", ".parquet"):
        if path.suffix == ".csv":
            import pandas as pd

            cols = pd.read_csv(path, nrows=0).columns
        else:
            import pyarrow.parquet as pq

            cols = pq.read_schema(path).names
        return "ladder" if "metric" in cols else "store"
    return "store"


def _read_store(path: Path) -> tuple[object, list[str]]:
    """Read a store without failing on non-finite logliks (the emergence guard excludes those items)."""
    from capscale.data import store

    df = store.read(path, validate_store=False)
    problems = store.validate(df, multi_gold=True)
    hard = [p for p in problems if p.kind != "non_finite_loglik"]
    if hard:
        raise store.StoreValidationError(hard, str(path))
    soft = [str(p) for p in problems if p.kind == "non_finite_loglik"]
    return df, soft


def _select(frame, path: Path, family: str | None, tasks: Sequence[str] | None) -> tuple[str, list[str]]:
    fams = sorted(frame["family"].astype(str).unique())
    fam = family or (fams[0] if len(fams) == 1 else None)
    if fam is None or fam not in fams:
        raise ValueError(f"family must be one of {fams}" + (f", not {family!r}" if family else "") + f" ({path})")
    have = sorted(frame.loc[frame["family"].astype(str) == fam, "task"].astype(str).unique())
    want = have if tasks is None else list(tasks)
    unknown = [t for t in want if t not in have]
    if unknown:
        raise ValueError(f"task(s) {unknown} not in {path} for family {fam!r}; it has {have}")
    return fam, want


def load_inputs(path: str | os.PathLike, *, family: str | None = None, tasks: Sequence[str] | None = None,
                fmt: str = "auto", steps: str = "final", ties: str = "first",
                shots: int = 0) -> tuple[list[TaskInput], list[str]]:
    """One :class:`TaskInput` per task of one family, read from ``path``.

    Parameters
    ----------
    path : path-like
        A score store (file or shard folder), a ladder table (CSV/Parquet with a ``metric`` column), Pythia's
        evaluation folder or the OLMo ladder folder of ``../shared/data``.
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
    ValueError
        Unknown format, family or task (naming what the input has); an invalid store
        (:class:`capscale.data.store.StoreValidationError`).
    """
    from capscale.analysis import chain
    from capscale.analysis.emergence.inputs import (
        drop_nonfinite_items,
        final_checkpoints,
        from_items,
        from_ladder,
    )
    from capscale.data import ladder_table as datasets

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    fmt = detect_format(path, fmt)
    notes: list[str] = [f"input format: {fmt}"]
    if fmt == "store":
        df, soft = _read_store(path)
        notes += soft
        fam, want = _select(df, path, family, tasks)
        df = df[(df["family"].astype(str) == fam) & df["task"].isin(want)]
        if steps == "final":
            df, note = final_checkpoints(df)
            if note:
                notes.append(note)
        df, dropped = drop_nonfinite_items(df)
        items = chain.compute(df)
        out = []
        for t in want:
            ti = from_items(items, t, fam, ties=ties)
            if dropped.get(t):
                ti.exclusions["items_nonfinite_loglik"] = dropped[t]
                ti.guards.append(f"{dropped[t]} item(s) with a NaN/inf loglik were excluded for every model")
            out.append(ti)
        return out, notes
    if fmt == "pythia-evals":
        from capscale.data.published import attach_stderr, pythia_stderr

        ladder = attach_stderr(datasets.load_pythia_evals(path, params="non_embedding"), pythia_stderr(path))
        notes.append("Pythia: datasets.load_pythia_evals(params='non_embedding') + stderr from the JSONs")
    elif fmt == "pythia-all":
        from capscale.data.published import load_pythia_tasks

        ladder, skipped = load_pythia_tasks(path, shots=shots)
        notes.append(f"Pythia, every accuracy task of the {shots}-shot files (capscale.data.published."
                     f"load_pythia_tasks, non-embedding N); skipped: {skipped}")
    elif fmt == "olmo-ladder":
        ladder = datasets.load_olmo_ladder(path)
    else:
        ladder = datasets.read_ladder(path)
    fam, want = _select(ladder, path, family, tasks)
    sub = ladder[ladder["family"] == fam]
    out = []
    for t in want:
        ch = {}
        if fmt in ("pythia-evals", "pythia-all", "olmo-ladder") or t in datasets.CHANCE:
            c = datasets.chance_of(t)
            ch = {"acc": c, "acc_norm": c, "acc_bytes": c, "p_choices": c}
        out.append(from_ladder(sub, fam, t, steps=steps, chance=ch))
    return out, notes
