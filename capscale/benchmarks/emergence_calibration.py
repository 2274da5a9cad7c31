"""Emergence verdict calibration: false-"sharp" rate and power of the default decision over planted families.

Five planted classes from :func:`capscale.testing.planted_store`, each over a grid of item counts, model
counts and per-model noise levels, ``--reps`` independent families per grid point:

========================  ==================  ======================================================
class                     planted ``kind``    what the truth is
========================  ==================  ======================================================
``flat``                  ``const``           the latent does not depend on compute: no change at all
``smooth-linear``         ``flat``            crossing points spread evenly: accuracy rises evenly
``smooth-saturating``     ``saturating``      crossing points early: accuracy rises early, levels off
``metric-induced``        ``linear``          smooth latent, concentrated crossing points: a jump
``genuine``               ``kink``            the latent's slope changes (a real transition)
========================  ==================  ======================================================

Each family goes through :func:`capscale.analysis.chain.compute`, :func:`capscale.analysis.emergence.from_items`
and :func:`capscale.analysis.emergence.analyse` with the defaults (``B`` replicates, 2,000 by default like the
stage). Output: one row per family (``families.csv``), verdict shares per class and grid point with 95 %
Wilson intervals (``shares.csv``), and a summary of the targets (``README.txt``):

* false "sharp" (``METRIC_INDUCED`` or ``GENUINE_TRANSITION_CANDIDATE``) on the flat and smooth classes
  <= 5 % at every grid point with >= 7 models;
* power (the right verdict) >= 80 % for the metric-induced and genuine classes at >= 7 models and >= 200 items
  where the planted jump is >= 20 accuracy points: the largest adjacent step of the *expected* accuracy curve
  (``planted_store(...).attrs["expected_acc"]``, the noiseless truth), recorded per family as ``true_max_step``;
* genuine and metric-induced confused for each other <= 10 % at those grid points.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

CLASSES = {"flat": "const", "smooth-linear": "flat", "smooth-saturating": "saturating",
           "metric-induced": "linear", "genuine": "kink"}
SHARP = ("METRIC_INDUCED", "GENUINE_TRANSITION_CANDIDATE")
#: The settings of the decision recorded in the README header.
DECISION_KEYS = ("min_jex", "min_step_z", "max_pre_ratio", "min_kink_change", "crossing_tol", "daicc_thresh",
                 "z_thresh")
RIGHT = {"metric-induced": "METRIC_INDUCED", "genuine": "GENUINE_TRANSITION_CANDIDATE"}
OTHER = {"metric-induced": "GENUINE_TRANSITION_CANDIDATE", "genuine": "METRIC_INDUCED"}


def _one(args: tuple) -> dict:
    """Analyse one planted family; returns its row of ``families.csv``."""
    from capscale.analysis import chain
    from capscale.analysis import emergence as em
    from capscale.testing import planted_store

    cls, n_items, n_models, noise, rep, B, seed = args
    df = planted_store(CLASSES[cls], n_models=n_models, n_items=n_items, noise=noise, task=cls, seed=seed)
    truth = df.attrs["expected_acc"]
    items = chain.compute(df)
    r = em.analyse(em.from_items(items, cls), B=B, seed=seed)
    acc = r["metrics"].get("acc", {}).get("y") or [float("nan")]
    eff = (r.get("decision") or {}).get("effect_size") or {}
    return {"class": cls, "n_items": n_items, "n_models": n_models, "noise": noise, "rep": rep, "seed": seed,
            "verdict": r["verdict"], "acc_range": float(max(acc) - min(acc)),
            "true_max_step": float(max(b - a for a, b in zip(truth, truth[1:]))),
            "true_range": float(truth[-1] - truth[0]),
            "J_ex": eff.get("J_ex"), "excess_step_z": eff.get("excess_step_z"),
            "pre_slope_ratio": eff.get("pre_slope_ratio"), "floor_passes": eff.get("passes"),
            "reason": (r.get("reasons") or [""])[0][:200]}


def calibrate(items: tuple[int, ...] = (50, 200, 1000, 2000), models: tuple[int, ...] = (5, 7, 10, 15),
              noises: tuple[float, ...] = (0.5, 1.5), reps: int = 20, B: int = 2000, workers: int = 1,
              progress: bool = True):
    """Run the grid; returns (families, shares, jump shares) DataFrames (see :func:`targets`)."""
    import pandas as pd
    from tqdm.auto import tqdm

    jobs = []
    k = 0
    for cls in CLASSES:
        for ni in items:
            for nm in models:
                for nz in noises:
                    for rep in range(reps):
                        jobs.append((cls, ni, nm, nz, rep, B, 1000 + k))
                        k += 1
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as ex:
            rows = list(tqdm(ex.map(_one, jobs, chunksize=4), total=len(jobs), disable=not progress,
                             desc="calibration"))
    else:
        rows = [_one(j) for j in tqdm(jobs, disable=not progress, desc="calibration")]
    fam = pd.DataFrame(rows)
    jump = fam[fam["class"].isin(list(RIGHT)) & (fam["true_max_step"] >= 0.20)]
    return fam, _shares(fam), _shares(jump)


def _shares(fam):
    """Verdict shares with 95 % Wilson intervals per class and grid point of a families table."""
    import numpy as np
    import pandas as pd

    from capscale.analysis.emergence.stats import wilson_interval

    out = []
    for key, d in fam.groupby(["class", "n_items", "n_models", "noise"], sort=False):
        n = len(d)
        row = dict(zip(["class", "n_items", "n_models", "noise"], key))
        row["n"] = n
        row["acc_range_median"] = float(d["acc_range"].median())
        row["true_max_step_median"] = float(d["true_max_step"].median())
        counts = {"sharp": int(d["verdict"].isin(SHARP).sum())}
        for v in ("METRIC_INDUCED", "GENUINE_TRANSITION_CANDIDATE", "SMOOTH", "INVERSE_OR_NONMONOTONE",
                  "INSUFFICIENT_DATA"):
            counts[v] = int((d["verdict"] == v).sum())
        for name, c in counts.items():
            lo, hi = wilson_interval(c / n, n)
            row[f"{name}_share"] = c / n
            row[f"{name}_lo"], row[f"{name}_hi"] = float(lo), float(hi)
        out.append(row)
    return pd.DataFrame(out).replace({np.nan: None})


def targets(shares, jump_shares) -> list[str]:
    """The three targets of the module docstring, checked grid point by grid point; lines of text.

    ``shares`` is over all families, ``jump_shares`` over the metric-induced and genuine families whose
    planted jump (largest adjacent step of the expected accuracy) is >= 20 points.
    """
    lines = []
    s = shares
    neg = s[s["class"].isin(["flat", "smooth-linear", "smooth-saturating"]) & (s["n_models"] >= 7)]
    bad = neg[neg["sharp_share"] > 0.05]
    lines.append(f"false 'sharp' on flat/smooth classes, >= 7 models: max {neg['sharp_share'].max():.3f} over "
                 f"{len(neg)} grid points; {len(bad)} above 0.05 -> {'MET' if bad.empty else 'NOT MET'}")
    for _, r in bad.iterrows():
        lines.append(f"  miss: {r['class']} items={r['n_items']} models={r['n_models']} noise={r['noise']}: "
                     f"{r['sharp_share']:.3f} [{r['sharp_lo']:.3f}, {r['sharp_hi']:.3f}]")
    j = jump_shares
    pos = j[j["class"].isin(list(RIGHT)) & (j["n_models"] >= 7) & (j["n_items"] >= 200)] if len(j) else j
    if not len(pos):
        lines.append("power: no grid point with >= 7 models, >= 200 items and a planted jump >= 20 points")
        return lines
    low = [(r["class"], r) for _, r in pos.iterrows() if r[f"{RIGHT[r['class']]}_share"] < 0.80]
    pw = min(r[f"{RIGHT[r['class']]}_share"] for _, r in pos.iterrows())
    lines.append(f"power (right verdict), metric-induced/genuine, >= 7 models, >= 200 items, planted jump >= 20 "
                 f"points: min {pw:.3f} over {len(pos)} grid points ({int(pos['n'].sum())} families); "
                 f"{len(low)} below 0.80 -> {'MET' if not low else 'NOT MET'}")
    for c, r in low:
        lines.append(f"  miss: {c} items={r['n_items']} models={r['n_models']} noise={r['noise']} (n={r['n']}): "
                     f"{r[f'{RIGHT[c]}_share']:.3f} [{r[f'{RIGHT[c]}_lo']:.3f}, {r[f'{RIGHT[c]}_hi']:.3f}] "
                     f"(SMOOTH {r['SMOOTH_share']:.2f}, INSUFFICIENT {r['INSUFFICIENT_DATA_share']:.2f}, "
                     f"other sharp {r[f'{OTHER[c]}_share']:.2f})")
    conf = [(r["class"], r[f"{OTHER[r['class']]}_share"]) for _, r in pos.iterrows()]
    worst = max(v for _, v in conf)
    lines.append(f"genuine <-> metric-induced confusion at those grid points: max {worst:.3f} -> "
                 f"{'MET' if worst <= 0.10 else 'NOT MET'}")
    return lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/emergence/calibration", help="output folder")
    p.add_argument("--items", default="50,200,1000,2000", help="item counts (comma-separated)")
    p.add_argument("--models", default="5,7,10,15", help="model counts (comma-separated)")
    p.add_argument("--noise", default="0.5,1.5", help="per-model latent noise SDs in logits (comma-separated)")
    p.add_argument("--reps", type=int, default=20, help="families per class and grid point (default 20)")
    p.add_argument("--B", type=int, default=2000, help="bootstrap replicates per family (default 2000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from capscale._io import atomic_write_text
    from capscale.analysis.emergence import DEFAULTS

    def ints(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(","))

    t0 = time.perf_counter()
    fam, shares, jump = calibrate(ints(args.items), ints(args.models), tuple(float(x) for x in args.noise.split(",")),
                            args.reps, args.B, args.workers, not args.quiet)
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "families.csv", fam.to_csv(index=False))
    atomic_write_text(out / "shares.csv", shares.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out / "shares_jump20.csv", jump.to_csv(index=False, float_format="%.4f"))
    cmd = (f"capscale bench emergence-calibration --out {args.out} --items {args.items} --models {args.models} "
           f"--noise {args.noise} --reps {args.reps} --B {args.B} --workers {args.workers}")
    summ = shares.groupby("class", sort=False)[[c for c in shares.columns if c.endswith("_share")]].mean()
    lines = ["# capscale bench emergence-calibration", f"# command: {cmd}",
             "# decision defaults: " + " ".join(f"{k}={DEFAULTS[k]}" for k in DECISION_KEYS),
             f"families: {len(fam)}; wall {wall:.0f} s", "", "targets:", *targets(shares, jump), "",
             "verdict shares per class (mean over grid points; per grid point with Wilson intervals in shares.csv):",
             summ.round(3).to_string()]
    atomic_write_text(out / "README.txt", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
