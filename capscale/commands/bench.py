"""``capscale bench NAME``: run one of the benchmarks in :mod:`capscale.benchmarks`."""

from __future__ import annotations

import argparse
import importlib

# Command name -> benchmark module under capscale.benchmarks; each exposes add_arguments(parser) and run(args).
BENCHMARKS = {
    "chain": "chain",
    "scoring": "scoring",
    "gpu-check": "gpu_check",
    "emergence": "emergence",
    "emergence-calibration": "emergence_calibration",
    "ray_executor": "ray_executor",
    "analyze-scale": "analyze_scale",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (outputs belong under results/bench/)",
                       description="Run a benchmark that compares capscale with its peer on this machine.")
    bsub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, module in BENCHMARKS.items():
        mod = importlib.import_module(f"capscale.benchmarks.{module}")
        bp = bsub.add_parser(name, help=(mod.__doc__ or name).strip().splitlines()[0],
                             description=(mod.__doc__ or "").strip())
        mod.add_arguments(bp)
        bp.set_defaults(func=mod.run)
