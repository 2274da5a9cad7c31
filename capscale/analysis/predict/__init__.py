"""Predict a task's accuracy for a model not yet trained, from a ladder of smaller models.

Every method is a :class:`Predictor` (scikit-learn's estimator rules: explicit keyword options,
``get_params``/``set_params``, fitted attributes ending in ``_``): ``fit(ladder, task, *, metric, store)``
then ``predict(params, tokens) -> Prediction`` (value with a nominal 90 % interval and warnings) and
``report()``. Methods are looked up by name in :data:`METHODS`:

============== ================================================================================
``loglinear``  acc = a + b·log10 C on the final checkpoint of every ladder run (baseline)
``direct``     log(−log acc') = a·ln C + b on chance-normalised final accuracy (Krajewski et al.)
``sigmoid``    acc = (1 − f)·σ(w·log10 C + c) + f, floor f ∈ [0, chance], on final accuracies
``ladder``     OLMo ladder (Bhagia et al. 2024), exactly as published: step 1 Chinchilla L(N, D) on
               each run's final task loss (mean of the last 5 evaluations), step 2 the scaled
               sigmoid on all intermediate checkpoints (first 10 % skipped, 5-point trailing moving
               average, anchor (0, 1)); chained
``ladder_c``   as ``ladder`` with step 1 L(C) = E + A/C^α on C = 6·N·D
``gadre``      Gadre et al. 2024: step 1 L(C) on final losses, step 2 Err = ε − k·exp(−γL) on every
               checkpoint; chained
``ensemble``   median of ``ladder``, ``ladder_c``, ``direct``, ``sigmoid`` and ``gadre``
``mass``       probability-mass model of :mod:`capscale.analysis.mass` (needs a score store)
============== ================================================================================

Compute-based laws use the nominal C = 6·N·D (FLOPs) for the ladder runs and the target alike, so a
target given as (N, D) is placed consistently. Intervals: percentile bootstrap over ladder runs
(``bootstrap`` resamples, fixed ``seed``), widened in quadrature by the method's leave-largest-out
extrapolation error on the training ladder (``inflate=True``). A degenerate fit (flat: every training
run's final value equal; or zero degrees of freedom: as many runs as the law has parameters) says so in its
warnings and gets a noise floor of ±z·σ, σ the largest of the binomial standard error (ladder column
``n_items``), the ladder's ``stderr``, the residual scatter and the late-checkpoint scatter, else the binomial
standard error of an assumed 100 items (``LadderMethod._noise_floor``). A target more than 10x outside the
ladder's compute range, above or below, is warned about. :func:`backtest` holds out the largest
runs; :func:`select_method` (``auto``) picks per task by leave-largest-out cross-validation on the
training ladder only. :func:`fit_law` fits a single curve form (``capscale fit``).

Everything here is pure: DataFrames in, result objects out (no figures, no files).
"""

from __future__ import annotations

from typing import Any

from capscale.analysis.predict._base import (
    MethodNotApplicable,
    Prediction,
    Predictor,
    check_is_fitted,
    law_dict,
)
from capscale.analysis.predict._fit import FORMS, LOSS_FORMS, LawFit, fit_law
from capscale.analysis.predict._methods import (
    METHODS,
    DirectPredictor,
    EnsemblePredictor,
    GadrePredictor,
    LadderComputePredictor,
    LadderMethod,
    LadderPredictor,
    LogLinearPredictor,
    SigmoidPredictor,
    get_method,
    method_class,
    method_options,
)
from capscale.analysis.predict._runs import default_metric
from capscale.analysis.predict._select import (
    DEFAULT_CANDIDATES,
    backtest,
    fit_method,
    select_method,
    split_largest,
)

__all__ = [
    "Prediction",
    "Predictor",
    "MethodNotApplicable",
    "check_is_fitted",
    "law_dict",
    "LadderMethod",
    "EnsemblePredictor",
    "LogLinearPredictor",
    "DirectPredictor",
    "SigmoidPredictor",
    "LadderPredictor",
    "LadderComputePredictor",
    "GadrePredictor",
    "MassPredictor",
    "METHODS",
    "method_class",
    "get_method",
    "method_options",
    "DEFAULT_CANDIDATES",
    "select_method",
    "fit_method",
    "backtest",
    "split_largest",
    "default_metric",
    "FORMS",
    "LOSS_FORMS",
    "LawFit",
    "fit_law",
]


def __getattr__(name: str) -> Any:
    """``MassPredictor`` on first use, so that importing this package does not import the mass model."""
    if name == "MassPredictor":
        return method_class("mass")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
