"""The streamed ``capscale analyze``: a store of any size, shard by shard, in bounded memory, on processes or Ray.

:func:`capscale.pipelines.analyze.run` uses this module when it streams (``Options.stream``). Two passes, each a set
of independent jobs:

1. **Chain, per store shard** (:func:`chain_shard`). Every store file holds whole items (all choices of an item
   for one checkpoint, as ``capscale eval`` writes them), so the chain of one file needs nothing from the others.
   A job reads only the columns the chain uses (Parquet column projection), validates the file on its own
   (:func:`capscale.data.store.read_shard`), keeps the ``--family``/``--tasks`` rows, calls the one chain
   implementation (:func:`capscale.analysis.chain.compute`) and writes the file's per-item rows atomically to
   ``OUT/per_item.parquet/`` (a Parquet dataset, one file per store file; ``pandas.read_parquet`` reads the
   folder). The file's footer records what it was computed from (source path, size and mtime, the selection), so
   an interrupted run resumes from the files already written and a changed source is recomputed.
2. **Correlations and summaries, per (family, task)** (:func:`analyse_group`), in blocks of items. A job first
   reads the key columns of its group from the per-item files, file by file, into a per item and model summary
   (:class:`_GroupIndex`: which model scored which item, one byte per model x item, and each item's number of
   choices), which is enough to check what one file alone cannot (an item in two files, an item with a different
   number of choices in different models), to select the items (``--items``) and to count the coverage. It then
   reads the analysed items in blocks of consecutive items of about ``block_rows`` model x item rows (every
   model's rows of an item in one block; correlations across models are per item, so blocks are independent),
   counts each block's metric coverage, correlates it (:func:`capscale.analysis.correlate.per_item_correlations`)
   and keeps the per-model moments and a sample for the group's figures. The driver concatenates the groups'
   parts in (family, task) order, so every table equals the in-memory path's.

Memory: a pass-1 job holds one store file; a pass-2 job holds one block (``block_rows`` rows, about 200 bytes each
with every metric column: 0.2 GB at the default 1,000,000) plus the group's per item and model summary (1 byte
per model x item: 12.5 MB for 500 checkpoints x 25,000 items), so it is independent of the number of shards and,
up to that summary, of the size of the task. Precision: everything stays float64, as in memory, so that the
results are identical to it: float32 would not do for the chain's log-sum-exp of log-likelihoods of hundreds of
nats (off by 1e-5 nats), nor for the correlations, which the tests compare to the in-memory ones at 1e-9 (float32
holds 7 significant digits).

Executors: ``"local"`` runs the jobs in this process (``workers=1``) or a pool of ``workers`` processes;
``"ray"`` runs pass 1 as one Ray task per store file through :func:`capscale.eval.ray.run_ray` (skips, bounded
retries, ``write_from`` as for ``capscale eval``) and pass 2 on Ray when the workers write (``write_from="worker"``:
``OUT`` is on a shared file system), else on the driver's machine with ``workers`` processes. The store must be
readable at the same path on every node that runs pass-1 tasks.

Bad shards: every file's footer (Parquet) or header (CSV) is checked before anything is computed, and its rows when
its job runs. A bad file is reported by path; with ``skip_bad_shards`` it is left out and counted, otherwise the
run stops before any result table is written (the per-item files already written stay, for the rerun to resume
from).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from capscale._io import atomic_write, atomic_write_bytes, safe_name
from capscale.analysis import chain, correlate
from capscale.data import store as _store
from capscale.errors import CapscaleError, InputError, UsageError

__all__ = ["PER_ITEM", "CHAIN_COLUMNS", "EXECUTORS", "BadShardError", "ShardJob", "GroupJob", "plan_shards",
           "chain_shard", "analyse_group", "read_per_item", "run_shards", "run_groups", "shard_info"]

#: Name of the per-item Parquet dataset (a folder) inside the results folder.
PER_ITEM = "per_item.parquet"
#: Store columns the chain reads (the rest of a shard is never read).
CHAIN_COLUMNS = (*_store.REQUIRED_COLUMNS, "compute", "step", "seed", "revision", "n_chars", "n_bytes", "is_greedy",
                 "multiple_input", "task_source", "multi_gold")
#: Executors of the streamed analysis.
EXECUTORS = ("local", "ray")
#: Footer key of a per-item file's provenance (JSON).
_META_KEY = b"capscale.per_item"
_FORMAT = 1
_KEY_COLUMNS = ["model_id", "family", "task", "doc_id", "compute", "params", "n_choices"]
_FIGURE_METRICS = ("log_p_vocab_correct", "log_p_vocab_incorrect", "p_choices_correct", "brier", "acc")
#: The order of :func:`capscale.analysis.chain.compute`'s columns (files lacking some are joined in this order).
_COMPUTE_COLUMN_ORDER = ["model_id", "task", "doc_id", "family", "params", "tokens", "compute", "step", "seed",
                         "revision", "n_choices", "log_p_vocab_correct", "p_vocab_correct", "log_p_choices_correct",
                         "p_choices_correct", "acc", "acc_first", "acc_norm", "acc_bytes", "neg_bpb", "brier",
                         "log_p_vocab_incorrect", "log_p_vocab_choices", "max_incorrect", "margin", "choice_logodds",
                         "target_is_greedy", "multiple_input", "task_source"]
#: Points drawn in a group's mass scatter (a deterministic sample above this).
MASS_FIGURE_POINTS = 200_000
#: Model x item rows of one (family, task) that a pass-2 job holds at a time (about 200 bytes each).
BLOCK_ROWS = 1_000_000


class BadShardError(InputError):
    """One store file cannot be used (unreadable, schema mismatch, invalid rows); the message names it."""


# --------------------------------------------------------------------------------------------- pass 1: chain


@dataclass(frozen=True)
class ShardJob:
    """Pass 1 for one store file: read it, chain it, write its per-item rows to ``dest``.

    Attributes
    ----------
    source : str
        The store file (absolute path).
    dest : str
        Its per-item file in ``OUT/per_item.parquet/``.
    family : str or None
        Keep only this family's rows.
    tasks : tuple of str or None
        Keep only these tasks' rows.
    multi_gold : bool
        Allow items with several correct choices.
    """

    source: str
    dest: str
    family: str | None = None
    tasks: tuple[str, ...] | None = None
    multi_gold: bool = False

    def signature(self) -> dict[str, Any]:
        """What the per-item file is computed from; a file whose recorded signature differs is recomputed."""
        st = os.stat(self.source)
        return {"format": _FORMAT, "source": self.source, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "family": self.family, "tasks": list(self.tasks) if self.tasks is not None else None,
                "multi_gold": self.multi_gold}


def _dest_name(rel: str) -> str:
    digest = hashlib.sha256(rel.encode()).hexdigest()[:16]
    stem = safe_name(Path(rel).with_suffix("").as_posix().replace("/", "__"))[:100].lstrip("._") or "shard"
    return f"{stem}-{digest}.parquet"


def plan_shards(store_path: str | os.PathLike, out: Path, *, family: str | None, tasks: tuple[str, ...] | None,
                multi_gold: bool) -> tuple[list[ShardJob], list[dict[str, str]], dict[str, Any]]:
    """The pass-1 jobs of a store, after a cheap check of every file (footer or header; selection columns).

    Returns
    -------
    jobs : list of ShardJob
        One per usable file with rows in the selection.
    bad : list of dict
        ``{"path", "error"}`` per file that cannot be used.
    seen : dict
        ``families`` and ``tasks`` present in the store (only read when a selection is given) and ``files``.
    """
    import pyarrow.parquet as pq

    root = Path(store_path).resolve()
    files = _store.store_files(root)
    base = root if root.is_dir() else root.parent
    dest_dir = out / PER_ITEM
    jobs: list[ShardJob] = []
    bad: list[dict[str, str]] = []
    families: set[str] = set()
    tasks_seen: set[str] = set()
    for f in files:
        problem = _store.shard_schema_problem(f)
        if problem:
            bad.append({"path": str(f), "error": f"score store file {str(f)!r} {problem}"})
            continue
        if f.suffix == ".parquet" and pq.read_metadata(f).num_rows == 0:
            continue
        if family is not None or tasks is not None:
            try:
                sel = (pq.read_table(f, columns=["family", "task"]).to_pandas() if f.suffix == ".parquet"
                       else pd.read_csv(f, usecols=["family", "task"]))
            except Exception as e:  # noqa: BLE001 - a damaged data page: reported naming the file
                bad.append({"path": str(f), "error": f"score store file {str(f)!r} cannot be read: "
                            f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"})
                continue
            fam, tsk = sel["family"].astype(str), sel["task"].astype(str)
            families |= set(fam.unique())
            keep = np.ones(len(sel), dtype=bool)
            if family is not None:
                keep &= (fam == family).to_numpy()
            tasks_seen |= set(tsk[keep].unique())
            if tasks is not None:
                keep &= tsk.isin(tasks).to_numpy()
            if not keep.any():
                continue
        rel = f.relative_to(base).as_posix()
        jobs.append(ShardJob(source=str(f), dest=str(dest_dir / _dest_name(rel)), family=family, tasks=tasks,
                             multi_gold=multi_gold))
    return jobs, bad, {"families": families, "tasks": tasks_seen, "files": len(files)}


def chain_shard(job: ShardJob) -> tuple[bytes, dict[str, Any]]:
    """Pass 1 for one store file: its per-item rows as Parquet bytes, and what they hold.

    Returns
    -------
    data : bytes
        A Parquet file of :func:`capscale.analysis.chain.compute` on the file's selected rows; its footer
        holds ``info`` (key ``capscale.per_item``).
    info : dict
        The job's signature plus ``rows`` (store rows read), ``items`` (per-item rows), ``pairs``
        ([family, task] present), ``models`` ({model_id: [family, params, tokens, compute]}), ``doc_id_int``.

    Raises
    ------
    BadShardError
        The file cannot be read or its rows are invalid (the message names the file and rows).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sig = job.signature()
    try:
        df = _store.read_shard(job.source, columns=CHAIN_COLUMNS, multi_gold=job.multi_gold)
    except CapscaleError as e:
        raise BadShardError(str(e)) from e
    if job.family is not None:
        df = df[df["family"] == job.family]
    if job.tasks is not None:
        df = df[df["task"].isin(job.tasks)]
    items = chain.compute(df)
    models = items.groupby("model_id", sort=True)[["family", "params", "tokens", "compute"]].first()
    info = {**sig, "rows": int(len(df)), "items": int(len(items)),
            "pairs": [list(k) for k in items[["family", "task"]].drop_duplicates().sort_values(["family", "task"])
                      .itertuples(index=False)],
            "models": {str(m): [str(r.family), int(r.params), int(r.tokens), float(r.compute)]
                       for m, r in models.iterrows()},
            "doc_id_int": bool(pd.api.types.is_integer_dtype(items["doc_id"]))}
    table = pa.Table.from_pandas(items, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(info).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes(), info


def shard_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance recorded in a per-item file's footer (None: not a complete per-item file)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return None
    try:
        md = pq.read_schema(p).metadata or {}
        raw = md.get(_META_KEY)
        return json.loads(raw) if raw else None
    except Exception:  # noqa: BLE001 - unreadable: recompute it
        return None


def _resumable(job: ShardJob) -> dict[str, Any] | None:
    """The info of ``job.dest`` when it was computed from the same file and selection as ``job`` would be."""
    info = shard_info(job.dest)
    if info is None:
        return None
    sig = job.signature()
    return info if all(info.get(k) == v for k, v in sig.items()) else None


def _local_shard(job: ShardJob) -> tuple[str, dict[str, Any] | str]:
    """Pass-1 body in a local process: write the per-item file; ("ok", info) or ("bad", message)."""
    try:
        data, info = chain_shard(job)
    except BadShardError as e:
        return "bad", str(e)
    atomic_write_bytes(job.dest, data)
    return "ok", info


def _ray_shard(job: ShardJob, _options: Any = None) -> Any:
    """Pass-1 body of a Ray task: the per-item file's bytes for :func:`capscale.eval.ray.run_ray` to write."""
    from capscale.eval.ray import ShardPayload

    data, info = chain_shard(job)
    return ShardPayload(data=data, meta=info)


def _no_check(df: pd.DataFrame, path: Path) -> None:
    """Per-item payloads are checked in :func:`chain_shard`; nothing to validate as a store."""


@dataclass
class ShardsOutcome:
    """What pass 1 did: infos of the per-item files (in job order), bad files, counts."""

    infos: list[dict[str, Any]]
    bad: list[dict[str, str]]
    computed: int = 0
    resumed: int = 0
    seconds: float = 0.0
    ray: dict[str, Any] = field(default_factory=dict)


def make_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` fresh (spawned) processes for the jobs of both passes (start-up is paid once)."""
    import multiprocessing as mp

    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))


def _run_local(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int, *, desc: str, progress: bool,
               stop: Callable[[Any], bool] | None = None, pool: ProcessPoolExecutor | None = None) -> list[Any]:
    """``[fn(job) for job in jobs]`` in this process or a pool (``pool``, else one made here); results in order.

    ``stop(result)`` true for a result leaves the jobs not submitted yet undone (their slots stay ``None``).
    """
    results: list[Any] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                results[i] = fn(job)
                bar.update(1)
                if stop is not None and stop(results[i]):
                    break
            return results
        with contextlib.nullcontext(pool) if pool is not None else make_pool(min(workers, len(jobs))) as ex:
            # a bounded window of submitted jobs: thousands of shards never queue all at once
            it = iter(enumerate(jobs))
            pending: dict[Any, int] = {}

            def submit_next() -> bool:
                try:
                    i, job = next(it)
                except StopIteration:
                    return False
                pending[ex.submit(fn, job)] = i
                return True

            for _ in range(2 * workers):
                if not submit_next():
                    break
            stopped = False
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    results[i] = fut.result()
                    bar.update(1)
                    if stop is not None and stop(results[i]):
                        stopped = True
                    if not stopped:
                        submit_next()
            return results
    finally:
        bar.close()


def run_shards(jobs: list[ShardJob], *, workers: int = 1, executor: str = "local", address: str | None = None,
               write_from: str = "driver", max_retries: int = 2, skip_bad: bool = False,
               progress: bool = False, pool: ProcessPoolExecutor | None = None) -> ShardsOutcome:
    """Pass 1 for every job: resume finished per-item files, compute the others; stop at a bad file unless skipping.

    Returns
    -------
    ShardsOutcome
        ``infos`` for every usable file (resumed or computed), ``bad`` the files that could not be used.
    """
    t0 = time.perf_counter()
    infos: list[dict[str, Any] | None] = [None] * len(jobs)
    todo: list[int] = []
    for i, job in enumerate(jobs):
        info = _resumable(job)
        if info is not None:
            infos[i] = info
        else:
            todo.append(i)
    resumed = len(jobs) - len(todo)
    bad: list[dict[str, str]] = []
    ray_info: dict[str, Any] = {}
    if todo and executor == "ray":
        from capscale.eval.ray import run_ray

        sub = [jobs[i] for i in todo]
        report = run_ray(sub, _ray_shard, None, Path(sub[0].dest).parent, shard_path=lambda j: j.dest,
                         shard_key=lambda j: j.source, address=address, num_cpus=workers if address is None else None,
                         gpus_per_shard=0, cpus_per_shard=1.0, max_retries=max_retries, write_from=write_from,
                         skip_done=False, check_fn=_no_check, progress=progress)
        ray_info = {"wall_seconds": report.wall_seconds, "write_from": write_from, "address": address,
                    "retried": len(report.retried)}
        failed_other = []
        for i, o in zip(todo, report.outcomes, strict=True):
            if o.status == "failed":
                last = o.errors[-1] if o.errors else "unknown error"
                if last.startswith("BadShardError"):
                    bad.append({"path": jobs[i].source, "error": last.split(": ", 1)[-1]})
                else:
                    failed_other.append(f"{jobs[i].source}: " + " | ".join(o.errors))
            else:
                infos[i] = shard_info(jobs[i].dest)
        if failed_other:
            from capscale.eval.ray import ExecutorError

            raise ExecutorError(f"{len(failed_other)} shard(s) failed on Ray after {max_retries + 1} attempt(s): "
                                + "; ".join(failed_other[:5]))
    elif todo:
        sub = [jobs[i] for i in todo]
        res = _run_local(_local_shard, sub, workers, desc="chain (shards)", progress=progress,
                         stop=None if skip_bad else (lambda r: r[0] == "bad"), pool=pool)
        for i, r in zip(todo, res, strict=True):
            if r is None:
                continue
            if r[0] == "bad":
                bad.append({"path": jobs[i].source, "error": r[1]})
            else:
                infos[i] = r[1]
    return ShardsOutcome(infos=[x for x in infos if x is not None], bad=bad, computed=len(todo) - len(bad),
                         resumed=resumed, seconds=time.perf_counter() - t0, ray=ray_info)


# --------------------------------------------------------------------------------------- pass 2: per group


@dataclass(frozen=True)
class GroupJob:
    """Pass 2 for one (family, task): correlations, summaries, coverage and figures from the per-item files.

    Attributes
    ----------
    family, task : str
    files : tuple of str
        The per-item files holding rows of the group.
    sources : tuple of str
        The store file of each (named in messages).
    items : {"common", "all"}
    methods : tuple of str
    doc_id_str : bool
        Read ``doc_id`` as strings (the store spells it as an integer in some files and a string in others).
    part : str
        Where the group's correlations are written (Parquet).
    figures_dir : str or None
        Write the group's figures here.
    store : str
        The store, named in validation errors.
    block_rows : int
        Model x item rows of the group held at a time (a block of consecutive items; :func:`analyse_group`).
    """

    family: str
    task: str
    files: tuple[str, ...]
    sources: tuple[str, ...]
    items: str
    methods: tuple[str, ...]
    doc_id_str: bool
    part: str
    figures_dir: str | None
    store: str
    block_rows: int = BLOCK_ROWS


def _group_table(h: Any, job: GroupJob, columns: Sequence[str], whole: bool = False) -> tuple[Any, set[str]]:
    """The rows of one per-item file that belong to the group, ``columns`` of them that the file has (Arrow).

    ``whole``: every row of the file is known to belong to the group (its family and task are not read).
    """
    import pyarrow.compute as pc

    have = set(h.schema_arrow.names)
    if whole:
        return h.read(columns=[c for c in dict.fromkeys(columns) if c in have]), have
    t = h.read(columns=[c for c in dict.fromkeys(["family", "task", *columns]) if c in have])
    m = pc.and_(pc.equal(t["family"], job.family), pc.equal(t["task"], job.task))
    if not pc.all(m).as_py():
        t = t.filter(m)
    return t, have


def _doc_values(t: Any, job: GroupJob) -> np.ndarray:
    """``doc_id`` of an Arrow table as int64, or as Python strings when the group's ids are strings anywhere."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = t["doc_id"]
    if job.doc_id_str or not pa.types.is_integer(col.type):
        return np.asarray(pc.cast(col, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    return col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _model_codes(t: Any, models: pd.Index) -> np.ndarray:
    """Positions of a table's ``model_id`` values in ``models`` (mapped per distinct value, not per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(pc.cast(t["model_id"], pa.string())).combine_chunks()
    at = models.get_indexer(enc.dictionary.to_pylist())
    return at[enc.indices.to_numpy(zero_copy_only=False)]


def _float_column(t: Any, name: str, have: set[str]) -> np.ndarray:
    """A numeric column of an Arrow table as float64 (NaN when the file lacks it)."""
    if name not in have:
        return np.full(len(t), np.nan)
    return t[name].to_numpy(zero_copy_only=False).astype(float, copy=False)


def _scalar(v: Any) -> Any:
    """A numpy scalar as the Python value pandas would give (for messages and JSON)."""
    return v.item() if isinstance(v, np.generic) else v


@dataclass
class _GroupIndex:
    """What pass 2 knows about a group before it reads a metric: O(models x items) bytes, not O(rows).

    ``count[m, d]`` is the number of rows of model ``m`` for item ``d`` (saturated at 255), the items ``docs`` sorted
    as pandas sorts them, the models sorted by id.
    """

    docs: np.ndarray
    models: pd.Index
    count: np.ndarray
    n_choices_min: np.ndarray
    n_choices_max: np.ndarray
    compute: np.ndarray
    params: np.ndarray
    metrics: list[str]
    whole: list[bool] = field(default_factory=list)


def _group_index(job: GroupJob, handles: list[Any]) -> _GroupIndex:
    """Two reads of the group's key columns, file by file: the items and models, then who scored what."""
    import pyarrow as pa
    import pyarrow.compute as pc

    docs: np.ndarray | None = None
    models: set[str] = set()
    metrics: set[str] = set()
    whole: list[bool] = []
    for h in handles:
        t, have = _group_table(h, job, ["model_id", "doc_id"])
        whole.append(len(t) == h.metadata.num_rows)
        metrics |= have & set(chain.METRICS)
        d = np.unique(_doc_values(t, job))
        docs = d if docs is None else np.union1d(docs, d)
        models |= set(pc.unique(pc.cast(t["model_id"], pa.string())).to_pylist())
    assert docs is not None
    mi = pd.Index(sorted(models))
    di = pd.Index(docs)
    n_m, n_d = len(mi), len(di)
    count = np.zeros((n_m, n_d), dtype=np.uint8)
    flat_count = count.reshape(-1)
    k_min, k_max = np.full(n_d, np.inf), np.full(n_d, -np.inf)
    compute, params = np.full(n_m, np.nan), np.full(n_m, np.nan)
    seen = np.zeros(n_m, dtype=bool)
    for h, w in zip(handles, whole, strict=True):
        t, have = _group_table(h, job, ["model_id", "doc_id", "n_choices", "compute", "params"], w)
        mc = _model_codes(t, mi)
        dc = di.get_indexer(_doc_values(t, job))
        u, c = np.unique(mc.astype(np.int64) * n_d + dc, return_counts=True)
        flat_count[u] = np.minimum(flat_count[u].astype(np.int64) + c, 255)
        k = _float_column(t, "n_choices", have)
        ok = ~np.isnan(k)
        np.fmin.at(k_min, dc[ok], k[ok])
        np.fmax.at(k_max, dc[ok], k[ok])
        um, first = np.unique(mc, return_index=True)
        new = ~seen[um]
        if new.any():  # the first row of each model in file order, as pandas' groupby().first()
            compute[um[new]] = _float_column(t, "compute", have)[first[new]]
            params[um[new]] = _float_column(t, "params", have)[first[new]]
            seen[um] = True
    return _GroupIndex(docs=docs, models=mi, count=count, n_choices_min=k_min, n_choices_max=k_max, compute=compute,
                       params=params, metrics=[m for m in chain.METRICS if m in metrics], whole=whole)


def _group_problems(job: GroupJob, handles: list[Any], ix: _GroupIndex) -> list[_store.Problem]:
    """What no single file shows: an item in two files (or twice), or with a different K in different models."""
    problems = []
    dup = ix.count > 1
    if dup.any():
        n_dup = int(ix.count[dup].sum())
        pairs = np.argwhere(dup)[:10]  # (model, item) in sorted order; where each occurs, file by file
        want = {(int(m), int(d)): [] for m, d in pairs}
        mc_want = pd.Index(sorted({m for m, _ in want}))
        for h, src in zip(handles, job.sources, strict=True):
            t, _ = _group_table(h, job, ["model_id", "doc_id"])
            mc = _model_codes(t, ix.models)
            dc = pd.Index(ix.docs).get_indexer(_doc_values(t, job))
            for i in np.flatnonzero(mc_want.get_indexer(mc) >= 0):
                if (int(mc[i]), int(dc[i])) in want:
                    want[(int(mc[i]), int(dc[i]))].append(src)
        rows = [f"model_id={ix.models[m]!r}, doc_id={_scalar(ix.docs[d])!r} in {src}"
                for (m, d), srcs in want.items() for src in srcs][:10]
        problems.append(_store.Problem(
            "duplicate_key", f"{n_dup} (model_id, task, doc_id) item row(s) occur in more than one store "
            "file or twice in one (an item split across shards, or a shard copied); every shard must hold whole "
            "items", "doc_id", rows, n_dup))
    diff = np.flatnonzero(ix.n_choices_max > ix.n_choices_min)
    if len(diff):
        rows = [f"task={job.task!r}, doc_id={_scalar(ix.docs[d])!r}" for d in diff[:10]]
        problems.append(_store.Problem("choice_count_mismatch", f"{len(diff)} item(s) have a different number of "
                                       "choices in different models", "choice_idx", rows, len(diff)))
    return problems


def _spelling_hint(job: GroupJob, handles: list[Any]) -> str:
    """:func:`capscale.data.store.coverage_warnings`' doc_id spelling hint, from one or two rows per file.

    The hint depends, per file, on whether its ids are integers (as :func:`capscale.data.store.normalize` reads
    them) and on its first id; each file is represented by its first id, plus a non-integer marker when its ids are
    strings, so the hint is the one the whole group's rows give.
    """
    if not job.doc_id_str:
        return ""
    files, docs = [], []
    for h, src in zip(handles, job.sources, strict=True):
        d = _doc_values(_group_table(h, job, ["doc_id"])[0], job)
        is_int = pd.api.types.is_integer_dtype(_store.normalize(pd.DataFrame({"doc_id": d}))["doc_id"])
        add = [d[0]] if is_int else [d[0], "\x00not an integer"]
        files += [src] * len(add)
        docs += add
    return _store.doc_id_spelling_hint(pd.Series(docs, dtype=object),
                                       pd.Series(pd.Categorical(files, categories=list(job.sources))))


def _coverage(job: GroupJob, handles: list[Any], ix: _GroupIndex) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """The items analysed, the coverage report row and the warnings, as :func:`capscale.analysis.chain.select_items`
    and :func:`capscale.data.store.coverage_warnings` give them for the group's rows."""
    scored = ix.count > 0
    n_m, n_all = scored.shape
    per_item = scored.sum(axis=0)
    covered = per_item == n_m
    n_common = int(covered.sum())
    have = pd.Series(scored.sum(axis=1), index=ix.models)
    short = {str(m): int(k) for m, k in have[have < n_all].sort_values(kind="stable").items()}
    report = {"family": job.family, "task": job.task, "n_models": int(n_m), "n_items_all": int(n_all),
              "n_items_common": n_common, "n_items_excluded": (n_all - n_common) if job.items == "common" else 0,
              "models_missing_items": short}
    if job.items == "common" and n_common == 0:
        counts = ", ".join(f"{m}: {k} of {n_all}" for m, k in list(short.items())[:10])
        raise InputError(f"family={job.family!r}, task={job.task!r}: no item is scored by every model ({counts}); "
                         "check that doc_id is spelled the same way in every file (`capscale validate` names them), "
                         "or use items='all' (`--items all`)")
    warnings = []
    missing = n_all - n_common
    if missing:
        warnings.append(str(_store.partial_coverage_warning(job.family, job.task, have, n_all, n_common,
                                                            _spelling_hint(job, handles))))
    selected = covered if job.items == "common" else np.ones(n_all, dtype=bool)
    return selected, report, warnings


def _blocks(rows_per_item: np.ndarray, block_rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges of items holding about ``block_rows`` model x item rows each (at least one item)."""
    cum = np.cumsum(rows_per_item)
    out, start = [], 0
    while start < len(cum):
        base = cum[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, base + block_rows, side="right")))
        out.append((start, stop))
        start = stop
    return out


class _Moments:
    """Per-model count, mean and sum of squared deviations of a metric, merged block by block (Chan et al.)."""

    def __init__(self, n_models: int) -> None:
        self.n = np.zeros(n_models)
        self.mean = np.zeros(n_models)
        self.m2 = np.zeros(n_models)

    def add(self, codes: np.ndarray, values: np.ndarray) -> None:
        ok = ~np.isnan(values)
        c, v = codes[ok], values[ok]
        size = len(self.n)
        n = np.bincount(c, minlength=size).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(c, v, minlength=size) / n
            m2 = np.bincount(c, (v - mean[c]) ** 2, minlength=size)
            tot = self.n + n
            delta = np.where(n > 0, mean - self.mean, 0.0)
            frac = np.where(tot > 0, n / tot, 0.0)
            self.mean = self.mean + delta * frac
            self.m2 = self.m2 + np.where(n > 0, m2, 0.0) + delta**2 * self.n * frac
        self.n = tot

    def mean_sem(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard error (std with ddof 1 over sqrt(n), as pandas' ``sem``); NaN where undefined."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.n > 0, self.mean, np.nan)
            sem = np.where(self.n > 1, np.sqrt(self.m2 / np.maximum(self.n - 1, 1)) / np.sqrt(self.n), np.nan)
        return mean, sem


def analyse_group(job: GroupJob) -> tuple[bytes | None, dict[str, Any]]:
    """Pass 2 for one (family, task): its correlations (Parquet bytes, None when it has fewer than 3 models) and
    everything else the driver assembles (``summary``, ``ccdf``, coverage report row, warnings, metric coverage
    counts, models, counts, figures).

    Memory is bounded by ``job.block_rows``, not by the size of the task: the group's keys are summarised per item
    and model (:class:`_GroupIndex`, one byte per model x item), then the analysed items are read in blocks of
    consecutive items of about ``block_rows`` model x item rows (every model's rows of an item are in one block),
    each block correlated on its own (correlations across models are per item), the per-block tables concatenated
    in the in-memory order. The figures' per-model means are merged over blocks; the mass scatter keeps a random
    sample of at most :data:`MASS_FIGURE_POINTS` rows.

    Raises
    ------
    capscale.data.store.StoreValidationError
        Items split across files or with differing numbers of choices.
    capscale.errors.InputError
        With ``items="common"``, no item is scored by every model of the group.
    """

    return _analyse_group(job, [_PerItemFile(f) for f in job.files])


class _PerItemFile:
    """A per-item file read several times: its footer parsed once, a reader opened per read and closed after it.

    An open :class:`pyarrow.parquet.ParquetFile` keeps about the size of what it has read allocated (1.37 GB for
    the 500 files of a 12.5M-row task, measured), so a job that held every file of its task open did not have
    bounded memory; a reader made from the parsed footer costs less than re-reading the footer.
    """

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.metadata = pq.read_metadata(path)
        self.schema_arrow = self.metadata.schema.to_arrow_schema()

    def read(self, columns: list[str]) -> Any:
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path, metadata=self.metadata) as h:
            return h.read(columns=columns)


def _analyse_group(job: GroupJob, handles: list[Any]) -> tuple[bytes | None, dict[str, Any]]:
    ix = _group_index(job, handles)
    problems = _group_problems(job, handles, ix)
    if problems:
        raise _store.StoreValidationError(problems, job.store)
    selected, report, warnings = _coverage(job, handles, ix)
    scored = ix.count > 0
    rows_per_item = scored.sum(axis=0)
    sel_codes = np.flatnonzero(selected)
    n_models = len(ix.models)
    n_rows = int(rows_per_item[sel_codes].sum())
    rows_analysed = int((rows_per_item * np.where(np.isfinite(ix.n_choices_min), ix.n_choices_min, 0))[sel_codes]
                        .sum())
    want_corr = n_models >= 3
    metrics = ix.metrics
    corr_metrics = [m for m in correlate.DEFAULT_METRICS if m in metrics] if want_corr else []
    figures = job.figures_dir is not None
    curve_metrics = ["log_p_vocab_correct", "p_choices_correct", "brier", "acc"]  # NaN when the store lacks one
    moments = {m: _Moments(n_models) for m in curve_metrics} if figures else {}
    p_sample = min(1.0, MASS_FIGURE_POINTS / max(n_rows, 1))
    rng = np.random.default_rng(0)
    sample: list[pd.DataFrame] = []
    counts: dict[str, dict] = {}
    corr_parts: dict[tuple[str, str], list[pd.DataFrame]] = {}
    notna = dict.fromkeys(corr_metrics, False)
    di = pd.Index(ix.docs)
    all_selected = bool(selected.all())
    model_cat = list(ix.models)
    read_cols = ["model_id", "doc_id", "compute", "params", *metrics]
    for a, b in _blocks(rows_per_item[sel_codes], job.block_rows):
        lo, hi = sel_codes[a], sel_codes[b - 1]
        parts: dict[str, list[np.ndarray]] = {c: [] for c in ("_m", "doc_id", "compute", "params", *metrics)}
        first, last = ix.docs[lo], ix.docs[hi]
        for h, w in zip(handles, ix.whole, strict=True):
            t, have = _group_table(h, job, read_cols, w)
            d = _doc_values(t, job)
            keep = np.asarray((d >= first) & (d <= last), dtype=bool)
            if not all_selected and keep.any():
                keep[keep] = selected[di.get_indexer(d[keep])]
            if not keep.any():
                continue
            t = t.filter(keep)
            parts["_m"].append(_model_codes(t, ix.models))
            parts["doc_id"].append(_doc_values(t, job))
            for c in ("compute", "params", *metrics):
                parts[c].append(_float_column(t, c, have))
            del t
        codes = np.concatenate(parts.pop("_m"))
        n = len(codes)
        g = pd.DataFrame({"family": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [job.family]),
                          "task": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [job.task]),
                          "model_id": pd.Categorical.from_codes(codes, model_cat),
                          **{c: np.concatenate(v) for c, v in parts.items()}})
        del parts
        counts = chain.merge_metric_coverage(counts, chain.metric_coverage_counts(g, chain.METRICS))
        keys = ["family", "task", "model_id", "doc_id", "compute"]
        for metric in corr_metrics:
            notna[metric] |= bool(g[metric].notna().any())
            c = correlate.per_item_correlations(g[[*keys, metric]], metrics=[metric], methods=job.methods)
            for method in job.methods:
                corr_parts.setdefault((metric, method), []).append(c[c["method"] == method])
        if figures:
            for m, mo in moments.items():
                mo.add(codes, g[m].to_numpy() if m in g else np.full(n, np.nan))
            pick = rng.random(n) < p_sample
            sample.append(g.loc[pick, ["model_id", "compute", "params"]].assign(
                **{m: g.loc[pick, m] if m in g else np.nan for m in _FIGURE_METRICS}))
        del g, codes

    data = None
    summary = ccdf = corr = None
    if want_corr:
        parts_c = [p for m in corr_metrics if notna[m] for meth in job.methods for p in corr_parts[(m, meth)]]
        corr = pd.concat(parts_c, ignore_index=True) if parts_c else None
        if corr is not None and len(corr):
            import pyarrow as pa
            import pyarrow.parquet as pq

            summary = correlate.summarize(corr)
            ccdf = correlate.ccdf(corr)
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pandas(corr, preserve_index=False), sink)
            data = sink.getvalue().to_pybytes()
    fig_paths: list[str] = []
    if figures:
        title = f"{job.family} / {job.task} ({n_models} models, {len(sel_codes)} items)"
        mass = pd.concat(sample, ignore_index=True) if sample else pd.DataFrame()
        fig_paths = _group_figures(job, title, mass, _curves_frame(ix, moments), corr)
    result = {"family": job.family, "task": job.task, "report": [report], "warnings": warnings,
              "counts": counts, "models": {str(m): [job.family, float(ix.compute[i])] for i, m in enumerate(ix.models)},
              "n_models": n_models, "n_items_rows": n_rows, "rows_analysed": rows_analysed,
              "summary": summary, "ccdf": ccdf, "corr_rows": 0 if corr is None else int(len(corr)),
              "figures": fig_paths}
    return data, result


def _curves_frame(ix: _GroupIndex, moments: dict[str, _Moments]) -> pd.DataFrame:
    """Two rows per model whose mean and standard error are the model's (mean -/+ SE): what
    :func:`capscale.plotting.chain.metric_curves_figure` computes from all of the model's rows."""
    n = len(ix.models)
    cols: dict[str, Any] = {"model_id": np.repeat(np.asarray(ix.models, dtype=object), 2),
                            "compute": np.repeat(ix.compute, 2), "params": np.repeat(ix.params, 2)}
    for m, mo in moments.items():
        mean, sem = mo.mean_sem()
        v = np.empty(2 * n)
        v[0::2] = np.where(np.isnan(sem), mean, mean - sem)
        v[1::2] = mean + sem
        cols[m] = v
    return pd.DataFrame(cols)


def _group_figures(job: GroupJob, title: str, mass: pd.DataFrame, curves: pd.DataFrame, corr: pd.DataFrame | None
                   ) -> list[str]:
    """The group's ccdf, mass and curves figures (as the in-memory path draws them; the mass scatter sampled)."""
    from capscale.plotting import chain as plots

    out = Path(job.figures_dir)
    stem = f"{safe_name(job.family)}_{safe_name(job.task)}"
    paths = []
    if corr is not None and len(corr):
        paths.append(str(plots.ccdf_figure(corr, out / f"ccdf_{stem}.png", title=title)))
    paths.append(str(plots.mass_figure(mass, out / f"mass_{stem}.png", title=title)))
    paths.append(str(plots.metric_curves_figure(curves, out / f"curves_{stem}.png", title=title)))
    return paths


def _local_group(job: GroupJob) -> dict[str, Any]:
    data, result = analyse_group(job)
    if data is not None:
        atomic_write_bytes(job.part, data)
    result["part"] = job.part if data is not None else None
    return result


def _ray_group(job: GroupJob, _options: Any = None) -> Any:
    from capscale.eval.ray import ShardPayload

    data, result = analyse_group(job)
    result["part"] = job.part if data is not None else None
    if data is None:  # run_ray writes a file per job: an empty marker the driver ignores
        data = b""
    return ShardPayload(data=data, meta=result)


def run_groups(jobs: list[GroupJob], *, workers: int = 1, executor: str = "local", address: str | None = None,
               max_retries: int = 2, progress: bool = False, pool: ProcessPoolExecutor | None = None
               ) -> list[dict[str, Any]]:
    """Pass 2 for every group, results in job order (local processes, or Ray tasks reading a shared ``OUT``)."""
    if executor != "ray":
        return _run_local(_local_group, jobs, workers, desc="correlations (tasks)", progress=progress, pool=pool)
    from capscale.eval.ray import ExecutorError, run_ray

    results: list[dict[str, Any] | None] = [None] * len(jobs)

    def keep(i: int, o: Any, meta: Any) -> None:
        if meta is not None:
            results[i] = meta

    report = run_ray(jobs, _ray_group, None, Path(jobs[0].part).parent, shard_path=lambda j: j.part,
                     shard_key=lambda j: f"{j.family} / {j.task}", address=address, gpus_per_shard=0,
                     max_retries=max_retries, write_from="worker", skip_done=False, check_fn=_no_check,
                     on_outcome=keep, progress=progress)
    if report.failed:
        raise ExecutorError("correlations failed on Ray for " + "; ".join(
            f"{o.key}: {o.errors[-1] if o.errors else '?'}" for o in report.failed[:5]))
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------------------------- reading


def read_per_item(out: str | os.PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every per-item row of a streamed results folder (``OUT/per_item.parquet/``), in one frame.

    For stores that fit in memory; reads the files one by one (columns a file lacks are NaN) and sorts the rows as
    :func:`capscale.analysis.chain.compute` does. With ``--items common`` the folder holds every item of the store;
    the tables use the common ones (``items_excluded.csv``).
    """
    d = Path(out) / PER_ITEM
    files = sorted(p for p in d.glob("*.parquet") if not p.name.startswith(("_", ".")))
    frames = [pd.read_parquet(f, columns=list(columns) if columns else None) for f in files]
    if not frames:
        return pd.DataFrame(columns=list(columns) if columns else chain.ITEM_KEYS)
    frames = [f for f in frames if len(f)] or frames[:1]
    if len({str(f["doc_id"].dtype) for f in frames if "doc_id" in f}) > 1:
        frames = [f.assign(doc_id=f["doc_id"].astype(str)) if "doc_id" in f else f for f in frames]
    df = pd.concat(frames, ignore_index=True)
    order = [c for c in _COMPUTE_COLUMN_ORDER if c in df] + [c for c in df if c not in _COMPUTE_COLUMN_ORDER]
    df = df[order]
    sort = [c for c in ("task", "compute", "model_id", "doc_id") if c in df]
    return df.sort_values(sort, kind="stable").reset_index(drop=True) if sort else df


def clean_per_item_dir(out: Path, keep: set[str]) -> None:
    """Make ``OUT/per_item.parquet`` a folder holding only the files in ``keep`` (stale files of other runs go)."""
    d = out / PER_ITEM
    if d.is_file() or d.is_symlink():
        d.unlink()
    d.mkdir(parents=True, exist_ok=True)
    for p in d.iterdir():
        if p.is_file() and str(p) not in keep and (p.suffix == ".parquet" or p.name.startswith("_tmp.")):
            p.unlink()


def write_concatenated(parts: list[str], dest: Path, empty: pd.DataFrame) -> Path:
    """Concatenate Parquet parts (same columns) into one file, row group by row group, atomically."""
    import pyarrow.parquet as pq

    parts = [p for p in parts if p]
    if not parts:
        return atomic_write(dest, lambda tmp: empty.to_parquet(tmp, index=False))

    def write(tmp: str) -> None:
        schema = pq.read_schema(parts[0])
        with pq.ParquetWriter(tmp, schema) as w:
            for p in parts:
                t = pq.read_table(p)
                w.write_table(t.cast(schema) if t.schema != schema else t)

    return atomic_write(dest, write)


def remove_parts(d: Path) -> None:
    """Remove the temporary folder of group parts."""
    shutil.rmtree(d, ignore_errors=True)


def check_models(infos: list[dict[str, Any]], where: str) -> None:
    """One family, params and tokens per model across files (what one file alone cannot check)."""
    seen: dict[str, tuple[list, str]] = {}
    problems = []
    for info in infos:
        for m, v in info["models"].items():
            if m in seen and seen[m][0][:3] != v[:3]:
                cols = [c for c, a, b in zip(("family", "params", "tokens"), seen[m][0], v, strict=False) if a != b]
                problems.append(_store.Problem(
                    "inconsistent_model", f"model {m!r} has different {cols} in {seen[m][1]} and {info['source']}",
                    cols[0], [f"model_id={m!r}"], 1))
            seen.setdefault(m, (v, info["source"]))
    if problems:
        raise _store.StoreValidationError(problems[:50], where)


def check_executor(executor: str, workers: int, write_from: str) -> None:
    """UsageError for an unknown executor, fewer than 1 worker or an unknown ``write_from``."""
    if executor not in EXECUTORS:
        raise UsageError(f"executor must be one of {EXECUTORS}, not {executor!r}")
    if workers < 1:
        raise UsageError(f"workers must be at least 1, not {workers}")
    if write_from not in ("driver", "worker"):
        raise UsageError(f"write_from must be 'driver' or 'worker', not {write_from!r}")
