"""``capscale mass``: correct vs incorrect probability mass with scale (see :mod:`capscale.analysis.mass`).

``capscale mass STORE --family F --task T --out DIR`` fits the per-item laws of every task (or of
``--task``), writes the fits, co-variation statistics, predicted vs observed metrics and figures, and
optionally (``--backtest``) a leave-largest-out comparison with other ``capscale.analysis.predict`` methods.
``capscale mass-sim OUT`` writes a simulated store with planted per-item laws.
"""

from __future__ import annotations

import argparse
import sys

#: Simulation scenarios of ``capscale mass-sim`` (keyword arguments of :func:`capscale.testing.simulate_store`).
SCENARIOS: dict[str, dict] = {
    "linear": {},
    "saturating": {"saturation": 0.6},
    "incorrect_fast": {"slope_correct": (1.0, 0.6), "slope_incorrect": (1.0, 0.6)},
    "inverse": {"slope_correct": (0.6, 0.4), "slope_incorrect": (1.0, 0.4)},
    "emergent": {"slope_correct": (2.0, 0.3), "slope_incorrect": (0.6, 0.3), "intercept_sd": 0.8},
    "model_noise": {"model_sd": 0.2},
    "noisy_items": {"item_sd": 0.6, "choice_sd": 0.5},
    "few_items": {"n_items": 100},
}


def _mass(args: argparse.Namespace) -> int:
    import shlex

    from capscale.pipelines import mass

    command = "capscale " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["mass"] else None
    res = mass.run(args.store, mass.Options.from_cli(args, command=command))  # read task by task
    for text in res.notes:
        print(text)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from capscale.data import store
    from capscale.errors import UsageError
    from capscale.testing import simulate_store

    names = args.scenario or list(SCENARIOS)
    bad = [n for n in names if n not in SCENARIOS]
    if bad:
        raise UsageError(f"unknown scenario(s) {bad}; known: {list(SCENARIOS)}")
    frames = []
    for i, n in enumerate(names):
        kw = dict(SCENARIOS[n])
        frames.append(simulate_store(task=f"sim_{n}", family=args.family, seed=args.seed + i, **kw))
    df = store.normalize(pd.concat(frames, ignore_index=True))
    store.write(df, args.out)
    print(f"wrote {args.out}: {len(df)} rows, scenarios {names}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mass", help="correct vs incorrect probability mass: per-item laws, accuracy from masses",
                       description="Fit per-item laws of the correct and incorrect choices' log-likelihoods "
                       "against log10 compute (partially pooled across items), predict accuracy, p_choices and "
                       "Brier from them, and report how the correct and incorrect masses co-vary.")
    p.add_argument("store", help="score store: .parquet, .csv, or a directory of shards")
    p.add_argument("--family", help="model family (required when the store holds several)")
    p.add_argument("--task", action="append", help="task to analyse (repeatable; default: every task)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--final-only", action="store_true",
                   help="analyse only the last checkpoint of each model size (by params); --backtest still gives "
                   "every method all checkpoints (mass itself uses each run's final one)")
    p.add_argument("--linear-only", action="store_true", help="never use the saturating form")
    p.add_argument("--draws", type=int, default=400, help="Monte Carlo draws (default 400)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--backtest", metavar="METHODS", nargs="?", const="loglinear,sigmoid,direct,gadre,ladder,ladder_c",
                   help="also run capscale.analysis.predict's leave-largest-out backtest of 'mass' and these methods "
                   "(comma-separated; default loglinear,sigmoid,direct,gadre,ladder,ladder_c)")
    p.add_argument("--baseline-bootstrap", type=int, default=20,
                   help="bootstrap resamples of the other methods in --backtest (their point predictions do not "
                   "depend on it; default 20)")
    p.add_argument("--backtest-axis", choices=["params", "tokens"], default="params",
                   help="params (default): hold out the largest model size; tokens: within each size, hold out the "
                   "checkpoint with the most tokens (a data-scaling family per size)")
    p.add_argument("--skip-first", type=int, default=0, metavar="N",
                   help="drop the N earliest checkpoints of every size (warm-up) before fitting")
    p.add_argument("--run-from-params", action="store_true",
                   help="in --backtest, treat all checkpoints of one size (params) as one run")
    p.set_defaults(func=_mass)

    s = sub.add_parser("mass-sim", help="write a simulated score store with planted per-item laws",
                       description="Write a score store whose per-item correct and incorrect log-likelihoods follow "
                       "known laws in log10 compute, one task per scenario: " + ", ".join(SCENARIOS) + ".")
    s.add_argument("out", help="output store (.parquet or .csv)")
    s.add_argument("--scenario", action="append", help="scenario (repeatable; default: all)")
    s.add_argument("--family", default="sim")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_simulate)
