"""Per-item correlations, summaries and the `capscale analyze` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from capscale.analysis import chain, correlate
from capscale.cli import main
from capscale.data import store


def test_rank_invariance_vector():
    x = np.arange(6.0)
    y = np.array([-5, -3, -4, -1, -2, 0.0])
    Y = np.c_[y, np.exp(y)]
    np.testing.assert_allclose(correlate.correlate_matrix(x, Y, "spearman"), [0.885714] * 2, atol=1e-6)
    np.testing.assert_allclose(correlate.correlate_matrix(x, Y, "kendall"), [0.733333] * 2, atol=1e-6)
    np.testing.assert_allclose(correlate.correlate_matrix(x, Y, "pearson"), [0.885714, 0.773493], atol=1e-6)


@pytest.mark.parametrize("method,ref", [("pearson", stats.pearsonr), ("spearman", stats.spearmanr),
                                        ("kendall", stats.kendalltau)])
def test_matches_scipy_with_ties_and_constants(method, ref):
    rng = np.random.default_rng(1)
    x = np.sort(rng.normal(size=8))
    Y = rng.integers(0, 3, size=(8, 80)).astype(float)
    Y[:, 0] = 1.0  # constant column
    got = correlate.correlate_matrix(x, Y, method)
    want = np.array([ref(x, Y[:, s])[0] if np.ptp(Y[:, s]) else np.nan for s in range(Y.shape[1])])
    assert np.isnan(got[0])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_spearman_kendall_equal_for_logp_and_p():
    items = chain.compute(store.example_store(n_models=6, n_items=40, seed=2))
    c = correlate.per_item_correlations(items, metrics=["log_p_vocab_correct", "p_vocab_correct"])
    for method in ("spearman", "kendall"):
        a = c[(c.method == method) & (c.metric == "log_p_vocab_correct")].sort_values("doc_id").r.to_numpy()
        b = c[(c.method == method) & (c.metric == "p_vocab_correct")].sort_values("doc_id").r.to_numpy()
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_constant_items_counted_as_nan_and_brier_negated():
    df = store.example_store(n_models=4, n_items=10, seed=0)
    items = chain.compute(df)
    c = correlate.per_item_correlations(items, metrics=["acc", "brier", "p_choices_correct"])
    s = correlate.summarize(c).set_index(["metric", "method"])
    acc = items.pivot(index="model_id", columns="doc_id", values="acc")
    n_const = int((acc.max() == acc.min()).sum())
    assert s.loc[("acc", "spearman"), "num_nan"] == n_const
    assert s.loc[("acc", "spearman"), "nan_frac"] == pytest.approx(n_const / 10)
    sp_b = c[(c.metric == "brier") & (c.method == "spearman")].r.to_numpy()
    assert np.nanmean(sp_b) > 0  # brier falls with compute in the example store: negated -> positive


def test_summary_statistics_trapezoid_example():
    corr = pd.DataFrame({"family": "f", "task": "t", "metric": "acc", "method": "spearman",
                         "doc_id": [0, 1, 2, 3], "r": [-0.5, 0.25, 0.75, np.nan]})
    s = correlate.summarize(corr).iloc[0]
    assert s["auc"] == pytest.approx(0.875, abs=1e-5)
    assert s["auc_exact"] == pytest.approx(1 + 0.5 / 3)
    assert s["neg_w1_min"] == pytest.approx(-(1 - 0.5 / 3))
    assert s["frac_ge_0.75"] == pytest.approx(1 / 3)
    assert (s["n_items"], s["n_valid"], s["num_nan"]) == (4, 3, 1)
    cc = correlate.ccdf(corr, grid=np.array([-1.0, 0.0, 0.75]))
    np.testing.assert_allclose(cc.ccdf, [1.0, 2 / 3, 0.0])


def test_missing_item_for_one_model_uses_remaining_models():
    df = store.example_store(n_models=5, n_items=6, seed=4)
    df = df[~((df.model_id == "m0") & (df.doc_id == 3))]
    items = chain.compute(df)
    c = correlate.per_item_correlations(items, metrics=["log_p_vocab_correct"], methods=["pearson"])
    assert c.set_index("doc_id").loc[3, "n_models"] == 4
    assert c.set_index("doc_id").loc[0, "n_models"] == 5


def test_analyze_cli_writes_tables_and_figures(tmp_path, capsys):
    path = tmp_path / "s.parquet"
    store.write(store.example_store(n_models=4, n_items=25), path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = tmp_path / "out"
    for f in ("per_item.parquet", "correlations.parquet", "summary.csv", "ccdf.csv", "ordering.csv",
              "analysis.json", "figures/ccdf_example_toy.png", "figures/mass_example_toy.png"):
        assert (out / f).exists(), f
    summary = pd.read_csv(out / "summary.csv")
    for col in ("family", "task", "metric", "method", "n_items", "nan_frac", "mean", "median", "frac_ge_0.75"):
        assert col in summary.columns
    corr = pd.read_parquet(out / "correlations.parquet")
    assert {"family", "task", "metric", "method", "doc_id", "r"} <= set(corr.columns)
    assert len(corr) == 25 * 3 * corr.metric.nunique()
    info = json.loads((out / "analysis.json").read_text())
    assert info["models"] == 4
    assert (out / "figures/ccdf_example_toy.png").read_bytes()[:4] == b"\x89PNG"


def test_empty_summary_ccdf_and_ordering_keep_their_columns():
    empty = pd.DataFrame(columns=["family", "task", "metric", "method", "doc_id", "r", "p_value", "n_models",
                                  "negated"])
    summary = correlate.summarize(empty)
    assert len(summary) == 0 and {"family", "task", "metric", "method", *correlate.SUMMARY_COLUMNS} <= set(
        summary.columns)
    ordering = correlate.ordering_check(summary)
    assert len(ordering) == 0 and "undefined_reason" in ordering.columns


def test_ordering_check_says_why_it_is_undefined():
    rows = []
    for metric in correlate.ORDER:
        r = np.full(5, np.nan) if metric == "acc" else np.linspace(0.1, 0.9, 5)
        rows.append(pd.DataFrame({"family": "f", "task": "t", "metric": metric, "method": "pearson",
                                  "doc_id": range(5), "r": r}))
    ordering = correlate.ordering_check(correlate.summarize(pd.concat(rows)))
    mean = ordering[ordering["statistic"] == "mean"].iloc[0]
    assert mean["holds"] is None or pd.isna(mean["holds"])
    assert "acc" in mean["undefined_reason"] and "constant" in mean["undefined_reason"]
