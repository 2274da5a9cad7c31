"""Predictors, backtests and CV selection (capscale.analysis.predict) and the fit/predict/backtest CLI."""

from __future__ import annotations

import json
import math

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
            base = dict(model_id=f"r{n:.0e}@step{j}", family="planted", params=n, tokens=d, step=j, task="t")
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
    class NeedsStore(predict._Base):
        name = "needs_store"
        needs_store = True

    with pytest.raises(predict.MethodNotApplicable, match="needs a score store"):
        NeedsStore().fit(planted_ladder(), "t")
    assert "mass" in predict.METHODS


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
                                               "lower", "upper"}
    assert (tmp_path / "bt" / "backtest.csv").exists() and (tmp_path / "bt" / "backtest_t.png").exists()

    rc = main(["fit", str(path), "--task", "t", "--form", "compute_law", "--metric", "acc"])
    assert rc == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["form"] == "compute_law" and fit["loss"] == ["t", "task_loss"]

    rc = main(["predict", str(path), "--task", "t", "--target", "params=1e10,tokens=0"])
    assert rc == 2 and "not a sensible value" in capsys.readouterr().err


@pytest.mark.shared_data
def test_olmo_ladder_method_backtest_matches_published_13b(shared_data):
    from capscale.data import ladder_table as datasets

    path = shared_data / "olmo-ladder"
    if not path.is_dir():
        pytest.skip(f"no OLMo ladder data at {path}")
    lad = datasets.load_olmo_ladder(path)
    ref = pd.read_csv(path / "reference-outputs" / "chained_main.csv").set_index("Task")
    for task in ("mmlu", "arc_challenge"):
        res = predict.backtest(lad, task, "ladder", holdout=2, metric="acc_norm", bootstrap=0, inflate=False)
        r13 = next(r for r in res if r["heldout_model"] == "13B-5T")
        key = datasets.OLMO_REFERENCE_KEYS[task]
        assert abs(r13["predicted"] - ref.loc[key, "Pred"]) < 0.005
        assert r13["actual"] == pytest.approx(ref.loc[key, "Actual"], abs=1e-9)


def test_accuracy_outside_range_is_clipped_with_a_warning():
    lad = planted_ladder()
    pr = predict.get_method("loglinear", bootstrap=0, inflate=False).fit(lad, "t", metric="acc")
    p = pr.predict(1e14, 1e16)
    assert p.value == 1.0 and p.lower <= p.value <= p.upper
    assert any("outside [0, 1] and was clipped" in w for w in p.warnings)
