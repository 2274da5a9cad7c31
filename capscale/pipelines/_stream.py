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
2. **Correlations and summaries, per (family, task)** (:func:`analyse_group`). A job reads the key columns of
   its group from the per-item files, checks what one file alone cannot (an item in two files, an item with a
   different number of choices in different models), selects the items (``--items``), then loads one metric
   column at a time, counts its coverage and correlates it (:func:`capscale.analysis.correlate.per_item_correlations`),
   and draws the group's figures. The driver concatenates the groups' parts in (family, task) order, so every table
   equals the in-memory path's.

Memory: a pass-1 job holds one store file; a pass-2 job holds one group's keys plus one metric column
(about 40 bytes per model x item row: 0.5 GB for 500 checkpoints x 25,000 items), independent of the number of
shards and tasks. Precision: everything stays float64, as in memory, so that the results are identical to it
(float32 arithmetic in the chain's log-sum-exp of log-likelihoods of hundreds of nats would be off by 1e-5 nats).

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


def _group_keys(job: GroupJob) -> tuple[pd.DataFrame, list[np.ndarray | None]]:
    """The group's key columns over its files (and, per file, which rows belong to the group; None: all).

    ``model_id``, ``family`` and ``task`` come back as categoricals (sorted categories: the same groups and order as
    strings, at 2 bytes a row instead of about 30), ``_source_file`` names each row's store file.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables, masks, lengths = [], [], []
    for f in job.files:
        pf = pq.ParquetFile(f)
        have = set(pf.schema_arrow.names)
        t = pf.read(columns=[c for c in _KEY_COLUMNS if c in have])
        m = pc.and_(pc.equal(t["family"], job.family), pc.equal(t["task"], job.task))
        m_np = m.to_numpy(zero_copy_only=False)
        if m_np.all():
            masks.append(None)
        else:
            masks.append(m_np)
            t = t.filter(m)
        if job.doc_id_str or not pa.types.is_integer(t.schema.field("doc_id").type):
            t = t.set_column(t.schema.get_field_index("doc_id"), "doc_id", pc.cast(t["doc_id"], pa.string()))
        for c in _KEY_COLUMNS:
            if c not in have:
                t = t.append_column(c, pa.nulls(len(t), pa.float64()))
        tables.append(t.select(_KEY_COLUMNS))
        lengths.append(len(t))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    del tables
    keys = table.to_pandas(categories=["model_id", "family", "task"])
    del table
    for c in ("model_id", "family", "task"):
        keys[c] = keys[c].cat.set_categories(sorted(keys[c].cat.categories))
    keys["_source_file"] = pd.Categorical.from_codes(np.repeat(np.arange(len(job.files)), lengths),
                                                     categories=list(job.sources))
    return keys, masks


def _group_problems(keys: pd.DataFrame) -> list[_store.Problem]:
    """What no single file shows: an item in two files (or twice), or with a different K in different models."""
    problems = []
    dup = keys.duplicated(["model_id", "doc_id"], keep=False).to_numpy()
    if dup.any():
        d = keys[dup].sort_values(["model_id", "doc_id"], kind="stable").head(10)
        rows = [f"model_id={m!r}, doc_id={doc!r} in {src}"
                for m, doc, src in zip(d["model_id"], d["doc_id"], d["_source_file"], strict=True)]
        problems.append(_store.Problem(
            "duplicate_key", f"{int(dup.sum())} (model_id, task, doc_id) item row(s) occur in more than one store "
            "file or twice in one (an item split across shards, or a shard copied); every shard must hold whole "
            "items", "doc_id", rows, int(dup.sum())))
    k = keys.groupby("doc_id", sort=True)["n_choices"].nunique()
    diff = k[k > 1]
    if len(diff):
        rows = [f"task={keys['task'].iloc[0]!r}, doc_id={d!r}" for d in diff.index[:10]]
        problems.append(_store.Problem("choice_count_mismatch", f"{len(diff)} item(s) have a different number of "
                                       "choices in different models", "choice_idx", rows, len(diff)))
    return problems


def analyse_group(job: GroupJob) -> tuple[bytes | None, dict[str, Any]]:
    """Pass 2 for one (family, task): its correlations (Parquet bytes, None when it has fewer than 3 models) and
    everything else the driver assembles (``summary``, ``ccdf``, coverage report row, warnings, metric coverage
    counts, models, counts, figures).

    Raises
    ------
    capscale.data.store.StoreValidationError
        Items split across files or with differing numbers of choices.
    capscale.errors.InputError
        With ``items="common"``, no item is scored by every model of the group.
    """
    import pyarrow.parquet as pq

    keys, masks = _group_keys(job)
    problems = _group_problems(keys)
    if problems:
        raise _store.StoreValidationError(problems, job.store)
    warnings = [str(w) for w in _store.coverage_warnings(keys)]
    keys["_row"] = np.arange(len(keys))
    sel, report = chain.select_items(keys[["family", "task", "model_id", "doc_id", "_row"]], job.items)
    rows = sel["_row"].to_numpy()
    base = keys.iloc[rows][["family", "task", "model_id", "doc_id", "compute", "params"]].reset_index(drop=True)
    n_models = int(base["model_id"].nunique())
    n_choices_sum = int(keys["n_choices"].to_numpy()[rows].sum())
    models = base.groupby("model_id", sort=True).agg(family=("family", "first"), compute=("compute", "first"))
    del keys, sel

    counts: dict[str, dict] = {}
    corr_by_metric: dict[str, pd.DataFrame] = {}
    fig_cols: dict[str, np.ndarray] = {}
    want_corr = n_models >= 3
    handles = [pq.ParquetFile(f) for f in job.files]  # opened once: footers are not parsed again per metric
    try:
        names = [set(h.schema_arrow.names) for h in handles]
        for metric in chain.METRICS:
            vals = []
            present = False
            for h, have, m in zip(handles, names, masks, strict=True):
                if metric in have:
                    present = True
                    v = h.read(columns=[metric]).column(0).to_numpy().astype(float, copy=False)
                else:
                    v = np.full(h.metadata.num_rows, np.nan)
                vals.append(v if m is None else v[m])
            col = np.concatenate(vals)[rows] if len(vals) > 1 else vals[0][rows]
            g = base[["family", "task", "model_id", "doc_id", "compute"]].assign(**{metric: col})
            if not present:
                g = g.drop(columns=metric)
            counts = chain.merge_metric_coverage(counts, chain.metric_coverage_counts(g, [metric]))
            if want_corr and metric in correlate.DEFAULT_METRICS and present and g[metric].notna().any():
                corr_by_metric[metric] = correlate.per_item_correlations(g, metrics=[metric], methods=job.methods)
            if job.figures_dir is not None and metric in _FIGURE_METRICS:
                fig_cols[metric] = col
            del g, col, vals
    finally:
        for h in handles:
            h.close()

    data = None
    summary = ccdf = None
    corr = None
    if want_corr:
        parts = [corr_by_metric[m] for m in correlate.DEFAULT_METRICS if m in corr_by_metric]
        corr = pd.concat(parts, ignore_index=True) if parts else None
        if corr is not None and len(corr):
            import pyarrow as pa
            import pyarrow.parquet as pq

            summary = correlate.summarize(corr)
            ccdf = correlate.ccdf(corr)
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pandas(corr, preserve_index=False), sink)
            data = sink.getvalue().to_pybytes()
    figures: list[str] = []
    if job.figures_dir is not None:
        figures = _group_figures(job, base, fig_cols, corr)
    result = {"family": job.family, "task": job.task, "report": report.to_dict("records"), "warnings": warnings,
              "counts": counts, "models": {str(m): [str(r.family), float(r.compute)] for m, r in models.iterrows()},
              "n_models": n_models, "n_items_rows": int(len(base)), "rows_analysed": n_choices_sum,
              "summary": summary, "ccdf": ccdf, "corr_rows": 0 if corr is None else int(len(corr)),
              "figures": figures}
    return data, result


def _group_figures(job: GroupJob, base: pd.DataFrame, cols: dict[str, np.ndarray], corr: pd.DataFrame | None
                   ) -> list[str]:
    """The group's ccdf, mass and curves figures (as the in-memory path draws them; the mass scatter sampled)."""
    from capscale.plotting import chain as plots

    fam, task = job.family, job.task
    out = Path(job.figures_dir)
    stem = f"{safe_name(fam)}_{safe_name(task)}"
    title = f"{fam} / {task} ({base['model_id'].nunique()} models, {base['doc_id'].nunique()} items)"
    g = base[["model_id", "compute", "params"]].assign(**cols)
    paths = []
    if corr is not None and len(corr):
        paths.append(str(plots.ccdf_figure(corr, out / f"ccdf_{stem}.png", title=title)))
    sample = g
    if len(g) > MASS_FIGURE_POINTS:
        rng = np.random.default_rng(0)
        sample = g.iloc[np.sort(rng.choice(len(g), MASS_FIGURE_POINTS, replace=False))]
    paths.append(str(plots.mass_figure(sample, out / f"mass_{stem}.png", title=title)))
    paths.append(str(plots.metric_curves_figure(g, out / f"curves_{stem}.png", title=title)))
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
