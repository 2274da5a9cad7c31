"""Tests of capscale.analysis._stats: the one least-squares solver and the one AICc."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capscale.analysis import _stats
from capscale.errors import InputError


def test_lstsq_rows_with_missing_points_match_polyfit():
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 6)
    Y = rng.normal(size=(5, 6))
    W = np.ones_like(Y, dtype=bool)
    W[0, :2] = False
    Yn = np.where(W, Y, np.nan)  # left-out points may be NaN
    X = np.stack([np.ones_like(x), x], axis=1)
    res = _stats.lstsq(np.broadcast_to(X, (5, 6, 2)), Yn, W.astype(float))
    for r in range(5):
        b, a = np.polyfit(x[W[r]], Y[r, W[r]], 1)
        assert res.coef[r] == pytest.approx([a, b], rel=1e-12)
        resid = Y[r, W[r]] - a - b * x[W[r]]
        assert res.rss[r] == pytest.approx(float(resid @ resid), rel=1e-10)
    assert res.n.tolist() == [4, 6, 6, 6, 6]
    assert res.identified.all()


def test_lstsq_weights_and_covariance_match_the_normal_equations():
    rng = np.random.default_rng(1)
    x = rng.uniform(18, 24, 9)
    y = 0.3 + 0.05 * x + rng.normal(0, 0.01, 9)
    w = rng.uniform(0.5, 2.0, 9)
    X = np.stack([np.ones_like(x), x], axis=1)
    res = _stats.lstsq(X, y, w)
    xtwx = (X * w[:, None]).T @ X
    beta = np.linalg.solve(xtwx, (X * w[:, None]).T @ y)
    np.testing.assert_allclose(res.coef, beta, rtol=1e-9)
    np.testing.assert_allclose(res.xtwx, xtwx, rtol=1e-12)
    np.testing.assert_allclose(res.xtwy, (X * w[:, None]).T @ y, rtol=1e-12)
    np.testing.assert_allclose(res.xtwx_inv, np.linalg.inv(xtwx), rtol=1e-7)
    assert float(res.rss) == pytest.approx(float(np.sum(w * (y - X @ beta) ** 2)), rel=1e-8)
    assert float(res.det) == pytest.approx(np.linalg.det(xtwx), rel=1e-8)
    np.testing.assert_allclose(res.cov(2.0), 2.0 * np.linalg.inv(xtwx), rtol=1e-7)


def test_lstsq_many_rows_on_many_designs():
    rng = np.random.default_rng(2)
    x = np.linspace(0, 1, 8)
    D = np.stack([np.stack([np.ones(8), np.maximum(0.0, x - g)], axis=1) for g in (0.2, 0.5, 0.7)])  # (3, 8, 2)
    Y = rng.normal(size=(4, 8))
    res = _stats.lstsq(D, Y[:, None, :])
    assert res.coef.shape == (4, 3, 2) and res.rss.shape == (4, 3) and res.xtwx.shape == (3, 2, 2)
    for r in range(4):
        for g in range(3):
            beta, rss, *_ = np.linalg.lstsq(D[g], Y[r], rcond=None)
            np.testing.assert_allclose(res.coef[r, g], beta, rtol=1e-10)
            assert res.rss[r, g] == pytest.approx(float(rss[0]), rel=1e-10)


def test_lstsq_unidentified_rows_are_nan_but_keep_their_information():
    x = np.array([20.0, 20.0, 20.0, 21.0])
    X = np.stack([np.ones(4), x - 20.5], axis=1)
    Y = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    W = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])  # one x / two x / none
    res = _stats.lstsq(X, Y, W)
    assert res.identified.tolist() == [False, True, False]
    assert np.isnan(res.coef[0]).all() and np.isnan(res.rss[0]) and np.isnan(res.xtwx_inv[0]).all()
    assert res.det[0] == 0.0 and res.det[2] == 0.0
    np.testing.assert_allclose(res.xtwx[0], [[3.0, -1.5], [-1.5, 0.75]])  # the information is still there
    assert np.isfinite(res.coef[1]).all()
    # a single point: fewer points than coefficients
    one = _stats.lstsq(X[:1], Y[:1, :1])
    assert not one.identified[()] and np.isnan(one.coef).all()


def test_lstsq_rejects_bad_shapes_and_weights():
    X = np.ones((4, 2))
    with pytest.raises(InputError, match="4 point"):
        _stats.lstsq(X, np.ones(3))
    with pytest.raises(InputError, match="non-negative"):
        _stats.lstsq(X, np.ones(4), np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="shape"):
        _stats.lstsq(np.ones(4), np.ones(4))


def test_aicc_formula_and_undefined_case():
    assert _stats.aicc(2.0, 8, 3) == pytest.approx(8 * math.log(2 / 8) + 6 + 24 / 4)
    assert _stats.aicc_penalty(8, 3) == pytest.approx(6 + 24 / 4)
    assert math.isnan(_stats.aicc(1.0, 4, 3))  # n - k - 1 = 0
    assert math.isnan(_stats.aicc_penalty(4, 3))
    arr = _stats.aicc(np.array([1.0, 2.0]), 4, 3)
    assert arr.shape == (2,) and np.isnan(arr).all()
    # undefined never wins a comparison
    assert not (_stats.aicc(1.0, 4, 3) < _stats.aicc(100.0, 8, 3))
    # an exact fit is floored at 1e-12 of the total sum of squares
    assert _stats.aicc(0.0, 8, 3, tss=5.0) == pytest.approx(8 * math.log(5e-12 / 8) + 6 + 24 / 4)
