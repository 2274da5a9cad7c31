"""The ``eval`` stage: checkpoints x multiple-choice tasks -> per-choice log-likelihoods in the store.

Modules, each importing only earlier ones (and ``capscale.data``):

* :mod:`~capscale.eval.scoring` -- the scoring engine: :func:`score_requests` (per-choice log-likelihoods in
  nats with a shared prefix per context, lm-eval's tokenisation) and :func:`load_model`;
* :mod:`~capscale.eval.shards` -- :class:`EvalOptions`, :class:`Shard`, :func:`plan_shards`, the items -> rows
  loop :func:`score_items`, :func:`run_shard` and the run log helpers;
* :mod:`~capscale.eval.local` -- the local executor (checkpoint by checkpoint in this process);
* :mod:`~capscale.eval.ray` -- the Ray executor (a generic runner :func:`run_ray` and the shard runner of
  ``capscale eval``); Ray is optional and imported only when used;
* :mod:`~capscale.eval.evaluate` -- the entry points: ``evaluate.evaluate()`` (``capscale eval``: plan, run
  with an executor, write the run log), :func:`evaluate_items` and :func:`evaluate_item_sets` (simple items,
  no lm-eval task index).

The names below are imported on first use, so ``import capscale.eval`` loads neither torch nor transformers.
The function ``evaluate`` is not among them: ``capscale.eval.evaluate`` is its module; use
``from capscale.eval.evaluate import evaluate``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule that defines it.
_HOMES: dict[str, str] = {
    **dict.fromkeys(["Request", "Score", "ScoringError", "CheckpointNotFoundError", "load_model", "score_requests",
                     "score_requests_lm_eval", "encode_requests", "resolve_max_length"], "scoring"),
    **dict.fromkeys(["RUN_LOG", "EvalError", "EvalOptions", "Shard", "ShardResult", "load_family", "plan_shards",
                     "score_items", "load_checkpoint", "run_shard"], "shards"),
    "local_executor": "local",
    **dict.fromkeys(["EXECUTORS", "evaluate_items", "evaluate_item_sets", "with_options"], "evaluate"),
    **dict.fromkeys(["ExecutorError", "ShardOutcome", "ExecutionReport", "RayShardResult", "run_ray",
                     "ray_executor", "require_ray"], "ray"),
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
