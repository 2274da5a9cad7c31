"""Mass fits and emergence inputs read a store on disk task by task, with the results of the store in memory.

``capscale mass STORE`` and ``capscale emergence STORE`` never hold the whole store: :func:`capscale.data.store.index`
lists models and tasks from the model-level columns, then each task's rows are read (and validated) on their own.
These tests pin that the results equal the in-memory path to 1e-9 (on a simulated store here, on the demo store in
``test_demo.py``), that only one task's files are read at a time, and that bad input is still named.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_streaming import assert_inputs_equal, assert_tables_equal, compare_mass

from capscale.analysis import chain, mass
from capscale.data import store
from capscale.errors import InputError
from capscale.pipelines import emergence
from capscale.pipelines import mass as mass_stage
from capscale.testing import simulate_store


def _sim() -> pd.DataFrame:
    a = simulate_store(n_items=120, task="sim_a", family="sim", seed=0)
    b = simulate_store(n_items=80, task="sim_b", family="sim", seed=1, saturation=0.6)
    return store.normalize(pd.concat([a, b], ignore_index=True))


def _write_shards(df: pd.DataFrame, root, validate: bool = True) -> None:
    """One file per (model, task), as ``capscale eval`` writes them."""
    root.mkdir(parents=True, exist_ok=True)
    for (m, t), g in df.groupby(["model_id", "task"], sort=True):
        store.write(g.reset_index(drop=True), root / f"{m}__{t}.parquet", validate_store=validate)


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory):
    df = _sim()
    root = tmp_path_factory.mktemp("sim") / "store"
    _write_shards(df, root)
    return root, df


def test_mass_from_disk_equals_in_memory(sim_store, tmp_path):
    path, df = sim_store
    res = compare_mass(path, df, tmp_path, backtest="loglinear,sigmoid")
    assert set(res.tables["fits"]["task"]) == {"sim_a", "sim_b"}
    assert len(res.tables["backtest"]) == 2 * 3 and (res.tables["backtest"]["error"] == "").all()


def test_mass_fits_equal_one_whole_frame_fit(sim_store, tmp_path):
    """Task by task is the same model as fitting the whole store at once (what mass.fit does in memory)."""
    path, df = sim_store
    cfg = mass.MassConfig(n_draws=60)
    whole = mass.fit(df, items=chain.compute(df), config=cfg)
    res = mass_stage.run(path, mass_stage.Options(out=str(tmp_path), figures=False, draws=60))
    expect = pd.concat([mass.fits_table(whole[t]) for t in sorted(whole)], ignore_index=True)
    assert_tables_equal(res.tables["fits"], expect, "fits")


def test_mass_reads_one_task_at_a_time(sim_store, tmp_path, monkeypatch):
    path, df = sim_store
    seen: list[str] = []
    real = store._read_selected

    def spy(f, *args):
        seen.append(f.name)
        return real(f, *args)

    monkeypatch.setattr(store, "_read_selected", spy)
    mass_stage.run(path, mass_stage.Options(out=str(tmp_path), figures=False, draws=20))
    tasks = [n.split("__")[1].removesuffix(".parquet") for n in seen]
    assert sorted(seen) == sorted(p.name for p in path.glob("*.parquet"))  # every file once
    assert tasks == sorted(tasks)  # all of sim_a's files, then all of sim_b's: one task in memory at a time


def test_mass_selection_reads_only_its_models(sim_store, tmp_path, monkeypatch):
    """--final-only and --task prune files: the other tasks' and models' files are not opened."""
    path, df = sim_store
    seen: list[str] = []
    real = store._read_selected
    monkeypatch.setattr(store, "_read_selected", lambda f, *args: seen.append(f.name) or real(f, *args))
    mass_stage.run(path, mass_stage.Options(out=str(tmp_path), figures=False, draws=20, tasks=("sim_b",)))
    assert seen and all("__sim_b" in n for n in seen)


def test_emergence_inputs_from_disk_equal_in_memory(sim_store):
    path, _ = sim_store
    for steps in ("final", "all"):
        on_disk, notes = emergence.load_inputs(path, steps=steps)
        memory, _ = emergence.store_inputs(store.read(path, validate_store=False), steps=steps)
        assert_inputs_equal(on_disk, memory)
        assert notes[0] == "input format: store"


def test_nonfinite_logliks_task_by_task(sim_store, tmp_path):
    """A NaN loglik: emergence excludes the item as in memory (and notes it per task); mass names file and row."""
    _, df = sim_store
    bad = df.copy()
    hit = bad.index[(bad["task"] == "sim_b") & (bad["model_id"] == "sim-m3")][5]
    bad.loc[hit, "loglik"] = np.nan
    root = tmp_path / "store"
    _write_shards(bad, root, validate=False)
    on_disk, notes = emergence.load_inputs(root, steps="all")
    memory, _ = emergence.store_inputs(store.read(root, validate_store=False), steps="all")
    assert_inputs_equal(on_disk, memory)
    assert on_disk[1].exclusions["items_nonfinite_loglik"] == 1 and "items_nonfinite_loglik" not in on_disk[0].exclusions
    assert any(n.startswith("task 'sim_b':") and "non-numeric or infinite loglik" in n for n in notes)
    row = int((bad.loc[(bad["task"] == "sim_b") & (bad["model_id"] == "sim-m3")].index == hit).argmax())
    with pytest.raises(store.StoreValidationError) as e:
        mass_stage.run(root, mass_stage.Options(out=str(tmp_path / "m"), figures=False, draws=20))
    assert f"sim-m3__sim_b.parquet:{row}" in str(e.value)


def test_index_and_selected_read(sim_store):
    path, df = sim_store
    idx = store.index(path)
    assert len(idx) == df.groupby(["model_id", "task"]).ngroups and idx["rows"].sum() == len(df)
    assert set(idx.columns) >= {"file", "model_id", "family", "task", "params", "tokens", "compute", "rows"}
    one = store.read(path, tasks=["sim_b"], models=["sim-m0", "sim-m6"], store_index=idx)
    expect = df[(df["task"] == "sim_b") & df["model_id"].isin(["sim-m0", "sim-m6"])]
    pd.testing.assert_frame_equal(one.reset_index(drop=True), expect.reset_index(drop=True), check_like=True)
    with pytest.raises(InputError, match=r"no rows with tasks=\['nope'\].*tasks: \['sim_a', 'sim_b'\]"):
        store.read(path, tasks=["nope"])


def test_index_names_what_no_single_file_shows(sim_store, tmp_path):
    _, df = sim_store
    root = tmp_path / "store"
    _write_shards(df, root)
    f = root / "sim-m2__sim_b.parquet"
    g = pd.read_parquet(f)
    store.write(g.assign(params=g["params"] + 1), f)  # one model, two sizes, in two files
    with pytest.raises(store.StoreValidationError, match="inconsistent_model") as e:
        mass_stage.run(root, mass_stage.Options(out=str(tmp_path / "m"), figures=False))
    assert "sim-m2__sim_a.parquet" in str(e.value) and "sim-m2__sim_b.parquet" in str(e.value)
    g2 = g.astype({"family": object})
    g2.loc[3, "family"] = None
    store.write(g2, f, validate_store=False)
    with pytest.raises(store.StoreValidationError, match=r"sim-m2__sim_b.parquet:3"):
        store.index(root)


def test_index_from_footers_equals_reading_the_columns(sim_store, tmp_path, monkeypatch):
    """One-model shards are indexed from their Parquet statistics; the result is what reading the columns gives,
    and a file of many models (statistics min != max) is read."""
    path, df = sim_store
    fast = store.index(path)
    one = tmp_path / "one.parquet"
    store.write(df, one)
    whole = store.index(one)
    monkeypatch.setattr(store, "_one_model_file", lambda pf, cols: None)
    pd.testing.assert_frame_equal(fast, store.index(path))
    pd.testing.assert_frame_equal(whole, store.index(one))
    assert len(whole) == len(fast) and set(whole["file"]) == {str(one)}


def test_mass_bad_shard_of_a_later_task_leaves_no_partial_output(sim_store, tmp_path):
    _, df = sim_store
    root = tmp_path / "store"
    _write_shards(df, root)
    f = root / "sim-m4__sim_b.parquet"
    g = pd.read_parquet(f)
    store.write(g.assign(loglik=g["loglik"].abs() + 1.0), f, validate_store=False)  # positive logliks in sim_b only
    out = tmp_path / "out"
    with pytest.raises(store.StoreValidationError, match="positive_loglik") as e:
        mass_stage.run(root, mass_stage.Options(out=str(out), draws=20))  # sim_a (figures and all) succeeds first
    assert "sim-m4__sim_b.parquet:0" in str(e.value)
    assert not out.exists() or sorted(p.name for p in out.rglob("*") if p.is_file()) == []


def test_mass_rerun_never_mixes_an_earlier_runs_outputs(sim_store, tmp_path):
    path, _ = sim_store
    out = tmp_path / "out"
    mass_stage.run(path, mass_stage.Options(out=str(out), draws=20, backtest="loglinear"))
    assert (out / "mass_pred_sim_a.png").exists() and (out / "mass_backtest.csv").exists()
    res = mass_stage.run(path, mass_stage.Options(out=str(out), draws=20, tasks=("sim_b",)))
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted(f.name for f in res.files)
    assert "mass_pred_sim_a.png" not in left and "mass_backtest.csv" not in left and "mass_pred_sim_b.png" in left


def test_backtest_and_predict_read_a_store_task_by_task(sim_store, monkeypatch):
    """capscale backtest / predict STORE: the ladder is built one task at a time and each task's rows are read when
    its task comes; the rows equal the store in memory (every method, mass and cod included)."""
    from capscale.analysis.chain import ladder_from_store
    from capscale.data.ladder_table import with_chance
    from capscale.pipelines import backtest, fit
    from capscale.pipelines.inputs import read_ladder_or_store

    path, df = sim_store
    lad, reader = read_ladder_or_store(path)
    assert isinstance(reader, store.TaskReader) and reader.tasks == ["sim_a", "sim_b"]
    mem = with_chance(ladder_from_store(df), df)
    key = ["model_id", "task", "metric"]
    pd.testing.assert_frame_equal(lad.sort_values(key).reset_index(drop=True),
                                  mem.sort_values(key).reset_index(drop=True))
    seen: list[str] = []
    real = store._read_selected
    monkeypatch.setattr(store, "_read_selected", lambda f, *args: seen.append(f.name) or real(f, *args))
    opts = backtest.Options(all_tasks=True, method="all", bootstrap=5)
    on_disk = backtest.run(lad, opts, store=reader).summary["rows"]
    tasks_read = [n.split("__")[1].removesuffix(".parquet") for n in seen]
    assert tasks_read == sorted(tasks_read) and len(seen) == len(list(path.glob("*.parquet")))
    in_memory = backtest.run(mem, opts, store=df).summary["rows"]
    assert {r["method"] for r in on_disk} >= {"mass", "cod", "sigmoid"}
    assert pd.DataFrame(on_disk).drop(columns="warnings").equals(pd.DataFrame(in_memory).drop(columns="warnings"))
    popts = fit.Options(tasks=("sim_b",), method="mass", target=(1e9, 2e10), bootstrap=5)
    assert fit.run(lad, popts, store=reader).summary == fit.run(mem, popts, store=df).summary
    with pytest.raises(InputError, match="no rows with tasks=\\['nope'\\]"):
        reader.read_task("nope")


def test_validate_by_task_finds_what_the_whole_store_check_finds(sim_store, tmp_path):
    path, df = sim_store
    whole, by_task = [], []
    assert (store.validate_path(path, by_task=False, warnings=whole)
            == store.validate_path(path, by_task=True, warnings=by_task)
            == {"rows": len(df), "models": 7, "tasks": 2, "items": 200})
    bad = df.copy()
    bad.loc[bad.index[(bad["task"] == "sim_a") & (bad["model_id"] == "sim-m1")][:3], "loglik"] = 0.5
    dup = bad[(bad["task"] == "sim_b") & (bad["model_id"] == "sim-m2")].iloc[:4]
    root = tmp_path / "store"
    _write_shards(pd.concat([bad, dup], ignore_index=True), root, validate=False)
    kinds = {}
    for mode in (False, True):
        with pytest.raises(store.StoreValidationError) as e:
            store.validate_path(root, by_task=mode)
        kinds[mode] = sorted(p.kind for p in e.value.problems)
        assert "sim-m1__sim_a.parquet:0" in str(e.value)
    assert kinds[False] == kinds[True] and {"duplicate_key", "positive_loglik"} <= set(kinds[True])
    assert "task='sim_a': 3 row(s) have a loglik above 0" in str(e.value)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_selected_read_of_one_file_goes_batch_by_batch(sim_store, tmp_path, monkeypatch, suffix):
    """A single-file store read task by task keeps only the selection of each batch (memory: selection + one batch);
    the rows and the file row numbers errors name are those of the whole file."""
    _, df = sim_store
    one = tmp_path / f"one{suffix}"
    df.to_parquet(one, index=False) if suffix == ".parquet" else df.to_csv(one, index=False)
    monkeypatch.setattr(store, "_INDEX_BATCH", 97)  # many batches, selections straddling their edges
    got = store.read(one, tasks=["sim_b"], models=["sim-m3", "sim-m5"])
    expect = df[(df["task"] == "sim_b") & df["model_id"].isin(["sim-m3", "sim-m5"])]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expect.reset_index(drop=True), check_like=True)
    bad = df.copy()
    hit = int(np.flatnonzero(((bad["task"] == "sim_b") & (bad["model_id"] == "sim-m5")).to_numpy())[7])
    bad.loc[hit, "loglik"] = 2.0
    bad.to_parquet(one, index=False) if suffix == ".parquet" else bad.to_csv(one, index=False)
    with pytest.raises(store.StoreValidationError, match=f"one{suffix}:{hit}"):
        store.read(one, tasks=["sim_b"])
