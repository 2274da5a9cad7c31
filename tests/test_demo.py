"""`capscale demo` end to end on the committed demo family, and its early errors."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from capscale.cli import main
from capscale.data import store
from capscale.pipelines import demo
from capscale.pipelines.demo import DEMO_FAMILY, DemoError


def _quiet(out) -> demo.Options:
    return demo.Options(out=out, progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    return out, demo.run(None, _quiet(out))


def test_demo_writes_everything_and_checks_hold(demo_out):
    out, res = demo_out
    assert res.summary["failed"] == [] and res.notes == [], res.summary["stages"]
    assert res.stage == "demo" and res.out == out
    for f in ("report.html", "run.json", "checks.json", "analysis/analysis.json", "predict/backtest.csv",
              "emergence/verdicts.csv"):
        assert out / f in res.files, f
    record = json.loads((out / "run.json").read_text())
    assert record == {k: v for k, v in res.summary.items() if k != "failed"}
    assert set(record["stages"]) == {"eval", "analysis", "mass", "predict", "emergence"}
    assert set(record["stages"]["emergence"]["summary"]) == {"synth_onehop", "synth_twohop", "synth_birthdate"}
    assert "summary" not in record["stages"]["analysis"] and "summary" in record["stages"]["mass"]
    em = json.loads((out / "emergence" / "synth_birthdate.json").read_text())
    assert em["command"] == "capscale demo" and em["settings"]["B"] == 500
    for f in ("report.html", "run.json", "checks.json", "family.yaml", "analysis/summary.csv",
              "mass/mass_predictions.csv", "predict/backtest.csv", "emergence/synth_birthdate.json"):
        assert (out / f).exists(), f
    scores = store.read(out / "store")
    assert scores["model_id"].nunique() == 26 and scores["params"].nunique() == 10  # family.yaml: 10 sizes
    assert set(scores["task"]) == {"synth_onehop", "synth_twohop", "synth_birthdate"}
    assert em["n_models"] == 10  # the emergence stage reads the final checkpoint of every size
    assert em["verdict"] != "INSUFFICIENT_DATA", em["reasons"]  # issue 14: a decisive verdict on the family
    checks = json.loads((out / "checks.json").read_text())
    assert len(checks) == 3
    assert all(c["passed"] for c in checks.values()), checks
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 10 and "What the demo family shows" in html


def test_demo_store_read_task_by_task_equals_in_memory(demo_out, tmp_path):
    """Issue 19: mass fits (with both backtests) and emergence inputs from the demo store on disk, read task by
    task, equal the same store in memory to 1e-9."""
    from helpers_streaming import assert_inputs_equal, compare_mass

    from capscale.pipelines import emergence

    out, _ = demo_out
    scores = store.read(out / "store")
    compare_mass(out / "store", scores, tmp_path / "p", backtest="loglinear,sigmoid")
    compare_mass(out / "store", scores, tmp_path / "t", backtest="sigmoid", backtest_axis="tokens", final_only=True)
    for steps in ("final", "all"):
        on_disk, _ = emergence.load_inputs(out / "store", steps=steps)
        memory, _ = emergence.store_inputs(store.read(out / "store", validate_store=False), steps=steps)
        assert_inputs_equal(on_disk, memory)


def test_demo_rerun_reuses_store(demo_out, tmp_path):
    out, _ = demo_out
    before = {p.name: p.stat().st_mtime_ns for p in (out / "store").glob("*.parquet")}
    res = demo.run(DEMO_FAMILY, _quiet(out))
    after = {p.name: p.stat().st_mtime_ns for p in (out / "store").glob("*.parquet")}
    assert before == after and res.summary["failed"] == []
    bt = pd.read_csv(out / "predict" / "backtest.csv")
    assert {"task", "method", "heldout_model", "predicted", "actual", "abs_err", "lower", "upper"} <= set(bt.columns)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permission check needs a normal user")
def test_demo_unwritable_output_fails_early(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(DemoError, match="cannot write"):
        demo.run(None, demo.Options(out=ro / "out", progress=False))


def test_demo_output_is_a_file_fails_early(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["demo", "--out", str(f / "sub"), "--quiet"]) == 1  # invalid input
    err = capsys.readouterr().err
    assert err.startswith("capscale demo: error: cannot write to the output folder") and err.count("\n") == 1


def test_demo_missing_family(tmp_path):
    with pytest.raises(DemoError, match="demo family not found"):
        demo.run(tmp_path / "nofamily", demo.Options(out=tmp_path / "o", progress=False))
    assert (DEMO_FAMILY / "family.yaml").exists()
