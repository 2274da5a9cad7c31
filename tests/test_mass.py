"""Tests of capscale.analysis.mass: per-item mass laws, pooling, accuracy from masses, bad input, CLI, predictor."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capscale.analysis import chain, mass
from capscale.analysis.predict import MassPredictor
from capscale.testing import simulate_store


@pytest.fixture(scope="module")
def planted():
    """600 items, 4 choices, 7 models; the largest (10^22 FLOPs) is held out."""
    sim, truth = simulate_store(n_items=600, seed=11, return_truth=True)
    train = sim[sim["model_id"] != "sim-m6"]
    tf = mass.fit(train)["sim"]
    held = chain.compute(sim[sim["model_id"] == "sim-m6"])
    return sim, truth, tf, held


def test_recovers_planted_slopes(planted):
    _, truth, tf, _ = planted
    ft = mass.fits_table(tf)
    c = ft[ft["quantity"] == "correct"].set_index("doc_id")
    tc = truth[truth["is_correct"]].set_index("doc_id").reindex(c.index)
    assert np.corrcoef(c["slope"], tc["slope"])[0, 1] >= 0.9
    inc = ft[ft["quantity"] == "incorrect"].set_index(["doc_id", "choice_idx"])
    ti = truth[~truth["is_correct"]].set_index(["doc_id", "choice_idx"]).reindex(inc.index)
    assert np.corrcoef(inc["slope"], ti["slope"])[0, 1] >= 0.9
    # pooled slopes are at least as close to the truth as per-item least squares
    assert np.mean((c["slope"] - tc["slope"]) ** 2) <= np.mean((c["slope_ols"] - tc["slope"]) ** 2) + 1e-12


def test_predicts_heldout_accuracy_within_two_points(planted):
    _, _, tf, held = planted
    pr = mass.predict_task(tf, 22.0)
    obs = held[["acc", "p_choices_correct", "brier"]].mean()
    assert abs(pr["acc"].value - obs["acc"]) < 0.02
    assert abs(pr["p_choices"].value - obs["p_choices_correct"]) < 0.02
    assert abs(pr["brier"].value - obs["brier"]) < 0.01
    for p in pr.values():
        assert p.lower <= p.value <= p.upper
    assert pr["acc"].lower <= obs["acc"] <= pr["acc"].upper
    assert any("extrapolating" in w for w in pr["acc"].warnings)


def test_residual_correlation_is_estimated_not_zero():
    # shared item-model noise 0.5, per-choice noise 0.3: corr between any two choices = 0.25 / 0.34
    sim = simulate_store(n_items=400, seed=2, item_sd=0.5, choice_sd=0.3)
    tf = mass.fit(sim)["sim"]
    want = 0.25 / 0.34
    assert abs(tf.corr_ci - want) < 0.1
    assert abs(tf.corr_ii - want) < 0.1
    assert tf.rho_pooled > 0.4
    # the margin variance uses it: far smaller than with independent correct and competitor
    pi = mass.predict_items(tf, 21.0)
    indep = np.sqrt(pi["sd_correct"] ** 2 + pi["sd_max_incorrect"] ** 2)
    assert (pi["sd_margin"] < indep).mean() > 0.9


def test_noise_free_laws_give_exact_softmax_metrics():
    """Exactly linear per-choice logliks: predictions equal the chain metrics of the extrapolated lines."""
    rows = []
    slopes = {0: ([-6.0, 1.0], [-5.0, 0.2], [-7.0, 0.5]), 1: ([-4.0, 0.3], [-4.5, 1.2], [-9.0, 0.1])}
    xs = [19.0, 19.5, 20.0, 20.5, 21.0]
    for m, x in enumerate(xs + [22.0]):
        for doc, lines in slopes.items():
            for ci, (a, b) in enumerate(lines):
                rows.append(dict(model_id=f"m{m}", family="f", params=m + 1, tokens=1, compute=10**x, task="t",
                                 doc_id=doc, choice_idx=ci, is_correct=ci == 0, loglik=a + b * (x - 20.0)))
    df = pd.DataFrame(rows)
    tf = mass.fit(df[df["model_id"] != "m5"])["t"]
    assert all((g.k == 0).all() for g in tf.groups.values())  # exactly linear: no saturation chosen
    pr = mass.predict_task(tf, 22.0, n_draws=50)
    obs = chain.compute(df[df["model_id"] == "m5"])[["acc", "p_choices_correct", "brier"]].mean()
    assert pr["acc"].value == pytest.approx(obs["acc"], abs=1e-9)
    assert pr["acc_pair"].value == pytest.approx(obs["acc"], abs=1e-9)
    assert pr["p_choices"].value == pytest.approx(obs["p_choices_correct"], abs=1e-5)
    assert pr["brier"].value == pytest.approx(obs["brier"], abs=1e-5)
    ft = mass.fits_table(tf)
    c = ft[(ft["quantity"] == "correct")].set_index("doc_id")
    assert c.loc[0, "slope"] == pytest.approx(1.0, abs=1e-6)
    assert c.loc[1, "slope"] == pytest.approx(0.3, abs=1e-6)


def test_saturating_form_chosen_for_saturating_items():
    sim = simulate_store(n_items=300, seed=5, saturation=0.8, x=tuple(np.linspace(19, 22, 8)),
                              item_sd=0.1, choice_sd=0.1)
    tf = mass.fit(sim)["sim"]
    assert tf.groups["correct"].k_task > 0
    assert (tf.groups["correct"].k > 0).mean() > 0.9
    lin = mass.fit(simulate_store(n_items=300, seed=5, x=tuple(np.linspace(19, 22, 8))))["sim"]
    assert lin.groups["correct"].k_task == 0.0


def test_trajectories_golden_values():
    df = pd.DataFrame(dict(model_id="m", family="f", params=1, tokens=1, task="t", doc_id=0,
                           choice_idx=[0, 1, 2, 3], is_correct=[False, True, False, False],
                           loglik=[-2.0, -1.0, -3.0, -4.0]))
    tr = mass.trajectories(df).set_index(["quantity", "choice_idx"])["value"]
    assert tr[("correct", -1)] == -1.0
    assert tr[("lse_incorrect", -1)] == pytest.approx(-1.592394, abs=1e-6)  # chain.md §2.1
    assert tr[("max_incorrect", -1)] == -2.0
    assert tr[("margin", -1)] == 1.0
    assert sorted(tr.loc["incorrect"].index) == [0, 2, 3]


def test_bad_input_counted_not_dropped():
    sim = simulate_store(n_items=40, seed=3, x=(19.0, 20.0, 21.0, 22.0))
    sim["doc_id"] = sim["doc_id"].astype(int)
    # item 0: only one model; item 1: constant trajectories; item 2: -inf loglik of an incorrect choice
    # for one model; item 3: the correct choice is -inf for every model
    sim = sim[~((sim["doc_id"] == 0) & (sim["model_id"] != "sim-m0"))].copy()
    sim.loc[sim["doc_id"] == 1, "loglik"] = -5.0 - sim.loc[sim["doc_id"] == 1, "choice_idx"]
    sim.loc[(sim["doc_id"] == 2) & (sim["choice_idx"] == 1) & (sim["model_id"] == "sim-m1"), "loglik"] = -np.inf
    sim.loc[(sim["doc_id"] == 3) & (sim["is_correct"]), "loglik"] = -np.inf
    tf = mass.fit(sim)["sim"]
    c = tf.counts
    assert c["n_items"] == 40
    assert c["correct:single_model"] == 1
    assert c["correct:constant"] == 1
    assert c["incorrect:nonfinite_points_excluded"] == 1
    assert c["correct:no_points"] == 1
    ft = mass.fits_table(tf)
    assert ft.loc[(ft["quantity"] == "correct") & (ft["doc_id"] == 0), "status"].item() == "single_model"
    # every item keeps a row; the single-model item still gets a pooled prediction
    assert ft[ft["quantity"] == "correct"]["doc_id"].nunique() == 40
    pi = mass.predict_items(tf, 22.5).set_index("doc_id")
    assert np.isfinite(pi.loc[0, "p_correct"])
    # a gold that was -inf at every model cannot win: counted as wrong, as the observed accuracy does
    assert pi.loc[3, "p_correct"] == 0.0 and pi.loc[3, "status"] == "correct_never_finite"
    pr = mass.predict_task(tf, 22.5, n_draws=50)
    assert all(math.isfinite(p.value) for p in pr.values())
    # the observed accuracy of a model with the same items counts item 3 as 0 too
    obs = chain.compute(sim[sim["model_id"] == "sim-m3"]).set_index("doc_id")
    assert obs.loc[3, "acc"] == 0.0


def test_varying_gold_and_number_of_choices():
    """ARC-like items: gold anywhere, 3 to 5 choices; no phantom (item, choice) rows are fitted."""
    sim = simulate_store(n_items=60, seed=8, n_choices=5)
    k = 3 + sim["doc_id"] % 3
    sim = sim[sim["choice_idx"] < k].copy()
    # move the gold (choice 0) to position doc_id % k by permuting choice indices within an item
    shift = (sim["doc_id"] % (3 + sim["doc_id"] % 3)).to_numpy()
    kk = (3 + sim["doc_id"] % 3).to_numpy()
    sim["choice_idx"] = (sim["choice_idx"].to_numpy() + shift) % kk
    tf = mass.fit(sim)["sim"]
    n_inc = int((~sim["is_correct"]).sum() / sim["model_id"].nunique())
    assert len(tf.groups["incorrect"].keys) == n_inc
    assert "incorrect:no_points" not in tf.counts
    assert sorted(tf.items["n_choices"].unique()) == [3, 4, 5]
    pr = mass.predict_task(tf, 22.0, n_draws=100)
    obs = chain.compute(sim[sim["model_id"] == "sim-m6"])
    assert abs(pr["brier"].value - obs["brier"].mean()) < 0.03


def test_single_model_family_clear_error():
    sim = simulate_store(n_items=10, x=(20.0,))
    with pytest.raises(ValueError, match="at least 2 training models"):
        MassPredictor().fit(pd.DataFrame({"model_id": ["sim-m0"]}), "sim", store=sim)


def test_unpooled_option_and_unknown_task():
    sim = simulate_store(n_items=30, seed=1, x=(19.0, 20.0, 21.0))
    tf = mass.fit(sim, config=mass.MassConfig(pool=False))["sim"]
    assert not tf.groups["correct"].pooled
    assert np.allclose(tf.groups["correct"].beta, tf.groups["correct"].beta_ols)
    with pytest.raises(ValueError, match="not in the store"):
        mass.fit(sim, task="nope")


@settings(max_examples=25, deadline=None)
@given(k=st.floats(0.0, 3.0), x=st.floats(15.0, 25.0))
def test_basis_value_and_slope_at_reference(k, x):
    x_ref = 20.0
    assert float(mass.basis(x_ref, x_ref, k)) == 0.0
    h = 1e-6
    d = (float(mass.basis(x_ref + h, x_ref, k)) - float(mass.basis(x_ref - h, x_ref, k))) / (2 * h)
    assert d == pytest.approx(1.0, rel=1e-4)
    u = float(mass.basis(x, x_ref, k))
    assert u <= x - x_ref + 1e-9  # concave, below its tangent
    if k > 0:
        assert u < 1.0 / k  # bounded: the law saturates


def test_constant_trajectory_has_exact_zero_slope_and_rss():
    """A row whose points are all equal is a horizontal line (no rounding-level RSS entering the prior)."""
    sim = simulate_store(n_items=30, seed=6, x=(19.0, 19.6, 20.5, 21.1, 22.0), saturation=0.7)
    sim.loc[sim["doc_id"] == 4, "loglik"] = -7.3 - 0.1 * sim.loc[sim["doc_id"] == 4, "choice_idx"]
    tf = mass.fit(sim)["sim"]
    g = tf.groups["correct"]
    row = int(np.flatnonzero(g.keys["doc_id"].to_numpy() == 4)[0])
    assert g.status[row] == "constant"
    assert g.beta_ols[row, 0] == -7.3 and g.beta_ols[row, 1] == 0.0
    assert g.s2_ols[row] == 0.0
    assert np.isfinite(g.prior_s2) and g.prior_s2 > 1e-3  # the zero variance is not part of the prior


def test_covariation_statistics():
    # incorrect mass grows faster than the correct mass for most items in the "inverse" scenario
    sim = simulate_store(n_items=300, seed=4, slope_correct=(0.5, 0.3), slope_incorrect=(1.2, 0.3))
    cov = mass.covariation(mass.fit(sim)["sim"])
    assert cov["share_incorrect_faster"] > 0.8
    assert cov["median_slope_lse_incorrect"] > cov["median_slope_correct"]
    assert -1 <= cov["slope_corr_pearson"] <= 1
    assert cov["n_items_with_slopes"] == 300


def test_predictor_and_backtest_contract():
    predict = importlib.import_module("capscale.analysis.predict")
    from capscale.analysis.chain import ladder_from_store

    sim = simulate_store(n_items=120, seed=7)
    with pytest.raises(ValueError, match="needs the per-choice score store"):
        MassPredictor().fit(pd.DataFrame({"model_id": ["a"]}), "sim")
    lad = ladder_from_store(sim)
    res = predict.backtest(lad, "sim", "mass", holdout="largest", store=sim)
    assert len(res) == 1
    r = res[0]
    for key in ("task", "method", "heldout_model", "predicted", "actual", "abs_err", "lower", "upper"):
        assert key in r
    assert r["method"] == "mass" and r["heldout_model"] == "sim-m6"
    assert r["lower"] <= r["predicted"] <= r["upper"]
    assert r["abs_err"] < 0.05
    json.dumps(res)  # JSON-able like the other methods
    p = predict.get_method("mass", n_draws=200).fit(lad, "sim", metric="brier", store=sim)
    pb = p.predict(1e9, 2e10)
    assert isinstance(pb, predict.Prediction) and 0 <= pb.value <= 0.5
    rep = p.report()
    assert rep["method"] == "mass" and rep["metric"] == "brier" and rep["n_draws"] == 200
    json.dumps(rep, allow_nan=True)


def test_mass_predictor_follows_the_predictor_contract():
    from sklearn.base import clone

    from capscale.errors import NotFittedError

    with pytest.raises(TypeError, match="bootstrap"):
        MassPredictor(bootstrap=10)  # options are explicit: an unknown one is an error, not ignored
    p = MassPredictor(seed=3, n_draws=50)
    assert p.get_params() == {"checkpoints": "auto", "config": None, "inflate": True, "level": None,
                              "n_draws": 50, "seed": 3}
    assert clone(p).get_params() == p.get_params() and p.set_params(level=0.8).level == 0.8
    with pytest.raises(NotFittedError, match="predictor 'mass'.*before predict"):
        p.predict(1e9, 2e10)
    with pytest.raises(NotFittedError, match="before report"):
        p.report()
    sim = simulate_store(n_items=30, seed=2)
    from capscale.analysis.chain import ladder_from_store

    p.fit(ladder_from_store(sim), "sim", store=sim)
    assert p.config_.seed == 3 and p.config_.n_draws == 50 and p.config_.interval == 0.8
    assert p.config is None and p.window_ == 1  # the option is not touched; the settings used are config_


def test_cli_mass_outputs(tmp_path):
    from capscale import cli
    from capscale.data import store

    a = simulate_store(n_items=60, seed=1, task="plain")
    b = simulate_store(n_items=40, seed=2, task="wino", n_choices=2)
    b["multiple_input"] = True
    a["multiple_input"] = False
    path = tmp_path / "s.parquet"
    store.write(store.normalize(pd.concat([a, b], ignore_index=True)), path)
    out = tmp_path / "out"
    rc = cli.main(["mass", str(path), "--family", "sim", "--out", str(out), "--draws", "50"])
    assert rc == 0
    for f in ("mass_fits.csv", "mass_predictions.csv", "mass_covariation.csv", "mass_summary.json",
              "mass_scatter_plain.png", "mass_slopes_plain.png", "mass_pred_wino.png"):
        assert (out / f).exists(), f
    summ = json.loads((out / "mass_summary.json").read_text())
    assert list(summ["tasks"]) == ["plain"] and list(summ["multiple_input_tasks"]) == ["wino"]
    preds = pd.read_csv(out / "mass_predictions.csv")
    ho = preds[preds["kind"] == "held-out"]
    assert set(ho["task"]) == {"plain", "wino"} and (ho["model_id"] == "sim-m6").all()
    assert cli.main(["mass", str(path), "--family", "nope", "--out", str(out)]) == 1  # invalid input


def test_predictor_uses_final_checkpoint_of_each_run():
    from capscale.analysis.chain import ladder_from_store
    sim = simulate_store(n_items=30, seed=9, x=(19.0, 19.5, 20.0, 20.5, 21.0, 21.5))
    lad = ladder_from_store(sim)
    # pretend the six models are two runs of three checkpoints each
    lad["run"] = lad["model_id"].map(lambda m: "runA" if int(m[-1]) < 3 else "runB")
    p = MassPredictor().fit(lad, "sim", store=sim)
    assert sorted(p.fit_.models["model_id"]) == ["sim-m2", "sim-m5"]
    p_all = MassPredictor(checkpoints="all").fit(lad, "sim", store=sim)
    assert len(p_all.fit_.models) == 6
    with pytest.raises(ValueError, match="checkpoints must be 'final' or 'all'"):
        MassPredictor(checkpoints="some").fit(lad, "sim", store=sim)
