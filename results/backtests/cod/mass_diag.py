"""Why ``mass`` lost to ``sigmoid`` on the demo family: a diagnostic of sizes, law form, shift and checkpoints.

Data: the demo family's store (``capscale eval`` of ``capscale/synthetic/family``, as in results/backtests/README.md;
path as the first argument). Two ladders from it: the 10 sizes, and the 5 original sizes (s0, s1, s2, s3, s4, every
checkpoint kept) of the family the issue's numbers come from. For each, the K largest sizes are held out
(K = 1, 2, 3: extrapolations of 1, 2 and 3 size steps) and each variant predicts the held-out sizes' final accuracy:

* ``sigmoid`` / ``loglinear`` as ``capscale backtest`` runs them (every checkpoint of a store ladder is its own run);
* ``sigmoid_final``: the same law on each size's final checkpoint only (the points ``mass`` and ``cod`` fit);
* ``mass``: the default (``checkpoints="final"``, saturating form allowed);
* ``mass_linear``: the per-item laws forced linear (``MassConfig(allow_saturating=False)``);
* ``mass_all``: every checkpoint a training model (``checkpoints="all"``);
* ``mass_auto``: ``checkpoints="auto"`` (the fix: final-checkpoint laws, except for a target with fewer tokens than
  every training run's final checkpoint, predicted from the laws on every checkpoint); added after the diagnosis on the
  5-size family of commit ef9271a (store of ``capscale demo`` on it), before this script first ran;
* ``cod``: the difficulty-cluster method with its defaults.

Writes mass_diag.csv (one row per ladder, K, task, variant, held-out run) and mass_diag.txt (mean absolute error per
ladder, K and variant, points; and the mass fits' shared per-model margin shift and saturating-form counts).

    .venv/bin/python results/backtests/cod/mass_diag.py /tmp/cod/demo_store
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from capscale.analysis import mass
from capscale.analysis.chain import ladder_from_store
from capscale.analysis.mass import MassConfig
from capscale.analysis.predict import backtest
from capscale.data import store as st
from capscale.data.select import final_checkpoints
from capscale.errors import CapscaleError

HERE = Path(__file__).resolve().parent
ORIGINAL = ("s0", "s1", "s2", "s3", "s4")
VARIANTS = {
    "sigmoid": ("sigmoid", {}, False),
    "loglinear": ("loglinear", {}, False),
    "sigmoid_final": ("sigmoid", {}, True),
    "mass": ("mass", {}, False),
    "mass_linear": ("mass", {"config": MassConfig(allow_saturating=False)}, False),
    "mass_all": ("mass", {"checkpoints": "all"}, False),
    "mass_auto": ("mass", {"checkpoints": "auto"}, False),
    "cod": ("cod", {}, False),
}


def size_of(model_id: str) -> str:
    return model_id.split("-")[2]


def main(path: str) -> int:
    full = st.normalize(st.read(path))
    sets = {"10 sizes": full,
            "5 original sizes": full[full["model_id"].map(size_of).isin(ORIGINAL)]}
    rows, fits = [], []
    for name, s in sets.items():
        lad = ladder_from_store(s)
        fin = final_checkpoints(lad, by="auto")
        s_fin = s[s["model_id"].isin(set(fin["model_id"]))]
        for k in (1, 2, 3):
            for task in sorted(lad["task"].unique()):
                for var, (meth, opts, final_only) in VARIANTS.items():
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            out = backtest(fin if final_only else lad, task, meth, holdout=k,
                                           store=s_fin if final_only else s, bootstrap=0, inflate=False, **opts)
                    except (CapscaleError, ValueError) as e:  # too few fitting sizes for the method
                        rows.append({"ladder": name, "K": k, "task": task, "variant": var, "heldout": None,
                                     "predicted": np.nan, "actual": np.nan, "abs_err_points": np.nan,
                                     "error": str(e)[:200]})
                        continue
                    for r in out:
                        rows.append({"ladder": name, "K": k, "task": task, "variant": var, "heldout": r["heldout_model"],
                                     "predicted": r["predicted"], "actual": r["actual"],
                                     "abs_err_points": 100 * r["abs_err"]})
        # the mass model's own diagnostics on the final checkpoints of all sizes but the largest
        train = s_fin[s_fin["params"] < s_fin["params"].max()]
        for task, tf in mass.fit(train).items():
            gc = tf.groups["correct"]
            fits.append({"ladder": name, "task": task, "n_models": len(tf.models), "shared_var": tf.shared_var,
                         "shared_sd_nats": float(np.sqrt(tf.shared_var)),
                         "median_item_resid_sd_nats": float(np.nanmedian(np.sqrt(gc.s2))),
                         "k_correct": gc.k_task, "k_max_incorrect": tf.groups["max_incorrect"].k_task,
                         "items_saturating_correct": int((gc.k > 0).sum()), "n_items": len(gc.k)})
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "mass_diag.csv", index=False, float_format="%.4f")
    tab = df.pivot_table(index=["ladder", "K"], columns="variant", values="abs_err_points", aggfunc="mean")
    tab = tab[list(VARIANTS)].round(2)
    per_task = df[df["K"] == 1].pivot_table(index=["ladder", "task"], columns="variant", values="abs_err_points")
    per_task = per_task[list(VARIANTS)].round(2)
    ft = pd.DataFrame(fits).round(4)
    text = ("Mean absolute error, points, over the 3 tasks and the K held-out sizes:\n" + tab.to_string()
            + "\n\nK = 1 per task, points:\n" + per_task.to_string()
            + "\n\nmass fits on the final checkpoints of all sizes but the largest:\n" + ft.to_string(index=False) + "\n")
    (HERE / "mass_diag.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
