"""The ladder prediction methods and the registry :data:`METHODS`.

Every method here derives from :class:`LadderMethod`: it extracts the ladder's runs, fits its laws
(``_core``), refits them on bootstrap resamples of the runs for the interval, and widens the interval by
its leave-largest-out extrapolation error on the training ladder. Compute is the nominal C = 6·N·D (FLOPs)
for the ladder runs and the target alike.
"""

from __future__ import annotations

import importlib
import math
import warnings
from abc import abstractmethod
from collections.abc import Callable, Mapping
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from capscale.analysis import laws
from capscale.analysis.predict._base import (
    MethodNotApplicable,
    Prediction,
    Predictor,
    check_is_fitted,
    law_dict,
)
from capscale.analysis.predict._runs import (
    Run,
    auto_window,
    extract_runs,
    final_value,
    loss_metric,
    moving_average,
    query_rows,
    step2_points,
)
from capscale.data.ladder_table import UNIT_METRICS, chance_of
from capscale.errors import InputError, UsageError

__all__ = [
    "LadderMethod",
    "EnsemblePredictor",
    "LogLinearPredictor",
    "DirectPredictor",
    "SigmoidPredictor",
    "LadderPredictor",
    "LadderComputePredictor",
    "GadrePredictor",
    "ChancePredictor",
    "LOSS_LAWS",
    "resolve_loss_law",
    "METHODS",
    "method_class",
    "get_method",
    "method_options",
]

#: Fit failures a refit (bootstrap, cross-validation, ensemble member) may hit and survive.
FIT_ERRORS = (laws.FitInputError, ValueError, np.linalg.LinAlgError, RuntimeError)

Fn = Callable[[float, float], float]

#: Items assumed for the binomial noise floor of a degenerate fit when the ladder measures no noise and gives no
#: ``n_items`` (a small benchmark: the floor errs wide).
ASSUMED_N_ITEMS = 100
#: A target whose compute is more than this factor above or below the ladder's range gets a warning.
FAR_FACTOR = 10.0


