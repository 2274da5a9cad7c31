"""The score store: one tidy row per (checkpoint, task, item, choice).

Every stage of capscale reads and writes this one table. A store lives on disk as

* a single Parquet file (``scores.parquet``),
* a directory of Parquet shards (``store/<model>__<task>.parquet``, as written by ``capscale eval``), or
* a CSV file (for small hand-made stores).

Schema
------
Required columns

============== ======= ==============================================================
column         dtype   meaning
============== ======= ==============================================================
model_id       str     checkpoint identifier, unique within the store
family         str     model family the checkpoint belongs to
params         int     N, parameters
tokens         int     D, training tokens seen by this checkpoint
task           str     task name
doc_id         str/int item identifier within the task
choice_idx     int     0-based index of the choice
is_correct     bool    whether this choice is (one of) the gold answer(s)
loglik         float   log p(continuation | context), natural log (nats), summed over the
                       continuation's tokens, not length-normalised
============== ======= ==============================================================

Optional columns: ``step`` (int), ``compute`` (FLOPs; default ``6 * params * tokens``),
``n_tokens``, ``n_chars``, ``n_bytes`` (lengths of the choice continuation; ``n_chars`` and
``n_bytes`` exclude the target delimiter, as lm-eval's ``acc_norm``/``acc_bytes`` do),
``is_greedy`` (bool), ``seed`` (int), and free-form extras such as ``revision``, ``task_source``,
``multiple_input`` or ``multi_gold``.

Examples
--------
>>> import pandas as pd
>>> from capscale.data import store
>>> df = store.example_store()            # a tiny valid store
>>> store.validate(df) == []
True
>>> store.write(df, "/tmp/capscale-example.parquet")
>>> store.read("/tmp/capscale-example.parquet").shape == df.shape
True
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError, InputError, UsageError

__all__ = [
    "REQUIRED_COLUMNS",
    "migrate_legacy_shard",
    "OPTIONAL_COLUMNS",
    "KEY_COLUMNS",
    "Problem",
    "StoreValidationError",
    "read",
    "index",
    "TaskReader",
    "validate_path",
    "BY_TASK_BYTES",
    "INDEX_COLUMNS",
    "read_shard",
    "store_files",
    "shard_schema_problem",
    "write",
    "write_shard",
    "validate",
    "check",
    "coverage_warnings",
    "partial_coverage_warning",
    "doc_id_spelling_hint",
    "MAX_LISTED",
    "item_coverage",
    "LOGLIK_TOLERANCE",
    "normalize",
    "example_store",
    "shard_name",
    "legacy_shard_name",
    "shard_settings",
    "SHARD_SETTINGS_KEY",
]

#: Required columns and the kind of values they hold.
REQUIRED_COLUMNS: dict[str, str] = {
    "model_id": "str",
    "family": "str",
    "params": "int",
    "tokens": "int",
    "task": "str",
    "doc_id": "str|int",
    "choice_idx": "int",
    "is_correct": "bool",
    "loglik": "float",
}

#: Optional columns with a meaning capscale knows about.
OPTIONAL_COLUMNS: dict[str, str] = {
    "step": "int",
    "compute": "float",
    "n_tokens": "int",
    "n_chars": "int",
    "n_bytes": "int",
    "is_greedy": "bool",
    "seed": "int",
    "revision": "str",
    "task_source": "str",
    "multiple_input": "bool",
    "multi_gold": "bool",
}

#: A row is identified by these columns.
KEY_COLUMNS = ["model_id", "task", "doc_id", "choice_idx"]

# Internal provenance columns added while reading, used to name files and rows in errors.
_FILE = "_source_file"
_ROW = "_source_row"
#: At most this many rows (files, models, items) are listed in a :class:`Problem`.
MAX_LISTED = 10


@dataclass
class Problem:
    """One validation problem found in a store.

    Attributes
    ----------
    kind : str
        Short machine-readable name (``missing_column``, ``non_finite_loglik``, ...).
    message : str
        Human-readable explanation.
    column : str or None
        The column concerned, if any.
    rows : list of str
        Offending rows as ``file:row`` (0-based data rows) or, for in-memory frames, ``row N``.
    count : int
        Total number of offending rows or groups (``rows`` lists at most 10).
    """

    kind: str
    message: str
    column: str | None = None
    rows: list[str] = field(default_factory=list)
    count: int = 0

    def __str__(self) -> str:
        where = f" [column {self.column!r}]" if self.column else ""
        rows = ""
        if self.rows:
            more = f" ... and {self.count - len(self.rows)} more" if self.count > len(self.rows) else ""
            rows = "\n      at " + "; ".join(self.rows) + more
        return f"{self.kind}{where}: {self.message}{rows}"


#: Largest log-likelihood (nats) accepted: a log-probability is at most 0; this much above it is rounding noise.
LOGLIK_TOLERANCE = 1e-6


class StoreValidationError(CapscaleError, ValueError):
    """Raised when a store fails validation; carries every problem found."""

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"score store {source!r}" if source else "score store"
        lines = [f"{head} has {len(problems)} problem(s):"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))

    def __reduce__(self):
        """Pickle with the problems (exceptions cross process and Ray worker boundaries)."""
        return (self.__class__, (self.problems, self.source))


# ----------------------------------------------------------------------------------------------
# Reading and writing
# ----------------------------------------------------------------------------------------------


def _store_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in {".parquet", ".csv"} and p.is_file())
        files = [p for p in files if not p.name.startswith((".", "_tmp"))]
        if not files:
            raise FileNotFoundError(f"score store directory {str(path)!r} holds no .parquet or .csv shards")
        return files
    if not path.exists():
        raise FileNotFoundError(f"score store {str(path)!r} does not exist")
    if path.suffix not in {".parquet", ".csv"}:
        raise InputError(f"score store {str(path)!r}: expected a .parquet or .csv file, or a directory of them")
    return [path]


def _read_one(path: Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read one store file; a corrupt, truncated or mislabelled file raises an InputError naming it.

    Parameters
    ----------
    path : pathlib.Path
        A ``.parquet`` or ``.csv`` file.
    columns : iterable of str, optional
        Parquet only: read these columns (and the required ones) where present.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    capscale.errors.InputError
        The file cannot be parsed as its suffix says.
    """
    kind = "CSV" if path.suffix == ".csv" else "Parquet"
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        if columns is not None:
            import pyarrow.parquet as pq

            cols = list(dict.fromkeys([*REQUIRED_COLUMNS, *columns]))
            present = set(pq.read_schema(path).names)
            return pd.read_parquet(path, columns=[c for c in cols if c in present])
        return pd.read_parquet(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # pyarrow/pandas raise OSError, ArrowInvalid, ParserError, UnicodeDecodeError, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"score store file {str(path)!r} cannot be read as {kind} (corrupt, truncated or not a "
                         f"{kind} file?): {type(exc).__name__}: {reason[:300]}") from exc


