"""Curve forms (capscale.analysis.laws): recovery on planted data, bad input, bounds, serialisation, OLMo golden values."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capscale.analysis import laws

# ---------------------------------------------------------------------------------------------
# planted data
# ---------------------------------------------------------------------------------------------


def test_compute_law_recovers_planted_curve_and_round_trips():
    c = np.logspace(18, 21, 10)
    y = 1.7 + math.exp(6.0) / c**0.15
    law = laws.ComputeLaw().fit(c, y)
    assert law.converged_
    assert law.predict([1e23])[0] == pytest.approx(1.7 + math.exp(6.0) / 1e23**0.15, rel=2e-3)
    back = laws.from_dict(json.loads(json.dumps(law.to_dict())))
    np.testing.assert_allclose(back.predict([1e22, 1e24]), law.predict([1e22, 1e24]))
    assert back.params_ == law.params_


def test_chinchilla_nd_recovers_planted_predictions():
    rng = np.random.default_rng(0)
    n = np.repeat([1e8, 3e8, 1e9, 3e9], 3)
    d = n * np.tile([20.0, 50.0, 100.0], 4)
    p = [5.0, 7.0, 0.3, 0.3, 1.5]
    y = np.exp(p[0] - p[2] * np.log(n)) + np.exp(p[1] - p[3] * np.log(d)) + p[4]
    law = laws.ChinchillaND().fit(np.c_[n, d], y * (1 + 1e-5 * rng.normal(size=len(y))))
    truth = math.exp(5) / 1e10**0.3 + math.exp(7) / 2e11**0.3 + 1.5
    assert law.predict([[1e10, 2e11]])[0] == pytest.approx(truth, rel=5e-3)


def test_ladder_sigmoid_recovers_and_flags_bound():
    x = np.linspace(0.6, 1.6, 60)
    y = -0.7 / (1 + np.exp(-5.0 * (x - 1.0))) + 1.0
    law = laws.LadderSigmoid(chance=0.25).fit(x, y)
    assert law.params_["k"] == pytest.approx(5.0, rel=1e-3)
    assert law.params_["L0"] == pytest.approx(1.0, rel=1e-3)
    # b = 1 is planted: the fit lands on the bound and says so
    assert law.at_bound_["b"]
    assert any("parameter b" in w and "bound" in w for w in law.warnings_)
    se = law.predict_se([0.5, 1.0])
    assert np.all(np.isfinite(se)) and np.all(se >= 0)
    acc = law.predict([0.9])[0]
    assert law.inverse([acc])[0] == pytest.approx(0.9, abs=1e-6)


def test_ladder_sigmoid_chance_floor():
    x = np.linspace(0.5, 3.0, 50)
    y = (0.25 - 0.9) / (1 + np.exp(-4.0 * (x - 1.5))) + 0.9
    law = laws.LadderSigmoid(chance=0.25, anchor=False, chance_floor=True).fit(x, y)
    assert law.params_["a"] + law.params_["b"] == pytest.approx(0.25)
    assert law.predict([50.0])[0] == pytest.approx(0.25, abs=1e-6)
    assert law.params_["b"] == pytest.approx(0.9, rel=1e-4)


def test_gadre_exp_recovers():
    x = np.linspace(2.0, 4.0, 30)
    y = 0.8 - 2.0 * np.exp(-0.9 * x)
    law = laws.GadreExp().fit(x, y)
    np.testing.assert_allclose(law.predict([1.5, 5.0]), 0.8 - 2.0 * np.exp(-0.9 * np.array([1.5, 5.0])), rtol=1e-4)


def test_obs_sigmoid_recovers_1d():
    s = np.linspace(-3, 3, 25)
    y = 0.9 / (1 + np.exp(-(1.3 * s - 0.4))) + 0.1
    law = laws.ObsSigmoid().fit(s, y)
    assert law.params_["w0"] == pytest.approx(1.3, rel=1e-3)
    assert law.params_["b"] == pytest.approx(0.1, abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(a=st.floats(-0.3, -0.02), b=st.floats(1.0, 10.0), chance=st.sampled_from([0.0, 0.25, 0.5]))
def test_direct_law_exact_on_planted_data(a, b, chance):
    c = np.logspace(19, 22, 6)
    accp = np.exp(-np.exp(a * np.log(c) + b))
    acc = chance + (1 - chance) * accp
    ok = (accp > 1e-6) & (accp < 1 - 1e-6)  # away from round-off at 0 and 1
    if ok.sum() < 3:
        return
    law = laws.DirectLaw(chance=chance).fit(c[ok], acc[ok])
    assert law.params_["a"] == pytest.approx(a, rel=1e-6, abs=1e-9)
    assert law.params_["b"] == pytest.approx(b, rel=1e-6, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(a=st.floats(-2, 2), b=st.floats(-0.5, 0.5))
def test_loglinear_exact(a, b):
    x = np.logspace(18, 22, 5)
    law = laws.LogLinear().fit(x, a + b * np.log10(x))
    assert law.predict([1e24])[0] == pytest.approx(a + 24 * b, abs=1e-8)


def test_direct_law_excludes_points_at_chance_and_says_so():
    c = np.logspace(19, 22, 6)
    acc = np.array([0.24, 0.25, 0.4, 0.5, 0.6, 0.7])
    law = laws.DirectLaw(chance=0.25, labels=[f"m{i}" for i in range(6)]).fit(c, acc)
    assert law.meta_["excluded"] == 2
    assert any("m0" in w and "m1" in w for w in law.warnings_)


def test_fits_are_deterministic():
    c = np.logspace(18, 21, 8)
    y = 2.0 + 300.0 / c**0.12 * (1 + 0.01 * np.sin(np.arange(8)))
    a = laws.ComputeLaw().fit(c, y).to_dict()
    b = laws.ComputeLaw().fit(c, y).to_dict()
    assert a == b


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_too_few_points():
    with pytest.raises(laws.FitInputError, match="2 point.*5 parameters"):
        laws.ChinchillaND().fit([[1e8, 1e9], [2e8, 2e9]], [3.0, 2.9])


def test_nan_named():
    with pytest.raises(laws.FitInputError, match="NaN or infinite y at m2"):
        laws.LogLinear(labels=["m0", "m1", "m2"]).fit([1e18, 1e19, 1e20], [0.3, 0.4, float("nan")])


def test_non_positive_compute_and_loss():
    with pytest.raises(laws.FitInputError, match="non-positive at point 1"):
        laws.ComputeLaw().fit([1e18, 0.0, 1e20, 1e21], [3.0, 2.9, 2.8, 2.7])
    with pytest.raises(laws.FitInputError, match="y must be positive"):
        laws.ComputeLaw().fit([1e18, 1e19, 1e20, 1e21], [3.0, -2.9, 2.8, 2.7])


def test_accuracy_out_of_range():
    with pytest.raises(laws.FitInputError, match="accuracies must lie in"):
        laws.LadderSigmoid().fit([1.0, 1.1, 1.2, 1.3, 1.4], [0.5, 0.4, 1.3, 0.3, 0.2])


def test_unfitted_and_unknown_form():
    with pytest.raises(RuntimeError, match="not fitted"):
        laws.LogLinear().predict([1.0])
    with pytest.raises(ValueError, match="unknown form"):
        laws.from_dict({"form": "nope", "params": {}})


# ---------------------------------------------------------------------------------------------
# OLMo ladder golden values (docs/transforms.md §3.5)
# ---------------------------------------------------------------------------------------------

STEP2_PARAMS = {  # a, L0, k, b (docs/transforms.md §3.5)
    "mmlu": (-0.7421, 0.6160, 4.833, 1.000), "hellaswag": (-0.7301, 0.7667, 12.742, 0.9921),
    "arc_challenge": (-0.7777, 0.7086, 5.911, 1.000), "piqa": (-0.4586, 0.9630, 5.033, 1.000),
}


@pytest.fixture(scope="module")
def olmo(shared_data):
    from capscale.data import published

    path = shared_data / "olmo-ladder"
    if not path.is_dir():
        pytest.skip(f"OLMo ladder data not found at {path}")
    return path, published.load_olmo_ladder(path)


@pytest.mark.shared_data
def test_olmo_ladder_method_reproduces_reference_outputs(olmo):
    from capscale.analysis import predict
    from capscale.data import published

    path, ladder = olmo
    ref1 = pd.read_csv(path / "reference-outputs" / "step1_main.csv").set_index("Task")
    ref2 = pd.read_csv(path / "reference-outputs" / "step2_main.csv").set_index("Task")
    refc = pd.read_csv(path / "reference-outputs" / "chained_main.csv").set_index("Task")
    train, held = predict.split_largest(ladder, 2)
    assert sorted(held["run"].unique()) == ["13B-5T", "7B-4T"]
    for task in published.OLMO_PAPER_TASKS:
        key = published.OLMO_REFERENCE_KEYS[task]
        pr = predict.get_method("ladder", bootstrap=0, inflate=False).fit(train, task, metric="acc_norm")
        t = held[(held["run"] == "13B-5T") & (held["task"] == task)]
        bpb = float(t.loc[t["metric"] == "task_bpb", "value"].iloc[0])
        n, d = float(t["params"].iloc[0]), float(t["tokens"].iloc[0])
        steps = pr.predict_steps(n, d, actual_loss=bpb)
        assert steps["pred_loss"] == pytest.approx(ref1.loc[key, "Pred"], abs=1e-4), task
        assert steps["step2_only"] == pytest.approx(ref2.loc[key, "Pred"], abs=1e-4), task
        assert steps["chained"] == pytest.approx(refc.loc[key, "Pred"], abs=1e-4), task
        assert abs(pr.predict(n, d).value - refc.loc[key, "Pred"]) < 0.005
        assert pr.laws_["step2"].n_points_ == 1401  # 1,401 checkpoints (+ the anchor)
        if task in STEP2_PARAMS:
            got = [pr.laws_["step2"].params_[k] for k in ("a", "L0", "k", "b")]
            np.testing.assert_allclose(got, STEP2_PARAMS[task], rtol=1e-3, atol=1e-4)
    # CSQA's step-1 E lands on its lower bound 0 and is flagged (docs/transforms.md §3.6)
    pr = predict.get_method("ladder", bootstrap=0, inflate=False).fit(train, "csqa", metric="acc_norm")
    assert pr.laws_["step1"].at_bound_["E"]
    assert any("parameter E" in w for w in pr.fit_warnings_)


def test_non_convergence_is_reported():
    c = np.logspace(18, 21, 8)
    y = 1.7 + math.exp(6.0) / c**0.15
    with pytest.warns(laws.FitWarning, match="did not report convergence"):
        law = laws.ComputeLaw(maxiter=1, starts=[[0.0, 0.5, 0.0]]).fit(c, y)
    assert not law.converged_
    assert any("convergence" in w for w in law.to_dict()["warnings"])
