"""Predict a task's accuracy for a model not yet trained, from a ladder of smaller models.

Every method implements the :class:`Predictor` protocol: ``fit(ladder, task, *, metric, store)``
then ``predict(params, tokens) -> Prediction`` (value with a nominal 90 % interval and warnings).
Methods are looked up by name in :data:`METHODS`:

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
``mass``       probability-mass model of :mod:`capscale.analysis.mass` (needs a score store)
============== ================================================================================

Compute-based laws use the nominal C = 6·N·D (FLOPs) for the ladder runs and the target alike, so a
target given as (N, D) is placed consistently. Intervals: percentile bootstrap over ladder runs
(``bootstrap`` resamples, fixed ``seed``), widened in quadrature by the method's leave-largest-out
extrapolation error on the training ladder (``inflate=True``). :func:`backtest` holds out the largest
runs; :func:`select_method` (``auto``) picks per task by leave-largest-out cross-validation on the
training ladder only.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from capscale.analysis import laws
from capscale.data.ladder_table import chance_of, check_ladder, run_of

__all__ = [
    "Prediction",
    "Predictor",
    "MethodNotApplicable",
    "METHODS",
    "get_method",
    "select_method",
    "backtest",
    "split_largest",
    "DEFAULT_CANDIDATES",
]


@dataclass
class Prediction:
    """A predicted value with a nominal 90 % interval [lower, upper] and warnings."""

    value: float
    lower: float
    upper: float  # 90% interval
    warnings: list[str] = field(default_factory=list)


class Predictor(Protocol):
    name: str

    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> Predictor: ...

    def predict(self, params: float, tokens: float) -> Prediction: ...


class MethodNotApplicable(ValueError):
    """The method cannot run on this input (e.g. needs a score store, or a task loss)."""


def _lazy(module: str, cls: str) -> Callable[..., Predictor]:
    def make(**kw: Any) -> Predictor:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise MethodNotApplicable(f"method needs {module}, which is not available: {e}") from e
        return getattr(mod, cls)(**kw)

    make.__name__ = cls
    return make


# ----------------------------------------------------------------------------------------------
# Data extraction
# ----------------------------------------------------------------------------------------------


@dataclass
class _Run:
    run: str
    params: float
    tokens: np.ndarray  # per checkpoint, sorted
    y: np.ndarray  # metric per checkpoint
    x: np.ndarray | None  # loss per checkpoint (aligned), if any


def _final(v: np.ndarray, window: int) -> float:
    return float(np.mean(v[-window:]))


def _moving_avg(v: np.ndarray, w: int = 5) -> np.ndarray:
    """Trailing moving average that keeps the length (the first values average the available prefix)."""
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - w, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def _loss_metric(ladder: pd.DataFrame, task: str, x_task: str | None, x_metric: str | None) -> tuple[str, str]:
    if x_metric is not None:
        return (x_task or task), x_metric
    tm = ladder.loc[ladder["task"] == task, "metric"].unique()
    for m in ("task_bpb", "task_loss"):
        if m in tm:
            return task, m
    if x_task is not None:
        xm = ladder.loc[ladder["task"] == x_task, "metric"].unique()
        for m in ("task_bpb", "task_loss", "val_loss"):
            if m in xm:
                return x_task, m
    raise MethodNotApplicable(f"task {task!r} has no task loss (task_bpb or task_loss) in the ladder; "
                              "give x_task/x_metric (CLI --loss-task/--loss-metric) to chain through another loss")


def _extract(ladder: pd.DataFrame, task: str, metric: str, xt: tuple[str, str] | None) -> list[_Run]:
    sub = ladder[(ladder["task"] == task) & (ladder["metric"] == metric)]
    if sub.empty:
        have = sorted(ladder.loc[ladder["task"] == task, "metric"].unique())
        tasks = sorted(ladder["task"].unique())
        raise ValueError(f"ladder has no rows for task {task!r} and metric {metric!r}"
                         + (f"; metrics of this task: {have}" if have else f"; tasks: {tasks[:20]}"))
    y = sub[["model_id", "run", "params", "tokens", "step", "value"]]
    if xt is not None:
        xs = ladder[(ladder["task"] == xt[0]) & (ladder["metric"] == xt[1])][["model_id", "value"]]
        y = y.merge(xs.rename(columns={"value": "x"}), on="model_id", how="inner")
    y = y.sort_values(["run", "tokens", "step"], kind="stable")
    runs = []
    for run, g in y.groupby("run", sort=True):
        runs.append(_Run(str(run), float(g["params"].iloc[0]), g["tokens"].to_numpy(float),
                         g["value"].to_numpy(float), g["x"].to_numpy(float) if xt is not None else None))
    return runs


def _auto_window(runs: list[_Run]) -> int:
    """5 when every run's last 5 checkpoints lie within the last 10 % of its tokens (OLMo ladder), else 1."""
    ok = all(len(r.tokens) >= 5 and r.tokens[-5] >= 0.9 * r.tokens[-1] for r in runs)
    return 5 if ok else 1


