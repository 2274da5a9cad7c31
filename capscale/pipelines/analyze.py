"""``capscale analyze``: the chain and degradation analysis of a score store, written to a folder.

:func:`run` takes a score store (a DataFrame, or the path of a store to read) and :class:`Options`, and returns a
:class:`~capscale.pipelines._base.RunResult` whose ``tables`` hold the tables below and whose ``summary`` is the
content of ``analysis.json``.

Outputs (``OUT`` is ``Options.out``; nothing is written when it is None)

=========================  =====================================================================
``per_item.parquet``       chain metrics, one row per (model, task, item) — :func:`capscale.analysis.chain.compute`
``correlations.parquet``   one row per (family, task, metric, method, doc_id) with column ``r``
``summary.csv``            per (family, task, metric, method): n_items, nan_frac, mean, median,
                           frac_ge_0.75, ... — :func:`capscale.analysis.correlate.summarize`
``ccdf.csv``               the complementary CDF of r on a grid of 201 points in [−1, 1]
``ordering.csv``           does log p_vocab ≥ p_choices ≥ Brier ≥ acc hold, per task/method/statistic
``excluded.csv``           models left out of the correlations (non-finite compute), if any
``items_excluded.csv``     per (family, task) with items not scored by every model: items in all, common,
                           excluded (``Options.items``), if any
``figures/``               ``ccdf_<family>_<task>.png``, ``mass_<family>_<task>.png``,
                           ``curves_<family>_<task>.png`` (unless ``Options.figures`` is False)
``analysis.json``          what ran: input, counts, the items selection and what it excluded
                           (``items_selection``, ``items_excluded``), coverage warnings, per-metric
                           coverage (``metric_coverage``: rows covered and why the rest are missing),
                           groups skipped and why (``groups_skipped``), ordering checks that are undefined
                           and why (``ordering_undefined``), the files written
=========================  =====================================================================

Items. By default (``items="common"``) each (family, task) is analysed on the items scored by every one of its
models (:func:`capscale.analysis.chain.select_items`), so no model's accuracy is an average over other items than
its neighbours'; ``items="all"`` keeps every item (correlations then use the models that have each item). Either
way the coverage is counted in ``analysis.json`` and the notes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from capscale._io import atomic_write, safe_name, write_json
from capscale.analysis import chain, correlate
from capscale.data import store as _store
from capscale.errors import InputError, UsageError
from capscale.pipelines import _stream
from capscale.pipelines._base import RunResult, StageOptions
from capscale.pipelines._stream import read_per_item
from capscale.plotting import chain as plots

__all__ = ["Options", "run", "read_per_item", "STREAM_AUTO_BYTES"]

_CORR_COLUMNS = ["family", "task", "metric", "method", "doc_id", "r", "p_value", "n_models", "negated"]
#: A store read from a path whose files add up to more than this (bytes) is streamed by default.
STREAM_AUTO_BYTES = 512 * 2**20


def _split(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated flag as a tuple (None stays None)."""
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Options(StageOptions):
    """Settings of ``capscale analyze``.

    Attributes
    ----------
    out : path-like, optional
        Results folder (created if missing); None computes the tables without writing anything.
    family : str, optional
        Analyse only this family.
    tasks : tuple of str, optional
        Analyse only these tasks (default: every task); each must be in the store.
    methods : tuple of str
        Correlation methods (:data:`capscale.analysis.correlate.METHODS`).
    multi_gold : bool
        When reading a store from a path: allow items with several correct choices.
    figures : bool
        Also write the PNG figures (only with ``out``).
    progress : bool
        Show progress bars.
    source : str, optional
        Where the store came from, recorded in ``analysis.json`` (default: the path :func:`run` read).
    items : {"common", "all"}
        Analyse the items every model of a (family, task) scored (default), or all items
        (:func:`capscale.analysis.chain.select_items`).
    stream : bool, optional
        Analyse a store read from a path shard by shard in bounded memory (:mod:`capscale.pipelines._stream`)
        instead of in one frame. None (default): stream when ``workers > 1``, ``executor="ray"``,
        ``skip_bad_shards`` or the store's files add up to more than :data:`STREAM_AUTO_BYTES`. A DataFrame
        input is always analysed in memory.
    workers : int
        Streamed: processes that run the shard and task jobs (1: this process).
    executor : {"local", "ray"}
        Streamed: ``"ray"`` runs the jobs as Ray tasks (see ``address``, ``write_from``).
    address : str, optional
        Ray address (``None``: start a local Ray instance with ``workers`` CPUs; ``"auto"``; ``"HOST:PORT"``).
    write_from : {"driver", "worker"}
        Ray: who writes the per-item files. ``"worker"`` needs ``out`` on a file system shared by every node,
        and then the per-task pass runs on Ray too; ``"driver"`` runs it on the driver's machine.
    max_retries : int
        Ray: resubmissions of a failed task.
    skip_bad_shards : bool
        Streamed: leave out store files that cannot be read or are invalid (reported by path and counted);
        without it such a file stops the run before any result table is written.
    block_rows : int
        Streamed: model x item rows of one (family, task) held at a time by a per-task job (items are read and
        correlated in blocks of this size, so memory does not grow with the size of a task).
    """

    out: str | os.PathLike | None = None
    family: str | None = None
    tasks: tuple[str, ...] | None = None
    methods: tuple[str, ...] = correlate.METHODS
    multi_gold: bool = False
    figures: bool = True
    progress: bool = True
    source: str | None = None
    items: str = "common"
    stream: bool | None = None
    workers: int = 1
    executor: str = "local"
    address: str | None = None
    write_from: str = "driver"
    max_retries: int = 2
    skip_bad_shards: bool = False
    block_rows: int = _stream.BLOCK_ROWS

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **overrides: Any) -> Options:
        """Options from ``capscale analyze`` arguments (``--tasks``/``--methods`` comma-separated)."""
        kw: dict[str, Any] = {"tasks": _split(args.tasks), "methods": _split(args.methods),
                              "figures": not args.no_figures, "progress": not args.quiet}
        if getattr(args, "stream", None) is not None:
            kw["stream"] = args.stream
        return super().from_cli(args, **{**kw, **overrides})


