"""Shards of an evaluation run and the one loop that turns items into store rows.

Everything both executors (:mod:`capscale.eval.local` and :mod:`capscale.eval.ray`) need lives here:

* :class:`EvalOptions` (how to score), :class:`Shard` (one checkpoint x one leaf task, written to one Parquet
  file) and :class:`ShardResult` (what running it produced: one entry of the run log);
* :func:`load_family` and :func:`plan_shards` (resolve the family and the tasks, list the shards);
* :func:`score_items`, the items -> rows loop: every scored item of capscale goes through it, and through
  :func:`capscale.eval.scoring.score_requests` (or lm-eval's HFLM with ``backend="lm-eval"``);
* :func:`load_checkpoint` and :func:`run_shard` (score one shard and write it atomically with
  :func:`capscale.data.store.write_shard`: a pure function of its inputs, so a shard can run anywhere);
* :func:`shard_settings` and :func:`check_existing` (what a shard records about how it was produced, and the
  rerun rule: a finished shard is reused only when every recorded setting matches this run's);
* the run log helpers (:data:`RUN_LOG`, :func:`versions`, :func:`write_run_log`, :func:`failed_result`).

Reruns never mix settings. Every shard records, in its Parquet key-value metadata
(:data:`capscale.data.store.SHARD_SETTINGS_KEY`), the settings that change its numbers (:data:`COMPARED`):
``limit``, ``num_fewshot`` (effective), ``fewshot_seed``, ``task_source``, ``task_sha256`` (SHA-256 of the
task's items as scored -- contexts with their few-shot examples, continuations, choices, gold -- so it changes
with the task's config, its data files, the few-shot sampler or seed and the limit), ``revision``,
``tokenizer``, ``add_bos_token``, ``max_length``, ``dtype`` and ``backend``. A rerun compares them with its
own and refuses (:class:`~capscale.errors.InputError`, exit 1) on any difference, naming the shard, the
setting, both values and ``--overwrite`` (``overwrite=True``), which re-evaluates the mismatching shards
(replacing each atomically). Shards of older versions record no settings: a rerun checks what their rows
hold (``dtype``, ``backend``, ``task_source``, ``num_fewshot``, ``revision`` and the set of ``doc_id``), refuses
on a difference, and otherwise reuses them with a note that the other settings could not be checked.

Units: ``loglik`` in nats (summed over the continuation's tokens); ``n_chars`` / ``n_bytes`` are the lengths of
the choice string without the target delimiter (lm-eval's acc_norm / acc_bytes denominators); ``n_tokens`` the
continuation's tokens after lm-eval's boundary rule; times in seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from capscale._io import to_jsonable, write_json
from capscale.data import store
from capscale.data.family import Checkpoint, FamilySpec, load_spec, spec_from_checkpoint
from capscale.data.tasks import FEWSHOT_SEED, BuiltTask, TaskItem, TaskSpec, build_items, resolve_tasks
from capscale.errors import CapscaleError, InputError, UsageError
from capscale.eval import scoring

__all__ = [
    "RUN_LOG",
    "LEGACY_RUN_LOG",
    "COMPARED",
    "EvalError",
    "EvalOptions",
    "Shard",
    "ShardResult",
    "load_family",
    "plan_shards",
    "score_items",
    "load_checkpoint",
    "run_shard",
    "built_task",
    "shard_settings",
    "check_existing",
    "versions",
    "write_run_log",
    "remove_stale_temp_files",
    "failed_result",
]

#: Name of the JSON run log in the store folder (a leading ``_``: Parquet dataset readers skip it).
RUN_LOG = "_run_log.json"
#: The run log's name before version 0.x; read, merged into :data:`RUN_LOG` and removed on the next write.
LEGACY_RUN_LOG = "run_log.json"
#: Recorded settings a finished shard must match to be reused, each with the flag that sets it.
COMPARED: dict[str, str] = {
    "limit": "--limit", "num_fewshot": "--num-fewshot", "fewshot_seed": "capscale's few-shot seed",
    "task_source": "--data-dir / --include-path", "task_sha256": "the task's config or data files",
    "revision": "the spec's revision", "tokenizer": "the spec's tokenizer", "add_bos_token": "--add-bos-token",
    "max_length": "the checkpoint's config", "dtype": "--dtype", "backend": "--backend",
}
log = logging.getLogger(__name__)


class EvalError(CapscaleError, RuntimeError):
    """A shard could not be evaluated; the message names the checkpoint and the task."""


@dataclass(frozen=True)
class EvalOptions:
    """How to score.

    Attributes
    ----------
    device : str
        ``cpu``, ``cuda`` or ``cuda:N``.
    dtype : str or None
        ``float32``, ``bfloat16`` or ``float16``; None: the checkpoint's spec dtype, else float32.
    batch_size : int or "auto"
        Packed rows (distinct contexts) per forward pass, or ``"auto"`` (a token budget; see
        :func:`capscale.eval.scoring.score_requests`). The lm-eval backend reads ``"auto"`` as 1.
    backend : str
        ``capscale`` (shared-prefix engine) or ``lm-eval`` (lm-eval's HFLM, the reference path).
    progress : bool
        tqdm progress bars.
    add_bos_token : bool or None
        As HFLM (None: the tokenizer decides).
    trust_remote_code : bool
        Passed to ``from_pretrained``.
    prefix_reuse : str
        ``auto`` (default), ``on`` or ``off``: compute a prefix shared by many contexts (a fixed few-shot block)
        once per task and checkpoint (:func:`capscale.eval.scoring.score_requests`). Numbers agree with ``off``
        to float rounding (<= 1e-5 nats), so a store does not record it as a setting.
    device_map : str or None
        Passed to ``from_pretrained`` (``"auto"``: spread a model that does not fit one GPU over the node's
        GPUs and CPU memory, with accelerate); None places the whole model on ``device``.
    """

    device: str = "cpu"
    dtype: str | None = None
    batch_size: int | str = "auto"
    backend: str = "capscale"
    progress: bool = True
    add_bos_token: bool | None = None
    trust_remote_code: bool = False
    prefix_reuse: str = "auto"
    device_map: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in {"capscale", "lm-eval"}:
            raise UsageError(f"unknown backend {self.backend!r}; use 'capscale' or 'lm-eval'")
        if self.device not in {"cpu", "cuda"} and not str(self.device).startswith("cuda:"):
            raise UsageError(f"unknown device {self.device!r}; use 'cpu' or 'cuda'")
        if self.prefix_reuse not in {"auto", "on", "off"}:
            raise UsageError(f"unknown prefix_reuse {self.prefix_reuse!r}; use 'auto', 'on' or 'off'")

    def dtype_for(self, ck: Checkpoint) -> str:
        """The load dtype of ``ck``: this run's ``dtype``, else the checkpoint's, else ``"float32"``."""
        return self.dtype or ck.dtype or "float32"


@dataclass(frozen=True)
class Shard:
    """One unit of work: one checkpoint x one leaf task, written to ``path``.

    Attributes
    ----------
    checkpoint : Checkpoint
    task : TaskSpec
    out_dir : str
        The store folder (absolute).
    """

    checkpoint: Checkpoint
    task: TaskSpec
    out_dir: str
    #: Re-evaluate although the file exists (``--overwrite`` of a mismatching shard; set by check_existing).
    redo: bool = field(default=False, compare=False)
    #: Why a reused shard could not be fully checked (set by :func:`check_existing`).
    note: str | None = field(default=None, compare=False)

    @property
    def path(self) -> Path:
        """The shard's Parquet file in the store."""
        return Path(self.out_dir) / store.shard_name(self.checkpoint.model_id, self.task.name)

    @property
    def key(self) -> str:
        """``model_id/task``: the shard's name in logs and reports."""
        return f"{self.checkpoint.model_id}/{self.task.name}"

    def done(self) -> bool:
        """Whether the shard's file exists (the store writes atomically, so it is complete) and is to be kept."""
        return self.path.is_file() and not self.redo


@dataclass
class ShardResult:
    """What running a shard produced (one entry of the run log).

    ``tokens_per_s`` counts the tokens fed to the model (context once per distinct context plus the
    continuations, without padding) for the capscale engine, and the scored continuation tokens for the
    lm-eval backend; ``n_tokens_scored`` is the number of continuation tokens. ``wall_s`` is the scoring
    time in seconds (model loading excluded); ``items_per_s`` and ``tokens_per_s`` are per second of it.
    ``status`` is ``"done"``, ``"skipped"`` (the file existed; ``note`` says how its settings differ from this
    run's, if they do) or ``"failed"`` (``error`` holds the message).
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

    Parameters
    ----------
    family : path or FamilySpec
    **single
        ``params``, ``tokens``, ``step``, ``tokens_per_step``, ``family_name``, ``revision``, ``gguf_file``:
        apply to a single checkpoint folder only (None values are ignored).
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

    Parameters
    ----------
    spec : FamilySpec
    tasks : str, list of str or list of TaskSpec
        Task/group names (comma-separated string allowed) or resolved tasks.
    out : path
        The store folder.
    data_dir, include_path, num_fewshot, limit
        As :func:`capscale.data.tasks.resolve_tasks`.

    Returns
    -------
    list of Shard
        Checkpoint-major: all tasks of the first checkpoint, then the next.
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

    The one items -> rows loop of capscale: the local and the Ray executor (through :func:`run_shard`),
    :func:`capscale.eval.evaluate.evaluate_items` / ``evaluate_item_sets`` and
    :func:`capscale.synthetic.ladder.evaluate_family` all score through it.

    Parameters
    ----------
    model, tokenizer
        A loaded causal LM and its tokenizer (:func:`load_checkpoint`).
    items : list of TaskItem
    checkpoint : Checkpoint
        Fills ``model_id``, ``family``, ``params``, ``tokens``, ``step``, ``revision`` (and ``compute``/``seed``).
    task : str
        The ``task`` column.
    options : EvalOptions
    task_source, num_fewshot, group
        Copied into the rows (``num_fewshot``/``group`` columns are dropped when None).

    Returns
    -------
    (pandas.DataFrame, dict)
        Rows in the store schema (one per item x choice; ``loglik`` in nats) and ``{"wall_s",
        "n_tokens_scored", "items_per_s", "tokens_per_s", "tokens_fed", "engine_stats"}`` (seconds, tokens).

    Raises
    ------
    EvalError
        Naming the checkpoint and task (no items, missing special tokens, empty continuation after the
        boundary rule).
    """
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
                                            prefix_reuse=options.prefix_reuse, stats=engine_stats)
    except (scoring.ScoringError, AssertionError, ValueError) as e:
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