# ----------------------------------------------------------------------------------------------
# Predictors
# ----------------------------------------------------------------------------------------------


class _Base:
    """Shared machinery: data extraction, bootstrap over runs, intervals, target checks."""

    name = "base"
    needs_store = False
    needs_loss = False

    def __init__(self, *, bootstrap: int = 100, seed: int = 0, level: float = 0.9, inflate: bool = True,
                 final_window: int | None = None, x_task: str | None = None, x_metric: str | None = None):
        self.bootstrap = int(bootstrap)
        self.seed = int(seed)
        self.level = float(level)
        self.inflate = inflate
        self.final_window = final_window
        self.x_task = x_task
        self.x_metric = x_metric
        self.fit_warnings_: list[str] = []
        self.info_: dict[str, Any] = {}

    _warm: dict[str, list[float]] | None = None

    def _warm_start(self, key: str) -> list[list[float]] | None:
        """Start list for a refit: the point estimate of law ``key`` once the point fit is done."""
        if self._warm and key in self._warm:
            return [self._warm[key]]
        return None

    # subclasses: return a function (params, tokens) -> prediction, plus fitted laws for reports
    def _core(self, runs: list[_Run]) -> tuple[Callable[[float, float], float], dict[str, laws.Law]]:
        raise NotImplementedError

    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> _Base:
        if self.needs_store and store is None:
            raise MethodNotApplicable(f"method {self.name!r} needs a score store (per-choice scores); "
                                      "the input was a published ladder")
        if "run" not in ladder.columns or ladder["run"].isna().any():
            ladder = ladder.assign(run=run_of(ladder))
        self.task, self.metric = task, metric
        self.chance = chance_of(task) if metric.startswith("acc") else 0.0
        xt = None
        if self.needs_loss:
            try:
                xt = _loss_metric(ladder, task, self.x_task, self.x_metric)
            except MethodNotApplicable:
                if not getattr(self, "optional_loss", False):
                    raise
        self.loss_ = xt
        runs = _extract(ladder, task, metric, xt)
        self.window_ = self.final_window or _auto_window(runs)
        self.runs_ = runs
        if len(runs) < 2:
            raise laws.FitInputError(f"{self.name}: task {task!r} has {len(runs)} ladder run(s); need at least 2")
        self._warm = None
        self.fn_, self.laws_ = self._core(runs)
        # bootstrap refits start from the point estimate (multi-start only for the point fit)
        self._warm = {k: [law.params_[p] for p in law.param_names] for k, law in self.laws_.items()}
        self.fit_warnings_ = sorted({w for law in self.laws_.values() for w in law.warnings_})
        self.fit_warnings_ += [f"{self.name}: member {f} failed and was left out"
                               for f in getattr(self, "_failed_members", [])]
        # bootstrap over runs
        rng = np.random.default_rng(self.seed)
        self.boot_: list[Callable[[float, float], float]] = []
        fails = 0
        for _ in range(self.bootstrap):
            pick = rng.integers(0, len(runs), len(runs))
            sample = [runs[i] for i in pick]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn, _ = self._core(_dedupe(sample))
                self.boot_.append(fn)
            except (laws.FitInputError, ValueError, np.linalg.LinAlgError, RuntimeError):
                fails += 1
        self.boot_failures_ = fails
        if fails:
            self.fit_warnings_.append(f"{self.name}: {fails} of {self.bootstrap} bootstrap refits failed "
                                      "and were left out of the interval")
        # extrapolation error by leave-largest-out on the training ladder (for the interval)
        self.cv_err_ = float("nan")
        if self.inflate:
            self.cv_err_ = _cv_error(self, runs)
        return self

    def _check_target(self, params: float, tokens: float) -> list[str]:
        out = []
        for name, v in (("params", params), ("tokens", tokens)):
            if not (isinstance(v, int | float | np.floating | np.integer) and math.isfinite(v)) or v < 1:
                raise ValueError(f"target {name} = {v!r} is not a sensible value (must be a finite number >= 1)")
        if params > 1e14 or tokens > 1e16:
            out.append(f"target params={params:.3g}, tokens={tokens:.3g} is outside any sensible range "
                       "(> 1e14 parameters or > 1e16 tokens)")
        pmax = max(r.params for r in self.runs_)
        cmax = max(6 * r.params * r.tokens[-1] for r in self.runs_)
        c = 6 * params * tokens
        if c > cmax:
            out.append(f"extrapolation: target compute 6ND = {c:.3g} FLOPs is {c / cmax:.3g}x the largest ladder "
                       f"run ({cmax:.3g})")
        if params <= pmax and c <= cmax:
            out.append("target lies inside or below the ladder: this is interpolation")
        return out

    def predict(self, params: float, tokens: float) -> Prediction:
        warns = self._check_target(params, tokens) + list(self.fit_warnings_)
        v = float(self.fn_(float(params), float(tokens)))
        alpha = (1 - self.level) / 2
        bs = np.array([f(float(params), float(tokens)) for f in self.boot_], dtype=float)
        bs = bs[np.isfinite(bs)]
        if len(bs) >= 2:
            lo_b, hi_b = np.quantile(bs, [alpha, 1 - alpha])
            lo_h, hi_h = max(v - lo_b, 0.0), max(hi_b - v, 0.0)
        else:
            lo_h = hi_h = 0.0
            warns.append(f"{self.name}: no bootstrap interval (bootstrap={self.bootstrap})")
        if self.inflate and math.isfinite(self.cv_err_):
            from statistics import NormalDist

            z = NormalDist().inv_cdf(1 - alpha)
            # extrapolation error grows with distance: scale the CV error by the ratio of the log-size
            # extrapolation distances (target vs the CV fold), never below 1
            dist = math.log(max(params / max(r.params for r in self.runs_), 1.0))
            extra = z * self.cv_err_ * max(1.0, dist / getattr(self, "cv_log_ratio_", dist or 1.0))
            lo_h, hi_h = math.hypot(lo_h, extra), math.hypot(hi_h, extra)
        lower, upper = v - lo_h, v + hi_h
        if self.metric.startswith("acc") or self.metric in ("p_choices", "brier"):
            if math.isfinite(v) and not 0.0 <= v <= 1.0:
                warns.append(f"{self.name}: raw prediction {v:.4g} lies outside [0, 1] and was clipped: the law "
                             "extrapolates past the metric's range")
                v = min(max(v, 0.0), 1.0)
            lower, upper = max(min(lower, v), 0.0), min(max(upper, v), 1.0)
        if not math.isfinite(v):
            warns.append(f"{self.name}: the prediction is not finite")
        return Prediction(v, float(lower), float(upper), warns)

    def report(self) -> dict[str, Any]:
        """Fitted laws (parameters, bounds hit, convergence) and fit settings as a JSON-able dict."""
        return {"method": self.name, "task": self.task, "metric": self.metric,
                "loss": list(self.loss_) if self.loss_ else None, "final_window": self.window_,
                "n_runs": len(self.runs_), "laws": {k: v.to_dict() for k, v in self.laws_.items()},
                "cv_error": self.cv_err_, "bootstrap": self.bootstrap, "seed": self.seed,
                "warnings": self.fit_warnings_}