def _select(scores: pd.DataFrame, options: Options, where: str) -> pd.DataFrame:
    """The rows of ``options.family`` and ``options.tasks``; InputError when a task is unknown or none are left."""
    df = scores
    if options.family:
        df = df[df["family"] == options.family]
    if options.tasks is not None:
        unknown = sorted(set(options.tasks) - set(df["task"]))
        if unknown:
            raise InputError(f"task(s) {unknown} not in {where}; it has {sorted(df['task'].unique())}")
        df = df[df["task"].isin(options.tasks)]
    if len(df) == 0:
        raise InputError(f"no rows of {where} left after the family/tasks selection "
                         f"(family {options.family!r}, tasks {list(options.tasks) if options.tasks else None})")
    return df


def _notes(info: dict[str, Any], options: Options, warnings: list, *, ordering_len: int) -> list[str]:
    """The run's notes from its ``analysis.json`` content (the same for the in-memory and the streamed path)."""
    notes = []
    for r in info["items_excluded"]:
        short = ", ".join(f"{m}: {k}" for m, k in list(r["models_missing_items"].items())[:10])
        if options.items == "common":
            notes.append(f"family={r['family']!r}, task={r['task']!r}: analysed the {r['n_items_common']} of "
                         f"{r['n_items_all']} item(s) scored by all {r['n_models']} models; excluded "
                         f"{r['n_items_excluded']} (models short of items, with the items they scored: {short}; "
                         "--items all keeps them)")
    if options.items == "all":
        notes += [f"warning: {w}" for w in warnings]
    metric_cov = info["metric_coverage"]
    partial_metrics = {m: c for m, c in metric_cov.items() if 0 < c["rows"] < c["rows_total"]}
    for m, c in partial_metrics.items():
        notes.append(f"{m} covers {c['rows']} of {c['rows_total']} model x item rows ({c['missing_reason']}: "
                     f"{c['models_missing'][:10]}); NaN elsewhere")
    absent = {m: c for m, c in metric_cov.items() if c["rows"] == 0 and c["rows_total"]}
    if absent:
        notes.append("metrics not computed: " + ", ".join(f"{m} ({c['missing_reason']})" for m, c in absent.items()))
    ordering_undefined = info["ordering_undefined"]
    if ordering_undefined:
        notes.append(f"the ordering check is undefined for {len(ordering_undefined)} of {ordering_len} "
                     f"(family, task, method, statistic): {ordering_undefined[0]['reason']}"
                     + (" (and others, see ordering.csv)" if len(ordering_undefined) > 1 else ""))
    if info["groups_skipped_fewer_than_3_models"]:
        notes.append("no correlations for (family, task) with fewer than 3 models: "
                     f"{info['groups_skipped_fewer_than_3_models']}")
    if info["models_excluded_non_finite_compute"]:
        notes.append("models left out of the correlations (non-finite log10 compute): "
                     f"{info['models_excluded_non_finite_compute']}")
    return notes


