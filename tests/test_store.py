"""Score store: round trips and every validation error, each naming file, column and rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capscale.cli import main
from capscale.data import store
from capscale.errors import InputError


def _valid() -> pd.DataFrame:
    return store.example_store(n_models=3, n_items=5, k=4)


def test_roundtrip_parquet_csv_and_shards(tmp_path):
    df = _valid()
    store.write(df, tmp_path / "s.parquet")
    store.write(df, tmp_path / "s.csv")
    for _m, g in df.groupby("model_id"):
        store.write_shard(g, tmp_path / "shards")
    for p in ("s.parquet", "s.csv", "shards"):
        back = store.read(tmp_path / p).sort_values(store.KEY_COLUMNS).reset_index(drop=True)
        exp = df.sort_values(store.KEY_COLUMNS).reset_index(drop=True)
        assert back.shape == exp.shape, p
        np.testing.assert_array_equal(back["loglik"].to_numpy(), exp["loglik"].to_numpy())
        assert back["is_correct"].dtype == bool
        assert (back["compute"] == 6.0 * back["params"] * back["tokens"]).all()
    assert not list((tmp_path / "shards").glob("_tmp*")), "atomic writes leave no temporary files"


def test_compute_default_and_explicit():
    df = _valid()
    df = df.drop(columns="compute")
    out = store.normalize(df)
    assert np.allclose(out["compute"], 6.0 * out["params"] * out["tokens"])
    df["compute"] = 123.0
    assert (store.normalize(df)["compute"] == 123.0).all()


def test_string_doc_ids_kept_and_leading_zeros_preserved():
    df = _valid()
    df["doc_id"] = "Mercury_" + df["doc_id"].astype(str)
    assert pd.api.types.is_string_dtype(store.normalize(df)["doc_id"])
    df["doc_id"] = "007"
    assert store.normalize(df)["doc_id"].iloc[0] == "007"


def _kinds(df, **kw):
    return {p.kind for p in store.validate(df, **kw)}


def test_missing_column_names_file(tmp_path):
    df = _valid().drop(columns="loglik")
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(store.StoreValidationError) as e:
        store.read(tmp_path / "bad.csv")
    msg = str(e.value)
    assert "missing_column" in msg and "'loglik'" in msg and "bad.csv" in msg


def test_non_finite_loglik_names_rows(tmp_path):
    df = _valid()
    df.loc[3, "loglik"] = np.nan
    df.loc[7, "loglik"] = -np.inf
    df.to_parquet(tmp_path / "x.parquet")
    with pytest.raises(store.StoreValidationError) as e:
        store.read(tmp_path / "x.parquet")
    p = [p for p in e.value.problems if p.kind == "non_finite_loglik"][0]
    assert p.count == 2 and p.column == "loglik"
    assert any(r.endswith("x.parquet:3") for r in p.rows) and any(r.endswith("x.parquet:7") for r in p.rows)


def test_zero_and_several_correct():
    df = _valid()
    first = (df["model_id"] == "m0") & (df["doc_id"] == 0)
    df.loc[first, "is_correct"] = False
    assert "no_correct_choice" in _kinds(df)
    df.loc[first, "is_correct"] = True
    assert "several_correct_choices" in _kinds(df)
    assert "several_correct_choices" not in _kinds(df, multi_gold=True)
    df["multi_gold"] = first
    assert "several_correct_choices" not in _kinds(df)


def test_duplicate_keys():
    df = _valid()
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    probs = [p for p in store.validate(df) if p.kind == "duplicate_key"]
    assert probs and probs[0].count == 2 and "row 0" in probs[0].rows


def test_choice_count_mismatch_between_models():
    df = _valid()
    drop = (df["model_id"] == "m1") & (df["doc_id"] == 2) & (df["choice_idx"] == 3) & ~df["is_correct"]
    df = df[~drop]
    probs = [p for p in store.validate(df) if p.kind == "choice_count_mismatch"]
    assert probs and "doc_id=2" in probs[0].rows[0] and "m1: 3" in probs[0].rows[0]


def test_all_problems_reported_at_once_and_cli_exit_code(tmp_path, capsys):
    df = _valid()
    df.loc[0, "loglik"] = np.inf
    df = pd.concat([df, df.iloc[[5]]], ignore_index=True)
    df.loc[df["doc_id"] == 4, "is_correct"] = False
    path = tmp_path / "bad.parquet"
    df.to_parquet(path)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    for kind in ("non_finite_loglik", "duplicate_key", "no_correct_choice"):
        assert kind in err
    good = tmp_path / "good.parquet"
    store.write(_valid(), good)
    assert main(["validate", str(good)]) == 0
    assert "valid" in capsys.readouterr().out


def test_write_refuses_invalid(tmp_path):
    df = _valid()
    df.loc[0, "loglik"] = np.nan
    with pytest.raises(store.StoreValidationError):
        store.write(df, tmp_path / "s.parquet")
    assert not (tmp_path / "s.parquet").exists()


def test_missing_path_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.read(tmp_path / "nope.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .parquet or .csv"):
        store.read(tmp_path / "empty")


def test_inconsistent_model_metadata():
    df = _valid()
    df.loc[df.index[0], "params"] = 999
    assert "inconsistent_model" in _kinds(df)


def test_positive_loglik_rejected_beyond_tolerance(tmp_path):
    df = _valid()
    df.loc[2, "loglik"] = 5.0
    df.loc[4, "loglik"] = 0.5 * store.LOGLIK_TOLERANCE  # rounding noise above 0 is allowed
    df.to_parquet(tmp_path / "pos.parquet")
    with pytest.raises(store.StoreValidationError) as e:
        store.read(tmp_path / "pos.parquet")
    p = [p for p in e.value.problems if p.kind == "positive_loglik"][0]
    assert p.count == 1 and p.column == "loglik" and p.rows[0].endswith("pos.parquet:2")
    assert "1e-06" in p.message


@pytest.mark.parametrize("column, value, expected", [
    ("params", "big", "params is not a positive integer"),
    ("is_correct", "yes", "is_correct is not a boolean"),
])
def test_validate_and_analyze_give_the_same_located_message(tmp_path, capsys, column, value, expected):
    df = _valid().astype({column: object})
    df.loc[df.index[6:], column] = value if column == "params" else np.where(df["is_correct"].iloc[6:], "yes", "no")
    df.loc[df.index[:6], column] = value if column == "params" else df["is_correct"].iloc[:6].astype(str)
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    assert main(["validate", str(path)]) == 1
    err_validate = capsys.readouterr().err
    assert main(["analyze", str(path), "--out", str(tmp_path / "a"), "--no-figures", "--quiet"]) == 1
    err_analyze = capsys.readouterr().err
    for err in (err_validate, err_analyze):
        assert expected in err and "bad.csv:" in err and f"column {column!r}" in err
        assert "Traceback" not in err


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "not_parquet"])
def test_unreadable_shard_names_the_file(tmp_path, capsys, damage):
    shards = tmp_path / "shards"
    for _m, g in _valid().groupby("model_id"):
        store.write_shard(g, shards)
    victim = sorted(shards.glob("*.parquet"))[1]
    data = victim.read_bytes()
    if damage == "corrupt":
        mid = len(data) // 2
        data = data[:mid - 200] + bytes(200) + data[mid:]
        data = data[:4] + bytes(b ^ 0x5A for b in data[4:len(data) // 2]) + data[len(data) // 2:]
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = b"model_id,family\nm0,example\n"
    victim.write_bytes(data)
    with pytest.raises(InputError, match=victim.name):
        store.read(shards)
    assert main(["validate", str(shards)]) == 1
    err = capsys.readouterr().err
    assert victim.name in err and "Traceback" not in err