#: Columns of :func:`index` read from every file (the model-level ones; ``compute``, ``run`` and ``step`` where
#: present).
INDEX_COLUMNS = ("model_id", "family", "task", "params", "tokens", "compute", "run", "step")
_INDEX_BATCH = 1 << 20


def _parquet_names(f: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(f).names)


def _one_model_file(pf, cols: list[str]) -> pd.DataFrame | None:
    """The index row of a Parquet file holding one (model, task), from its footer's statistics alone (the shards
    ``capscale eval`` writes); None when the statistics do not prove one value per column (then the columns are
    read). Floating columns (``compute``) are read, as NaN does not show in the statistics."""
    import pyarrow as pa

    md = pf.metadata
    if md.num_rows == 0 or md.num_row_groups == 0:
        return None
    where = {md.schema.column(i).path: i for i in range(md.num_columns)}
    row: dict[str, object] = {}
    floats = []
    for c in cols:
        if c not in where or pa.types.is_floating(pf.schema_arrow.field(c).type):
            floats.append(c)
            continue
        vals = set()
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(where[c]).statistics
            if st is None or not st.has_min_max or st.null_count is None or st.null_count > 0 or st.min != st.max:
                return None
            vals.add(st.min)
        if len(vals) != 1:
            return None
        row[c] = vals.pop()
    for c in floats:
        v = pd.unique(pf.read(columns=[c]).column(0).to_numpy(zero_copy_only=False))
        if len(v) != 1:
            return None
        row[c] = v[0]
    row["rows"] = md.num_rows
    return pd.DataFrame([row])[[*cols, "rows"]]