class LadderMethod(Predictor):
    """Shared machinery of the ladder methods: run extraction, bootstrap over runs, intervals, target checks.

    A method subclasses this, sets :attr:`name` (and :attr:`needs_loss` when it chains through a task
    loss) and implements ``_core(runs) -> (fn, laws)``: ``fn(params, tokens)`` the point prediction and
    ``laws`` the fitted :class:`capscale.analysis.laws.Law` objects by name.

    Parameters
    ----------
    bootstrap : int
        Bootstrap resamples over ladder runs for the interval (0: no bootstrap interval).
    seed : int
        Seed of the bootstrap (fits are deterministic for a seed).
    level : float
        Nominal probability of the interval (0.9: a 90 % interval).
    inflate : bool
        Widen the interval in quadrature by the leave-largest-out extrapolation error on the training ladder.
    final_window : int, optional
        Checkpoints averaged into a run's final value (default: 5 when every run's last 5 checkpoints lie in
        its last 10 % of tokens, as on the OLMo ladder, else 1).
    x_task, x_metric : str, optional
        The loss to chain through where the task has none (CLI ``--loss-task`` / ``--loss-metric``).
    chance : float, optional
        The task's chance accuracy (CLI ``--chance TASK=P``); by default the ladder's ``chance`` column, else 1/K
        averaged over the store's items, else capscale's table of common tasks
        (:func:`capscale.data.ladder_table.chance_of`); an accuracy task none of them knows is an error.
    widen : float
        Factor on both half-widths of the interval (``auto`` sets 2 for tasks whose predictability verdict is
        ``noisy``, ``non_monotone`` or ``inverse``); 1 leaves the interval as computed.

    Attributes
    ----------
    task_, metric_ : str
        What was fitted.
    chance_ : float
        Chance accuracy of the task (0 for metrics other than accuracies).
    loss_ : (str, str) or None
        The (task, metric) of the loss chained through.
    window_ : int
        The final window used.
    runs_ : list of Run
        The training runs.
    laws_ : dict of str to Law
        The fitted laws.
    fit_warnings_ : list of str
        Warnings of the fit (bounds hit, non-convergence, failed refits).
    cv_err_ : float
        The leave-largest-out RMS error (NaN when not computed).
    """

    name: ClassVar[str] = "base"
    #: Whether the method chains through a task loss.
    needs_loss: ClassVar[bool] = False
    #: Whether a missing task loss is acceptable (the method then does without it).
    optional_loss: ClassVar[bool] = False

    _warm: dict[str, list[float]] | None = None
    _failed_members: list[str]

    def __init__(self, *, bootstrap: int = 100, seed: int = 0, level: float = 0.9, inflate: bool = True,
                 final_window: int | None = None, x_task: str | None = None, x_metric: str | None = None,
                 chance: float | None = None, widen: float = 1.0):
        self.chance = chance
        self.widen = widen
        self.bootstrap = bootstrap
        self.seed = seed
        self.level = level
        self.inflate = inflate
        self.final_window = final_window
        self.x_task = x_task
        self.x_metric = x_metric

    def _warm_start(self, key: str) -> list[list[float]] | None:
        """Start list for a refit: the point estimate of law ``key`` once the point fit is done."""
        if self._warm and key in self._warm:
            return [self._warm[key]]
        return None

    @abstractmethod
    def _core(self, runs: list[Run]) -> tuple[Fn, dict[str, laws.Law]]:
        """Fit the method's laws on ``runs``; returns the prediction function and the laws by name."""

    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> LadderMethod:
        """Fit on the ladder's runs of ``task`` (see :meth:`Predictor.fit`); returns ``self``.

        Raises
        ------
        MethodNotApplicable
            The method needs a score store, or a task loss the ladder lacks.
        capscale.analysis.laws.FitInputError
            Fewer than 2 runs, or too few points for a law.
        """
        if self.needs_store and store is None:
            raise MethodNotApplicable(f"method {self.name!r} needs a score store (per-choice scores); "
                                      "the input was a published ladder")
        n_boot = int(self.bootstrap)
        self.task_, self.metric_ = task, metric
        xt = None
        if self.needs_loss:
            try:
                xt = loss_metric(ladder, task, self.x_task, self.x_metric)
            except MethodNotApplicable:
                if not self.optional_loss:
                    raise
        self.loss_ = xt
        runs = extract_runs(ladder, task, metric, xt)
        self.fit_sets_ = _fit_sets(self, ladder, task, metric, xt)
        self.chance_ = (chance_of(task, chance=self.chance, ladder=ladder, store=store)
                        if metric.startswith("acc") else 0.0)
        self.window_ = self.final_window or auto_window(runs)
        self.runs_ = runs
        if len(runs) < 2:
            n_sizes = len({r.params for r in runs})
            raise laws.FitInputError(f"{self.name}: needs at least 2 fitting sizes (ladder runs) for task {task!r}; "
                                     f"the ladder has {n_sizes} ({len(runs)} run(s))")
        self._warm = None
        self._failed_members = []
        try:
            self.fn_, self.laws_ = self._core(runs)
        except laws.FitInputError as e:
            n_sizes = len({r.params for r in runs})
            sets = "".join(f"; --fit-{k} {getattr(self, f'fit_{k}')!r} selects {len({r.params for r in v.values()})} "
                           f"size(s) ({len(v)} run(s)) of them" for k, v in self.fit_sets_.items())
            raise laws.FitInputError(f"method {self.name!r} cannot be fitted on task {task!r} with {n_sizes} fitting "
                                     f"size(s) ({len(runs)} run(s)){sets}: {e}") from e
        # bootstrap refits start from the point estimate (multi-start only for the point fit)
        self._warm = {k: [law.params_[p] for p in law.param_names] for k, law in self.laws_.items()}
        self.fit_warnings_ = sorted({w for law in self.laws_.values() for w in law.warnings_})
        self.fit_warnings_ += [f"{self.name}: member {f} failed and was left out" for f in self._failed_members]
        self._fit_noise(ladder, runs)
        # bootstrap over runs
        rng = np.random.default_rng(int(self.seed))
        self.boot_: list[Fn] = []
        fails = 0
        for _ in range(n_boot):
            pick = rng.integers(0, len(runs), len(runs))
            sample = [runs[i] for i in pick]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn, _ = self._core(_dedupe(sample))
                self.boot_.append(fn)
            except FIT_ERRORS:
                fails += 1
        self.boot_failures_ = fails
        if fails:
            self.fit_warnings_.append(f"{self.name}: {fails} of {n_boot} bootstrap refits failed "
                                      "and were left out of the interval")
        # extrapolation error by leave-largest-out on the training ladder (for the interval)
        self.cv_err_ = float("nan")
        if self.inflate:
            self.cv_err_ = _cv_error(self, runs)
        return self

    def _fit_noise(self, ladder: pd.DataFrame, runs: list[Run]) -> None:
        """Set ``flat_``, ``dof_``, ``degenerate_`` and the noise estimates behind the interval floor."""
        finals = np.array([final_value(r.y, self.window_) for r in runs])
        self.flat_ = bool(np.ptp(finals) <= 1e-9 * max(1.0, float(np.max(np.abs(finals)))))
        # degrees of freedom of the laws fitted on one point per run (the final value, or step 1's final loss)
        dofs = [law.n_points_ - len(law.param_names) for key, law in self.laws_.items()
                if key.split(".")[-1] in ("acc", "step1")]
        self.dof_ = int(min(dofs)) if dofs else len(runs) - 2
        self.degenerate_ = self.flat_ or self.dof_ <= 0
        self.n_items_, self.stderr_ = _measurement_noise(ladder, self.task_, self.metric_, runs)
        self.resid_sd_ = float("nan")
        if self.dof_ > 0:
            res = [self.fn_(r.params, r.tokens[-1]) - y for r, y in zip(runs, finals, strict=True)]
            res = np.asarray(res, dtype=float)
            if np.all(np.isfinite(res)):
                self.resid_sd_ = float(np.sqrt(np.sum(res**2) / self.dof_))
        self.ckpt_sd_ = _checkpoint_scatter(runs)
        if self.flat_:
            self.fit_warnings_.append(
                f"{self.name}: flat fit: every training run's final {self.metric_} is {finals[0]:.4g}, so the ladder "
                "shows no trend and the bootstrap measures no uncertainty; the interval is the noise floor")
        if self.dof_ <= 0:
            self.fit_warnings_.append(
                f"{self.name}: {len(runs)} runs fit exactly (zero degrees of freedom): neither the bootstrap nor the "
                "residuals measure noise; the interval is the noise floor")

    def _noise_floor(self, v: float) -> tuple[float, str]:
        """The standard deviation of the interval floor at prediction ``v``, and where it comes from.

        A degenerate fit (flat, or zero degrees of freedom) cannot measure its own uncertainty, so its
        interval is at least ±z·σ with σ the largest of: the binomial standard error sqrt(p(1 − p)/n) at
        the prediction where the ladder gives ``n_items``, else the median ``stderr`` of the final values;
        the residual scatter of the final values around the fit (when the fit has degrees of freedom);
        the checkpoint scatter of the runs' late checkpoints (:func:`_checkpoint_scatter`). When none is
        known (a fraction metric only), σ is the binomial standard error for :data:`ASSUMED_N_ITEMS` items,
        with a warning. Well-posed fits keep their interval (σ = 0).
        """
        if not getattr(self, "degenerate_", False):
            return 0.0, ""
        unit = self.metric_ in UNIT_METRICS
        cands: list[tuple[float, str]] = []
        if unit and self.n_items_:
            q = min(max(v, 1 / self.n_items_), 1 - 1 / self.n_items_)
            cands.append((math.sqrt(q * (1 - q) / self.n_items_),
                          f"the binomial standard error at n_items = {self.n_items_:g}"))
        elif math.isfinite(self.stderr_):
            cands.append((self.stderr_, "the ladder's stderr of the final values"))
        if math.isfinite(self.resid_sd_):
            cands.append((self.resid_sd_, "the residual scatter of the final values"))
        if math.isfinite(self.ckpt_sd_):
            cands.append((self.ckpt_sd_, "the scatter of the runs' late checkpoints"))
        sd, src = max([c for c in cands if c[0] > 1e-9], default=(0.0, ""))  # rounding noise is no noise
        if sd <= 0 and unit:
            q = min(max(v, 1 / ASSUMED_N_ITEMS), 1 - 1 / ASSUMED_N_ITEMS)
            sd = math.sqrt(q * (1 - q) / ASSUMED_N_ITEMS)
            src = (f"the binomial standard error for an assumed {ASSUMED_N_ITEMS} items (the ladder measures no "
                   "noise and gives no item count: add an n_items column for the real floor)")
        return sd, src

    def _check_target(self, params: float, tokens: float) -> list[str]:
        out = []
        for name, v in (("params", params), ("tokens", tokens)):
            if not (isinstance(v, int | float | np.floating | np.integer) and math.isfinite(v)) or v < 1:
                raise UsageError(f"target {name} = {v!r} is not a sensible value (must be a finite number >= 1)")
        if params > 1e14 or tokens > 1e16:
            out.append(f"target params={params:.3g}, tokens={tokens:.3g} is outside any sensible range "
                       "(> 1e14 parameters or > 1e16 tokens)")
        pmax = max(r.params for r in self.runs_)
        cmax = max(6 * r.params * r.tokens[-1] for r in self.runs_)
        cmin = min(6 * r.params * r.tokens[-1] for r in self.runs_)
        c = 6 * params * tokens
        if c > cmax:
            out.append(f"extrapolation: target compute 6ND = {c:.3g} FLOPs is {c / cmax:.3g}x the largest ladder "
                       f"run ({cmax:.3g})")
        elif c < cmin:
            out.append(f"extrapolation below the ladder: target compute 6ND = {c:.3g} FLOPs is {cmin / c:.3g}x "
                       f"smaller than the smallest ladder run ({cmin:.3g})")
        elif params <= pmax:
            out.append("target lies inside the ladder: this is interpolation")
        if c > FAR_FACTOR * cmax or c < cmin / FAR_FACTOR:
            out.append(f"target compute {c:.3g} FLOPs is more than {FAR_FACTOR:g}x outside the fitted compute range "
                       f"[{cmin:.3g}, {cmax:.3g}] of the ladder's final checkpoints: the prediction is a long "
                       "extrapolation")
        return out

    def predict(self, params: float, tokens: float) -> Prediction:
        """The metric at N = ``params`` parameters and D = ``tokens`` tokens, with its interval.

        Parameters
        ----------
        params : float
            N, parameters of the target model (>= 1).
        tokens : float
            D, its training tokens (>= 1); compute is C = 6·N·D FLOPs.

        Returns
        -------
        Prediction
            Accuracies (and ``p_choices``, ``brier``) are clipped to [0, 1], with a warning when the law's raw
            value lay outside.

        Raises
        ------
        capscale.errors.NotFittedError
            Before :meth:`fit`.
        capscale.errors.UsageError
            ``params`` or ``tokens`` not a finite number >= 1.
        """
        check_is_fitted(self, "fn_")
        warns = self._check_target(params, tokens) + list(self.fit_warnings_)
        v = float(self.fn_(float(params), float(tokens)))
        level = float(self.level)
        alpha = (1 - level) / 2
        bs = np.array([f(float(params), float(tokens)) for f in self.boot_], dtype=float)
        bs = bs[np.isfinite(bs)]
        if len(bs) >= 2:
            lo_b, hi_b = np.quantile(bs, [alpha, 1 - alpha])
            lo_h, hi_h = max(v - lo_b, 0.0), max(hi_b - v, 0.0)
        else:
            lo_h = hi_h = 0.0
            warns.append(f"{self.name}: no bootstrap interval (bootstrap={self.bootstrap})")
        if self.inflate and math.isfinite(self.cv_err_):
            z = NormalDist().inv_cdf(1 - alpha)
            # extrapolation error grows with distance: scale the CV error by the ratio of the log-size
            # extrapolation distances (target vs the CV fold), never below 1
            if len({r.params for r in self.runs_}) > 1:
                dist = math.log(max(params / max(r.params for r in self.runs_), 1.0))
            else:  # one N: a data-scaling ladder, distance in compute
                dist = math.log(max(params * tokens / max(r.params * r.tokens[-1] for r in self.runs_), 1.0))
            extra = z * self.cv_err_ * max(1.0, dist / getattr(self, "cv_log_ratio_", dist or 1.0))
            lo_h, hi_h = math.hypot(lo_h, extra), math.hypot(hi_h, extra)
        sd, src = self._noise_floor(v) if math.isfinite(v) else (0.0, "")
        if sd > 0:
            floor = NormalDist().inv_cdf(1 - alpha) * sd
            if max(lo_h, hi_h) < floor or min(lo_h, hi_h) < floor:
                warns.append(f"{self.name}: interval widened to at least ±{floor:.3g} ({level:.0%}): the noise floor "
                             f"from {src}")
            lo_h, hi_h = max(lo_h, floor), max(hi_h, floor)
        widen = float(getattr(self, "widen", 1.0))
        if widen != 1.0:
            lo_h, hi_h = widen * lo_h, widen * hi_h
            warns.append(f"{self.name}: interval widened {widen:g}x: the task's predictability verdict is "
                         f"{getattr(self, 'verdict_', 'not predictable')!r}")
        lower, upper = v - lo_h, v + hi_h
        if self.metric_.startswith("acc") or self.metric_ in ("p_choices", "brier"):
            if math.isfinite(v) and not 0.0 <= v <= 1.0:
                warns.append(f"{self.name}: raw prediction {v:.4g} lies outside [0, 1] and was clipped: the law "
                             "extrapolates past the metric's range")
                v = min(max(v, 0.0), 1.0)
            lower, upper = max(min(lower, v), 0.0), min(max(upper, v), 1.0)
        if not math.isfinite(v):
            warns.append(f"{self.name}: the prediction is not finite")
        return Prediction(v, float(lower), float(upper), warns)

    def report(self) -> dict[str, Any]:
        """Fitted laws (parameters, bounds hit, convergence) and fit settings as a JSON-ready dict.

        Raises
        ------
        capscale.errors.NotFittedError
            Before :meth:`fit`.
        """
        check_is_fitted(self, "fn_", action="report")
        return {"method": self.name, "task": self.task_, "metric": self.metric_,
                "loss": list(self.loss_) if self.loss_ else None, "final_window": self.window_,
                "n_runs": len(self.runs_), "laws": {k: law_dict(v) for k, v in self.laws_.items()},
                "cv_error": self.cv_err_, "bootstrap": self.bootstrap, "seed": self.seed,
                "warnings": self.fit_warnings_}


