"""capscale._io: a write either lands whole or leaves the old file and no temporary behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from capscale._io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_dir,
    atomic_write_text,
    dumps_json,
    safe_name,
    to_jsonable,
)


def test_atomic_writes_create_folders_and_replace(tmp_path):
    p = tmp_path / "a" / "b" / "x.json"
    assert atomic_write_text(p, "one") == p and p.read_text() == "one"
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]


def test_failed_write_keeps_old_content_and_no_temporary(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_text("old")

    def half(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(p, half)
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["x.parquet"]


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = atomic_write_text(tmp_path / "m.txt", "x")
        d = atomic_write_dir(tmp_path / "d", lambda t: Path(t, "f").write_text("y"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert stat.S_IMODE(d.stat().st_mode) == 0o750


def test_atomic_dir_replaces_a_folder_or_leaves_it_alone(tmp_path):
    d = tmp_path / "ck"
    atomic_write_dir(d, lambda t: Path(t, "a").write_text("1"))
    atomic_write_dir(d, lambda t: Path(t, "b").write_text("2"))
    assert sorted(q.name for q in d.iterdir()) == ["b"]

    def boom(t: str) -> None:
        Path(t, "c").write_text("3")
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space"):
        atomic_write_dir(d, boom)
    assert sorted(q.name for q in d.iterdir()) == ["b"]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["ck"]


def test_one_json_encoding():
    obj = {"a": np.float32(1.5), "nan": float("nan"), "inf": np.inf, "ninf": -np.inf, "i": np.int64(3),
           "b": np.bool_(True), "arr": np.arange(2), "p": Path("x/y"), "_private": 1, 7: (1, 2)}
    out = to_jsonable(obj)
    assert out == {"a": 1.5, "nan": None, "inf": "inf", "ninf": "-inf", "i": 3, "b": True, "arr": [0, 1],
                   "p": "x/y", "_private": 1, "7": [1, 2]}
    assert "_private" not in to_jsonable(obj, drop_private=True)
    assert json.loads(dumps_json(obj)) == out  # strict JSON: no NaN/Infinity literals


def test_safe_name():
    assert safe_name("mmlu/high school:physics") == "mmlu_high_school_physics"
    assert safe_name("pythia-70m@step1000") == "pythia-70m@step1000"