def _dedupe(sample: list[_Run]) -> list[_Run]:
    """Bootstrap samples repeat runs; keep repeats (they act as weights) but give them distinct names."""
    return [_Run(f"{r.run}#{i}", r.params, r.tokens, r.y, r.x) for i, r in enumerate(sample)]


def _cv_error(pred: _Base, runs: list[_Run]) -> float:
    """RMS error on the runs of the largest size when fitting on the others (nan if not possible)."""
    train, held = _split_runs(runs, 1)
    if len(train) < 2 or not held:
        return float("nan")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn, _ = pred._core(train)
        errs = [fn(r.params, r.tokens[-1]) - _final(r.y, pred.window_) for r in held]
    except (laws.FitInputError, ValueError, np.linalg.LinAlgError, RuntimeError):
        return float("nan")
    errs = np.asarray(errs, dtype=float)
    nmax = max(r.params for r in train)
    pred.cv_log_ratio_ = max(float(np.mean([math.log(r.params / nmax) for r in held])), 1e-3)
    return float(np.sqrt(np.mean(errs**2))) if np.all(np.isfinite(errs)) else float("nan")


def _split_runs(runs: list[_Run], k: int) -> tuple[list[_Run], list[_Run]]:
    sizes = sorted({r.params for r in runs})
    if len(sizes) <= k:
        return runs, []
    cut = sizes[-k]
    return [r for r in runs if r.params < cut], [r for r in runs if r.params >= cut]