def _index_file(f: Path) -> pd.DataFrame:
    """The distinct (model, task) rows of one file with their row count; the file is read in batches of the
    :data:`INDEX_COLUMNS` only, so memory stays bounded by a batch, not by the file."""
    problem = shard_schema_problem(f)
    if problem and "missing (schema mismatch)" not in problem:
        raise InputError(f"score store file {str(f)!r} {problem}")
    if problem:  # the Problem that validate() reports for a missing column, naming the file
        names = list(pd.read_csv(f, nrows=0).columns) if f.suffix == ".csv" else _parquet_names(f)
        raise StoreValidationError([Problem("missing_column", f"required column {c!r} is missing in {f}; columns "
                                            f"present: {names}", column=c)
                                    for c in REQUIRED_COLUMNS if c not in names], str(f))
    if f.suffix == ".csv":
        names = list(pd.read_csv(f, nrows=0).columns)
        cols = [c for c in INDEX_COLUMNS if c in names]
        batches = pd.read_csv(f, usecols=cols, chunksize=_INDEX_BATCH)
    else:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(f)
            cols = [c for c in INDEX_COLUMNS if c in pf.schema_arrow.names]
            one = _one_model_file(pf, cols)
            if one is not None:
                return one
            batches = (b.to_pandas() for b in pf.iter_batches(columns=cols, batch_size=_INDEX_BATCH))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds; reported naming the file
            raise InputError(f"score store file {str(f)!r} cannot be read as Parquet: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}") from exc
    parts, offset = [], 0
    try:
        for d in batches:
            miss = d[["model_id", "family", "task"]].isna().any(axis=1).to_numpy()
            if miss.any():
                rows = [f"{f}:{offset + int(i)}" for i in np.flatnonzero(miss)[:MAX_LISTED]]
                raise StoreValidationError([Problem("missing_value", f"{int(miss.sum())} row(s) have no model_id, "
                                                    "family or task", "model_id", rows, int(miss.sum()))], str(f))
            offset += len(d)
            parts.append(d.groupby(cols, dropna=False, sort=False).size().rename("rows").reset_index())
    except (StoreValidationError, FileNotFoundError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged data page or CSV row: reported naming the file
        raise InputError(f"score store file {str(f)!r} cannot be read: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]}") from exc
    if not parts:
        return pd.DataFrame(columns=[*cols, "rows"])
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return out.groupby(cols, dropna=False, sort=False)["rows"].sum().reset_index()


def index(path: str | os.PathLike) -> pd.DataFrame:
    """Which models and tasks every file of a store holds, read cheaply (model-level columns only).

    The first step of every analysis that reads a store task by task (``capscale mass``, ``capscale emergence``):
    it lists the models of each (family, task) without reading log-likelihoods, checks what one file alone cannot
    (a model with different ``family``, ``params`` or ``tokens`` in two files), and tells :func:`read` which files
    to open for a selection.

    Parameters
    ----------
    path : path-like
        A store: Parquet or CSV file, or a directory of shards.

    Returns
    -------
    pandas.DataFrame
        One row per (file, model_id, task): ``file`` (path), ``model_id``, ``family``, ``task`` (str), ``params``,
        ``tokens`` (int), ``compute`` (FLOPs; ``6 * params * tokens`` where missing), ``run`` and ``step`` where the
        store has them, and ``rows`` (number of per-choice rows).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or holds no shards.
    capscale.errors.InputError
        A file cannot be read or lacks a required column (named).
    StoreValidationError
        A row without ``model_id``, ``family`` or ``task`` (file and row named), a non-integer ``params`` or
        ``tokens``, or a model whose ``family``, ``params`` or ``tokens`` differ between rows or files.

    Examples
    --------
    >>> from capscale.data import store
    >>> store.write(store.example_store(), "/tmp/capscale-index.parquet")
    >>> store.index("/tmp/capscale-index.parquet")[["model_id", "task", "params", "rows"]].shape
    (3, 4)
    """
    path = Path(path)
    parts, problems = [], []
    for f in _store_files(path):
        try:
            part = _index_file(f)
        except StoreValidationError as e:  # every file's problems, under the store's name
            problems += e.problems
            continue
        if len(part):
            parts.append(part.assign(file=str(f)))
    if problems:
        raise StoreValidationError(problems, str(path))
    if not parts:
        raise InputError(f"score store {str(path)!r} has no rows")
    idx = pd.concat(parts, ignore_index=True)
    for c in ("params", "tokens"):
        v = pd.to_numeric(idx[c], errors="coerce")
        bad = ~np.isfinite(v.to_numpy(dtype=float)) | (v.to_numpy(dtype=float) < 1) | (v != np.round(v)).to_numpy()
        if bad.any():
            rows = [f"model_id={m!r} in {f}" for m, f in idx.loc[bad, ["model_id", "file"]].head(MAX_LISTED)
                    .itertuples(index=False)]
            problems.append(Problem("bad_value", f"{int(bad.sum())} (model, task, file) group(s) where {c} is not a "
                                    "positive integer", c, rows, int(bad.sum())))
    if problems:
        raise StoreValidationError(problems, str(path))
    for c in ("model_id", "family", "task"):
        idx[c] = idx[c].astype(str)
    for c in ("params", "tokens"):
        idx[c] = pd.to_numeric(idx[c]).astype("int64")
    c6 = 6.0 * idx["params"].astype("float64") * idx["tokens"].astype("float64")
    idx["compute"] = (pd.to_numeric(idx["compute"]).astype("float64").fillna(c6) if "compute" in idx else c6)
    for c in ("family", "params", "tokens"):
        nun = idx.groupby("model_id", sort=False)[c].nunique(dropna=False)
        for m in nun.index[nun > 1][:MAX_LISTED]:
            sub = idx.loc[idx["model_id"] == m, [c, "file"]].drop_duplicates(c)
            where = "; ".join(f"{v!r} in {f}" for v, f in sub.itertuples(index=False))
            problems.append(Problem("inconsistent_model", f"model {m!r} has several values of {c}: {where}", c,
                                    [f"model_id={m!r}"], 1))
    if problems:
        raise StoreValidationError(problems, str(path))
    lead = ["file", "model_id", "family", "task", "params", "tokens", "compute"]
    return idx[lead + [c for c in ("run", "step") if c in idx.columns] + ["rows"]]


def _selection_mask(frame: pd.DataFrame, family: str | None, tasks: set[str] | None,
                    models: set[str] | None) -> np.ndarray:
    keep = np.ones(len(frame), dtype=bool)
    for col, want in (("family", None if family is None else {str(family)}), ("task", tasks), ("model_id", models)):
        if want is not None and col in frame.columns:
            keep &= frame[col].astype(str).isin(want).to_numpy()
    return keep


def _read_selected(f: Path, columns: Iterable[str] | None, family: str | None, tasks: set[str] | None,
                   models: set[str] | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of one store file in a selection, and their row numbers in the file.

    The file is read in batches of :data:`_INDEX_BATCH` rows, keeping each batch's selected rows only, so memory is
    the selection plus one batch, not the file (a single-file store read task by task). Errors name the file, as
    :func:`_read_one`'s do.
    """
    kind = "CSV" if f.suffix == ".csv" else "Parquet"
    parts, rows, offset = [], [], 0
    try:
        if f.suffix == ".csv":
            batches = pd.read_csv(f, chunksize=_INDEX_BATCH)
        else:
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            cols = None if columns is None else [c for c in dict.fromkeys([*REQUIRED_COLUMNS, *columns]) if c in names]
            batches = (b.to_pandas() for b in pf.iter_batches(batch_size=_INDEX_BATCH, columns=cols))
        for d in batches:
            keep = _selection_mask(d, family, tasks, models)
            if keep.any():
                parts.append(d[keep])
                rows.append(offset + np.flatnonzero(keep))
            offset += len(d)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # pyarrow/pandas raise OSError, ArrowInvalid, ParserError, UnicodeDecodeError, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"score store file {str(f)!r} cannot be read as {kind} (corrupt, truncated or not a "
                         f"{kind} file?): {type(exc).__name__}: {reason[:300]}") from exc
    if not parts:
        empty = _read_one(f, columns).iloc[:0]
        return empty, np.zeros(0, dtype=np.int64)
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    return frame, np.concatenate(rows)


def read(
    path: str | os.PathLike,
    *,
    validate_store: bool = True,
    multi_gold: bool = False,
    columns: Iterable[str] | None = None,
    warnings: list[Problem] | None = None,
    family: str | None = None,
    tasks: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    store_index: pd.DataFrame | None = None,
    allow: Iterable[str] = (),
) -> pd.DataFrame:
    """Read a score store from a Parquet file, a directory of Parquet/CSV shards, or a CSV file.

    With ``family``, ``tasks`` or ``models`` only the rows of that selection are read (and validated): files
    that hold none of them (by :func:`index`) are not opened, and the rest are read one at a time, so memory
    is that of the selection plus one file.

    Parameters
    ----------
    path : path-like
        File or directory.
    validate_store : bool, default True
        Validate after reading and raise :class:`StoreValidationError` listing every problem, each
        naming the file and row it was found in.
    multi_gold : bool, default False
        Allow items with several correct choices (otherwise exactly one is required). Rows with a
        true ``multi_gold`` column are always allowed several golds.
    columns : iterable of str, optional
        Read only these columns (Parquet only; the required columns are always read).
    warnings : list, optional
        If given, the :func:`coverage_warnings` of the store (items not scored by every model of their
        (family, task), with a hint when ``doc_id`` is spelled differently in different files) are appended to it.
    family, tasks, models : optional
        Read only rows of this family, of these tasks and of these ``model_id`` values.
    store_index : pandas.DataFrame, optional
        :func:`index` of ``path`` when already computed (a selection computes it otherwise).
    allow : iterable of str
        :class:`Problem` kinds that do not stop the read (e.g. ``"non_finite_loglik"``); they are appended to
        ``warnings`` when it is given.

    Returns
    -------
    pandas.DataFrame
        The store, normalised by :func:`normalize` (``compute`` filled in as 6·N·D FLOPs where missing).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or is a directory without shards.
    capscale.errors.InputError
        A file cannot be parsed (corrupt, truncated or not Parquet/CSV); the message names it.
    StoreValidationError
        The store is invalid (with ``validate_store=False``: only when it cannot even be normalised, e.g. a
        non-numeric ``params``; the same located problems :func:`validate` reports).
    """
    path = Path(path)
    task_set = None if tasks is None else {str(t) for t in tasks}
    model_set = None if models is None else {str(m) for m in models}
    selected = family is not None or task_set is not None or model_set is not None
    if selected:
        idx = index(path) if store_index is None else store_index
        hit = _selection_mask(idx, family, task_set, model_set)
        if not hit.any():
            what = ", ".join(f"{k}={v!r}" for k, v in (("family", family), ("tasks", sorted(task_set or [])),
                                                       ("models", sorted(model_set or [])[:5])) if v)
            raise InputError(f"score store {str(path)!r} has no rows with {what} (families: "
                             f"{sorted(idx['family'].unique())}, tasks: {sorted(idx['task'].unique())[:20]})")
        files = [Path(f) for f in pd.unique(idx.loc[hit, "file"])]
    else:
        files = _store_files(path)
    frames = []
    for f in files:
        if selected:
            frame, rows = _read_selected(f, columns, family, task_set, model_set)
        else:
            frame = _read_one(f, columns)
            rows = np.arange(len(frame))
        frame[_FILE] = str(f)
        frame[_ROW] = rows
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if validate_store:
        allowed = set(allow)
        problems = validate(df, multi_gold=multi_gold)
        hard = [p for p in problems if p.kind not in allowed]
        if hard:
            raise StoreValidationError(hard, str(path))
        if warnings is not None:
            warnings.extend(p for p in problems if p.kind in allowed)
    if warnings is not None:
        warnings.extend(coverage_warnings(df))
    raw = df
    df = df.drop(columns=[_FILE, _ROW])
    try:
        return normalize(df)
    except (ValueError, TypeError) as exc:
        # not validated, and not even normalisable: report it the way validate does, with files and rows
        problems = validate(raw, multi_gold=multi_gold)
        if problems:
            raise StoreValidationError(problems, str(path)) from exc
        raise


class TaskReader:
    """A store on disk, read one task at a time: what analyses that loop over tasks hold instead of the store.

    ``read_task(t)`` is :func:`read` with ``tasks=[t]`` (validated, normalised; only the files holding the task are
    opened), so memory is one task's rows. The last task read is kept, so reading it again costs nothing.

    Parameters
    ----------
    path : path-like
        The store (file or shard folder).
    store_index : pandas.DataFrame, optional
        Its :func:`index` (computed otherwise).
    models : iterable of str, optional
        Read only these ``model_id`` values.
    multi_gold : bool, default False
        As :func:`read`.

    Examples
    --------
    >>> from capscale.data import store
    >>> store.write(store.example_store(), "/tmp/capscale-tasks.parquet")
    >>> reader = store.TaskReader("/tmp/capscale-tasks.parquet")
    >>> [len(reader.read_task(t)) for t in reader.tasks]
    [48]
    """

    def __init__(self, path: str | os.PathLike, *, store_index: pd.DataFrame | None = None,
                 models: Iterable[str] | None = None, multi_gold: bool = False) -> None:
        self.path = Path(path)
        self.index = index(self.path) if store_index is None else store_index
        self.models = None if models is None else frozenset(str(m) for m in models)
        self.multi_gold = multi_gold
        self._last: tuple[str, pd.DataFrame] | None = None

    @property
    def tasks(self) -> list[str]:
        """The store's tasks (of the selected models), sorted."""
        idx = self.index if self.models is None else self.index[self.index["model_id"].isin(self.models)]
        return sorted(idx["task"].unique())

    def restrict(self, models: Iterable[str]) -> TaskReader:
        """The same store, read for ``models`` only (within this reader's selection)."""
        keep = {str(m) for m in models}
        return TaskReader(self.path, store_index=self.index, multi_gold=self.multi_gold,
                          models=keep if self.models is None else keep & self.models)

    def read_task(self, task: str) -> pd.DataFrame:
        """The task's rows (validated and normalised, as :func:`read`; InputError naming the tasks there are when
        the selection has none of it)."""
        if self._last is not None and self._last[0] == task:
            return self._last[1]
        df = read(self.path, tasks=[task], models=self.models, store_index=self.index, multi_gold=self.multi_gold)
        self._last = (task, df)
        return df

    def __repr__(self) -> str:
        return f"TaskReader({str(self.path)!r}, tasks={len(self.tasks)})"


#: A store on disk whose files add up to more than this (bytes) is validated one task at a time by
#: :func:`validate_path` (the same threshold at which ``capscale analyze`` streams).
BY_TASK_BYTES = 512 * 2**20


def validate_path(path: str | os.PathLike, *, multi_gold: bool = False, by_task: bool | None = None,
                  warnings: list[Problem] | None = None) -> dict[str, int]:
    """Validate a store on disk (``capscale validate``); raise :class:`StoreValidationError` with every problem.

    Parameters
    ----------
    path : path-like
        The store.
    multi_gold : bool, default False
        As :func:`validate`.
    by_task : bool, optional
        Read and validate one task at a time, so memory is one task's rows: :func:`index` checks what spans files
        and tasks (a model's family, params and tokens), and each task's rows are checked on their own (every
        other check of :func:`validate` is within a task). Problems then name their task. Default: by task when
        the store's files add up to more than :data:`BY_TASK_BYTES`.
    warnings : list, optional
        :func:`coverage_warnings` are appended to it (per task when ``by_task``).

    Returns
    -------
    dict
        ``rows``, ``models``, ``tasks`` and ``items`` ((task, doc_id) pairs) of a valid store.

    Raises
    ------
    StoreValidationError
        Every problem found (by task: every task's).
    """
    path = Path(path)
    if by_task is None:
        by_task = sum(f.stat().st_size for f in _store_files(path)) > BY_TASK_BYTES
    if not by_task:
        df = read(path, multi_gold=multi_gold, warnings=warnings)
        return {"rows": len(df), "models": int(df["model_id"].nunique()), "tasks": int(df["task"].nunique()),
                "items": int(df.groupby(["task", "doc_id"]).ngroups)}
    idx = index(path)
    tasks = sorted(idx["task"].unique())
    problems: list[Problem] = []
    items = 0
    for t in tasks:
        try:
            df = read(path, tasks=[t], store_index=idx, multi_gold=multi_gold, warnings=warnings)
        except StoreValidationError as e:
            problems += [dataclasses.replace(p, message=f"task={t!r}: {p.message}") for p in e.problems]
            continue
        items += int(df.groupby("doc_id").ngroups)
        del df
    if problems:
        raise StoreValidationError(problems, str(path))
    return {"rows": int(idx["rows"].sum()), "models": int(idx["model_id"].nunique()), "tasks": len(tasks),
            "items": items}


def store_files(path: str | os.PathLike) -> list[Path]:
    """The files of a store: the file itself, or a directory's ``.parquet``/``.csv`` shards (sorted, recursive).

    Hidden files and temporary files (``_tmp.*``, from an interrupted atomic write) are left out.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or is a directory without shards.
    capscale.errors.InputError
        ``path`` is a file that is neither ``.parquet`` nor ``.csv``.
    """
    return _store_files(Path(path))


def shard_schema_problem(path: str | os.PathLike) -> str | None:
    """Why one store file cannot be part of a store, from its footer (Parquet) or header (CSV) alone; None if it can.

    Cheap (no data pages are read): a corrupt or truncated Parquet footer, or a required column missing. Used to
    check every shard of a large store before anything is computed; content problems are found by
    :func:`read_shard`.
    """
    p = Path(path)
    try:
        if p.suffix == ".csv":
            names = list(pd.read_csv(p, nrows=0).columns)
        else:
            import pyarrow.parquet as pq

            names = pq.read_schema(p).names
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow/pandas raise many kinds; reported naming the file
        reason = " ".join(str(exc).split()) or type(exc).__name__
        kind = "CSV" if p.suffix == ".csv" else "Parquet"
        return (f"cannot be read as {kind} (corrupt, truncated or not a {kind} file?): {type(exc).__name__}: "
                f"{reason[:300]}")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        return f"required column(s) {missing} missing (schema mismatch); columns present: {names}"
    return None


def read_shard(path: str | os.PathLike, *, columns: Iterable[str] | None = None, multi_gold: bool = False,
               validate_store: bool = True) -> pd.DataFrame:
    """Read and validate one file of a store on its own (the unit of the streamed analysis).

    Parameters
    ----------
    path : path-like
        A ``.parquet`` or ``.csv`` file.
    columns : iterable of str, optional
        Parquet only: read only these columns where present (the required columns are always read).
    multi_gold : bool, default False
        Allow items with several correct choices.
    validate_store : bool, default True
        Run :func:`validate` on the file's rows: everything it checks within one file (checks across files,
        e.g. a model's ``params`` differing between two files, are the caller's).

    Returns
    -------
    pandas.DataFrame
        The file's rows, normalised by :func:`normalize`.

    Raises
    ------
    capscale.errors.InputError
        The file cannot be parsed.
    StoreValidationError
        The file's rows are invalid (problems name the file and rows).
    """
    p = Path(path)
    df = _read_one(p, columns)
    if validate_store and len(df):  # an empty file adds nothing to a store (read() accepts it among others)
        df[_FILE] = str(p)
        df[_ROW] = np.arange(len(df))
        problems = validate(df, multi_gold=multi_gold)
        if problems:
            raise StoreValidationError(problems, str(p))
        df = df.drop(columns=[_FILE, _ROW])
    return normalize(df)


def _atomic_write(df: pd.DataFrame, path: Path) -> None:
    from capscale._io import atomic_write

    atomic_write(path, (lambda tmp: df.to_csv(tmp, index=False)) if path.suffix == ".csv"
                 else (lambda tmp: df.to_parquet(tmp, index=False)))


def write(df: pd.DataFrame, path: str | os.PathLike, *, validate_store: bool = True) -> None:
    """Write a store atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    df : pandas.DataFrame
        The store.
    path : path-like
        ``.parquet`` or ``.csv`` file. To write a directory of shards use :func:`write_shard`.
    validate_store : bool, default True
        Refuse to write an invalid store (raises :class:`StoreValidationError`).
    """
    path = Path(path)
    if path.suffix not in {".parquet", ".csv"}:
        raise UsageError(f"cannot write score store to {str(path)!r}: use a .parquet or .csv file name")
    if validate_store:
        check(df, source=str(path))
    _atomic_write(normalize(df), path)


#: Parquet key-value metadata key of a shard's recorded settings (JSON; see :func:`write_shard`).
SHARD_SETTINGS_KEY = "capscale.shard"
#: Bytes of the readable part of a shard file name (model, task); the hash and suffix bring it under 255.
_NAME_BYTES = 100


def _clean_name(s: str, max_bytes: int) -> str:
    out = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in str(s))
    return out.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def legacy_shard_name(model_id: str, task: str) -> str:
    """The shard file name capscale used before names were made injective (``<model>__<task>.parquet``).

    Not injective (``sub/evil`` and ``sub_evil`` share it) and unbounded in length; kept only to recognise
    shards of stores written by older versions (:func:`capscale.eval.shards.plan_shards` renames them).
    """
    def clean(s: str) -> str:
        return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in str(s))

    return f"{clean(model_id)}__{clean(task)}.parquet"



