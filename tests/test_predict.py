"""Predictors, backtests and CV selection (capscale.analysis.predict) and the fit/predict/backtest CLI."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from capscale.analysis import predict
from capscale.cli import main
from capscale.data.ladder_table import check_ladder

SIZES = [1e7, 3e7, 1e8, 3e8, 1e9, 3e9]


def planted_ladder(noise: float = 0.0, seed: int = 0, n_ckpt: int = 8) -> pd.DataFrame:
    """Runs at 20 tokens/param; task_loss = 1.5 + exp(8)/C^0.12 (nats); acc follows the direct law in C."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        for j in range(1, n_ckpt + 1):
            d = 20 * n * j / n_ckpt
            c = 6 * n * d
            loss = 1.5 + math.exp(8.0) / c**0.12
            accp = math.exp(-math.exp(-0.08 * math.log(c) + 3.5))
            acc = 0.25 + 0.75 * accp + noise * rng.normal()
            base = dict(model_id=f"r{n:.0e}@step{j}", family="planted", params=n, tokens=d, step=j, task="t",
                        chance=0.25)
            rows.append({**base, "metric": "acc", "value": acc})
            rows.append({**base, "metric": "task_loss", "value": loss})
    return check_ladder(pd.DataFrame(rows))


def test_prediction_interface_and_determinism():
    lad = planted_ladder(noise=0.003)
    a = predict.get_method("direct", bootstrap=20, seed=3).fit(lad, "t", metric="acc")
    b = predict.get_method("direct", bootstrap=20, seed=3).fit(lad, "t", metric="acc")
    pa, pb = a.predict(1e10, 2e11), b.predict(1e10, 2e11)
    assert isinstance(pa, predict.Prediction)
    assert (pa.value, pa.lower, pa.upper) == (pb.value, pb.lower, pb.upper)
    assert pa.lower <= pa.value <= pa.upper
    assert any("extrapolation" in w for w in pa.warnings)


def test_direct_method_recovers_planted_law():
    lad = planted_ladder()
    tr, ho = predict.split_largest(lad, 1)
    assert set(ho["params"]) == {3e9}
    pr = predict.get_method("direct", bootstrap=0, inflate=False).fit(tr, "t", metric="acc")
    c = 6 * 3e9 * 6e10
    truth = 0.25 + 0.75 * math.exp(-math.exp(-0.08 * math.log(c) + 3.5))
    assert pr.predict(3e9, 6e10).value == pytest.approx(truth, abs=1e-9)


def test_backtest_keys_and_coverage_field():
    lad = planted_ladder(noise=0.002)
    res = predict.backtest(lad, "t", "loglinear", holdout=2, bootstrap=10)
    assert [r["heldout_model"] for r in res] == ["r1e+09", "r3e+09"]
    for r in res:
        assert {"task", "method", "heldout_model", "predicted", "actual", "abs_err", "lower", "upper"} <= set(r)
        assert r["abs_err"] == pytest.approx(abs(r["predicted"] - r["actual"]))
        assert r["covered"] == (r["lower"] <= r["actual"] <= r["upper"])


def test_backtest_never_looks_at_held_out_values():
    lad = planted_ladder(noise=0.002)
    res1 = predict.backtest(lad, "t", "auto", holdout=1, bootstrap=5, candidates=["direct", "loglinear", "sigmoid"])
    wrecked = lad.copy()
    held = wrecked["params"] == 3e9
    wrecked.loc[held & (wrecked["metric"] == "acc"), "value"] = 0.01
    res2 = predict.backtest(wrecked, "t", "auto", holdout=1, bootstrap=5, candidates=["direct", "loglinear", "sigmoid"])
    assert [r["predicted"] for r in res1] == [r["predicted"] for r in res2]
    assert [r["selected"] for r in res1] == [r["selected"] for r in res2]
    assert res2[0]["actual"] == pytest.approx(0.01)


