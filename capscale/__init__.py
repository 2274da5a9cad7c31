"""capscale: predict the downstream capabilities of language models from scale.

The folders are the pipeline; data flows one way (``python -m capscale._structure`` checks it)::

    data  ->  eval  ->  analysis  ->  plotting / pipelines  ->  cli

* :mod:`capscale.data` -- family specs, task definitions, the score store (one row per checkpoint x task x
  item x choice), ladder tables, published evaluations, lm-eval ingest;
* :mod:`capscale.eval` -- the scoring engine and the local / Ray executors (checkpoints -> the store);
* :mod:`capscale.analysis` -- pure analysis: the chain, per-item correlations, laws, mass models,
  predictors and backtests, emergence diagnostics;
* :mod:`capscale.plotting` -- figures from analysis results;
* :mod:`capscale.pipelines` -- one runner per stage (``Options`` + ``run``) writing a results folder, the
  report and the demo;
* :mod:`capscale.synthetic` -- the embedded synthetic world and the demo family trained on it;
* :mod:`capscale.testing` -- generators of simulated and planted stores with known answers;
* :mod:`capscale.errors` -- the exception base class and the CLI's exit codes.

Import the stage you need, e.g. ``from capscale.data import store`` and ``from capscale.analysis import chain``.
Importing ``capscale`` or a stage package loads nothing heavy (no torch); submodules load on first use.
"""

from capscale._lazy import lazy_submodules

__version__ = "0.1.0"
__all__ = ["data", "eval", "analysis", "plotting", "pipelines", "synthetic", "testing", "errors", "__version__"]
__getattr__, __dir__ = lazy_submodules(__name__, [n for n in __all__ if n != "__version__"])
