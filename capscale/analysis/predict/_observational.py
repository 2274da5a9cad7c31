"""Observational (cross-family) scaling: Ruan, Maddison & Hashimoto 2024, "Observational Scaling Laws".

The method models a table of public models of several families, each with scores on several benchmarks:

1. **Capabilities.** The training models' final scores form a matrix Y (models x benchmarks, cells may be
   missing), as raw scores (``transform="linear"``, as Ruan et al.) or as the logit of the chance-normalised
   score (``transform="logit"``). Each benchmark is standardised (z-scores over the models that have it) and a
   rank-``rank`` principal component model is fitted by EM low-rank imputation (missing cells start at the benchmark's mean and are
   replaced by the rank-K reconstruction until it converges): Z ≈ S·Vᵀ, S the models' K capability measures,
   V the benchmarks' loadings (each component's sign is chosen so its loadings sum to a positive number: a
   larger measure means a better model).
2. **Compute efficiency.** Each family's log-compute maps linearly to the capabilities with a shared slope:
   S_k = θ_{f,k} + β_k·log10 C, C = 6·N·D FLOPs. A family's intercept θ_f (its compute efficiency) is shrunk
   towards the mean intercept with a ridge penalty of ``shrinkage`` (in units of models: a family of n training
   models keeps n/(n + shrinkage) of its own offset). Families with fewer than ``min_family_models`` training
   models are named in the warnings; a target family without training models gets the mean intercept, with a
   warning (the fallback, never a refusal).
3. **Link.** Each benchmark b maps capabilities to its score with a sigmoid whose floor is the benchmark's
   chance accuracy c_b (:func:`capscale.data.ladder_table.chance_of`) and whose ceiling u_b is 1
   (``ceiling="one"``) or fitted in [max observed, 1] (``ceiling="fit"``): y_b = c_b + (u_b − c_b)·σ(a_b + w_b·S).

A target is predicted from its (family, N, D) alone -- S* = θ_f + β·log10 C, then the link -- or, given its
scores on other benchmarks, from those as well: S* is the posterior mode of the capabilities under the links
of the observed benchmarks (Gaussian errors of each link's residual scatter) with the compute map as its prior.
Which one was used is the first warning of the prediction and :attr:`ObservationalPredictor.last_given_`.

Intervals (nominal ``level``): percentile bootstrap over models, resampled within each family (so every family
keeps a training model), refitting steps 1-3 each time; widened in quadrature by z times the benchmark's
leave-the-model-out residual scatter of the whole chain (compute-only: the residuals of the compute map through
the link; given scores: of the prediction of each training model's score from its other benchmarks), so that
the interval is one for a new model's score, not for the mean curve.

Unlike the compute-only methods, this one uses every accuracy task of the ladder (the ``fit`` contract passes
the whole ladder) and needs the target's family.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from capscale.analysis.predict._base import Prediction, Predictor, check_is_fitted
from capscale.analysis.predict._runs import sort_checkpoints
from capscale.data.ladder_table import chance_of, check_ladder, run_of
from capscale.errors import InputError, UsageError

__all__ = ["ObservationalPredictor", "ObservationalInputError", "CapabilityModel", "fit_capabilities",
           "ACCURACY_METRICS"]

#: Metrics that count as a benchmark's score (fractions in [0, 1]).
ACCURACY_METRICS = ("acc", "acc_norm", "acc_bytes")
_EPS = 1e-3
#: Weight of the fitted ceiling's pull towards 1 (a residual of CEILING_PRIOR·(1 − u), in score units): without it a
#: ceiling fitted on models that show no saturation may settle just above the best training score.
CEILING_PRIOR = 0.1


class ObservationalInputError(InputError):
    """The ladder cannot support the observational model (too few families, benchmarks or models for the rank,
    or a target task with too few models); the message names what is missing."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logit(q: np.ndarray) -> np.ndarray:
    q = np.clip(q, 0.02, 0.98)
    return np.log(q / (1 - q))


# ----------------------------------------------------------------------------------------------
# The model, fitted on one table of final scores
# ----------------------------------------------------------------------------------------------


