"""Task resolution and request building for multiple-choice tasks, through lm-eval's own task objects.

A task name resolves, in this order, to

1. a task or group in a folder given with ``include_path`` (``--include-path``; lm-eval task YAMLs),
2. capscale's local definition in ``capscale/data/task_configs/`` (package data) when a data root is given
   (``--data-dir`` or ``$CAPSCALE_DATA``): real items read in place from a folder ``mc/``, under lm-eval's names
   (``arc_easy``, ``piqa``, ``mmlu``, ``blimp``, ...),
3. lm-eval's own (hub-backed) task of that name.

Groups (``mmlu``, ``blimp``, ``zorro``, ...) expand to their leaf tasks. Requests come from lm-eval's
``ConfigurableTask.build_all_requests`` so contexts, target delimiters, few-shot examples and ``doc_to_choice`` are
exactly lm-eval's. Only ``output_type: multiple_choice`` tasks are accepted. :func:`items_from_records` is the fast
path for simple ``{doc_id, context, choices, gold}`` items that skips lm-eval entirely.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capscale.errors import CapscaleError

__all__ = [
    "TaskItem",
    "TaskSpec",
    "TaskError",
    "UnknownTaskError",
    "NotMultipleChoiceError",
    "local_tasks_dir",
    "resolve_tasks",
    "build_items",
    "items_from_records",
    "DATA_ENV",
]

DATA_ENV = "CAPSCALE_DATA"
META_KEY = "capscale_data_dir"
FEWSHOT_SEED = 1234  # lm-eval's simple_evaluate default fewshot_random_seed
log = logging.getLogger("capscale.data.tasks")


class _QuietCustomDataset(logging.Filter):
    """Drop lm-eval's per-task hint about ``--metadata`` (printed for every custom_dataset task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


logging.getLogger("lm_eval.api.task").addFilter(_QuietCustomDataset())


class TaskError(CapscaleError, ValueError):
    """A task cannot be used; the message names the task."""


class UnknownTaskError(TaskError, KeyError):
    """No task or group of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NotMultipleChoiceError(TaskError):
    """The task's output type is not ``multiple_choice``."""


@dataclass(frozen=True)
class TaskSpec:
    """A resolved leaf task: everything needed to rebuild its requests anywhere (pure, picklable).

    Attributes
    ----------
    name : str
        Leaf task name (stored in the ``task`` column).
    source : str
        Where it came from: ``capscale-local:<yaml>``, ``include:<yaml>``, ``lm-eval-<version>:<yaml>`` or
        ``items`` (the :func:`items_from_records` fast path).
    kind : str
        ``local``, ``include`` or ``lm-eval``.
    data_dir : str or None
        Data root for local tasks.
    include_paths : tuple of str
        ``--include-path`` folders.
    num_fewshot : int or None
        Requested few-shot count (None: the task's default, else 0, as lm-eval).
    limit : int or float or None
        First N items (a float < 1 is a fraction, as lm-eval's ``--limit``).
    group : str or None
        The group the name was expanded from.
    config : dict or None
        Patched inline config (include-path tasks whose ``data_files`` are relative to their YAML).
    """

    name: str
    source: str
    kind: str
    data_dir: str | None = None
    include_paths: tuple[str, ...] = ()
    num_fewshot: int | None = None
    limit: int | float | None = None
    group: str | None = None
    config: Any = field(default=None, compare=False, hash=False)


@dataclass
class TaskItem:
    """One multiple-choice item ready for scoring.

    Attributes
    ----------
    doc_id : int or str
    requests : list of (context, continuation)
        One per choice, in choice order; the continuation includes the target delimiter.
    choices : list of str
        Choice strings as lm-eval's ``doc_to_choice`` returns them (no delimiter): their lengths are
        ``n_chars``/``n_bytes`` (lm-eval acc_norm / acc_bytes). For multiple-input tasks these are the contexts.
    gold : list of int
        Index (or indices, multi-target) of the correct choice(s).
    multiple_input : bool
        Contexts vary per choice and the continuation is shared (WinoGrande).
    """

    doc_id: int | str
    requests: list[tuple[str, str]]
    choices: list[str]
    gold: list[int]
    multiple_input: bool = False


