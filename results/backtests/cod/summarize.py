"""Summary table of the confirmation runs (run_confirm.sh): per data set and method, mean and median absolute error
(points) over the held-out cases, 90 % coverage, and on how many cases each method is best among those compared.

    .venv/bin/python results/backtests/cod/summarize.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SETS = {"demo, size scaling (s4 held out)": "demo_sizes", "demo, data scaling (final checkpoints held out)":
        "demo_tokens", "simulation (mass-sim seed 0)": "sim"}
METHODS = ["cod", "mass", "sigmoid", "loglinear", "ensemble", "auto"]


def main() -> int:
    out = []
    for label, stem in SETS.items():
        df = pd.concat([pd.read_csv(HERE / f"{stem}_all.csv"), pd.read_csv(HERE / f"{stem}_auto.csv")])
        df = df[df["method"].isin(METHODS) & df["heldout_model"].notna()]
        df["case"] = df["task"] + "|" + df["heldout_model"].astype(str)
        wide = df.pivot_table(index="case", columns="method", values="abs_err")
        best = wide.idxmin(axis=1).value_counts()
        for m in METHODS:
            g = df[df["method"] == m]
            if g.empty:
                continue
            out.append({"data": label, "method": m, "n": len(g), "mean_err": 100 * g["abs_err"].mean(),
                        "median_err": 100 * g["abs_err"].median(), "coverage_90": g["covered"].astype(float).mean(),
                        "best_on": int(best.get(m, 0))})
    tab = pd.DataFrame(out)
    lines = ["| data | method | cases | mean abs err (points) | median | 90 % coverage | best on |", "|---|---|---|---|---|---|---|"]
    for r in tab.itertuples():
        lines.append(f"| {r.data} | {r.method} | {r.n} | {r.mean_err:.2f} | {r.median_err:.2f} | {r.coverage_90:.2f} | "
                     f"{r.best_on} |")
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    tab.to_csv(HERE / "summary.csv", index=False, float_format="%.4f")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
