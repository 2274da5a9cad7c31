"""Numeric primitives shared by the analysis modules: one least-squares solver and one AICc.

Every linear least-squares fit in :mod:`capscale.analysis` goes through :func:`lstsq` (the log-linear and
direct laws of :mod:`~capscale.analysis.laws`, the per-item laws of :mod:`~capscale.analysis.mass`, the
polynomial and grid-searched shape fits of :mod:`~capscale.analysis.emergence`), and every small-sample AIC
through :func:`aicc`, so they agree on the numerics and on the undefined cases.

Least squares
-------------
:func:`lstsq` solves min_β Σ_i w_i (y_i − x_iᵀβ)² for a whole batch of problems at once: the design ``X``
(``(..., n, p)``), the observations ``Y`` (``(..., n)``) and the weights ``w`` (``(..., n)``) broadcast over
their leading (batch) dimensions. A point with zero weight is left out (its ``y`` may be NaN or ±inf). The
solution uses the QR decomposition of the weighted design (LAPACK Householder, batched), so designs that
are not orthogonal lose no precision; the residuals are y − Q Qᵀ y, which stay accurate for near-collinear
designs. A design is factorised once however many rows of ``Y`` share it: many rows on few designs
(bootstrap replicates on a grid of break points) cost one QR per design and one matrix product in all, and
``rss="projection"`` then gets every RSS from the projections alone.

AICc
----
AICc = n·ln(RSS/n) + 2k + 2k(k + 1)/(n − k − 1) for a Gaussian least-squares fit with n points and k
estimated parameters (σ included). **Undefined case:** where n − k − 1 < 1 the correction term has no
finite value and :func:`aicc` (and :func:`aicc_penalty`) return NaN. NaN never wins a comparison
(``aicc_a < aicc_b`` is False when either is NaN), so a model whose AICc is undefined is never preferred,
and capscale's JSON writer (:func:`capscale._io.to_jsonable`) stores it as ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from capscale.errors import InputError

__all__ = ["LeastSquares", "lstsq", "aicc", "aicc_penalty"]


@dataclass(frozen=True)
class LeastSquares:
    """The solution of a batch of weighted least-squares problems (see :func:`lstsq`).

    Shapes: ``D`` is the batch shape of the weighted design (``X``'s leading dimensions broadcast with
    ``w``'s), ``B`` the batch shape of the problems (``D`` broadcast with ``Y``'s leading dimensions), ``p``
    the number of coefficients.

    Attributes
    ----------
    coef : numpy.ndarray, shape B + (p,)
        Coefficients β (in the units of y per unit of each design column); NaN where the design is not
        identified.
    rss : numpy.ndarray, shape B
        Weighted residual sum of squares Σ w (y − Xβ)² (units of y², times the weights' units); NaN where
        the design is not identified.
    n : numpy.ndarray, shape D
        Number of points with positive weight.
    identified : numpy.ndarray of bool, shape D
        Whether the coefficients are determined: det(XᵀWX) > rcond · Π_j (XᵀWX)_jj.
    det : numpy.ndarray, shape D
        det(XᵀWX); 0 where the design is not identified.
    xtwx : numpy.ndarray, shape D + (p, p)
        XᵀWX, also where the design is not identified (an information matrix to combine with a prior).
    xtwx_inv : numpy.ndarray, shape D + (p, p)
        (XᵀWX)⁻¹ (the covariance of β per unit residual variance); NaN where not identified.
    xtwy : numpy.ndarray, shape B + (p,)
        XᵀWy, also where the design is not identified.
    """

    coef: np.ndarray
    rss: np.ndarray
    n: np.ndarray
    identified: np.ndarray
    det: np.ndarray
    xtwx: np.ndarray
    xtwx_inv: np.ndarray
    xtwy: np.ndarray

    def cov(self, s2: np.ndarray | float) -> np.ndarray:
        """Covariance of the coefficients, s² (XᵀWX)⁻¹.

        Parameters
        ----------
        s2 : float or numpy.ndarray
            Residual variance (units of y²), a scalar or one value per problem (broadcast against the
            batch shape).

        Returns
        -------
        numpy.ndarray, shape (batch) + (p, p)
            NaN where the design is not identified.
        """
        return np.asarray(s2, dtype=float)[..., None, None] * self.xtwx_inv


def lstsq(X: np.ndarray, Y: np.ndarray, w: np.ndarray | None = None, *, rcond: float = 1e-10,
          rss: Literal["residuals", "projection"] = "residuals") -> LeastSquares:
    """Weighted least squares of every row of ``Y`` on its design, batched.

    Parameters
    ----------
    X : array_like, shape (..., n, p)
        Design matrices (one column per coefficient, e.g. ``[1, x]``); leading dimensions broadcast against
        those of ``Y`` and ``w``. Pass several designs as ``(G, n, p)`` with ``Y`` shaped ``(R, 1, n)`` to fit
        every row on every design (result batch ``(R, G)``).
    Y : array_like, shape (..., n)
        Observations.
    w : array_like, shape (..., n), optional
        Non-negative finite weights (e.g. 1/variance, or 0/1 for missing points). A point of zero weight
        does not enter the fit; its ``X`` and ``Y`` values may be NaN or infinite. Default: all 1.
    rcond : float
        Identifiability threshold: a design is identified when det(XᵀWX) > rcond · Π_j (XᵀWX)_jj, i.e. when
        the squared volume spanned by its weighted columns, relative to the product of their squared
        lengths (1 for orthogonal columns, 0 for collinear ones), exceeds ``rcond``. The default 1e-10
        rejects designs whose columns are collinear up to rounding (a row observed at a single x);
        ``rcond=0`` accepts every design of full numerical rank.
    rss : {"residuals", "projection"}
        How the RSS is computed. ``"residuals"`` (default): ‖r‖² with r = √w·y − Q Qᵀ √w·y, accurate to
        rounding of r itself. ``"projection"``: ‖√w·y‖² − ‖Qᵀ √w·y‖² (floored at 0), from the projections
        alone, so a grid search over many designs never holds a (rows × designs × n) residual array; its
        error is ~1e-16·‖y‖², so use it only where RSS ≪ ‖y‖² does not matter.

    Returns
    -------
    LeastSquares
        Coefficients, RSS, the normal-equation matrices and identifiability, NaN where not identified.

    Raises
    ------
    capscale.errors.InputError
        When the shapes do not match, a weight is negative or not finite, or ``rss`` is unknown.
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if X.ndim < 2:
        raise InputError(f"lstsq: the design must have shape (..., n, p), got {X.shape}")
    n_pts, p = X.shape[-2:]
    if Y.ndim < 1 or Y.shape[-1] != n_pts:
        raise InputError(f"lstsq: Y has shape {Y.shape} but the design has {n_pts} point(s) (shape {X.shape})")
    if rss not in ("residuals", "projection"):
        raise InputError(f"lstsq: rss must be 'residuals' or 'projection', not {rss!r}")
    if w is None:
        Xw, Yw = X, Y
        n = np.full(X.shape[:-2], n_pts)
    else:
        w = np.asarray(w, dtype=float)
        if w.shape[-1:] != (n_pts,):
            raise InputError(f"lstsq: weights have shape {w.shape} but the design has {n_pts} point(s)")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InputError("lstsq: weights must be finite and non-negative")
        pos = w > 0
        sw = np.sqrt(w)
        with np.errstate(invalid="ignore"):
            Xw = np.where(pos[..., None], X * sw[..., None], 0.0)
            Yw = np.where(pos, Y * sw, 0.0)
        n = pos.sum(-1)
    D = Xw.shape[:-2]
    n = np.broadcast_to(n, D)
    xtwx = np.swapaxes(Xw, -1, -2) @ Xw
    xtwy = np.einsum("...np,...n->...p", Xw, Yw)
    Xq = Xw
    if n_pts < p:  # fewer points than coefficients: zero rows change nothing and keep QR's shapes
        Xq = np.concatenate([Xw, np.zeros(D + (p - n_pts, p))], axis=-2)
    Q, R = np.linalg.qr(Xq)
    Q = Q[..., :n_pts, :]
    diag = np.abs(np.diagonal(R, axis1=-2, axis2=-1))
    det = np.prod(diag, axis=-1) ** 2
    scale = np.maximum(np.prod(np.diagonal(xtwx, axis1=-2, axis2=-1), axis=-1), 1e-300)
    identified = det > rcond * scale
    R_ok = np.where(identified[..., None, None], R, np.eye(p))
    R_inv = np.where(identified[..., None, None], np.linalg.inv(R_ok), np.nan)
    xtwx_inv = R_inv @ np.swapaxes(R_inv, -1, -2)
    proj = _project(Q, Yw)  # Qᵀy, batch B
    coef = np.einsum("...pq,...q->...p", R_inv, proj)
    if rss == "residuals":
        resid = Yw - np.einsum("...np,...p->...n", Q, proj)  # y − Q Qᵀ y
        ss = (resid * resid).sum(-1)
    else:
        ss = np.maximum((Yw**2).sum(-1) - (proj**2).sum(-1), 0.0)  # ‖y‖² − ‖Qᵀy‖²
    ok = np.broadcast_to(identified, coef.shape[:-1])
    return LeastSquares(coef=coef, rss=np.where(ok, ss, np.nan), n=n, identified=identified,
                        det=np.where(identified, det, 0.0), xtwx=xtwx, xtwx_inv=xtwx_inv, xtwy=xtwy)


def _project(Q: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Qᵀy for every problem of the batch (shape: Q's and Y's batch shapes broadcast, + (p,)).

    When the batch axes of Q and Y never both exceed 1 (rows on shared designs: ``(R, 1, n)`` against
    ``(G, n, p)``), every row is projected on every design with one matrix product.
    """
    n, p = Q.shape[-2:]
    D, Yb = Q.shape[:-2], Y.shape[:-1]
    B = np.broadcast_shapes(D, Yb)
    k = len(B)
    d = (1,) * (k - len(D)) + D
    yb = (1,) * (k - len(Yb)) + Yb
    if any(a > 1 and b > 1 for a, b in zip(d, yb, strict=True)):
        return np.einsum("...np,...n->...p", Q, Y)
    Qm = np.moveaxis(Q.reshape((-1, n, p)), 1, 0).reshape(n, -1)  # (n, designs · p)
    P = (Y.reshape(-1, n) @ Qm).reshape(yb + d + (p,))
    order = [ax for i in range(k) for ax in (i, k + i)] + [2 * k]
    return P.transpose(order).reshape(B + (p,))


def aicc_penalty(n: np.ndarray | float, k: int | float) -> np.ndarray | float:
    """The AICc penalty 2k + 2k(k + 1)/(n − k − 1); NaN where n − k − 1 < 1 (undefined).

    Parameters
    ----------
    n : float or numpy.ndarray
        Number of points.
    k : int or float
        Number of estimated parameters, σ included.

    Returns
    -------
    float or numpy.ndarray
        The penalty (dimensionless, in units of −2 log-likelihood), shaped like ``n``.
    """
    n_a = np.asarray(n, dtype=float)
    dof = n_a - k - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(dof >= 1, 2 * k + 2 * k * (k + 1) / np.where(dof >= 1, dof, 1.0), np.nan)
    return out if out.ndim else float(out)


def aicc(rss: np.ndarray | float, n: int | float, k: int | float,
         tss: np.ndarray | float | None = None) -> np.ndarray | float:
    """Small-sample AIC of a Gaussian least-squares fit, n·ln(RSS/n) + 2k + 2k(k + 1)/(n − k − 1).

    Parameters
    ----------
    rss : float or numpy.ndarray
        Residual sum of squares (units of y²), one per fit.
    n : int or float
        Number of points of each fit.
    k : int or float
        Number of estimated parameters, σ included.
    tss : float or numpy.ndarray, optional
        Total sum of squares of each fit: RSS is floored at 1e-12·tss (1e-12 without it, plus 1e-300), so
        that an exact fit gives a finite AICc.

    Returns
    -------
    float or numpy.ndarray
        AICc (dimensionless), shaped like ``rss``; NaN where n − k − 1 < 1 (see the module docstring).
    """
    rss = np.asarray(rss, dtype=np.float64)
    pen = aicc_penalty(n, k)
    if np.ndim(pen) == 0 and np.isnan(pen):
        return np.full_like(rss, np.nan) if rss.ndim else float("nan")
    floor = 1e-12 * (np.asarray(tss, dtype=np.float64) if tss is not None else 1.0) + 1e-300
    out = n * np.log(np.maximum(rss, floor) / n) + pen
    return out if np.ndim(out) else float(out)
