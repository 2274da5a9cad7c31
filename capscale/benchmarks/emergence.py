"""Emergence scan throughput: 100 tasks x 10 models x 1,000 items with B = 2,000 paired bootstrap replicates.

Times the whole scan (:func:`capscale.analysis.chain.compute` on the per-choice store, then
:func:`capscale.analysis.emergence.scan` with every statistic, fit and CI, Benjamini–Hochberg control and one
JSON per task) against the straightforward peer: a Python loop over replicates that resamples item
indices, recomputes the curves and refits the sigmoid with :func:`scipy.optimize.curve_fit`, timed on
a few replicates of one task and extrapolated. The planted tasks mix metric-induced, genuine and
smooth families (:func:`capscale.testing.planted_store`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from typing import TYPE_CHECKING

from capscale.benchmarks import emit_report

if TYPE_CHECKING:
    import pandas as pd


def synthetic_scan_store(n_tasks: int, n_models: int, n_items: int, seed: int = 0) -> pd.DataFrame:
    """A store of ``n_tasks`` planted tasks (cycling linear / kink / flat latents), 4 choices per item."""
    import pandas as pd

    from capscale.testing import planted_store

    kinds = ("linear", "kink", "flat")
    frames = [planted_store(kinds[t % 3], n_models=n_models, n_items=n_items, task=f"task{t:03d}",
                            family="bench", seed=seed + t) for t in range(n_tasks)]
    return pd.concat(frames, ignore_index=True)


def _peer_one_task(items: pd.DataFrame, B: int) -> float:
    """Seconds for B replicates of the loop-and-curve_fit peer on one task (acc + choice log-odds)."""
    import numpy as np
    from scipy.optimize import curve_fit

    from capscale.analysis.emergence import stats

    piv = {m: items.pivot(index="model_id", columns="doc_id", values=c).to_numpy()
           for m, c in (("acc", "acc_first"), ("lo", "choice_logodds"))}
    x = np.log10(items.groupby("model_id")["compute"].first().to_numpy())
    rng = np.random.default_rng(0)
    n_items = piv["acc"].shape[1]
    t0 = time.perf_counter()
    for _ in range(B):
        idx = rng.integers(0, n_items, n_items)
        for m in ("acc", "lo"):
            y = piv[m][:, idx].mean(axis=1)
            stats.breakthroughness(y)
            stats.jump_share(y)
            stats.kendall_exact(x, y)
            np.polyfit(x, y, 1)
            np.polyfit(x, y, 2)
            if m == "acc":
                try:
                    curve_fit(lambda xx, x0, k: 0.25 + 0.75 / (1 + np.exp(-k * (xx - x0))), x, y,
                              p0=[x.mean(), 1.0], maxfev=2000)
                except RuntimeError:
                    pass
    return time.perf_counter() - t0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", type=int, default=100, help="tasks (default 100)")
    p.add_argument("--models", type=int, default=10, help="models per task (default 10)")
    p.add_argument("--items", type=int, default=1000, help="items per task (default 1000)")
    p.add_argument("--B", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--peer-replicates", type=int, default=40,
                   help="replicates timed for the loop peer on one task, extrapolated (default 40)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for the analyse stage (default 1; process CPU time then counts only the parent)")
    p.add_argument("--out", default=None, help="also write the report to this file")
    p.add_argument("--figure", default=None, help="write a PNG of per-task times here")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from capscale.analysis import chain, emergence

    store_df = synthetic_scan_store(args.tasks, args.models, args.items)
    c0, t0 = time.process_time(), time.perf_counter()
    items = chain.compute(store_df)
    t_chain, c_chain = time.perf_counter() - t0, time.process_time() - c0
    c0, t0 = time.process_time(), time.perf_counter()
    inputs = [emergence.from_items(g, t, "bench") for t, g in items.groupby("task", sort=True)]
    t_inputs, c_inputs = time.perf_counter() - t0, time.process_time() - c0
    per_task = []
    reports = []
    c0, t0 = time.process_time(), time.perf_counter()
    if args.workers > 1:
        reports = emergence.scan(inputs, B=args.B, workers=args.workers, fdr=False)
        per_task = [(time.perf_counter() - t0) / len(inputs)] * len(inputs)
    else:
        for ti in inputs:
            t1 = time.perf_counter()
            reports.append(emergence.analyse(ti, B=args.B))
            per_task.append(time.perf_counter() - t1)
    emergence.apply_fdr(reports)
    with tempfile.TemporaryDirectory() as d:
        for r in reports:
            from capscale._io import write_json

            write_json(os.path.join(d, f"{r['task']}.json"), r, drop_private=True)
    t_scan, c_scan = time.perf_counter() - t0, time.process_time() - c0
    total = t_chain + t_inputs + t_scan
    cpu = c_chain + c_inputs + c_scan
    kinds = ("linear", "kink", "flat")
    planted = [kinds[int(r["task"][4:]) % 3] for r in reports]
    xtab = pd.crosstab(pd.Series(planted, name="planted latent"),
                       pd.Series([r["verdict"] for r in reports], name="verdict"))
    t_peer_rep = _peer_one_task(items[items["task"] == inputs[0].task], args.peer_replicates) / args.peer_replicates
    t_peer = t_peer_rep * args.B * len(inputs)
    verdicts = pd.Series([r["verdict"] for r in reports]).value_counts().to_dict()
    lines = [
        "# capscale bench emergence",
        f"# command: capscale bench emergence --tasks {args.tasks} --models {args.models} --items {args.items} "
        f"--B {args.B} --peer-replicates {args.peer_replicates}" + (f" --workers {args.workers}" if args.workers > 1
                                                                      else ""),
        f"# machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
        f"python={platform.python_version()} numpy={np.__version__} pandas={pd.__version__} "
        f"load_avg_1min={os.getloadavg()[0]:.1f}",
        f"tasks={len(inputs)} models={args.models} items={args.items} per-choice rows={len(store_df)} B={args.B}",
        "stage: wall s / process CPU s (CPU time of all threads of this process; on a shared, loaded "
        "machine wall time includes waiting for other users' processes)",
        f"chain.compute: {t_chain:.2f} / {c_chain:.2f}",
        f"TaskInput construction: {t_inputs:.2f} / {c_inputs:.2f}",
        f"emergence.analyse x {len(inputs)} + BH + JSON: {t_scan:.2f} / {c_scan:.2f} "
        f"(per task wall median {np.median(per_task):.3f} s, max {np.max(per_task):.3f} s)",
        f"total: wall {total:.1f} s, CPU {cpu:.1f} s",
        f"loop + curve_fit peer (extrapolated from {args.peer_replicates} replicates of one task; acc and "
        f"log-odds curves, B/J/tau/poly fits, sigmoid curve_fit only): {t_peer:.0f} s",
        f"speed-up vs peer: {t_peer / t_scan:.0f}x",
        f"verdicts: {verdicts}",
        "planted latent x verdict:",
        xtab.to_string(),
        f"target (< 120 s for 100 tasks x 10 models x 1000 items, B = 2000): wall {total:.0f} s "
        f"({'met' if total < 120 else 'NOT met'} at load average {os.getloadavg()[0]:.1f}); "
        f"CPU {cpu:.0f} s ({'met' if cpu < 120 else 'NOT met'})",
    ]
    emit_report(lines, args.out)
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        a1.plot(np.arange(1, len(per_task) + 1), np.cumsum(per_task) + t_chain + t_inputs, "-", label="capscale")
        a1.axhline(120, color="C3", ls="--", label="target 120 s")
        a1.set_xlabel("tasks analysed")
        a1.set_ylabel("cumulative wall time (s)")
        a1.legend(fontsize=8)
        a1.set_title(f"scan: {args.models} models x {args.items} items, B = {args.B}", fontsize=10)
        labels = ["chain", "inputs", "analyse\n+BH+JSON", "peer\n(extrap.)"]
        pos = np.arange(4)
        a2.bar(pos - 0.2, [t_chain, t_inputs, t_scan, t_peer], width=0.4, color=["C0", "C0", "C0", "C7"],
               label="wall")
        a2.bar(pos[:3] + 0.2, [c_chain, c_inputs, c_scan], width=0.4, color="C1", label="process CPU")
        a2.set_xticks(pos)
        a2.set_xticklabels(labels, fontsize=8)
        a2.set_yscale("log")
        a2.set_ylabel("seconds (log)")
        a2.legend(fontsize=8)
        a2.set_title(f"wall {total:.0f} s (load avg {os.getloadavg()[0]:.0f} on {os.cpu_count()} cores), "
                     f"CPU {cpu:.0f} s; peer {t_peer:.0f} s", fontsize=9)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.figure)), exist_ok=True)
        fig.savefig(args.figure, dpi=110)
        plt.close(fig)
    return 0
