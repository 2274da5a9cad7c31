"""Over-training in the loss law: L(C, M) (Gadre et al. 2024) recovered from planted runs; which law step 1 uses."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from capscale.analysis import laws, predict
from capscale.analysis.predict._methods import resolve_loss_law
from capscale.analysis.predict._runs import Run
from capscale.data.ladder_table import check_ladder

TRUE = {"a": 3.0, "b": 4.0, "eta": 0.12, "E": 1.7}


def loss(c, m):
    return TRUE["E"] + (math.exp(TRUE["a"]) * m ** TRUE["eta"] + math.exp(TRUE["b"]) * m ** -TRUE["eta"]) * c ** -TRUE["eta"]


def test_compute_multiplier_law_recovers_planted_parameters():
    n = np.repeat([1e8, 3e8, 1e9, 3e9], 4)
    m = np.tile([10.0, 20.0, 80.0, 320.0], 4)
    c = 6 * n * n * m
    y = np.array([loss(ci, mi) for ci, mi in zip(c, m)])
    law = laws.ComputeMultiplierLaw().fit(np.c_[c, m], y)
    for k, v in TRUE.items():
        assert law.params_[k] == pytest.approx(v, rel=2e-2, abs=2e-2), k
    # the over-trained target (M = 500) differs from what L(C) alone would say at equal compute
    assert law.predict([[6 * 7e9 * 7e9 * 500, 500.0]])[0] == pytest.approx(loss(6 * 7e9 * 7e9 * 500, 500), rel=1e-3)


def _run(n, m):
    return Run(f"r{n}x{m}", n, np.array([m * n]), np.array([0.5]), np.array([1.0]))


def test_auto_loss_law_needs_multipliers_at_a_fixed_size():
    spread = [_run(n, m) for n in (1e8, 1e9) for m in (10, 20, 80)]
    assert resolve_loss_law("auto", spread) == "compute_multiplier"
    one_d = [_run(n, 3e11 / n) for n in (1e8, 3e8, 1e9, 3e9, 1e10)]  # Pythia-like: one D, M collinear with C
    assert resolve_loss_law("auto", one_d) == "compute"
    assert resolve_loss_law("nd", one_d) == "nd"
    with pytest.raises(ValueError, match="loss_law must be one of"):
        resolve_loss_law("chinchilla", one_d)


def _ladder():
    rows = []
    for n in (1e7, 3e7, 1e8, 3e8):
        for mult in (10, 40, 160):
            for j in range(1, 5):
                d = mult * n * j / 4
                c = 6 * n * d
                lo = loss(c, d / n)
                base = dict(model_id=f"r{n:.0e}x{mult}@{j}", run=f"r{n:.0e}x{mult}", family="f", params=n, tokens=d,
                            task="t", chance=0.25)
                rows.append({**base, "metric": "task_loss", "value": lo})
                rows.append({**base, "metric": "acc", "value": 1 - 0.75 * math.exp(-0.3 * math.exp(-1.5 * (lo - 2.5)))})
    return check_ladder(pd.DataFrame(rows))


def test_gadre_uses_the_overtraining_form_and_ladder_can_be_told():
    lad = _ladder()
    g = predict.get_method("gadre", bootstrap=0).fit(lad, "t")
    assert g.loss_law_ == "compute_multiplier" and isinstance(g.laws_["step1"], laws.ComputeMultiplierLaw)
    st = g.predict_steps(1e9, 5e11)  # heavily over-trained target, M = 500
    assert st["pred_loss"] == pytest.approx(loss(6 * 1e9 * 5e11, 500), rel=5e-3)
    c = predict.get_method("gadre", bootstrap=0, loss_law="compute").fit(lad, "t")
    assert isinstance(c.laws_["step1"], laws.ComputeLaw)
    lc = predict.get_method("ladder_c", bootstrap=0, loss_law="compute_multiplier").fit(lad, "t")
    assert isinstance(lc.laws_["step1"], laws.ComputeMultiplierLaw)
    nd = predict.get_method("ladder", bootstrap=0).fit(lad, "t")
    assert isinstance(nd.laws_["step1"], laws.ChinchillaND)