def migrate_legacy_shard(out_dir: str | os.PathLike, model_id: str, task: str) -> None:
    """Rename a shard written under :func:`legacy_shard_name` to its injective name,
    when the file holds exactly this (checkpoint, task) (with colliding names it may hold another task's)."""
    legacy = Path(out_dir) / legacy_shard_name(model_id, task)
    target = Path(out_dir) / shard_name(model_id, task)
    if target.exists() or not legacy.is_file() or legacy == target:
        return
    try:
        got = pd.read_parquet(legacy, columns=["model_id", "task"])
    except Exception as e:  # noqa: BLE001 - any unreadable file, re-raised naming it
        raise InputError(f"shard {str(legacy)!r} cannot be read ({type(e).__name__}: {e}); delete it to "
                         "recompute") from e
    if set(got["model_id"].astype(str)) == {model_id} and set(got["task"].astype(str)) == {task}:
        os.replace(legacy, target)

def shard_name(model_id: str, task: str) -> str:
    """File name of the shard holding one (checkpoint, task): injective and safe on any file system.

    ``<model>__<task>-<hash>.parquet``: the readable part is the model id and task name with characters other
    than ``[A-Za-z0-9-_.=]`` replaced by ``_``, each cut to 100 bytes (UTF-8) and stripped of leading ``.``/``_``
    (which dataset readers treat as hidden); ``<hash>`` is the first 16 hex digits of the SHA-256 of the exact
    ``model_id`` and ``task``, so two different pairs never share a file (up to a 64-bit hash collision) and
    every name fits in 255 bytes.
    """
    import hashlib

    digest = hashlib.sha256(f"{model_id}\0{task}".encode()).hexdigest()[:16]
    stem = f"{_clean_name(model_id, _NAME_BYTES)}__{_clean_name(task, _NAME_BYTES)}".lstrip("._") or "shard"
    return f"{stem}-{digest}.parquet"


