"""Observational (cross-family) scaling: planted truth recovered, bad input refused, backtest wiring, data table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import subspace_angles

from capscale.analysis.predict import backtest, get_method, split_holdout
from capscale.analysis.predict._observational import ObservationalInputError
from capscale.errors import InputError, NotFittedError, UsageError
from capscale.synthetic.cross_family import simulate_cross_family

SHARED = Path(os.environ.get("CAPSCALE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _fit(lad: pd.DataFrame, task: str = "bench0", **kw):
    # the planted process is linear in the logit of the chance-normalised score: fit in that space
    kw.setdefault("bootstrap", 10)
    kw.setdefault("transform", "logit")
    return get_method("observational", **kw).fit(lad, task)


def _truth_S(pr, truth, k: int) -> np.ndarray:
    return truth.capabilities.set_index("model_id").loc[pr.train_["run"], [f"s{q}" for q in range(k)]].to_numpy()


@pytest.fixture(scope="module")
def planted1():
    lad, truth = simulate_cross_family(rank=1, seed=1)
    train, held = split_holdout(lad, "family-largest")
    return lad, truth, train, held, _fit(train, rank=1)


# ----------------------------------------------------------------------------------------------
# planted ground truth
# ----------------------------------------------------------------------------------------------


def test_rank1_recovers_capability_offsets_and_heldout_scores(planted1):
    lad, truth, train, held, pr = planted1
    m = pr.model_
    S_true = _truth_S(pr, truth, 1)
    # the capability measure spans the planted factor: subspace angle < 5 degrees
    ang = np.degrees(subspace_angles(S_true - S_true.mean(0), m.S - m.S.mean(0)))
    assert ang.max() < 5.0
    # family efficiencies: mapped to the planted units (linear map fitted on the training models), evaluated at
    # 1e21 FLOPs and centred (only differences between families are identified), within 0.15 (planted sd 0.6)
    A = np.c_[np.ones(len(m.S)), m.S]
    B = np.linalg.lstsq(A, S_true, rcond=None)[0]
    est = np.array([np.r_[1.0, th + 21.0 * m.slope] @ B for th in m.offset.values()])
    true = np.array([truth.offsets[f] for f in m.offset])
    err = (est - est.mean(0)) - (true - true.mean(0))
    assert np.abs(err).max() < 0.15
    # held-out largest model of every family: within 3 points, from compute alone and given the other scores
    for run, g in held.groupby("run"):
        act = float(g.loc[g["task"] == "bench0", "value"].iloc[0])
        r = g.iloc[0]
        p1 = pr.predict(r["params"], r["tokens"], family=r["family"])
        p2 = pr.predict(r["params"], r["tokens"], family=r["family"], scores=g[["task", "metric", "value"]])
        assert abs(p1.value - act) < 0.03, run
        assert abs(p2.value - act) < 0.03, run
        assert p1.lower <= p1.value <= p1.upper
        assert "only" in p1.warnings[0] and "scores on 7 other" in p2.warnings[0]


def test_rank2_recovers_the_capability_subspace():
    lad, truth = simulate_cross_family(rank=2, seed=0, offset_sd=1.0, n_families=6)
    pr = _fit(lad, rank=2, bootstrap=0)
    S_true = _truth_S(pr, truth, 2)
    ang = np.degrees(subspace_angles(S_true - S_true.mean(0), pr.model_.S - pr.model_.S.mean(0)))
    # the direction along compute is sharp; the second, seen only through the family offsets and blurred where the
    # logit is clipped at the floor (small models), less so (seeds 0-5: largest angle 10-22 degrees)
    assert ang.min() < 6.0 and ang.max() < 15.0
    assert pr.explained_ > 0.95


def test_missing_cells_are_imputed_and_still_recover(planted1):
    lad, truth, train, held, _ = planted1
    rng = np.random.default_rng(0)
    drop = (train["task"] != "bench0") & (rng.random(len(train)) < 0.2)
    pr = _fit(train[~drop], rank=1)
    assert pr.missing_cells_ == int(drop.sum())
    S_true = _truth_S(pr, truth, 1)
    ang = np.degrees(subspace_angles(S_true - S_true.mean(0), pr.model_.S - pr.model_.S.mean(0)))
    assert ang.max() < 6.0
    for _, g in held.groupby("run"):
        act = float(g.loc[g["task"] == "bench0", "value"].iloc[0])
        assert abs(pr.predict(g["params"].iloc[0], g["tokens"].iloc[0], family=g["family"].iloc[0]).value
                   - act) < 0.035


def test_unknown_family_falls_back_to_the_mean_efficiency_with_a_warning(planted1):
    lad, truth, train, held, _ = planted1
    pr = _fit(train[train["family"] != "fam4"], rank=1)
    g = held[held["family"] == "fam4"]
    p = pr.predict(g["params"].iloc[0], g["tokens"].iloc[0], family="fam4")
    assert any("'fam4' has no training models" in w for w in p.warnings)
    p0 = pr.predict(g["params"].iloc[0], g["tokens"].iloc[0])
    assert p0.value == pytest.approx(p.value)
    # its other scores tell where it stands: closer than the fallback
    act = float(g.loc[g["task"] == "bench0", "value"].iloc[0])
    p2 = pr.predict(g["params"].iloc[0], g["tokens"].iloc[0], family="fam4", scores=g[["task", "metric", "value"]])
    assert abs(p2.value - act) <= abs(p.value - act) + 1e-9 and abs(p2.value - act) < 0.03


def test_report_is_json_ready_and_names_the_parts(planted1):
    import json

    rep = planted1[4].report()
    json.dumps(rep)
    assert rep["method"] == "observational" and set(rep["family_offsets"]) == {f"fam{i}" for i in range(5)}
    assert rep["link"]["floor"] == pytest.approx(0.25) and 0 < rep["link"]["ceiling"] <= 1


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_one_family_is_refused():
    lad, _ = simulate_cross_family(n_families=1, seed=0)
    with pytest.raises(ObservationalInputError, match=r"1 family \(\['fam0'\]\); at least 2"):
        _fit(lad)


def test_too_few_benchmarks_for_the_rank_is_refused():
    lad, _ = simulate_cross_family(n_benchmarks=3, seed=0)
    with pytest.raises(ObservationalInputError, match=r"3 benchmark\(s\).*rank 3 needs at least 4"):
        _fit(lad, rank=3)


def test_task_with_too_few_models_is_refused_and_named():
    lad, _ = simulate_cross_family(seed=0)
    few = lad[(lad["task"] != "bench0") | lad["model_id"].isin(["fam0-m0", "fam1-m0"])]
    with pytest.raises(ObservationalInputError, match=r"task 'bench0' \(acc\) has final values for 2 training"):
        _fit(few)
    with pytest.raises(ObservationalInputError, match=r"no rows for task 'nope'"):
        _fit(lad, task="nope")


def test_sparse_other_tasks_are_left_out_and_said():
    lad, _ = simulate_cross_family(seed=0)
    extra = lad[lad["task"] == "bench1"].head(2).assign(task="rare", chance=0.25)
    pr = _fit(pd.concat([lad, extra], ignore_index=True), bootstrap=0)
    assert "rare" in pr.excluded_ and any("rare" in w for w in pr.fit_warnings_)


def test_bad_options_scores_and_unfitted():
    lad, _ = simulate_cross_family(seed=0)
    with pytest.raises(UsageError, match="rank must be a positive integer"):
        _fit(lad, rank=0)
    with pytest.raises(UsageError, match="ceiling must be"):
        _fit(lad, ceiling="two")
    with pytest.raises(NotFittedError):
        get_method("observational").predict(1e9, 2e10)
    pr = _fit(lad, bootstrap=0)
    with pytest.raises(UsageError, match="'bench1' = 1.5 is not a fraction"):
        pr.predict(1e9, 2e10, family="fam0", scores={"bench1": 1.5})


# ----------------------------------------------------------------------------------------------
# backtest wiring and the holdout forms
# ----------------------------------------------------------------------------------------------


def test_family_largest_holdout_forms():
    lad, _ = simulate_cross_family(seed=0)
    train, held = split_holdout(lad, "family-largest")
    assert sorted(held["run"].unique()) == [f"fam{i}-m5" for i in range(5)]
    assert not set(held["run"]) & set(train["run"])
    _, held1 = split_holdout(lad, "family-largest:fam2")
    assert list(held1["run"].unique()) == ["fam2-m5"]
    with pytest.raises(InputError, match=r"famil.*\['famX'\] not in the ladder"):
        split_holdout(lad, "family-largest:famX")


def test_backtest_passes_family_and_other_scores():
    lad, _ = simulate_cross_family(seed=0)
    rows = backtest(lad, "bench0", "observational", holdout="family-largest", bootstrap=5)
    assert len(rows) == 5 and {r["given"] for r in rows} == {"compute"}
    assert all(not any("no training models" in w for w in r["warnings"]) for r in rows)
    rows2 = backtest(lad, "bench0", "observational", holdout="family-largest", bootstrap=5, given="scores")
    assert {r["given"] for r in rows2} == {"scores"}
    assert np.mean([r["abs_err"] for r in rows2]) < 0.03
    # every other method's predict call is unchanged
    rows3 = backtest(lad, "bench0", "loglinear", holdout="family-largest", bootstrap=0)
    assert "given" not in rows3[0]


# ----------------------------------------------------------------------------------------------
# the cross-family table of the public data
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED / "lmeval-2023-results").is_dir(), reason="needs the public data folder")
def test_cross_family_table_from_the_public_data():
    from capscale.data.cross_family import build_cross_family

    table, rep = build_cross_family(SHARED)
    assert rep["models_per_family"] == {"bigscience-1b3": 5, "bloom": 5, "llama": 3, "mpt": 1, "pythia": 8,
                                        "pythia-deduped": 8, "xglm": 5}
    assert table.groupby(["model_id", "task"]).size().max() == 1  # one metric per task
    assert rep["metric_per_task"]["hellaswag"] == "acc_norm" and rep["metric_per_task"]["winogrande"] == "acc"
    assert table.groupby("task")["family"].nunique().min() >= 5
    assert rep["excluded"]["pythia: intermediate checkpoints"] > 0
    assert any(k.startswith("olmo-ladder") for k in rep["excluded"])
    # LLaMA-1 7B/13B's LAMBADA (acc 0.000 +- 0.000, perplexity 2.8e6) is a failed evaluation: left out, and listed
    assert rep["failed_evaluations"] == ["llama-13B / lambada_openai", "llama-7B / lambada_openai"]
    assert rep["excluded"]["failed evaluations (accuracy exactly 0 with standard error 0)"] == 2
    assert not ((table["value"] == 0) & (table["stderr"] == 0)).any() and len(table) == rep["n_rows"] == 305


def test_failed_evaluations_rule():
    from capscale.data.cross_family import failed_evaluations

    rows = pd.DataFrame({"metric": ["acc", "acc_norm", "acc", "acc", "ppl"], "value": [0.0, 0.0, 0.0, 0.3, 0.0],
                         "stderr": [0.0, 0.0, 0.01, 0.0, 0.0]})
    assert failed_evaluations(rows).tolist() == [True, True, False, False, False]
    assert not failed_evaluations(rows.drop(columns="stderr")).any()  # no standard error: nothing to judge by


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def test_cli_predict_with_family_and_backtest_given_scores(tmp_path, capsys):
    import json

    from capscale.cli import main

    lad, _ = simulate_cross_family(seed=0)
    path = tmp_path / "table.csv"
    lad.to_csv(path, index=False)
    assert main(["predict", str(path), "--task", "bench0", "--method", "observational", "--bootstrap", "5",
                 "--target", "params=2e10,tokens=4e11,family=fam1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selected"] == "observational" and 0 <= out["lower"] <= out["prediction"] <= out["upper"] <= 1
    assert not any("no training models" in w for w in out["warnings"])
    assert main(["predict", str(path), "--task", "bench0", "--method", "loglinear", "--bootstrap", "0",
                 "--target", "params=2e10,tokens=4e11,family=fam1", "--json"]) == 0
    assert any("family 'fam1' is not used" in w for w in json.loads(capsys.readouterr().out)["warnings"])
    assert main(["backtest", str(path), "--task", "bench0", "--method", "observational", "--bootstrap", "5",
                 "--holdout", "family-largest", "--given", "scores", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5


def test_cli_predict_given_the_targets_other_scores(tmp_path, capsys):
    """`capscale predict --target-scores`: observational reads the target's measured scores on other tasks (planted
    table, the largest fam1 model held out); other methods say they ignore them; bad scores are usage errors."""
    import json

    from capscale.cli import main

    lad, _ = simulate_cross_family(seed=0)
    path = tmp_path / "table.csv"
    lad.to_csv(path, index=False)
    held = lad[lad["model_id"] == "fam1-m5"].set_index("task")["value"]
    base = ["predict", str(path), "--task", "bench0", "--bootstrap", "5", "--fit", "model_id!='fam1-m5'", "--json",
            "--target", f"params={float(lad.loc[lad.model_id == 'fam1-m5', 'params'].iloc[0])!r},"
            f"tokens={float(lad.loc[lad.model_id == 'fam1-m5', 'tokens'].iloc[0])!r},family=fam1"]
    others = ",".join(f"{t}={float(v)!r}" for t, v in held.drop("bench0").items())
    assert main([*base, "--method", "observational"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main([*base, "--method", "observational", "--target-scores", others]) == 0
    with_scores = json.loads(capsys.readouterr().out)
    assert alone["given"] == "compute" and with_scores["given"] == "scores"
    assert with_scores["target_scores"] == held.drop("bench0").to_dict()
    assert abs(with_scores["prediction"] - held["bench0"]) < abs(alone["prediction"] - held["bench0"])
    assert main([*base, "--method", "loglinear", "--target-scores", others]) == 0
    assert any("scores on" in w and "are not used" in w for w in json.loads(capsys.readouterr().out)["warnings"])
    for bad in ("bench0=0.5", "nope=0.5", "bench1=1.5", "bench1"):
        assert main([*base, "--method", "observational", "--target-scores", bad]) == 2
    err = capsys.readouterr().err
    assert "the predicted task 'bench0' itself" in err and "['nope'] are not in the ladder" in err
    assert "fractions in [0, 1]" in err


@pytest.mark.skipif(not (SHARED / "lmeval-2023-results").is_dir(), reason="needs the public data folder")
def test_cli_cross_family_writes_the_table(tmp_path, capsys):
    import json

    from capscale.cli import main
    from capscale.data.ladder_table import read_ladder

    out = tmp_path / "t.csv"
    assert main(["ladder", "cross-family", "--data", str(SHARED), "--out", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_models"] == 35 and len(read_ladder(out)) == rep["n_rows"]
