"""Analysis at family scale: ``capscale analyze`` end to end on simulated sharded stores of 1M to 100M rows.

For each size a Pythia-shaped family (:func:`capscale.testing.sharded_store`: 500 checkpoints x 4 tasks, one
Parquet shard per checkpoint x task, K = 4; items per task scaled with the size, 2,500-25,000 at 100M rows) is
written to disk, then ``capscale analyze STORE --stream --workers N`` runs in a fresh process (chain, correlations,
summary, figures), timed, with the peak resident memory of the whole process tree (the command and its worker
processes, summed, sampled every 0.1 s with psutil when it is installed; else the largest single process from
``getrusage``). The in-memory path (``--in-memory``) runs beside it up to ``--in-memory-max`` rows. The chain's
own throughput (:func:`capscale.analysis.chain.compute` on one shard, one core) is measured in this process.
Writes a text report, a JSON file and a figure of time and memory against rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from capscale.benchmarks import emit_report

ROWS_AT_FULL = 100_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", default="1e6,1e7,1e8", help="comma-separated store sizes in per-choice rows "
                   "(default 1e6,1e7,1e8)")
    p.add_argument("--checkpoints", type=int, default=500, help="checkpoints in the family (default 500)")
    p.add_argument("--workers", type=int, default=2, help="--workers of the streamed run (default 2)")
    p.add_argument("--in-memory-max", type=float, default=1e7,
                   help="also run --in-memory up to this many rows (default 1e7; 0: never)")
    p.add_argument("--work-dir", default=None, help="where stores and results go (default: a temporary folder, "
                   "removed afterwards); needs about 25 bytes per row")
    p.add_argument("--keep", action="store_true", help="keep the stores and results")
    p.add_argument("--no-figures", action="store_true", help="run analyze with --no-figures")
    p.add_argument("--out", default=None, help="write the report here (.txt; a .json and --figure beside it)")
    p.add_argument("--figure", default=None, help="PNG of wall time and peak memory against rows")
    p.add_argument("--stage", choices=list(STAGES), default="analyze",
                   help="what runs on each store: analyze (default; --stream vs --in-memory), mass (capscale mass "
                   "--final-only, read task by task, vs the same store read whole into memory) or emergence "
                   "(capscale emergence --all-tasks --B 200, task by task vs in memory) or validate "
                   "(store.validate_path, by task vs the whole store)")


#: Stages the benchmark can time: the streamed (task-by-task) command's flags and, for the in-memory run, the
#: Python that reads the whole store first and calls the same stage on the DataFrame.
STAGES: dict[str, dict[str, Any]] = {
    "analyze": {"streamed": ["--stream"], "in_memory": ["--in-memory"]},
    "mass": {"streamed": ["--final-only", "--no-figures", "--draws", "100"],
             "in_memory": ("from capscale.data import store; from capscale.pipelines import mass; "
                           "mass.run(store.read({store!r}), mass.Options(out={out!r}, final_only=True, "
                           "figures=False, draws=100))")},
    "emergence": {"streamed": ["--all-tasks", "--B", "200", "--figures", "none", "--quiet"],
                  "in_memory": ("from capscale.data import store; from capscale.pipelines import emergence; "
                                "emergence.run(store.read({store!r}, validate_store=False), emergence.Options("
                                "out={out!r}, B=200, figures='none'))")},
    "validate": {"streamed": ("from capscale.data import store; "
                              "print(store.validate_path({store!r}, by_task=True))"),
                 "in_memory": ("from capscale.data import store; "
                               "print(store.validate_path({store!r}, by_task=False))")},
}


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall time (s), exit code, peak RSS of the process tree (bytes) and of its largest process."""
    import resource

    try:
        import psutil  # noqa: F401

        have_psutil = True
    except ImportError:  # pragma: no cover - psutil comes with Ray; without it only the largest process is known
        have_psutil = False
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            stop.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    if have_psutil:
        th.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    if have_psutil:
        th.join()
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {"wall_s": wall, "rc": proc.returncode, "peak_tree_bytes": peak[0] if have_psutil else None,
            "peak_largest_process_bytes": largest if largest > before * 1024 else None, "output": output}