def _info_common(options: Any, items_excluded: Any, warnings: list[Any], metric_cov: Any, skipped: list[dict],
                 too_few: list[tuple], ordering_undefined: Any, excluded: pd.DataFrame,
                 ordering: pd.DataFrame) -> dict[str, Any]:
    """The entries of ``analysis.json`` that the in-memory and the streamed path write alike."""
    return {
        "items_selection": options.items,
        "items_excluded": items_excluded,
        "coverage_warnings": [str(w) for w in warnings],
        "metric_coverage": metric_cov,
        "groups_skipped": skipped,
        "groups_skipped_fewer_than_3_models": [list(x) for x in too_few],
        "ordering_undefined": ordering_undefined,
        "models_excluded_non_finite_compute": excluded["model_id"].tolist(),
        "ordering_holds_fraction": (
            ordering.dropna(subset=["holds"]).groupby("method")["holds"].mean().round(4).to_dict()
            if len(ordering) else {}),
    }


def run(scores: pd.DataFrame | str | os.PathLike, options: Options | None = None) -> RunResult:
    """Run the chain metrics and per-item correlation analysis of a score store.

    Parameters
    ----------
    scores : pandas.DataFrame or path-like
        A valid score store (at least 3 models per family for correlations), or the path of one (read and
        validated with :func:`capscale.data.store.read`).
    options : Options, optional
        Settings (default ``Options()``: every family and task, nothing written).

    Returns
    -------
    RunResult
        ``summary``: the content of ``analysis.json`` (source, counts, groups skipped, ordering-check pass
        rates, files); ``tables``: ``per_item``, ``correlations``, ``summary``, ``ccdf``, ``ordering``,
        ``excluded``; ``notes``: groups without correlations and models excluded.

    Raises
    ------
    FileNotFoundError, capscale.data.store.StoreValidationError
        ``scores`` is a path that does not exist or an invalid store.
    capscale.errors.InputError
        A task of ``options.tasks`` is not in the store, or the selection leaves no rows.
    """
    options = options or Options()
    if options.items not in chain.ITEM_SELECTIONS:
        raise UsageError(f"items must be one of {chain.ITEM_SELECTIONS}, not {options.items!r}")
    _stream.check_executor(options.executor, options.workers, options.write_from)
    if options.block_rows < 1:
        raise UsageError(f"block_rows must be at least 1, not {options.block_rows}")
    if _streams(scores, options):
        return _run_streamed(Path(scores), options)
    source = options.source
    warnings: list[_store.Problem] = []
    if isinstance(scores, pd.DataFrame):
        where = source or "the score store"
        # the same validation as a store read from disk (and as `capscale validate`)
        _store.check(scores, multi_gold=options.multi_gold, source=where)
        warnings = _store.coverage_warnings(scores)
    else:
        source = source or str(scores)
        where = str(scores)
        scores = _store.read(scores, multi_gold=options.multi_gold, warnings=warnings)
    scores = _select(scores, options, where)

    out = Path(options.out) if options.out is not None else None
    written: list[Path] = []

    def _parquet(df: pd.DataFrame, name: str) -> None:
        if out is not None:
            written.append(atomic_write(out / name, lambda tmp: df.to_parquet(tmp, index=False)))

    def _csv(df: pd.DataFrame, name: str) -> None:
        if out is not None:
            written.append(atomic_write(out / name, lambda tmp: df.to_csv(tmp, index=False)))

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "figures").mkdir(exist_ok=True)
        if (out / _stream.PER_ITEM).is_dir():  # left by a streamed run into the same folder
            shutil.rmtree(out / _stream.PER_ITEM)
    scores = _store.normalize(scores)
    n_rows_in = int(len(scores))
    scores, coverage = chain.select_items(scores, options.items)
    items = chain.compute(scores)
    _parquet(items, "per_item.parquet")
    partial = coverage[coverage["n_items_common"] < coverage["n_items_all"]] if len(coverage) else coverage
    items_excluded = [{k: (v if not isinstance(v, np.integer) else int(v)) for k, v in r.items()}
                      for r in partial.to_dict("records")]
    if len(partial):
        _csv(partial.assign(models_missing_items=partial["models_missing_items"].map(
            lambda d: "; ".join(f"{m}: {k}" for m, k in d.items()))), "items_excluded.csv")
    metric_cov = chain.metric_coverage(items)

    excluded = items.groupby("model_id").agg(family=("family", "first"), compute=("compute", "first")).reset_index()
    excluded = excluded[~np.isfinite(np.log10(excluded["compute"].astype(float)))]
    excluded = excluded.assign(reason="non-finite log10 compute")
    if len(excluded):
        _csv(excluded, "excluded.csv")

    groups = list(items.groupby(["family", "task"], sort=True))
    corr_parts = []
    for _key, g in tqdm(groups, desc="correlations", disable=not options.progress, unit="task"):
        if g["model_id"].nunique() < 3:
            continue
        corr_parts.append(correlate.per_item_correlations(g, methods=options.methods))
    corr = pd.concat(corr_parts, ignore_index=True) if corr_parts else pd.DataFrame(columns=_CORR_COLUMNS)
    _parquet(corr, "correlations.parquet")
    # written with their header even when empty (no group had 3 models)
    summary = correlate.summarize(corr)
    _csv(summary, "summary.csv")
    ccdf = correlate.ccdf(corr)
    _csv(ccdf, "ccdf.csv")
    ordering = correlate.ordering_check(summary)
    _csv(ordering, "ordering.csv")
    undefined = ordering[ordering["holds"].isna()] if len(ordering) else ordering
    ordering_undefined = [{"family": r["family"], "task": r["task"], "method": r["method"],
                           "statistic": r["statistic"], "reason": r["undefined_reason"]}
                          for r in undefined.to_dict("records")]

    fig_paths: list[Path] = []
    if out is not None and options.figures:
        for (fam, task), g in tqdm(groups, desc="figures", disable=not options.progress, unit="task"):
            stem = f"{safe_name(fam)}_{safe_name(task)}"
            title = f"{fam} / {task} ({g['model_id'].nunique()} models, {g['doc_id'].nunique()} items)"
            c = corr[(corr["family"] == fam) & (corr["task"] == task)] if len(corr) else corr
            if len(c):
                fig_paths.append(Path(plots.ccdf_figure(c, out / "figures" / f"ccdf_{stem}.png", title=title)))
            fig_paths.append(Path(plots.mass_figure(g, out / "figures" / f"mass_{stem}.png", title=title)))
            fig_paths.append(Path(plots.metric_curves_figure(g, out / "figures" / f"curves_{stem}.png",
                                                             title=title)))
    written += fig_paths

    too_few = [(f, t) for (f, t), g in groups if g["model_id"].nunique() < 3]
    skipped = [{"family": f, "task": t, "n_models": int(g["model_id"].nunique()), "reason": "fewer than 3 models"}
               for (f, t), g in groups if g["model_id"].nunique() < 3]
    info: dict[str, Any] = {
        "source": source,
        "rows": n_rows_in,
        "rows_analysed": int(len(scores)),
        "models": int(scores["model_id"].nunique()),
        "tasks": sorted(scores["task"].unique().tolist()),
        "items": int(len(items)),
        **_info_common(options, items_excluded, warnings, metric_cov, skipped, too_few, ordering_undefined,
                       excluded, ordering),
    }
    if out is not None:
        info["files"] = sorted({*(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()), "analysis.json"})
        info["figures"] = [str(p.relative_to(out)) for p in fig_paths]
        written.append(write_json(out / "analysis.json", info, indent=2))
    notes = _notes(info, options, warnings, ordering_len=len(ordering))
    return RunResult(stage="analyze", out=out, files=written, summary=info,
                     tables={"per_item": items, "correlations": corr, "summary": summary, "ccdf": ccdf,
                             "ordering": ordering, "excluded": excluded},
                     notes=notes)


