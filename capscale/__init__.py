"""capscale: predict the downstream capabilities of language models from scale.

Pipeline, one module per stage (each a Python API first, a thin CLI second):

``evaluate`` (checkpoints -> per-choice log-likelihoods) -> ``store`` (one tidy table, one row per
checkpoint x task x item x choice) -> ``chain`` / ``correlate`` -> ``mass`` -> ``laws`` / ``predict`` ->
``emergence`` -> ``report``.

Import the stage you need, e.g. ``from capscale import store, chain, correlate``. Importing
``capscale`` itself loads nothing heavy (no torch).
"""

__version__ = "0.1.0"