def _chain_throughput(store_dir: Path, repeats: int = 3) -> dict[str, float]:
    """chain.compute rows/s on the store's largest shard (one core), and the whole pass-1 job's (read, validate,
    chain, serialise)."""
    from capscale.analysis import chain
    from capscale.data import store
    from capscale.pipelines import _stream

    f = max(store_dir.glob("*.parquet"), key=lambda p: p.stat().st_size)
    df = store.read_shard(f, columns=_stream.CHAIN_COLUMNS)
    best = min(_timed(lambda: chain.compute(df)) for _ in range(repeats))
    job = _stream.ShardJob(source=str(f), dest=str(store_dir / "_unused.parquet"))
    best_job = min(_timed(lambda: _stream.chain_shard(job)) for _ in range(repeats))
    return {"shard_rows": len(df), "chain_rows_per_s": len(df) / best, "job_rows_per_s": len(df) / best_job}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> int:
    import tempfile

    from capscale.testing import SCALE_ITEMS, sharded_store

    sizes = [int(float(x)) for x in args.rows.split(",") if x.strip()]
    args.load_start = _load()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="capscale-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    stage = getattr(args, "stage", "analyze")
    cli = [sys.executable, "-m", "capscale.cli", stage]
    runs: list[dict[str, Any]] = []
    throughput: dict[str, float] = {}
    try:
        for n in sizes:
            # rows = checkpoints x items x K: the default family's item counts, scaled to n rows
            factor = n / (args.checkpoints * 4 * sum(SCALE_ITEMS))
            items = tuple(max(1, int(round(i * factor))) for i in SCALE_ITEMS)
            st = work / f"store-{n}"
            if st.exists():
                shutil.rmtree(st)
            t0 = time.perf_counter()
            info = sharded_store(st, n_checkpoints=args.checkpoints, items=items)
            gen = time.perf_counter() - t0
            if n == max(sizes) and stage == "analyze":
                throughput = _chain_throughput(st)
            base = {"rows": info["rows"], "shards": info["shards"], "store_bytes": info["bytes"],
                    "items_per_task": items, "checkpoints": info["checkpoints"], "generate_s": gen}
            modes = [("streamed", _stage_command(stage, "streamed", cli, st, args))]
            if n <= args.in_memory_max:
                modes.append(("in-memory", _stage_command(stage, "in-memory", cli, st, args)))
            for mode, (cmd, shown) in modes:
                out = work / f"{stage}-{n}-{mode}"
                if out.exists():
                    shutil.rmtree(out)
                cmd = [c.replace("{OUT}", str(out)) for c in cmd]
                m = measure(cmd, env)
                rec = {**base, "mode": mode, "stage": stage, "command": shown,
                       **{k: v for k, v in m.items() if k != "output"}}
                if m["rc"] == 0 and stage == "analyze":
                    a = json.loads((out / "analysis.json").read_text())
                    rec["items"] = a["items"]
                    rec["stage_seconds"] = a.get("streaming", {}).get("seconds")
                    rec["figures"] = len(a.get("figures", []))
                else:
                    rec["error"] = m["output"][-2000:]
                runs.append(rec)
                if args.out:  # after every run: a long benchmark that is stopped keeps what it measured
                    from capscale._io import write_json

                    write_json(Path(args.out).with_suffix(".json"), {"runs": runs, "partial": True}, indent=2)
                print(f"{mode:9s} rows={info['rows']:>11,} wall={m['wall_s']:7.1f} s  "
                      f"peak tree RSS={_gb(m['peak_tree_bytes'])} rc={m['rc']}", flush=True)
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
            if not args.keep:
                shutil.rmtree(st, ignore_errors=True)
    finally:
        if not args.keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    lines = report_lines(args, runs, throughput)
    emit_report(lines, args.out)
    if args.out:
        from capscale._io import write_json

        write_json(Path(args.out).with_suffix(".json"), {"runs": runs, "chain_throughput": throughput,
                                                         "machine": _machine(getattr(args, "load_start", None))},
                   indent=2)
    if args.figure:
        figure(runs, args.figure)
    return 0 if all(r["rc"] == 0 for r in runs) else 1


