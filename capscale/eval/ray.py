"""Run evaluation shards on Ray: one Ray task per (checkpoint, task) shard.

Two layers:

* :func:`run_ray`, a generic Ray runner: any picklable shards and a pure shard function
  ``run_fn(shard, options) -> DataFrame | path | ShardPayload``, one Ray task per shard, with skips, bounded
  retries and atomic writes, returning an :class:`ExecutionReport`;
* the evaluation-specific part: :class:`EvalShardRunner` (the shard function of ``capscale eval``:
  :func:`capscale.eval.shards.run_shard` on a worker) and :func:`ray_executor` (the ``"ray"`` executor of
  :func:`capscale.eval.evaluate.evaluate`). It needs only :mod:`capscale.eval.shards`, so the local and the
  Ray executor run the same code and write identical stores.

What the Ray executor does
--------------------------
* **Skips finished shards**: a shard whose file is already in the store (a readable Parquet file: the store
  writes atomically, so a file that exists is complete) is not submitted.
* **Resources**: every shard is one Ray task asking for ``cpus_per_shard`` CPUs and ``gpus_per_shard`` GPUs
  (default: 1 GPU when the cluster has GPUs, else none). A request no node can satisfy is an error before
  anything runs, instead of a run that waits for ever.
* **Bounded retries**: a shard whose task fails -- an exception in ``run_shard`` or the death of the worker
  process or node running it (Ray's ``WorkerCrashedError`` / ``NodeDiedError``) -- is resubmitted to Ray
  up to ``max_retries`` times. The driver resubmits (the Ray tasks themselves run with Ray's own
  ``max_retries=0``) so that it knows every attempt and its error; Ray does the scheduling, the failure
  detection and the placement of the new attempt. A shard that fails ``max_retries + 1`` times is reported
  with all its errors while the other shards complete.
* **Where results are written** (``write_from``):

  ``"driver"`` (default)
      the worker returns the shard's rows to the driver (through Ray's object store), which writes the
      file atomically as soon as the shard completes. Works on any cluster: the store need only be on the
      driver's file system.
  ``"worker"``
      the worker writes the file atomically itself (temporary file in the store folder, then rename), so
      the rows never travel to the driver. The store must be on a file system every node mounts at the
      same path (NFS, Lustre, a shared disk); on a single machine it always is.

  In both modes rows are validated on the worker before anything is written, so a bad shard fails (and is
  reported) the same way.
* **Progress**: a tqdm bar over shards on the driver (on a terminal, or when ``progress=True``).

``capscale eval --executor ray`` (:func:`ray_executor`, registered in :data:`capscale.eval.evaluate.EXECUTORS`) adds:
task items built once on the driver and shipped to the workers (nodes need no task data), a per-worker cache of
the last checkpoint, worker processes reused across shards, warm-up tasks that import torch, transformers and the
family's model classes on the workers while the driver builds the tasks, the driver's offline switches handed to
every task (no Ray runtime environment to set up per worker), torch threads per shard equal to the driver's on the
driver's machine (byte-identical stores to ``--executor local`` there) and to the shard's reserved CPUs on other
nodes, and ``attempts`` / ``attempt_errors`` / ``node`` in the run log.
Cluster set-up: the README section "Running on a cluster".

Ray is an optional dependency (``pip install 'capscale[ray]'``); it is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from capscale._io import atomic_write_bytes, write_json
from capscale.data import store
from capscale.data.family import Checkpoint
from capscale.data.tasks import BuiltTask, TaskSpec, build_items
from capscale.errors import CapscaleError
from capscale.eval.shards import (
    EvalError,
    EvalOptions,
    Shard,
    ShardResult,
    built_task,
    load_checkpoint,
    run_shard,
)

__all__ = [
    "RAY_MISSING",
    "ExecutorError",
    "ShardOutcome",
    "ExecutionReport",
    "WRITE_FROM",
    "require_ray",
    "ray_session",
    "shard_done",
    "resolve_gpus_per_shard",
    "run_ray",
    "ShardPayload",
    "EvalShardRunner",
    "RayShardResult",
    "ray_executor",
]

log = logging.getLogger(__name__)

#: Message of the ImportError raised when Ray is not installed.
RAY_MISSING = ("the Ray executor needs Ray, an optional dependency of capscale: pip install 'capscale[ray]' "
               "(or run with --executor local)")

#: Choices for ``write_from``: who writes a finished shard's file.
WRITE_FROM = ("driver", "worker")

#: Environment variables forwarded to Ray workers (offline switches, tokenizer threads, capscale settings).
_FORWARDED_ENV_PREFIXES = ("HF_", "TRANSFORMERS_", "TOKENIZERS_", "CAPSCALE_")


class ExecutorError(CapscaleError, ValueError):
    """The executor cannot run as asked (bad option, infeasible resource request, Ray not reachable)."""


def require_ray() -> Any:
    """Import and return the ``ray`` module, or raise ImportError with :data:`RAY_MISSING`."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(RAY_MISSING) from e
    return ray


