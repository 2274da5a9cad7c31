"""A store folder written by ``capscale eval`` opens as is in pandas, pyarrow, polars and duckdb: the run log
and any other sidecar file stay out of the datasets' view (names starting with ``_``)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from capscale.data import store
from capscale.eval.shards import RUN_LOG, write_run_log


@pytest.fixture
def store_dir(tmp_path):
    df = store.normalize(store.example_store(n_models=2, n_items=3, k=4))
    d = tmp_path / "store"
    for (_, _), g in df.groupby(["model_id", "task"]):
        store.write_shard(g.reset_index(drop=True), d)
    write_run_log(d, {"run_id": "r1", "status": "done", "shards": []})
    return d, df


def test_run_log_is_a_hidden_sidecar(store_dir):
    d, _ = store_dir
    assert RUN_LOG.startswith("_") and (d / RUN_LOG).is_file()
    assert not (d / "run_log.json").exists()
    assert json.loads((d / RUN_LOG).read_text())["runs"][0]["run_id"] == "r1"


def test_pandas_reads_the_store_folder(store_dir):
    d, df = store_dir
    assert len(pd.read_parquet(d)) == len(df)


def test_pyarrow_dataset_reads_the_store_folder(store_dir):
    import pyarrow.dataset as ds

    d, df = store_dir
    assert ds.dataset(d, format="parquet").count_rows() == len(df)


def test_polars_reads_the_store_folder(store_dir):
    pl = pytest.importorskip("polars")
    d, df = store_dir
    assert pl.read_parquet(d / "*.parquet").height == len(df)
    # polars reads a folder only through a glob (it refuses folders holding other file types, even `_` ones)
    assert pl.scan_parquet(d / "**" / "*.parquet").collect().height == len(df)


def test_duckdb_reads_the_store_folder(store_dir):
    duckdb = pytest.importorskip("duckdb")
    d, df = store_dir
    n = duckdb.sql(f"select count(*) from read_parquet('{d}/*.parquet')").fetchall()[0][0]
    assert n == len(df)


def test_an_old_run_log_is_moved_out_of_the_datasets_view(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / "run_log.json").write_text(json.dumps({"runs": [{"run_id": "old", "status": "done"}]}))
    write_run_log(d, {"run_id": "new", "status": "running"})
    assert not (d / "run_log.json").exists()
    assert [r["run_id"] for r in json.loads((d / RUN_LOG).read_text())["runs"]] == ["old", "new"]
