"""Holdout forms and fit queries, predictability verdicts with planted truth, the chance predictor, loss choice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from capscale.analysis import predict
from capscale.analysis.predict._runs import loss_metric
from capscale.data.ladder_table import check_ladder
from capscale.errors import InputError, UsageError

SIZES = [1e7, 3e7, 1e8, 3e8, 1e9]


def ladder(fn, *, mults=(20,), noise=0.0, seed=0, task="t", chance=0.25, n_ckpt=4, loss=True):
    """One run per (size, multiplier) with ``n_ckpt`` checkpoints; acc = fn(C) + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        for m in mults:
            for j in range(1, n_ckpt + 1):
                d = m * n * j / n_ckpt
                c = 6 * n * d
                base = dict(model_id=f"r{n:.0e}x{m}@step{j}", run=f"r{n:.0e}x{m}", family="f" if m == 20 else "g",
                            params=n, tokens=d, step=j, task=task, chance=chance)
                rows.append({**base, "metric": "acc", "value": float(np.clip(fn(c) + noise * rng.normal(), 0, 1))})
                if loss:
                    rows.append({**base, "metric": "task_loss", "value": 1.5 + math.exp(8.0) / c**0.12})
    return check_ladder(pd.DataFrame(rows))


def rising(c):
    return 0.25 + 0.6 / (1 + math.exp(-(math.log10(c) - 18.5)))


def test_holdout_query_compute_multiplier_family():
    lad = ladder(rising, mults=(20, 200))
    tr, ho = predict.split_holdout(lad, "compute > 1e19")
    assert (ho.groupby("run")["compute"].max() > 1e19).all() and (tr.groupby("run")["compute"].max() <= 1e19).all()
    tr, ho = predict.split_holdout(lad, "multiplier > 100")
    assert set(ho["family"]) == {"g"} and set(tr["family"]) == {"f"}
    tr, ho = predict.split_holdout(lad, "family == 'g' and params >= 1e9")
    assert set(ho["run"]) == {"r1e+09x200"}
    assert predict.split_holdout(lad, "2")[1]["params"].min() == 3e8  # a K given as text
    rows = predict.backtest(lad, "t", "loglinear", holdout="multiplier > 100", bootstrap=0)
    assert len(rows) == 5 and all(r["heldout_model"].endswith("x200") for r in rows)


def test_holdout_query_errors():
    lad = ladder(rising)
    with pytest.raises(InputError, match="selects no row"):
        predict.split_holdout(lad, "compute > 1e40")
    with pytest.raises(UsageError, match="not a valid query.*multiplier"):
        predict.split_holdout(lad, "flops > 3")
    with pytest.raises(InputError, match="leaves no row to fit on"):
        predict.split_holdout(lad, "compute > 0")
    with pytest.raises(InputError, match="--fit 'tokens < 1' selects no row"):
        predict.split_holdout(lad, "largest", fit="tokens < 1")
    with pytest.raises(InputError, match="needs at least 2 fitting sizes"):
        predict.backtest(lad, "t", "loglinear", holdout="params > 1.5e7", bootstrap=0)


def test_fit_query_data_scaling_backtest():
    # one size, checkpoints along D: fit the early checkpoints, predict the run's final one
    rows = []
    for j, d in enumerate(np.geomspace(1e10, 1e11, 12)):
        rows.append(dict(model_id=f"run@{j}", run="run", family="f", params=1e9, tokens=d, step=j, task="t",
                         chance=0.25, metric="acc", value=0.3 + 0.05 * math.log10(d / 1e10)))
    lad = check_ladder(pd.DataFrame(rows))
    out = predict.backtest(lad, "t", "loglinear", holdout="tokens > 9e10", fit="tokens <= 4e10", bootstrap=0)
    assert len(out) == 1 and out[0]["heldout_model"] == "run"
    assert out[0]["predicted"] == pytest.approx(0.35, abs=1e-6)  # the planted line, to the final checkpoint


@pytest.mark.parametrize("fn, expect", [
    (rising, "predictable"),
    (lambda c: 0.25 + 0.004 * math.log10(c / 1e16), "at_chance"),
    (lambda c: 0.8 - 0.05 * math.log10(c / 1e16), "inverse"),
    (lambda c: 0.5 + 0.002 * math.log10(c / 1e16), "noisy"),
])
def test_planted_verdicts(fn, expect):
    lad = ladder(fn, noise=0.01 if expect == "noisy" else 0.002, seed=1)
    v = predict.predictability(lad, "t", "acc", 0.25)
    assert v.verdict == expect, v.reason
    assert {"top_mean", "excess", "se_top", "slope_per_decade", "rise", "scatter", "spearman"} <= set(v.stats)


