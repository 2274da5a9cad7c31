"""``capscale eval``: score every (checkpoint, task) of a family into a directory of Parquet shards.

The work is split into :class:`Shard` objects, one per (checkpoint, leaf task). :func:`plan_shards` resolves the
tasks and lists the shards; :func:`run_shard` scores one shard and writes it atomically with
:func:`capscale.data.store.write_shard` -- a pure function of its inputs, so a distributed executor can run shards
anywhere; :func:`evaluate` runs a plan with an executor (``"local"``: loop over checkpoints, load each once for all
its tasks). A rerun skips shards whose file exists; an interrupted run loses nothing finished. A JSON run log
(``run_log.json`` in the store folder) records versions, dtype, device, batch size, task sources and the wall time
of every shard.

:func:`evaluate_items` is the fast path for ``{doc_id, context, choices, gold}`` items (no lm-eval TaskManager).

Units: ``loglik`` in nats (summed over the continuation's tokens); ``n_chars`` / ``n_bytes`` are the lengths of
the choice string without the target delimiter (lm-eval's acc_norm / acc_bytes denominators); ``n_tokens`` the
continuation's tokens after lm-eval's boundary rule.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from capscale._io import atomic_write_text
from capscale.data import store
from capscale.data.family import Checkpoint, FamilySpec, load_spec, spec_from_checkpoint
from capscale.data.tasks import BuiltTask, TaskItem, TaskSpec, build_items, items_from_records, resolve_tasks

__all__ = [
    "EvalOptions",
    "Shard",
    "ShardResult",
    "EvalError",
    "plan_shards",
    "run_shard",
    "score_items",
    "evaluate",
    "evaluate_items",
    "evaluate_item_sets",
    "load_family",
    "RUN_LOG",
    "EXECUTORS",
]

RUN_LOG = "run_log.json"
log = logging.getLogger("capscale.eval.evaluate")


class EvalError(RuntimeError):
    """A shard could not be evaluated; the message names the checkpoint and the task."""


@dataclass(frozen=True)
class EvalOptions:
    """How to score.

    Attributes
    ----------
    device : str
        ``cpu`` or ``cuda``.
    dtype : str or None
        ``float32`` or ``bfloat16``; None: the checkpoint's spec dtype, else float32.
    batch_size : int or "auto"
    backend : str
        ``capscale`` (shared-prefix engine) or ``lm-eval`` (lm-eval's HFLM, the reference path).
    progress : bool
        tqdm progress bars.
    add_bos_token : bool or None
        As HFLM (None: the tokenizer decides).
    trust_remote_code : bool
    """

    device: str = "cpu"
    dtype: str | None = None
    batch_size: int | str = "auto"
    backend: str = "capscale"
    progress: bool = True
    add_bos_token: bool | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.backend not in {"capscale", "lm-eval"}:
            raise ValueError(f"unknown backend {self.backend!r}; use 'capscale' or 'lm-eval'")
        if self.device not in {"cpu", "cuda"} and not str(self.device).startswith("cuda:"):
            raise ValueError(f"unknown device {self.device!r}; use 'cpu' or 'cuda'")

    def dtype_for(self, ck: Checkpoint) -> str:
        return self.dtype or ck.dtype or "float32"


@dataclass(frozen=True)
class Shard:
    """One unit of work: one checkpoint x one leaf task, written to ``path``."""

    checkpoint: Checkpoint
    task: TaskSpec
    out_dir: str

    @property
    def path(self) -> Path:
        return Path(self.out_dir) / store.shard_name(self.checkpoint.model_id, self.task.name)

    @property
    def key(self) -> str:
        return f"{self.checkpoint.model_id}/{self.task.name}"

    def done(self) -> bool:
        return self.path.is_file()


@dataclass
class ShardResult:
    """What running a shard produced (one entry of the run log).

    ``tokens_per_s`` counts the tokens fed to the model (context once per distinct context plus the
    continuations, without padding) for the capscale engine, and the scored continuation tokens for the
    lm-eval backend; ``n_tokens_scored`` is the number of continuation tokens.
    """

    model_id: str
    task: str
    status: str  # "done", "skipped", "failed"
    path: str | None = None
    n_items: int = 0
    n_rows: int = 0
    n_excluded: int = 0
    excluded: dict[str, list[Any]] = field(default_factory=dict)
    wall_s: float = 0.0
    items_per_s: float | None = None
    tokens_per_s: float | None = None
    n_tokens_scored: int = 0
    tokens_fed: int | None = None
    engine_stats: dict[str, Any] = field(default_factory=dict)
    task_source: str = ""
    num_fewshot: int | None = None
    dtype: str = ""
    error: str | None = None
    note: str | None = None


# -------------------------------------------------------------------------------------------------- planning


def load_family(family: str | os.PathLike | FamilySpec, **single: Any) -> FamilySpec:
    """A :class:`FamilySpec` from a spec file (YAML/CSV), a single checkpoint folder, or a spec object.

    ``single`` (params, tokens, step, tokens_per_step, family_name, revision, gguf_file) applies to a single
    checkpoint folder only.
    """
    if isinstance(family, FamilySpec):
        return family
    single = {("family" if k == "family_name" else k): v for k, v in single.items() if v is not None}
    p = Path(family)
    if p.is_file() and p.suffix.lower() in {".yaml", ".yml", ".csv"}:
        return load_spec(p, family=single.get("family"))
    return spec_from_checkpoint(p if p.exists() else str(family), **single)


def plan_shards(spec: FamilySpec, tasks: Sequence[TaskSpec] | str | Sequence[str], out: str | os.PathLike, *,
                data_dir: str | os.PathLike | None = None, include_path: Any = None, num_fewshot: int | None = None,
                limit: int | float | None = None) -> list[Shard]:
    """List the shards of a run: every checkpoint x every leaf task (groups expanded).

    Tasks are resolved (and checked to be multiple choice) and every checkpoint's path is checked before any
    scoring, so a bad name fails fast with an error naming it.
    """
    if tasks and isinstance(tasks, (list, tuple)) and all(isinstance(t, TaskSpec) for t in tasks):
        specs = list(tasks)
    else:
        specs = resolve_tasks(tasks, data_dir=data_dir, include_path=include_path, num_fewshot=num_fewshot,
                              limit=limit)
    for ck in spec.checkpoints:
        ck.check_location()
    out = str(Path(out).resolve())
    return [Shard(ck, t, out) for ck in spec.checkpoints for t in specs]


# ---------------------------------------------------------------------------------------------------- scoring


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("capscale", "torch", "transformers", "lm_eval", "datasets", "tokenizers", "pandas", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _check_special_tokens(tokenizer: Any, items: Sequence[TaskItem], where: str) -> None:
    if any(ctx == "" for it in items for ctx, _ in it.requests):
        if getattr(tokenizer, "bos_token_id", None) is None and getattr(tokenizer, "eos_token_id", None) is None:
            raise EvalError(f"{where}: the task has empty contexts, which are conditioned on the BOS (else EOS) "
                            "token, but the tokenizer defines neither bos_token nor eos_token")
    for it in items:
        for j, (_, cont) in enumerate(it.requests):
            if cont == "":
                raise EvalError(f"{where}: item {it.doc_id!r} choice {j} has an empty continuation")


def score_items(model: Any, tokenizer: Any, items: Sequence[TaskItem], *, checkpoint: Checkpoint, task: str,
                options: EvalOptions, task_source: str = "items", num_fewshot: int | None = None,
                group: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score items with a loaded model and return store rows plus timing statistics.

    Returns
    -------
    (pandas.DataFrame, dict)
        Rows in the store schema (one per item x choice) and ``{"wall_s", "n_tokens_scored",
        "items_per_s", "tokens_per_s"}``.

    Raises
    ------
    EvalError
        Naming the checkpoint and task (missing special tokens, empty continuation after the boundary rule).
    """
    from capscale.eval import scoring

    where = f"checkpoint {checkpoint.model_id!r}, task {task!r}"
    if not items:
        raise EvalError(f"{where}: no items to score")
    _check_special_tokens(tokenizer, items, where)
    reqs = [scoring.Request(c, k) for it in items for c, k in it.requests]
    t0 = time.perf_counter()
    engine_stats: dict[str, Any] = {}
    try:
        if options.backend == "lm-eval":
            bs = 1 if options.batch_size == "auto" else options.batch_size
            scores = scoring.score_requests_lm_eval(model, tokenizer, reqs, batch_size=bs, device=options.device,
                                                    add_bos_token=options.add_bos_token)
        else:
            scores = scoring.score_requests(model, tokenizer, reqs, batch_size=options.batch_size,
                                            device=options.device, progress=options.progress,
                                            add_bos_token=options.add_bos_token, desc=f"{checkpoint.model_id} {task}",
                                            stats=engine_stats)
    except (scoring.ScoringError, AssertionError, ValueError) as e:
        import re

        m = re.search(r"request (\d+)", str(e))
        if m and int(m.group(1)) < len(reqs):
            owners = [(it.doc_id, j) for it in items for j in range(len(it.requests))]
            doc, j = owners[int(m.group(1))]
            where = f"{where}, item {doc!r} choice {j}"
        raise EvalError(f"{where}: {e}") from e
    wall = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    i = 0
    ck = checkpoint
    for it in items:
        multi_gold = len(it.gold) > 1
        for j, choice in enumerate(it.choices):
            s = scores[i]
            i += 1
            rows.append({
                "model_id": ck.model_id, "family": ck.family, "params": ck.params, "tokens": ck.tokens,
                "step": ck.step, "task": task, "doc_id": it.doc_id, "choice_idx": j, "is_correct": j in it.gold,
                "loglik": float(s.loglik), "n_tokens": int(s.n_tokens), "n_chars": len(choice),
                "n_bytes": len(choice.encode("utf-8")), "is_greedy": bool(s.is_greedy),
                "revision": ck.revision, "task_source": task_source, "multiple_input": bool(it.multiple_input),
                "multi_gold": multi_gold, "num_fewshot": num_fewshot, "group": group,
                "dtype": options.dtype_for(ck), "backend": options.backend,
                **({"compute": ck.compute} if ck.compute else {}), **({"seed": ck.seed} if ck.seed is not None else {}),
            })
    df = pd.DataFrame(rows)
    for col in ("step", "revision", "group", "num_fewshot"):
        if df[col].isna().all():
            df = df.drop(columns=col)
    n_tok = int(sum(s.n_tokens for s in scores))
    fed = engine_stats.get("unique_tokens")
    stats = {"wall_s": wall, "n_tokens_scored": n_tok, "items_per_s": len(items) / wall if wall > 0 else None,
             "tokens_per_s": (fed if fed is not None else n_tok) / wall if wall > 0 else None,
             "tokens_fed": fed, "engine_stats": {k: v for k, v in engine_stats.items() if k != "batch_sizes"}}
    return df, stats


def _load(ck: Checkpoint, options: EvalOptions) -> tuple[Any, Any]:
    from capscale.eval import scoring

    try:
        model, tok = scoring.load_model(ck.path, revision=ck.revision, dtype=options.dtype_for(ck),
                                        device=options.device, gguf_file=ck.gguf_file,
                                        trust_remote_code=options.trust_remote_code)
    except Exception as e:  # noqa: BLE001 - re-raised with the checkpoint's name
        raise EvalError(f"checkpoint {ck.model_id!r} ({ck.path}): cannot load: {e}") from e
    if ck.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ck.tokenizer)
    return model, tok


