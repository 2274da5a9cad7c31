"""Core commands: ``validate``, ``analyze``, ``demo`` and ``bench``."""

from __future__ import annotations

import argparse
import sys


def _validate(args: argparse.Namespace) -> int:
    from .. import store

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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a score store and report every problem at once",
                       description="Check a score store (Parquet file, directory of shards, or CSV) against "
                       "the schema and report all problems, naming file, column and rows. Exit 1 if invalid.")
    p.add_argument("store", help="score store: .parquet, .csv, or a directory of shards")
    p.add_argument("--multi-gold", action="store_true", help="allow items with several correct choices")
    p.set_defaults(func=_validate)