# ----------------------------------------------------------------------------------------------- report


@dataclass
class ShardOutcome:
    """What happened to one shard.

    Attributes
    ----------
    key : str
        The shard's name, ``model_id / task``.
    status : str
        ``"done"`` (evaluated in this run), ``"skipped"`` (already in the store) or ``"failed"``.
    attempts : int
        Ray tasks submitted for this shard (0 when skipped; more than 1 when it was retried).
    errors : list of str
        One message per failed attempt, in order (``"WorkerCrashedError: ..."`` for a dead worker).
    path : str or None
        The shard's file in the store.
    n_rows : int or None
        Store rows written for this shard.
    seconds : float or None
        Wall time of the successful attempt on its worker (s).
    node : str or None
        Host name of the worker that ran the successful attempt.
    """

    key: str
    status: str
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    path: str | None = None
    n_rows: int | None = None
    seconds: float | None = None
    node: str | None = None

    @property
    def retried(self) -> bool:
        """Whether more than one attempt was needed (or made)."""
        return self.attempts > 1


@dataclass
class ExecutionReport:
    """Outcome of a run over shards: one :class:`ShardOutcome` per shard, in shard order.

    Attributes
    ----------
    outcomes : list of ShardOutcome
    executor : str
        ``"ray"``.
    write_from : str
        ``"driver"`` or ``"worker"``.
    max_retries : int
    wall_seconds : float
        Driver wall time of the run (s), Ray start-up excluded when the session was already running.
    address : str or None
        The Ray address connected to (``None``: a local instance started for this run).
    """

    outcomes: list[ShardOutcome]
    executor: str = "ray"
    write_from: str = "driver"
    max_retries: int = 0
    wall_seconds: float = 0.0
    address: str | None = None

    def _with(self, status: str) -> list[ShardOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> list[ShardOutcome]:
        return self._with("done")

    @property
    def skipped(self) -> list[ShardOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[ShardOutcome]:
        return self._with("failed")

    @property
    def retried(self) -> list[ShardOutcome]:
        """Shards that needed more than one attempt (finished or not)."""
        return [o for o in self.outcomes if o.retried]

    @property
    def ok(self) -> bool:
        """True when no shard failed."""
        return not self.failed

    def summary(self) -> str:
        """Human-readable report: counts, then every retried and every failed shard with its errors."""
        lines = [f"{self.executor} executor: {len(self.outcomes)} shard(s): {len(self.done)} evaluated, "
                 f"{len(self.skipped)} already in the store, {len(self.failed)} failed; "
                 f"{len(self.retried)} retried (max_retries={self.max_retries}); {self.wall_seconds:.1f} s"]
        for o in self.retried:
            if o.status == "failed":
                continue
            lines.append(f"  retried {o.key}: {o.status} after {o.attempts} attempts")
            lines += [f"      attempt {i + 1}: {e}" for i, e in enumerate(o.errors)]
        for o in self.failed:
            lines.append(f"  FAILED {o.key} after {o.attempts} attempt(s)")
            lines += [f"      attempt {i + 1}: {e}" for i, e in enumerate(o.errors)]
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """One row per shard (errors joined with `` | ``)."""
        rows = [{**asdict(o), "errors": " | ".join(o.errors)} for o in self.outcomes]
        return pd.DataFrame(rows, columns=[f for f in ShardOutcome.__dataclass_fields__])

    def to_dict(self) -> dict[str, Any]:
        return {"executor": self.executor, "write_from": self.write_from, "max_retries": self.max_retries,
                "wall_seconds": self.wall_seconds, "address": self.address,
                "outcomes": [asdict(o) for o in self.outcomes]}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON atomically; returns the path."""
        return write_json(path, self.to_dict(), indent=2)


# ----------------------------------------------------------------------------------------------- shards


def shard_done(path: str | os.PathLike) -> bool:
    """Whether a shard file is complete: it exists and its Parquet footer can be read.

    Files are written atomically (temporary name, then rename), so a file under the final name is complete
    unless something else truncated it; an unreadable one is evaluated again.
    """
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return False
    if p.suffix != ".parquet":
        return True
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(p)
    except Exception:
        return False
    return True


def _default_key(shard: Any) -> str:
    mid = getattr(shard, "model_id", None) or getattr(getattr(shard, "checkpoint", None), "model_id", None)
    task = getattr(shard, "task", None)
    task = getattr(task, "name", task)
    if mid is not None and task is not None:
        return f"{mid} / {task}"
    return str(shard)


def _default_path(shard: Any, out: Path) -> Path:
    for attr in ("path", "out_path", "dest"):
        p = getattr(shard, attr, None)
        if isinstance(p, (str, os.PathLike)) and str(p).endswith((".parquet", ".csv")):
            return Path(p)
    key = _default_key(shard)
    if " / " not in key:
        raise ExecutorError(f"cannot tell where shard {shard!r} is stored: give shard_path=")
    mid, task = key.split(" / ", 1)
    return out / store.shard_name(mid, task)


def _default_write(df: pd.DataFrame, path: Path) -> None:
    store.write(df, path)


def _default_check(df: pd.DataFrame, path: Path) -> None:
    store.check(df, source=str(path))


@dataclass
class ShardPayload:
    """A finished shard's file content, produced on a worker, plus anything to hand back to the driver.

    ``run_fn`` may return this instead of a DataFrame or a path (e.g. after writing into a worker-local temporary
    folder). ``meta`` travels back to the driver unchanged.
    """

    data: bytes
    meta: Any = None


def _execute(run_fn: Callable[[Any, Any], Any], shard: Any, options: Any, dest: str, write_from: str,
             write_fn: Callable[[pd.DataFrame, Path], None], check_fn: Callable[[pd.DataFrame, Path], None],
             ) -> dict[str, Any]:
    """Body of one Ray task: run the shard, validate, then write (worker mode) or return the rows."""
    t0 = time.perf_counter()
    result = run_fn(shard, options)
    dest_p = Path(dest)
    out: dict[str, Any] = {"node": socket.gethostname(), "pid": os.getpid()}
    if isinstance(result, ShardPayload):
        out["meta"] = result.meta
        out["n_rows"] = getattr(result.meta, "n_rows", None)
        if write_from == "driver":
            out["bytes"] = result.data
        else:
            atomic_write_bytes(dest_p, result.data)
        out["seconds"] = time.perf_counter() - t0
        return out
    if hasattr(result, "path") and not isinstance(result, (str, os.PathLike, pd.DataFrame)):
        # a result record (e.g. capscale.eval.shards.ShardResult) of a function that wrote the shard itself
        out["meta"] = result
        result = result.path
    if isinstance(result, pd.DataFrame):
        check_fn(result, dest_p)
        out["n_rows"] = len(result)
        if write_from == "worker":
            write_fn(result, dest_p)
        else:
            out["frame"] = result
    elif isinstance(result, (str, os.PathLike)):
        # run_fn wrote the shard itself (atomically, as the store does); ship the bytes in driver mode.
        src = Path(result)
        if not src.is_file():
            raise FileNotFoundError(f"run_shard returned {str(src)!r}, which does not exist on node "
                                    f"{out['node']}")
        out["n_rows"] = _count_rows(src)
        if write_from == "driver":
            out["bytes"] = src.read_bytes()
        elif src.resolve() != dest_p.resolve():
            atomic_write_bytes(dest_p, src.read_bytes())
    else:
        raise TypeError(f"the shard function must return a DataFrame, a path, a ShardPayload or a record with a "
                        f".path, got {type(result).__name__}")
    out["seconds"] = time.perf_counter() - t0
    return out


def _count_rows(path: Path) -> int | None:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    return None


def _describe(err: BaseException) -> str:
    """One line naming a failed attempt's error (the application exception for a RayTaskError)."""
    ray = require_ray()
    cause = err
    if isinstance(err, ray.exceptions.RayTaskError):
        inner = getattr(err, "cause", None)
        if inner is not None and not isinstance(inner, ray.exceptions.RayTaskError):
            cause = inner
    msg = str(cause).strip().splitlines()
    if isinstance(cause, ray.exceptions.RayError) and not isinstance(cause, ray.exceptions.RayTaskError):
        # Ray's system errors are long; their first line says what happened (worker died, node died...).
        msg = msg[:1]
    text = " ".join(m.strip() for m in msg[:3] if m.strip())
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


# ----------------------------------------------------------------------------------------------- session


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}


def _apply_env(env: dict[str, str] | None) -> None:
    """Set the driver's forwarded variables in this (worker) process; call before anything imports transformers."""
    for k, v in (env or {}).items():
        if os.environ.get(k) != v:
            os.environ[k] = v


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None,
                init_kwargs: dict[str, Any] | None = None, forward_env: bool = True) -> Iterator[Any]:
    """Use the running Ray session, or start/connect one for the duration of the block.

    Parameters
    ----------
    address : str, optional
        ``None``: start a local Ray instance on this machine (``num_cpus`` CPUs). ``"auto"``: connect to the
        cluster started with ``ray start`` on this node. ``"HOST:PORT"``: connect to that head node's GCS
        (``ray://HOST:10001`` for Ray Client).
    num_cpus : int, optional
        CPUs of a local instance (ignored when connecting to a cluster).
    init_kwargs : dict, optional
        Extra keyword arguments for ``ray.init``.
    forward_env : bool, default True
        Give the workers the driver's ``HF_*``, ``TRANSFORMERS_*``, ``TOKENIZERS_*`` and ``CAPSCALE_*`` variables
        through a Ray ``runtime_env`` (on a cluster, workers otherwise see the environment of ``ray start``).
        A runtime environment costs every new worker process about 0.8 s of set-up, so callers that pass the
        variables to their tasks themselves (as ``capscale eval`` does) turn it off; a local instance started
        here inherits the driver's environment and never needs it.

    Yields
    ------
    module
        ``ray``. A session started here is shut down on exit; a session that was already running is left
        running.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    env = _forwarded_env()
    if env and forward_env and address is not None:
        kwargs["runtime_env"] = {"env_vars": env}
    if address is None:
        kwargs["num_cpus"] = num_cpus
    kwargs.update(init_kwargs or {})
    try:
        # address="local": always a new instance here, never an existing `ray start` cluster that Ray would
        # otherwise pick up (use --address auto for that one).
        ray.init(address="local" if address is None else address, **kwargs)
    except ConnectionError as e:
        hint = ("; if the cluster uses Ray's token authentication, set RAY_AUTH_MODE=token with its token in "
                "~/.ray/auth_token" if not os.environ.get("RAY_AUTH_MODE") else "")
        raise ExecutorError(f"cannot connect to the Ray cluster at {address!r}: {e}. Start it with "
                            "`ray start --head` (see the README, 'Running on a cluster') or leave --address out to start a local "
                            f"Ray instance{hint}") from e
    try:
        yield ray
    finally:
        ray.shutdown()


def resolve_gpus_per_shard(ray: Any, gpus_per_shard: float | None) -> float:
    """GPUs each shard asks for: ``None`` means 1 when the cluster has GPUs, else 0.

    Raises
    ------
    ExecutorError
        When the request is negative or larger than the GPUs of every node (no shard could ever run).
    """
    nodes = [n for n in ray.nodes() if n.get("Alive", True)]
    per_node = [float(n.get("Resources", {}).get("GPU", 0.0)) for n in nodes]
    most = max(per_node, default=0.0)
    if gpus_per_shard is None:
        return 1.0 if most >= 1 else 0.0
    g = float(gpus_per_shard)
    if g < 0:
        raise ExecutorError(f"--gpus-per-shard must be >= 0, got {gpus_per_shard}")
    if g > most:
        raise ExecutorError(f"--gpus-per-shard {gpus_per_shard} cannot be met: the Ray cluster's nodes have at "
                            f"most {most:g} GPU(s) ({len(nodes)} node(s)); use --gpus-per-shard 0 for CPU or "
                            "add GPU nodes")
    return g


# ----------------------------------------------------------------------------------------------- run


def run_ray(
    shards: Sequence[Any],
    run_fn: Callable[[Any, Any], Any],
    options: Any,
    out: str | os.PathLike,
    *,
    shard_path: Callable[[Any], str | os.PathLike] | None = None,
    shard_key: Callable[[Any], str] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    gpus_per_shard: float | None = None,
    cpus_per_shard: float = 1.0,
    max_retries: int = 2,
    write_from: str = "driver",
    skip_done: bool = True,
    write_fn: Callable[[pd.DataFrame, Path], None] | None = None,
    check_fn: Callable[[pd.DataFrame, Path], None] | None = None,
    done_fn: Callable[[Path], bool] = shard_done,
    on_outcome: Callable[[int, ShardOutcome, Any], None] | None = None,
    progress: bool | None = None,
    init_kwargs: dict[str, Any] | None = None,
) -> ExecutionReport:
    """Run ``run_fn(shard, options)`` for every shard as one Ray task each and write results to the store.

    Parameters
    ----------
    shards : sequence
        The shards (picklable), e.g. from the orchestrator's ``plan_shards``.
    run_fn : callable
        ``run_fn(shard, options) -> DataFrame | path``: a pure function of its inputs, importable on the
        workers (capscale must be installed on every node).
    options : any
        Passed unchanged to ``run_fn`` (picklable).
    out : path-like
        The store directory.
    shard_path : callable, optional
        Shard -> its file in the store (default: the shard's ``path`` attribute, else
        ``out / store.shard_name(model_id, task)``).
    shard_key : callable, optional
        Shard -> name used in the report (default ``"model_id / task"``).
    address : str, optional
        Ray address (see :func:`ray_session`); ``None`` starts a local instance.
    num_cpus : int, optional
        CPUs of a local instance (default: all of this machine's).
    gpus_per_shard : float, optional
        GPUs per shard; default 1 when the cluster has GPUs, else 0. Fractions pack shards on a GPU.
    cpus_per_shard : float, default 1
        CPUs per shard.
    max_retries : int, default 2
        Resubmissions of a failed shard (so at most ``max_retries + 1`` attempts).
    write_from : {"driver", "worker"}, default "driver"
        Who writes a finished shard (see the module docstring): ``"worker"`` needs the store on a file system
        shared by all nodes.
    skip_done : bool, default True
        Skip shards whose file is already complete in the store (``done_fn``, default :func:`shard_done`).
    write_fn, check_fn : callable, optional
        ``(df, path) -> None``: write a shard atomically / validate its rows (default: :func:`store.write`
        and :func:`store.check`). Use the local executor's functions so both write identical files.
    done_fn : callable, default :func:`shard_done`
        ``path -> bool``: whether a shard's file counts as finished.
    on_outcome : callable, optional
        ``on_outcome(index, outcome, meta)``, called on the driver as each shard is skipped (``meta`` None),
        finishes (``meta``: what ``run_fn`` handed back, if anything) or finally fails.
    progress : bool, optional
        Show a progress bar over shards (default: when stderr is a terminal).
    init_kwargs : dict, optional
        Extra ``ray.init`` arguments when a session is started.

    Returns
    -------
    ExecutionReport
        Every shard's outcome; ``report.failed`` lists shards that failed ``max_retries + 1`` times.
    """
    if write_from not in WRITE_FROM:
        raise ExecutorError(f"write_from must be one of {WRITE_FROM}, got {write_from!r}")
    if max_retries < 0:
        raise ExecutorError(f"max_retries must be >= 0, got {max_retries}")
    if cpus_per_shard < 0:
        raise ExecutorError(f"cpus_per_shard must be >= 0, got {cpus_per_shard}")
    out_p = Path(out)
    key_of = shard_key or _default_key
    dests = [Path(shard_path(s)) if shard_path else _default_path(s, out_p) for s in shards]
    keys = [key_of(s) for s in shards]
    dup = sorted({str(d) for d in dests if dests.count(d) > 1})
    if dup:
        raise ExecutorError(f"several shards would write the same file(s): {dup[:5]}")
    write_fn = write_fn or _default_write
    check_fn = check_fn or _default_check
    outcomes = [ShardOutcome(key=k, status="pending", path=str(d)) for k, d in zip(keys, dests)]
    todo = []
    for i, d in enumerate(dests):
        if skip_done and done_fn(d):
            outcomes[i].status = "skipped"
        else:
            todo.append(i)
    notify = on_outcome or (lambda i, o, meta: None)
    for i, o in enumerate(outcomes):
        if o.status == "skipped":
            notify(i, o, None)
    t0 = time.perf_counter()
    report = ExecutionReport(outcomes=outcomes, write_from=write_from, max_retries=max_retries,
                             address=address)
    if not todo:
        report.wall_seconds = time.perf_counter() - t0
        return report
    out_p.mkdir(parents=True, exist_ok=True)
    with ray_session(address, num_cpus=num_cpus, init_kwargs=init_kwargs) as ray:
        gpus = resolve_gpus_per_shard(ray, gpus_per_shard)
        # max_calls=0: worker processes are reused across shards (Ray otherwise starts a fresh process for every
        # GPU task, and each shard would import torch and load its checkpoint again).
        remote = ray.remote(max_calls=0)(_execute)
        # Large or shared arguments go to the object store once, not once per shard.
        fn_ref, opt_ref, write_ref, check_ref = (ray.put(x) for x in (run_fn, options, write_fn, check_fn))

        def submit(i: int) -> Any:
            outcomes[i].attempts += 1
            return remote.options(num_cpus=cpus_per_shard, num_gpus=gpus, max_retries=0,
                                  name=f"capscale-shard {keys[i]}").remote(
                fn_ref, shards[i], opt_ref, str(dests[i]), write_from, write_ref, check_ref)

        pending = {submit(i): i for i in todo}
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=len(todo), desc="shards (ray)", unit="shard", disable=not show)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    o = outcomes[i]
                    try:
                        res = ray.get(ref)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as e:  # a failed attempt: the task's exception or a dead worker/node
                        o.errors.append(_describe(e))
                        if o.attempts <= max_retries:
                            pending[submit(i)] = i
                            bar.set_postfix_str(f"retrying {o.key}", refresh=False)
                        else:
                            o.status = "failed"
                            bar.update(1)
                            notify(i, o, None)
                        continue
                    try:
                        if "frame" in res:
                            write_fn(res["frame"], dests[i])
                        elif "bytes" in res:
                            atomic_write_bytes(dests[i], res["bytes"])
                    except Exception as e:  # the driver could not write: report it, do not retry the shard
                        o.errors.append(f"writing {dests[i]} on the driver: {type(e).__name__}: {e}")
                        o.status = "failed"
                        bar.update(1)
                        notify(i, o, res.get("meta"))
                        continue
                    o.status, o.n_rows, o.seconds, o.node = "done", res.get("n_rows"), res.get("seconds"), \
                        res.get("node")
                    bar.update(1)
                    notify(i, o, res.get("meta"))
        except BaseException:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
    report.wall_seconds = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------------------------- capscale eval

#: Per worker process: the last checkpoint loaded and the tasks built (a cache; results do not depend on it).
_WORKER_CACHE: dict[str, Any] = {"model_key": None, "model": None, "tasks": {}}
_MAX_CACHED_TASKS = 64


def _cached_task(spec: TaskSpec) -> BuiltTask:
    tasks = _WORKER_CACHE["tasks"]
    key = (spec, spec.source, repr(spec.config))
    if key not in tasks:
        if len(tasks) >= _MAX_CACHED_TASKS:
            tasks.pop(next(iter(tasks)))
        tasks[key] = build_items(spec)
    return tasks[key]


def _cached_model(ck: Checkpoint, options: EvalOptions) -> tuple[Any, Any]:
    key = (ck.model_id, ck.path, ck.revision, ck.gguf_file, ck.tokenizer, options.dtype_for(ck), options.device)
    if _WORKER_CACHE["model_key"] != key:
        _WORKER_CACHE["model_key"], _WORKER_CACHE["model"] = None, None  # free the previous one first
        _WORKER_CACHE["model"] = load_checkpoint(ck, options)
        _WORKER_CACHE["model_key"] = key
    return _WORKER_CACHE["model"]


#: Variables that change torch's default intra-op thread count (and how OpenMP/MKL cap it).
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: :func:`local_thread_count`'s answer when torch would use its default: one thread per physical core.
TORCH_DEFAULT = "torch-default"


def local_thread_count() -> int | str:
    """The torch intra-op thread count of the local executor in this process, importing torch only if needed.

    Returns ``torch.get_num_threads()`` when torch is already imported (it may have been set) or when
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` is set (their effect depends on the BLAS build, so torch is asked);
    otherwise :data:`TORCH_DEFAULT` without importing torch (a CLI driver then never loads it), which a worker on
    the same host turns into the count with :func:`default_threads_for`.
    """
    if "torch" not in sys.modules and not any(k in os.environ for k in _THREAD_ENV):
        return TORCH_DEFAULT
    import torch

    return int(torch.get_num_threads())


def default_threads_for(spec: int | str | None) -> int | None:
    """Turn :func:`local_thread_count`'s answer into a thread count on this host (an int passes through).

    :data:`TORCH_DEFAULT` is one thread per physical core, which torch also reports as its default inter-op
    count (``get_num_interop_threads``); unlike the intra-op count that one ignores ``OMP_NUM_THREADS``, which Ray
    sets to the task's CPUs in its workers.
    """
    if spec != TORCH_DEFAULT:
        return spec  # type: ignore[return-value]
    import torch

    return int(torch.get_num_interop_threads())


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _quiet_worker(threads: int | None) -> None:
    """Per worker process: torch threads, and no per-shard progress bars (the driver shows one over shards)."""
    _set_threads(threads)
    if not _WORKER_CACHE.get("quiet"):
        import transformers

        transformers.utils.logging.disable_progress_bar()
        _WORKER_CACHE["quiet"] = True


def _warm_up(threads: int | None, env: dict[str, str] | None = None,
             configs: Sequence[dict[str, Any]] = ()) -> int:
    """Import what a shard needs in a Ray worker; returns its pid.

    Imports torch and transformers (the scoring engine comes with this module), and the model class of every
    config in ``configs``
    (``{"path", "revision", "trust_remote_code"}``; importing a transformers model class for the first time
    takes 1-2 s of CPU). Failures here are ignored: the shard that needs the class imports it (and reports any
    error) itself.
    """
    _apply_env(env)
    _quiet_worker(threads)
    for cfg in configs:
        try:
            from transformers import AutoConfig
            from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

            config = AutoConfig.from_pretrained(cfg["path"], revision=cfg.get("revision"),
                                                trust_remote_code=bool(cfg.get("trust_remote_code")))
            if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
                MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        except Exception as e:  # only a head start: the shard itself loads (and reports) it
            log.debug("warm-up: cannot import the model class of %s: %s", cfg.get("path"), e)
    return os.getpid()


def _warm_up_configs(checkpoints: Sequence[Any], trust_remote_code: bool, limit: int = 8) -> list[dict[str, Any]]:
    """One checkpoint per model architecture, for :func:`_warm_up` (read from local ``config.json`` files).

    Checkpoints without a local ``config.json`` (hub ids, GGUF files) count as one unknown architecture: the
    first of them is included.
    """
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for ck in checkpoints:
        if ck.gguf_file:
            continue
        cfg = Path(str(ck.path)) / "config.json"
        try:
            arch = str(json.loads(cfg.read_text(encoding="utf-8")).get("model_type")) if cfg.is_file() else "?"
        except (OSError, ValueError):
            arch = "?"
        if arch in seen:
            continue
        seen.add(arch)
        out.append({"path": str(ck.path), "revision": ck.revision, "trust_remote_code": trust_remote_code})
        if len(out) >= limit:
            break
    return out


@dataclass(frozen=True)
class EvalShardRunner:
    """The shard function of ``capscale eval`` on a Ray worker: :func:`capscale.eval.shards.run_shard`.

    ``built`` holds the tasks' items, built once on the driver (as the local executor does), so workers need
    neither lm-eval's task index nor the task data: only the checkpoints. With ``write_from="driver"`` the
    shard is written into a worker-local temporary folder and its bytes are handed back (nothing is left on the
    worker); with ``"worker"`` ``run_shard`` writes it into the store (a shared file system). A worker process
    keeps its last checkpoint and the tasks it built, so consecutive shards of one checkpoint load it once (as
    the local executor does). ``env`` holds the driver's forwarded variables (``HF_HUB_OFFLINE`` ...), set in the
    worker before transformers is imported.

    torch's intra-op threads in a shard: ``threads`` when given; else ``driver_threads`` (the local executor's
    count: :func:`local_thread_count`) on the driver's host ``driver_host``, where the same float32 sums in the same order make the store
    byte-identical to a local run, and ``reserved_threads`` (the CPUs Ray reserved for the shard) on every other
    node, so shards sharing a node do not oversubscribe it (another CPU model could not promise identical bits
    anyway).
    """

    write_from: str = "driver"
    built: dict[TaskSpec, BuiltTask] = field(default_factory=dict)
    threads: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    driver_host: str | None = None
    driver_threads: int | str | None = None
    reserved_threads: int = 1

    def threads_here(self) -> int:
        """torch threads for a shard on this host (see the class docstring)."""
        if self.threads:
            return self.threads
        if self.driver_threads is not None and self.driver_host == socket.gethostname():
            return default_threads_for(self.driver_threads) or self.reserved_threads
        return self.reserved_threads

    def __call__(self, shard: Shard, options: EvalOptions) -> ShardResult | ShardPayload:
        _apply_env(self.env)  # before transformers is imported in this worker
        _quiet_worker(self.threads_here())
        options = dataclasses.replace(options, progress=False)
        built = self.built.get(shard.task) or _cached_task(shard.task)
        model, tok = _cached_model(shard.checkpoint, options)
        if self.write_from == "worker":
            return run_shard(shard, options, model=model, tokenizer=tok, built=built)
        with tempfile.TemporaryDirectory(prefix="capscale-shard-") as tmp:
            res = run_shard(dataclasses.replace(shard, out_dir=tmp), options, model=model, tokenizer=tok,
                            built=built)
            data = Path(res.path).read_bytes()
        res.path = str(shard.path)
        return ShardPayload(data=data, meta=res)


@dataclass
class RayShardResult(ShardResult):
    """A :class:`capscale.eval.shards.ShardResult` with the Ray executor's attempts, their errors and the node.

    Attributes
    ----------
    executor : str
        ``"ray"``.
    attempts : int
        Ray tasks submitted for the shard (0: skipped; > 1: retried).
    attempt_errors : list of str
        The error of every failed attempt, in order.
    node : str or None
        Host that ran the successful attempt.
    """

    executor: str = "ray"
    attempts: int = 0
    attempt_errors: list[str] = field(default_factory=list)
    node: str | None = None


def ray_executor(shards: Sequence[Shard], options: EvalOptions, on_result: Callable[[RayShardResult], None], *,
                 address: str | None = None, gpus_per_shard: float | None = None, cpus_per_shard: float = 1.0,
                 write_from: str = "driver", max_retries: int = 2, num_cpus: int | None = None,
                 threads_per_shard: int | None = None, warm_up: bool = True, progress: bool | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> ExecutionReport:
    """The ``"ray"`` executor of :func:`capscale.eval.evaluate.evaluate`: every shard one Ray task.

    Same signature as the local executor (``shards, options, on_result``) plus the Ray settings of
    :func:`run_ray`. ``gpus_per_shard`` defaults to 1 with ``device="cuda"`` and 0 on CPU. ``on_result``
    receives a ``ShardResult`` (with ``attempts``, ``attempt_errors`` and ``node`` added) for every shard as it
    is skipped, finishes or finally fails, so the run log is written as the run goes.

    The Ray session is started (or joined) first; with ``warm_up`` one task per shard slot imports torch,
    transformers and the model class of every architecture in the family on the workers while the driver builds
    the tasks' items. ``threads_per_shard`` is torch's intra-op threads in a shard. By default it is what the local
    executor would use (:func:`local_thread_count`; the driver does not import torch for it) for shards on the
    driver's machine, so both
    executors write byte-identical stores there (float32 sums depend on the thread count), and
    ``max(1, int(cpus_per_shard))`` (what Ray reserved) on other nodes, so shards sharing a node do not
    oversubscribe its cores (log-likelihoods can then differ from a local run at float32 rounding, about 1e-7
    relative, as they do between two CPU models anyway).

    Returns
    -------
    ExecutionReport

    Raises
    ------
    capscale.eval.shards.EvalError
        After all other shards completed, when some shard failed ``max_retries + 1`` times; the message is
        the report (every failed and retried shard with its errors).
    """
    device = str(options.device)
    if device.startswith("cuda:"):  # Ray assigns the GPU; inside the task it is always "cuda"
        log.warning("--device %s: the Ray executor assigns GPUs itself; using 'cuda' on the GPU Ray gives each "
                    "shard", device)
        options = dataclasses.replace(options, device="cuda")
        device = "cuda"
    if gpus_per_shard is None:
        gpus_per_shard = 1.0 if device == "cuda" else 0.0
    if device == "cuda" and gpus_per_shard <= 0:
        raise ExecutorError("--device cuda with --gpus-per-shard 0: Ray hides the GPUs from tasks that do not "
                            "request one; use --gpus-per-shard 1 (or a fraction to share a GPU)")
    if device == "cpu" and gpus_per_shard > 0:
        log.warning("--gpus-per-shard %g with --device cpu: shards reserve GPUs they do not use", gpus_per_shard)

    def to_result(i: int, o: ShardOutcome, meta: Any) -> None:
        s = shards[i]
        ck, t = s.checkpoint, s.task
        extra = {"attempts": o.attempts, "attempt_errors": list(o.errors), "node": o.node}
        if o.status == "skipped":
            base = run_shard(s, options)  # returns "skipped" at once: the shard is done
        elif o.status == "done" and meta is not None:
            base = meta
        else:
            base = ShardResult(ck.model_id, t.name, o.status, o.path if o.status == "done" else None,
                                  n_rows=o.n_rows or 0, task_source=t.source, dtype=options.dtype_for(ck),
                                  error=" | ".join(o.errors) or None)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(ShardResult)}
        if o.status == "done":
            fields["path"] = str(s.path)
        on_result(RayShardResult(**fields, **extra))

    if threads_per_shard is not None and threads_per_shard < 1:
        raise ExecutorError(f"threads_per_shard must be >= 1, got {threads_per_shard}")
    env = _forwarded_env()
    todo = [s for s in shards if not s.done()]
    redo = {s.path for s in shards if s.redo}  # --overwrite: re-evaluated although the file exists
    warm_refs: list[Any] = []  # held until the run ends; nothing waits on them
    with contextlib.ExitStack() as stack:
        if todo:
            ray = stack.enter_context(ray_session(address, num_cpus=num_cpus, init_kwargs=init_kwargs,
                                                  forward_env=False))
            gpus = resolve_gpus_per_shard(ray, gpus_per_shard)
            if warm_up:
                res = ray.cluster_resources()
                slots = int(res.get("CPU", 1) // cpus_per_shard) if cpus_per_shard > 0 else len(todo)
                if gpus > 0:
                    slots = min(slots, int(res.get("GPU", 0) // gpus))
                warm = ray.remote(max_calls=0)(_warm_up).options(num_cpus=cpus_per_shard, num_gpus=gpus,
                                                                 name="capscale-warm-up")
                configs = _warm_up_configs([s.checkpoint for s in todo], options.trust_remote_code)
                warm_refs += [warm.remote(threads_per_shard, env, configs)
                              for _ in range(max(1, min(slots, len(todo))))]
        driver_threads = local_thread_count() if threads_per_shard is None else None  # the driver needs no torch
        runner = EvalShardRunner(write_from, threads=threads_per_shard, env=env, driver_host=socket.gethostname(),
                                 driver_threads=driver_threads, reserved_threads=max(1, int(cpus_per_shard)))
        # Build every unfinished task's items here, once (task errors surface before any shard starts).
        need = list(dict.fromkeys(s.task for s in todo))
        built = {t: built_task(t) for t in tqdm(need, desc="building tasks", unit="task",
                                                 disable=not (options.progress and sys.stderr.isatty()))}
        report = run_ray(shards, dataclasses.replace(runner, built=built), options,
                         shards[0].out_dir if shards else ".", shard_path=lambda s: s.path,
                         shard_key=lambda s: s.key, address=address, num_cpus=num_cpus,
                         gpus_per_shard=gpus_per_shard, cpus_per_shard=cpus_per_shard, max_retries=max_retries,
                         write_from=write_from, done_fn=lambda p: Path(p).is_file() and Path(p) not in redo,
                         on_outcome=to_result,
                         progress=options.progress if progress is None else progress, init_kwargs=init_kwargs)
    if report.failed:
        raise EvalError(report.summary())
    if report.retried:
        log.warning("%s", report.summary())
    else:
        log.info("%s", report.summary())
    return report