class CapabilityModel:
    """Steps 1-3 of the module docstring, fitted on a matrix of final scores (one instance per (re)fit).

    Attributes
    ----------
    tasks : list of str
        The benchmarks (columns of Y).
    mean, sd : numpy.ndarray
        Per benchmark: mean and standard deviation of the observed scores (standardisation).
    loadings : numpy.ndarray
        V, benchmarks x rank.
    S : numpy.ndarray
        The training models' capabilities, models x rank.
    slope : numpy.ndarray
        β, shared slope per capability dimension, per decade of compute.
    offset : dict of str to numpy.ndarray
        θ_f per family (rank,).
    offset_mean : numpy.ndarray
        The mean intercept (for a family without training models).
    map_sd : numpy.ndarray
        Residual scatter of the compute map per dimension.
    links : dict of str to numpy.ndarray
        Per benchmark (a, w_1..w_K, u).
    link_sd : dict of str to float
        Residual scatter of each link on the training models (fraction).
    """

    def __init__(self, Y: np.ndarray, tasks: list[str], families: np.ndarray, logc: np.ndarray,
                 chance: Mapping[str, float], *, rank: int, ceiling: str, shrinkage: float,
                 transform: str = "linear", link_tasks: list[str] | None = None, max_iter: int = 500,
                 tol: float = 1e-7):
        self.tasks = list(tasks)
        self.rank = rank
        self.chance = {t: float(chance[t]) for t in tasks}
        self.transform = transform
        obs = np.isfinite(Y)
        T = self.transformed(Y)
        self.mean = np.array([np.mean(T[obs[:, j], j]) for j in range(Y.shape[1])])
        sd = np.array([np.std(T[obs[:, j], j]) for j in range(Y.shape[1])])
        self.sd = np.where(sd > 1e-6, sd, 1e-6)
        Z = (T - self.mean) / self.sd
        self.S, self.loadings, self.n_iter = _em_pca(Z, obs, rank, max_iter=max_iter, tol=tol)
        # compute map: S = theta_f + beta * log10 C, ridge on family offsets around the mean intercept
        fams = sorted(set(families))
        self.families = fams
        self.slope, self.offset, self.offset_mean, self.map_sd = _family_map(self.S, families, logc, fams, shrinkage)
        self.ceiling = ceiling
        self.links: dict[str, np.ndarray] = {}
        self.link_sd: dict[str, float] = {}
        for t in (link_tasks if link_tasks is not None else self.tasks):
            j = self.tasks.index(t)
            m = obs[:, j]
            self.links[t] = _fit_link(self.S[m], Y[m, j], self.chance[t], ceiling)
            res = Y[m, j] - self.link(t, self.S[m])
            dof = max(int(m.sum()) - (rank + 1 + (ceiling == "fit")), 1)
            self.link_sd[t] = float(math.sqrt(np.sum(res**2) / dof))

    def transformed(self, Y: np.ndarray) -> np.ndarray:
        """Scores in the space the components are fitted in: ``logit`` of the chance-normalised score
        (y − c)/(1 − c), clipped to [0.01, 0.99], or the score itself (``linear``)."""
        if self.transform == "linear":
            return np.asarray(Y, dtype=float)
        c = np.array([self.chance[t] for t in self.tasks])
        q = np.clip((Y - c) / np.maximum(1 - c, 1e-6), 0.01, 0.99)
        return np.log(q / (1 - q))

    def link(self, task: str, S: np.ndarray) -> np.ndarray:
        """Benchmark ``task``'s score (fraction) at capabilities ``S`` (n x rank, or rank)."""
        p = self.links[task]
        S = np.atleast_2d(S)
        c = self.chance[task]
        return c + (p[-1] - c) * _sigmoid(p[0] + S @ p[1:-1])

    def capability_from_compute(self, family: str | None, logc: float) -> tuple[np.ndarray, bool]:
        """S* = θ_f + β·log10 C; the bool says whether the family had training models."""
        known = family is not None and family in self.offset
        theta = self.offset[family] if known else self.offset_mean
        return theta + self.slope * logc, known

    def capability_from_scores(self, scores: Mapping[str, float], prior: np.ndarray,
                               prior_sd: np.ndarray) -> np.ndarray:
        """Posterior mode of S given observed scores (tasks with a link) and a Gaussian prior."""
        tasks = [t for t in scores if t in self.links]
        y = np.array([scores[t] for t in tasks], dtype=float)
        sd = np.array([max(self.link_sd[t], 0.01) for t in tasks])
        psd = np.maximum(prior_sd, 1e-3)

        def resid(s: np.ndarray) -> np.ndarray:
            pred = np.array([self.link(t, s)[0] for t in tasks])
            return np.concatenate([(pred - y) / sd, (s - prior) / psd])

        return least_squares(resid, prior, method="lm").x