# ------------------------------------------------------------------------------------------- resolution


def local_tasks_dir() -> Path | None:
    """capscale's task definitions: ``capscale/data/task_configs/`` (package data), or ``$CAPSCALE_TASKS_DIR``."""
    env = os.environ.get("CAPSCALE_TASKS_DIR")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parent / "task_configs")
    for c in cands:
        if (c / "capscale_mc_data.py").is_file():
            return c
    return None


def _data_dir(data_dir: str | os.PathLike | None) -> str | None:
    raw = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if not raw:
        return None
    p = Path(raw).expanduser().resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"data root {str(p)!r} (from --data-dir or ${DATA_ENV}) is not a directory")
    return str(p)


def _lm_eval_version() -> str:
    try:
        from importlib.metadata import version

        return version("lm_eval")
    except Exception:  # pragma: no cover
        return "unknown"


_DEFAULT_MANAGERS: dict[str, Any] = {}


class _Resolver:
    """Caches lm-eval TaskManagers (the default index takes ~7 s) for one resolution run."""

    def __init__(self, data_dir: str | None, include_paths: tuple[str, ...], search_lm_eval: bool = True):
        self.data_dir = data_dir
        self.include_paths = include_paths
        self.search_lm_eval = search_lm_eval
        self._managers: dict[str, Any] = {}

    def manager(self, kind: str):
        if kind in self._managers:
            return self._managers[kind]
        from lm_eval.tasks import TaskManager

        meta = {META_KEY: self.data_dir} if self.data_dir else None
        if kind == "include":
            tm = TaskManager(include_path=list(self.include_paths), include_defaults=False, metadata=meta)
        elif kind == "local":
            tm = TaskManager(include_path=str(local_tasks_dir()), include_defaults=False, metadata=meta)
        else:  # lm-eval's full index takes ~7 s: built once per process and data root
            key = self.data_dir or ""
            tm = _DEFAULT_MANAGERS.get(key)
            if tm is None:
                tm = _DEFAULT_MANAGERS[key] = TaskManager(include_defaults=True, metadata=meta)
        self._managers[kind] = tm
        return tm

    def kinds(self) -> list[str]:
        out = []
        if self.include_paths:
            out.append("include")
        if self.data_dir and local_tasks_dir() is not None:
            out.append("local")
        if self.search_lm_eval:
            out.append("lm-eval")
        return out

    def find(self, name: str) -> tuple[str, Any]:
        for kind in self.kinds():
            tm = self.manager(kind)
            if name in tm.all_tasks:
                return kind, tm
        raise self.unknown(name)

    def unknown(self, name: str) -> UnknownTaskError:
        names: set[str] = set()
        for tm in self._managers.values():
            names.update(tm.all_tasks)
        close = difflib.get_close_matches(name, sorted(names), n=5)
        where = ", ".join(self.kinds())
        hint = f"; did you mean {close}?" if close else ""
        extra = "" if self.data_dir else (" (local tasks over a folder of multiple-choice items need --data-dir or "
                                          f"${DATA_ENV})")
        return UnknownTaskError(f"unknown task {name!r}: not found in {where}{extra}{hint}")


def _source(kind: str, task: Any) -> str:
    meta = getattr(task.config, "metadata", None) or {}
    src = meta.get("config_source", "inline") if isinstance(meta, dict) else "inline"
    if kind == "local":
        try:
            # stable across layouts: stores written before the definitions moved into the package say tasks/...
            src = "tasks/" + Path(src).relative_to(local_tasks_dir()).as_posix()
        except (ValueError, TypeError, AttributeError):
            pass
        return f"capscale-local:{src}"
    if kind == "lm-eval":
        if "/lm_eval/tasks/" in src:
            src = src[src.index("/lm_eval/tasks/") + 1:]
        return f"lm-eval-{_lm_eval_version()}:{src}"
    return f"include:{src}"


