"""The streamed analysis (``capscale analyze --stream / --workers / --executor ray``): the in-memory tables, shard by
shard; bad shards stop the run or are skipped and counted; an interrupted run resumes from its per-item files."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capscale.analysis import chain
from capscale.cli import main
from capscale.data import store
from capscale.errors import UsageError
from capscale.pipelines import _stream, analyze
from capscale.testing import sharded_store, simulate_store

ATOL = 1e-9


def assert_same_analysis(mem: Path, streamed: Path, items: str = "common", atol: float = ATOL,
                         ignore: tuple[str, ...] = ()) -> None:
    """Every table of two analyze results folders agrees to ``atol`` (per_item: the streamed folder's rows, selected)."""
    for name in ("summary.csv", "ccdf.csv", "ordering.csv", "items_excluded.csv", "excluded.csv"):
        assert (mem / name).exists() == (streamed / name).exists(), name
        if (mem / name).exists():
            pd.testing.assert_frame_equal(pd.read_csv(mem / name), pd.read_csv(streamed / name), check_exact=False,
                                          rtol=0, atol=atol, obj=name)
    pd.testing.assert_frame_equal(pd.read_parquet(mem / "correlations.parquet"),
                                  pd.read_parquet(streamed / "correlations.parquet"), check_exact=False, rtol=0,
                                  atol=atol, obj="correlations")
    def per_item(out: Path) -> pd.DataFrame:
        if (out / "per_item.parquet").is_file():
            return pd.read_parquet(out / "per_item.parquet")
        return chain.select_items(analyze.read_per_item(out), items)[0].reset_index(drop=True)

    pd.testing.assert_frame_equal(per_item(mem), per_item(streamed), check_exact=False, rtol=0, atol=atol,
                                  obj="per_item")
    a = json.loads((mem / "analysis.json").read_text())
    b = json.loads((streamed / "analysis.json").read_text())
    skip = ("files", "figures", "streaming", *ignore)
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def _in_memory(st: Path, out: Path, **kw) -> analyze.RunResult:
    return analyze.run(store.read(st), analyze.Options(out=out, progress=False, source=str(st), figures=False, **kw))


def _streamed(st: Path, out: Path, **kw) -> analyze.RunResult:
    return analyze.run(st, analyze.Options(out=out, progress=False, stream=True, figures=False, **kw))


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory) -> Path:
    """A sharded family (12 checkpoints x 3 tasks, one shard each), one model short of items, and a second family in
    one multi-model file."""
    st = tmp_path_factory.mktemp("sim") / "store"
    sharded_store(st, n_checkpoints=12, n_sizes=4, items=(40, 25, 15), seed=3)
    victim = sorted(st.glob("simfam-1*task0*.parquet"))[0]
    df = pd.read_parquet(victim)
    df[df["doc_id"] >= 5].to_parquet(victim, index=False)  # this checkpoint lacks 5 items of task0
    other = simulate_store(n_items=20, seed=5, task="task0", family="other")
    other["n_chars"] = 4 + other["choice_idx"]
    (st / "other").mkdir()
    other.to_parquet(st / "other" / "all_models.parquet", index=False)
    return st


def _copy(st: Path, dest: Path) -> Path:
    shutil.copytree(st, dest)
    return dest


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("items", ["common", "all"])
def test_streamed_equals_in_memory_on_a_simulated_store(sim_store, tmp_path, workers, items):
    mem = _in_memory(sim_store, tmp_path / "mem", items=items)
    res = _streamed(sim_store, tmp_path / "str", workers=workers, items=items)
    assert_same_analysis(tmp_path / "mem", tmp_path / "str", items=items)
    assert res.notes == mem.notes and res.summary["streaming"]["shards"] == 37
    assert (tmp_path / "str" / "per_item.parquet").is_dir()
    pd.testing.assert_frame_equal(res.tables["summary"], mem.tables["summary"])