def _em_pca(Z: np.ndarray, obs: np.ndarray, rank: int, *, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray,
                                                                                                 int]:
    """Rank-``rank`` PCA of standardised Z with missing cells imputed by EM (iterative low-rank SVD)."""
    X = np.where(obs, Z, 0.0)
    prev = np.inf
    it = 0
    for step in range(1, max_iter + 1):
        it = step
        mu = X.mean(axis=0)
        U, s, Vt = np.linalg.svd(X - mu, full_matrices=False)
        R = mu + (U[:, :rank] * s[:rank]) @ Vt[:rank]
        err = float(np.sum((R - X)[obs] ** 2))
        X = np.where(obs, Z, R)
        if not obs.all() and abs(prev - err) <= tol * max(err, 1e-12):
            break
        if obs.all():
            break
        prev = err
    mu = X.mean(axis=0)
    U, s, Vt = np.linalg.svd(X - mu, full_matrices=False)
    V = Vt[:rank].T
    sign = np.where(V.sum(axis=0) >= 0, 1.0, -1.0)
    V = V * sign
    S = (X - mu) @ V
    return S, V, it


def _family_map(S: np.ndarray, families: np.ndarray, logc: np.ndarray, fams: list[str],
                shrinkage: float) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Shared slope, family intercepts shrunk to their mean (ridge ``shrinkage`` on the offsets), residual sd."""
    n, k = S.shape
    F = len(fams)
    D = np.zeros((n, F))
    for i, f in enumerate(families):
        D[i, fams.index(f)] = 1.0
    X = np.c_[np.ones(n), logc, D]
    # penalty rows: sqrt(lambda) * delta_f = 0, and sum of deltas = 0 (identifies the mean intercept)
    lam = max(float(shrinkage), 1e-6)
    P = np.c_[np.zeros((F, 2)), math.sqrt(lam) * np.eye(F)]
    C = np.r_[0.0, 0.0, np.ones(F)][None, :] * 1e3
    A = np.r_[X, P, C]
    B = np.r_[S, np.zeros((F + 1, k))]
    coef = np.linalg.lstsq(A, B, rcond=None)[0]
    slope = coef[1]
    mean = coef[0]
    offset = {f: mean + coef[2 + j] for j, f in enumerate(fams)}
    res = S - X @ coef
    dof = max(n - 2 - F, 1)
    map_sd = np.sqrt(np.sum(res**2, axis=0) / dof)
    return slope, offset, mean, map_sd


def _fit_link(S: np.ndarray, y: np.ndarray, c: float, ceiling: str) -> np.ndarray:
    """Least-squares sigmoid link y = c + (u − c)·σ(a + w·S); returns (a, w..., u)."""
    k = S.shape[1]
    u0 = 1.0
    q = (y - c) / max(u0 - c, 1e-6)
    A = np.c_[np.ones(len(y)), S]
    start = np.linalg.lstsq(A.T @ A + 1e-3 * np.eye(k + 1), A.T @ _logit(q), rcond=None)[0]
    fit_u = ceiling == "fit"
    ridge = 1e-2

    def resid(p: np.ndarray) -> np.ndarray:
        u = p[-1] if fit_u else u0
        pred = c + (u - c) * _sigmoid(p[0] + S @ p[1:k + 1])
        prior = [CEILING_PRIOR * (1.0 - u)] if fit_u else []
        return np.concatenate([pred - y, ridge * p[1:k + 1], prior])

    if fit_u:
        umin = float(min(max(np.max(y), c + 1e-3), 1.0 - 1e-6))
        x0 = np.r_[start, min(max(0.5 * (umin + 1.0), umin), 1.0)]
        lo = np.r_[np.full(k + 1, -np.inf), umin]
        hi = np.r_[np.full(k + 1, np.inf), 1.0]
        sol = least_squares(resid, x0, bounds=(lo, hi), method="trf")
        return sol.x
    sol = least_squares(resid, start, method="lm")
    return np.r_[sol.x, u0]


def fit_capabilities(Y: np.ndarray, tasks: list[str], families: np.ndarray, logc: np.ndarray,
                     chance: Mapping[str, float], *, rank: int = 1, ceiling: str = "one",
                     shrinkage: float = 1.0, transform: str = "linear",
                     link_tasks: list[str] | None = None) -> CapabilityModel:
    """Fit the capability model (steps 1-3) on a matrix of final scores.

    Parameters
    ----------
    Y : numpy.ndarray
        Models x benchmarks, fractions in [0, 1], NaN where missing.
    tasks : list of str
        Benchmark names (columns).
    families : numpy.ndarray of str
        Family per model (rows).
    logc : numpy.ndarray
        log10 of each model's compute 6·N·D (FLOPs).
    chance : mapping
        Chance accuracy per benchmark (the links' floors).
    rank, ceiling, shrinkage, transform
        As for :class:`ObservationalPredictor`.
    link_tasks : list of str, optional
        Benchmarks whose links are fitted (default all).

    Returns
    -------
    CapabilityModel
    """
    return CapabilityModel(Y, tasks, np.asarray(families), np.asarray(logc, dtype=float), chance, rank=rank,
                           ceiling=ceiling, shrinkage=shrinkage, transform=transform, link_tasks=link_tasks)


# ----------------------------------------------------------------------------------------------
# The predictor
# ----------------------------------------------------------------------------------------------


def final_table(ladder: pd.DataFrame, task: str, metric: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Final checkpoint of every run, one column per benchmark: the table the observational model is fitted on.

    A benchmark is a task with an accuracy metric (:data:`ACCURACY_METRICS`); the predicted task uses ``metric``,
    every other task its ``metric`` when it has one, else ``acc``, else ``acc_norm``, else ``acc_bytes``.

    Returns
    -------
    (wide, metrics)
        ``wide``: one row per run (columns run, family, params, tokens and one per benchmark, NaN where the run
        lacks it); ``metrics``: the metric used per benchmark.
    """
    lad = ladder.assign(run=run_of(ladder))
    acc = lad[lad["metric"].isin(ACCURACY_METRICS) | ((lad["task"] == task) & (lad["metric"] == metric))]
    metrics: dict[str, str] = {}
    for t, ms in acc.groupby("task", sort=True)["metric"]:
        have = set(ms)
        if t == task:
            if metric not in have:
                raise ObservationalInputError(f"observational: the ladder has no rows for task {task!r} with metric "
                                              f"{metric!r}; metrics of this task: {sorted(have)}")
            metrics[str(t)] = metric
            continue
        for m in (metric, *ACCURACY_METRICS):
            if m in have:
                metrics[str(t)] = m
                break
    if task not in metrics:
        raise ObservationalInputError(f"observational: the ladder has no rows for task {task!r}; tasks: "
                                      f"{sorted(lad['task'].unique())[:20]}")
    keep = acc[[metrics.get(t) == m for t, m in zip(acc["task"], acc["metric"], strict=True)]]
    keep = sort_checkpoints(keep)
    last = keep.groupby(["run", "task"], sort=False).tail(1)
    wide = last.pivot(index="run", columns="task", values="value")
    meta = sort_checkpoints(lad).groupby("run", sort=True).tail(1).set_index("run")[["family", "params", "tokens"]]
    wide = meta.join(wide, how="inner").reset_index()
    return wide, metrics


class ObservationalPredictor(Predictor):
    """Observational scaling across model families (see the module docstring).

    Parameters
    ----------
    rank : int
        Number of capability dimensions K (principal components).
    ceiling : {"one", "fit"}
        Each link's ceiling: 1, or fitted in [max observed score, 1].
    shrinkage : float
        Ridge penalty on the family intercepts' deviations from their mean, in units of training models.
    min_family_models : int
        Families with fewer training models are named in the warnings (their intercept leans on the shrinkage).
    min_models : int
        A benchmark is used only when at least this many training models have it (the predicted task must).
    transform : {"linear", "logit"}
        The space of the principal components: the raw score (Ruan et al.'s PCA), or the logit of the
        chance-normalised score (y − c)/(1 − c), clipped to [0.01, 0.99] (linear in the capabilities when the
        ceiling is 1, as in :func:`capscale.synthetic.cross_family.simulate_cross_family`).

    The defaults (``rank=1``, ``ceiling="fit"``, ``transform="linear"``, ``shrinkage=1``) were chosen on the
    development split of the public cross-family table (results/backtests/observational/README.md) and frozen
    before its confirmation split was run.
    given : {"compute", "scores"}
        What a backtest gives the predictor about a held-out model: its (family, N, D) only, or also its scores on
        the other benchmarks (:func:`capscale.analysis.predict.backtest` passes them); :meth:`predict` uses the
        scores whenever they are passed.
    bootstrap : int
        Bootstrap refits over models (resampled within families) for the interval; 0: residual scatter only.
    seed : int
        Seed of the bootstrap.
    level : float
        Nominal probability of the interval.
    chance : float or dict, optional
        Chance accuracy of the predicted task (a float), or per task (a dict); other tasks use
        :func:`capscale.data.ladder_table.chance_of` (the ladder's ``chance`` column, else capscale's table).

    Attributes
    ----------
    task_, metric_ : str
        What was fitted.
    benchmarks_ : dict of str to str
        The benchmarks used and the metric of each.
    excluded_ : dict of str to str
        Tasks of the ladder left out, with the reason.
    model_ : CapabilityModel
        The fit on all training models.
    explained_ : float
        Share of the standardised variance the rank-K reconstruction explains on the observed cells.
    fit_warnings_ : list of str
        What the fit had to do (shrunk families, excluded tasks, failed bootstrap refits).
    last_given_ : str
        ``"compute"`` or ``"scores"``: what the last :meth:`predict` used.
    """

    name: ClassVar[str] = "observational"
    #: :func:`~capscale.analysis.predict.backtest` passes ``family=`` (and, with ``given="scores"``, ``scores=``)
    #: to the predict call of predictors that set this.
    accepts_target_info: ClassVar[bool] = True

    def __init__(self, *, rank: int = 1, ceiling: str = "fit", shrinkage: float = 1.0, min_family_models: int = 2,
                 min_models: int = 3, given: str = "compute", transform: str = "linear", bootstrap: int = 100,
                 seed: int = 0, level: float = 0.9, chance: float | dict[str, float] | None = None):
        self.rank = rank
        self.transform = transform
        self.ceiling = ceiling
        self.shrinkage = shrinkage
        self.min_family_models = min_family_models
        self.min_models = min_models
        self.given = given
        self.bootstrap = bootstrap
        self.seed = seed
        self.level = level
        self.chance = chance

    # -- fit ----------------------------------------------------------------------------------

    def _validate(self) -> None:
        if not (isinstance(self.rank, int | np.integer) and self.rank >= 1):
            raise UsageError(f"observational: rank must be a positive integer, not {self.rank!r}")
        if self.ceiling not in ("one", "fit"):
            raise UsageError(f"observational: ceiling must be 'one' or 'fit', not {self.ceiling!r}")
        if self.transform not in ("logit", "linear"):
            raise UsageError(f"observational: transform must be 'logit' or 'linear', not {self.transform!r}")
        if self.given not in ("compute", "scores"):
            raise UsageError(f"observational: given must be 'compute' or 'scores', not {self.given!r}")
        if not (math.isfinite(float(self.shrinkage)) and float(self.shrinkage) >= 0):
            raise UsageError(f"observational: shrinkage must be a number >= 0, not {self.shrinkage!r}")
        if not 0 < float(self.level) < 1:
            raise UsageError(f"observational: level must lie in (0, 1), not {self.level!r}")

    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> ObservationalPredictor:
        """Fit on the final checkpoints of every run and every accuracy task of the ladder; returns ``self``.

        Raises
        ------
        ObservationalInputError
            The task has too few training models; fewer than 2 families; fewer than ``rank`` + 1 benchmarks or
            ``rank`` + 2 models (the message gives the counts).
        capscale.errors.UsageError
            An invalid option.
        """
        self._validate()
        ladder = check_ladder(ladder)
        self.task_, self.metric_ = task, metric
        wide, metrics = final_table(ladder, task, metric)
        tasks_all = [t for t in metrics]
        counts = {t: int(wide[t].notna().sum()) for t in tasks_all}
        self.excluded_ = {}
        if counts[task] < self.min_models:
            raise ObservationalInputError(
                f"observational: task {task!r} ({metric}) has final values for {counts[task]} training model(s); "
                f"at least min_models = {self.min_models} are needed")
        chance_map: dict[str, float] = {}
        for t in tasks_all:
            if counts[t] < self.min_models:
                self.excluded_[t] = f"{counts[t]} training model(s) < min_models = {self.min_models}"
                continue
            try:
                ch = self.chance if not isinstance(self.chance, int | float) else (
                    float(self.chance) if t == task else None)
                chance_map[t] = chance_of(t, chance=ch, ladder=ladder, store=store)
            except InputError as e:
                if t == task:
                    raise
                self.excluded_[t] = f"chance level unknown ({e})"
        tasks = [t for t in tasks_all if t in chance_map]
        wide = wide[wide[tasks].notna().any(axis=1)].reset_index(drop=True)
        fams = wide["family"].astype(str).to_numpy()
        n_models, n_fam, n_bench = len(wide), len(set(fams)), len(tasks)
        problems = []
        if n_fam < 2:
            problems.append(f"{n_fam} famil{'y' if n_fam == 1 else 'ies'} ({sorted(set(fams))}); at least 2 are needed "
                            "(one family has no cross-family information: use a compute-only method)")
        if n_bench < self.rank + 1:
            problems.append(f"{n_bench} benchmark(s) with >= {self.min_models} models ({tasks}); rank {self.rank} needs "
                            f"at least {self.rank + 1}")
        if n_models < self.rank + 2:
            problems.append(f"{n_models} training model(s); rank {self.rank} needs at least {self.rank + 2}")
        if problems:
            raise ObservationalInputError("observational: the ladder cannot support the model: " + "; ".join(problems)
                                          + (f" (excluded tasks: {self.excluded_})" if self.excluded_ else ""))
        self.benchmarks_ = {t: metrics[t] for t in tasks}
        self.chance_map_ = chance_map
        self.chance_ = chance_map[task]
        Y = wide[tasks].to_numpy(dtype=float)
        logc = np.log10(6.0 * wide["params"].to_numpy(float) * wide["tokens"].to_numpy(float))
        self.train_ = wide
        self.Y_, self.logc_, self.families_ = Y, logc, fams
        self.missing_cells_ = int(np.isnan(Y).sum())
        link_tasks = tasks  # every link: the scores mode and the residual checks need them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model_ = fit_capabilities(Y, tasks, fams, logc, chance_map, rank=int(self.rank),
                                           ceiling=self.ceiling, shrinkage=float(self.shrinkage),
                                           transform=self.transform, link_tasks=link_tasks)
        obs = np.isfinite(Y)
        Z = (self.model_.transformed(Y) - self.model_.mean) / self.model_.sd
        R = self.model_.S @ self.model_.loadings.T
        Zc = Z - np.nanmean(Z, axis=0)
        self.explained_ = float(1 - np.sum((Zc - R)[obs] ** 2) / np.sum(Zc[obs] ** 2))
        self.family_counts_ = {f: int((fams == f).sum()) for f in sorted(set(fams))}
        self.fit_warnings_ = []
        small = [f for f, n in self.family_counts_.items() if n < self.min_family_models]
        if small:
            self.fit_warnings_.append(
                f"observational: famil{'y' if len(small) == 1 else 'ies'} {small} with fewer than "
                f"{self.min_family_models} training models: intercept shrunk towards the mean of all families "
                f"(shrinkage {float(self.shrinkage):g}) and the slope is the shared one")
        if self.excluded_:
            self.fit_warnings_.append(f"observational: tasks left out: {self.excluded_}")
        self._fit_residuals()
        self._fit_bootstrap()
        return self

    def _fit_residuals(self) -> None:
        """Leave-the-model-out-of-the-link residual scatter of the task's whole chain, both modes."""
        m = self.model_
        j = m.tasks.index(self.task_)
        y = self.Y_[:, j]
        ok = np.isfinite(y)
        comp = np.array([m.link(self.task_, m.capability_from_compute(f, x)[0])[0]
                         for f, x in zip(self.families_, self.logc_, strict=True)])
        dof = max(int(ok.sum()) - 2, 1)
        self.resid_sd_compute_ = float(np.sqrt(np.sum((comp - y)[ok] ** 2) / dof))
        res = []
        for i in np.flatnonzero(ok):
            sc = {t: self.Y_[i, k] for k, t in enumerate(m.tasks) if t != self.task_ and np.isfinite(self.Y_[i, k])}
            if not sc:
                continue
            prior, _ = m.capability_from_compute(self.families_[i], self.logc_[i])
            s = m.capability_from_scores(sc, prior, m.map_sd)
            res.append(float(m.link(self.task_, s)[0] - y[i]))
        self.resid_sd_scores_ = (float(np.sqrt(np.sum(np.square(res)) / max(len(res) - 1, 1)))
                                 if res else self.resid_sd_compute_)

    def _fit_bootstrap(self) -> None:
        n_boot = int(self.bootstrap)
        rng = np.random.default_rng(int(self.seed))
        groups = [np.flatnonzero(self.families_ == f) for f in sorted(set(self.families_))]
        self.boot_: list[CapabilityModel] = []
        fails = 0
        j = self.model_.tasks.index(self.task_)
        for _ in range(n_boot):
            pick = np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])
            Y = self.Y_[pick]
            if np.isfinite(Y[:, j]).sum() < 2 or np.any(np.isfinite(Y).sum(axis=0) < 1):
                fails += 1
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.boot_.append(fit_capabilities(Y, self.model_.tasks, self.families_[pick], self.logc_[pick],
                                                       self.chance_map_, rank=int(self.rank), ceiling=self.ceiling,
                                                       shrinkage=float(self.shrinkage),
                                                       transform=self.transform))
            except (np.linalg.LinAlgError, ValueError, RuntimeError):
                fails += 1
        self.boot_failures_ = fails
        if fails:
            self.fit_warnings_.append(f"observational: {fails} of {n_boot} bootstrap refits failed and were left out "
                                      "of the interval")

    # -- predict ------------------------------------------------------------------------------

    def _scores_dict(self, scores: Mapping[str, float] | pd.DataFrame | None) -> dict[str, float]:
        if scores is None:
            return {}
        if isinstance(scores, pd.DataFrame):
            need = {"task", "metric", "value"}
            if not need <= set(scores.columns):
                raise UsageError(f"observational: scores as a table need columns {sorted(need)}; got "
                                 f"{list(scores.columns)}")
            sub = scores
            if {"tokens"} <= set(sub.columns):
                sub = sub.sort_values("tokens", kind="stable")
            out = {}
            for t, m in self.benchmarks_.items():
                v = sub.loc[(sub["task"] == t) & (sub["metric"] == m), "value"]
                if len(v):
                    out[t] = float(v.iloc[-1])
            scores = out
        out: dict[str, float] = {}
        for t, v in dict(scores).items():
            if t == self.task_:
                continue  # the target's own score is what is predicted
            if t not in self.benchmarks_:
                continue
            v = float(v)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise UsageError(f"observational: target score of {t!r} = {v!r} is not a fraction in [0, 1]")
            out[t] = v
        return out

    def _one(self, m: CapabilityModel, family: str | None, logc: float, scores: dict[str, float]) -> float:
        prior, known = m.capability_from_compute(family, logc)
        if scores:
            psd = m.map_sd if known else np.sqrt(m.map_sd**2 + np.var(np.array(list(m.offset.values())), axis=0))
            prior = m.capability_from_scores(scores, prior, psd)
        return float(m.link(self.task_, prior)[0])

    def predict(self, params: float, tokens: float, *, family: str | None = None,
                scores: Mapping[str, float] | pd.DataFrame | None = None) -> Prediction:
        """The task's score for a model of ``family`` with ``params`` parameters trained on ``tokens`` tokens.

        Parameters
        ----------
        params, tokens : float
            N and D (compute 6·N·D FLOPs).
        family : str, optional
            The target's family; without it, or for a family without training models, the mean intercept of all
            families is used (warned).
        scores : mapping of task to fraction, or DataFrame (task, metric, value), optional
            The target's scores on other benchmarks; when given, the capabilities are estimated from them with the
            compute map as prior. The predicted task's own score is ignored.

        Returns
        -------
        Prediction
            The first warning says what the prediction was given.
        """
        check_is_fitted(self, "model_")
        for nm, v in (("params", params), ("tokens", tokens)):
            if not (isinstance(v, int | float | np.floating | np.integer) and math.isfinite(v)) or v < 1:
                raise UsageError(f"target {nm} = {v!r} is not a sensible value (must be a finite number >= 1)")
        logc = math.log10(6.0 * float(params) * float(tokens))
        sc = self._scores_dict(scores)
        m = self.model_
        warns: list[str] = []
        if sc:
            self.last_given_ = "scores"
            warns.append(f"observational: given (family, params, tokens) and the target's scores on {len(sc)} other "
                         f"benchmark(s) {sorted(sc)}")
        else:
            self.last_given_ = "compute"
            warns.append("observational: given (family, params, tokens) only"
                         + (" (given='scores' but no other benchmark score of the target was passed)"
                            if self.given == "scores" else ""))
        if family is None or family not in m.offset:
            warns.append(f"observational: target family {family!r} has no training models "
                         f"(families: {sorted(m.offset)}): its compute efficiency is the mean of all families'")
        elif self.family_counts_.get(family, 0) < self.min_family_models:
            warns.append(f"observational: target family {family!r} has {self.family_counts_[family]} training "
                         "model(s): its intercept is shrunk towards the mean")
        cmax = float(np.max(self.logc_))
        if logc > cmax:
            warns.append(f"extrapolation: target compute 6ND = {10 ** logc:.3g} FLOPs is {10 ** (logc - cmax):.3g}x "
                         f"the largest training model ({10 ** cmax:.3g})")
        v = self._one(m, family, logc, sc)
        z = NormalDist().inv_cdf(1 - (1 - float(self.level)) / 2)
        boots = []
        for b in self.boot_:
            try:
                boots.append(self._one(b, family, logc, sc))
            except (ValueError, np.linalg.LinAlgError):
                continue
        boots_a = np.asarray([x for x in boots if math.isfinite(x)])
        a = (1 - float(self.level)) / 2
        lo_b, hi_b = (np.quantile(boots_a, [a, 1 - a]) if len(boots_a) >= 2 else (v, v))
        sd = self.resid_sd_scores_ if sc else self.resid_sd_compute_
        lower = v - math.sqrt(max(v - lo_b, 0.0) ** 2 + (z * sd) ** 2)
        upper = v + math.sqrt(max(hi_b - v, 0.0) ** 2 + (z * sd) ** 2)
        return Prediction(v, max(lower, 0.0), min(upper, 1.0), warns + list(self.fit_warnings_))

    # -- report -------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The fit as a JSON-ready dict: benchmarks, loadings, family efficiencies, the task's link, settings."""
        check_is_fitted(self, "model_", action="report")
        m = self.model_
        p = m.links[self.task_]
        return {
            "method": self.name, "task": self.task_, "metric": self.metric_, "chance": self.chance_,
            "settings": self.get_params(deep=False),
            "benchmarks": dict(self.benchmarks_), "excluded_tasks": dict(self.excluded_),
            "n_models": int(len(self.train_)), "missing_cells": self.missing_cells_,
            "explained_variance": self.explained_,
            "loadings": {t: [float(x) for x in m.loadings[i]] for i, t in enumerate(m.tasks)},
            "slope_per_decade": [float(x) for x in m.slope],
            "family_offsets": {f: [float(x) for x in v] for f, v in m.offset.items()},
            "family_models": dict(self.family_counts_),
            "link": {"intercept": float(p[0]), "weights": [float(x) for x in p[1:-1]], "ceiling": float(p[-1]),
                     "floor": float(m.chance[self.task_]), "residual_sd": m.link_sd[self.task_]},
            "residual_sd": {"compute": self.resid_sd_compute_, "scores": self.resid_sd_scores_},
            "bootstrap": {"n": int(self.bootstrap), "failed": int(self.boot_failures_)},
            "warnings": list(self.fit_warnings_),
        }