def test_planted_non_monotone():
    vals = {1e7: 0.6, 3e7: 0.4, 1e8: 0.65, 3e8: 0.42, 1e9: 0.62}
    lad = ladder(lambda c: 0.0, noise=0.0)
    lad.loc[lad["metric"] == "acc", "value"] = lad.loc[lad["metric"] == "acc", "params"].map(vals)
    v = predict.predictability(lad, "t", "acc", 0.25)
    assert v.verdict in ("non_monotone", "noisy"), v.reason


def test_auto_at_chance_predicts_chance_with_room_for_emergence():
    lad = ladder(lambda c: 0.25 + 0.004 * math.log10(c / 1e16), noise=0.002, seed=1)
    pr, scores = predict.fit_method(lad, "t", "auto", bootstrap=20)
    p = pr.predict(1e10, 2e11)
    assert pr.name == "chance" and scores["_verdict"] == "at_chance"
    assert p.value == 0.25 and p.lower < 0.25 < p.upper
    assert any("at chance" in w for w in p.warnings)
    rows = predict.backtest(lad, "t", "auto", bootstrap=10)
    assert rows[0]["verdict"] == "at_chance" and rows[0]["selected"] == "chance"


def test_below_chance_is_not_at_chance():
    # a label-imbalanced two-way task: every size scores 0.37 against chance 0.5; predicting 0.5 would be 13 points off
    lad = ladder(lambda c: 0.37 + 0.001 * math.log10(c / 1e16), noise=0.005, seed=2, chance=0.5)
    v = predict.predictability(lad, "t", "acc", 0.5)
    assert v.verdict != "at_chance" and v.stats["below_chance"], v.reason
    pr, scores = predict.fit_method(lad, "t", "auto", bootstrap=10)
    assert pr.name != "chance" and abs(pr.predict(1e10, 2e11).value - 0.37) < 0.03
    # just below chance, within the noise: still at chance
    near = ladder(lambda c: 0.49 + 0.0 * c, noise=0.002, seed=2, chance=0.5)
    v = predict.predictability(near, "t", "acc", 0.5)
    assert v.verdict == "at_chance" and not v.stats["below_chance"], v.reason


def test_multirc_chance_must_be_stated():
    # lm-eval 0.3 scores multirc by exact match over all answers, 0.4 per answer: no single table value is right
    from capscale.data.ladder_table import UnknownChanceError, chance_of

    with pytest.raises(UnknownChanceError, match="--chance multirc=P"):
        chance_of("multirc")
    assert chance_of("multirc", chance={"multirc": 0.0}) == 0.0


def test_auto_widens_noisy_tasks():
    lad = ladder(lambda c: 0.5 + 0.002 * math.log10(c / 1e16), noise=0.01, seed=1)
    pr, scores = predict.fit_method(lad, "t", "auto", bootstrap=20)
    assert scores["_verdict"] == "noisy" and pr.widen == 2.0
    assert any("widened 2x" in w for w in pr.predict(1e10, 2e11).warnings)


def test_chained_methods_use_the_only_loss_or_name_the_choices():
    lad = ladder(rising)
    other = lad[lad["metric"] == "task_loss"].assign(task="lam")
    two = check_ladder(pd.concat([lad[lad["metric"] == "acc"], other], ignore_index=True))
    assert loss_metric(two, "t", None, None) == ("lam", "task_loss")
    three = check_ladder(pd.concat([two, other.assign(task="lam2")], ignore_index=True))
    with pytest.raises(predict.MethodNotApplicable, match=r"2 losses .*--loss-task"):
        loss_metric(three, "t", None, None)
    rows = predict.backtest(three, "t", "all", bootstrap=0)
    na = [r for r in rows if r["method"] == "gadre"]
    assert na and "not applicable" in na[0]["warnings"][0]  # said, not silently dropped
    _, scores = predict.select_method(three, "t")
    assert "gadre" in scores["_not_applicable"]


def test_too_few_sizes_is_a_refusal_naming_method_and_count():
    lad = ladder(rising)
    two = lad[lad["params"].isin([1e8, 1e9])]
    with pytest.raises(Exception, match=r"method 'sigmoid' cannot be fitted on task 't' with 2 fitting size\(s\)"):
        predict.get_method("sigmoid", bootstrap=0).fit(two, "t")
    with pytest.raises(Exception, match=r"method 'ladder' cannot be fitted .* 2 fitting size\(s\).*need at least 5"):
        predict.get_method("ladder", bootstrap=0).fit(two, "t")