def test_chained_methods_need_a_loss_and_run_with_one():
    lad = planted_ladder()
    acc_only = lad[lad["metric"] == "acc"]
    with pytest.raises(predict.MethodNotApplicable, match="no task loss"):
        predict.get_method("gadre", bootstrap=0).fit(acc_only, "t", metric="acc")
    pr = predict.get_method("ladder_c", bootstrap=0, inflate=False, ladder_window=1).fit(lad, "t", metric="acc")
    p = pr.predict(1e10, 2e11)
    assert 0.25 <= p.value <= 1.0
    steps = pr.predict_steps(1e10, 2e11)
    assert steps["pred_loss"] == pytest.approx(1.5 + math.exp(8.0) / (6 * 1e10 * 2e11) ** 0.12, rel=1e-3)
    # `all` skips nothing here (a loss exists); the ensemble is the median of its members
    ens = predict.get_method("ensemble", bootstrap=0, inflate=False).fit(lad, "t", metric="acc")
    assert math.isfinite(ens.predict(1e10, 2e11).value)


def test_bad_targets_and_inputs():
    lad = planted_ladder()
    pr = predict.get_method("loglinear", bootstrap=0).fit(lad, "t", metric="acc")
    with pytest.raises(ValueError, match="tokens = 0.5 is not a sensible value"):
        pr.predict(1e9, 0.5)
    with pytest.raises(ValueError, match="params"):
        pr.predict(float("nan"), 1e9)
    assert any("outside any sensible range" in w for w in pr.predict(1e15, 1e12).warnings)
    assert any("interpolation" in w for w in pr.predict(3e8, 1e9).warnings)
    with pytest.raises(ValueError, match="no rows for task 'nope'"):
        predict.get_method("loglinear").fit(lad, "nope", metric="acc")
    with pytest.raises(ValueError, match="unknown method"):
        predict.get_method("magic")
    dup = pd.concat([lad, lad.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate"):
        predict.backtest(dup, "t", "loglinear")
    with pytest.raises(ValueError, match="only 6 distinct"):
        predict.split_largest(lad, 6)


def test_two_points_for_three_parameters_is_an_error():
    lad = planted_ladder()
    small = lad[lad["params"] <= 3e7]
    with pytest.raises(ValueError, match="2 point.*3 parameters"):
        predict.get_method("sigmoid", bootstrap=0, inflate=False).fit(small, "t", metric="acc")


def test_store_methods_need_a_store():
    class NeedsStore(predict.LadderMethod):
        name = "needs_store"
        needs_store = True

        def _core(self, runs):
            raise AssertionError("not reached: fit checks for the store first")

    with pytest.raises(predict.MethodNotApplicable, match="needs a score store"):
        NeedsStore().fit(planted_ladder(), "t")
    assert "mass" in predict.METHODS


# --------------------------------------------------------------------------------------------
# The predictor contract (scikit-learn's estimator rules)
# --------------------------------------------------------------------------------------------

LADDER_METHODS = ["loglinear", "direct", "sigmoid", "ladder", "ladder_c", "gadre", "ensemble"]


@pytest.mark.parametrize("name", LADDER_METHODS)
def test_options_are_explicit_and_round_trip(name):
    from sklearn.base import clone

    pr = predict.get_method(name, bootstrap=7, seed=3)
    params = pr.get_params()
    assert params["bootstrap"] == 7 and params["seed"] == 3
    assert set(params) == set(inspect.signature(type(pr).__init__).parameters) - {"self"}
    twin = clone(pr)
    assert twin is not pr and twin.get_params() == params
    assert pr.set_params(seed=11) is pr and pr.seed == 11
    with pytest.raises(ValueError, match="invalid option 'bootstrapp'"):
        pr.set_params(bootstrapp=3)
    with pytest.raises(TypeError, match="n_draws"):
        predict.get_method(name, n_draws=5)


def test_options_are_stored_unchanged_and_fitted_attributes_end_in_underscore():
    pr = predict.get_method("direct", bootstrap=5.0, level=0.8)
    assert pr.bootstrap == 5.0 and isinstance(pr.bootstrap, float)  # not converted by __init__
    before = set(vars(pr))
    pr.fit(planted_ladder(noise=0.002), "t", metric="acc")
    new = {k for k in set(vars(pr)) - before if not k.startswith("_")}
    assert new and all(k.endswith("_") for k in new), new
    assert pr.task_ == "t" and pr.metric_ == "acc" and len(pr.boot_) == 5


@pytest.mark.parametrize("name", LADDER_METHODS)
def test_predict_and_report_before_fit_raise_not_fitted(name):
    from capscale.errors import NotFittedError

    pr = predict.get_method(name)
    with pytest.raises(NotFittedError, match=f"predictor '{name}'.*not fitted.*before predict"):
        pr.predict(1e9, 2e10)
    with pytest.raises(NotFittedError, match="before report"):
        pr.report()
    with pytest.raises(NotFittedError):
        predict.check_is_fitted(pr)  # default: any fitted attribute (ending in _) counts


def test_check_is_fitted_passes_after_fit():
    pr = predict.get_method("loglinear", bootstrap=0).fit(planted_ladder(), "t", metric="acc")
    predict.check_is_fitted(pr)
    predict.check_is_fitted(pr, ("fn_", "laws_"))
    with pytest.raises(AttributeError, match="before report"):  # NotFittedError is also an AttributeError
        predict.check_is_fitted(pr, "nope_", action="report")


def test_predictor_subclass_needs_explicit_options():
    with pytest.raises(TypeError, match="explicit keyword arguments"):
        class Sloppy(predict.LadderMethod):  # noqa: F841
            def __init__(self, **kw):
                super().__init__(**kw)


def test_method_not_applicable_is_a_capscale_error():
    from capscale.errors import CapscaleError

    assert issubclass(predict.MethodNotApplicable, CapscaleError)
    assert issubclass(predict.MethodNotApplicable, ValueError)


def test_registry_is_lazy_and_resolves_every_method():
    code = ("import sys, capscale.analysis.predict as p; "
            "assert 'capscale.analysis.mass' not in sys.modules, 'mass imported at load'; "
            "assert p.method_class('mass').__name__ == 'MassPredictor' and p.MassPredictor is p.method_class('mass')")
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in predict.METHODS:
        assert issubclass(predict.method_class(name), predict.Predictor)
        assert predict.method_class(name).name == name


def test_shared_options_go_to_the_methods_that_have_them():
    assert predict.method_options("mass", {"bootstrap": 5, "seed": 2}) == {"seed": 2}
    assert predict.method_options("ladder", {"bootstrap": 5, "ladder_window": 1}) == {"bootstrap": 5,
                                                                                       "ladder_window": 1}
    with pytest.raises(TypeError, match=r"unknown predictor option\(s\) \['bootstrapp'\]"):
        predict.backtest(planted_ladder(), "t", "loglinear", bootstrapp=5)


def test_refit_forgets_the_previous_fit():
    lad = planted_ladder(noise=0.002)
    pr = predict.get_method("ensemble", bootstrap=0, inflate=False)
    first = pr.fit(lad, "t", metric="acc").predict(1e10, 2e11).value
    pr.fit(lad[lad["params"] <= 1e9], "t", metric="acc")
    assert len(pr.runs_) == 5
    again = pr.fit(lad, "t", metric="acc").predict(1e10, 2e11).value
    assert again == first


# --------------------------------------------------------------------------------------------
# fit_law (capscale fit)
# --------------------------------------------------------------------------------------------


def test_fit_law_points_and_json():
    lad = planted_ladder()
    fit = predict.fit_law(lad, "t", "compute_law")
    assert fit.metric == "acc" and fit.loss == ("t", "task_loss") and fit.final_window == 1
    assert list(fit.points.columns) == ["run", "params", "tokens", "compute", "x", "y"]
    assert len(fit.points) == len(SIZES)
    np.testing.assert_allclose(fit.points["compute"], 6 * fit.points["params"] * fit.points["tokens"])
    np.testing.assert_allclose(fit.points["y"], 1.5 + math.exp(8.0) / fit.points["compute"] ** 0.12)
    assert fit.law.params_["alpha"] == pytest.approx(0.12, rel=1e-3)
    d = fit.to_dict()
    assert list(d)[:5] == ["task", "metric", "loss", "final_window", "x"]
    assert d["x"] == "C = 6*N*D FLOPs" and d["loss"] == ["t", "task_loss"] and d["form"] == "compute_law"
    assert d["bounds"]["a"] == [None, None] and d["bounds"]["E"][0] == 0.0
    json.dumps(d, allow_nan=False)


def test_fit_law_checkpoint_forms_fit_every_kept_checkpoint():
    lad = planted_ladder()
    g = predict.fit_law(lad, "t", "gadre_exp")
    assert len(g.points) == len(SIZES) * 8 and g.law.n_points_ == len(g.points)
    np.testing.assert_allclose(g.points["y"], 1 - g.checkpoints["value"])
    s = predict.fit_law(lad, "t", "ladder_sigmoid")
    assert len(s.points) == len(SIZES) * 7  # the first 10 % (1 of 8 checkpoints) of every run skipped
    assert s.to_dict()["x"] == "loss"
    o = predict.fit_law(lad, "t", "obs_sigmoid")
    np.testing.assert_allclose(o.points["x"], np.log10(o.points["compute"]))


def test_fit_law_errors():
    lad = planted_ladder()
    with pytest.raises(ValueError, match="unknown form 'nope'"):
        predict.fit_law(lad, "t", "nope")
    with pytest.raises(predict.MethodNotApplicable, match="no task loss"):
        predict.fit_law(lad[lad["metric"] == "acc"], "t", "compute_law")
    with pytest.raises(ValueError, match="no acc or acc_norm"):
        predict.fit_law(lad[lad["metric"] == "task_loss"], "t", "loglinear")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_predict_backtest_fit(tmp_path, capsys):
    path = tmp_path / "ladder.csv"
    planted_ladder(noise=0.002).to_csv(path, index=False)
    rc = main(["predict", str(path), "--task", "t", "--target", "params=1e10,tokens=2e11", "--method", "direct",
               "--bootstrap", "5", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"task", "method", "target_params", "target_tokens", "prediction", "lower", "upper", "warnings"} <= set(out)
    assert out["target_params"] == 1e10 and out["lower"] <= out["prediction"] <= out["upper"]

    rc = main(["backtest", str(path), "--task", "t", "--holdout", "2", "--method", "loglinear", "--bootstrap", "5",
               "--json", "--out", str(tmp_path / "bt")])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and set(rows[0]) == {"task", "method", "heldout_model", "predicted", "actual", "abs_err",
                                               "lower", "upper", "verdict"}
    assert rows[0]["verdict"] == "predictable"
    assert (tmp_path / "bt" / "backtest.csv").exists() and (tmp_path / "bt" / "backtest_t.png").exists()

    rc = main(["fit", str(path), "--task", "t", "--form", "compute_law", "--metric", "acc"])
    assert rc == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["form"] == "compute_law" and fit["loss"] == ["t", "task_loss"]

    rc = main(["predict", str(path), "--task", "t", "--target", "params=1e10,tokens=0"])
    assert rc == 2 and "not a sensible value" in capsys.readouterr().err


def test_cli_fit_and_predict_write_what_they_print(tmp_path, capsys):
    path = tmp_path / "ladder.csv"
    planted_ladder(noise=0.002).to_csv(path, index=False)
    rc = main(["fit", str(path), "--task", "t", "--form", "direct", "--out", str(tmp_path / "f")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "f" / "fit_t_direct.json").read_text() == printed
    assert (tmp_path / "f" / "fit_t_direct.png").stat().st_size > 0

    rc = main(["predict", str(path), "--task", "t", "--target", "params=1e10,tokens=2e11", "--method", "ladder",
               "--bootstrap", "3", "--out", str(tmp_path / "p")])
    assert rc == 0
    text = capsys.readouterr().out
    saved = json.loads((tmp_path / "p" / "predict_t.json").read_text())
    assert f"{saved['prediction']:.4f}  90% [{saved['lower']:.4f}, {saved['upper']:.4f}]  method=ladder" in text
    assert saved["fit"]["method"] == "ladder" and set(saved["fit"]["laws"]) == {"step1", "step2"}
    assert (tmp_path / "p" / "predict_t.png").exists()

    rc = main(["fit", str(path), "--task", "t,nope", "--form", "direct"])
    assert rc == 2 and "unknown task(s) ['nope']" in capsys.readouterr().err
    rc = main(["predict", str(path), "--task", "t", "--target", "params=1e10"])
    assert rc == 2 and "give exactly params=N,tokens=D" in capsys.readouterr().err


def test_cli_form_choices_are_the_forms_fit_law_fits():
    from capscale.commands import laws as laws_cmd

    assert laws_cmd.FORM_CHOICES == list(predict.FORMS)


def test_cli_predict_mass_from_a_store(tmp_path, capsys):
    from capscale.data import store
    from capscale.testing import simulate_store

    path = tmp_path / "s.parquet"
    store.write(store.normalize(simulate_store(n_items=40, seed=5)), path)
    rc = main(["predict", str(path), "--task", "sim", "--target", "params=1e9,tokens=4e10", "--method", "mass",
               "--json", "--out", str(tmp_path / "p")])  # --bootstrap (default 50) does not apply to mass
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selected"] == "mass" and out["lower"] <= out["prediction"] <= out["upper"]
    saved = json.loads((tmp_path / "p" / "predict_sim.json").read_text())
    assert saved["fit"]["method"] == "mass" and saved["fit"]["n_runs"] == 7


def test_pipelines_return_run_results(tmp_path):
    from capscale.pipelines import backtest, fit

    lad = planted_ladder(noise=0.002)
    res = fit.run(lad, fit.Options(tasks=("t",), form="loglinear", out=str(tmp_path)))
    assert res.stage == "fit" and res.summary == predict.fit_law(lad, "t", "loglinear").to_dict()
    assert [p.name for p in res.files] == ["fit_t_loglinear.json", "fit_t_loglinear.png"]
    assert list(res.tables["points"]["run"]) == sorted(lad["run"].unique())

    res = fit.run(lad, fit.Options(tasks=("t",), target=(1e10, 2e11), method="direct", bootstrap=4))
    pr, _ = predict.fit_method(lad, "t", "direct", metric="acc", bootstrap=4, seed=0)
    assert res.stage == "predict" and res.files == [] and res.summary["prediction"] == pr.predict(1e10, 2e11).value
    with pytest.raises(ValueError, match="exactly one of form"):
        fit.Options(tasks=("t",))

    opts = backtest.Options(tasks=("t",), method="loglinear", holdout=2, bootstrap=5, out=str(tmp_path / "bt"),
                            name="x")
    res = backtest.run(lad, opts)
    rows = predict.backtest(lad, "t", "loglinear", holdout=2, bootstrap=5, seed=0)
    assert [r["predicted"] for r in res.summary["rows"]] == [r["predicted"] for r in rows]
    assert res.summary["n_predictions"] == 2
    assert res.summary["mae"] == pytest.approx(np.mean([r["abs_err"] for r in rows]))
    assert [p.name for p in res.files] == ["x.csv", "x.json", "x_t.png"] and all(p.exists() for p in res.files)
    assert list(res.tables["backtest"]["heldout_model"]) == ["r1e+09", "r3e+09"]


def test_options_from_cli():
    import argparse

    from capscale.pipelines import backtest, fit

    ns = argparse.Namespace(task="a, b", target="params=1e9,tokens=2e10", method="auto", bootstrap=9, seed=1,
                            metric=None, loss_task="x", loss_metric=None, out=None, json=True)
    o = fit.Options.from_cli(ns)
    assert o.tasks == ("a", "b") and o.target == (1e9, 2e10) and o.form is None
    assert o.predictor_options() == {"bootstrap": 9, "seed": 1, "x_task": "x"}
    ns = argparse.Namespace(task="a", all_tasks=False, holdout="2", method="all", name=None, bootstrap=50, seed=0)
    o = backtest.Options.from_cli(ns, progress=True)
    assert o.holdout == 2 and o.name == "backtest" and o.progress and o.tasks == ("a",)
    # anything else is a query over the ladder's columns, checked when the ladder is split
    o = backtest.Options.from_cli(argparse.Namespace(holdout="big", task="t"))
    assert o.holdout == "big"
    with pytest.raises(ValueError, match="--holdout 'big' is not a valid query"):
        backtest.run(planted_ladder(), o)
    with pytest.raises(ValueError, match="K must be a positive integer"):
        backtest.Options.from_cli(argparse.Namespace(holdout="0"))


@pytest.mark.shared_data
def test_olmo_ladder_method_backtest_matches_published_13b(shared_data):
    from capscale.data import published

    path = shared_data / "olmo-ladder"
    if not path.is_dir():
        pytest.skip(f"no OLMo ladder data at {path}")
    lad = published.load_olmo_ladder(path)
    ref = pd.read_csv(path / "reference-outputs" / "chained_main.csv").set_index("Task")
    for task in ("mmlu", "arc_challenge"):
        res = predict.backtest(lad, task, "ladder", holdout=2, metric="acc_norm", bootstrap=0, inflate=False)
        r13 = next(r for r in res if r["heldout_model"] == "13B-5T")
        key = published.OLMO_REFERENCE_KEYS[task]
        assert abs(r13["predicted"] - ref.loc[key, "Pred"]) < 0.005
        assert r13["actual"] == pytest.approx(ref.loc[key, "Actual"], abs=1e-9)


def test_accuracy_outside_range_is_clipped_with_a_warning():
    lad = planted_ladder()
    pr = predict.get_method("loglinear", bootstrap=0, inflate=False).fit(lad, "t", metric="acc")
    p = pr.predict(1e14, 1e16)
    assert p.value == 1.0 and p.lower <= p.value <= p.upper
    assert any("outside [0, 1] and was clipped" in w for w in p.warnings)


# --------------------------------------------------------------------------------------------
# Degenerate fits, messages, targets outside the ladder (issue 15)
# --------------------------------------------------------------------------------------------


def _acc_ladder(values: dict[float, float], n_ckpt: int = 1, **extra: float) -> pd.DataFrame:
    rows = []
    for n, v in values.items():
        for j in range(1, n_ckpt + 1):
            rows.append(dict(model_id=f"r{n:.0e}@step{j}", family="f", params=n, tokens=20 * n * j / n_ckpt, step=j,
                             task="t", metric="acc", value=v, **{"chance": 0.25, **extra}))
    return check_ladder(pd.DataFrame(rows))


@pytest.mark.parametrize("name", ["loglinear", "direct"])
def test_flat_ladder_says_so_and_has_a_nonzero_interval(name):
    flat = _acc_ladder({n: 0.4 for n in SIZES})
    p = predict.get_method(name, bootstrap=20).fit(flat, "t", metric="acc").predict(1e10, 2e11)
    assert p.value == pytest.approx(0.4)
    assert p.lower < 0.4 < p.upper
    assert any("flat" in w for w in p.warnings)
    assert any("assumed" in w and "n_items" in w for w in p.warnings)  # no item count: the floor is an assumption


def test_flat_ladder_interval_floor_is_the_binomial_standard_error():
    from statistics import NormalDist

    flat = _acc_ladder({n: 0.4 for n in SIZES}, n_items=1000)
    p = predict.get_method("loglinear", bootstrap=20).fit(flat, "t", metric="acc").predict(1e10, 2e11)
    half = NormalDist().inv_cdf(0.95) * math.sqrt(0.4 * 0.6 / 1000)
    assert p.lower == pytest.approx(0.4 - half, rel=1e-6) and p.upper == pytest.approx(0.4 + half, rel=1e-6)
    assert any("binomial" in w for w in p.warnings)


def test_loglinear_on_two_points_warns_zero_degrees_of_freedom():
    two = _acc_ladder({1e8: 0.3, 1e9: 0.4}, n_ckpt=4)
    two.loc[two["step"] < 4, "value"] -= 0.01 * (4 - two["step"]) ** 0.5  # some checkpoint scatter
    p = predict.get_method("loglinear", bootstrap=20).fit(two, "t", metric="acc").predict(1e10, 2e11)
    assert any("zero degrees of freedom" in w for w in p.warnings)
    assert p.lower < p.value < p.upper
    law = predict.fit_law(two, "t", "loglinear")
    assert any("zero degrees of freedom" in w for w in law.warnings)


def test_a_well_posed_fit_keeps_its_interval():
    lad = planted_ladder(noise=0.003)
    p = predict.get_method("direct", bootstrap=20, seed=3).fit(lad, "t", metric="acc").predict(1e10, 2e11)
    assert not any("flat" in w or "degrees of freedom" in w for w in p.warnings)


def test_cli_predict_one_size_ladder_says_what_the_method_needs(tmp_path, capsys):
    path = tmp_path / "one.csv"
    _acc_ladder({1e8: 0.3}, n_ckpt=3).to_csv(path, index=False)
    for method in ("auto", "loglinear"):
        rc = main(["predict", str(path), "--task", "t", "--target", "params=1e10,tokens=2e11", "--method", method])
        err = capsys.readouterr().err
        assert rc == 1 and "hold out" not in err
        assert "at least 2 fitting sizes" in err and "has 1" in err


def test_auto_on_two_sizes_says_cross_validation_needs_three(tmp_path, capsys):
    path = tmp_path / "two.csv"
    _acc_ladder({1e8: 0.3, 1e9: 0.4}).to_csv(path, index=False)
    rc = main(["predict", str(path), "--task", "t", "--target", "params=1e10,tokens=2e11"])
    err = capsys.readouterr().err
    assert rc == 1 and "at least 3 sizes" in err and "has 2" in err and "--method" in err


def test_backtest_holdout_leaving_one_size_counts_right(tmp_path, capsys):
    path = tmp_path / "ladder.csv"
    planted_ladder(noise=0.002).to_csv(path, index=False)
    rc = main(["backtest", str(path), "--task", "t", "--holdout", "5", "--method", "loglinear", "--bootstrap", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "holding out the 5 largest of 6 sizes leaves 1 size (1 run) to fit on" in err
    assert "at least 2 fitting sizes" in err


def test_target_below_the_ladder_is_extrapolation_not_interpolation():
    lad = planted_ladder()
    pr = predict.get_method("loglinear", bootstrap=0).fit(lad, "t", metric="acc")
    w = pr.predict(1e5, 2e6).warnings
    assert not any("interpolation" in x for x in w)
    assert any("extrapolation below the ladder" in x for x in w)
    assert any("more than 10x outside the fitted compute range" in x for x in w)
    near = pr.predict(5e6, 1e8).warnings  # below the ladder, by less than 10x
    assert any("extrapolation below the ladder" in x for x in near)
    assert not any("more than 10x" in x for x in near)
    assert any("more than 10x outside" in x for x in pr.predict(1e11, 2e12).warnings)


@pytest.mark.parametrize("command", ["fit", "predict", "backtest"])
def test_help_has_no_doubled_percent(command, capsys):
    with pytest.raises(SystemExit):
        from capscale.cli import build_parser

        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "%%" not in text
    if command != "fit":
        assert "90% interval" in text


def test_predictor_fit_refuses_impossible_accuracies():
    lad = planted_ladder()
    lad.loc[(lad["metric"] == "acc") & (lad["params"] == 1e8), "value"] = 1.3
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*value=1.3"):
        predict.get_method("loglinear", bootstrap=0).fit(lad, "t", metric="acc")
