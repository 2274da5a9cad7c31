"""Commands ``fit``, ``predict``, ``backtest`` and ``data fetch``: fitted laws and pre-training prediction.

LADDER is a ladder table (CSV/Parquet with a ``metric`` column), a score store, or a folder of
published data (``--format olmo-ladder|pythia-evals``; guessed when omitted).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from capscale._io import atomic_write_text

FORM_CHOICES = ["compute_law", "chinchilla_nd", "gadre_exp", "ladder_sigmoid", "obs_sigmoid", "direct", "loglinear"]
FORMAT_CHOICES = ["ladder", "store", "olmo-ladder", "pythia-evals"]


def _load(args: argparse.Namespace, *, targets: bool = True):
    from capscale.data import ladder_table as datasets

    ladder, store = datasets.read_any(args.ladder, args.format, targets=targets)
    fam = getattr(args, "family", None)
    if fam:
        keep = ladder["family"].isin(fam.split(","))
        if not keep.any():
            raise ValueError(f"--family {fam!r}: no rows; families present: {sorted(ladder['family'].unique())}")
        ladder = ladder[keep]
        if store is not None:
            store = store[store["model_id"].isin(set(ladder["model_id"]))]
    return ladder, store


def _metric(ladder, task: str, metric: str | None) -> str:
    from capscale.pipelines.backtest import default_metric

    return default_metric(ladder, task, metric)


def _tasks(ladder, args: argparse.Namespace) -> list[str]:
    if getattr(args, "all_tasks", False):
        acc_tasks = ladder.loc[ladder["metric"].isin(["acc", "acc_norm"]), "task"].unique()
        return sorted(acc_tasks)
    if not args.task:
        raise ValueError("give --task T (comma-separated for several) or --all-tasks")
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    known = set(ladder["task"])
    bad = [t for t in tasks if t not in known]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; tasks in the ladder: {sorted(known)}")
    return tasks


def _pred_kw(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"bootstrap": args.bootstrap, "seed": args.seed}
    if getattr(args, "loss_task", None):
        kw["x_task"] = args.loss_task
    if getattr(args, "loss_metric", None):
        kw["x_metric"] = args.loss_metric
    return kw


def _clean(v: Any) -> Any:
    from capscale.pipelines.backtest import clean_json

    return clean_json(v)


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------


def _fit(args: argparse.Namespace) -> int:
    import numpy as np

    from capscale.analysis import laws, predict
    from capscale.data.ladder_table import chance_of

    ladder, _ = _load(args, targets=False)
    task = _tasks(ladder, args)[0]
    metric = _metric(ladder, task, args.metric)
    form = args.form
    chance = chance_of(task)
    needs_loss = form in ("compute_law", "chinchilla_nd", "gadre_exp", "ladder_sigmoid")
    xt = predict._loss_metric(ladder, task, args.loss_task, args.loss_metric) if needs_loss else None
    runs = predict._extract(ladder, task, metric, xt)
    window = predict._auto_window(runs)
    n = np.array([r.params for r in runs])
    d = np.array([r.tokens[-1] for r in runs])
    labels = [r.run for r in runs]
    if form == "compute_law":
        law = laws.ComputeLaw(labels=labels).fit(6 * n * d, [predict._final(r.x, window) for r in runs])
    elif form == "chinchilla_nd":
        law = laws.ChinchillaND(labels=labels).fit(np.c_[n, d], [predict._final(r.x, window) for r in runs])
    elif form == "gadre_exp":
        law = laws.GadreExp().fit(np.concatenate([r.x for r in runs]), 1 - np.concatenate([r.y for r in runs]))
    elif form == "ladder_sigmoid":
        x, y = predict._step2_points(runs)
        law = laws.LadderSigmoid(chance=chance).fit(x, y)
    elif form == "obs_sigmoid":
        law = laws.ObsSigmoid(floor=(0.0, chance), labels=labels).fit(
            np.log10(6 * n * d), [predict._final(r.y, window) for r in runs])
    elif form == "direct":
        law = laws.DirectLaw(chance=chance, labels=labels).fit(6 * n * d, [predict._final(r.y, window) for r in runs])
    else:
        law = laws.LogLinear(labels=labels).fit(6 * n * d, [predict._final(r.y, window) for r in runs])
    out = {"task": task, "metric": metric, "loss": list(xt) if xt else None, "final_window": window,
           "x": "C = 6*N*D FLOPs" if form in ("compute_law", "direct", "loglinear", "obs_sigmoid") else
           ("(N, D)" if form == "chinchilla_nd" else "loss"), **law.to_dict()}
    text = json.dumps(_clean(out), indent=2)
    print(text)
    for w in law.warnings_:
        print(f"warning: {w}", file=sys.stderr)
    if args.out:
        outdir = Path(args.out)
        atomic_write_text(outdir / f"fit_{task}_{form}.json", text + "\n")
        _plot_fit(law, form, runs, window, outdir / f"fit_{task}_{form}.png", task)
    return 0


def _plot_fit(law, form, runs, window, path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from capscale.analysis import predict

    fig, ax = plt.subplots(figsize=(5, 3.6))
    if form in ("gadre_exp", "ladder_sigmoid"):
        x = np.concatenate([r.x for r in runs])
        y = np.concatenate([r.y for r in runs])
        ax.scatter(x, 1 - y if form == "gadre_exp" else y, s=3, alpha=0.4, label="checkpoints")
        grid = np.linspace(max(x.min() * 0.8, 1e-6), x.max() * 1.1, 200)
        ax.plot(grid, law.predict(grid), "k-", label=law.name)
        ax.set_xlabel("loss")
    else:
        c = np.array([6 * r.params * r.tokens[-1] for r in runs])
        yv = np.array([predict._final(r.x if form in ("compute_law", "chinchilla_nd") else r.y, window)
                       for r in runs])
        ax.scatter(c, yv, label="ladder runs (final)")
        grid = np.logspace(np.log10(c.min()), np.log10(c.max()) + 2, 200)
        if form == "chinchilla_nd":
            ax.scatter(c, law.predict(np.c_[[r.params for r in runs], [r.tokens[-1] for r in runs]]),
                       marker="x", label="fit")
        elif form == "obs_sigmoid":
            ax.plot(grid, law.predict(np.log10(grid)), "k-", label=law.name)
        else:
            ax.plot(grid, law.predict(grid), "k-", label=law.name)
        ax.set_xscale("log")
        ax.set_xlabel("compute 6ND (FLOPs)")
    ax.set_title(f"{task}: {form}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    from capscale.plotting.chain import save_figure

    save_figure(fig, path, dpi=120)


# ----------------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------------


def _parse_target(s: str) -> tuple[float, float]:
    vals: dict[str, float] = {}
    for part in s.split(","):
        if "=" not in part:
            raise ValueError(f"--target {s!r}: expected params=N,tokens=D")
        k, v = part.split("=", 1)
        try:
            vals[k.strip()] = float(v)
        except ValueError as e:
            raise ValueError(f"--target {s!r}: {k.strip()} = {v!r} is not a number") from e
    if set(vals) != {"params", "tokens"}:
        raise ValueError(f"--target {s!r}: give exactly params=N,tokens=D")
    return vals["params"], vals["tokens"]


def _predict(args: argparse.Namespace) -> int:
    from capscale.analysis import predict

    ladder, store = _load(args, targets=False)  # never fit on the OLMo target rows
    params, tokens = _parse_target(args.target)
    task = _tasks(ladder, args)[0]
    metric = _metric(ladder, task, args.metric)
    pr, scores = predict.fit_method(ladder, task, args.method, metric=metric, store=store, **_pred_kw(args))
    p = pr.predict(params, tokens)
    out = {"task": task, "method": pr.name if args.method != "auto" else "auto", "selected": pr.name,
           "metric": metric, "target_params": params, "target_tokens": tokens, "prediction": p.value,
           "lower": p.lower, "upper": p.upper, "warnings": p.warnings}
    if scores is not None:
        out["cv_scores"] = scores
    if args.json:
        print(json.dumps(_clean(out)))
    else:
        print(f"{task} ({metric}) at N={params:.4g}, D={tokens:.4g}: {p.value:.4f}  90% [{p.lower:.4f}, "
              f"{p.upper:.4f}]  method={pr.name}")
        for w in p.warnings:
            print(f"  warning: {w}")
    if args.out:
        outdir = Path(args.out)
        atomic_write_text(outdir / f"predict_{task}.json", json.dumps(_clean({**out, "fit": pr.report()}), indent=2))
        from capscale.pipelines.backtest import plot_backtest

        plot_backtest([{"task": task, "method": pr.name, "heldout_model": "target", "predicted": p.value,
                         "actual": float("nan"), "lower": p.lower, "upper": p.upper, "params": params,
                         "tokens": tokens}], ladder, task, metric, outdir / f"predict_{task}.png")
    return 0


# ----------------------------------------------------------------------------------------------
# backtest
# ----------------------------------------------------------------------------------------------


def _backtest(args: argparse.Namespace) -> int:
    from capscale.pipelines.backtest import BACKTEST_KEYS, clean_json, run_backtests, summarize_backtests

    ladder, store = _load(args)
    holdout: str | int = args.holdout if args.holdout == "largest" else int(args.holdout)
    rows = run_backtests(ladder, _tasks(ladder, args), args.method, holdout=holdout, store=store,
                         metric=args.metric, out=args.out, name=args.name or "backtest",
                         progress=sys.stderr.isatty(), **_pred_kw(args))
    if args.json:
        print(json.dumps([clean_json({k: r.get(k) for k in BACKTEST_KEYS}) for r in rows]))
    else:
        print(summarize_backtests(rows))
    return 0


# ----------------------------------------------------------------------------------------------
# data fetch
# ----------------------------------------------------------------------------------------------


def _fetch(args: argparse.Namespace) -> int:
    from capscale.data import ladder_table as datasets

    files = datasets.fetch(args.name, args.dest)
    print(f"{args.name}: {len(files)} file(s) written under {args.dest} (sha256 checked)")
    return 0


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def _common(p: argparse.ArgumentParser, *, method: bool = True) -> None:
    p.add_argument("ladder", metavar="LADDER", help="ladder table (.csv/.parquet), score store, or data folder")
    p.add_argument("--format", choices=FORMAT_CHOICES, default=None, help="input format (guessed when omitted)")
    p.add_argument("--task", help="task name (comma-separated for several)")
    p.add_argument("--metric", default=None, help="accuracy metric (default: acc, else acc_norm)")
    p.add_argument("--family", default=None, help="keep only these families (comma-separated)")
    p.add_argument("--loss-task", default=None, help="chain through this task's loss when the task has none")
    p.add_argument("--loss-metric", default=None, help="loss metric to chain through (task_bpb, task_loss, ...)")
    p.add_argument("--out", default=None, help="folder for JSON/CSV outputs and a figure")
    if method:
        p.add_argument("--bootstrap", type=int, default=50, help="bootstrap resamples over ladder runs (default 50)")
        p.add_argument("--seed", type=int, default=0, help="random seed (fits are deterministic for a seed)")
        p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit one curve form to a ladder",
                       description="Fit one curve form (capscale.analysis.laws) to a task of a ladder and print its "
                       "parameters, bounds hit and convergence as JSON.")
    _common(p, method=False)
    p.add_argument("--form", required=True, choices=FORM_CHOICES)
    p.set_defaults(func=_guard(_fit))

    p = sub.add_parser("predict", help="predict a task's accuracy for an untrained (N, D)",
                       description="Fit on the ladder and predict the accuracy of a model with N parameters "
                       "trained on D tokens, with a 90%% interval.")
    _common(p)
    p.add_argument("--target", required=True, help="params=N,tokens=D")
    p.add_argument("--method", default="auto", help="method name (capscale.analysis.predict.METHODS) or auto")
    p.set_defaults(func=_guard(_predict))

    p = sub.add_parser("backtest", help="hold out the largest ladder runs and score predictions",
                       description="Fit without the largest runs, predict their final values, report errors "
                       "and 90%% interval coverage.")
    _common(p)
    p.add_argument("--all-tasks", action="store_true", help="every task with an accuracy metric")
    p.add_argument("--holdout", default="largest", help="largest, or K: hold out the K largest sizes")
    p.add_argument("--method", default="auto", help="method name, auto, or all")
    p.add_argument("--name", default=None, help="file stem for --out outputs (default backtest)")
    p.set_defaults(func=_guard(_backtest))

    p = sub.add_parser("data", help="published data sets (fetch)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = dsub.add_parser("fetch", help="download a published data set, pinned and sha256-checked (needs internet)")
    f.add_argument("name", choices=["olmo-ladder"])
    f.add_argument("--dest", required=True, help="destination folder")
    f.set_defaults(func=_guard(_fetch))
