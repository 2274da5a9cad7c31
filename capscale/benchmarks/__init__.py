"""Benchmarks, one module per subject, run as ``capscale bench NAME`` or ``python -m capscale.benchmarks.NAME``.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Benchmarks compare against the
peer (lm-eval, a local executor, ...) in the same run on the same machine and report ratios; their
outputs are committed under ``results/bench/``. Tests never assert timings.
"""
