"""The ``plotting`` stage: figures (PNG, matplotlib's Agg backend) drawn from analysis results; nothing is fitted here.

* :mod:`~capscale.plotting.chain` -- CCDF of per-item correlations, mass scatter, per-size metric curves, and
  :func:`~capscale.plotting.chain.save_figure` (the one atomic figure writer);
* :mod:`~capscale.plotting.mass` -- correct vs incorrect mass, slopes, predicted vs observed;
* :mod:`~capscale.plotting.predict` -- fitted laws and backtests against compute;
* :mod:`~capscale.plotting.emergence` -- the emergence report's figures.

Submodules are imported on first use.
"""

from capscale._lazy import lazy_submodules

__all__ = ["chain", "mass", "predict", "emergence"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