def load_checkpoint(ck: Checkpoint, options: EvalOptions) -> tuple[Any, Any]:
    """Load a checkpoint's model (in ``options.dtype_for(ck)`` on ``options.device``) and tokenizer.

    ``ck.tokenizer``, when set, replaces the tokenizer found in the checkpoint.

    Raises
    ------
    EvalError
        Naming the checkpoint and its path when it cannot be loaded.
    """
    try:
        model, tok = scoring.load_model(ck.path, revision=ck.revision, dtype=options.dtype_for(ck),
                                        device=options.device, gguf_file=ck.gguf_file,
                                        trust_remote_code=options.trust_remote_code,
                                        device_map=options.device_map)
    except Exception as e:  # noqa: BLE001 - re-raised with the checkpoint's name
        raise EvalError(f"checkpoint {ck.model_id!r} ({ck.path}): cannot load: {e}") from e
    if ck.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ck.tokenizer)
    return model, tok


#: Built tasks of this process, shared by check_existing and the executors (cleared by ``evaluate``).
_BUILT: dict[TaskSpec, BuiltTask] = {}


def built_task(spec: TaskSpec) -> BuiltTask:
    """The items of ``spec``, built once per run (:func:`capscale.data.tasks.build_items`)."""
    if spec not in _BUILT:
        _BUILT[spec] = build_items(spec)
    return _BUILT[spec]


