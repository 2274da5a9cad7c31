"""``capscale ladder train|export|check`` and ``capscale synthetic generate``: the synthetic world and its ladder.

Handlers raise; :func:`capscale.cli.main` turns errors into exit codes. Settings given on the command line that
cannot make a world or a ladder are :class:`~capscale.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import argparse


def _checked(config):
    """``config`` (a ``WorldConfig`` or ``LadderConfig``) after its ``validate()``; UsageError if it fails.

    The configs are built from flags only, so a setting they reject is a bad flag value.
    """
    from capscale.errors import UsageError

    try:
        config.validate()
    except ValueError as e:
        raise UsageError(str(e)) from e
    return config


def _world_config(args: argparse.Namespace):
    from capscale.synthetic import world as synthetic

    kw = {k: getattr(args, k) for k in ("n_people", "exposures", "n_items", "seed") if getattr(args, k, None) is not None}
    return _checked(synthetic.WorldConfig(**kw))


def _generate(args: argparse.Namespace) -> None:
    from capscale.synthetic import world as synthetic

    world = synthetic.generate_world(_world_config(args))
    paths = synthetic.write_world(world, args.out)
    print(f"wrote {paths['corpus']}, {paths['world']} and task files in {paths['tasks']}")


def _train(args: argparse.Namespace) -> None:
    from capscale.errors import UsageError
    from capscale.synthetic import ladder
    from capscale.synthetic import world as synthetic

    if args.quick:
        sizes = dict(ladder.QUICK_SIZES)
        world = synthetic.WorldConfig(n_people=60, exposures=10, company_exposures=10, n_items=30, seed=args.seed)
        cfg = ladder.LadderConfig(sizes=sizes, world=world, seq_len=32, batch_size=8, n_checkpoints=6,
                                  seed=args.seed, threads=args.threads)
    else:
        cfg = ladder.LadderConfig(world=_world_config(args), seed=args.seed, threads=args.threads)
    if args.sizes:
        table = {**ladder.SIZES, **ladder.QUICK_SIZES}
        unknown = [s for s in args.sizes if s not in table]
        if unknown:
            raise UsageError(f"unknown size(s) {unknown}; known: {sorted(table)}")
        cfg.sizes = {s: table[s] for s in args.sizes}
    spec = ladder.train_ladder(args.out, _checked(cfg))
    print(f"family spec: {spec}")


def _export(args: argparse.Namespace) -> None:
    from capscale.synthetic import ladder

    spec = ladder.export_family(args.src, args.out, max_bytes=int(args.max_mb * 1e6))
    print(f"exported {len(spec['checkpoints'])} checkpoints to {args.out}")


def _check(args: argparse.Namespace) -> None:
    from capscale._io import atomic_write_text
    from capscale.synthetic import ladder

    store = ladder.evaluate_family(args.family, threads=args.threads)
    text = ladder.format_checks(ladder.check_targets(store))
    if args.out:
        atomic_write_text(args.out, text)
    print(text)


def _cross_family(args: argparse.Namespace) -> None:
    from capscale._io import dumps_json
    from capscale.data.cross_family import build_cross_family
    from capscale.data.ladder_table import write_ladder

    table, report = build_cross_family(args.data, min_families=args.min_families,
                                       keep_failed=args.keep_failed_evaluations)
    write_ladder(table, args.out)
    print(dumps_json({"out": str(args.out), **{k: v for k, v in report.items() if k != "dropped_tasks"}}, indent=2))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ladder", help="train a ladder of small models on the synthetic world",
                       description="Train and package capscale's own model family (see capscale.synthetic.ladder).")
    lsub = p.add_subparsers(dest="ladder_command", metavar="SUBCOMMAND", required=True)
    t = lsub.add_parser("train", help="train every size on the synthetic corpus and write a family spec",
                        description="Generate the synthetic world, train a word-level tokenizer and every model "
                        "size for one epoch on CPU, save HF checkpoints (fp16) on a log-spaced step schedule and "
                        "write DIR/family.yaml. Deterministic for a seed and thread count.")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--seed", type=int, default=0, help="seed of the world, data order and initialisation")
    t.add_argument("--sizes", nargs="+", help="subset of sizes to train (default: every size of "
                   "capscale.synthetic.ladder.SIZES, s0m ... s4)")
    t.add_argument("--quick", action="store_true", help="a tiny world and two tiny sizes (seconds; for tests)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared, oversubscribed "
                   "machine 2 threads ran ~25x slower than 1)")
    t.add_argument("--n-people", type=int, dest="n_people", help="people in the world")
    t.add_argument("--exposures", type=int, help="biographies per person in the corpus")
    t.set_defaults(func=_train)
    e = lsub.add_parser("export", help="copy a trained ladder into a size-capped folder (the demo family)",
                        description="Copy the final checkpoint of every size and as many intermediate ones as fit "
                        "in --max-mb, with family.yaml and the task files.")
    e.add_argument("src", help="a trained ladder folder (with family.yaml)")
    e.add_argument("--out", required=True, help="destination folder")
    e.add_argument("--max-mb", type=float, default=25.0, help="size cap in MB (default 25)")
    e.set_defaults(func=_export)
    c = lsub.add_parser("check", help="evaluate a family on its synthetic tasks and print its checks",
                        description="Score every checkpoint of FAMILY on the synthetic tasks (capscale.eval.scoring) "
                        "and report knowledge scaling, the chain ordering of per-item Spearman correlations and "
                        "the multi-token exact-match curve, as Markdown.")
    c.add_argument("family", help="family.yaml or its folder")
    c.add_argument("--out", help="also write the Markdown to this file")
    c.add_argument("--threads", type=int, default=1)
    c.set_defaults(func=_check)

    x = lsub.add_parser("cross-family", help="build the cross-family ladder table of public models (final "
                        "checkpoints, shared zero-shot tasks, one metric per task)",
                        description="Read Pythia, BLOOM, XGLM, LLaMA-1, MPT and the BigScience 1.3B ablations from "
                        "the public data folder (capscale.data.cross_family) and write one ladder table; print what "
                        "was kept and what was left out, with counts.")
    x.add_argument("--data", required=True, help="the public data folder (with pythia-evals/, "
                   "lmeval-2023-results/, bigscience-evals/)")
    x.add_argument("--out", required=True, help="the table to write (.csv or .parquet)")
    x.add_argument("--min-families", type=int, default=5, dest="min_families",
                   help="keep tasks that at least this many families share (default 5)")
    x.add_argument("--keep-failed-evaluations", action="store_true",
                   help="keep rows with an accuracy of exactly 0 and standard error 0 (a failed evaluation, e.g. "
                   "LLaMA-1's LAMBADA in lm-eval v0.3); by default they are left out and listed")
    x.set_defaults(func=_cross_family)

    s = sub.add_parser("synthetic", help="generate the synthetic world (corpus and tasks)",
                       description="Synthetic micro-world (see capscale.synthetic.world).")
    ssub = s.add_subparsers(dest="synthetic_command", metavar="SUBCOMMAND", required=True)
    g = ssub.add_parser("generate", help="write corpus.txt, world.json and tasks/ for a seeded world",
                        description="Write the corpus, the ground truth and the multiple-choice task files "
                        "(JSONL + lm-eval YAML) of a seeded synthetic world.")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--n-people", type=int, dest="n_people")
    g.add_argument("--exposures", type=int)
    g.add_argument("--n-items", type=int, dest="n_items", help="items per task")
    g.set_defaults(func=_generate)
