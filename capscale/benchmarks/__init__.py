"""Benchmarks, one module per subject, run as ``capscale bench NAME`` or ``python -m capscale.benchmarks.NAME``.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Benchmarks compare against the
peer (lm-eval, a local executor, ...) in the same run on the same machine and report ratios; their
outputs are committed under ``results/bench/``. Tests never assert timings.
"""


def emit_report(lines: list[str], out: str | None) -> str:
    """Print a benchmark's report and, with ``out``, write it there atomically; returns the text."""
    from capscale._io import atomic_write_text

    text = "\n".join(lines)
    print(text)
    if out:
        atomic_write_text(out, text + "\n")
    return text
