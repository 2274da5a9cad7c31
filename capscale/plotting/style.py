"""One figure style for every capscale figure: a colour-blind-safe palette, units on the axes, compute in FLOPs.

* :data:`PALETTE` -- the Okabe--Ito palette (Okabe and Ito 2008, "Color Universal Design"), distinguishable
  under the common forms of colour-vision deficiency; :func:`apply` makes it matplotlib's colour cycle, so
  ``"C0"``, ``"C1"``, ... in the plotting modules are these colours. Continuous scales use ``viridis``
  (perceptually uniform and colour-blind-safe).
* :func:`compute_axis` -- an axis holding log10 compute, labelled ``compute C = 6ND (FLOPs, log scale)`` with
  ticks written as powers of ten (``10^11``), so every compute axis reads the same way.

The interactive report figures (:mod:`capscale.plotting.interactive`) use the same palette.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PALETTE", "CONTINUOUS", "COMPUTE_LABEL", "apply", "compute_axis", "color"]

#: Okabe--Ito, in the order used for categories (black last: it is kept for observed values).
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
                            "#000000")
#: The continuous colour scale (matplotlib and Plotly both know it by this name).
CONTINUOUS = "viridis"
#: The label of every compute axis.
COMPUTE_LABEL = "compute C = 6ND (FLOPs, log scale)"


def color(i: int) -> str:
    """The ``i``-th colour of :data:`PALETTE` (cycling)."""
    return PALETTE[i % len(PALETTE)]


def apply() -> None:
    """Make :data:`PALETTE` matplotlib's colour cycle and set the shared defaults (grid, font sizes)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update({
        "axes.prop_cycle": cycler(color=list(PALETTE)),
        "image.cmap": CONTINUOUS,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 8,
    })


def _pow10(v: float, _pos: Any = None) -> str:
    if abs(v - round(v)) < 1e-6:
        return f"$10^{{{int(round(v))}}}$"
    return f"$10^{{{v:.1f}}}$"


def compute_axis(ax: Any, axis: str = "x", label: str = COMPUTE_LABEL) -> None:
    """Label an axis that holds log10 compute: ``label`` and ticks written as powers of ten of FLOPs.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes.
    axis : {"x", "y"}
        Which axis holds log10 C.
    label : str
        The axis label (default :data:`COMPUTE_LABEL`).
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))
    a.set_major_formatter(FuncFormatter(_pow10))
    a.set_label_text(label)