def _streams(scores: pd.DataFrame | str | os.PathLike, options: Options) -> bool:
    """Whether :func:`run` streams (see ``Options.stream``); UsageError for options that need a streamed run."""
    needs = [name for name, on in (("workers > 1", options.workers > 1), ("executor='ray'", options.executor == "ray"),
                                   ("skip_bad_shards", options.skip_bad_shards)) if on]
    if isinstance(scores, pd.DataFrame):
        if options.stream or needs:
            raise UsageError(f"{', '.join(needs) or 'stream=True'} need(s) a store read from a path (streamed); "
                             "a DataFrame is analysed in memory")
        return False
    if options.stream is False:
        if needs:
            raise UsageError(f"{', '.join(needs)} need(s) the streamed analysis (not --in-memory)")
        return False
    if options.stream or needs:
        return True
    return sum(f.stat().st_size for f in _store.store_files(scores)) > STREAM_AUTO_BYTES


def _bad_shards_error(bad: list[dict[str, str]], where: str, stage: str) -> _stream.BadShardError:
    lines = [f"{len(bad)} bad store file(s) in {where} ({stage}; no result table written; --skip-bad-shards "
             "leaves them out and counts them):"]
    for b in bad[:20]:
        err = b["error"].replace("\n", "\n      ")
        lines.append(f"  - {b['path']}: {err}")
    if len(bad) > 20:
        lines.append(f"  ... and {len(bad) - 20} more")
    return _stream.BadShardError("\n".join(lines))