def _stage_command(stage: str, mode: str, cli: list[str], st: Path, args: argparse.Namespace) -> tuple[list[str], str]:
    """The command line of one run (``{OUT}`` stands for the output folder) and how the report shows it."""
    spec = STAGES[stage]
    if stage == "analyze":
        flags = (spec["streamed"] + ["--workers", str(args.workers)] if mode == "streamed" else spec["in_memory"])
        flags += ["--quiet"] + (["--no-figures"] if args.no_figures else [])
        return [*cli, str(st), "--out", "{OUT}", *flags], "capscale analyze STORE --out OUT " + " ".join(flags)
    if mode == "streamed" and isinstance(spec["streamed"], list):
        return ([*cli, str(st), "--out", "{OUT}", *spec["streamed"]],
                f"capscale {stage} STORE --out OUT " + " ".join(spec["streamed"]))
    key = "streamed" if mode == "streamed" else "in_memory"
    code = spec[key].format(store=str(st), out="{OUT}")
    return [sys.executable, "-c", code], "python -c " + repr(spec[key].format(store="STORE", out="OUT"))


def _gb(b: float | None) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def _load() -> str:
    """The 1, 5 and 15 minute load averages (as ``uptime`` prints them)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def _machine(load_start: str | None = None) -> str:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    start = f"load average (1/5/15 min) at the start {load_start}, " if load_start else "load average (1/5/15 min) "
    return (f"{platform.machine()} cores={os.cpu_count()} python={platform.python_version()} numpy={np.__version__} "
            f"pandas={pd.__version__} pyarrow={pa.__version__} {start}at the end {_load()}")


def report_lines(args: argparse.Namespace, runs: list[dict[str, Any]], thr: dict[str, float]) -> list[str]:
    """The text report: one line per run, the targets and whether they were met."""
    stage = getattr(args, "stage", "analyze")
    lines = ["# capscale bench analyze-scale" + ("" if stage == "analyze" else f" --stage {stage}"),
             f"# command: capscale bench analyze-scale --rows {args.rows} --checkpoints {args.checkpoints} "
             f"--workers {args.workers} --in-memory-max {args.in_memory_max:g}"
             + (" --no-figures" if args.no_figures else "") + ("" if stage == "analyze" else f" --stage {stage}"),
             f"# machine: {_machine(getattr(args, 'load_start', None))}",
             f"# peak RSS: the {stage} process and its workers, summed (psutil, sampled every 0.1 s)"
             + ("" if stage == "analyze" else "; 'streamed' = the store read from disk task by task, 'in-memory' = "
                "read whole with capscale.data.store.read first"),
             f"{'mode':9s} {'rows':>11s} {'shards':>6s} {'items/task':>24s} {'wall s':>8s} {'rows/s':>11s} "
             f"{'peak RSS':>10s}  stages (s)"]
    for r in runs:
        rate = r["rows"] / r["wall_s"] if r["rc"] == 0 else float("nan")
        stages = " ".join(f"{k}={v:.0f}" for k, v in (r.get("stage_seconds") or {}).items())
        lines.append(f"{r['mode']:9s} {r['rows']:>11,} {r['shards']:>6d} {str(list(r['items_per_task'])):>24s} "
                     f"{r['wall_s']:8.1f} {rate:11,.0f} {_gb(r['peak_tree_bytes']):>10s}  {stages}"
                     + ("" if r["rc"] == 0 else f"  FAILED rc={r['rc']}"))
    if thr:
        lines.append(f"chain.compute on one {thr['shard_rows']:,}-row shard, one core: {thr['chain_rows_per_s']:,.0f} "
                     f"rows/s; the whole pass-1 job (read 13 of 16 columns, validate, chain, serialise): "
                     f"{thr['job_rows_per_s']:,.0f} rows/s")
    streamed = sorted((r for r in runs if r["mode"] == "streamed" and r["rc"] == 0), key=lambda r: r["rows"])
    for r in streamed:
        mem = next((m for m in runs if m["mode"] == "in-memory" and m["rows"] == r["rows"] and m["rc"] == 0), None)
        if mem is not None and stage != "analyze":
            lines.append(f"{r['rows']:,} rows: {stage} from disk task by task {r['wall_s']:.1f} s, "
                         f"{_gb(r['peak_tree_bytes'])}; whole store in memory {mem['wall_s']:.1f} s, "
                         f"{_gb(mem['peak_tree_bytes'])} (x{(mem['peak_tree_bytes'] or 0) / max(1, r['peak_tree_bytes'] or 1):.1f} "
                         "the memory)")
    big = [r for r in streamed if r["rows"] >= ROWS_AT_FULL and stage == "analyze"]
    if big:
        r = big[-1]
        ok_t, ok_m = r["wall_s"] <= 900, (r["peak_tree_bytes"] or 0) <= 4 * 2**30
        lines.append(f"target 100M rows in <= 15 min: {'met' if ok_t else 'NOT met'} ({r['wall_s'] / 60:.1f} min); "
                     f"peak RSS <= 4 GB: {'met' if ok_m else 'NOT met'} ({_gb(r['peak_tree_bytes'])})")
    if thr:
        lines.append(f"target chain >= 1M rows/s per core: {'met' if thr['chain_rows_per_s'] >= 1e6 else 'NOT met'} "
                     f"(chain.compute {thr['chain_rows_per_s'] / 1e6:.2f}M rows/s)")
    if len(streamed) >= 2:
        a, b = streamed[0], streamed[-1]
        growth = (b["wall_s"] / a["wall_s"]) / (b["rows"] / a["rows"])
        mem = (b["peak_tree_bytes"] or 0) / max(1, a["peak_tree_bytes"] or 1)
        lines.append(f"scaling {a['rows']:,} -> {b['rows']:,} rows (x{b['rows'] / a['rows']:.0f}): time x"
                     f"{b['wall_s'] / a['wall_s']:.1f} ({growth:.2f} of linear), peak memory x{mem:.2f}")
    return lines


def figure(runs: list[dict[str, Any]], path: str) -> None:
    """Wall time and peak memory against rows, streamed and in memory (log-log); the targets of ``analyze``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for mode, colour in (("streamed", "#0072B2"), ("in-memory", "#D55E00")):
        rs = sorted((r for r in runs if r["mode"] == mode and r["rc"] == 0), key=lambda r: r["rows"])
        if not rs:
            continue
        x = [r["rows"] for r in rs]
        axes[0].plot(x, [r["wall_s"] for r in rs], "o-", color=colour, label=mode)
        axes[1].plot(x, [(r["peak_tree_bytes"] or 0) / 2**30 for r in rs], "o-", color=colour, label=mode)
    stage = next((r.get("stage", "analyze") for r in runs), "analyze")
    if stage == "analyze":
        axes[0].axhline(900, color="grey", ls="--", lw=1)
        axes[0].text(1e6, 900, " 15 min target", va="bottom", fontsize=8, color="grey")
        axes[1].axhline(4, color="grey", ls="--", lw=1)
        axes[1].text(1e6, 4, " 4 GB target", va="bottom", fontsize=8, color="grey")
    for ax, label in zip(axes, ("wall time (s)", "peak RSS, process tree (GiB)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("per-choice rows")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    what = {"analyze": "capscale analyze", "mass": "capscale mass --final-only (streamed: read task by task)",
            "emergence": "capscale emergence --all-tasks (streamed: read task by task)",
            "validate": "store.validate_path (streamed: by task)"}.get(stage, stage)
    fig.suptitle(f"{what} at family scale (2 cores)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
