"""Ladder tables (capscale.data.ladder_table): validation naming rows, store -> ladder, loaders of the published data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capscale.analysis import chain
from capscale.analysis.chain import ladder_from_store
from capscale.data import ladder_table as datasets
from capscale.data import published, store


def _tiny() -> pd.DataFrame:
    rows = []
    for i, n in enumerate([1e7, 1e8, 1e9]):
        rows.append(dict(model_id=f"m{i}", family="f", params=n, tokens=20 * n, compute=None, step=1,
                         task="t", metric="acc", value=0.3 + 0.1 * i))
    return pd.DataFrame(rows)


def test_check_ladder_fills_defaults():
    df = datasets.check_ladder(_tiny())
    assert (df["compute"] == 6 * df["params"] * df["tokens"]).all()
    assert list(df["run"]) == ["m0", "m1", "m2"]


def test_validation_names_rows():
    df = _tiny()
    df.loc[1, "value"] = np.nan
    df.loc[2, "params"] = -5
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(datasets.LadderError) as e:
        datasets.check_ladder(df, source="x.csv")
    msg = str(e.value)
    assert "x.csv" in msg
    assert "NaN" in msg and "model_id='m1'" in msg
    assert "'params'" in msg and "model_id='m2'" in msg
    assert "duplicate" in msg and "model_id='m0'" in msg


def test_missing_column_and_bad_loss():
    with pytest.raises(datasets.LadderError, match="lacks required column"):
        datasets.check_ladder(_tiny().drop(columns=["value"]))
    df = _tiny().assign(metric="task_loss")
    df.loc[0, "value"] = 0.0
    with pytest.raises(datasets.LadderError, match="non-positive value"):
        datasets.check_ladder(df)


def test_write_read_round_trip(tmp_path):
    df = datasets.check_ladder(_tiny())
    for suffix in (".csv", ".parquet"):
        p = tmp_path / f"l{suffix}"
        datasets.write_ladder(df, p)
        back = datasets.read_ladder(p)
        np.testing.assert_allclose(back["value"], df["value"])
        assert list(back["model_id"]) == list(df["model_id"])


def test_ladder_from_store_matches_chain_means():
    sdf = store.example_store(n_models=3, n_items=6)
    lad = ladder_from_store(sdf)
    items = chain.compute(sdf)
    assert {"acc", "acc_norm", "task_loss", "task_bpb", "brier", "p_choices", "log_p_choices"} <= set(lad["metric"])
    for m in ("m0", "m2"):
        got = lad[(lad["model_id"] == m) & (lad["metric"] == "acc")]["value"].iloc[0]
        assert got == pytest.approx(items[items["model_id"] == m]["acc"].mean())
        tl = lad[(lad["model_id"] == m) & (lad["metric"] == "task_loss")]["value"].iloc[0]
        assert tl == pytest.approx(-items[items["model_id"] == m]["log_p_vocab_correct"].mean())
    assert (lad.groupby("model_id")["compute"].first() > 0).all()


def test_final_values_takes_last_checkpoint():
    df = pd.DataFrame(dict(model_id=["r@1", "r@2", "s@1"], family="f", params=[1e8, 1e8, 2e8],
                           tokens=[1e9, 2e9, 1e9], step=[1, 2, 1], task="t", metric="acc", value=[0.3, 0.4, 0.5]))
    fin = datasets.final_values(datasets.check_ladder(df), "t", "acc")
    assert list(fin["run"]) == ["r", "s"] and list(fin["value"]) == [0.4, 0.5]


# --------------------------------------------------------------------------------------------
# published data
# --------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_load_olmo_ladder(shared_data):
    path = shared_data / "olmo-ladder"
    if not path.is_dir():
        pytest.skip(f"no OLMo ladder data at {path}")
    lad = published.load_olmo_ladder(path)
    runs = lad.groupby("run")["params"].first()
    assert len(runs) == 18 and {"7B-4T", "13B-5T"} <= set(runs.index)
    t13 = lad[(lad["run"] == "13B-5T") & (lad["task"] == "mmlu") & (lad["metric"] == "acc_norm")]
    assert t13["value"].iloc[0] == pytest.approx(0.5161402368605137, abs=1e-12)  # reference "Actual"
    assert t13["tokens"].iloc[0] == 5_000_088_518_656
    t7 = lad[(lad["run"] == "7B-4T") & (lad["metric"] == "acc_norm")]
    assert (t7["tokens"] == 3_945_065_873_408).all() and t7["step"].isna().all()
    n190 = lad[(lad["run"] == "190M-1xC") & (lad["task"] == "piqa") & (lad["metric"] == "task_bpb")]
    assert n190["tokens"].max() == 3_812_622_336 and len(n190) == 37
    assert set(published.OLMO_PAPER_TASKS) <= set(lad["task"])
    no_targets = published.load_olmo_ladder(path, targets=False)
    assert not no_targets["run"].isin(["7B-4T", "13B-5T"]).any()


@pytest.mark.shared_data
def test_load_pythia_evals(shared_data):
    path = shared_data / "pythia-evals"
    if not path.is_dir():
        pytest.skip(f"no Pythia data at {path}")
    with pytest.warns(UserWarning, match="dropped 16 checkpoint"):
        lad = published.load_pythia_evals(path)
    fin = lad[(lad["run"] == "pythia-12b") & (lad["step"] == 143000)].set_index(["task", "metric"])["value"]
    # docs/transforms.md §7 table (12b at step 143000)
    assert fin[("lambada_openai", "ppl")] == pytest.approx(3.92, abs=0.005)
    assert fin[("piqa", "acc")] == pytest.approx(0.760, abs=0.0005)
    assert fin[("arc_easy", "acc")] == pytest.approx(0.702, abs=0.0005)
    assert fin[("arc_challenge", "acc_norm")] == pytest.approx(0.348, abs=0.0005)
    assert fin[("sciq", "acc")] == pytest.approx(0.902, abs=0.0005)
    assert fin[("winogrande", "acc")] == pytest.approx(0.639, abs=0.0005)
    assert fin[("mmlu", "acc")] == pytest.approx(0.268, abs=0.0005)
    assert fin[("lambada_openai", "task_loss")] == pytest.approx(np.log(fin[("lambada_openai", "ppl")]))
    std = lad[lad["family"] == "pythia"]
    assert std["run"].nunique() == 8 and "pythia-1b-bf16" in set(std["run"])
    assert std.groupby("run")["step"].nunique().eq(26).all()  # 27 checkpoints minus step 0


def test_accuracies_outside_unit_interval_are_refused_naming_rows():
    df = _tiny()
    df.loc[0, "value"] = 1.3
    df.loc[1, "value"] = -0.2
    extra = pd.DataFrame([dict(model_id="m0", family="f", params=1e7, tokens=2e8, compute=None, step=1, task="t",
                               metric=m, value=v)
                          for m, v in (("p_choices", 1.1), ("log_p_choices", -2.0), ("task_loss", 3.0))])
    df = pd.concat([df, extra], ignore_index=True)
    with pytest.raises(datasets.LadderError) as e:
        datasets.check_ladder(df, source="x.csv")
    msg = str(e.value)
    assert "x.csv" in msg and "outside [0, 1]" in msg and "3 row(s)" in msg
    for s in ("model_id='m0', task='t', metric='acc', value=1.3", "model_id='m1', task='t', metric='acc', value=-0.2",
              "metric='p_choices', value=1.1"):
        assert s in msg
    assert "log_p_choices" not in msg and "task_loss" not in msg
    datasets.check_ladder(df.drop(index=[0, 1, 3]))  # log-probabilities and losses are not accuracies


def test_cli_predict_and_backtest_refuse_impossible_accuracies(tmp_path, capsys):
    from capscale.cli import main

    rows = [dict(model_id=f"m{i}", family="f", params=n, tokens=20 * n, step=1, task="t", metric="acc",
                 value=0.3 + 0.1 * i) for i, n in enumerate([1e7, 3e7, 1e8, 3e8])]
    df = pd.DataFrame(rows)
    df.loc[3, "value"] = 1.3
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    for argv in (["predict", str(path), "--task", "t", "--target", "params=1e9,tokens=2e10", "--method", "loglinear"],
                 ["backtest", str(path), "--task", "t", "--method", "loglinear"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "outside [0, 1]" in err and "model_id='m3'" in err and "value=1.3" in err and str(path) in err


def test_nan_loss_is_refused():
    df = _tiny().assign(metric="task_loss")
    df.loc[1, "value"] = np.nan
    with pytest.raises(datasets.LadderError, match="NaN.*model_id='m1'"):
        datasets.check_ladder(df)
