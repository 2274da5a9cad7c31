"""The ``pipelines`` stage: one runner per stage, which reads its input, calls the analysis and writes a folder.

Every runner module has an ``Options`` dataclass (``Options.from_cli(args)``) and ``run(...) -> RunResult``
(:mod:`capscale.pipelines._base`); the ``capscale`` commands are thin wrappers around them.

* :mod:`~capscale.pipelines.analyze` -- chain and per-item correlations (``capscale analyze``);
* :mod:`~capscale.pipelines.mass` -- correct vs incorrect mass laws and their backtest (``capscale mass``);
* :mod:`~capscale.pipelines.fit` -- one law on a ladder, and predictions for a target (``capscale fit``,
  ``capscale predict``);
* :mod:`~capscale.pipelines.backtest` -- held-out backtests over many tasks (``capscale backtest``);
* :mod:`~capscale.pipelines.emergence` -- emergence verdicts for every task (``capscale emergence``);
* :mod:`~capscale.pipelines.report` -- one self-contained HTML report of a results folder;
* :mod:`~capscale.pipelines.demo` -- every stage on the embedded demo family (``capscale demo``);
* :mod:`~capscale.pipelines.inputs` -- reading a ladder table, a store or published data from a path.

Submodules are imported on first use.
"""

from capscale._lazy import lazy_submodules

__all__ = ["analyze", "mass", "fit", "backtest", "emergence", "report", "demo", "inputs"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
