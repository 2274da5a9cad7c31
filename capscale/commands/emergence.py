"""``capscale emergence INPUT --family F [--task T | --all-tasks] --out DIR``: emergence diagnostics.

The handler builds :meth:`capscale.pipelines.emergence.Options.from_cli`, calls
:func:`capscale.pipelines.emergence.run` and prints the verdict table.
"""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> None:
    import pandas as pd

    from capscale.pipelines import emergence

    res = emergence.run(args.input, emergence.Options.from_cli(args))
    table = res.tables["verdicts"]
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table[["task", "family", "n_models", "n_items", "verdict"]].to_string(index=False))
    print(f"wrote {res.summary['reports']} report(s), verdicts.csv and {res.summary['figures']} figure(s) to {res.out}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emergence", help="is a sharp jump real, or made by the metric? (emergence diagnostics)",
                       description="Emergence diagnostics for one model family over one task or all tasks "
                       "(docs: capscale.analysis.emergence). Writes DIR/<task>.json (schema of emergence.md §9.7), "
                       "DIR/verdicts.csv and figures under DIR/figures/.")
    p.add_argument("input", metavar="STORE_OR_LADDER",
                   help="score store (.parquet/.csv/shard folder), ladder table (.csv/.parquet with a 'metric' "
                   "column), or a published-data folder (pythia-evals, olmo-ladder)")
    p.add_argument("--family", help="model family (optional when the input holds one)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--task", help="one task")
    g.add_argument("--all-tasks", action="store_true", help="every task of the family (BH control across them)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="auto",
                   choices=["auto", "store", "ladder", "pythia-evals", "pythia-all", "olmo-ladder"],
                   help="pythia-evals: the shared loader's 9 zero-shot tasks (MMLU averaged); pythia-all: every "
                   "accuracy task incl. the 57 MMLU subjects, of the --shots files")
    p.add_argument("--shots", type=int, choices=[0, 5], default=0, help="pythia-all: zero- or five-shot files")
    p.add_argument("--B", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--min-items", type=int, default=20, help="fewest items for the item bootstrap (default 20)")
    # the floor's defaults are capscale.analysis.emergence.DEFAULTS (literals here keep the CLI start-up free of
    # numpy; tests/test_emergence.py checks that they agree)
    p.add_argument("--min-jex", type=float, default=0.10,
                   help="effect-size floor: the largest step's share of the total change beyond an even spread "
                   "(J_ex) a sharp metric needs (default 0.10)")
    p.add_argument("--min-step-z", type=float, default=3.5,
                   help="effect-size floor: how far the largest step exceeds an even rise, in bootstrap standard "
                   "deviations of the step (default 3.5)")
    p.add_argument("--max-pre-ratio", type=float, default=0.6,
                   help="effect-size floor: the mean slope before the largest step may be at most this many times "
                   "the step's slope (saturating curves are steepest at the start; default 0.6)")
    p.add_argument("--steps", choices=["final", "all"], default="final",
                   help="final checkpoint (most tokens) per run/size (default) or every checkpoint as a point")
    p.add_argument("--ties", choices=["first", "fractional"], default="first",
                   help="accuracy ties: lm-eval's first index (default) or fractional")
    p.add_argument("--figures", choices=["auto", "all", "none"], default="auto",
                   help="auto: all figures for <= 12 tasks, else only for METRIC_INDUCED/GENUINE verdicts")
    p.add_argument("--workers", type=int, default=1, help="processes for a multi-task scan (default 1)")
    p.add_argument("--no-fdr", action="store_true", help="no Benjamini-Hochberg control across tasks")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)