def _run_streamed(path: Path, options: Options) -> RunResult:
    """:func:`run` shard by shard (see :mod:`capscale.pipelines._stream`); the same tables as in memory."""
    if options.out is None:
        raise UsageError("the streamed analysis writes its per-item files to a results folder: give out "
                         "(--out), or stream=False for a store that fits in memory")
    t0 = time.perf_counter()
    where = str(path)
    source = options.source or where
    out = Path(options.out)
    jobs, bad, seen = _stream.plan_shards(path, out, family=options.family, tasks=options.tasks,
                                          multi_gold=options.multi_gold)
    if options.tasks is not None:
        unknown = sorted(set(options.tasks) - seen["tasks"])
        if unknown:
            raise InputError(f"task(s) {unknown} not in {where}; it has {sorted(seen['tasks'])}")
    if bad and not options.skip_bad_shards:
        raise _bad_shards_error(bad, where, "found by the check of every file before any computation")
    if not jobs:
        raise InputError(f"no rows of {where} left after the family/tasks selection "
                         f"(family {options.family!r}, tasks {list(options.tasks) if options.tasks else None})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    _stream.clean_per_item_dir(out, {j.dest for j in jobs})
    t_plan = time.perf_counter() - t0

    with contextlib.ExitStack() as stack:
        # one pool of processes for both passes (its start-up, about 2 s per process, is paid once)
        pool = (stack.enter_context(_stream.make_pool(options.workers)) if options.workers > 1 and not (
            options.executor == "ray" and options.write_from == "worker") else None)
        if options.executor == "ray":  # one Ray session for both passes (started here unless one is running)
            from capscale.eval.ray import ray_session

            stack.enter_context(ray_session(options.address, num_cpus=options.workers))
        return _run_streamed_passes(path, options, out, jobs, bad, seen, where, source, t0, t_plan, pool)


def _run_streamed_passes(path: Path, options: Options, out: Path, jobs: list, bad: list, seen: dict, where: str,
                         source: str, t0: float, t_plan: float, pool: Any) -> RunResult:
    """Both passes of :func:`_run_streamed` and the tables assembled from them."""
    shards = _stream.run_shards(jobs, workers=options.workers, executor=options.executor, address=options.address,
                                write_from=options.write_from, max_retries=options.max_retries,
                                skip_bad=options.skip_bad_shards, progress=options.progress,
                                pool=pool if options.executor == "local" else None)
    if shards.bad and not options.skip_bad_shards:
        raise _bad_shards_error(shards.bad, where, "while computing the chain; the per-item files already written "
                                "are kept and a rerun resumes from them")
    bad += shards.bad
    infos = shards.infos
    if not infos:
        raise InputError(f"no usable store file left in {where} ({len(bad)} bad file(s) skipped)")
    _stream.check_models(infos, where)
    doc_id_str = len({i["doc_id_int"] for i in infos}) > 1
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    by_source = {i["source"]: i for i in infos}
    for j in jobs:
        info = by_source.get(j.source)
        if info is None:
            continue
        for fam, task in info["pairs"]:
            pairs.setdefault((fam, task), []).append((j.dest, j.source))
    parts_dir = out / "_parts"
    _stream.remove_parts(parts_dir)
    parts_dir.mkdir()
    group_jobs = [_stream.GroupJob(family=fam, task=task, files=tuple(f for f, _ in fs), sources=tuple(s for _, s in fs),
                                   items=options.items, methods=tuple(options.methods), doc_id_str=doc_id_str,
                                   part=str(parts_dir / f"part-{i:06d}.parquet"),
                                   figures_dir=str(out / "figures") if options.figures else None, store=where,
                                   block_rows=options.block_rows)
                  for i, ((fam, task), fs) in enumerate(sorted(pairs.items()))]
    t1 = time.perf_counter()
    on_ray = options.executor == "ray" and options.write_from == "worker"
    try:
        results = _stream.run_groups(group_jobs, workers=options.workers, executor="ray" if on_ray else "local",
                                     address=options.address, max_retries=options.max_retries,
                                     progress=options.progress, pool=pool)
        t_groups = time.perf_counter() - t1
        t2 = time.perf_counter()
        written: list[Path] = []

        def _csv(df: pd.DataFrame, name: str) -> None:
            written.append(atomic_write(out / name, lambda tmp: df.to_csv(tmp, index=False)))

        coverage = pd.DataFrame([row for r in results for row in r["report"]])
        partial = coverage[coverage["n_items_common"] < coverage["n_items_all"]] if len(coverage) else coverage
        items_excluded = [{k: (v if not isinstance(v, np.integer) else int(v)) for k, v in r.items()}
                          for r in partial.to_dict("records")]
        if len(partial):
            _csv(partial.assign(models_missing_items=partial["models_missing_items"].map(
                lambda d: "; ".join(f"{m}: {k}" for m, k in d.items()))), "items_excluded.csv")
        counts: dict[str, dict] = {}
        models: dict[str, list] = {}
        for r in results:
            counts = chain.merge_metric_coverage(counts, r["counts"])
            models.update(r["models"])
        metric_cov = chain.metric_coverage_report(counts)
        excluded = pd.DataFrame([(m, v[0], v[1]) for m, v in sorted(models.items())],
                                columns=["model_id", "family", "compute"])
        excluded = excluded[~np.isfinite(np.log10(excluded["compute"].astype(float)))]
        excluded = excluded.assign(reason="non-finite log10 compute")
        if len(excluded):
            _csv(excluded, "excluded.csv")
        written.append(_stream.write_concatenated([r["part"] for r in results], out / "correlations.parquet",
                                                  pd.DataFrame(columns=_CORR_COLUMNS)))
        empty_corr = pd.DataFrame(columns=_CORR_COLUMNS)
        summaries = [r["summary"] for r in results if r["summary"] is not None and len(r["summary"])]
        summary = pd.concat(summaries, ignore_index=True) if summaries else correlate.summarize(empty_corr)
        _csv(summary, "summary.csv")
        ccdfs = [r["ccdf"] for r in results if r["ccdf"] is not None and len(r["ccdf"])]
        ccdf = pd.concat(ccdfs, ignore_index=True) if ccdfs else correlate.ccdf(empty_corr)
        _csv(ccdf, "ccdf.csv")
        ordering = correlate.ordering_check(summary)
        _csv(ordering, "ordering.csv")
    finally:
        _stream.remove_parts(parts_dir)
    undefined = ordering[ordering["holds"].isna()] if len(ordering) else ordering
    ordering_undefined = [{"family": r["family"], "task": r["task"], "method": r["method"],
                           "statistic": r["statistic"], "reason": r["undefined_reason"]}
                          for r in undefined.to_dict("records")]
    fig_paths = [Path(p) for r in results for p in r["figures"]]
    written += fig_paths
    too_few = [(r["family"], r["task"]) for r in results if r["n_models"] < 3]
    skipped = [{"family": r["family"], "task": r["task"], "n_models": r["n_models"], "reason": "fewer than 3 models"}
               for r in results if r["n_models"] < 3]
    warnings = [w for r in results for w in r["warnings"]]
    info: dict[str, Any] = {
        "source": source,
        "rows": int(sum(i["rows"] for i in infos)),
        "rows_analysed": int(sum(r["rows_analysed"] for r in results)),
        "models": len(models),
        "tasks": sorted({r["task"] for r in results if r["n_items_rows"]}),
        "items": int(sum(r["n_items_rows"] for r in results)),
        **_info_common(options, items_excluded, warnings, metric_cov, skipped, too_few, ordering_undefined,
                       excluded, ordering),
        "streaming": {
            "executor": options.executor, "workers": options.workers,
            "write_from": options.write_from if options.executor == "ray" else None,
            "store_files": seen["files"], "shards": len(jobs), "shards_computed": shards.computed,
            "shards_resumed": shards.resumed, "bad_shards_skipped": len(bad), "bad_shards": bad,
            "per_item": _stream.PER_ITEM + "/", "groups": len(group_jobs),
            "seconds": {"plan": round(t_plan, 3), "chain": round(shards.seconds, 3), "groups": round(t_groups, 3),
                        "assemble": round(time.perf_counter() - t2, 3)}} | ({"ray": shards.ray} if shards.ray else {}),
    }
    info["files"] = sorted({*(str(p.relative_to(out)) for p in out.rglob("*")
                              if p.is_file() and _stream.PER_ITEM not in p.relative_to(out).parts),
                            f"{_stream.PER_ITEM}/", "analysis.json"})
    info["figures"] = [str(p.relative_to(out)) for p in fig_paths]
    written.append(write_json(out / "analysis.json", info, indent=2))
    notes = _notes(info, options, warnings, ordering_len=len(ordering))
    if bad:
        notes.append(f"skipped {len(bad)} bad store file(s) (--skip-bad-shards): "
                     + "; ".join(f"{b['path']}: {b['error'].splitlines()[0]}" for b in bad[:5])
                     + (" ..." if len(bad) > 5 else ""))
    if shards.resumed:
        notes.append(f"resumed {shards.resumed} of {len(jobs)} shard(s) from the per-item files already in "
                     f"{out / _stream.PER_ITEM}")
    return RunResult(stage="analyze", out=out, files=written, summary=info,
                     tables={"summary": summary, "ccdf": ccdf, "ordering": ordering, "excluded": excluded},
                     notes=notes)
