"""The ``data`` stage: what capscale reads and writes, validated, before any model is run or fitted.

* :mod:`~capscale.data.family` -- family specs: which checkpoints to evaluate, with N (parameters) and D
  (training tokens);
* :mod:`~capscale.data.tasks` -- multiple-choice task resolution through lm-eval's task objects, and
  capscale's own task definitions (package data in ``task_configs/``, reading the items from ``--data-dir``);
* :mod:`~capscale.data.store` -- the score store: one row per (checkpoint, task, item, choice);
* :mod:`~capscale.data.ladder_table` -- long-format ladder tables (one row per checkpoint, task, metric);
* :mod:`~capscale.data.published` -- readers of published evaluations (OLMo ladder, Pythia eval JSONs);
* :mod:`~capscale.data.ingest` -- lm-eval ``--log_samples`` output into the store;
* :mod:`~capscale.data.select` -- the one rule for "the final checkpoint of each run or size".

Submodules are imported on first use.
"""

from capscale._lazy import lazy_submodules

__all__ = ["family", "tasks", "store", "ladder_table", "published", "ingest", "select"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
