"""Core commands: ``validate``, ``analyze``, ``demo`` and ``bench``."""

from __future__ import annotations

import argparse
import sys


def _validate(args: argparse.Namespace) -> int:
    from capscale.data import store

    try:
        df = store.read(args.store, validate_store=False)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problems = store.validate(df, multi_gold=args.multi_gold)
    if problems:
        print(str(store.StoreValidationError(problems, args.store)), file=sys.stderr)
        return 1
    n_models, n_tasks = df["model_id"].nunique(), df["task"].nunique()
    n_items = df.groupby(["task", "doc_id"]).ngroups
    print(f"{args.store}: valid ({len(df)} rows, {n_models} models, {n_tasks} tasks, {n_items} items)")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from capscale.data import store
    from capscale.pipelines.analyze import run_analysis

    try:
        df = store.read(args.store, multi_gold=args.multi_gold)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.family:
        df = df[df["family"] == args.family]
    if args.tasks:
        wanted = [t.strip() for t in args.tasks.split(",") if t.strip()]
        unknown = sorted(set(wanted) - set(df["task"]))
        if unknown:
            print(f"error: task(s) {unknown} not in {args.store}; it has {sorted(df['task'].unique())}",
                  file=sys.stderr)
            return 2
        df = df[df["task"].isin(wanted)]
    if len(df) == 0:
        print("error: no rows left after --family/--tasks selection", file=sys.stderr)
        return 2
    methods = tuple(m.strip() for m in args.methods.split(","))
    info = run_analysis(df, args.out, figures=not args.no_figures, methods=methods,
                        progress=not args.quiet, source=str(args.store))
    print(f"analysed {info['rows']} rows: {info['models']} models, {len(info['tasks'])} task(s), "
          f"{info['items']} model x item rows")
    if info["groups_skipped_fewer_than_3_models"]:
        print(f"note: no correlations for (family, task) with fewer than 3 models: "
              f"{info['groups_skipped_fewer_than_3_models']}")
    if info["ordering_holds_fraction"]:
        print("ordering log p_vocab >= p_choices >= Brier >= acc holds in: "
              + ", ".join(f"{k} {v:.0%}" for k, v in info["ordering_holds_fraction"].items()))
    print(f"outputs in {args.out}/ (summary.csv, correlations.parquet, per_item.parquet, figures/)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from capscale.pipelines.report import build_report

    try:
        path = build_report(args.results_dir, args.output, title=args.title)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from capscale.pipelines.demo import DemoError, run_demo

    try:
        run = run_demo(args.out, family_dir=args.family_dir, progress=not args.quiet)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if run["failed"] else 0


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
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_analyze)

    p = sub.add_parser("validate", help="check a score store and report every problem at once",
                       description="Check a score store (Parquet file, directory of shards, or CSV) against "
                       "the schema and report all problems, naming file, column and rows. Exit 1 if invalid.")
    p.add_argument("store", help="score store: .parquet, .csv, or a directory of shards")
    p.add_argument("--multi-gold", action="store_true", help="allow items with several correct choices")
    p.set_defaults(func=_validate)
