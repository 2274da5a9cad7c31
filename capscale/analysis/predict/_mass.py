"""The ``mass`` method: accuracy (and p_choices, Brier) predicted from per-item probability-mass laws.

An adapter of :mod:`capscale.analysis.mass` to the :class:`~capscale.analysis.predict.Predictor` contract. It
fits the per-item, per-choice log-likelihood laws of the training models' score store and predicts the task
metric at compute C = 6·N·D FLOPs, with a Monte Carlo interval (no bootstrap over runs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from capscale.analysis import chain as _chain
from capscale.analysis.mass import (
    METRIC_ALIASES,
    SUPPORTED_METRICS,
    MassConfig,
    MetricPrediction,
    fit,
    predict_task,
)
from capscale.analysis.predict._base import MethodNotApplicable, Prediction, Predictor, check_is_fitted
from capscale.data.select import final_checkpoints
from capscale.errors import InputError, UsageError

__all__ = ["MassPredictor"]


class MassPredictor(Predictor):
    """Predictor ``mass``: the task metric from per-item mass laws (:mod:`capscale.analysis.mass`).

    ``fit(ladder, task, metric=..., store=...)`` needs the per-choice ``store`` rows of the training models;
    ``predict(params, tokens)`` returns a :class:`~capscale.analysis.predict.Prediction` (90 % interval by
    default) at compute C = 6·N·D FLOPs.

    Parameters
    ----------
    config : MassConfig, optional
        Settings of the mass model (default ``MassConfig()``).
    seed : int, optional
        Overrides ``config.seed`` (Monte Carlo draws).
    level : float, optional
        Overrides ``config.interval``: nominal probability of the interval (0.9 for 90 %).
    n_draws : int, optional
        Overrides ``config.n_draws``: Monte Carlo draws of the predictive distribution.
    checkpoints : {"auto", "final", "all"}, default "auto"
        ``"final"`` fits the laws on the final checkpoint of each ladder run only
        (:func:`capscale.data.select.final_checkpoints` with ``by="auto"``), ``"all"`` on every checkpoint.
        Intermediate checkpoints of a run follow the run's data-scaling trajectory (learning-rate schedule not
        finished), not the across-size law, and mixing them in made the size backtests worse. ``"auto"`` fits both
        and predicts a target whose tokens D are fewer than every training run's final D (an intermediate
        checkpoint, e.g. of the held-out size) from the laws on every checkpoint, any other target from the laws on
        the final checkpoints: final-checkpoint laws place a half-trained model by its compute 6·N·D as if it were
        a fully trained smaller one (results/backtests/cod/README.md, "mass, revisited"). ``"auto"`` is the default
        since it was confirmed on targets not used to diagnose the cause; it gives the ``"final"`` predictions for
        every target that is not such an intermediate checkpoint.
    inflate : bool
        Widen the interval by the leave-largest-out error on the training models, as the ladder methods do.

    Attributes
    ----------
    fit_ : capscale.analysis.mass.TaskFit
        The fitted per-item laws (on the final checkpoints, with ``checkpoints="auto"``).
    fit_all_ : capscale.analysis.mass.TaskFit or None
        With ``checkpoints="auto"``: the laws fitted on every checkpoint (None when every checkpoint is final).
    final_tokens_ : float
        The fewest tokens D of a training run's final checkpoint (``checkpoints="auto"`` compares targets with it).
    config_ : MassConfig
        The settings used (``config`` with the overrides).
    task_, metric_ : str
        What was fitted (``metric_``: the :data:`capscale.analysis.mass.SUPPORTED_METRICS` key).
    cv_err_ : float
        |error| on the largest-compute training model when fitted on the others (NaN if not computed).
    window_ : int
        1: the held-out actual of a backtest is the final checkpoint's value (no smoothing window).
    """

    name = "mass"
    needs_store = True

    def __init__(self, *, config: MassConfig | None = None, seed: int | None = None, level: float | None = None,
                 n_draws: int | None = None, checkpoints: str = "auto", inflate: bool = True):
        self.config = config
        self.seed = seed
        self.level = level
        self.n_draws = n_draws
        self.checkpoints = checkpoints
        self.inflate = inflate

    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> MassPredictor:
        """Fit the per-item laws of ``task`` on the training models; returns ``self``.

        Parameters
        ----------
        ladder : pandas.DataFrame
            The training models' aggregate table; its ``model_id`` column (if any) selects the store
            rows used, otherwise every model of the store is used.
        task : str
            The task.
        metric : str
            ``acc`` (default), ``acc_pair``, ``p_choices`` (``p_choices_correct``) or ``brier``.
        store : pandas.DataFrame
            Per-choice score-store rows (required).

        Raises
        ------
        MethodNotApplicable
            No ``store``.
        capscale.errors.UsageError
            ``checkpoints`` is not "final" or "all".
        capscale.errors.InputError
            An unsupported metric, no rows of ``task``, several families, fewer than 2 models.
        """
        if self.checkpoints not in ("final", "all", "auto"):
            raise UsageError(f"MassPredictor: checkpoints must be 'final' or 'all' (or 'auto': both), not "
                             f"{self.checkpoints!r}")
        if store is None:
            raise MethodNotApplicable("the 'mass' method needs the per-choice score store of the training models "
                                      "(store=...): it fits per-item, per-choice log-likelihood laws, which an "
                                      "aggregate ladder table does not contain")
        m = METRIC_ALIASES.get(str(metric))
        if m is None:
            raise InputError(f"the 'mass' method predicts {sorted(SUPPORTED_METRICS)}, not {metric!r}")
        cfg = self.config or MassConfig()
        upd = {k: v for k, v in (("seed", self.seed), ("interval", self.level), ("n_draws", self.n_draws))
               if v is not None}
        config = dataclasses.replace(cfg, **upd) if upd else cfg
        s = store[store["task"].astype(str) == str(task)]
        if s.empty:
            raise InputError(f"mass: task {task!r} has no rows in the store")
        if ladder is not None and "model_id" in ladder.columns:
            lt = ladder
            if "task" in ladder.columns and (ladder["task"].astype(str) == str(task)).any():
                lt = ladder[ladder["task"].astype(str) == str(task)]
            keep_all = set(lt["model_id"].astype(str))
            if self.checkpoints in ("final", "auto") and {"run", "tokens"} <= set(lt.columns):
                lt = final_checkpoints(lt, by="auto")
            keep = set(lt["model_id"].astype(str))
            s_all = s[s["model_id"].astype(str).isin(keep_all)]
            s = s[s["model_id"].astype(str).isin(keep)]
            if s.empty:
                raise InputError(f"mass: none of the ladder's models {sorted(keep)[:5]} has rows of task {task!r} "
                                 "in the store")
        else:
            s_all = s
        fam = None
        if "family" in s and s["family"].nunique() > 1:
            fam_l = ladder["family"].astype(str).unique() if ladder is not None and "family" in ladder else []
            if len(fam_l) != 1:
                raise InputError(f"mass: store rows of task {task!r} span several families "
                                 f"{sorted(s['family'].astype(str).unique())}; filter the store first")
            fam = str(fam_l[0])
        n_x = s.drop_duplicates("model_id")
        if len(n_x) < 2:
            raise InputError(f"mass: task {task!r}: need at least 2 training models, got {len(n_x)}")
        self.config_ = config
        self.fit_ = fit(s, task=str(task), family=fam, config=config)[str(task)]
        self.task_, self.metric_ = str(task), m
        self.window_ = 1
        self.cv_err_ = self._cv_error(s, fam, self.fit_) if self.inflate else float("nan")
        self.fit_all_, self.cv_err_all_ = None, float("nan")
        self.final_tokens_ = float(self.fit_.models["tokens"].astype(float).min())
        if self.checkpoints == "auto" and s_all["model_id"].nunique() > s["model_id"].nunique():
            self.fit_all_ = fit(s_all, task=str(task), family=fam, config=config)[str(task)]
            self.cv_err_all_ = self._cv_error(s_all, fam, self.fit_all_) if self.inflate else float("nan")
        return self

    def _cv_error(self, s: pd.DataFrame, fam: str | None, tf: Any) -> float:
        """|error| on the largest-compute training model when fitting on the others (NaN if < 4 computes).

        As for the ladder methods, the interval is widened in quadrature by z·cv_err: the Monte Carlo interval
        knows the item noise and a model-level shift estimated from few models, not how far the laws
        themselves extrapolate wrong.
        """
        mods = tf.models
        if mods["compute"].nunique() < 4:
            return float("nan")
        big = mods["model_id"].iloc[-1]
        try:
            sub = fit(s[s["model_id"] != big], task=self.task_, family=fam, config=self.config_)[self.task_]
            x = math.log10(float(mods["compute"].iloc[-1]))
            pred = predict_task(sub, x, metrics=(self.metric_,), n_draws=100)[self.metric_].value
        except (ValueError, np.linalg.LinAlgError):
            return float("nan")
        col = SUPPORTED_METRICS[self.metric_]
        obs = _chain.compute(s[s["model_id"] == big])[col].mean()
        return float(abs(pred - obs))

    def predict(self, params: float, tokens: float) -> Prediction:
        """The metric at N = ``params`` parameters, D = ``tokens`` tokens (compute 6·N·D FLOPs), with its interval.

        Raises
        ------
        capscale.errors.NotFittedError
            Before :meth:`fit`.
        capscale.errors.UsageError
            6·N·D not positive and finite.
        """
        check_is_fitted(self, "fit_")
        C = 6.0 * float(params) * float(tokens)
        if not (C > 0 and math.isfinite(C)):
            raise UsageError(f"mass: compute 6·N·D must be positive and finite, got N={params}, D={tokens}")
        mid = getattr(self, "fit_all_", None) is not None and float(tokens) < self.final_tokens_ * (1 - 1e-9)
        tf, cv = (self.fit_all_, self.cv_err_all_) if mid else (self.fit_, self.cv_err_)
        p = predict_task(tf, math.log10(C), metrics=(self.metric_,))[self.metric_]
        if mid:
            p.warnings.insert(0, f"mass: target tokens D = {float(tokens):.4g} are fewer than every training run's final "
                                 f"D (>= {self.final_tokens_:.4g}): an intermediate checkpoint, predicted from the laws "
                                 "fitted on every checkpoint (checkpoints='auto')")
        if self.inflate and math.isfinite(cv):
            extra = stats.norm.ppf(0.5 + self.config_.interval / 2) * cv
            lo = p.value - math.hypot(p.value - p.lower, extra)
            hi = p.value + math.hypot(p.upper - p.value, extra)
            p = MetricPrediction(p.value, max(lo, 0.0), min(hi, 1.0), p.warnings + [
                f"interval widened by the leave-largest-out error on the training models ({cv:.3f})"])
        return Prediction(value=p.value, lower=p.lower, upper=p.upper, warnings=list(p.warnings))

    def report(self) -> dict[str, Any]:
        """The fit as a JSON-ready dict: method, task, metric, training models, settings, the task-level
        residual correlations and counts of the mass model, and the leave-largest-out error.

        Raises
        ------
        capscale.errors.NotFittedError
            Before :meth:`fit`.
        """
        check_is_fitted(self, "fit_", action="report")
        tf = self.fit_
        return {"method": self.name, "task": self.task_, "metric": self.metric_, "loss": None,
                "final_window": self.window_, "n_runs": len(tf.models),
                "models": tf.models["model_id"].astype(str).tolist(), "checkpoints": self.checkpoints,
                "models_all_checkpoints": (self.fit_all_.models["model_id"].astype(str).tolist()
                                           if getattr(self, "fit_all_", None) is not None else None),
                "final_tokens": getattr(self, "final_tokens_", None),
                "corr_ci": tf.corr_ci, "corr_ii": tf.corr_ii, "rho_pooled": tf.rho_pooled,
                "shared_var": tf.shared_var, "counts": dict(tf.counts), "cv_error": self.cv_err_,
                "n_draws": self.config_.n_draws, "level": self.config_.interval, "seed": self.config_.seed,
                "warnings": []}
