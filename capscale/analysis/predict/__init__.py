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
``chance``     the task's chance accuracy, with an interval up to ``sigmoid``'s upper bound (what ``auto``
               predicts for an ``at_chance`` task)
``mass``       probability-mass model of :mod:`capscale.analysis.mass` (needs a score store)
``cod``        difficulty clusters (needs a score store): items clustered on their p_choices(correct)
               trajectories, a logit-linear law per cluster, the clusters stable under leave-one-model-out kept
               and mapped linearly to the full task (:mod:`capscale.analysis.predict._cod`)
============== ================================================================================

and, with a name too long for the table's column, ``observational``: observational scaling across model families
(Ruan et al. 2024, :mod:`capscale.analysis.predict._observational`): rank-K capability measures (PCA with EM
imputation of missing cells) over *every* accuracy task of the ladder's final checkpoints; each family's
log-compute maps linearly to them (family intercept = compute efficiency, shared slope, shrunk towards the mean
for small families); a sigmoid link per task with floor = chance. It predicts from (family, N, D), or also from
the target's scores on the other tasks (``given="scores"``), so its ``predict`` takes ``family=`` and ``scores=``.

Compute-based laws use the nominal C = 6·N·D (FLOPs) for the ladder runs and the target alike, so a
target given as (N, D) is placed consistently. Intervals: percentile bootstrap over ladder runs
(``bootstrap`` resamples, fixed ``seed``), widened in quadrature by the method's leave-largest-out
extrapolation error on the training ladder (``inflate=True``). A degenerate fit (flat: every training
run's final value equal; or zero degrees of freedom: as many runs as the law has parameters) says so in its
warnings and gets a noise floor of ±z·σ, σ the largest of the binomial standard error (ladder column
``n_items``), the ladder's ``stderr``, the residual scatter and the late-checkpoint scatter, else the binomial
standard error of an assumed 100 items (``LadderMethod._noise_floor``). A target more than 10x outside the
ladder's compute range, above or below, is warned about. :func:`backtest` holds out the largest
runs, or the runs a query selects (:func:`split_holdout`: ``compute>8.4e22``, ``multiplier<1``,
``family=='xglm'``; ``family-largest``: every family's largest run), fitting on all others or on the rows a ``fit`` query selects. ``auto`` first judges the
task's predictability on the fitting data alone (:func:`predictability`: ``predictable``, ``at_chance``,
``noisy``, ``non_monotone``, ``inverse``); an ``at_chance`` task is predicted at chance (``chance``), the other
non-predictable ones get intervals widened 2x; then it follows :data:`AUTO_RULE`, frozen on the development half of
``capscale backtest-suite``: the median of ``ladder``, ``ladder_c``, ``direct``, ``sigmoid``, ``gadre`` and
``loglinear`` (``"cv"`` selects instead by :func:`select_method`: leave-largest-out cross-validation on the training
ladder only, switching away from ``ensemble`` only on a significant improvement). ``auto`` needs 3 fitting sizes. Chance levels come from :func:`capscale.data.ladder_table.chance_of`. The two steps of a chained
method can be fitted on different rows (``fit_loss``/``fit_link`` queries; CLI ``--fit-loss``/``--fit-link``). Chained methods
without a loss of the task's own use the ladder's only loss, or say which losses there are. :func:`fit_law` fits a single curve form (``capscale fit``).

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
    ChancePredictor,
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
    AUTO_RULE,
    DEFAULT_CANDIDATES,
    QUERY_COLUMNS,
    backtest,
    fit_method,
    query_rows,
    select_method,
    split_holdout,
    split_largest,
    task_verdict,
)
from capscale.analysis.predict._verdict import VERDICTS, Verdict, predictability

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
    "ChancePredictor",
    "MassPredictor",
    "ObservationalPredictor",
    "METHODS",
    "method_class",
    "get_method",
    "method_options",
    "DEFAULT_CANDIDATES",
    "select_method",
    "fit_method",
    "backtest",
    "split_largest",
    "split_holdout",
    "query_rows",
    "QUERY_COLUMNS",
    "AUTO_RULE",
    "task_verdict",
    "VERDICTS",
    "Verdict",
    "predictability",
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
    if name == "ObservationalPredictor":
        return method_class("observational")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