def _existing_mismatch(shard: Shard, options: EvalOptions) -> str | None:
    """Say how a finished shard differs from what this run would write (it is kept, never overwritten)."""
    import pyarrow.parquet as pq

    want = {"dtype": options.dtype_for(shard.checkpoint), "backend": options.backend,
            "task_source": shard.task.source}
    try:
        have_cols = set(pq.read_schema(shard.path).names)
        cols = [c for c in want if c in have_cols]
        got = pd.read_parquet(shard.path, columns=cols) if cols else pd.DataFrame()
    except Exception as e:  # noqa: BLE001 - an unreadable shard is reported, not fatal here
        return f"existing shard unreadable ({e}); delete it to recompute"
    diffs = [f"{c}={sorted(map(str, got[c].unique()))} (this run: {want[c]})" for c in cols
             if set(map(str, got[c].unique())) != {str(want[c])}]
    if not diffs:
        return None
    msg = (f"shard {shard.path.name} was kept from an earlier run with different settings: {'; '.join(diffs)}; "
           "delete it (or use another --out) to recompute")
    log.warning(msg)
    return msg


def run_shard(shard: Shard, options: EvalOptions, *, model: Any = None, tokenizer: Any = None,
              built: BuiltTask | None = None) -> ShardResult:
    """Score one shard and write it atomically; a pure function of (shard, options).

    ``model``/``tokenizer`` (already loaded for this checkpoint) and ``built`` (the task's items) are optional
    caches used by the local executor; without them the checkpoint is loaded and the task built here.
    A shard whose file exists is skipped.
    """
    ck, t = shard.checkpoint, shard.task
    if shard.done():
        return ShardResult(ck.model_id, t.name, "skipped", str(shard.path), task_source=t.source,
                           dtype=options.dtype_for(ck), note=_existing_mismatch(shard, options))
    if built is None:
        built = build_items(t)
    if model is None:
        model, tokenizer = _load(ck, options)
    df, st = score_items(model, tokenizer, built.items, checkpoint=ck, task=t.name, options=options,
                         task_source=t.source, num_fewshot=built.num_fewshot, group=t.group)
    try:
        path = store.write_shard(df, shard.out_dir)
    except store.StoreValidationError as e:
        raise EvalError(f"checkpoint {ck.model_id!r}, task {t.name!r}: scored rows fail validation: {e}") from e
    n_excl = sum(len(v) for v in built.excluded.values())
    return ShardResult(ck.model_id, t.name, "done", str(path), n_items=len(built.items), n_rows=len(df),
                       n_excluded=n_excl, excluded={k: [str(x) for x in v[:20]] for k, v in built.excluded.items()},
                       wall_s=st["wall_s"], items_per_s=st["items_per_s"], tokens_per_s=st["tokens_per_s"],
                       n_tokens_scored=st["n_tokens_scored"], tokens_fed=st["tokens_fed"],
                       engine_stats=st["engine_stats"], task_source=t.source, num_fewshot=built.num_fewshot,
                       dtype=options.dtype_for(ck))