def shard_settings(path: str | os.PathLike) -> dict | None:
    """The settings recorded in a shard's Parquet metadata by :func:`write_shard` (None: none recorded).

    Raises
    ------
    InputError
        Naming the file when its footer cannot be read or the recorded settings are not JSON.
    """
    import json

    import pyarrow.parquet as pq

    try:
        md = pq.read_schema(path).metadata or {}
    except Exception as e:  # noqa: BLE001 - any unreadable footer, re-raised naming the file
        raise InputError(f"shard {str(path)!r} cannot be read ({type(e).__name__}: {e}); delete it to "
                         "recompute") from e
    raw = md.get(SHARD_SETTINGS_KEY.encode())
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise InputError(f"shard {str(path)!r}: recorded settings are not valid JSON: {e}") from e


def write_shard(df: pd.DataFrame, directory: str | os.PathLike, *, validate_store: bool = True,
                settings: dict | None = None) -> Path:
    """Atomically write the rows of one (checkpoint, task) into a shard directory.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of exactly one (model_id, task).
    directory : path-like
        The store folder.
    validate_store : bool, default True
        Refuse invalid rows (:class:`StoreValidationError`).
    settings : dict, optional
        JSON-able settings the rows were produced with, recorded in the file's Parquet key-value metadata
        under :data:`SHARD_SETTINGS_KEY` (read back with :func:`shard_settings`).

    Returns
    -------
    pathlib.Path
        The shard's path, ``directory/`` + :func:`shard_name`.
    """
    models, tasks = df["model_id"].unique(), df["task"].unique()
    if len(models) != 1 or len(tasks) != 1:
        raise InputError(
            f"a shard holds exactly one (model_id, task); got models {list(models)[:5]} and tasks {list(tasks)[:5]}"
        )
    path = Path(directory) / shard_name(models[0], tasks[0])
    if validate_store:
        check(df, source=str(path))
    if settings is None:
        _atomic_write(normalize(df), path)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    from capscale._io import atomic_write, dumps_json

    table = pa.Table.from_pandas(normalize(df), preserve_index=False)
    meta = {**(table.schema.metadata or {}), SHARD_SETTINGS_KEY.encode(): dumps_json(settings, indent=None).encode()}
    table = table.replace_schema_metadata(meta)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return path


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _where(df: pd.DataFrame, mask: np.ndarray | pd.Series) -> tuple[list[str], int]:
    idx = np.flatnonzero(np.asarray(mask))
    out = []
    for i in idx[:MAX_LISTED]:
        if _FILE in df.columns:
            out.append(f"{df[_FILE].iat[i]}:{int(df[_ROW].iat[i])}")
        else:
            out.append(f"row {int(i)}")
    return out, int(len(idx))