def _check_mc(name: str, task: Any) -> None:
    otype = getattr(task, "OUTPUT_TYPE", None) or getattr(task.config, "output_type", None)
    if otype != "multiple_choice":
        raise NotMultipleChoiceError(f"task {name!r} has output_type {otype!r}; capscale scores only "
                                     "multiple_choice tasks")


def _patched_include_config(entry: Any) -> dict[str, Any] | None:
    """Full config of an include-path task with relative ``data_files`` made relative to its YAML folder.

    lm-eval resolves ``data_files`` against the current directory; capscale resolves them against the YAML's
    folder when the file exists there and not in the current directory.
    """
    path = getattr(entry, "yaml_path", None)
    if path is None:
        return None
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(path, resolve_func=True)
    dk = cfg.get("dataset_kwargs") or {}
    files = dk.get("data_files")
    if not files:
        return None
    base = Path(path).parent
    changed = False

    def fix(f: str) -> str:
        nonlocal changed
        if isinstance(f, str) and not Path(f).is_absolute() and not Path(f).exists() and (base / f).exists():
            changed = True
            return str((base / f).resolve())
        return f

    if isinstance(files, dict):
        new = {k: ([fix(x) for x in v] if isinstance(v, list) else fix(v)) for k, v in files.items()}
    elif isinstance(files, list):
        new = [fix(x) for x in files]
    else:
        new = fix(files)
    if not changed:
        return None
    cfg["dataset_kwargs"] = {**dk, "data_files": new}
    for key in ("group", "tag", "task_list"):
        cfg.pop(key, None)
    return cfg