# --------------------------------------------------------------------------------------------------- executors


def _write_log(out: Path, run: dict[str, Any]) -> None:
    path = out / RUN_LOG
    runs: list[Any] = []
    if path.is_file():
        try:
            runs = json.loads(path.read_text()).get("runs", [])
        except (json.JSONDecodeError, AttributeError):
            runs = []
    runs = [r for r in runs if r.get("run_id") != run["run_id"]] + [run]
    atomic_write_text(path, json.dumps({"runs": runs}, indent=1, default=str))


def _failed(shard: Shard, options: EvalOptions, err: BaseException) -> ShardResult:
    return ShardResult(shard.checkpoint.model_id, shard.task.name, "failed", task_source=shard.task.source,
                       dtype=options.dtype_for(shard.checkpoint), error=str(err))


def _local_executor(shards: Sequence[Shard], options: EvalOptions, on_result: Callable[[ShardResult], None]) -> None:
    """Loop over checkpoints; load each once (only if it has unfinished shards) and run all its tasks."""
    from tqdm.auto import tqdm

    built_cache: dict[TaskSpec, BuiltTask] = {}
    by_ck: dict[str, list[Shard]] = {}
    for s in shards:
        by_ck.setdefault(s.checkpoint.model_id, []).append(s)
    bar = tqdm(total=len(shards), desc="shards", unit="shard", disable=not options.progress or None)
    for group in by_ck.values():
        todo = [s for s in group if not s.done()]
        for s in group:
            if s.done():
                on_result(run_shard(s, options))
                bar.update(1)
        if not todo:
            continue
        for s in todo:  # build tasks before loading the model: task errors come first and cheaply
            if s.task not in built_cache:
                built_cache[s.task] = build_items(s.task)
        try:
            model, tok = _load(todo[0].checkpoint, options)
        except EvalError as e:
            on_result(_failed(todo[0], options, e))
            raise
        for s in todo:
            try:
                r = run_shard(s, options, model=model, tokenizer=tok, built=built_cache[s.task])
            except EvalError as e:
                on_result(_failed(s, options, e))
                raise
            on_result(r)
            bar.update(1)
            bar.set_postfix_str(f"{s.key}: {r.items_per_s or 0:.1f} items/s, {r.tokens_per_s or 0:.0f} tok/s")
        del model, tok
    bar.close()