def _measurement_noise(ladder: pd.DataFrame, task: str, metric: str, runs: list[Run]) -> tuple[float | None, float]:
    """The ladder's item count (median ``n_items``) and median ``stderr`` of ``task``/``metric`` (None / NaN
    where the ladder has no such column or no finite positive value)."""
    sub = ladder[(ladder["task"] == task) & (ladder["metric"] == metric)]
    out: list[float] = []
    for col in ("n_items", "stderr"):
        v = pd.to_numeric(sub[col], errors="coerce").to_numpy(float) if col in sub.columns else np.array([])
        v = v[np.isfinite(v) & (v > 0)]
        out.append(float(np.median(v)) if len(v) else float("nan"))
    return (out[0] if math.isfinite(out[0]) else None), out[1]


def _checkpoint_scatter(runs: list[Run]) -> float:
    """Pooled residual SD of each run's late checkpoints (those past half its tokens, at least 3) around a line
    in log tokens: the evaluation noise the ladder shows (NaN when no run has 3 such checkpoints)."""
    ss, dof = 0.0, 0
    for r in runs:
        keep = r.tokens >= 0.5 * r.tokens[-1]
        if keep.sum() < 3:
            continue
        lx, y = np.log(r.tokens[keep]), r.y[keep]
        if np.ptp(lx) == 0 or not np.all(np.isfinite(y)):
            continue
        coef = np.polyfit(lx, y, 1)
        ss += float(np.sum((y - np.polyval(coef, lx)) ** 2))
        dof += len(y) - 2
    return math.sqrt(ss / dof) if dof else float("nan")


