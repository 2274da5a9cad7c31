"""The ``analysis`` stage: pure functions and estimators, DataFrames and arrays in, result objects out.

Nothing here draws, writes files or imports a plotting library (checked by ``python -m capscale._structure``).

* :mod:`~capscale.analysis.chain` -- per-item metrics along the chain log p_vocab(correct) -> p_choices ->
  accuracy / Brier (Schaeffer et al. 2024), and ladder tables from a store;
* :mod:`~capscale.analysis.correlate` -- per-item correlation of each metric with log10 compute;
* :mod:`~capscale.analysis.laws` -- curve forms from compute to loss to accuracy;
* :mod:`~capscale.analysis.mass` -- per-item laws of correct and incorrect probability mass;
* :mod:`~capscale.analysis.predict` -- predictors of a larger model's score, method selection and backtests;
* :mod:`~capscale.analysis.emergence` -- is a sharp jump real, or made by the metric?

Submodules are imported on first use.
"""

from capscale._lazy import lazy_submodules

__all__ = ["chain", "correlate", "laws", "mass", "predict", "emergence"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