def _ray_executor(shards: Sequence[Shard], options: EvalOptions, on_result: Callable[[ShardResult], None],
                  **executor_options: Any) -> Any:
    """Every shard one Ray task (issue 8): see :func:`capscale.eval.ray.ray_executor`; Ray is optional."""
    from capscale.eval.ray import ray_executor

    return ray_executor(shards, options, on_result, **executor_options)


#: Executors by name; each is ``fn(shards, options, on_result, **executor_options)``.
EXECUTORS: dict[str, Callable[..., Any]] = {"local": _local_executor, "ray": _ray_executor}


def evaluate(family: str | os.PathLike | FamilySpec, tasks: str | Sequence[str] | Sequence[TaskSpec],
             out: str | os.PathLike, *, executor: str = "local", data_dir: str | os.PathLike | None = None,
             include_path: Any = None, num_fewshot: int | None = None, limit: int | float | None = None,
             options: EvalOptions | None = None, model_ids: Sequence[str] | None = None,
             executor_options: dict[str, Any] | None = None, **single: Any) -> list[ShardResult]:
    """Evaluate a family on tasks into a shard directory ``out``.

    Parameters
    ----------
    family : path or FamilySpec
        Spec file (YAML/CSV), one checkpoint folder, or a spec.
    tasks : str or list
        Task/group names (comma-separated string allowed) or resolved :class:`TaskSpec` objects.
    out : path
        Store directory (one Parquet shard per checkpoint x task, plus ``run_log.json``).
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
    **single
        ``params``/``tokens``/... for a single checkpoint folder (see :func:`load_family`).

    Returns
    -------
    list of ShardResult
        One per shard, in completion order (skipped shards included).

    Raises
    ------
    EvalError
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
        raise ValueError(f"unknown executor {executor!r}; available: {sorted(EXECUTORS)}")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run: dict[str, Any] = {
        "run_id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(t0))}-{os.getpid()}",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "command": " ".join(sys.argv), "versions": _versions(), "family": spec.family,
        "family_source": spec.source, "executor": executor, "executor_options": executor_options or {},
        "options": {**asdict(options)}, "limit": limit, "num_fewshot": num_fewshot,
        "data_dir": str(data_dir) if data_dir else os.environ.get("CAPSCALE_DATA"),
        "tasks": {s.task.name: s.task.source for s in shards}, "shards": [], "status": "running",
    }
    results: list[ShardResult] = []

    def on_result(r: ShardResult) -> None:
        results.append(r)
        run["shards"].append(asdict(r))
        _write_log(outp, run)

    _write_log(outp, run)
    try:
        EXECUTORS[executor](shards, options, on_result, **(executor_options or {}))
    except BaseException as e:
        run["status"] = "failed"
        run["error"] = f"{type(e).__name__}: {e}"
        run["wall_s"] = time.time() - t0
        _write_log(outp, run)
        raise
    run["status"] = "done"
    run["wall_s"] = time.time() - t0
    _write_log(outp, run)
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
    out : path, optional
        Store directory: write one shard per checkpoint (skipping existing ones, read back instead).
    options : EvalOptions

    Returns
    -------
    pandas.DataFrame
        Store rows of every checkpoint.
    """
    options = options or EvalOptions(progress=False)
    task_items = items_from_records(items, task=task_name, target_delimiter=target_delimiter)
    if tokenizer is not None or (not isinstance(model_or_spec, (str, os.PathLike, FamilySpec))):
        if checkpoint is None:
            raise ValueError("evaluate_items with a loaded model needs checkpoint=Checkpoint(model_id, path, "
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
                       model_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Score several item sets (``{task_name: items}``) for every checkpoint, loading each checkpoint once.

    ``items`` per task: a list of dicts / DataFrame of ``{"doc_id", "context", "choices", "gold"}`` records or a
    list of :class:`~capscale.data.tasks.TaskItem` (e.g. ``capscale.synthetic.world.load_tasks(dir)``). With ``out``, one
    shard per (checkpoint, task) is written atomically and existing shards are read back instead of rescored.

    Returns
    -------
    pandas.DataFrame
        Store rows of every checkpoint and task.
    """
    options = options or EvalOptions(progress=False)
    built = {t: (list(v) if isinstance(v, list) and v and isinstance(v[0], TaskItem)
                 else items_from_records(v, task=t, target_delimiter=target_delimiter)) for t, v in tasks.items()}
    spec = load_family(family)
    if model_ids:
        spec = spec.select(model_ids)
    for ck in spec.checkpoints:
        ck.check_location()
    frames = []
    for ck in spec.checkpoints:
        todo = []
        for t in built:
            path = Path(out) / store.shard_name(ck.model_id, t) if out is not None else None
            if path is not None and path.is_file():
                frames.append(pd.read_parquet(path))
            else:
                todo.append(t)
        if not todo:
            continue
        model, tok = _load(ck, options)
        for t in todo:
            df, _ = score_items(model, tok, built[t], checkpoint=ck, task=t, options=options,
                                task_source=task_source)
            if out is not None:
                store.write_shard(df, out)
            frames.append(df)
        del model, tok
    return pd.concat(frames, ignore_index=True)


def with_options(options: EvalOptions, **changes: Any) -> EvalOptions:
    """A copy of ``options`` with fields changed."""
    return replace(options, **changes)
