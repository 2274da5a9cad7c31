"""Chain metrics throughput: per-item metrics for N per-choice rows, timed.

Compares :func:`capscale.analysis.chain.compute` (segment reductions over a sorted array) with the
straightforward pandas ``groupby().apply`` of the same formulas (the peer most analysis scripts
use), on a subsample for the peer, and prints rows/s for both and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import TYPE_CHECKING

from capscale.benchmarks import emit_report

if TYPE_CHECKING:
    import pandas as pd


def synthetic_store(n_rows: int, k: int = 4, n_models: int = 10, seed: int = 0) -> pd.DataFrame:
    """A valid store with ``n_rows`` per-choice rows (n_models models, K choices per item)."""
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    n_items = max(1, n_rows // (k * n_models))
    m = np.repeat(np.arange(n_models), n_items * k)
    d = np.tile(np.repeat(np.arange(n_items), k), n_models)
    c = np.tile(np.arange(k), n_models * n_items)
    gold = d % k
    ll = rng.normal(-20, 5, size=len(m)) + 2.0 * m * (c == gold)
    return pd.DataFrame({
        "model_id": pd.Series(m).map(lambda i: f"m{i:02d}").to_numpy(),
        "family": "bench", "params": (10 ** (6 + m / 3)).astype("int64"), "tokens": np.int64(10**9),
        "task": "bench", "doc_id": d, "choice_idx": c, "is_correct": c == gold, "loglik": ll,
        "n_chars": 10 + c, "n_bytes": 10 + c, "is_greedy": False,
    })


def _naive(df: pd.DataFrame) -> pd.DataFrame:
    import numpy as np
    import pandas as pd
    from scipy.special import logsumexp

    def one(g: pd.DataFrame) -> pd.Series:
        ll = g["loglik"].to_numpy()
        y = g["is_correct"].to_numpy()
        lse = logsumexp(ll)
        p = np.exp(ll - lse)
        c = int(np.argmax(y))
        inc = np.delete(ll, c)
        return pd.Series({"log_p_vocab_correct": ll[c], "p_choices_correct": p[c],
                          "acc": float(np.argmax(ll) == c), "brier": float(np.mean((p - y) ** 2)),
                          "log_p_vocab_incorrect": logsumexp(inc), "margin": ll[c] - inc.max()})

    return df.groupby(["model_id", "task", "doc_id"]).apply(one, include_groups=False)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=1_000_000, help="per-choice rows (default 1,000,000)")
    p.add_argument("--peer-rows", type=int, default=20_000,
                   help="rows for the pandas groupby peer, extrapolated to --rows (default 20,000)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    p.add_argument("--out", default=None, help="also write the report to this file")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from capscale.analysis import chain, correlate

    df = synthetic_store(args.rows)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        items = chain.compute(df)
        times.append(time.perf_counter() - t0)
    t_chain = min(times)
    t0 = time.perf_counter()
    correlate.per_item_correlations(items)
    t_corr = time.perf_counter() - t0
    small = synthetic_store(args.peer_rows)
    t0 = time.perf_counter()
    _naive(small)
    t_peer = (time.perf_counter() - t0) * len(df) / len(small)
    lines = [
        "# capscale bench chain",
        f"# command: capscale bench chain --rows {args.rows} --peer-rows {args.peer_rows}",
        f"# machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
        f"python={platform.python_version()} numpy={np.__version__} pandas={pd.__version__}",
        f"rows={len(df)} items={len(items)}",
        f"chain.compute: {t_chain:.3f} s  ({len(df) / t_chain:,.0f} rows/s, best of {args.repeats})",
        f"correlate.per_item_correlations (3 methods x metrics): {t_corr:.3f} s",
        f"pandas groupby-apply peer (extrapolated from {len(small)} rows): {t_peer:.1f} s",
        f"speed-up vs peer: {t_peer / t_chain:.0f}x",
        f"target (< 10 s for 1M rows): {'met' if (t_chain < 10 or len(df) < 1_000_000) else 'NOT met'}",
    ]
    emit_report(lines, args.out)
    return 0
