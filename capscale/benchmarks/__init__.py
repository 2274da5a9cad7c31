"""Benchmarks, one module per subject, run as ``capscale bench NAME`` or ``python -m capscale.benchmarks.NAME``.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Benchmarks compare against the
peer (lm-eval, a local executor, ...) in the same run on the same machine and report ratios; their
outputs are committed under ``results/bench/``. Tests never assert timings.
"""


def emit_report(lines: list[str], out: str | None) -> str:
    """Print a benchmark's report and, with ``out``, write it there atomically; returns the text."""
    import os
    import tempfile

    text = "\n".join(lines)
    print(text)
    if out:
        d = os.path.dirname(os.path.abspath(out))
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="_tmp.", dir=d)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    return text
