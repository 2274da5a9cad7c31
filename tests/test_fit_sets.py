"""Separate fit sets for the two steps of chained methods (``--fit-loss`` / ``--fit-link``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from capscale.analysis import laws, predict
from capscale.data.ladder_table import check_ladder
from capscale.errors import InputError, UsageError

E, A, ALPHA = 1.8, 60.0, 0.1


def _loss(c: float) -> float:
    return E + A * c ** -ALPHA


def _acc(lo: float, shift: float = 0.0) -> float:
    return 1 - 0.75 * math.exp(-0.3 * math.exp(-1.5 * (lo - 2.5 - shift)))


def _ladder(shift_big: float = 0.0) -> pd.DataFrame:
    """4 sizes x 3 multipliers x 4 checkpoints; the link of the two largest sizes is shifted by ``shift_big``."""
    rows = []
    for n in (1e7, 3e7, 1e8, 3e8):
        for mult in (10, 40, 160):
            for j in range(1, 5):
                d = mult * n * j / 4
                lo = _loss(6 * n * d)
                base = dict(model_id=f"r{n:.0e}x{mult}@{j}", run=f"r{n:.0e}x{mult}", family="f", params=n, tokens=d,
                            task="t", chance=0.25)
                rows.append({**base, "metric": "task_loss", "value": lo})
                rows.append({**base, "metric": "acc", "value": _acc(lo, shift_big if n >= 1e8 else 0.0)})
    return check_ladder(pd.DataFrame(rows))


@pytest.mark.parametrize("method", ["ladder_c", "gadre"])
def test_loss_step_fits_only_the_rows_its_query_selects(method):
    lad = _ladder()
    full = predict.get_method(method, bootstrap=0, inflate=False, loss_law="compute").fit(lad, "t")
    sub = predict.get_method(method, bootstrap=0, inflate=False, loss_law="compute",
                             fit_loss="params<=3e7").fit(lad, "t")
    assert full.laws_["step1"].n_points_ == 12
    assert sub.laws_["step1"].n_points_ == 6  # 2 sizes x 3 multipliers
    assert sub.laws_["step2"].n_points_ == full.laws_["step2"].n_points_  # the link keeps every run
    # the planted L(C) holds on the subset too, so the subset's loss law extrapolates like the full one (gadre's
    # final loss is the last checkpoint's, so it recovers the truth; ladder_c's is a trailing moving average)
    st, st_full = sub.predict_steps(1e9, 2e10), full.predict_steps(1e9, 2e10)
    if method == "gadre":
        assert st["pred_loss"] == pytest.approx(_loss(6 * 1e9 * 2e10), rel=2e-3)
    assert st["pred_loss"] == pytest.approx(st_full["pred_loss"], rel=2e-2)


def test_link_step_is_fitted_on_its_own_rows():
    # the two largest sizes follow a shifted link: fitting the link on them alone predicts their accuracy
    lad = _ladder(shift_big=0.3)
    q = "params>=1e8"
    own = predict.get_method("gadre", bootstrap=0, inflate=False, loss_law="compute", fit_link=q).fit(lad, "t")
    both = predict.get_method("gadre", bootstrap=0, inflate=False, loss_law="compute").fit(lad, "t")
    assert own.laws_["step2"].n_points_ == 24 and both.laws_["step2"].n_points_ == 48
    lo = _loss(6 * 1e9 * 4e10)
    truth = _acc(lo, 0.3)
    assert abs(own.predict_steps(1e9, 4e10, actual_loss=lo)["step2_only"] - truth) < 0.01
    assert abs(both.predict_steps(1e9, 4e10, actual_loss=lo)["step2_only"] - truth) > \
        abs(own.predict_steps(1e9, 4e10, actual_loss=lo)["step2_only"] - truth)


def test_fit_sets_reach_the_chained_members_of_the_ensemble_and_the_bootstrap():
    lad = _ladder()
    ens = predict.get_method("ensemble", bootstrap=5, fit_loss="params<=3e7").fit(lad, "t")
    assert ens.laws_["ladder_c.step1"].n_points_ == 6 and ens.laws_["sigmoid.acc"].n_points_ == 12
    p = ens.predict(1e9, 4e10)
    assert p.lower <= p.value <= p.upper and np.isfinite(p.value)


def test_fit_set_errors_are_clear():
    lad = _ladder()
    with pytest.raises(InputError, match=r"--fit-loss 'params>1e12' selects no fitting row of task 't'"):
        predict.get_method("gadre", bootstrap=0, fit_loss="params>1e12").fit(lad, "t")
    one = "run == 'r1e+07x10'"
    with pytest.raises(laws.FitInputError, match=r"--fit-loss \"run == 'r1e\+07x10'\" leaves 1 run"):
        predict.get_method("gadre", bootstrap=0, fit_loss=one).fit(lad, "t")
    # multiplier is per row: the first checkpoint of the 40x run has 10 tokens per parameter
    with pytest.raises(laws.FitInputError, match=r"selects 1 size\(s\) \(2 run\(s\)\) of them: compute_law"):
        predict.get_method("gadre", bootstrap=0, loss_law="compute",
                           fit_loss="params<=1e7 and multiplier<=10").fit(lad, "t")
    with pytest.raises(UsageError, match="not a valid query"):
        predict.get_method("ladder", bootstrap=0, fit_link="nosuchcolumn>1").fit(lad, "t")
    with pytest.raises(UsageError, match="--fit-loss applies to the chained methods"):
        predict.fit_method(lad, "t", "sigmoid", fit_loss="params<=3e7", bootstrap=0)


def test_backtest_passes_fit_sets_through():
    lad = _ladder()
    rows = predict.backtest(lad, "t", "gadre", holdout="largest", fit_loss="params<=1e7 or multiplier>=40",
                            bootstrap=0, loss_law="compute")
    assert len(rows) == 3 and all(np.isfinite(r["predicted"]) for r in rows)
