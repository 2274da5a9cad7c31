"""The diagnosis behind ``mass`` checkpoints='auto': the issue's run, on the 5-size demo family it was made on.

The store is that of the 18-checkpoint, 5-size family of commit ef9271a (``capscale demo --out OUT`` run on a checkout
of that commit; results/backtests/README.md used it as ``/tmp/demo_before``). As ``capscale backtest STORE
--all-tasks --method all`` does, every checkpoint of a store ladder is its own run, so holding out the largest size
holds out both checkpoints of s4 (steps 376 and 752, D = 385,024 and 770,048 tokens). Point predictions (bootstrap 0); ``mass_noshift`` is ``mass`` with the shared per-model margin shift's variance set to
0 after the fit.
Writes old_family_diag.txt.

    .venv/bin/python results/backtests/cod/old_family_diag.py /tmp/demo_before/store
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd

from capscale.analysis.chain import ladder_from_store
from capscale.analysis.mass import MassConfig
from capscale.analysis.predict import backtest, split_largest
from capscale.analysis.predict._mass import MassPredictor
from capscale.data import store as st

HERE = Path(__file__).resolve().parent
VARIANTS = {"sigmoid": ("sigmoid", {}), "loglinear": ("loglinear", {}), "mass": ("mass", {}),
            "mass_linear": ("mass", {"config": MassConfig(allow_saturating=False)}),
            "mass_all": ("mass", {"checkpoints": "all"}), "mass_auto": ("mass", {"checkpoints": "auto"}),
            "cod": ("cod", {}), "mass_noshift": (None, {})}


def main(path: str) -> int:
    s = st.normalize(st.read(path))
    lad = ladder_from_store(s)
    rows = []
    for task in sorted(lad["task"].unique()):
        for var, (meth, opts) in VARIANTS.items():
            if meth is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for r in backtest(lad, task, meth, store=s, bootstrap=0, inflate=False, **opts):
                    rows.append({"task": task, "held_out": r["heldout_model"].rsplit("-", 1)[-1], "variant": var,
                                 "abs_err_points": 100 * r["abs_err"], "actual": r["actual"]})
        # the shared per-model shift switched off (variance 0): only the point prediction's Monte Carlo mean changes
        train, held = split_largest(lad)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pr = MassPredictor(inflate=False).fit(train, task, store=s[s["model_id"].isin(set(train["model_id"]))])
            pr.fit_.shared_var = 0.0
            for r in backtest(lad, task, "mass", store=s, bootstrap=0, inflate=False):
                v = pr.predict(r["params"], r["tokens"]).value
                rows.append({"task": task, "held_out": r["heldout_model"].rsplit("-", 1)[-1], "variant": "mass_noshift",
                             "abs_err_points": 100 * abs(v - r["actual"]), "actual": r["actual"]})
    df = pd.DataFrame(rows)
    tab = df.pivot_table(index=["task", "held_out"], columns="variant", values="abs_err_points")[list(VARIANTS)]
    act = df.groupby(["task", "held_out"])["actual"].first()
    tab.insert(0, "actual_acc", act)
    text = ("Absolute error, points, of s4's two checkpoints (fit: s0-s3, every checkpoint):\n" + tab.round(2).to_string()
            + "\n\nmean over the 6 cases:\n" + tab.drop(columns="actual_acc").mean().round(2).to_string()
            + "\n\nmedian over the 6 cases:\n" + tab.drop(columns="actual_acc").median().round(2).to_string() + "\n")
    (HERE / "old_family_diag.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