def _finals(runs: list[_Run], window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    n = np.array([r.params for r in runs])
    d = np.array([r.tokens[-1] for r in runs])
    y = np.array([_final(r.y, window) for r in runs])
    return n, d, y, [r.run for r in runs]


class EnsemblePredictor(_Base):
    """Median of the member methods' predictions (robust to one member's failed extrapolation).

    Members that need a task loss are left out where the ladder has none; a member whose fit fails is
    left out and named in the warnings.
    """

    name = "ensemble"
    needs_loss = True
    MEMBERS = ("ladder", "ladder_c", "direct", "sigmoid", "gadre")
    optional_loss = True

    def _core(self, runs):
        fns, fitted = [], {}
        first = self._warm is None
        if first:
            self._members = {}
            for name in self.MEMBERS:
                m = METHODS[name](bootstrap=0, inflate=False)
                if m.needs_loss and runs[0].x is None:
                    continue
                m.task, m.metric, m.chance, m.window_ = self.task, self.metric, self.chance, self.window_
                self._members[name] = m
        failed = []
        for name, m in self._members.items():
            try:
                fn, lw = m._core(runs)
            except (laws.FitInputError, ValueError, RuntimeError, np.linalg.LinAlgError) as e:
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


class LogLinearPredictor(_Base):
    """Baseline: final accuracy linear in log10 of C = 6·N·D (FLOPs)."""

    name = "loglinear"

    def _core(self, runs):
        n, d, y, lab = _finals(runs, self.window_)
        law = laws.LogLinear(labels=lab).fit(6 * n * d, y)
        return (lambda p, t: float(law.predict([6 * p * t])[0])), {"acc": law}


class DirectPredictor(_Base):
    """Direct law log(−log acc') = a·ln C + b on chance-normalised final accuracy."""

    name = "direct"

    def _core(self, runs):
        n, d, y, lab = _finals(runs, self.window_)
        law = laws.DirectLaw(chance=self.chance, labels=lab).fit(6 * n * d, y)
        return (lambda p, t: float(law.predict([6 * p * t])[0])), {"acc": law}


class SigmoidPredictor(_Base):
    """Sigmoid in log10 compute with a floor in [0, chance]: acc = (1 − f)·σ(w·log10 C + c) + f."""

    name = "sigmoid"

    def _core(self, runs):
        n, d, y, lab = _finals(runs, self.window_)
        law = laws.ObsSigmoid(floor=(0.0, max(self.chance, 1e-9)), labels=lab).fit(np.log10(6 * n * d), y)
        return (lambda p, t: float(law.predict([[math.log10(6 * p * t)]])[0])), {"acc": law}


def _step2_points(runs: list[_Run], skip: float = 0.1, ma: int = 5) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for r in runs:
        s = min(math.ceil(skip * len(r.y)), len(r.y) - 1)  # never drop a run's only checkpoint
        xs.append(_moving_avg(r.x[s:], ma))
        ys.append(_moving_avg(r.y[s:], ma))
    return np.concatenate(xs), np.concatenate(ys)


class LadderPredictor(_Base):
    """OLMo ladder two-step method, exactly as published (see the module docstring)."""

    name = "ladder"
    needs_loss = True
    step1 = "nd"

    def __init__(self, *, ladder_window: int = 5, **kw: Any):
        super().__init__(**kw)
        self.ladder_window = ladder_window

    def _core(self, runs):
        n = np.array([r.params for r in runs])
        d = np.array([r.tokens[-1] for r in runs])
        lf = np.array([_moving_avg(r.x, self.ladder_window)[-1] for r in runs])
        lab = [r.run for r in runs]
        if self.step1 == "nd":
            s1 = laws.ChinchillaND(starts=[laws.ChinchillaND.OLMO_P0], maxiter=1_000_000, ftol=0.0, labels=lab)
            s1.fit(np.c_[n, d], lf)
            f1 = lambda p, t: float(s1.predict([[p, t]])[0])  # noqa: E731
        else:
            s1 = laws.ComputeLaw(labels=lab, starts=self._warm_start("step1")).fit(6 * n * d, lf)
            f1 = lambda p, t: float(s1.predict([6 * p * t])[0])  # noqa: E731
        x, y = _step2_points(runs)
        s2 = laws.LadderSigmoid(chance=self.chance if self.chance > 0 else 0.25).fit(x, y)
        self._s1, self._s2 = s1, s2
        return (lambda p, t: float(s2.predict([f1(p, t)])[0])), {"step1": s1, "step2": s2}

    def predict_steps(self, params: float, tokens: float, actual_loss: float | None = None) -> dict[str, float]:
        """Step errors kept apart: predicted loss, step-2-only accuracy at ``actual_loss``, chained accuracy."""
        s1, s2 = self.laws_["step1"], self.laws_["step2"]
        lp = float(s1.predict([[params, tokens]])[0]) if self.step1 == "nd" else float(
            s1.predict([6 * params * tokens])[0])
        out = {"pred_loss": lp, "chained": float(s2.predict([lp])[0])}
        if actual_loss is not None:
            out["step2_only"] = float(s2.predict([actual_loss])[0])
        return out


class LadderComputePredictor(LadderPredictor):
    """OLMo ladder with step 1 in compute: L(C) = E + A/C^α, C = 6·N·D."""

    name = "ladder_c"
    step1 = "c"


class GadrePredictor(_Base):
    """Gadre et al. 2024, chained: L(C) on final losses, then Err(L) = ε − k·exp(−γL) on all checkpoints."""

    name = "gadre"
    needs_loss = True

    def _core(self, runs):
        n = np.array([r.params for r in runs])
        d = np.array([r.tokens[-1] for r in runs])
        lf = np.array([_final(r.x, self.window_) for r in runs])
        s1 = laws.ComputeLaw(labels=[r.run for r in runs], starts=self._warm_start("step1")).fit(6 * n * d, lf)
        x = np.concatenate([r.x for r in runs])
        err = 1 - np.concatenate([r.y for r in runs])
        s2 = laws.GadreExp().fit(x, err)
        return (lambda p, t: float(1 - s2.predict([s1.predict([6 * p * t])[0]])[0])), {"step1": s1, "step2": s2}

    def predict_steps(self, params: float, tokens: float, actual_loss: float | None = None) -> dict[str, float]:
        """Predicted loss, chained accuracy and (given the actual loss) the step-2-only accuracy."""
        s1, s2 = self.laws_["step1"], self.laws_["step2"]
        lp = float(s1.predict([6 * params * tokens])[0])
        out = {"pred_loss": lp, "chained": float(1 - s2.predict([lp])[0])}
        if actual_loss is not None:
            out["step2_only"] = float(1 - s2.predict([actual_loss])[0])
        return out


METHODS: dict[str, Callable[..., Any]] = {
    "loglinear": LogLinearPredictor,
    "direct": DirectPredictor,
    "sigmoid": SigmoidPredictor,
    "ladder": LadderPredictor,
    "ladder_c": LadderComputePredictor,
    "gadre": GadrePredictor,
    "ensemble": EnsemblePredictor,
    "mass": _lazy("capscale.analysis.mass", "MassPredictor"),
}

#: Methods ``auto`` chooses from (``mass`` is added when a score store is given).
DEFAULT_CANDIDATES = ["ensemble", "ladder", "ladder_c", "direct", "sigmoid", "gadre", "loglinear"]


def get_method(name: str, **kw: Any) -> Predictor:
    """Instantiate a predictor by name (keyword options are passed to its constructor)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)} (or 'auto')")
    return METHODS[name](**kw)


# ----------------------------------------------------------------------------------------------
# Splits, selection, backtests
# ----------------------------------------------------------------------------------------------


def split_largest(ladder: pd.DataFrame, holdout: str | int = "largest") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a ladder into (train, held-out): the runs with the ``K`` largest distinct ``params`` are held out.

    ``holdout="largest"`` is K = 1. Splitting is by run, so every checkpoint of a held-out run is held out.
    """
    k = 1 if holdout == "largest" else int(holdout)
    if k < 1:
        raise ValueError(f"holdout must be 'largest' or a positive integer, not {holdout!r}")
    runs = run_of(ladder)
    size = ladder.groupby(runs)["params"].max()
    sizes = np.sort(size.unique())
    if len(sizes) <= k:
        raise ValueError(f"cannot hold out the {k} largest size(s): the ladder has only {len(sizes)} distinct "
                         f"params values {list(sizes)}")
    cut = sizes[-k]
    held = set(size.index[size >= cut])
    mask = runs.isin(held).to_numpy()
    return ladder[~mask], ladder[mask]


def _split_store(store: pd.DataFrame | None, ladder_train: pd.DataFrame) -> pd.DataFrame | None:
    if store is None:
        return None
    return store[store["model_id"].astype(str).isin(set(ladder_train["model_id"]))]


def _candidates(store: pd.DataFrame | None, candidates: list[str] | None) -> list[str]:
    out = list(candidates or DEFAULT_CANDIDATES)
    if store is not None and "mass" not in out and candidates is None:
        out.append("mass")
    return out


def select_method(ladder: pd.DataFrame, task: str, *, metric: str = "acc", store: pd.DataFrame | None = None,
                  candidates: list[str] | None = None, folds: int = 2, z: float = 2.0,
                  **kw: Any) -> tuple[str, dict[str, float]]:
    """Choose a method for a task by leave-largest-out CV on the (training) ladder only.

    Fold k holds out the runs of the k largest sizes (k = 1 .. ``folds``, as long as 2 sizes remain to
    fit on); every candidate is fitted on the rest and scored by its absolute errors on the held-out
    runs' final values, pooled over folds. The first candidate (``ensemble`` by default, the most
    robust) is kept unless the candidate with the smallest mean CV error beats it *significantly*: its
    mean paired improvement over the default exceeds ``z`` standard errors. CV differences of a few
    tenths of a point on 2-3x extrapolations say little about 10x extrapolations, so the rule refuses
    to switch on noise. Methods that do not apply (no task loss, no store) are skipped.

    Returns
    -------
    (name, scores)
        The chosen method and the mean CV error of every candidate (NaN where it failed or did not
        apply); ``scores["_rule"]`` is 0 when the default was kept, 1 when the switch was significant.
    """
    kw = {**kw, "bootstrap": 0, "inflate": False}
    n_sizes = ladder.groupby(run_of(ladder))["params"].max().nunique()
    fold_ks = [k for k in range(1, folds + 1) if n_sizes - k >= 2] or [1]
    cands = _candidates(store, candidates)
    errs: dict[str, list[float]] = {c: [] for c in cands}
    preds: dict[str, list[float]] = {c: [] for c in cands}
    ok = {c: True for c in cands}
    actual: list[float] = []
    for k in fold_ks:
        tr, ho = split_largest(ladder, k)
        sto = _split_store(store, tr)
        rows = None
        for name in cands:
            if not ok[name]:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if name == "ensemble" and all(m in cands for m in EnsemblePredictor.MEMBERS):
                        continue  # computed below from the members' predictions (identical result)
                    pr = get_method(name, **kw).fit(tr, task, metric=metric, store=sto)
                    rows = rows or _held_rows(ho, task, metric, getattr(pr, "window_", None))
                    preds[name] += [pr.predict(r["params"], r["tokens"]).value for r in rows]
            except (MethodNotApplicable, laws.FitInputError, ValueError, RuntimeError, np.linalg.LinAlgError):
                ok[name] = False
        if rows is None:
            continue
        actual += [r["actual"] for r in rows]
    n = len(actual)
    if "ensemble" in cands and all(m in cands for m in EnsemblePredictor.MEMBERS):
        mem = [np.asarray(preds[m], dtype=float) for m in EnsemblePredictor.MEMBERS if ok[m] and len(preds[m]) == n]
        if mem:
            preds["ensemble"] = list(np.nanmedian(np.vstack(mem), axis=0))
        else:
            ok["ensemble"] = False
    act = np.asarray(actual, dtype=float)
    scores: dict[str, float] = {}
    for name in cands:
        p = np.asarray(preds[name], dtype=float)
        if ok[name] and n and len(p) == n and np.all(np.isfinite(p)):
            errs[name] = list(np.abs(p - act))
            scores[name] = float(np.mean(errs[name]))
        else:
            scores[name] = float("nan")
    good = {k: v for k, v in scores.items() if math.isfinite(v)}
    if not good:
        raise ValueError(f"auto: no candidate method could be fitted for task {task!r} ({scores})")
    best = min(good, key=lambda k: (good[k], cands.index(k)))
    default = next((c for c in cands if c in good), best)
    chosen, rule = default, 0.0
    if best != default:
        diff = np.asarray(errs[default]) - np.asarray(errs[best])
        se = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("inf")
        if float(np.mean(diff)) > z * se:
            chosen, rule = best, 1.0
    scores["_rule"] = rule
    return chosen, scores


def _held_rows(held: pd.DataFrame, task: str, metric: str, window: int | None) -> list[dict[str, Any]]:
    sub = held[(held["task"] == task) & (held["metric"] == metric)]
    sub = sub.assign(run=run_of(sub)).sort_values(["run", "tokens", "step"], kind="stable")
    out = []
    for run, g in sub.groupby("run", sort=False):
        w = window or 1
        out.append({"run": str(run), "params": float(g["params"].iloc[-1]), "tokens": float(g["tokens"].iloc[-1]),
                    "actual": float(g["value"].to_numpy()[-w:].mean())})
    return sorted(out, key=lambda r: (r["params"], r["tokens"]))


def fit_method(ladder: pd.DataFrame, task: str, method: str = "auto", *, metric: str = "acc",
               store: pd.DataFrame | None = None, candidates: list[str] | None = None,
               **kw: Any) -> tuple[Any, dict[str, float] | None]:
    """Fit ``method`` (or the one ``auto`` selects) on the whole given ladder; returns (predictor, cv scores)."""
    scores = None
    if method == "auto":
        method, scores = select_method(ladder, task, metric=metric, store=store, candidates=candidates, **kw)
    pr = get_method(method, **kw).fit(ladder, task, metric=metric, store=store)
    return pr, scores


def backtest(ladder: pd.DataFrame, task: str, method: str = "auto", holdout: str | int = "largest",
             store: pd.DataFrame | None = None, metric: str = "acc", *, candidates: list[str] | None = None,
             **kw: Any) -> list[dict[str, Any]]:
    """Fit on the ladder without its largest runs and predict each held-out run's final value.

    Parameters
    ----------
    ladder : pandas.DataFrame
        Ladder table (validated here).
    task, metric : str
    method : str
        A name of :data:`METHODS`, ``"auto"`` (chosen by CV on the training part only) or ``"all"``.
    holdout : "largest" or int
        Hold out the runs with the K largest distinct ``params``.
    store : pandas.DataFrame, optional
        Score store of the same models (split by model_id like the ladder).
    **kw
        Predictor options (``bootstrap``, ``seed``, ``x_task``, ``x_metric``...).

    Returns
    -------
    list of dict
        Keys task, method, heldout_model, predicted, actual, abs_err, lower, upper, covered, params,
        tokens, selected (for auto), warnings. The actual is the mean of the held-out run's last
        ``final_window`` values (the same smoothing the method used for its training runs).
    """
    ladder = check_ladder(ladder)
    train, held = split_largest(ladder, holdout)
    sto = _split_store(store, train)
    methods = _candidates(sto, candidates) if method == "all" else [method]
    out: list[dict[str, Any]] = []
    for m in methods:
        try:
            pr, scores = fit_method(train, task, m, metric=metric, store=sto, candidates=candidates, **kw)
        except MethodNotApplicable as e:
            if method == "all":
                continue
            raise e
        except (laws.FitInputError, ValueError, RuntimeError) as e:
            if method != "all":
                raise
            out.append({"task": task, "method": m, "heldout_model": None, "predicted": float("nan"),
                        "actual": float("nan"), "abs_err": float("nan"), "lower": float("nan"),
                        "upper": float("nan"), "covered": None, "warnings": [f"fit failed: {e}"]})
            continue
        loss_rows = {}
        if getattr(pr, "loss_", None) and hasattr(pr, "predict_steps"):
            lt, lm = pr.loss_
            loss_rows = {r["run"]: r["actual"] for r in _held_rows(held, lt, lm, pr.window_)}
        for r in _held_rows(held, task, metric, pr.window_):
            p = pr.predict(r["params"], r["tokens"])
            steps: dict[str, Any] = {}
            if r["run"] in loss_rows:
                # separate the step errors: loss extrapolation vs the loss -> accuracy link
                st_ = pr.predict_steps(r["params"], r["tokens"], actual_loss=loss_rows[r["run"]])
                steps = {"pred_loss": st_["pred_loss"], "actual_loss": loss_rows[r["run"]],
                         "step2_only": st_.get("step2_only")}
            out.append({
                "task": task, "method": m, "heldout_model": r["run"], "predicted": p.value, "actual": r["actual"],
                "abs_err": abs(p.value - r["actual"]), "lower": p.lower, "upper": p.upper,
                "covered": bool(p.lower <= r["actual"] <= p.upper), "params": r["params"], "tokens": r["tokens"],
                "selected": pr.name if m == "auto" else None,
                "cv_scores": scores, "warnings": p.warnings, **steps,
            })
    return out
