"""The backtest suite (capscale.pipelines.suite): summaries with golden numbers, uninformative intervals, options."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from capscale.pipelines import suite


def _rows():
    base = {"dataset": "d", "refused": False, "chance": 0.25}
    rows = [
        {**base, "method": "auto", "actual": 0.5, "predicted": 0.52, "lower": 0.45, "upper": 0.6},
        {**base, "method": "auto", "actual": 0.7, "predicted": 0.6, "lower": 0.25, "upper": 1.0},  # uninformative
        {**base, "method": "loglinear", "actual": 0.5, "predicted": 0.56, "lower": 0.51, "upper": 0.6},
        {**base, "method": "loglinear", "actual": 0.7, "predicted": 0.66, "lower": 0.6, "upper": 0.8},
        {**base, "method": "sigmoid", "refused": True, "actual": math.nan, "predicted": math.nan, "lower": math.nan,
         "upper": math.nan},
    ]
    df = pd.DataFrame(rows)
    df["abs_err"] = (df["predicted"] - df["actual"]).abs()
    df["covered"] = (df["lower"] <= df["actual"]) & (df["actual"] <= df["upper"])
    df["uninformative"] = [suite.uninformative(lo, hi, 0.25) for lo, hi in zip(df["lower"], df["upper"])]
    df["width"] = df["upper"] - df["lower"]
    for lv in suite.LEVELS:
        df[f"lower_{round(100 * lv)}"] = df["lower"]
        df[f"upper_{round(100 * lv)}"] = df["upper"]
    return df


def test_uninformative():
    assert suite.uninformative(0.25, 1.0, 0.25) and suite.uninformative(0.2, 0.995, 0.25)
    assert not suite.uninformative(0.3, 1.0, 0.25) and not suite.uninformative(0.25, 0.9, 0.25)


def test_summarize_golden():
    s = suite.summarize(_rows()).set_index(["dataset", "method"])
    a = s.loc[("d", "auto")]
    assert a["n"] == 2 and a["mae_points"] == pytest.approx(6.0) and a["coverage_90"] == 1.0
    assert a["uninformative"] == 1 and a["mean_width_points"] == pytest.approx(15.0)  # the informative one only
    ll = s.loc[("d", "loglinear")]
    assert ll["mae_points"] == pytest.approx(5.0) and ll["coverage_90"] == 0.5
    assert s.loc[("d", "sigmoid")]["refused"] == 1 and s.loc[("d", "sigmoid")]["n"] == 0
    assert s.loc[("pooled", "auto")]["mae_points"] == pytest.approx(6.0)
    chk = suite._auto_check(suite.summarize(_rows())).set_index("dataset")
    assert chk.loc["d", "best_ref_method"] == "loglinear" and chk.loc["d", "auto_minus_best"] == pytest.approx(1.0)
    assert not chk.loc["d", "within_0.5"]


def test_reliability_figure(tmp_path):
    p = suite.plot_reliability(suite.summarize(_rows()), tmp_path / "rel.png")
    assert (tmp_path / "rel.png").stat().st_size > 1000 and str(p).endswith("rel.png")


def test_options_are_checked():
    with pytest.raises(ValueError, match="half must be"):
        suite.Options(half="both")
    with pytest.raises(ValueError, match="unknown suite data set"):
        suite.Options(sets=("nope",))
    names = [d.name for d in suite.DATASETS]
    assert names[:4] == ["olmo", "olmo_3b", "pythia", "demo"] and {d.half for d in suite.DATASETS} == {"dev",
                                                                                                        "confirm"}


def test_a_missing_data_set_is_a_note(tmp_path):
    with pytest.raises(ValueError, match="nothing ran.*olmo: not run"):
        suite.run(suite.Options(data=str(tmp_path), sets=("olmo",)))
