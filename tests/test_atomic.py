"""capscale._io: a write either lands whole or leaves the old file and no temporary behind."""

from __future__ import annotations

import pytest

from capscale._io import atomic_write, atomic_write_bytes, atomic_write_text


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
