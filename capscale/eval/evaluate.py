"""``capscale eval``: score every (checkpoint, task) of a family into a directory of Parquet shards.

:func:`evaluate` plans the run (:func:`capscale.eval.shards.plan_shards`: one shard per checkpoint x leaf task)
and runs it with an executor picked by name from :data:`EXECUTORS`: ``"local"``
(:func:`capscale.eval.local.local_executor`: checkpoint by checkpoint in this process) or ``"ray"``
(:func:`capscale.eval.ray.ray_executor`: every shard one Ray task; imported only when asked for). Both run
:func:`capscale.eval.shards.run_shard` and write byte-identical stores. A rerun skips finished shards whose recorded
settings match its own and refuses on any difference unless ``overwrite`` (see
:func:`capscale.eval.shards.check_existing`); an interrupted run loses nothing finished. A JSON run log
(``_run_log.json`` in the store folder: the leading ``_`` keeps it out of Parquet dataset readers) records
versions, dtype, device, batch size, task sources and the wall time of every shard; a run killed before it
could record its end is marked ``abandoned`` by the next run.

:func:`evaluate_items` / :func:`evaluate_item_sets` are the fast path for ``{doc_id, context, choices, gold}``
items (no lm-eval TaskManager), through the same items -> rows loop
(:func:`capscale.eval.shards.score_items`).

Units: ``loglik`` in nats (summed over the continuation's tokens); ``n_chars`` / ``n_bytes`` are the lengths of
the choice string without the target delimiter; ``n_tokens`` the continuation's tokens; times in seconds.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from capscale.data import store
from capscale.data.family import Checkpoint, FamilySpec
from capscale.data.tasks import BuiltTask, TaskItem, TaskSpec, items_from_records
from capscale.errors import InputError, UsageError
from capscale.eval import shards as _shards
from capscale.eval.local import local_executor
from capscale.eval.scoring import resolve_max_length
from capscale.eval.shards import (
    EvalOptions,
    Shard,
    ShardResult,
    check_existing,
    load_checkpoint,
    load_family,
    plan_shards,
    score_items,
    versions,
    write_run_log,
)

__all__ = [
    "EXECUTORS",
    "evaluate",
    "evaluate_items",
    "evaluate_item_sets",
    "with_options",
]


def _ray_executor(shards: Sequence[Shard], options: EvalOptions, on_result: Callable[[ShardResult], None],
                  **executor_options: Any) -> Any:
    """Every shard one Ray task: :func:`capscale.eval.ray.ray_executor` (imported here: Ray is optional)."""
    from capscale.eval.ray import ray_executor

    return ray_executor(shards, options, on_result, **executor_options)


#: Executors by name; each is ``fn(shards, options, on_result, **executor_options)``.
EXECUTORS: dict[str, Callable[..., Any]] = {"local": local_executor, "ray": _ray_executor}


def evaluate(family: str | os.PathLike | FamilySpec, tasks: str | Sequence[str] | Sequence[TaskSpec],
             out: str | os.PathLike, *, executor: str = "local", data_dir: str | os.PathLike | None = None,
             include_path: Any = None, num_fewshot: int | None = None, limit: int | float | None = None,
             options: EvalOptions | None = None, model_ids: Sequence[str] | None = None,
             executor_options: dict[str, Any] | None = None, overwrite: bool = False,
             **single: Any) -> list[ShardResult]:
    """Evaluate a family on tasks into a shard directory ``out``.

    Parameters
    ----------
    family : path or FamilySpec
        Spec file (YAML/CSV), one checkpoint folder, or a spec.
    tasks : str or list
        Task/group names (comma-separated string allowed) or resolved :class:`TaskSpec` objects.
    out : path
        Store directory (one Parquet shard per checkpoint x task, plus ``_run_log.json``).
    executor : str
        A key of :data:`EXECUTORS`: ``"local"`` or ``"ray"``.
    data_dir, include_path, num_fewshot, limit
        As ``capscale eval``'s flags.
    options : EvalOptions
    model_ids : list of str, optional
        Evaluate only these checkpoints of the spec.
    executor_options : dict, optional
        Keyword arguments of the executor; for ``"ray"`` (:func:`capscale.eval.ray.ray_executor`): ``address``,
        ``gpus_per_shard``, ``write_from`` (``"driver"``/``"worker"``), ``max_retries``, ``num_cpus``.
    overwrite : bool
        Re-evaluate finished shards written with other settings (``capscale eval --overwrite``); without it such
        a shard stops the run before anything is scored (see :func:`capscale.eval.shards.check_existing`).
    **single
        ``params``/``tokens``/... for a single checkpoint folder (see :func:`capscale.eval.shards.load_family`).

    Returns
    -------
    list of ShardResult
        One per shard, in completion order (skipped shards included).

    Raises
    ------
    capscale.errors.InputError
        Some finished shard was written with other settings (and not ``overwrite``): names the shard, the
        setting, the recorded and the new value.
    capscale.eval.shards.EvalError
        Naming the checkpoint and task of the first failing shard; shards finished before stay valid and the
        run log records the failure.
    """
    options = options or EvalOptions()
    spec = load_family(family, **single)
    if model_ids:
        spec = spec.select(model_ids)
    shards = plan_shards(spec, tasks, out, data_dir=data_dir, include_path=include_path, num_fewshot=num_fewshot,
                         limit=limit)
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; available: {sorted(EXECUTORS)}")
    try:
        return _evaluate(spec, shards, out, executor, options, overwrite, executor_options, limit=limit,
                         num_fewshot=num_fewshot, data_dir=data_dir)
    finally:
        _shards._BUILT.clear()


def _evaluate(spec: FamilySpec, shards: list[Shard], out: str | os.PathLike, executor: str, options: EvalOptions,
              overwrite: bool, executor_options: dict[str, Any] | None, *, limit: Any, num_fewshot: Any,
              data_dir: Any) -> list[ShardResult]:
    shards = check_existing(shards, options, overwrite=overwrite)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run: dict[str, Any] = {
        "run_id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(t0))}-{os.getpid()}",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "command": " ".join(sys.argv), "versions": versions(), "family": spec.family,
        "family_source": spec.source, "executor": executor, "executor_options": executor_options or {},
        "options": {**asdict(options)}, "limit": limit, "num_fewshot": num_fewshot,
        "data_dir": str(data_dir) if data_dir else os.environ.get("CAPSCALE_DATA"),
        "tasks": {s.task.name: s.task.source for s in shards}, "shards": [], "status": "running",
        "overwrite": overwrite, "host": platform.node(), "pid": os.getpid(),
    }
    results: list[ShardResult] = []

    def on_result(r: ShardResult) -> None:
        results.append(r)
        run["shards"].append(asdict(r))
        write_run_log(outp, run)

    write_run_log(outp, run)
    _shards.remove_stale_temp_files(outp, run["run_id"])
    try:
        EXECUTORS[executor](shards, options, on_result, **(executor_options or {}))
    except BaseException as e:
        run["status"] = "failed"
        run["error"] = f"{type(e).__name__}: {e}"
        run["wall_s"] = time.time() - t0
        write_run_log(outp, run)
        raise
    run["status"] = "done"
    run["wall_s"] = time.time() - t0
    write_run_log(outp, run)
    return results


def evaluate_items(model_or_spec: Any, items: Any, task_name: str, *, tokenizer: Any = None,
                   out: str | os.PathLike | None = None, options: EvalOptions | None = None,
                   checkpoint: Checkpoint | None = None, target_delimiter: str = " ",
                   task_source: str = "items") -> pd.DataFrame:
    """Score simple items (``{"doc_id", "context", "choices", "gold"}``; list or DataFrame) without lm-eval.

    Parameters
    ----------
    model_or_spec : FamilySpec, spec path, checkpoint folder, or a loaded model
        With a loaded model pass ``tokenizer`` and ``checkpoint`` (its N, D and model_id).
    items : list of dict or pandas.DataFrame
    task_name : str
        The ``task`` column.
    tokenizer : optional
        The loaded model's tokenizer.
    out : path, optional
        Store directory: write one shard per checkpoint (skipping existing ones, read back instead).
    options : EvalOptions, optional
        Default: ``EvalOptions(progress=False)``.
    checkpoint : Checkpoint, optional
        Required with a loaded model.
    target_delimiter : str
        Put between the context and every choice (lm-eval's default ``" "``).
    task_source : str
        The ``task_source`` column.

    Returns
    -------
    pandas.DataFrame
        Store rows of every checkpoint (``loglik`` in nats).

    Raises
    ------
    capscale.eval.shards.EvalError
        Naming the checkpoint and the task (and the item when known).
    """
    options = options or EvalOptions(progress=False)
    task_items = items_from_records(items, task=task_name, target_delimiter=target_delimiter)
    if tokenizer is not None or (not isinstance(model_or_spec, (str, os.PathLike, FamilySpec))):
        if checkpoint is None:
            raise InputError("evaluate_items with a loaded model needs checkpoint=Checkpoint(model_id, path, "
                             "params, tokens, ...)")
        df, _ = score_items(model_or_spec, tokenizer, task_items, checkpoint=checkpoint, task=task_name,
                            options=options, task_source=task_source)
        if out is not None:
            store.write_shard(df, out)
        return df
    return evaluate_item_sets(model_or_spec, {task_name: task_items}, out=out, options=options,
                              task_source=task_source)


def evaluate_item_sets(family: str | os.PathLike | FamilySpec, tasks: Mapping[str, Any], *,
                       out: str | os.PathLike | None = None, options: EvalOptions | None = None,
                       target_delimiter: str = " ", task_source: str = "items",
                       model_ids: Sequence[str] | None = None, overwrite: bool = False) -> pd.DataFrame:
    """Score several item sets (``{task_name: items}``) for every checkpoint, loading each checkpoint once.

    Parameters
    ----------
    family : path or FamilySpec
        Spec file (YAML/CSV), one checkpoint folder, or a spec.
    tasks : mapping
        ``{task_name: items}``; items: a list of dicts / DataFrame of ``{"doc_id", "context", "choices", "gold"}``
        records (e.g. the values of ``capscale.synthetic.world.load_tasks(dir)``) or a list of
        :class:`~capscale.data.tasks.TaskItem`.
    out : path, optional
        Store directory: one shard per (checkpoint, task) is written atomically (recording its settings, as
        ``capscale eval``) and existing shards whose settings match (the items' hash, dtype, backend, ...: see
        :func:`capscale.eval.shards.check_existing`) are read back instead of rescored. None: nothing is
        written.
    options : EvalOptions, optional
        Default: ``EvalOptions(progress=False)``.
    target_delimiter : str
        Put between the context and every choice of record items.
    task_source : str
        The ``task_source`` column.
    model_ids : list of str, optional
        Only these checkpoints of the spec.
    overwrite : bool
        Rescore existing shards written with other settings or other items instead of refusing.

    Returns
    -------
    pandas.DataFrame
        Store rows of every checkpoint and task (``loglik`` in nats).

    Raises
    ------
    capscale.errors.InputError
        An existing shard was written with other settings or items (and not ``overwrite``).
    FileNotFoundError
        A checkpoint's path does not exist (checked before anything is scored).
    capscale.eval.shards.EvalError
        Naming the checkpoint and the task.
    """
    options = options or EvalOptions(progress=False)
    built = {t: (list(v) if isinstance(v, list) and v and isinstance(v[0], TaskItem)
                 else items_from_records(v, task=t, target_delimiter=target_delimiter)) for t, v in tasks.items()}
    spec = load_family(family)
    if model_ids:
        spec = spec.select(model_ids)
    for ck in spec.checkpoints:
        ck.check_location()
    specs = {t: TaskSpec(name=t, source=task_source, kind="items") for t in built}
    for t, spec_t in specs.items():
        _shards._BUILT[spec_t] = BuiltTask(spec=spec_t, items=built[t])
    try:
        return _score_item_sets(spec, built, specs, out, options, task_source, overwrite)
    finally:
        for spec_t in specs.values():
            _shards._BUILT.pop(spec_t, None)


def _score_item_sets(spec: FamilySpec, built: dict[str, list[TaskItem]], specs: dict[str, TaskSpec],
                     out: str | os.PathLike | None, options: EvalOptions, task_source: str,
                     overwrite: bool) -> pd.DataFrame:
    frames = []
    for ck in spec.checkpoints:
        shards = [Shard(ck, specs[t], str(Path(out).resolve()) if out is not None else "") for t in built]
        if out is not None:
            shards = check_existing(shards, options, overwrite=overwrite)
            todo = []
            for s in shards:
                if s.done():
                    frames.append(pd.read_parquet(s.path))
                else:
                    todo.append(s)
        else:
            todo = shards
        if not todo:
            continue
        model, tok = load_checkpoint(ck, options)
        for s in todo:
            t = s.task.name
            df, _ = score_items(model, tok, built[t], checkpoint=ck, task=t, options=options,
                                task_source=task_source)
            if out is not None:
                try:
                    max_length = resolve_max_length(model, tok)
                except Exception:  # noqa: BLE001 - a model without a config: not recorded
                    max_length = None
                settings = _shards.shard_settings(s, options, _shards.built_task(s.task), max_length=max_length)
                store.write_shard(df, out, settings=settings)
            frames.append(df)
        del model, tok
    return pd.concat(frames, ignore_index=True)


def with_options(options: EvalOptions, **changes: Any) -> EvalOptions:
    """A copy of ``options`` with fields changed."""
    return replace(options, **changes)
