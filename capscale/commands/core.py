"""Core commands: ``validate``, ``analyze``, ``report`` and ``demo``.

Handlers parse, build the stage's ``Options.from_cli(args)``, call its ``run`` and print; errors are raised and
turned into exit codes by :func:`capscale.cli.main`.
"""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _validate(args: argparse.Namespace) -> None:
    from capscale.data import store

    # the same path as every other reader (analyze included): validate the raw rows, naming files and rows
    # a large store is read one task at a time (store.validate_path); errors name files and rows either way
    warnings: list[store.Problem] = []
    n = store.validate_path(args.store, multi_gold=args.multi_gold, warnings=warnings)
    more = f"; {len(warnings)} warning(s)" if warnings else ""
    print(f"{args.store}: valid ({n['rows']} rows, {n['models']} models, {n['tasks']} tasks, {n['items']} items{more})")
    for w in warnings:
        print(f"  warning: {w}")


def _analyze(args: argparse.Namespace) -> None:
    from capscale.pipelines import analyze

    res = analyze.run(args.store, analyze.Options.from_cli(args))
    info = res.summary
    print(f"analysed {info['rows']} rows: {info['models']} models, {len(info['tasks'])} task(s), "
          f"{info['items']} model x item rows")
    for note in res.notes:
        print(note if note.startswith("warning:") else f"note: {note}")
    if info["ordering_holds_fraction"]:
        print("ordering log p_vocab >= p_choices >= Brier >= acc holds in: "
              + ", ".join(f"{k} {v:.0%}" for k, v in info["ordering_holds_fraction"].items()))
    stream = info.get("streaming")
    if stream:
        print(f"streamed {stream['shards']} shard(s) ({stream['shards_computed']} computed, {stream['shards_resumed']} "
              f"resumed) with {stream['workers']} worker(s), executor {stream['executor']}; bad shards skipped: "
              f"{stream['bad_shards_skipped']}")
    per_item = "per_item.parquet/ (a folder)" if stream else "per_item.parquet"
    print(f"outputs in {args.out}/ (summary.csv, correlations.parquet, {per_item}, figures/)")


def _report(args: argparse.Namespace) -> None:
    from capscale.pipelines import report

    res = report.run(args.results_dir, report.Options.from_cli(args))
    print(f"report written to {res.files[0]}")
    for note in res.notes:
        print(f"note: {note}")


def _demo(args: argparse.Namespace) -> None:
    from capscale.pipelines import demo

    res = demo.run(args.family_dir, demo.Options.from_cli(args))
    if res.summary["failed"]:
        raise demo.DemoError(f"stage(s) {res.summary['failed']} failed (details in {res.out}/run.json)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole toolkit on the embedded demo family (offline, minutes)",
                       description="Evaluate the committed demo family (a ladder of small models trained on "
                       "capscale's synthetic world) on its tasks, run every analysis stage, check what the family "
                       "must show, and write OUT/report.html with the tables behind it.")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--family-dir", default=None,
                   help="another family folder with family.yaml and tasks/ (default: the committed one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)

    p = sub.add_parser("report", help="one self-contained HTML report from a results folder",
                       description="Build one HTML file (figures embedded, no external assets) with a section "
                       "per stage from a results folder such as the one `capscale demo` writes.")
    p.add_argument("results_dir", help="folder with analysis/, mass/, predict/, emergence/ (any may be missing)")
    p.add_argument("-o", "--output", default=None, help="HTML file (default RESULTS_DIR/report.html)")
    p.add_argument("--title", default="capscale report", help="page title")
    p.add_argument("--store", default=None,
                   help="score store for the item inspector's log-likelihoods (default RESULTS_DIR/store, else the "
                        "store analysis/analysis.json names)")
    p.add_argument("--items", default=None,
                   help="folder of <task>.jsonl (doc_id, context, choices) for the item inspector's question text "
                        "(default RESULTS_DIR/tasks)")
    p.add_argument("--static", dest="interactive", action="store_false",
                   help="no interactive figures (do not inline plotly.js even when plotly is installed)")
    p.set_defaults(func=_report)

    p = sub.add_parser("analyze", help="chain metrics and per-item correlation analysis of a store",
                       description="Compute the transformation-chain metrics of every item and their per-item "
                       "correlation with log10 compute (Pearson, Spearman, Kendall); write per_item.parquet, "
                       "correlations.parquet, summary.csv, ccdf.csv, ordering.csv and figures to OUT.")
    p.add_argument("store", help="score store: .parquet, .csv, or a directory of shards")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--family", default=None, help="only this family")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    p.add_argument("--methods", default="pearson,spearman,kendall", help="correlation methods")
    p.add_argument("--multi-gold", action="store_true", help="allow items with several correct choices")
    p.add_argument("--items", choices=("common", "all"), default="common",
                   help="items per (family, task): 'common' (default) those every model scored, counting what is "
                   "excluded; 'all' every item")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("large stores (streamed: shard by shard, bounded memory; see the README)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--stream", dest="stream", action="store_const", const=True, default=None,
                      help="stream the store shard by shard (default: when it is over 512 MiB on disk, or with "
                      "--workers > 1, --executor ray or --skip-bad-shards); per_item.parquet is then a folder")
    mode.add_argument("--in-memory", dest="stream", action="store_const", const=False,
                      help="read the whole store into one frame")
    g.add_argument("--workers", type=_positive_int, default=1,
                   help="processes for the shard and task jobs (default 1); with --executor ray: CPUs of a local Ray")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="'ray' runs one Ray task per shard (the store must be readable at the same path on every "
                   "node)")
    g.add_argument("--address", default=None, help="Ray address: 'auto', HOST:PORT (default: start a local Ray)")
    g.add_argument("--write-from", choices=("driver", "worker"), default="driver",
                   help="Ray: 'driver' (default) writes the per-item files on the driver; 'worker' writes them "
                   "from the workers into --out, which must be on a shared file system (the per-task pass then "
                   "also runs on Ray)")
    g.add_argument("--max-retries", type=int, default=2, help="Ray: resubmissions of a failed task (default 2)")
    g.add_argument("--skip-bad-shards", action="store_true",
                   help="leave out store files that are unreadable or invalid (named, and counted in the output); "
                   "without it such a file stops the run before any result table is written")
    p.set_defaults(func=_analyze)

    p = sub.add_parser("validate", help="check a score store and report every problem at once",
                       description="Check a score store (Parquet file, directory of shards, or CSV) against "
                       "the schema and report all problems, naming file, column and rows. Exit 1 if invalid.")
    p.add_argument("store", help="score store: .parquet, .csv, or a directory of shards")
    p.add_argument("--multi-gold", action="store_true", help="allow items with several correct choices")
    p.set_defaults(func=_validate)