def _dedupe(sample: list[Run]) -> list[Run]:
    """Bootstrap samples repeat runs; keep repeats (they act as weights) but give them distinct names."""
    return [Run(f"{r.run}#{i}", r.params, r.tokens, r.y, r.x) for i, r in enumerate(sample)]


#: The steps of a chained method that can have a fit set of their own (``--fit-loss``, ``--fit-link``).
FIT_STEPS = ("loss", "link")


def _fit_sets(pred: LadderMethod, ladder: pd.DataFrame, task: str, metric: str,
              xt: tuple[str, str] | None) -> dict[str, dict[str, Run]]:
    """The runs of each chained step's own fit set, by run name (empty where the step uses every fitting run).

    A step's query (``fit_loss`` / ``fit_link``, :func:`~capscale.analysis.predict._runs.query_rows`) selects rows
    of the fitting ladder; a run's checkpoints outside it are dropped for that step (so ``tokens<=4e10`` fits the
    step on the checkpoints up to 40B tokens, the last of them giving the run's final value).

    Raises
    ------
    capscale.errors.UsageError
        A fit set given to a method that does not chain through a loss.
    capscale.errors.InputError
        A query that selects no row of the task (or of its loss).
    """
    out: dict[str, dict[str, Run]] = {}
    for step in FIT_STEPS:
        query = getattr(pred, f"fit_{step}", None)
        if query is None:
            continue
        if xt is None:
            if pred.optional_loss:  # an ensemble without a loss has no chained member for the fit set to apply to
                continue
            raise UsageError(f"--fit-{step} {query!r}: method {pred.name!r} does not chain through a task loss here, "
                             "so it has no separate loss and link steps")
        sub = ladder[query_rows(ladder, str(query), what=f"--fit-{step}")]
        try:
            runs = extract_runs(sub, task, metric, xt)
        except InputError as e:
            raise InputError(f"--fit-{step} {query!r} selects no fitting row of task {task!r} ({metric}) with its loss "
                             f"{xt[0]!r} ({xt[1]}): {e}") from e
        if not runs:
            raise InputError(f"--fit-{step} {query!r} selects no fitting row of task {task!r} ({metric}) that has "
                             f"its loss {xt[0]!r} ({xt[1]})")
        out[step] = {r.run: r for r in runs}
    return out


