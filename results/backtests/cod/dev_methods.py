"""Development evidence for a store rule of ``auto`` (a proposal only: ``auto`` is not changed): ``mass`` (default and
``checkpoints="auto"``), ``cod`` (frozen defaults), ``sigmoid`` and ``auto`` on the development stores of dev_grid.py
(simulations: mass-sim seed 1, planted_store seed 1), largest model held out, point predictions.
Writes dev_methods.csv and dev_methods.txt.

    .venv/bin/python results/backtests/cod/dev_methods.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd

from capscale.analysis.chain import ladder_from_store
from capscale.analysis.predict import backtest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dev_grid import dev_stores  # noqa: E402

HERE = Path(__file__).resolve().parent
VARIANTS = {"mass": ("mass", {}), "mass_auto": ("mass", {"checkpoints": "auto"}), "cod": ("cod", {}),
            "sigmoid": ("sigmoid", {}), "auto": ("auto", {})}


def main() -> int:
    rows = []
    for s in dev_stores():
        lad = ladder_from_store(s)
        for task in sorted(lad["task"].unique()):
            for var, (meth, opts) in VARIANTS.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = backtest(lad, task, meth, store=s, bootstrap=0, inflate=False, **opts)[0]
                rows.append({"task": task, "variant": var, "abs_err_points": 100 * r["abs_err"]})
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "dev_methods.csv", index=False, float_format="%.4f")
    tab = df.pivot_table(index="task", columns="variant", values="abs_err_points")[list(VARIANTS)]
    best = tab.idxmin(axis=1).value_counts()
    text = (tab.round(2).to_string() + "\n\nmean:\n" + tab.mean().round(2).to_string() + "\n\nmedian:\n"
            + tab.median().round(2).to_string() + "\n\nbest on:\n" + best.to_string() + "\n")
    (HERE / "dev_methods.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
