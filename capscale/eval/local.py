"""The local executor of ``capscale eval``: every shard in this process, checkpoint by checkpoint.

Each checkpoint with unfinished shards is loaded once and scores all its tasks (built once per run, before the
model is loaded, so task errors come first and cheaply); finished shards are reported as skipped without
loading anything. Shards run through :func:`capscale.eval.shards.run_shard`, as on the Ray executor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from capscale.eval.shards import (
    EvalError,
    EvalOptions,
    Shard,
    ShardResult,
    built_task,
    failed_result,
    load_checkpoint,
    run_shard,
)

__all__ = ["local_executor"]


def local_executor(shards: Sequence[Shard], options: EvalOptions, on_result: Callable[[ShardResult], None]) -> None:
    """Run ``shards`` here: loop over checkpoints, load each once (only if it has unfinished shards).

    Parameters
    ----------
    shards : list of Shard
        From :func:`capscale.eval.shards.plan_shards` (checkpoint-major).
    options : EvalOptions
    on_result : callable
        Called with every shard's :class:`ShardResult` as it is skipped, finishes or fails.

    Raises
    ------
    EvalError
        At the first failing shard (after reporting it to ``on_result`` as failed); finished shards stay.
    """
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
        built = {s.task: built_task(s.task) for s in todo}  # before loading the model: task errors come first
        try:
            model, tok = load_checkpoint(todo[0].checkpoint, options)
        except EvalError as e:
            on_result(failed_result(todo[0], options, e))
            raise
        for s in todo:
            try:
                r = run_shard(s, options, model=model, tokenizer=tok, built=built[s.task])
            except EvalError as e:
                on_result(failed_result(s, options, e))
                raise
            on_result(r)
            bar.update(1)
            bar.set_postfix_str(f"{s.key}: {r.items_per_s or 0:.1f} items/s, {r.tokens_per_s or 0:.0f} tok/s")
        del model, tok
    bar.close()
