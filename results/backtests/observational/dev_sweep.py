"""The development sweep that chose observational's defaults (run before the confirmation split).

One configuration per call, on the development split (fit ``compute<=1e22``, hold out ``1e22<compute<3e22``),
bootstrap 0 (point predictions only: the MAE does not depend on the bootstrap)::

    for tf in logit linear; do for g in compute scores; do for k in 1 2 3; do for c in one fit; do
      echo -n "transform=$tf rank=$k given=$g ceiling=$c  "
      .venv/bin/python results/backtests/observational/dev_sweep.py $k $g $c $tf ../shared/data | grep "^observational"
    done; done; done; done > results/backtests/observational/dev_sweep.txt

Columns of the output line: method, pooled MAE (fraction), coverage (meaningless here: no bootstrap), n.
"""

import sys
import warnings

import pandas as pd

from capscale.analysis.predict import backtest
from capscale.data.cross_family import build_cross_family

warnings.simplefilter("ignore")
rank, given, ceil, transform, data = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
t, r = build_cross_family(data)
rows = []
for task in sorted(t.task.unique()):
    try:
        rows += backtest(t, task, "observational", holdout="compute>1e22 and compute<3e22", fit="compute<=1e22",
                         metric=r["metric_per_task"][task], rank=rank, given=given, ceiling=ceil, transform=transform,
                         bootstrap=0)
    except Exception as e:  # noqa: BLE001
        print(task, "FAIL", e)
df = pd.DataFrame(rows)
print(df.groupby("method").agg(mae=("abs_err", "mean"), cov=("covered", "mean"), n=("abs_err", "size")))
print((df.pivot_table(index="task", columns="method", values="abs_err", aggfunc="mean") * 100).round(2))
