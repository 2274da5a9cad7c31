"""Reading a stage's input from a path: a ladder table, a score store, or a folder of published evaluations.

:func:`read_ladder_or_store` is what ``capscale fit``, ``capscale predict`` and ``capscale backtest`` run on
their ``LADDER`` argument.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from capscale.analysis.chain import ladder_from_store
from capscale.data import store
from capscale.data.ladder_table import read_ladder, with_chance
from capscale.data.lmeval_results import load_bigscience_ladder, load_lmeval_results
from capscale.data.published import load_olmo_ladder, load_pythia_evals
from capscale.errors import InputError, UsageError

__all__ = ["guess_format", "read_ladder_or_store", "ladder_from_task_reader"]


def guess_format(path: str | os.PathLike) -> str:
    """The format of an input path, from its layout and (for a table) its columns.

    A folder with ``configs/final.json`` is the OLMo ladder (``"olmo-ladder"``), a folder with ``pythia-v1/`` or
    ``pythia-*`` is Pythia's evaluations (``"pythia-evals"``), a CSV/Parquet file with a ``metric`` column is a
    ladder table (``"ladder"``), anything else a score store (``"store"``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    capscale.errors.InputError
        A CSV/Parquet file whose header cannot be read (empty, truncated, not that format); names the file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{str(p)!r} does not exist")
    if p.is_dir() and (p / "configs" / "final.json").exists():
        return "olmo-ladder"
    if p.is_dir() and ((p / "pythia-v1").is_dir() or any(p.glob("pythia-*"))):
        return "pythia-evals"
    if p.is_dir() and not any(p.rglob("*.parquet")) and not any(p.rglob("*.csv")):
        if any(p.rglob("*_agg.json")):
            return "bigscience-evals"
        if any(p.rglob("*.json")):
            return "lmeval-results"
    if p.is_file() and p.suffix in (".csv", ".parquet"):
        try:
            if p.suffix == ".csv":
                cols = pd.read_csv(p, nrows=0).columns
            else:
                import pyarrow.parquet as pq

                cols = pq.read_schema(p).names
        except Exception as e:  # pandas' EmptyDataError/ParserError, pyarrow's ArrowInvalid, ...
            raise InputError(f"{str(p)!r}: cannot read the {p.suffix[1:]} header ({type(e).__name__}: {e}); "
                             "is the file empty or truncated?") from e
        return "ladder" if "metric" in cols else "store"
    return "store"


def ladder_from_task_reader(reader: store.TaskReader) -> tuple[pd.DataFrame, store.TaskReader]:
    """The ladder of a store on disk (:func:`capscale.analysis.chain.ladder_from_store` with the chance levels of
    :func:`capscale.data.ladder_table.with_chance`), built one task at a time: memory is one task's rows.

    Returns
    -------
    (ladder, reader)
        The ladder (the same rows as from the whole store in memory, task after task) and ``reader``.
    """
    pieces = []
    for t in reader.tasks:
        rows = reader.read_task(t)
        pieces.append(with_chance(ladder_from_store(rows), rows))
    return pd.concat(pieces, ignore_index=True), reader


def read_ladder_or_store(path: str | os.PathLike, fmt: str | None = None, *,
             targets: bool = True, tokens: Mapping[str, float] | None = None,
             sizes: Mapping[str, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Read LADDER for the CLI: a ladder table, a score store, or a folder of published data.

    Parameters
    ----------
    path : path-like
    fmt : {None, "ladder", "store", "olmo-ladder", "pythia-evals", "lmeval-results", "bigscience-evals"}
        ``None`` guesses: a folder holding ``configs/final.json`` is the OLMo ladder, one holding
        ``pythia-v1`` is Pythia, one holding ``*_agg.json`` the BigScience ladders, another folder of JSON
        files lm-eval results; a table with a ``metric`` column is a ladder table; otherwise a store.
    targets : bool
        For the OLMo ladder: include the 7B/13B target rows (backtests hold them out; a prediction
        must be fitted on the ladder runs only, so ``capscale predict`` passes False).
    tokens, sizes : mapping, optional
        For lm-eval results: D and N per model or family (:func:`capscale.data.lmeval_results.load_lmeval_results`;
        CLI ``--tokens``/``--sizes``).

    Returns
    -------
    (ladder, store)
        ``store`` is a :class:`capscale.data.store.TaskReader` when the input was a score store (the ladder is built
        from it one task at a time, and stages read its rows task by task), else ``None``.
    """
    p = Path(path)
    if fmt is None:
        fmt = guess_format(p)
    if fmt == "olmo-ladder":
        return load_olmo_ladder(p, targets=targets), None
    if fmt == "pythia-evals":
        return load_pythia_evals(p), None
    if fmt == "lmeval-results":
        return load_lmeval_results(p, tokens=tokens, sizes=sizes), None
    if fmt == "bigscience-evals":
        return load_bigscience_ladder(p), None
    if fmt == "ladder":
        return read_ladder(p), None
    if fmt == "store":
        return ladder_from_task_reader(store.TaskReader(p))
    raise UsageError(f"unknown format {fmt!r}: use ladder, store, olmo-ladder, pythia-evals, lmeval-results or "
                     "bigscience-evals")