def _group_where(keys: pd.DataFrame, cols: list[str]) -> tuple[list[str], int]:
    out = [", ".join(f"{c}={r[c]!r}" for c in cols) for _, r in keys.head(MAX_LISTED).iterrows()]
    return out, len(keys)


def validate(df: pd.DataFrame, *, multi_gold: bool = False) -> list[Problem]:
    """Check a store against the schema and return every problem found (empty list if valid).

    Checks: required columns present; ``loglik`` finite and numeric (``-inf`` is rejected too: it
    usually means a tokenisation or masking bug) and not above 0 by more than :data:`LOGLIK_TOLERANCE`
    (1e-6 nats; a log-probability is at most 0); ``params``/``tokens`` positive integers;
    exactly one correct choice per (model, task, item) unless ``multi_gold`` (or a true
    ``multi_gold`` column for that item); no duplicate (model_id, task, doc_id, choice_idx) keys;
    the same number of choices for an item in every model; a single ``family``, ``params`` and
    ``tokens`` per ``model_id``. Items not scored by every model of their (family, task) are a warning, not a
    problem: see :func:`coverage_warnings` (``capscale validate`` prints both).

    Parameters
    ----------
    df : pandas.DataFrame
        The store (as read by :func:`read` with ``validate_store=False`` or built in memory).
    multi_gold : bool, default False
        Allow items with several correct choices.

    Returns
    -------
    list of Problem
    """
    problems: list[Problem] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    for c in missing:
        files = sorted(df[_FILE].unique()) if _FILE in df.columns else []
        problems.append(
            Problem(
                "missing_column",
                f"required column {c!r} is missing"
                + (f" in {', '.join(files[:5])}" if files else "")
                + f"; columns present: {[c for c in df.columns if not c.startswith('_source')]}",
                column=c,
            )
        )
    if missing:
        return problems
    if len(df) == 0:
        return [Problem("empty", "the store has no rows")]

    # loglik: numeric and finite
    ll = pd.to_numeric(df["loglik"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(ll)
    if bad.any():
        rows, n = _where(df, bad)
        problems.append(Problem("non_finite_loglik", f"{n} row(s) have a missing, non-numeric or infinite loglik",
                                "loglik", rows, n))
    with np.errstate(invalid="ignore"):
        positive = np.isfinite(ll) & (ll > LOGLIK_TOLERANCE)
    if positive.any():
        rows, n = _where(df, positive)
        problems.append(Problem("positive_loglik", f"{n} row(s) have a loglik above 0 (max {np.nanmax(ll[positive]):g}"
                                f" nats; tolerance {LOGLIK_TOLERANCE:g}): a log-probability cannot be positive — "
                                "is it a negated loss or a probability?", "loglik", rows, n))

    for col in ("model_id", "family", "task", "doc_id"):
        miss = df[col].isna().to_numpy()
        if miss.any():
            rows, n = _where(df, miss)
            problems.append(Problem("missing_value", f"{n} row(s) have no {col}", col, rows, n))

    for col in ("params", "tokens", "choice_idx"):
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        lo = 0 if col == "choice_idx" else 1
        badv = ~np.isfinite(v) | (v < lo) | (v != np.round(v))
        if badv.any():
            rows, n = _where(df, badv)
            what = "a non-negative integer" if col == "choice_idx" else "a positive integer"
            problems.append(Problem("bad_value", f"{n} row(s) where {col} is not {what}", col, rows, n))

    ic = df["is_correct"]
    if ic.dtype != bool:
        ok = ic.isin([True, False, 0, 1, "True", "False", "true", "false"]).to_numpy()
        if not ok.all():
            rows, n = _where(df, ~ok)
            problems.append(Problem("bad_value", f"{n} row(s) where is_correct is not a boolean", "is_correct",
                                    rows, n))
            return problems

    if "compute" in df.columns:
        cv = pd.to_numeric(df["compute"], errors="coerce").to_numpy(dtype=float)
        badc = ~(np.isnan(cv) | (cv > 0)) | np.isinf(cv)
        if badc.any():
            rows, n = _where(df, badc)
            problems.append(Problem("bad_value", f"{n} row(s) where compute is not a positive finite number of "
                                    "FLOPs", "compute", rows, n))

    # One family / params / tokens per model
    for col in ("family", "params", "tokens"):
        nun = df.groupby("model_id", sort=False)[col].nunique(dropna=False)
        inconsistent = nun[nun > 1]
        if len(inconsistent):
            rows = [f"model_id={m!r}" for m in inconsistent.index[:MAX_LISTED]]
            problems.append(Problem("inconsistent_model", f"{len(inconsistent)} model(s) have several values of "
                                    f"{col}", col, rows, len(inconsistent)))

    # Duplicate keys
    dup = df.duplicated(KEY_COLUMNS, keep=False).to_numpy()
    if dup.any():
        rows, n = _where(df, dup)
        problems.append(Problem("duplicate_key", f"{n} row(s) share a (model_id, task, doc_id, choice_idx) key "
                                "with another row", "choice_idx", rows, n))

    item = ["model_id", "task", "doc_id"]
    correct = df["is_correct"].astype(str).str.lower().isin(["true", "1"]) if ic.dtype != bool else ic
    g = correct.groupby([df[c] for c in item], sort=False)
    n_correct = g.sum()
    zero = n_correct[n_correct == 0]
    if len(zero):
        rows, n = _group_where(zero.reset_index(), item)
        problems.append(Problem("no_correct_choice", f"{n} item(s) have no correct choice", "is_correct", rows, n))
    several = n_correct[n_correct > 1]
    if len(several) and not multi_gold:
        allowed = pd.Series(False, index=several.index)
        if "multi_gold" in df.columns:
            mg = df["multi_gold"].fillna(False).astype(bool).groupby([df[c] for c in item], sort=False).any()
            allowed = mg.reindex(several.index).fillna(False)
        several = several[~allowed.to_numpy()]
        if len(several):
            rows, n = _group_where(several.reset_index(), item)
            problems.append(Problem("several_correct_choices", f"{n} item(s) have more than one correct choice "
                                    "(declare multi-gold with multi_gold=True or a 'multi_gold' column)",
                                    "is_correct", rows, n))

    # Same number of choices for an item in every model
    k = df.groupby(item, sort=False).size().rename("k").reset_index()
    nk = k.groupby(["task", "doc_id"], sort=False)["k"].nunique()
    diff = nk[nk > 1]
    if len(diff):
        rows = []
        for task, doc in diff.index[:MAX_LISTED]:
            sub = k[(k["task"] == task) & (k["doc_id"] == doc)]
            counts = ", ".join(f"{m}: {kk}" for m, kk in zip(sub["model_id"], sub["k"], strict=True))
            rows.append(f"task={task!r}, doc_id={doc!r} ({counts})")
        problems.append(Problem("choice_count_mismatch", f"{len(diff)} item(s) have a different number of choices "
                                "in different models", "choice_idx", rows, len(diff)))
    return problems


def check(df: pd.DataFrame, *, multi_gold: bool = False, source: str | None = None) -> None:
    """Validate and raise :class:`StoreValidationError` with every problem if there are any."""
    problems = validate(df, multi_gold=multi_gold)
    if problems:
        raise StoreValidationError(problems, source)


def _canonical_doc_id(df: pd.DataFrame) -> pd.Series:
    """``doc_id`` as :func:`normalize` would store it (so 0 and "0" are one item, "00" and 0 are two)."""
    return normalize(df[["doc_id"]])["doc_id"]


def item_coverage(df: pd.DataFrame, by: Iterable[str] = ("family", "task")) -> pd.DataFrame:
    """Which models score which items: one row per (group, doc_id).

    Parameters
    ----------
    df : pandas.DataFrame
        A score store (one row per choice) or a per-item table (one row per model and item); needs
        ``model_id``, ``doc_id`` and the ``by`` columns.
    by : iterable of str, default ("family", "task")
        The columns of one group; every model of a group should score every item of it.

    Returns
    -------
    pandas.DataFrame
        Columns: the ``by`` columns, ``doc_id`` (canonical, as :func:`normalize` writes it), ``n_models``
        (models of the group that score the item), ``n_models_group`` (models of the group) and ``covered``
        (``n_models == n_models_group``).
    """
    by = list(by)
    keys = df[[*by, "model_id"]].copy()
    keys["doc_id"] = _canonical_doc_id(df).to_numpy()
    keys = keys.drop_duplicates()
    per_item = keys.groupby([*by, "doc_id"], sort=True).size().rename("n_models").reset_index()
    n_group = keys.groupby(by, sort=True)["model_id"].nunique().rename("n_models_group").reset_index()
    out = per_item.merge(n_group, on=by, how="left")
    out["covered"] = out["n_models"] == out["n_models_group"]
    return out


def doc_id_spelling_hint(doc_ids: pd.Series, sources: pd.Series, label: str = "file(s)") -> str:
    """A hint when ``doc_id`` is an integer in some sources (files or models) and a string in others.

    The usual cause of items that seem to be scored by half of the models each. Used by
    :func:`coverage_warnings` and by the streamed analysis (which passes one or two ids per file).

    Parameters
    ----------
    doc_ids : pandas.Series
        Item ids as read (before :func:`normalize`).
    sources : pandas.Series
        Where each id was read from (same length): a file path or a ``model_id``.
    label : str, default "file(s)"
        What the sources are, for the message (``"model(s)"``).

    Returns
    -------
    str
        ``""`` when every source spells ids the same way, else a ``"; doc_id is an integer in ..."`` clause.
    """
    kinds: dict[str, list[str]] = {"integer": [], "string": []}
    examples: dict[str, object] = {}
    frame = pd.DataFrame({"source": sources.to_numpy(), "doc_id": doc_ids.to_numpy()})
    for name, d in frame.groupby("source", sort=True, observed=True)["doc_id"]:
        canon = normalize(pd.DataFrame({"doc_id": d.to_numpy()}))["doc_id"]
        kind = "integer" if pd.api.types.is_integer_dtype(canon) else "string"
        kinds[kind].append(str(name))
        examples.setdefault(kind, d.iloc[0])
    if not (kinds["integer"] and kinds["string"]):
        return ""
    return (f"; doc_id is an integer in {len(kinds['integer'])} {label} (e.g. {kinds['integer'][0]!r}, doc_id "
            f"{examples['integer']!r}) but a string in {len(kinds['string'])} {label} (e.g. {kinds['string'][0]!r}, "
            f"doc_id {examples['string']!r}): spell each item's doc_id the same way in every file")


def partial_coverage_warning(family: str, task: str, items_per_model: pd.Series, n_items: int, n_common: int,
                             hint: str = "") -> Problem:
    """The ``partial_item_coverage`` warning of one (family, task): which models lack items.

    Parameters
    ----------
    family, task : str
        The group.
    items_per_model : pandas.Series
        Number of the group's items each model scores, indexed by ``model_id`` (every model of the group).
    n_items : int
        Items scored by any model of the group.
    n_common : int
        Items scored by every model of the group.
    hint : str, optional
        Appended to the message (:func:`doc_id_spelling_hint`).

    Returns
    -------
    Problem
        ``rows`` name the models short of items with their counts (fewest first, at most :data:`MAX_LISTED`);
        ``count`` is the number of those models.
    """
    short = items_per_model[items_per_model < n_items].sort_values(kind="stable")
    rows = [f"model_id={m!r}: {int(k)} of {n_items} items" for m, k in short.head(MAX_LISTED).items()]
    return Problem(
        "partial_item_coverage",
        f"family={family!r}, task={task!r}: {n_items - n_common} of {n_items} item(s) are not scored by all "
        f"{len(items_per_model)} models ({len(short)} model(s) lack some; {n_common} item(s) are common to every "
        "model); analyses use the common items unless asked for all (`capscale analyze --items all`)" + hint,
        "doc_id", rows, len(short))


def coverage_warnings(df: pd.DataFrame) -> list[Problem]:
    """Items not scored by every model of their (family, task), one :class:`Problem` per group.

    Partial coverage is a warning, not a validation problem: a store that is still being evaluated, or a
    model evaluated on a subset, is usable. Analyses then compare models on the items every model of the
    group scored (:func:`capscale.analysis.chain.select_items`), counting what they leave out. When
    ``doc_id`` is an integer in some files (or models) and a string in others the message says so: the
    usual cause of items that seem to be scored by half of the models each.

    Parameters
    ----------
    df : pandas.DataFrame
        A score store (as read by :func:`read` with ``validate_store=False``, or in memory).

    Returns
    -------
    list of Problem
        Kind ``partial_item_coverage``; ``rows`` name the models short of items with their counts
        (``model_id='m6': 20 of 40 items``) and ``count`` is the number of those models (the message gives the
        number of items not covered).
    """
    needed = {"model_id", "family", "task", "doc_id"}
    if not needed <= set(df.columns) or len(df) == 0 or df[list(needed)].isna().any().any():
        return []
    cov = item_coverage(df)
    out: list[Problem] = []
    for (fam, task), g in cov.groupby(["family", "task"], sort=True):
        missing = int((~g["covered"]).sum())
        if not missing:
            continue
        sub = df[(df["family"] == fam) & (df["task"] == task)]
        have = sub.assign(_doc=_canonical_doc_id(sub).to_numpy()).groupby("model_id", sort=True)["_doc"].nunique()
        by_file = _FILE in sub.columns
        hint = doc_id_spelling_hint(sub["doc_id"], sub[_FILE] if by_file else sub["model_id"],
                                    "file(s)" if by_file else "model(s)")
        out.append(partial_coverage_warning(fam, task, have, len(g), int(g["covered"].sum()), hint))
    return out


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with canonical dtypes and ``compute = 6 * params * tokens`` (FLOPs) where missing.

    ``loglik`` becomes float64, ``params``/``tokens``/``choice_idx`` int64, ``is_correct`` bool, the
    string columns pandas strings (object), and ``doc_id`` is kept as int64 when every value is an
    integer, otherwise str.
    """
    out = df.copy()
    if "loglik" in out:
        out["loglik"] = pd.to_numeric(out["loglik"]).astype("float64")
    for c in ("params", "tokens", "choice_idx"):
        if c in out:
            out[c] = pd.to_numeric(out[c]).astype("int64")
    for c in ("step", "n_tokens", "n_chars", "n_bytes", "seed"):
        if c in out and not out[c].isna().any():
            out[c] = pd.to_numeric(out[c]).astype("int64")
    for c in ("is_correct", "is_greedy", "multiple_input", "multi_gold"):
        if c in out and out[c].dtype != bool and not out[c].isna().any():
            out[c] = out[c].astype(str).str.lower().isin(["true", "1"])
    for c in ("model_id", "family", "task"):
        if c in out:
            out[c] = out[c].astype(str)
    if "doc_id" in out:
        d = out["doc_id"]
        if not pd.api.types.is_integer_dtype(d):
            as_num = pd.to_numeric(d, errors="coerce")
            integral = bool(as_num.notna().all()) and bool((as_num == np.round(as_num)).all())
            if integral and pd.api.types.is_float_dtype(d):
                out["doc_id"] = as_num.astype("int64")
            elif integral and (d.astype(str) == as_num.astype("int64").astype(str)).all():
                out["doc_id"] = as_num.astype("int64")
            else:
                out["doc_id"] = d.astype(str)
    if {"params", "tokens"} <= set(out.columns):
        c6 = 6.0 * out["params"].astype("float64") * out["tokens"].astype("float64")
        if "compute" not in out:
            out["compute"] = c6
        else:
            out["compute"] = pd.to_numeric(out["compute"]).astype("float64").fillna(c6)
    return out


def example_store(n_models: int = 3, n_items: int = 4, k: int = 4, seed: int = 0) -> pd.DataFrame:
    """A tiny valid store with random log-likelihoods (for docs and quick experiments).

    Larger models get a larger log-likelihood on the correct choice on average.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_models):
        params, tokens = int(10 ** (6 + m)), int(2e7 * 10**m)
        for d in range(n_items):
            gold = d % k
            for c in range(k):
                ll = -10.0 + rng.normal() + (1.5 * m if c == gold else 0.0)
                rows.append(dict(model_id=f"m{m}", family="example", params=params, tokens=tokens, task="toy",
                                 doc_id=d, choice_idx=c, is_correct=c == gold, loglik=ll, n_chars=5 + c,
                                 n_bytes=5 + c))
    return normalize(pd.DataFrame(rows))
