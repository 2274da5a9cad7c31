"""``capscale emergence INPUT --family F [--task T | --all-tasks] --out DIR``: emergence diagnostics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _inputs(args: argparse.Namespace):
    """The command's TaskInputs and notes (:func:`capscale.pipelines.emergence.load_inputs`)."""
    from capscale.pipelines.emergence import load_inputs

    return load_inputs(args.input, family=args.family, tasks=None if args.all_tasks else [args.task],
                       fmt=args.format, steps=args.steps, ties=args.ties, shots=args.shots)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (recorded in every JSON)."""
    parts = ["capscale emergence", str(args.input)]
    if args.family:
        parts.append(f"--family {args.family}")
    parts.append("--all-tasks" if args.all_tasks else f"--task {args.task}")
    parts.append(f"--out {args.out}")
    defaults = {"format": "auto", "shots": 0, "B": 2000, "seed": 0, "alpha": 0.05, "min_items": 20, "steps": "final",
                "ties": "first"}
    for k, v in defaults.items():
        if getattr(args, k) != v:
            parts.append(f"--{k.replace('_', '-')} {getattr(args, k)}")
    if args.no_fdr:
        parts.append("--no-fdr")
    return " ".join(parts)


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from capscale.analysis import emergence
    from capscale.plotting import emergence as plots

    if bool(args.task) == bool(args.all_tasks):
        print("error: give exactly one of --task T or --all-tasks", file=sys.stderr)
        return 2
    try:
        inputs, notes = _inputs(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = args.figures != "none"
    reports = emergence.scan(inputs, B=args.B, seed=args.seed, alpha=args.alpha, min_items=args.min_items,
                             fdr=not args.no_fdr, progress=not args.quiet and sys.stderr.isatty(), keep_curves=keep,
                             workers=args.workers)
    fig_dir = out / "figures"
    n_fig = 0
    for r in reports:
        r.setdefault("guards", []).extend(notes)
        r["command"] = _command(args)
        emergence.write_json(r, out / f"{emergence.safe_name(r['task'])}.json")
        if keep and (args.figures == "all" or r["verdict"] in ("METRIC_INDUCED", "GENUINE_TRANSITION_CANDIDATE")
                     or len(reports) <= 12):
            n_fig += len(plots.plot_report(r, fig_dir))
    table = emergence.verdict_table(reports)
    tmp = out / ".verdicts.csv.tmp"
    table.to_csv(tmp, index=False)
    tmp.replace(out / "verdicts.csv")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table[["task", "family", "n_models", "n_items", "verdict"]].to_string(index=False))
    print(f"wrote {len(reports)} report(s), verdicts.csv and {n_fig} figure(s) to {out}")
    return 0


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
