"""Fit one curve form of :mod:`capscale.analysis.laws` to one task of a ladder (``capscale fit``).

Compute is the nominal C = 6·N·D (FLOPs) of each run's final checkpoint. Loss forms fit the task loss
(``task_bpb`` or ``task_loss``, or the loss given by ``loss_task``/``loss_metric``); accuracy forms fit the
metric (accuracies are fractions in [0, 1]).

==================  ==========================================================================
form                points fitted
==================  ==========================================================================
``compute_law``     L(C) = E + A/C^α on each run's final loss (mean of its last ``final_window``
                    checkpoints)
``chinchilla_nd``   L(N, D) on each run's final loss
``gadre_exp``       Err(L) = ε − k·exp(−γL) on every checkpoint (error = 1 − accuracy)
``ladder_sigmoid``  the OLMo ladder's step 2 on every checkpoint after the first 10 % of each run,
                    5-point trailing moving averages of loss and accuracy
``obs_sigmoid``     accuracy against log10 C on each run's final accuracy
``direct``          log(−log acc') = a·ln C + b on each run's final accuracy
``loglinear``       accuracy linear in log10 C on each run's final accuracy
==================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from capscale.analysis import laws
from capscale.analysis.predict import _runs
from capscale.analysis.predict._base import law_dict
from capscale.analysis.predict._runs import Run
from capscale.data.ladder_table import chance_of
from capscale.errors import UsageError

__all__ = ["FORMS", "LOSS_FORMS", "LawFit", "fit_law"]

#: The forms :func:`fit_law` fits.
FORMS = ("compute_law", "chinchilla_nd", "gadre_exp", "ladder_sigmoid", "obs_sigmoid", "direct", "loglinear")
#: The forms whose input (or target) is the task loss.
LOSS_FORMS = ("compute_law", "chinchilla_nd", "gadre_exp", "ladder_sigmoid")
#: Forms fitted on every checkpoint (the others on each run's final value).
CHECKPOINT_FORMS = ("gadre_exp", "ladder_sigmoid")

_X = {"chinchilla_nd": "(N, D)", "gadre_exp": "loss", "ladder_sigmoid": "loss"}


@dataclass
class LawFit:
    """One law fitted to one task of a ladder (the result of :func:`fit_law`).

    Attributes
    ----------
    law : capscale.analysis.laws.Law
        The fitted law.
    task, metric, form : str
        What was fitted (``metric``: the accuracy metric; loss forms fit the loss ``loss``).
    loss : (str, str) or None
        The (task, metric) of the task loss, for the loss forms.
    final_window : int
        Checkpoints averaged into a run's final value.
    points : pandas.DataFrame
        The points fitted, one row per run (final-value forms) or per checkpoint (``gadre_exp``,
        ``ladder_sigmoid``): ``run``, ``params`` (N), ``tokens`` (D of the run's final checkpoint, or of the
        checkpoint), ``compute`` (6·N·D FLOPs), ``x`` (the law's input: C for ``compute_law``, ``direct``,
        ``loglinear`` and ``chinchilla_nd``, which fits on (``params``, ``tokens``); log10 C for
        ``obs_sigmoid``; the loss for ``gadre_exp`` and ``ladder_sigmoid``) and ``y`` (its target: the
        final loss, the error 1 − accuracy for ``gadre_exp``, else the accuracy).
    checkpoints : pandas.DataFrame
        Every checkpoint the points come from: ``run``, ``params``, ``tokens``, ``compute``, ``loss`` (NaN
        for the accuracy forms) and ``value`` (the metric).
    """

    law: laws.Law
    task: str
    metric: str
    form: str
    loss: tuple[str, str] | None
    final_window: int
    points: pd.DataFrame
    checkpoints: pd.DataFrame

    @property
    def x_name(self) -> str:
        """What the law's input is: ``"C = 6*N*D FLOPs"``, ``"(N, D)"`` or ``"loss"``."""
        return _X.get(self.form, "C = 6*N*D FLOPs")

    @property
    def warnings(self) -> list[str]:
        """The law's warnings (bounds hit, non-convergence)."""
        return list(self.law.warnings_)

    def to_dict(self) -> dict[str, Any]:
        """The fit as ``capscale fit`` prints and writes it: task, metric, loss, final window, the law's input
        and the law's description (parameters, bounds with ``None`` for an unbounded side, diagnostics)."""
        return {"task": self.task, "metric": self.metric, "loss": list(self.loss) if self.loss else None,
                "final_window": self.final_window, "x": self.x_name, **law_dict(self.law)}