@pytest.mark.parametrize("items", ["common", "all"])
@pytest.mark.parametrize("block_rows", [5, 70])
def test_per_task_jobs_in_item_blocks_give_the_in_memory_tables(sim_store, tmp_path, items, block_rows):
    # 5 rows: one item per block (a task has 12 models); 70: blocks of a few items, split at no task boundary
    _in_memory(sim_store, tmp_path / "mem", items=items)
    res = _streamed(sim_store, tmp_path / "str", items=items, block_rows=block_rows)
    assert_same_analysis(tmp_path / "mem", tmp_path / "str", items=items)
    whole = _streamed(sim_store, tmp_path / "whole", items=items, block_rows=10**9)
    assert res.notes == whole.notes
    n_items = pd.read_parquet(tmp_path / "str" / "correlations.parquet").groupby("task")["doc_id"].nunique()
    assert n_items["task0"] > 1 and (block_rows == 5 or n_items["task0"] * 12 > block_rows)


def test_per_model_moments_merged_over_blocks_equal_pandas():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 6, 500)
    values = rng.normal(size=500)
    values[rng.random(500) < 0.2] = np.nan
    values[codes == 5] = np.nan  # a model without values
    values[np.flatnonzero(codes == 4)[1:]] = np.nan  # a model with one value
    mo = _stream._Moments(6)
    for a in range(0, 500, 37):
        mo.add(codes[a:a + 37], values[a:a + 37])
    mean, sem = mo.mean_sem()
    g = pd.DataFrame({"m": codes, "v": values}).groupby("m")["v"]
    np.testing.assert_allclose(mean, g.mean().to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(sem, g.sem().to_numpy(), rtol=0, atol=1e-12)
    # the two rows per model the curves figure gets have the model's mean and SE
    ix = _stream._GroupIndex(docs=np.arange(1), models=pd.Index([f"m{i}" for i in range(6)]),
                             count=np.ones((6, 1), np.uint8), n_choices_min=np.ones(1), n_choices_max=np.ones(1),
                             compute=np.arange(6.0) + 1, params=np.arange(6.0) + 1, metrics=[])
    f = _stream._curves_frame(ix, {"acc": mo}).groupby("model_id")["acc"]
    np.testing.assert_allclose(f.mean().to_numpy(), g.mean().to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(f.sem().to_numpy(), g.sem().to_numpy(), rtol=0, atol=1e-12)


def test_streamed_selection_and_figures_match(sim_store, tmp_path):
    opts = {"family": "simfam", "tasks": ("task1", "task2"), "methods": ("spearman", "kendall")}
    analyze.run(store.read(sim_store), analyze.Options(out=tmp_path / "mem", progress=False, source=str(sim_store),
                                                       **opts))
    res = analyze.run(sim_store, analyze.Options(out=tmp_path / "str", progress=False, stream=True, **opts))
    # the in-memory path warns about partial coverage in the whole store (here task0, not analysed); the
    # streamed one about the groups it analyses
    assert_same_analysis(tmp_path / "mem", tmp_path / "str", ignore=("coverage_warnings",))
    assert json.loads((tmp_path / "str" / "analysis.json").read_text())["coverage_warnings"] == []
    assert res.summary["streaming"]["shards"] == 24  # the other tasks' and family's files are not read
    figs = sorted(p.name for p in (tmp_path / "str" / "figures").glob("*.png"))
    assert figs == sorted(p.name for p in (tmp_path / "mem" / "figures").glob("*.png")) and len(figs) == 6


def test_only_chain_columns_are_read(sim_store, tmp_path, monkeypatch):
    seen = []
    real = store._read_one

    def spy(path, columns=None):
        seen.append(tuple(columns) if columns is not None else None)
        return real(path, columns)

    monkeypatch.setattr(store, "_read_one", spy)
    _streamed(sim_store, tmp_path / "a", tasks=("task2",))
    assert seen and all(c == _stream.CHAIN_COLUMNS for c in seen)
    assert "n_tokens" not in _stream.CHAIN_COLUMNS


def _damage(path: Path, how: str) -> None:
    if how == "corrupt":
        data = bytearray(path.read_bytes())
        data[-12:-4] = b"\0" * 8  # the footer length and magic
        path.write_bytes(bytes(data))
    elif how == "schema":
        pd.read_parquet(path).drop(columns=["loglik"]).to_parquet(path, index=False)
    elif how == "invalid":
        df = pd.read_parquet(path)
        df.loc[3, "loglik"] = np.nan
        df.to_parquet(path, index=False)


@pytest.mark.parametrize("how", ["corrupt", "schema", "invalid"])
def test_a_bad_shard_stops_the_run_or_is_skipped_and_counted(sim_store, tmp_path, capsys, how):
    st = _copy(sim_store, tmp_path / "store")
    bad = sorted(st.glob("simfam-2*task1*.parquet"))[0]
    _damage(bad, how)
    out = tmp_path / "a"
    assert main(["analyze", str(st), "--out", str(out), "--stream", "--quiet", "--no-figures"]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "--skip-bad-shards" in err and "Traceback" not in err
    assert {"corrupt": "corrupt", "schema": "'loglik'", "invalid": "non_finite_loglik"}[how] in err
    for f in ("summary.csv", "correlations.parquet", "analysis.json", "ordering.csv"):
        assert not (out / f).exists(), f

    assert main(["analyze", str(st), "--out", str(out), "--skip-bad-shards", "--workers", "2", "--quiet",
                 "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "bad shards skipped: 1" in printed and str(bad) in printed
    info = json.loads((out / "analysis.json").read_text())
    assert info["streaming"]["bad_shards_skipped"] == 1 and info["streaming"]["bad_shards"][0]["path"] == str(bad)
    # the same as analysing the store without that file
    bad.unlink()
    _in_memory(st, tmp_path / "mem")
    info_mem = json.loads((tmp_path / "mem" / "analysis.json").read_text())
    assert info["rows"] == info_mem["rows"]
    for name in ("summary.csv", "ordering.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "mem" / name), pd.read_csv(out / name),
                                      check_exact=False, rtol=0, atol=ATOL)


def test_an_item_in_two_shards_is_an_error_before_any_result(sim_store, tmp_path):
    st = _copy(sim_store, tmp_path / "store")
    src = sorted(st.glob("simfam-0*task2*.parquet"))[0]
    shutil.copy(src, st / "copy_of_a_shard.parquet")
    with pytest.raises(store.StoreValidationError, match="duplicate_key") as e:
        _streamed(st, tmp_path / "a")
    assert "copy_of_a_shard.parquet" in str(e.value)
    assert not (tmp_path / "a" / "summary.csv").exists() and not (tmp_path / "a" / "_parts").exists()


def test_an_interrupted_run_resumes_from_its_per_item_files(sim_store, tmp_path):
    st = _copy(sim_store, tmp_path / "store")
    last = sorted(st.glob("simfam-3*.parquet"))[-1]
    good = last.read_bytes()
    _damage(last, "invalid")  # pass 1 stops at this file ...
    out = tmp_path / "a"
    with pytest.raises(_stream.BadShardError, match="rerun resumes"):
        _streamed(st, out)
    done = {p.name: p.stat().st_mtime_ns for p in (out / "per_item.parquet").glob("*.parquet")}
    assert 0 < len(done) < 37 and not (out / "summary.csv").exists()
    last.write_bytes(good)  # ... the file is repaired and the run is started again
    res = _streamed(st, out, workers=2)
    s = res.summary["streaming"]
    assert s["shards_resumed"] == len(done) and s["shards_computed"] == 37 - len(done)
    assert {n: (out / "per_item.parquet" / n).stat().st_mtime_ns for n in done} == done
    _in_memory(st, tmp_path / "mem")
    assert_same_analysis(tmp_path / "mem", out)
    # a store file that changed is recomputed; a per-item file of a file no longer in the store is removed
    df = pd.read_parquet(last)
    df["loglik"] -= 0.5
    df.to_parquet(last, index=False)
    (out / "per_item.parquet" / "stale-0000000000000000.parquet").write_bytes(b"x")
    res = _streamed(st, out)
    assert res.summary["streaming"]["shards_computed"] == 1
    assert not (out / "per_item.parquet" / "stale-0000000000000000.parquet").exists()
    _in_memory(st, tmp_path / "mem2")
    assert_same_analysis(tmp_path / "mem2", out)


def test_options_that_need_streaming(sim_store, tmp_path, capsys):
    with pytest.raises(UsageError, match="path"):
        analyze.run(store.read(sim_store), analyze.Options(workers=2))
    with pytest.raises(UsageError, match="out"):
        analyze.run(sim_store, analyze.Options(stream=True))
    assert main(["analyze", str(sim_store), "--out", str(tmp_path / "a"), "--workers", "0"]) == 2
    assert main(["analyze", str(sim_store), "--out", str(tmp_path / "a"), "--in-memory", "--workers", "2"]) == 2
    assert "streamed analysis" in capsys.readouterr().err
    assert not analyze._streams(sim_store, analyze.Options())  # a small store: in memory by default


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Path:
    """The demo family's store as `capscale demo` writes it (every checkpoint, the first 40 items of each task)."""
    import yaml

    from capscale.eval.evaluate import evaluate_item_sets
    from capscale.eval.shards import EvalOptions
    from capscale.pipelines.demo import DEMO_FAMILY
    from capscale.synthetic import world

    root = tmp_path_factory.mktemp("demo")
    spec = yaml.safe_load((DEMO_FAMILY / "family.yaml").read_text())
    for ck in spec["checkpoints"]:
        ck["path"] = str((DEMO_FAMILY / ck["path"]).resolve())
    (root / "family.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    tasks = {name: items.head(40) for name, items in world.load_tasks(DEMO_FAMILY / "tasks").items()}
    evaluate_item_sets(root / "family.yaml", tasks, out=root / "store", options=EvalOptions(progress=False),
                       task_source="synthetic")
    return root / "store"


def test_streamed_equals_in_memory_on_the_demo_store(demo_store, tmp_path):
    mem = analyze.run(store.read(demo_store), analyze.Options(out=tmp_path / "mem", progress=False,
                                                              source=str(demo_store)))
    res = analyze.run(demo_store, analyze.Options(out=tmp_path / "str", progress=False, stream=True, workers=2))
    assert_same_analysis(tmp_path / "mem", tmp_path / "str")
    assert res.notes == mem.notes
    assert sorted(p.name for p in (tmp_path / "str" / "figures").glob("*.png")) == \
        sorted(p.name for p in (tmp_path / "mem" / "figures").glob("*.png"))


# ------------------------------------------------------------------------------------------------ Ray

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'capscale[ray]'")
    if ray.is_initialized():  # pragma: no cover - a session left over by another test module
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.parametrize("write_from", ["driver", "worker"])
def test_ray_executor_gives_the_local_tables(ray_local, sim_store, tmp_path, write_from):
    _streamed(sim_store, tmp_path / "local")
    res = _streamed(sim_store, tmp_path / "ray", executor="ray", write_from=write_from)
    assert res.summary["streaming"]["ray"]["write_from"] == write_from
    assert_same_analysis(tmp_path / "local", tmp_path / "ray", atol=0)
    _in_memory(sim_store, tmp_path / "mem")
    assert_same_analysis(tmp_path / "mem", tmp_path / "ray")


def test_ray_reports_a_bad_shard_by_path(ray_local, sim_store, tmp_path):
    st = _copy(sim_store, tmp_path / "store")
    bad = sorted(st.glob("simfam-1*task2*.parquet"))[0]
    _damage(bad, "invalid")
    with pytest.raises(_stream.BadShardError, match="non_finite_loglik") as e:
        _streamed(st, tmp_path / "a", executor="ray", max_retries=0)
    assert str(bad) in str(e.value)
    res = _streamed(st, tmp_path / "a", executor="ray", max_retries=0, skip_bad_shards=True)
    assert res.summary["streaming"]["bad_shards_skipped"] == 1
    assert res.summary["streaming"]["shards_resumed"] == 36  # the good files were written by the first run


# ------------------------------------------------------------------------------------------------ bench


def test_sharded_store_is_a_valid_store_of_the_stated_shape(tmp_path):
    info = sharded_store(tmp_path / "s", n_checkpoints=6, n_sizes=3, items=(7, 3), seed=1)
    df = store.read(tmp_path / "s")
    assert info["rows"] == len(df) == 6 * 10 * 4 and info["shards"] == 12 == len(list((tmp_path / "s").iterdir()))
    assert df.groupby("model_id")["compute"].first().is_unique and df["params"].nunique() == 3
    acc = chain.compute(df).groupby("params")["p_choices_correct"].mean()
    assert acc.is_monotonic_increasing  # the planted laws: larger models put more mass on the gold


def test_bench_report_and_figure(tmp_path):
    import argparse

    from capscale.benchmarks import analyze_scale

    runs = [{"mode": m, "rows": n, "shards": 2000, "items_per_task": [1, 2], "wall_s": w, "rc": 0,
             "peak_tree_bytes": b, "stage_seconds": {"chain": 1.0}}
            for m, n, w, b in [("streamed", 10**6, 10.0, 2**30), ("streamed", 10**8, 600.0, 3 * 2**30),
                               ("in-memory", 10**6, 5.0, 2**30)]]
    args = argparse.Namespace(rows="1e6,1e8", checkpoints=500, workers=2, in_memory_max=1e6, no_figures=False)
    lines = analyze_scale.report_lines(args, runs, {"shard_rows": 10, "chain_rows_per_s": 2e6, "job_rows_per_s": 1e6})
    text = "\n".join(lines)
    assert "100M rows in <= 15 min: met (10.0 min)" in text and "peak RSS <= 4 GB: met" in text
    assert "chain >= 1M rows/s per core: met" in text and "time x60.0 (0.60 of linear)" in text
    analyze_scale.figure(runs, str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    m = analyze_scale.measure([sys.executable, "-c", "x = bytearray(50 * 2**20)"])
    assert m["rc"] == 0 and (m["peak_tree_bytes"] is None or m["peak_tree_bytes"] > 0)


@pytest.mark.parametrize("stage", ["mass", "emergence", "validate"])
def test_bench_stage_commands_run(stage, tmp_path):
    """`capscale bench analyze-scale --stage mass|emergence|validate`: both command lines run on a small sharded store,
    and the report compares their memory."""
    import argparse

    from capscale.benchmarks import analyze_scale
    from capscale.testing import sharded_store

    st = tmp_path / "store"
    sharded_store(st, n_checkpoints=12, n_sizes=4, items=(30, 20))
    args = argparse.Namespace(rows="1e4", checkpoints=12, workers=1, in_memory_max=1e4, no_figures=True, stage=stage)
    cli = [sys.executable, "-m", "capscale.cli", stage]
    runs = []
    for mode in ("streamed", "in-memory"):
        cmd, shown = analyze_scale._stage_command(stage, mode, cli, st, args)
        out = tmp_path / mode
        m = analyze_scale.measure([c.replace("{OUT}", str(out)) for c in cmd],
                                  {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"})
        assert m["rc"] == 0, m["output"][-2000:]
        if stage == "validate":
            assert m["output"].strip() == "{'rows': 2400, 'models': 12, 'tasks': 2, 'items': 50}", m["output"][-2000:]
        else:
            assert (out / ("mass_fits.csv" if stage == "mass" else "verdicts.csv")).exists()
        assert "STORE" in shown and str(st) not in shown
        runs.append({"mode": mode, "stage": stage, "rows": 10_000, "shards": 24, "items_per_task": [30, 20],
                     "wall_s": m["wall_s"], "rc": 0, "peak_tree_bytes": m["peak_tree_bytes"] or 2**20})
    text = "\n".join(analyze_scale.report_lines(args, runs, {}))
    assert f"{stage} from disk task by task" in text and "whole store in memory" in text
