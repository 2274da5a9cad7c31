"""Development grid for cod's defaults (run once before freezing; see README.md here).

Development data only (simulations; no demo-family data):
* the ``capscale mass-sim`` store with seed 1 (8 scenarios, 7 models, planted per-choice laws);
* :func:`capscale.testing.planted_store` kinds linear, flat, saturating, kink with seed 1 (10 models, latent margins).
Largest model held out; point predictions only (bootstrap 0). Writes dev_grid.csv (one row per config x task) and
dev_grid.txt (mean / median / max absolute error per config, points).

Criterion, stated before the run: the configuration with the smallest mean absolute error over the 12 development
tasks; configurations within 0.1 points of it count as tied, and the tie goes to the fewest clusters, then the
largest stability threshold (the least filtering). ``horizon`` (0.5 decades) and ``law`` (``logit``) are not tuned.

    .venv/bin/python results/backtests/cod/dev_grid.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from capscale.analysis.chain import ladder_from_store
from capscale.analysis.predict import backtest
from capscale.commands.mass import SCENARIOS
from capscale.data import store as st
from capscale.testing import planted_store, simulate_store

HERE = Path(__file__).resolve().parent


def dev_stores() -> list[pd.DataFrame]:
    out = []
    for seed in (1,):  # as `capscale mass-sim OUT --seed <seed>` builds them
        frames = [simulate_store(task=f"sim_{n}_s{seed}", family="sim", seed=seed + i, **kw)
                  for i, (n, kw) in enumerate(SCENARIOS.items())]
        out.append(st.normalize(pd.concat(frames, ignore_index=True)))
    for kind in ("linear", "flat", "saturating", "kink"):
        out.append(st.normalize(planted_store(kind, task=f"planted_{kind}", family=f"planted_{kind}", seed=1)))
    return out


#: The configurations: n_clusters x stability with the p_choices feature, and the acc feature at 6 clusters (the grid is
#: kept under 2 CPU minutes: the shared machine's heavy-job lock was held by longer runs).
GRID = ([(nc, stab, "p_choices") for nc in (3, 6, 10) for stab in (0.05, 0.1, 1.0)]
        + [(6, stab, "acc") for stab in (0.05, 0.1)])


def main() -> int:
    t0 = time.time()
    stores = [(s, ladder_from_store(s)) for s in dev_stores()]
    rows = []
    for nc, stab, feat in GRID:
        for s, lad in stores:
            for task in sorted(lad["task"].unique()):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = backtest(lad, task, "cod", store=s, bootstrap=0, inflate=False, n_clusters=nc,
                                 stability=stab, feature=feat)[0]
                rows.append({"n_clusters": nc, "stability": stab, "feature": feat, "task": task,
                             "abs_err_points": 100 * r["abs_err"], "warning": r["warnings"][0]})
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "dev_grid.csv", index=False, float_format="%.4f")
    summ = (df.groupby(["n_clusters", "stability", "feature"])["abs_err_points"]
            .agg(["mean", "median", "max"]).round(2).sort_values("mean"))
    (HERE / "dev_grid.txt").write_text(summ.to_string() + "\n")
    print(summ.to_string())
    print(f"{len(df)} backtests, {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