def step_runs(pred: LadderMethod, runs: list[Run], step: str, need: int = 2) -> list[Run]:
    """The runs step ``step`` (``"loss"`` or ``"link"``) of a chained method is fitted on: ``runs`` itself, or, with a
    fit set for the step, those of ``runs`` in it, cut to the set's checkpoints (bootstrap copies keep their names).

    Raises
    ------
    capscale.analysis.laws.FitInputError
        Fewer than ``need`` runs are left for the step.
    """
    sets = getattr(pred, "fit_sets_", None) or {}
    table = sets.get(step)
    if table is None:
        return runs
    out = []
    for r in runs:
        base = r.run if r.run in table else r.run.rpartition("#")[0]
        if base in table:
            t = table[base]
            out.append(Run(r.run, t.params, t.tokens, t.y, t.x))
    if len(out) < need:
        raise laws.FitInputError(f"{pred.name}: --fit-{step} {getattr(pred, f'fit_{step}')!r} leaves {len(out)} "
                                 f"run(s) for the {step} step (needs {need})")
    return out


def _cv_error(pred: LadderMethod, runs: list[Run]) -> float:
    """RMS error on the runs of the largest size when fitting on the others (nan if not possible)."""
    train, held = _split_runs(runs, 1)
    if len(train) < 2 or not held:
        return float("nan")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn, _ = pred._core(train)
        errs = [fn(r.params, r.tokens[-1]) - final_value(r.y, pred.window_) for r in held]
    except FIT_ERRORS:
        return float("nan")
    errs = np.asarray(errs, dtype=float)
    cmax = max(r.params * r.tokens[-1] for r in train)
    nmax = max(r.params for r in train)
    ratio = [math.log(r.params / nmax) for r in held] if len({r.params for r in runs}) > 1 else [
        math.log(r.params * r.tokens[-1] / cmax) for r in held]
    pred.cv_log_ratio_ = max(float(np.mean(ratio)), 1e-3)
    return float(np.sqrt(np.mean(errs**2))) if np.all(np.isfinite(errs)) else float("nan")


def _split_runs(runs: list[Run], k: int) -> tuple[list[Run], list[Run]]:
    """Runs of the ``k`` largest sizes held out (N; final compute when every run has the same N)."""
    one_n = len({r.params for r in runs}) == 1
    key = (lambda r: r.params * r.tokens[-1]) if one_n else (lambda r: r.params)
    sizes = sorted({key(r) for r in runs})
    if len(sizes) <= k:
        return runs, []
    cut = sizes[-k]
    return [r for r in runs if key(r) < cut], [r for r in runs if key(r) >= cut]


