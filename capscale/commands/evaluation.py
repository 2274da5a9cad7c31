"""Evaluation commands: ``eval``, ``family scan`` and ``ingest lm-eval``."""

from __future__ import annotations

import argparse
import sys


def _batch_size(v: str) -> int | str:
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer or 'auto', got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"batch size must be positive, got {n}")
    return n


def _limit(v: str) -> int | float:
    f = float(v)
    if f <= 0:
        raise argparse.ArgumentTypeError(f"--limit must be positive, got {v!r}")
    return f if f < 1 else int(f)


def _executor_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of the chosen executor (``--executor ray``); a ``UsageError`` for a bad combination."""
    from capscale.errors import UsageError

    if args.executor != "ray":
        ray_only = [f for f, v in (("--address", args.address), ("--gpus-per-shard", args.gpus_per_shard),
                                   ("--threads-per-shard", args.threads_per_shard)) if v is not None]
        if ray_only:
            raise UsageError(f"{', '.join(ray_only)} only apply to --executor ray")
        return {}
    from capscale.eval.ray import require_ray

    try:
        require_ray()
    except ImportError as e:
        raise UsageError(str(e)) from None
    return {"address": args.address, "gpus_per_shard": args.gpus_per_shard, "write_from": args.write_from,
            "max_retries": args.max_retries, "threads_per_shard": args.threads_per_shard}


def _eval(args: argparse.Namespace) -> int:
    import logging

    from capscale.eval.evaluate import evaluate
    from capscale.eval.shards import RUN_LOG, EvalOptions

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    executor_options = _executor_options(args)
    opts = EvalOptions(device=args.device, dtype=args.dtype, batch_size=args.batch_size, backend=args.backend,
                       progress=not args.no_progress, add_bos_token=args.add_bos_token,
                       trust_remote_code=args.trust_remote_code, prefix_reuse=args.prefix_reuse,
                       device_map=args.device_map)
    results = evaluate(args.family, args.tasks, args.out, data_dir=args.data_dir,
                       include_path=args.include_path or None, num_fewshot=args.num_fewshot, limit=args.limit,
                       options=opts, model_ids=args.model_id or None, params=args.params, tokens=args.tokens,
                       step=args.step, tokens_per_step=args.tokens_per_step, family_name=args.family_name,
                       executor=args.executor, executor_options=executor_options, overwrite=args.overwrite)
    done = [r for r in results if r.status == "done"]
    skipped = [r for r in results if r.status == "skipped"]
    excl = sum(r.n_excluded for r in done)
    print(f"{args.out}: {len(done)} shard(s) written, {len(skipped)} already finished (skipped)"
          + (f", {excl} item(s) excluded" if excl else "") + f"; run log {args.out}/{RUN_LOG}")
    for r in skipped:
        if r.note:
            print(f"  warning: {r.note}", file=sys.stderr)
    for r in done:
        print(f"  {r.model_id} {r.task}: {r.n_items} items, {r.n_rows} rows, {r.wall_s:.1f} s "
              f"({r.items_per_s or 0:.1f} items/s, {r.tokens_per_s or 0:.0f} tokens/s)")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from capscale.data.family import scan

    res = scan(args.dir, family=args.family, tokens_per_step=args.tokens_per_step)
    text = res.to_yaml()
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} ({len(res.spec['checkpoints'])} checkpoints)")
    else:
        sys.stdout.write(text)
    for n in res.notes:
        print(f"note: {n}", file=sys.stderr)
    if res.missing:
        print(f"could not infer: {len(res.missing)} checkpoint(s) lack fields; fill them in before capscale eval:",
              file=sys.stderr)
        for mid, fields in res.missing.items():
            print(f"  {mid}: {', '.join(fields)}", file=sys.stderr)
        return 1
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from capscale.data.ingest import ingest_lm_eval

    rep = ingest_lm_eval(args.path, args.family, args.out, model_id=args.model_id,
                         tasks=args.tasks.split(",") if args.tasks else None, overwrite=args.overwrite)
    print(f"{args.out}: {rep.summary()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score every checkpoint of a family on multiple-choice tasks",
                       description="Score every (checkpoint, task) of a family into a directory of Parquet shards "
                       "(one per checkpoint x task, written atomically, each recording the settings that change its "
                       "numbers; a rerun reuses finished shards whose settings match and refuses on a difference "
                       "unless --overwrite) with a JSON run log (_run_log.json).")
    p.add_argument("--family", required=True, help="family spec (YAML/CSV) or a single checkpoint folder")
    p.add_argument("--tasks", required=True, help="comma-separated task or group names (lm-eval names)")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="folder of lm-eval task YAMLs (repeatable); its tasks take precedence")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="data root for capscale's local tasks (a folder mc/ of multiple-choice items, or its parent; "
                   "default $CAPSCALE_DATA). Without it a name resolves to lm-eval's own task")
    p.add_argument("--limit", type=_limit, default=None, help="first N items of each task (< 1: a fraction)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-evaluate finished shards written with other settings (--limit, --num-fewshot, "
                   "--dtype, ...); without it such a shard stops the run (exit 1) before anything is scored")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="weight dtype (default: the spec's, else float32; bfloat16 on GPUs); log-softmax is always "
                   "float32")
    p.add_argument("--batch-size", type=_batch_size, default="auto",
                   help="N packed rows per forward pass, or auto: a token budget (4,096 on CPU; on CUDA from the "
                   "free memory and the model's shape, halved on out-of-memory)")
    p.add_argument("--prefix-reuse", default="auto", choices=["auto", "on", "off"],
                   help="compute a token prefix shared by many contexts (a task's fixed few-shot block) once as a "
                   "key/value cache: auto (default; prefixes of >= 16 tokens), on (any shared prefix), off")
    p.add_argument("--device-map", default=None,
                   help="transformers device_map for models larger than one GPU (e.g. auto); default: the whole "
                   "model on --device")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    p.add_argument("--backend", default="capscale", choices=["capscale", "lm-eval"],
                   help="capscale's shared-prefix engine or lm-eval's HFLM (reference path)")
    p.add_argument("--model-id", action="append", default=[], help="only this checkpoint of the spec (repeatable)")
    p.add_argument("--params", type=int, default=None, help="N for a single checkpoint folder")
    p.add_argument("--tokens", type=int, default=None, help="D for a single checkpoint folder")
    p.add_argument("--step", type=int, default=None, help="step for a single checkpoint folder")
    p.add_argument("--tokens-per-step", type=int, default=None, help="D = step x this, for a single folder")
    p.add_argument("--family-name", default=None, help="family name for a single checkpoint folder")
    p.add_argument("--add-bos-token", default=None, type=lambda s: s.lower() in {"1", "true", "yes"},
                   help="force BOS on (true) or off (false); default: the tokenizer decides, as lm-eval")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # Ray executor (capscale.eval.ray; README "Running on a cluster")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: one process here (default); ray: every (checkpoint, task) shard one Ray task")
    p.add_argument("--address", default=None,
                   help="Ray cluster: 'auto' (the one `ray start` runs on this node) or HOST:PORT; default: "
                   "start a local Ray instance on this machine")
    p.add_argument("--gpus-per-shard", type=float, default=None,
                   help="GPUs each shard reserves (default: 1 with --device cuda, else 0; fractions share a GPU)")
    p.add_argument("--write-from", default="driver", choices=["driver", "worker"],
                   help="who writes a finished shard: driver (default; any cluster, the store need only be on "
                   "this machine) or worker (the store must be on a file system shared by all nodes)")
    p.add_argument("--max-retries", type=int, default=2,
                   help="resubmissions of a failed shard before it is reported as failed (default 2)")
    p.add_argument("--threads-per-shard", type=int, default=None,
                   help="torch CPU threads in each Ray shard (default 1: the CPU each shard reserves). Set it to "
                   "a local run's thread count for byte-identical float32 sums")
    p.set_defaults(func=_eval)

    f = sub.add_parser("family", help="family specs").add_subparsers(dest="family_cmd", metavar="CMD",
                                                                     required=True)
    s = f.add_parser("scan", help="build a family spec from local checkpoint folders",
                     description="Scan HF-format checkpoint folders (Pythia/OLMo-style stepN names) and print a "
                     "family spec YAML; exit 1 and list the fields it could not infer.")
    s.add_argument("dir")
    s.add_argument("--out", default=None, help="write the YAML here (default: stdout)")
    s.add_argument("--family", default=None, help="family name (default: the folder name)")
    s.add_argument("--tokens-per-step", type=int, default=None, help="D = step x this (Pythia: 2097152)")
    s.set_defaults(func=_scan)

    i = sub.add_parser("ingest", help="import scores from other tools").add_subparsers(dest="ingest_cmd",
                                                                                       metavar="SOURCE",
                                                                                       required=True)
    le = i.add_parser("lm-eval", help="convert lm-eval --log_samples JSONL into the store",
                      description="Convert lm-eval --log_samples output (samples_<task>_<date>.jsonl, any 0.4.x) "
                      "into store shards, with N and D from a family spec.")
    le.add_argument("path", help="a samples JSONL file or a folder searched recursively")
    le.add_argument("--family", required=True, help="family spec (YAML/CSV)")
    le.add_argument("--out", required=True, help="store directory")
    le.add_argument("--model-id", default=None, help="the spec checkpoint that produced the log")
    le.add_argument("--tasks", default=None, help="only these tasks (comma-separated)")
    le.add_argument("--overwrite", action="store_true", help="replace existing shards")
    le.set_defaults(func=_ingest)
