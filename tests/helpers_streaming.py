"""Comparisons of a store read from disk task by task with the same store in memory (to 1e-9)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from capscale.pipelines import mass as mass_stage

TOL = 1e-9


def assert_tables_equal(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    a, b = a.drop(columns=["seconds"], errors="ignore"), b.drop(columns=["seconds"], errors="ignore")
    assert list(a.columns) == list(b.columns), what
    assert a.shape == b.shape, what
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=False,
                                  rtol=0, atol=TOL, check_dtype=False, obj=what)


def assert_inputs_equal(a: list, b: list) -> None:
    assert [t.task for t in a] == [t.task for t in b]
    for x, y in zip(a, b, strict=True):
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            where = f"{x.task}.{f.name}"
            if isinstance(u, np.ndarray):
                np.testing.assert_allclose(u, v, rtol=0, atol=TOL, err_msg=where)
            elif isinstance(u, dict) and u and isinstance(next(iter(u.values())), np.ndarray):
                assert u.keys() == v.keys(), where
                for k in u:
                    np.testing.assert_allclose(u[k], v[k], rtol=0, atol=TOL, err_msg=f"{where}[{k}]")
            else:
                assert u == v, where


def compare_mass(path, df, out, **kw) -> mass_stage.RunResult:
    opts = {"figures": False, "draws": 60, "source": str(path)} | kw
    streamed = mass_stage.run(path, mass_stage.Options(out=str(out / "path"), **opts))
    memory = mass_stage.run(df, mass_stage.Options(out=str(out / "memory"), **opts))
    assert streamed.tables.keys() == memory.tables.keys()
    for name in streamed.tables:
        assert_tables_equal(streamed.tables[name], memory.tables[name], name)
    assert streamed.summary == memory.summary
    for f in ("mass_fits.csv", "mass_predictions.csv", "mass_covariation.csv"):
        assert_tables_equal(pd.read_csv(out / "path" / f), pd.read_csv(out / "memory" / f), f)
    return streamed