def _items_sha256(built: BuiltTask) -> str:
    h = hashlib.sha256()
    for it in built.items:
        h.update(json.dumps([str(it.doc_id), it.requests, it.choices, it.gold, it.multiple_input],
                            ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _config_max_length(ck: Checkpoint) -> int | None:
    """The max length :func:`capscale.eval.scoring.resolve_max_length` finds in a local ``config.json``."""
    cfg_path = Path(str(ck.path)) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config") or cfg
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if cfg.get(attr) is not None:
            return int(cfg[attr])
    return None  # the tokenizer decides: not known before loading it


def shard_settings(shard: Shard, options: EvalOptions, built: BuiltTask, *,
                   max_length: int | None = None) -> dict[str, Any]:
    """The settings a shard records (and a rerun compares, :data:`COMPARED`), JSON-ready.

    ``max_length`` is the resolved one when the model is loaded, else what the checkpoint's config says.
    """
    ck, t = shard.checkpoint, shard.task
    return to_jsonable({
        "format": 1, "model_id": ck.model_id, "task": t.name, "limit": t.limit,
        "num_fewshot": built.num_fewshot, "fewshot_seed": FEWSHOT_SEED, "task_source": t.source,
        "task_sha256": _items_sha256(built), "n_items": len(built.items), "revision": ck.revision,
        "tokenizer": ck.tokenizer, "add_bos_token": options.add_bos_token,
        "max_length": max_length if max_length is not None else _config_max_length(ck),
        "dtype": options.dtype_for(ck), "backend": options.backend,
    })


def _legacy_mismatches(shard: Shard, want: dict[str, Any], built: BuiltTask) -> list[tuple[str, Any, Any]]:
    """Differences between an old shard's rows (no recorded settings) and this run's settings."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(shard.path).names)
    cols = [c for c in ("dtype", "backend", "task_source", "num_fewshot", "revision", "doc_id") if c in names]
    got = pd.read_parquet(shard.path, columns=cols)
    out = []
    for c in cols:
        if c == "doc_id":
            have_ids = set(got[c].astype(str))
            want_ids = {str(it.doc_id) for it in built.items}
            if have_ids != want_ids:
                out.append(("items (--limit or the task's data)", f"{len(have_ids)} items",
                            f"{len(want_ids)} items"))
            continue
        vals = sorted({str(v) for v in got[c].dropna().unique()})
        if vals and vals != [str(want[c])]:
            out.append((c, vals[0] if len(vals) == 1 else vals, want[c]))
    return out


def check_existing(shards: Sequence[Shard], options: EvalOptions, *, overwrite: bool = False) -> list[Shard]:
    """Apply the rerun rule to the shards already in the store; returns the shards to run.

    A finished shard is reused only when every setting in :data:`COMPARED` matches this run's (see the module
    docstring); shards named as older versions named them are renamed first. Builds the items of every task
    with a finished shard (cached for the executors: :func:`built_task`).

    Parameters
    ----------
    shards : list of Shard
    options : EvalOptions
    overwrite : bool
        Re-evaluate mismatching shards (``redo=True``) instead of refusing.

    Returns
    -------
    list of Shard
        ``shards`` with ``redo`` set on the mismatching ones (``overwrite``) and ``note`` on old shards whose
        settings could only be partly checked.

    Raises
    ------
    InputError
        Without ``overwrite``, when some finished shard was written with other settings: the message names
        every such shard (first 10), the setting, its recorded and its new value, and ``--overwrite``.
    """
    import dataclasses

    out: list[Shard] = []
    problems: list[str] = []
    for s in shards:
        store.migrate_legacy_shard(s.out_dir, s.checkpoint.model_id, s.task.name)
        if not s.path.is_file():
            out.append(s)
            continue
        built = built_task(s.task)
        want = shard_settings(s, options, built)
        have = store.shard_settings(s.path)
        note = None
        if have is None:
            diffs = _legacy_mismatches(s, want, built)
            unchecked = [k for k in COMPARED if k not in {"dtype", "backend", "task_source", "num_fewshot",
                                                          "revision"}]
            note = (f"shard {s.path.name} ({s.key}) was written by an older capscale that did not record "
                    f"{', '.join(unchecked)}; reused as is (--overwrite recomputes it)")
        else:
            diffs = [(k, have.get(k), want[k]) for k in COMPARED
                     if k in have and not (k == "max_length" and want[k] is None) and have.get(k) != want[k]]
            if {k for k, _, _ in diffs} & {"limit", "num_fewshot", "fewshot_seed", "task_source"}:
                # the items' hash follows from a differing limit, shot count or task: name the cause only
                diffs = [d for d in diffs if d[0] != "task_sha256"]
            diffs = [(k, o[:12], n[:12]) if k == "task_sha256" else (k, o, n) for k, o, n in diffs]
        if diffs and overwrite:
            log.warning("shard %s (%s): %s differ; re-evaluating (--overwrite)", s.path.name, s.key,
                        ", ".join(k for k, _, _ in diffs))
            out.append(dataclasses.replace(s, redo=True))
            continue
        if diffs:
            what = "; ".join(f"{k}: {old!r} in the shard, {new!r} in this run ({COMPARED.get(k, '--limit')})"
                             for k, old, new in diffs)
            problems.append(f"shard {s.path.name} (checkpoint {s.checkpoint.model_id!r}, task {s.task.name!r}): "
                            f"{what}")
            continue
        if note:
            log.warning("%s", note)
        out.append(dataclasses.replace(s, note=note) if note else s)
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InputError(f"{len(problems)} finished shard(s) in {shards[0].out_dir} were written with other "
                         "settings than this run's; rerun with --overwrite (overwrite=True) to re-evaluate them, "
                         "or use another --out:\n  " + "\n  ".join(problems[:10]) + more)
    return out


def run_shard(shard: Shard, options: EvalOptions, *, model: Any = None, tokenizer: Any = None,
              built: BuiltTask | None = None) -> ShardResult:
    """Score one shard and write it atomically; a pure function of (shard, options).

    Parameters
    ----------
    shard : Shard
    options : EvalOptions
    model, tokenizer : optional
        Already loaded for this checkpoint (a cache of the executors); loaded here when None.
    built : BuiltTask, optional
        The task's items (a cache); built here when None.

    Returns
    -------
    ShardResult
        ``"skipped"`` at once when the shard is done (:meth:`Shard.done`; :func:`check_existing` decides on
        reruns), else ``"done"``.

    Raises
    ------
    EvalError
        Naming the checkpoint and task.
    """
    ck, t = shard.checkpoint, shard.task
    if shard.done():
        return ShardResult(ck.model_id, t.name, "skipped", str(shard.path), task_source=t.source,
                           dtype=options.dtype_for(ck), note=shard.note)
    if built is None:
        built = build_items(t)
    if model is None:
        model, tokenizer = load_checkpoint(ck, options)
    df, st = score_items(model, tokenizer, built.items, checkpoint=ck, task=t.name, options=options,
                         task_source=t.source, num_fewshot=built.num_fewshot, group=t.group)
    try:
        max_length = scoring.resolve_max_length(model, tokenizer)
    except Exception:  # noqa: BLE001 - a model without a config (tests): not recorded
        max_length = None
    settings = shard_settings(shard, options, built, max_length=max_length)
    try:
        path = store.write_shard(df, shard.out_dir, settings=settings)
    except store.StoreValidationError as e:
        raise EvalError(f"checkpoint {ck.model_id!r}, task {t.name!r}: scored rows fail validation: {e}") from e
    n_excl = sum(len(v) for v in built.excluded.values())
    return ShardResult(ck.model_id, t.name, "done", str(path), n_items=len(built.items), n_rows=len(df),
                       n_excluded=n_excl, excluded={k: [str(x) for x in v[:20]] for k, v in built.excluded.items()},
                       wall_s=st["wall_s"], items_per_s=st["items_per_s"], tokens_per_s=st["tokens_per_s"],
                       n_tokens_scored=st["n_tokens_scored"], tokens_fed=st["tokens_fed"],
                       engine_stats=st["engine_stats"], task_source=t.source, num_fewshot=built.num_fewshot,
                       dtype=options.dtype_for(ck))


def failed_result(shard: Shard, options: EvalOptions, err: BaseException) -> ShardResult:
    """The run log entry of a shard that failed with ``err``."""
    return ShardResult(shard.checkpoint.model_id, shard.task.name, "failed", task_source=shard.task.source,
                       dtype=options.dtype_for(shard.checkpoint), error=str(err))


# ---------------------------------------------------------------------------------------------------- run log


def versions() -> dict[str, str]:
    """Python, platform and the versions of capscale and the packages that change scores (``"not installed"``)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("capscale", "torch", "transformers", "lm_eval", "datasets", "tokenizers", "pandas", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _abandoned(r: dict[str, Any], current: str) -> bool:
    """Whether a ``"running"`` run other than ``current`` can no longer be running.

    A run records its ``host`` and ``pid``: on this host it is abandoned when that process is gone (killed,
    e.g. by SIGKILL or the OOM killer, before it could write its final status). Runs of older versions record
    neither and are abandoned as well. A run of another host cannot be checked and stays ``"running"``.
    """
    if r.get("status") != "running" or r.get("run_id") == current:
        return False
    pid, host = r.get("pid"), r.get("host")
    if pid is None or host is None:
        return True
    return host == platform.node() and int(pid) != os.getpid() and not _pid_alive(int(pid))


def write_run_log(out: str | os.PathLike, run: dict[str, Any]) -> Path:
    """Add or replace (by ``run["run_id"]``) one run in ``out/_run_log.json``, atomically; returns the path.

    ``run["last_seen_utc"]`` is set to now (the heartbeat: the executors write the log as every shard
    finishes). Every other run still ``"running"`` whose process is gone (:func:`_abandoned`) is marked
    ``"abandoned"`` with ``abandoned_utc`` (its ``last_seen_utc`` says when it was last alive). A log under the
    old name ``run_log.json`` is merged in and removed, so the store folder holds only shards and ``_`` files.
    An unreadable log is started afresh.
    """
    path = Path(out) / RUN_LOG
    legacy = Path(out) / LEGACY_RUN_LOG
    runs: list[Any] = []
    for p in (legacy, path):
        if p.is_file():
            try:
                got = json.loads(p.read_text()).get("runs", [])
            except (json.JSONDecodeError, AttributeError):
                got = []
            ids = {r.get("run_id") for r in got if isinstance(r, dict)}
            runs = [r for r in runs if r.get("run_id") not in ids] + [r for r in got if isinstance(r, dict)]
    run["last_seen_utc"] = _utc_now()
    for r in runs:
        if _abandoned(r, run["run_id"]):
            r["status"] = "abandoned"
            r["abandoned_utc"] = run["last_seen_utc"]
            r.setdefault("last_seen_utc", r.get("started_utc"))
            log.warning("run %s in %s was still 'running' but its process is gone (last seen %s): marked "
                        "abandoned", r.get("run_id"), path, r.get("last_seen_utc"))
    runs = [r for r in runs if r.get("run_id") != run["run_id"]] + [run]
    write_json(path, {"runs": runs})
    legacy.unlink(missing_ok=True)
    return path


def remove_stale_temp_files(out: str | os.PathLike, run_id: str) -> list[Path]:
    """Remove the ``_tmp.*`` files a killed run left in the store folder; returns them.

    Atomic writes remove their temporary file on any exception, but not when the process is killed (SIGKILL,
    OOM). They are removed only when no other run of the run log is still ``"running"`` (after
    :func:`write_run_log` has marked the dead ones abandoned): a live run may be writing one right now.
    """
    outp = Path(out)
    try:
        runs = json.loads((outp / RUN_LOG).read_text()).get("runs", [])
    except (OSError, ValueError, AttributeError):
        runs = []
    live = [r.get("run_id") for r in runs if r.get("status") == "running" and r.get("run_id") != run_id]
    if live:
        log.info("%s: runs %s may still be writing; temporary files left as they are", outp, live)
        return []
    stale = [p for p in outp.glob("_tmp.*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.warning("%s: removed %d temporary file(s) left by a killed run", outp, len(stale))
    return stale