def _finals(runs: list[Run], window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    n = np.array([r.params for r in runs])
    d = np.array([r.tokens[-1] for r in runs])
    y = np.array([final_value(r.y, window) for r in runs])
    return n, d, y, [r.run for r in runs]


#: Step-1 loss laws of the chained methods: ``compute`` L(C) = E + A/C^α; ``compute_multiplier`` L(C, M) of Gadre et
#: al. 2024 (M = D/N tokens per parameter); ``nd`` Chinchilla L(N, D); ``auto`` (``gadre``'s default):
#: ``compute_multiplier`` when the fitting runs span several multipliers at a fixed size (max/min M >=
#: :data:`MULTIPLIER_SPAN` among the runs of one N; at least 5 runs of 2 sizes), else ``compute``.
LOSS_LAWS = ("compute", "compute_multiplier", "nd", "auto")
MULTIPLIER_SPAN = 2.0


def resolve_loss_law(loss_law: str, runs: list[Run]) -> str:
    """The step-1 law ``loss_law`` means on these runs (``auto`` resolved; see :data:`LOSS_LAWS`)."""
    if loss_law not in LOSS_LAWS:
        raise UsageError(f"loss_law must be one of {list(LOSS_LAWS)}, not {loss_law!r}")
    if loss_law != "auto":
        return loss_law
    by_n: dict[float, list[float]] = {}
    for r in runs:
        by_n.setdefault(r.params, []).append(r.tokens[-1] / r.params)
    # identified only when M varies at a fixed N (with one D for every size, as in Pythia, M and C are collinear)
    spans = any(max(v) / min(v) >= MULTIPLIER_SPAN for v in by_n.values())
    return "compute_multiplier" if len(runs) >= 5 and len(by_n) >= 2 and spans else "compute"


def fit_step1(kind: str, runs: list[Run], lf: np.ndarray, starts: list[list[float]] | None = None
              ) -> tuple[laws.Law, Fn]:
    """Fit step 1 (final loss ``lf`` of each run) with law ``kind`` (resolved); returns the law and loss(N, D)."""
    n = np.array([r.params for r in runs])
    d = np.array([r.tokens[-1] for r in runs])
    lab = [r.run for r in runs]
    if kind == "compute_multiplier":
        law = laws.ComputeMultiplierLaw(labels=lab, starts=starts).fit(np.c_[6 * n * d, d / n], lf)
        return law, lambda p, t: float(law.predict([[6 * p * t, t / p]])[0])
    if kind == "nd":
        law = laws.ChinchillaND(labels=lab, starts=starts).fit(np.c_[n, d], lf)
        return law, lambda p, t: float(law.predict([[p, t]])[0])
    law = laws.ComputeLaw(labels=lab, starts=starts).fit(6 * n * d, lf)
    return law, lambda p, t: float(law.predict([6 * p * t])[0])


def step1_predict(law: laws.Law, params: float, tokens: float) -> float:
    """The loss a fitted step-1 law predicts at (N, D), whatever its form."""
    if isinstance(law, laws.ComputeMultiplierLaw):
        return float(law.predict([[6 * params * tokens, tokens / params]])[0])
    if isinstance(law, laws.ChinchillaND):
        return float(law.predict([[params, tokens]])[0])
    return float(law.predict([6 * params * tokens])[0])


class EnsemblePredictor(LadderMethod):
    """Median of the member methods' predictions (robust to one member's failed extrapolation).

    Members that need a task loss are left out where the ladder has none; a member whose fit fails is
    left out and named in the warnings. Members use their default options, without bootstrap or inflation
    (the ensemble bootstraps and inflates as a whole).

    Parameters
    ----------
    members : tuple of str, optional
        The member methods (default :attr:`MEMBERS`: ``ladder``, ``ladder_c``, ``direct``, ``sigmoid``, ``gadre``).
    fit_loss, fit_link : str, optional
        Separate fit sets of the chained members' two steps (:class:`LadderPredictor`); the members fitted on final
        accuracies use every fitting run.
    bootstrap, seed, level, inflate, final_window, x_task, x_metric, chance, widen
        As for :class:`LadderMethod`.
    """

    name = "ensemble"
    needs_loss = True
    optional_loss = True
    MEMBERS: ClassVar[tuple[str, ...]] = ("ladder", "ladder_c", "direct", "sigmoid", "gadre")

    def __init__(self, *, members: tuple[str, ...] | None = None, fit_loss: str | None = None,
                 fit_link: str | None = None, bootstrap: int = 100, seed: int = 0, level: float = 0.9,
                 inflate: bool = True, final_window: int | None = None, x_task: str | None = None,
                 x_metric: str | None = None, chance: float | None = None, widen: float = 1.0):
        super().__init__(bootstrap=bootstrap, seed=seed, level=level, inflate=inflate, final_window=final_window,
                         x_task=x_task, x_metric=x_metric, chance=chance, widen=widen)
        self.members = members
        self.fit_loss = fit_loss
        self.fit_link = fit_link

    def _core(self, runs):
        fns, fitted = [], {}
        first = self._warm is None
        if first:
            self._members: dict[str, LadderMethod] = {}
            for name in tuple(self.members or self.MEMBERS):
                m = get_method(name, bootstrap=0, inflate=False)
                if m.needs_loss and runs[0].x is None:
                    continue
                if m.needs_loss:  # the chained members share the ensemble's fit sets
                    m.set_params(fit_loss=self.fit_loss, fit_link=self.fit_link)
                    m.fit_sets_ = self.fit_sets_
                m.task_, m.metric_, m.chance_, m.window_ = self.task_, self.metric_, self.chance_, self.window_
                self._members[name] = m
        failed = []
        for name, m in self._members.items():
            try:
                fn, lw = m._core(runs)
            except FIT_ERRORS as e:
                failed.append(f"{name} ({e})")
                continue
            if first:
                m._warm = {k: [law.params_[p] for p in law.param_names] for k, law in lw.items()}
            fns.append(fn)
            fitted.update({f"{name}.{k}": v for k, v in lw.items()})
        if first and failed:
            self._failed_members = failed
        if not fns:
            raise laws.FitInputError(f"{self.name}: no member method could be fitted")

        def fn(p: float, t: float) -> float:
            vals = np.array([f(p, t) for f in fns], dtype=float)
            vals = vals[np.isfinite(vals)]
            return float(np.median(vals)) if len(vals) else float("nan")

        return fn, fitted


class LogLinearPredictor(LadderMethod):
    """Baseline: final accuracy linear in log10 of C = 6·N·D (FLOPs)."""

    name = "loglinear"

    def _core(self, runs):
        n, d, y, lab = _finals(runs, self.window_)
        law = laws.LogLinear(labels=lab).fit(6 * n * d, y)
        return (lambda p, t: float(law.predict([6 * p * t])[0])), {"acc": law}


class DirectPredictor(LadderMethod):
    """Direct law log(−log acc') = a·ln C + b on chance-normalised final accuracy."""

    name = "direct"

    def _core(self, runs):
        n, d, y, lab = _finals(runs, self.window_)
        law = laws.DirectLaw(chance=self.chance_, labels=lab).fit(6 * n * d, y)
        return (lambda p, t: float(law.predict([6 * p * t])[0])), {"acc": law}


class SigmoidPredictor(LadderMethod):
    """Sigmoid in log10 compute with a floor in [0, chance]: acc = (1 − f)·σ(w·log10 C + c) + f."""

    name = "sigmoid"

    def _core(self, runs):
        n, d, y, lab = _finals(runs, self.window_)
        law = laws.ObsSigmoid(floor=(0.0, max(self.chance_, 1e-9)), labels=lab).fit(np.log10(6 * n * d), y)
        return (lambda p, t: float(law.predict([[math.log10(6 * p * t)]])[0])), {"acc": law}


class LadderPredictor(LadderMethod):
    """OLMo ladder two-step method, exactly as published (Bhagia et al. 2024).

    Step 1: Chinchilla L(N, D) on each run's final task loss (the last value of its ``ladder_window``-point
    trailing moving average); step 2: the scaled sigmoid of accuracy in the loss on all intermediate
    checkpoints (first 10 % skipped, 5-point trailing moving average, anchor (0, 1)); chained.

    Parameters
    ----------
    ladder_window : int
        Checkpoints of the moving average that gives a run's final loss in step 1.
    loss_law : str, optional
        Step 1's law (:data:`LOSS_LAWS`); default the method's own: ``nd`` (published, one start) for ``ladder``,
        ``compute`` for ``ladder_c``.
    fit_loss, fit_link : str, optional
        Queries over the fitting ladder's columns (``params<=1.2e9``, ``multiplier<=20``, ``tokens<=4e10``) selecting
        the rows step 1 (the loss law) and step 2 (the link from loss to accuracy) are fitted on; default every
        fitting row for both (CLI ``--fit-loss`` / ``--fit-link``).
    bootstrap, seed, level, inflate, final_window, x_task, x_metric, chance, widen
        As for :class:`LadderMethod`.
    """

    name = "ladder"
    needs_loss = True
    #: Step 1's law: ``"nd"`` Chinchilla L(N, D), ``"c"`` L(C) = E + A/C^α.
    step1: ClassVar[str] = "nd"

    def __init__(self, *, ladder_window: int = 5, loss_law: str | None = None, fit_loss: str | None = None,
                 fit_link: str | None = None, bootstrap: int = 100, seed: int = 0, level: float = 0.9,
                 inflate: bool = True, final_window: int | None = None, x_task: str | None = None,
                 x_metric: str | None = None, chance: float | None = None, widen: float = 1.0):
        super().__init__(bootstrap=bootstrap, seed=seed, level=level, inflate=inflate, final_window=final_window,
                         x_task=x_task, x_metric=x_metric, chance=chance, widen=widen)
        self.ladder_window = ladder_window
        self.loss_law = loss_law
        self.fit_loss = fit_loss
        self.fit_link = fit_link

    def _core(self, runs):
        r1, r2 = step_runs(self, runs, "loss"), step_runs(self, runs, "link", need=1)
        n = np.array([r.params for r in r1])
        d = np.array([r.tokens[-1] for r in r1])
        lf = np.array([moving_average(r.x, self.ladder_window)[-1] for r in r1])
        lab = [r.run for r in r1]
        kind = resolve_loss_law(self.loss_law or ("nd" if self.step1 == "nd" else "compute"), r1)
        if kind == "nd" and self.loss_law is None:  # the published procedure: one start, exact settings
            s1 = laws.ChinchillaND(starts=[laws.ChinchillaND.OLMO_P0], maxiter=1_000_000, ftol=0.0, labels=lab)
            s1.fit(np.c_[n, d], lf)
            f1 = lambda p, t: float(s1.predict([[p, t]])[0])  # noqa: E731
        else:
            s1, f1 = fit_step1(kind, r1, lf, self._warm_start("step1"))
        x, y = step2_points(r2)
        s2 = laws.LadderSigmoid(chance=self.chance_ if self.chance_ > 0 else 0.25).fit(x, y)
        return (lambda p, t: float(s2.predict([f1(p, t)])[0])), {"step1": s1, "step2": s2}

    def predict_steps(self, params: float, tokens: float, actual_loss: float | None = None) -> dict[str, float]:
        """Step errors kept apart: the predicted loss, the chained accuracy, and (given the actual loss of the
        target) the step-2-only accuracy at that loss.

        Returns
        -------
        dict
            ``pred_loss`` (the task loss metric's units), ``chained`` and, with ``actual_loss``,
            ``step2_only`` (accuracies as fractions).
        """
        check_is_fitted(self, "fn_", action="predict_steps")
        s1, s2 = self.laws_["step1"], self.laws_["step2"]
        lp = step1_predict(s1, params, tokens)
        out = {"pred_loss": lp, "chained": float(s2.predict([lp])[0])}
        if actual_loss is not None:
            out["step2_only"] = float(s2.predict([actual_loss])[0])
        return out


class LadderComputePredictor(LadderPredictor):
    """OLMo ladder with step 1 in compute: L(C) = E + A/C^α, C = 6·N·D."""

    name = "ladder_c"
    step1 = "c"


class GadrePredictor(LadderMethod):
    """Gadre et al. 2024, chained: step 1 a loss law on final losses, then Err(L) = ε − k·exp(−γL) on all checkpoints.

    Parameters
    ----------
    loss_law : str
        Step 1's law (:data:`LOSS_LAWS`); ``auto`` (default): the over-training form L(C, M) when the fitting runs
        span several token multipliers, else L(C).
    fit_loss, fit_link : str, optional
        Separate fit sets of the two steps, as for :class:`LadderPredictor`.
    bootstrap, seed, level, inflate, final_window, x_task, x_metric, chance, widen
        As for :class:`LadderMethod`.
    """

    name = "gadre"
    needs_loss = True

    def __init__(self, *, loss_law: str = "auto", fit_loss: str | None = None, fit_link: str | None = None,
                 bootstrap: int = 100, seed: int = 0, level: float = 0.9, inflate: bool = True,
                 final_window: int | None = None, x_task: str | None = None, x_metric: str | None = None,
                 chance: float | None = None, widen: float = 1.0):
        super().__init__(bootstrap=bootstrap, seed=seed, level=level, inflate=inflate, final_window=final_window,
                         x_task=x_task, x_metric=x_metric, chance=chance, widen=widen)
        self.loss_law = loss_law
        self.fit_loss = fit_loss
        self.fit_link = fit_link

    def _core(self, runs):
        r1, r2 = step_runs(self, runs, "loss"), step_runs(self, runs, "link", need=1)
        lf = np.array([final_value(r.x, self.window_) for r in r1])
        if self._warm is None:  # the point fit decides the law; bootstrap refits keep it
            self.loss_law_ = resolve_loss_law(self.loss_law, r1)
        s1, f1 = fit_step1(self.loss_law_, r1, lf, self._warm_start("step1"))
        x = np.concatenate([r.x for r in r2])
        err = 1 - np.concatenate([r.y for r in r2])
        s2 = laws.GadreExp().fit(x, err)
        return (lambda p, t: float(1 - s2.predict([f1(p, t)])[0])), {"step1": s1, "step2": s2}

    def predict_steps(self, params: float, tokens: float, actual_loss: float | None = None) -> dict[str, float]:
        """Predicted loss, chained accuracy and (given the actual loss) the step-2-only accuracy."""
        check_is_fitted(self, "fn_", action="predict_steps")
        s1, s2 = self.laws_["step1"], self.laws_["step2"]
        lp = step1_predict(s1, params, tokens)
        out = {"pred_loss": lp, "chained": float(1 - s2.predict([lp])[0])}
        if actual_loss is not None:
            out["step2_only"] = float(1 - s2.predict([actual_loss])[0])
        return out


class ChancePredictor(LadderMethod):
    """Predict chance accuracy, with an interval that allows emergence (``auto`` on an ``at_chance`` task).

    The value is the task's chance accuracy. The interval runs from chance − z·SE (SE of the largest fitting
    size's final value, :func:`capscale.analysis.predict._verdict.predictability`) up to the larger of chance + z·SE
    and the upper bound of ``emergence_method`` fitted on the same ladder: if the task does emerge at the target,
    the interval says how far it could go.

    Parameters
    ----------
    emergence_method : str
        The method whose upper bound is the interval's top (default ``sigmoid``: accuracy may rise from its floor).
    bootstrap, seed, level, inflate, final_window, x_task, x_metric, chance, widen
        As for :class:`LadderMethod` (passed to ``emergence_method``).
    """

    name = "chance"

    def __init__(self, *, emergence_method: str = "sigmoid", bootstrap: int = 100, seed: int = 0, level: float = 0.9,
                 inflate: bool = True, final_window: int | None = None, x_task: str | None = None,
                 x_metric: str | None = None, chance: float | None = None, widen: float = 1.0):
        super().__init__(bootstrap=bootstrap, seed=seed, level=level, inflate=inflate, final_window=final_window,
                         x_task=x_task, x_metric=x_metric, chance=chance, widen=widen)
        self.emergence_method = emergence_method

    def _core(self, runs):
        c = float(self.chance_)
        return (lambda p, t: c), {}

    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> ChancePredictor:
        """Fit (the chance level, and ``emergence_method`` for the interval's top); returns ``self``."""
        from capscale.analysis.predict._verdict import predictability

        inflate = self.inflate
        self.inflate = False
        super().fit(ladder, task, metric=metric, store=store)
        self.inflate = inflate
        self.predictability_ = predictability(ladder, task, metric, self.chance_)
        opts = {k: v for k, v in self.get_params(deep=False).items() if k not in ("emergence_method", "chance")}
        self.emergence_ = None
        try:
            em = get_method(self.emergence_method, **method_options(self.emergence_method, opts),
                            **({"chance": self.chance_} if "chance" in method_class(self.emergence_method)
                               ._get_param_names() else {}))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.emergence_ = em.fit(ladder, task, metric=metric, store=store)
        except FIT_ERRORS as e:
            self.fit_warnings_.append(f"chance: {self.emergence_method} could not be fitted for the interval's top ({e})")
        return self

    def predict(self, params: float, tokens: float) -> Prediction:
        """Chance accuracy with an interval from chance − z·SE to the emergence method's upper bound."""
        check_is_fitted(self, "fn_")
        warns = self._check_target(params, tokens)
        z = NormalDist().inv_cdf(1 - (1 - float(self.level)) / 2)
        se = float(self.predictability_.stats.get("se_top", 0.0)) or 0.0
        c = float(self.chance_)
        upper = c + z * se
        if self.emergence_ is not None:
            self.emergence_.set_params(level=self.level)
            pe = self.emergence_.predict(params, tokens)
            if math.isfinite(pe.upper):
                upper = max(upper, pe.upper, pe.value)
        warns.append(f"chance: the task is at chance on the fitting ladder ({self.predictability_.reason}); predicted at "
                     f"chance {c:.3g}, with an interval up to {upper:.3f} in case it emerges at the target")
        return Prediction(c, max(c - z * se, 0.0), min(upper, 1.0), warns + list(self.fit_warnings_))


#: The methods by name, as ``"module:Class"`` (resolved on first use, so that importing
#: :mod:`capscale.analysis.predict` does not import :mod:`capscale.analysis.mass`).
METHODS: dict[str, str] = {
    "loglinear": "capscale.analysis.predict._methods:LogLinearPredictor",
    "direct": "capscale.analysis.predict._methods:DirectPredictor",
    "sigmoid": "capscale.analysis.predict._methods:SigmoidPredictor",
    "ladder": "capscale.analysis.predict._methods:LadderPredictor",
    "ladder_c": "capscale.analysis.predict._methods:LadderComputePredictor",
    "gadre": "capscale.analysis.predict._methods:GadrePredictor",
    "ensemble": "capscale.analysis.predict._methods:EnsemblePredictor",
    "chance": "capscale.analysis.predict._methods:ChancePredictor",
    "mass": "capscale.analysis.predict._mass:MassPredictor",
    "cod": "capscale.analysis.predict._cod:CodPredictor",
    "observational": "capscale.analysis.predict._observational:ObservationalPredictor",
}


def method_class(name: str) -> type[Predictor]:
    """The predictor class registered as ``name`` in :data:`METHODS`.

    Raises
    ------
    capscale.errors.UsageError
        ``name`` is not a registered method.
    """
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; known: {sorted(METHODS)} (or 'auto')")
    module, _, cls = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_method(name: str, **options: Any) -> Predictor:
    """A new, unfitted predictor of method ``name`` (``options`` go to its constructor).

    Raises
    ------
    capscale.errors.UsageError
        ``name`` is not a registered method.
    TypeError
        An option the method does not have.
    """
    return method_class(name)(**options)


def method_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that method ``name`` takes, for options shared by several methods.

    :func:`capscale.analysis.predict.fit_method` and :func:`~capscale.analysis.predict.backtest` run several
    methods with one set of options (the CLI's ``--bootstrap``, ``--seed``, ``--loss-task``...): each method
    gets the options it has; an option no registered method has is an error.

    Raises
    ------
    TypeError
        An option that no method of :data:`METHODS` takes (the message names it).
    """
    mine = set(method_class(name)._get_param_names())
    other = set(options) - mine
    if other:
        known = set().union(*(method_class(m)._get_param_names() for m in METHODS))
        unknown = sorted(other - known)
        if unknown:
            raise TypeError(f"unknown predictor option(s) {unknown} (method {name!r}); options of the methods: "
                            f"{sorted(known)}")
    return {k: v for k, v in options.items() if k in mine}