def resolve_tasks(names: str | Sequence[str], *, data_dir: str | os.PathLike | None = None,
                  include_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                  num_fewshot: int | None = None, limit: int | float | None = None,
                  search_lm_eval: bool = True) -> list[TaskSpec]:
    """Resolve task names (comma-separated string or list) to leaf :class:`TaskSpec` objects.

    Every leaf is checked to be ``multiple_choice``. Nothing is scored. ``search_lm_eval=False`` skips lm-eval's
    own task index (about 7 s or more to build) for names found in neither the include paths nor the local tasks.

    Raises
    ------
    UnknownTaskError, NotMultipleChoiceError
        Naming the task.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise TaskError("no tasks given")
    if include_path is None:
        incs: tuple[str, ...] = ()
    elif isinstance(include_path, (str, os.PathLike)):
        incs = (str(Path(include_path).resolve()),)
    else:
        incs = tuple(str(Path(p).resolve()) for p in include_path)
    for p in incs:
        if not Path(p).is_dir():
            raise FileNotFoundError(f"--include-path {p!r} is not a directory")
    dd = _data_dir(data_dir)
    res = _Resolver(dd, incs, search_lm_eval)
    out: list[TaskSpec] = []
    for name in names:
        kind, tm = res.find(name)
        patched = _patched_include_config(tm.task_index.get(name)) if kind == "include" else None
        try:
            loaded = tm.load([patched if patched is not None else name])
        except Exception as e:  # noqa: BLE001 - dataset or config errors, re-raised naming the task
            raise TaskError(f"task {name!r} ({kind}): cannot be loaded: {type(e).__name__}: {e}") from e
        tasks = loaded["tasks"]
        group = name if name in loaded.get("groups", {}) else None
        for leaf, task in tasks.items():
            _check_mc(leaf, task)
            config = patched if patched is not None and leaf == name else None
            src = _source(kind, task)
            if config is not None:
                src = f"include:{tm.task_index[name].yaml_path}"
            ts = TaskSpec(name=leaf, source=src, kind=kind, data_dir=dd, include_paths=incs,
                          num_fewshot=num_fewshot, limit=limit, group=group, config=config)
            _LOADED[_cache_key(ts)] = task
            out.append(ts)
    seen: set[str] = set()
    dups = [s.name for s in out if s.name in seen or seen.add(s.name)]
    if dups:
        raise TaskError(f"task(s) {sorted(set(dups))} requested more than once (directly or through a group)")
    return out


# --------------------------------------------------------------------------------------------- requests


def _cache_key(spec: TaskSpec) -> tuple[Any, ...]:
    return (spec.name, spec.kind, spec.data_dir, spec.include_paths, spec.source)


#: Task objects built while resolving, handed once to :func:`load_task_object` (saves loading the data twice).
_LOADED: dict[tuple[Any, ...], Any] = {}


def load_task_object(spec: TaskSpec) -> Any:
    """Rebuild the lm-eval task object of a :class:`TaskSpec`, with few-shot count and seed set as lm-eval's
    ``simple_evaluate`` sets them."""
    task = _LOADED.pop(_cache_key(spec), None)
    if task is not None:
        return _configure(spec, task)
    res = _Resolver(spec.data_dir, spec.include_paths)
    tm = res.manager(spec.kind)
    if spec.config is not None:
        task = tm.load([dict(spec.config)])["tasks"]
        task = next(iter(task.values()))
    else:
        if spec.name not in tm.all_tasks:
            raise res.unknown(spec.name)
        task = tm.load([spec.name])["tasks"][spec.name]
    return _configure(spec, task)


def _configure(spec: TaskSpec, task: Any) -> Any:
    _check_mc(spec.name, task)
    default = task.get_config("num_fewshot")
    if spec.num_fewshot is not None:
        if default == 0 and spec.num_fewshot != 0:
            log.warning("num_fewshot is 0 in the config of %s; the requested %d is ignored (as lm-eval)",
                        spec.name, spec.num_fewshot)
        else:
            task.set_config(key="num_fewshot", value=spec.num_fewshot)
    elif default is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return task


def _limit(task: Any, limit: int | float | None) -> int | None:
    if limit is None:
        return None
    import math

    return int(math.ceil(len(task.eval_docs) * limit)) if limit < 1.0 else int(limit)


@dataclass
class BuiltTask:
    """Items of one task plus what was excluded (never silently)."""

    spec: TaskSpec
    items: list[TaskItem]
    excluded: dict[str, list[Any]] = field(default_factory=dict)
    num_fewshot: int = 0
    target_delimiter: str = " "


def _gold_indices(task: Any, doc: Any, where: str, multi_in: bool) -> tuple[list[str], list[int]]:
    """The choices of one lm-eval doc and its gold indices; :class:`TaskError` (at ``where``) when one is invalid."""
    choices = [str(c) for c in task.doc_to_choice(doc)]
    k = len(choices)
    gold_raw = task.doc_to_text(doc) if multi_in else task.doc_to_target(doc)
    golds = gold_raw if isinstance(gold_raw, list) else [gold_raw]
    if not golds:
        raise TaskError(f"{where}: no gold label")
    gl: list[int] = []
    for g in golds:
        if isinstance(g, str) and not multi_in:  # a label: its position among the choices
            if g in choices:
                gl.append(choices.index(g))
                continue
            if not g.strip().lstrip("-").isdigit():
                raise TaskError(f"{where}: gold {g!r} is not one of the K = {k} choices {choices[:10]}")
        try:
            i = int(g)
        except (TypeError, ValueError):
            raise TaskError(f"{where}: gold {g!r} is not a choice index or a choice") from None
        if not 0 <= i < k:
            raise TaskError(f"{where}: gold {i} is out of range for K = {k} choices (valid: 0..{k - 1})")
        gl.append(i)
    return choices, gl


def _check_exemplars(spec: TaskSpec, task: Any, multi_in: bool) -> None:
    """For a few-shot task, check the gold label of every doc the exemplars can be drawn from.

    lm-eval formats an exemplar as its context plus ``choices[gold]`` and fails with a bare ``IndexError`` when the
    gold is out of range; this names the task and the doc instead.
    """
    if int(task.get_config("num_fewshot") or 0) <= 0:
        return
    docs = task.fewshot_docs()
    for i, doc in enumerate(docs if docs is not None else []):
        _gold_indices(task, doc, f"task {spec.name!r}, few-shot exemplar doc {i}", multi_in)


def build_items(spec: TaskSpec) -> BuiltTask:
    """Build the items of a leaf task with lm-eval's own request construction.

    Items whose gold label is not a valid choice (an index outside ``0..K-1``, or a label that is not one of the
    choices) are excluded, listed in ``excluded['bad_gold']`` (their doc_ids) and logged with the gold and K.

    Raises
    ------
    TaskError
        A few-shot exemplar's gold label is not a valid choice (names the task, the doc, the gold and K), or
        lm-eval cannot build the requests (names the task).
    """
    task = load_task_object(spec)
    n = _limit(task, spec.limit)
    multi_in = bool(task.multiple_input)
    _check_exemplars(spec, task, multi_in)
    try:
        task.build_all_requests(limit=n, rank=0, world_size=1)
    except (ValueError, IndexError, KeyError) as e:
        raise TaskError(f"task {spec.name!r}: lm-eval could not build the requests: {type(e).__name__}: {e}") from e
    by_doc: dict[Any, list[Any]] = {}
    for inst in task.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    items, bad, why = [], [], []
    for doc_id, insts in by_doc.items():
        insts = sorted(insts, key=lambda i: i.idx)
        try:
            choices, gl = _gold_indices(task, insts[0].doc, f"doc_id {doc_id}", multi_in)
        except TaskError as e:
            bad.append(doc_id)
            why.append(str(e))
            continue
        args = [tuple(i.arguments[:2]) for i in insts][:len(choices)]  # acc_mutual_info adds k unconditional
        items.append(TaskItem(doc_id=doc_id, requests=[(str(a), str(b)) for a, b in args], choices=choices,
                              gold=gl, multiple_input=multi_in))
    if bad:
        log.warning("task %s: %d item(s) excluded because the gold label is not a valid choice: %s",
                    spec.name, len(bad), "; ".join(why[:10]))
    return BuiltTask(spec=spec, items=items, excluded={"bad_gold": bad} if bad else {},
                     num_fewshot=int(task.get_config("num_fewshot") or 0),
                     target_delimiter=str(task.get_config("target_delimiter")))


def items_from_records(records: Iterable[dict[str, Any]] | Any, *, task: str = "items",
                       target_delimiter: str = " ") -> list[TaskItem]:
    """Items from simple records ``{"doc_id", "context", "choices": [...], "gold": int}`` (no lm-eval).

    The continuation of choice ``c`` is ``target_delimiter + c`` and trailing whitespace stays in the context;
    the scorer applies lm-eval's boundary rule. ``records`` may be a list of dicts or a DataFrame.

    Raises
    ------
    TaskError
        Naming the task, the record and its doc_id (missing field, gold out of range with K, empty choices).
    """
    if hasattr(records, "to_dict") and hasattr(records, "columns"):
        records = records.to_dict("records")
    out = []
    for i, r in enumerate(records):
        where = f"task {task!r}, record {i}"
        if not isinstance(r, dict):
            raise TaskError(f"{where}: expected an object with context, choices and gold, got {type(r).__name__}")
        if r.get("doc_id") is not None:
            where += f" (doc_id {r['doc_id']!r})"
        for key in ("context", "choices", "gold"):
            if key not in r:
                raise TaskError(f"{where}: missing field {key!r}")
        if isinstance(r["choices"], str) or not isinstance(r["choices"], Iterable):
            raise TaskError(f"{where}: 'choices' must be a list, got {type(r['choices']).__name__}")
        choices = list(r["choices"])
        if not choices:
            raise TaskError(f"{where}: no choices")
        k = len(choices)
        golds = r["gold"] if isinstance(r["gold"], (list, tuple)) else [r["gold"]]
        if not golds:
            raise TaskError(f"{where}: no gold index")
        try:
            gl = [int(g) for g in golds]
        except (TypeError, ValueError):
            raise TaskError(f"{where}: gold {r['gold']!r} is not an integer index") from None
        if any(g < 0 or g >= k for g in gl):
            raise TaskError(f"{where}: gold {r['gold']!r} is out of range for K = {k} choices (valid: 0..{k - 1})")
        ctx = str(r["context"])
        doc_id = r.get("doc_id", i)
        out.append(TaskItem(doc_id=doc_id if doc_id is not None else i,
                            requests=[(ctx, f"{target_delimiter}{c}") for c in choices],
                            choices=[str(c) for c in choices], gold=gl))
    return out