def _checkpoints(runs: list[Run]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"run": r.run, "params": r.params, "tokens": r.tokens,
                                    "compute": 6 * r.params * r.tokens,
                                    "loss": r.x if r.x is not None else np.full(len(r.y), np.nan), "value": r.y})
                      for r in runs], ignore_index=True)


def _checkpoint_points(runs: list[Run], form: str) -> pd.DataFrame:
    """Points of the forms fitted on every checkpoint, one row per checkpoint kept."""
    if form == "gadre_exp":
        pieces = [(r, r.tokens, r.x, 1 - r.y) for r in runs]
    else:
        pieces = [(r, r.tokens[s:], x, y) for r, (s, x, y) in zip(runs, _runs.step2_parts(runs))]
    return pd.concat([pd.DataFrame({"run": r.run, "params": r.params, "tokens": t, "compute": 6 * r.params * t,
                                    "x": x, "y": y}) for r, t, x, y in pieces], ignore_index=True)


def fit_law(ladder: pd.DataFrame, task: str, form: str, *, metric: str | None = None,
            loss_task: str | None = None, loss_metric: str | None = None, chance: float | None = None) -> LawFit:
    """Fit the curve form ``form`` to ``task`` of a ladder (see the module docstring for the points).

    Parameters
    ----------
    ladder : pandas.DataFrame
        A ladder table (:mod:`capscale.data.ladder_table`).
    task : str
        The task.
    form : str
        One of :data:`FORMS`.
    metric : str, optional
        The accuracy metric (default: the task's ``acc``, else ``acc_norm``).
    loss_task, loss_metric : str, optional
        The loss of the loss forms where the task has no ``task_bpb``/``task_loss`` of its own.
    chance : float, optional
        The task's chance accuracy (default: :func:`capscale.data.ladder_table.chance_of` on the ladder); only the
        forms that use one (``ladder_sigmoid``, ``obs_sigmoid``, ``direct``) need it.

    Returns
    -------
    LawFit

    Raises
    ------
    capscale.errors.UsageError
        ``form`` is not one of :data:`FORMS`.
    capscale.analysis.predict.MethodNotApplicable
        A loss form, and no task loss in the ladder.
    capscale.errors.InputError
        No rows for the task and metric.
    capscale.analysis.laws.FitInputError
        Too few points for the form.
    """
    if form not in FORMS:
        raise UsageError(f"unknown form {form!r}; forms: {list(FORMS)}")
    metric = _runs.default_metric(ladder, task, metric)
    xt = _runs.loss_metric(ladder, task, loss_task, loss_metric) if form in LOSS_FORMS else None
    runs = _runs.extract_runs(ladder, task, metric, xt)
    needs_chance = form in ("ladder_sigmoid", "obs_sigmoid", "direct")
    chance = chance_of(task, chance=chance, ladder=ladder) if needs_chance else 0.0
    window = _runs.auto_window(runs)
    if form in CHECKPOINT_FORMS:
        points = _checkpoint_points(runs, form)
        x, y = points["x"].to_numpy(), points["y"].to_numpy()
        law = laws.GadreExp() if form == "gadre_exp" else laws.LadderSigmoid(chance=chance)
        law.fit(x, y)
    else:
        n = np.array([r.params for r in runs])
        d = np.array([r.tokens[-1] for r in runs])
        c = 6 * n * d
        labels = [r.run for r in runs]
        y = np.array([_runs.final_value(r.x if form in LOSS_FORMS else r.y, window) for r in runs])
        x = np.log10(c) if form == "obs_sigmoid" else c
        if form == "compute_law":
            law = laws.ComputeLaw(labels=labels).fit(x, y)
        elif form == "chinchilla_nd":
            law = laws.ChinchillaND(labels=labels).fit(np.c_[n, d], y)
        elif form == "obs_sigmoid":
            law = laws.ObsSigmoid(floor=(0.0, chance), labels=labels).fit(x, y)
        elif form == "direct":
            law = laws.DirectLaw(chance=chance, labels=labels).fit(x, y)
        else:
            law = laws.LogLinear(labels=labels).fit(x, y)
        points = pd.DataFrame({"run": labels, "params": n, "tokens": d, "compute": c, "x": x, "y": y})
    return LawFit(law=law, task=task, metric=metric, form=form, loss=xt, final_window=window, points=points,
                  checkpoints=_checkpoints(runs))
