"""Nothing silently wrong: item coverage, metrics that vanish, and groups or checks that cannot be computed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from capscale.analysis import chain
from capscale.cli import main
from capscale.data import store
from capscale.pipelines import analyze
from capscale.testing import simulate_store


def _partial_store(n_items: int = 40, keep: int = 20) -> pd.DataFrame:
    """A 7-model store where the largest model has only ``keep`` of the ``n_items`` items."""
    df = simulate_store(n_items=n_items, seed=1)
    big = df.loc[df["compute"].idxmax(), "model_id"]
    return df[(df["model_id"] != big) | (df["doc_id"].astype(int) < keep)].reset_index(drop=True), big


def test_validate_warns_about_partial_item_coverage_naming_models_and_counts(tmp_path, capsys):
    df, big = _partial_store()
    assert store.validate(df) == []  # a warning, not a problem: the store can still be analysed
    warnings = store.coverage_warnings(df)
    assert [w.kind for w in warnings] == ["partial_item_coverage"]
    w = warnings[0]
    assert w.count == 1 and "20 of 40 item(s) are not scored by all 7 models" in w.message
    assert big in str(w) and "20 of 40" in str(w)
    path = tmp_path / "partial.parquet"
    df.to_parquet(path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning" in out and "partial_item_coverage" in out and big in out and "20 of 40" in out


def test_select_items_common_and_all():
    df, big = _partial_store()
    common, report = chain.select_items(df, items="common")
    assert common.groupby("model_id")["doc_id"].nunique().eq(20).all()
    row = report.iloc[0]
    assert (row["n_items_all"], row["n_items_common"], row["n_items_excluded"]) == (40, 20, 20)
    assert big in row["models_missing_items"]
    same, report_all = chain.select_items(df, items="all")
    assert len(same) == len(df) and report_all.iloc[0]["n_items_excluded"] == 0
    with pytest.raises(ValueError, match="items"):
        chain.select_items(df, items="some")


def test_ladder_from_store_uses_common_items_by_default():
    df, big = _partial_store()
    lad = chain.ladder_from_store(df)
    items = chain.compute(df[df["doc_id"].astype(int) < 20])
    exp = items.groupby("model_id")["acc"].mean()
    got = lad[lad["metric"] == "acc"].set_index("model_id")["value"]
    np.testing.assert_allclose(got[exp.index].to_numpy(), exp.to_numpy())
    lad_all = chain.ladder_from_store(df, items="all")
    small = lad_all[(lad_all["metric"] == "acc") & (lad_all["model_id"] != big)]
    full = chain.compute(df).groupby("model_id")["acc"].mean()
    np.testing.assert_allclose(small.set_index("model_id")["value"].to_numpy(),
                               full[small["model_id"]].to_numpy())


def test_analyze_common_items_by_default_and_reports_exclusions(tmp_path, capsys):
    df, big = _partial_store()
    path = tmp_path / "partial.parquet"
    df.to_parquet(path)
    out = tmp_path / "a"
    assert main(["analyze", str(path), "--out", str(out), "--no-figures", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "20 of 40 item(s)" in printed and big in printed
    info = json.loads((out / "analysis.json").read_text())
    assert info["items_selection"] == "common"
    ex = info["items_excluded"][0]
    assert ex["n_items_all"] == 40 and ex["n_items_common"] == 20 and ex["n_items_excluded"] == 20
    per_item = pd.read_parquet(out / "per_item.parquet")
    assert per_item.groupby("model_id")["doc_id"].nunique().eq(20).all()
    assert main(["analyze", str(path), "--out", str(tmp_path / "b"), "--items", "all", "--no-figures",
                 "--quiet"]) == 0
    info = json.loads((tmp_path / "b" / "analysis.json").read_text())
    assert info["items_selection"] == "all" and info["items_excluded"][0]["n_items_excluded"] == 0
    assert "partial_item_coverage" in capsys.readouterr().out


def test_mixed_doc_id_spellings_warned_and_no_common_items_is_an_error(tmp_path, capsys):
    df = simulate_store(n_items=10, seed=2)
    models = sorted(df["model_id"].unique())
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, (m, g) in enumerate(df.groupby("model_id")):
        g = g.copy()
        if i % 2:
            g["doc_id"] = "q" + g["doc_id"].astype(str)
        g.to_parquet(shards / f"{m}.parquet", index=False)
    assert main(["validate", str(shards)]) == 0
    out = capsys.readouterr().out
    assert "partial_item_coverage" in out and "doc_id" in out and "integer" in out
    assert main(["analyze", str(shards), "--out", str(tmp_path / "a"), "--no-figures", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no item is scored by every model" in err and models[0] in err


def test_acc_norm_computed_where_n_chars_exists_and_coverage_reported(tmp_path, capsys):
    df = simulate_store(n_items=20, seed=3)
    models = sorted(df["model_id"].unique())
    with_chars = set(models[::2])
    df["n_chars"] = np.where(df["model_id"].isin(with_chars), 5 + df["choice_idx"], np.nan)
    items = chain.compute(df)
    assert "acc_norm" in items
    have = items.groupby("model_id")["acc_norm"].apply(lambda s: s.notna().all())
    assert set(have[have].index) == with_chars
    assert items.loc[~items["model_id"].isin(with_chars), "acc_norm"].isna().all()

    shards = tmp_path / "shards"
    shards.mkdir()
    for m, g in df.groupby("model_id"):
        g = g if m in with_chars else g.drop(columns="n_chars")
        g.to_parquet(shards / f"{m}.parquet", index=False)
    out = tmp_path / "a"
    assert main(["analyze", str(shards), "--out", str(out), "--no-figures", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "acc_norm" in printed and "n_chars" in printed
    info = json.loads((out / "analysis.json").read_text())
    cov = info["metric_coverage"]["acc_norm"]
    assert cov["rows"] == 20 * len(with_chars) and cov["rows_total"] == 20 * len(models)
    assert "n_chars" in cov["missing_reason"]
    assert sorted(cov["models_missing"]) == sorted(set(models) - with_chars)
    assert info["metric_coverage"]["acc"]["rows"] == 20 * len(models)
    assert "acc_bytes" in info["metric_coverage"] and info["metric_coverage"]["acc_bytes"]["rows"] == 0


def test_fewer_than_three_models_writes_headers_and_says_why(tmp_path, capsys):
    df = store.example_store(n_models=2, n_items=6)
    path = tmp_path / "two.parquet"
    store.write(df, path)
    out = tmp_path / "a"
    assert main(["analyze", str(path), "--out", str(out), "--no-figures", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "fewer than 3 models" in printed
    for name in ("summary.csv", "ccdf.csv", "ordering.csv"):
        text = (out / name).read_text()
        assert text.strip(), f"{name} has no header"
    summary = pd.read_csv(out / "summary.csv")
    assert {"family", "task", "metric", "method", "n_items", "mean"} <= set(summary.columns)
    info = json.loads((out / "analysis.json").read_text())
    assert info["groups_skipped"] == [{"family": "example", "task": "toy", "n_models": 2,
                                       "reason": "fewer than 3 models"}]


def test_constant_curves_say_why_the_ordering_line_is_missing(tmp_path, capsys):
    df = simulate_store(n_items=10, seed=4)
    # every model gets the same log-likelihoods: every metric is constant across models
    first = df[df["model_id"] == df["model_id"].iloc[0]]
    df = pd.concat([first.assign(model_id=m, compute=c, params=p, tokens=t)
                    for m, c, p, t in df.groupby("model_id")[["compute", "params", "tokens"]].first()
                    .itertuples()], ignore_index=True)
    path = tmp_path / "const.parquet"
    store.write(df, path)
    out = tmp_path / "a"
    assert main(["analyze", str(path), "--out", str(out), "--no-figures", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ordering" in printed and "undefined" in printed and "constant" in printed
    info = json.loads((out / "analysis.json").read_text())
    assert info["ordering_undefined"], info


def test_analyze_dataframe_input_is_validated_like_a_path():
    df = store.example_store(n_models=3, n_items=4).astype({"is_correct": object})
    df["is_correct"] = np.where(df["is_correct"], "yes", "no")
    with pytest.raises(store.StoreValidationError, match="is_correct is not a boolean"):
        analyze.run(df, analyze.Options(figures=False, progress=False))
