"""Commands ``fit``, ``predict``, ``backtest`` and ``data fetch``: fitted laws and pre-training prediction.

LADDER is a ladder table (CSV/Parquet with a ``metric`` column), a score store, or a folder of
published data (``--format olmo-ladder|pythia-evals``; guessed when omitted). The handlers parse, build the
stage's ``Options.from_cli(args)``, call its ``run`` (:mod:`capscale.pipelines.fit`,
:mod:`capscale.pipelines.backtest`) and print.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from capscale.data.store import TaskReader

#: The forms of ``capscale fit --form`` (:data:`capscale.analysis.predict.FORMS`, spelled out here so that
#: building the parser does not import the fitting code).
FORM_CHOICES = ["compute_law", "chinchilla_nd", "gadre_exp", "ladder_sigmoid", "obs_sigmoid", "direct", "loglinear"]
FORMAT_CHOICES = ["ladder", "store", "olmo-ladder", "pythia-evals", "lmeval-results", "bigscience-evals"]


def _load(args: argparse.Namespace, *, targets: bool = True) -> tuple[pd.DataFrame, TaskReader | None]:
    """The ladder of LADDER (and, for a score store, a reader of its rows task by task), for one --family."""
    from capscale.data.lmeval_results import parse_mapping
    from capscale.pipelines.inputs import read_ladder_or_store

    ladder, store = read_ladder_or_store(args.ladder, args.format, targets=targets,
                                         tokens=parse_mapping(getattr(args, "tokens", None)) or None,
                                         sizes=parse_mapping(getattr(args, "sizes", None), what="--sizes") or None)
    fam = getattr(args, "family", None)
    if fam:
        keep = ladder["family"].isin(fam.split(","))
        if not keep.any():
            from capscale.errors import InputError

            raise InputError(f"--family {fam!r}: no rows; families present: {sorted(ladder['family'].unique())}")
        ladder = ladder[keep]
        if store is not None:
            store = store.restrict(set(ladder["model_id"]))
    return ladder, store


# ----------------------------------------------------------------------------------------------
# fit, predict, backtest
# ----------------------------------------------------------------------------------------------


def _fit(args: argparse.Namespace) -> int:
    from capscale._io import dumps_json
    from capscale.pipelines import fit

    options = fit.Options.from_cli(args)
    ladder, _ = _load(args, targets=False)
    res = fit.run(ladder, options)
    print(dumps_json(res.summary, indent=2))
    for w in res.notes:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from capscale._io import dumps_json
    from capscale.pipelines import fit

    options = fit.Options.from_cli(args)
    ladder, store = _load(args, targets=False)  # never fit on the OLMo target rows
    res = fit.run(ladder, options, store=store)
    s = res.summary
    if args.json:
        print(dumps_json(s, indent=None))
    else:
        print(f"{s['task']} ({s['metric']}) at N={s['target_params']:.4g}, D={s['target_tokens']:.4g}: "
              f"{s['prediction']:.4f}  90% [{s['lower']:.4f}, {s['upper']:.4f}]  method={s['selected']}  "
              f"verdict={s.get('verdict')}")
        for w in s["warnings"]:
            print(f"  warning: {w}")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from capscale._io import dumps_json
    from capscale.pipelines import backtest

    options = backtest.Options.from_cli(args, progress=sys.stderr.isatty())
    ladder, store = _load(args)
    res = backtest.run(ladder, options, store=store)
    rows = res.summary["rows"]
    if args.json:
        print(dumps_json([{k: r.get(k) for k in backtest.BACKTEST_KEYS} for r in rows], indent=None))
    else:
        print(backtest.summarize_backtests(rows))
    return 0


def _suite(args: argparse.Namespace) -> int:
    from capscale.pipelines import suite

    res = suite.run(suite.Options.from_cli(args, progress=sys.stderr.isatty()))
    print(res.summary["text"])
    return 0


# ----------------------------------------------------------------------------------------------
# data fetch
# ----------------------------------------------------------------------------------------------


def _fetch(args: argparse.Namespace) -> int:
    from capscale.data import published

    files = published.fetch(args.name, args.dest)
    print(f"{args.name}: {len(files)} file(s) written under {args.dest} (sha256 checked)")
    return 0


def _common(p: argparse.ArgumentParser, *, method: bool = True) -> None:
    p.add_argument("ladder", metavar="LADDER", help="ladder table (.csv/.parquet), score store, or data folder")
    p.add_argument("--format", choices=FORMAT_CHOICES, default=None, help="input format (guessed when omitted)")
    p.add_argument("--task", help="task name (comma-separated for several)")
    p.add_argument("--metric", default=None, help="accuracy metric (default: acc, else acc_norm)")
    p.add_argument("--family", default=None, help="keep only these families (comma-separated)")
    p.add_argument("--loss-task", default=None, help="chain through this task's loss when the task has none")
    p.add_argument("--loss-metric", default=None, help="loss metric to chain through (task_bpb, task_loss, ...)")
    p.add_argument("--out", default=None, help="folder for JSON/CSV outputs and a figure")
    p.add_argument("--chance", default=None, help="chance accuracy per task, e.g. gsm8k=0,rte=0.5 (default: the "
                   "ladder's chance column, 1/K from a store, or capscale's table of common tasks)")
    p.add_argument("--tokens", default=None, help="lm-eval results: training tokens per model or family, "
                   "e.g. bloom=3.66e11,llama-30B=1.4e12 (the files do not state D)")
    p.add_argument("--sizes", default=None, help="lm-eval results: parameters per model or family (default: "
                   "read from the model name)")
    if method:
        p.add_argument("--bootstrap", type=int, default=50, help="bootstrap resamples over ladder runs (default 50)")
        p.add_argument("--seed", type=int, default=0, help="random seed (fits are deterministic for a seed)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--fit-loss", dest="fit_loss", default=None, help="chained methods: query selecting the rows "
                       "their loss step is fitted on, e.g. 'params<=1.2e9' (default: every fitting row)")
        p.add_argument("--fit-link", dest="fit_link", default=None, help="chained methods: query selecting the rows "
                       "their loss-to-accuracy step is fitted on, e.g. 'multiplier<=20' (default: every fitting row)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit one curve form to a ladder",
                       description="Fit one curve form (capscale.analysis.laws) to a task of a ladder and print its "
                       "parameters, bounds hit and convergence as JSON.")
    _common(p, method=False)
    p.add_argument("--form", required=True, choices=FORM_CHOICES)
    p.set_defaults(func=_fit)

    p = sub.add_parser("predict", help="predict a task's accuracy for an untrained (N, D)",
                       description="Fit on the ladder and predict the accuracy of a model with N parameters "
                       "trained on D tokens, with a 90% interval.")
    _common(p)
    p.add_argument("--target", required=True, help="params=N,tokens=D (observational: params=N,tokens=D,family=F)")
    p.add_argument("--target-scores", dest="target_scores", default=None, metavar="TASK=V,...",
                   help="the target's measured scores on other tasks (fractions, the ladder's metric of each), e.g. "
                   "arc_easy=0.71,piqa=0.78; observational estimates the target's capabilities from them (the JSON's "
                   "'given' says 'scores'); other methods ignore them, with a warning")
    p.add_argument("--fit", default=None, help="query selecting the rows to fit on, e.g. 'params<2e9'")
    p.add_argument("--method", default="auto", help="method name (capscale.analysis.predict.METHODS) or auto")
    p.set_defaults(func=_predict)

    p = sub.add_parser("backtest", help="hold out the largest ladder runs and score predictions",
                       description="Fit without the largest runs, predict their final values, report errors "
                       "and 90% interval coverage.")
    _common(p)
    p.add_argument("--all-tasks", action="store_true", help="every task with an accuracy metric")
    p.add_argument("--holdout", default="largest", help="largest; K (the K largest sizes); family-largest (every "
                   "family's largest run; family-largest:F for family F only); or a query over params, "
                   "tokens, compute, multiplier (= tokens/params), family, model_id, e.g. 'compute>8.4e22'")
    p.add_argument("--fit", default=None, help="query restricting the fitting rows, e.g. 'tokens<=4e10' (default: "
                   "every run not held out)")
    p.add_argument("--method", default="auto", help="method name, auto, or all")
    p.add_argument("--given", default=None, choices=["compute", "scores"], help="observational: predict each "
                   "held-out model from its (family, N, D) only (compute, the default) or also from its scores on "
                   "the other tasks (scores)")
    p.add_argument("--name", default=None, help="file stem for --out outputs (default backtest)")
    p.set_defaults(func=_backtest)

    p = sub.add_parser("backtest-suite", help="the backtest suite over real ladders (dev / confirm half)",
                       description="Backtest auto and every single method on the suite's real ladders "
                       "(capscale.pipelines.suite.DATASETS): MAE, 90% coverage, uninformative intervals, verdicts.")
    p.add_argument("--data", default=os.environ.get("CAPSCALE_SHARED_DATA", "data"),
                   help="folder of the public data (default $CAPSCALE_SHARED_DATA, else ./data)")
    p.add_argument("--half", default="dev", choices=["dev", "confirm", "all"])
    p.add_argument("--sets", default=None, help="only these data sets (comma-separated)")
    p.add_argument("--bootstrap", type=int, default=50, help="bootstrap resamples per fit (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--demo-store", dest="demo_store", default=None, help="score store of the demo family "
                   "(default: evaluate it in a temporary folder)")
    p.add_argument("--out", default="results/backtests/suite", help="output folder")
    p.set_defaults(func=_suite)

    p = sub.add_parser("data", help="published data sets (fetch)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = dsub.add_parser("fetch", help="download a published data set, pinned and sha256-checked (needs internet)")
    f.add_argument("name", choices=["olmo-ladder"])
    f.add_argument("--dest", required=True, help="destination folder")
    f.set_defaults(func=_fetch)
