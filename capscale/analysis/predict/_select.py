"""Splits, ``auto`` selection by leave-largest-out cross-validation, fitting by name, and backtests.

Options shared by several methods (``bootstrap``, ``seed``, ``x_task``, ...) are passed to each method that
has them (:func:`capscale.analysis.predict.method_options`): ``mass`` draws its interval by Monte Carlo and
takes no ``bootstrap``, for instance.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from capscale.analysis import laws
from capscale.analysis.predict._base import MethodNotApplicable, Predictor
from capscale.analysis.predict._methods import EnsemblePredictor, get_method, method_class, method_options
from capscale.analysis.predict._runs import QUERY_COLUMNS, query_rows, sort_checkpoints
from capscale.analysis.predict._verdict import Verdict, predictability
from capscale.data.ladder_table import chance_of, check_ladder, run_of
from capscale.errors import InputError, UsageError

__all__ = ["DEFAULT_CANDIDATES", "QUERY_COLUMNS", "query_rows", "split_holdout", "split_largest", "AUTO_RULE",
           "task_verdict", "select_method", "fit_method", "backtest", "task_options"]

#: Methods ``auto`` chooses from (:data:`STORE_CANDIDATES` are added when a score store is given).
DEFAULT_CANDIDATES = ["ensemble", "ladder", "ladder_c", "direct", "sigmoid", "gadre", "loglinear"]
#: The methods that need a score store, added to the default candidates (``--method all``) when one is given.
STORE_CANDIDATES = ["mass", "cod"]


def _size_key(ladder: pd.DataFrame) -> str:
    """What "size" means for splits: ``params``, or ``compute`` when every run has the same N (a data-scaling
    ladder of one model size, such as checkpoints of one run)."""
    return "params" if ladder["params"].nunique() > 1 else "compute"


def split_holdout(ladder: pd.DataFrame, holdout: str | int = "largest", *,
                  fit: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a ladder into (train, held-out) runs.

    Parameters
    ----------
    ladder : pandas.DataFrame
        A ladder table.
    holdout : "largest", int, or str
        ``"largest"`` or K: the runs of the K largest sizes (:func:`split_largest`); any other string is a query
        (:func:`query_rows`, e.g. ``compute>8.4e22``, ``family=='llama' and params>2e10``): a run is held out when
        any of its checkpoints matches, and predicted at its final checkpoint. ``"family-largest"``: the largest run
        (by final compute) of every family with 2 or more runs, all at once; ``"family-largest:F"`` (``F1,F2``): of
        family F only (to leave each family's largest out in turn, one backtest per family).
    fit : str, optional
        A query that restricts the training rows (default: every row of the runs not held out), e.g.
        ``tokens<=4e10``. It may select earlier checkpoints of held-out runs (a data-scaling backtest); those rows
        become training runs of their own.

    Raises
    ------
    capscale.errors.InputError
        A query selects nothing, or leaves nothing to fit on.
    capscale.errors.UsageError
        A query that does not parse.
    """
    if holdout == "largest" or isinstance(holdout, int) or (isinstance(holdout, str) and holdout.isdigit()):
        train, held = split_largest(ladder, holdout if not isinstance(holdout, str) or holdout == "largest"
                                    else int(holdout))
    elif isinstance(holdout, str) and holdout.split(":")[0].strip() == "family-largest":
        train, held = _split_family_largest(ladder, holdout)
    else:
        mask = query_rows(ladder, str(holdout))
        if not mask.any():
            raise InputError(f"--holdout {holdout!r} selects no row of the ladder; columns: {list(QUERY_COLUMNS)}")
        runs = run_of(ladder)
        held_runs = set(runs[mask])
        hmask = runs.isin(held_runs).to_numpy()
        train, held = ladder[~hmask], ladder[hmask]
    if fit is not None:
        fmask = query_rows(ladder, fit, what="--fit")
        if not fmask.any():
            raise InputError(f"--fit {fit!r} selects no row of the ladder; columns: {list(QUERY_COLUMNS)}")
        held_ids = set(held["model_id"])
        sel = ladder[fmask]
        overlap = sel["model_id"].isin(held_ids)
        if overlap.any():
            # checkpoints of held-out runs used for fitting: each becomes a run of its own (data scaling)
            sel = sel.assign(run=np.where(overlap, sel["model_id"].astype(str), run_of(sel)))
            final_ids = _final_ids(held)
            sel = sel[~sel["model_id"].isin(final_ids)]
        train = sel
    if not len(train):
        raise InputError(f"holdout {holdout!r}" + (f" with --fit {fit!r}" if fit else "")
                         + " leaves no row to fit on")
    return train, held


def _split_family_largest(ladder: pd.DataFrame, holdout: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``family-largest``: the run of largest final compute (ties: largest params, then last run name) of every
    family with at least 2 runs; ``family-largest:F`` (or ``F1,F2``): of those families only."""
    _, _, names = holdout.partition(":")
    runs = run_of(ladder)
    last = ladder.assign(run=runs).groupby("run", sort=True).agg(family=("family", "last"),
                                                                 compute=("compute", "max"), params=("params", "max"))
    wanted = [f.strip() for f in names.split(",") if f.strip()] if names else None
    fams = sorted(last["family"].astype(str).unique())
    if wanted is not None:
        unknown = [f for f in wanted if f not in fams]
        if unknown:
            raise InputError(f"--holdout {holdout!r}: famil{'y' if len(unknown) == 1 else 'ies'} {unknown} not in the "
                             f"ladder; families: {fams}")
        fams = wanted
    held_runs = []
    for f in fams:
        g = last[last["family"].astype(str) == f]
        if len(g) < 2:
            if wanted is not None:
                raise InputError(f"--holdout {holdout!r}: family {f!r} has {len(g)} run(s); holding out its largest "
                                 "leaves none of it to fit on")
            continue
        g = g.reset_index().sort_values(["compute", "params", "run"], kind="stable")
        held_runs.append(str(g["run"].iloc[-1]))
    if not held_runs:
        raise InputError(f"--holdout {holdout!r}: no family has 2 or more runs; families: {fams}")
    hmask = runs.isin(held_runs).to_numpy()
    return ladder[~hmask], ladder[hmask]


def _target_info(pr: Predictor, held: pd.DataFrame, run: str, task: str) -> dict[str, Any]:
    """What the predict call of a predictor with ``accepts_target_info`` gets besides (N, D): the held-out run's
    family and, with ``given="scores"``, its final values on the other tasks (rows task, metric, value)."""
    if not getattr(pr, "accepts_target_info", False):
        return {}
    rows = held[run_of(held) == run]
    info: dict[str, Any] = {"family": str(rows["family"].iloc[-1]) if len(rows) else None}
    if pr.get_params(deep=False).get("given") == "scores":
        other = sort_checkpoints(rows[rows["task"] != task].assign(run=run_of(rows[rows["task"] != task])))
        info["scores"] = other.groupby(["task", "metric"], sort=False).tail(1)[["task", "metric", "value"]]
    return info


def _final_ids(held: pd.DataFrame) -> set[str]:
    sub = sort_checkpoints(held.assign(run=run_of(held)))
    return set(sub.groupby("run", sort=False)["model_id"].last())


def split_largest(ladder: pd.DataFrame, holdout: str | int = "largest") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a ladder into (train, held-out): the runs with the ``K`` largest distinct ``params`` are held out
    (``compute`` where every run has the same N: a data-scaling ladder).

    Parameters
    ----------
    ladder : pandas.DataFrame
        A ladder table.
    holdout : "largest" or int
        K; ``"largest"`` is K = 1. Splitting is by run, so every checkpoint of a held-out run is held out.

    Raises
    ------
    capscale.errors.UsageError
        ``holdout`` is not "largest" or a positive integer.
    capscale.errors.InputError
        The ladder has no more than K sizes.
    """
    k = 1 if holdout == "largest" else int(holdout)
    if k < 1:
        raise UsageError(f"holdout must be 'largest' or a positive integer, not {holdout!r}")
    runs = run_of(ladder)
    key = _size_key(ladder)
    size = ladder.groupby(runs)[key].max()
    sizes = np.sort(size.unique())
    if len(sizes) <= k:
        raise InputError(f"cannot hold out the {k} largest size(s): the ladder has only {len(sizes)} distinct "
                         f"{key} values {[float(f'{s:.4g}') for s in sizes]}")
    cut = sizes[-k]
    held = set(size.index[size >= cut])
    mask = runs.isin(held).to_numpy()
    return ladder[~mask], ladder[mask]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _sizes(ladder: pd.DataFrame, task: str) -> tuple[int, int]:
    """Distinct sizes (``params``) and runs of ``task`` in the ladder (of the whole ladder if it lacks the task)."""
    sub = ladder[ladder["task"] == task]
    sub = sub if len(sub) else ladder
    size = sub.groupby(run_of(sub))[_size_key(sub)].max()
    return int(size.nunique()), len(size)


def _split_store(store: pd.DataFrame | None, ladder_train: pd.DataFrame) -> pd.DataFrame | None:
    if store is None:
        return None
    return store[store["model_id"].astype(str).isin(set(ladder_train["model_id"]))]


def _candidates(store: pd.DataFrame | None, candidates: list[str] | None) -> list[str]:
    out = list(candidates or DEFAULT_CANDIDATES)
    if store is not None and candidates is None:
        out += [m for m in STORE_CANDIDATES if m not in out]
    return out


def _make(name: str, options: dict[str, Any]) -> Predictor:
    return get_method(name, **method_options(name, options))


def task_options(options: dict[str, Any], task: str) -> dict[str, Any]:
    """``options`` for one task: a ``chance`` given as a mapping (CLI ``--chance TASK=P,...``) becomes the task's
    value, or is dropped when the mapping does not name the task (the predictor then looks it up)."""
    ch = options.get("chance")
    if isinstance(ch, dict):
        options = {k: v for k, v in options.items() if k != "chance"}
        if task in ch:
            options["chance"] = float(ch[task])
    return options


def select_method(ladder: pd.DataFrame, task: str, *, metric: str = "acc", store: pd.DataFrame | None = None,
                  candidates: list[str] | None = None, folds: int = 2, z: float = 2.0,
                  **options: Any) -> tuple[str, dict[str, float]]:
    """Choose a method for a task by leave-largest-out CV on the (training) ladder only.

    Fold k holds out the runs of the k largest sizes (k = 1 .. ``folds``, as long as 2 sizes remain to
    fit on); every candidate is fitted on the rest and scored by its absolute errors on the held-out
    runs' final values, pooled over folds. The first candidate (``ensemble`` by default, the most
    robust) is kept unless the candidate with the smallest mean CV error beats it *significantly*: its
    mean paired improvement over the default exceeds ``z`` standard errors. CV differences of a few
    tenths of a point on 2-3x extrapolations say little about 10x extrapolations, so the rule refuses
    to switch on noise. Methods that do not apply (no task loss, no store) are skipped.

    Parameters
    ----------
    ladder : pandas.DataFrame
        The training ladder.
    task, metric : str
        What to predict.
    store : pandas.DataFrame, optional
        The per-choice score store of the ladder's models (adds ``mass`` to the default candidates).
    candidates : list of str, optional
        Method names to choose from (default :data:`DEFAULT_CANDIDATES`).
    folds : int
        Most sizes held out in a fold.
    z : float
        Standard errors of paired improvement needed to switch from the first candidate.
    **options
        Predictor options (``seed``, ``x_task``, ...); CV fits run without bootstrap or interval inflation.

    Returns
    -------
    (name, scores)
        The chosen method and the mean CV error of every candidate (NaN where it failed or did not
        apply); ``scores["_rule"]`` is 0 when the default was kept, 1 when the switch was significant.
    """
    options = task_options(options, task)
    options = {**options, "bootstrap": 0, "inflate": False}
    n_sizes, n_runs = _sizes(ladder, task)
    if n_sizes < 2:
        raise InputError(f"task {task!r}: every method needs at least 2 fitting sizes (ladder runs); the ladder has "
                         f"{_count(n_sizes, 'size')} ({_count(n_runs, 'run')})")
    if n_sizes < 3:
        raise InputError(f"auto chooses a method by leave-largest-out cross-validation, which needs at least 3 sizes "
                         f"(2 to fit, 1 to hold out); task {task!r}'s ladder has {n_sizes}: give --method "
                         "(e.g. loglinear)")
    fold_ks = [k for k in range(1, folds + 1) if n_sizes - k >= 2] or [1]
    cands = _candidates(store, candidates)
    errs: dict[str, list[float]] = {c: [] for c in cands}
    preds: dict[str, list[float]] = {c: [] for c in cands}
    ok = {c: True for c in cands}
    why: dict[str, str] = {}
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
                    pr = _make(name, options).fit(tr, task, metric=metric, store=sto)
                    rows = rows or _held_rows(ho, task, metric, getattr(pr, "window_", None))
                    preds[name] += [pr.predict(r["params"], r["tokens"]).value for r in rows]
            except MethodNotApplicable as e:
                ok[name] = False
                why[name] = str(e)
            except (laws.FitInputError, ValueError, RuntimeError, np.linalg.LinAlgError) as e:
                ok[name] = False
                why[name] = f"fit failed: {e}"
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
        raise InputError(f"auto: no candidate method could be fitted for task {task!r} ({scores})")
    best = min(good, key=lambda k: (good[k], cands.index(k)))
    default = next((c for c in cands if c in good), best)
    chosen, rule = default, 0.0
    if best != default:
        diff = np.asarray(errs[default]) - np.asarray(errs[best])
        se = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("inf")
        if float(np.mean(diff)) > z * se:
            chosen, rule = best, 1.0
    scores["_rule"] = rule
    if why:
        scores["_not_applicable"] = dict(why)  # type: ignore[assignment]  # said, never silently dropped
    return chosen, scores


def _held_rows(held: pd.DataFrame, task: str, metric: str, window: int | None) -> list[dict[str, Any]]:
    """Per held-out run: its final checkpoint's params and tokens and the mean of its last ``window`` values."""
    sub = held[(held["task"] == task) & (held["metric"] == metric)]
    sub = sort_checkpoints(sub.assign(run=run_of(sub)))
    out = []
    for run, g in sub.groupby("run", sort=False):
        w = window or 1
        out.append({"run": str(run), "params": float(g["params"].iloc[-1]), "tokens": float(g["tokens"].iloc[-1]),
                    "actual": float(g["value"].to_numpy()[-w:].mean())})
    return sorted(out, key=lambda r: (r["params"], r["tokens"]))


def fit_method(ladder: pd.DataFrame, task: str, method: str = "auto", *, metric: str = "acc",
               store: pd.DataFrame | None = None, candidates: list[str] | None = None,
               **options: Any) -> tuple[Predictor, dict[str, float] | None]:
    """Fit ``method`` (or the one ``auto`` selects) on the whole given ladder.

    Parameters
    ----------
    ladder : pandas.DataFrame
        The ladder to fit on.
    task, metric : str
        What to predict.
    method : str
        A name of :data:`~capscale.analysis.predict.METHODS`, or ``"auto"`` (:func:`select_method`).
    store : pandas.DataFrame, optional
        The per-choice score store of the ladder's models (needed by ``mass``).
    candidates : list of str, optional
        For ``auto``: the methods to choose from.
    **options
        Predictor options; each method gets those it has (:func:`~capscale.analysis.predict.method_options`).

    Returns
    -------
    (predictor, scores)
        The fitted predictor, and for ``auto`` the CV scores of :func:`select_method` (else None).
    """
    options = task_options(options, task)
    scores = None
    steps = [k for k in ("fit_loss", "fit_link") if options.get(k) is not None]
    if steps and method not in ("auto", "all") and steps[0] not in method_class(method)._get_param_names():
        raise UsageError(f"--{steps[0].replace('_', '-')} applies to the chained methods (ladder, ladder_c, gadre, "
                         f"and ensemble and auto through them); method {method!r} fits one step on final accuracies")
    if method == "auto":
        return _fit_auto(ladder, task, metric=metric, store=store, candidates=candidates, **options)
    pr = _make(method, options).fit(ladder, task, metric=metric, store=store)
    return pr, scores


#: How ``auto`` chooses for a task whose verdict is not ``at_chance``: ``"cv"`` (:func:`select_method`), a method
#: name, or a tuple of methods whose median is taken (an ``ensemble`` with those ``members``). Frozen before the
#: confirmation half of the suite (results/backtests/suite/README.md).
#: Frozen on the development half (``capscale backtest-suite --half dev``, bootstrap 50, seed 0): by the criterion
#: stated in :data:`capscale.pipelines.suite.RULES` beforehand, the median of the five ensemble members and
#: ``loglinear`` had the smallest worst-data-set gap to the best of ensemble/sigmoid/loglinear (0.17 points; the CV
#: rule and ``ensemble`` 0.58, the median of ensemble/sigmoid/loglinear 0.33) and the smallest pooled MAE (2.15).
AUTO_RULE: str | tuple[str, ...] = ("ladder", "ladder_c", "direct", "sigmoid", "gadre", "loglinear")
#: Interval widening of ``auto`` for ``noisy``, ``non_monotone`` and ``inverse`` tasks.
AUTO_WIDEN = 2.0


def task_verdict(ladder: pd.DataFrame, task: str, metric: str, *, store: pd.DataFrame | None = None,
                 chance: float | None = None) -> Verdict | None:
    """The predictability verdict of ``task`` on a training ladder (None for metrics that are not accuracies)."""
    if not metric.startswith("acc"):
        return None
    return predictability(ladder, task, metric, chance_of(task, chance=chance, ladder=ladder, store=store))


def _fit_auto(ladder: pd.DataFrame, task: str, *, metric: str, store: pd.DataFrame | None,
              candidates: list[str] | None, **options: Any) -> tuple[Predictor, dict[str, Any]]:
    """``auto``: the predictability verdict first (an ``at_chance`` task is predicted at chance, with an interval
    that allows emergence), then :data:`AUTO_RULE`; ``noisy``/``non_monotone``/``inverse`` tasks get intervals
    widened by :data:`AUTO_WIDEN` and a warning."""
    n_sizes, n_runs = _sizes(ladder, task)
    if n_sizes < 2:
        raise InputError(f"task {task!r}: every method needs at least 2 fitting sizes (ladder runs); the ladder has "
                         f"{_count(n_sizes, 'size')} ({_count(n_runs, 'run')})")
    if n_sizes < 3:  # every rule of auto needs a trend it can check: 2 sizes fit any 2-parameter law exactly
        raise InputError(f"auto needs at least 3 sizes (2 to fit, 1 to check the trend); task {task!r}'s ladder "
                         f"has {n_sizes} ({_count(n_runs, 'run')}): give --method (e.g. loglinear), and expect a wide "
                         "interval")
    verdict = task_verdict(ladder, task, metric, store=store, chance=options.get("chance"))
    scores: dict[str, Any] = {"_verdict": verdict.verdict if verdict else None}
    if verdict is not None and verdict.verdict == "at_chance":
        pr = _make("chance", options).fit(ladder, task, metric=metric, store=store)
        scores["_rule_name"] = "at_chance"
    else:
        extra: dict[str, Any] = {}
        if AUTO_RULE == "cv":
            name, cv = select_method(ladder, task, metric=metric, store=store, candidates=candidates, **options)
            scores.update(cv)
        elif isinstance(AUTO_RULE, tuple):
            name, extra = "ensemble", {"members": AUTO_RULE}
        else:
            name = AUTO_RULE
        scores["_rule_name"] = AUTO_RULE if isinstance(AUTO_RULE, str) else "median" + "+".join(AUTO_RULE)
        widen = AUTO_WIDEN if verdict is not None and verdict.verdict != "predictable" else 1.0
        opts = {**options, **extra, "widen": widen} if widen != 1.0 else {**options, **extra}
        pr = _make(name, opts).fit(ladder, task, metric=metric, store=store)
    pr.verdict_ = verdict.verdict if verdict else None  # type: ignore[attr-defined]
    return pr, scores


def backtest(ladder: pd.DataFrame, task: str, method: str = "auto", holdout: str | int = "largest",
             store: pd.DataFrame | None = None, metric: str = "acc", *, candidates: list[str] | None = None,
             fit: str | None = None, levels: tuple[float, ...] = (), **options: Any) -> list[dict[str, Any]]:
    """Fit on the ladder without its largest runs and predict each held-out run's final value.

    Parameters
    ----------
    ladder : pandas.DataFrame
        Ladder table (validated here).
    task, metric : str
        What to predict (accuracies are fractions in [0, 1]).
    method : str
        A name of :data:`~capscale.analysis.predict.METHODS`, ``"auto"`` (chosen by CV on the training part
        only) or ``"all"`` (every candidate; those that do not apply are skipped, failed fits give a row of NaN).
    holdout : "largest", int or str
        Hold out the runs with the K largest distinct ``params``, or the runs a query selects
        (:func:`split_holdout`: ``compute>8.4e22``, ``multiplier<1``, ``family=='xglm' and params>4e9``).
    store : pandas.DataFrame, optional
        Score store of the same models (split by model_id like the ladder).
    fit : str, optional
        A query restricting the training rows (:func:`split_holdout`), e.g. ``tokens<=4e10``.
    levels : tuple of float
        Further nominal levels (e.g. 0.5, 0.8, 0.95) whose intervals are added as ``lower_<pct>``/``upper_<pct>``
        (the fitted bootstrap reused: only the predictor's ``level`` changes), for reliability diagrams.
    candidates : list of str, optional
        The methods of ``auto`` and ``all``.
    **options
        Predictor options (``bootstrap``, ``seed``, ``x_task``, ``x_metric``...); each method gets those it has.

    Returns
    -------
    list of dict
        Keys task, method, heldout_model, predicted, actual, abs_err, lower, upper, covered, params,
        tokens, selected (for auto), cv_scores, warnings; for chained methods also pred_loss, actual_loss and
        step2_only. The actual is the mean of the held-out run's last ``final_window`` values (the same
        smoothing the method used for its training runs).
    """
    options = task_options(options, task)
    ladder = check_ladder(ladder)
    train, held = split_holdout(ladder, holdout, fit=fit)
    n_fit, r_fit = _sizes(train, task)
    if n_fit < 2:
        n_all = _sizes(ladder, task)[0]
        if holdout == "largest" or isinstance(holdout, int):
            k = 1 if holdout == "largest" else int(holdout)
            how = f"holding out the {k} largest of {n_all} sizes"
            fix = f"give a smaller --holdout (at most {max(n_all - 2, 0)})"
        else:
            how, fix = f"--holdout {holdout!r}" + (f" with --fit {fit!r}" if fit else ""), "select fewer runs"
        raise InputError(f"backtest: {how} leaves {_count(n_fit, 'size')} ({_count(r_fit, 'run')}) to fit on; every "
                         f"method needs at least 2 fitting sizes: {fix}")
    sto = _split_store(store, train)
    verdict = task_verdict(train, task, metric, store=sto, chance=options.get("chance"))
    vcols = ({"verdict": verdict.verdict, "verdict_reason": verdict.reason} if verdict is not None
             else {"verdict": None, "verdict_reason": None})
    methods = _candidates(sto, candidates) if method == "all" else [method]
    out: list[dict[str, Any]] = []
    for m in methods:
        try:
            pr, scores = fit_method(train, task, m, metric=metric, store=sto, candidates=candidates, **options)
        except MethodNotApplicable as e:
            if method != "all":
                raise
            out.append({"task": task, "method": m, "heldout_model": None, "predicted": float("nan"),
                        "actual": float("nan"), "abs_err": float("nan"), "lower": float("nan"),
                        "upper": float("nan"), "covered": None, **vcols, "warnings": [f"not applicable: {e}"]})
            continue
        except (laws.FitInputError, ValueError, RuntimeError) as e:
            if method != "all":
                raise
            out.append({"task": task, "method": m, "heldout_model": None, "predicted": float("nan"),
                        "actual": float("nan"), "abs_err": float("nan"), "lower": float("nan"),
                        "upper": float("nan"), "covered": None, **vcols, "warnings": [f"fit failed: {e}"]})
            continue
        loss_rows = {}
        if getattr(pr, "loss_", None) and hasattr(pr, "predict_steps"):
            lt, lm = pr.loss_
            loss_rows = {r["run"]: r["actual"] for r in _held_rows(held, lt, lm, pr.window_)}
        for r in _held_rows(held, task, metric, getattr(pr, "window_", None)):
            info = _target_info(pr, held, r["run"], task)
            p = pr.predict(r["params"], r["tokens"], **info)
            extra: dict[str, float] = {}
            if levels and "level" in pr.get_params(deep=False):
                base_level = pr.get_params(deep=False)["level"]
                for lv in levels:
                    pr.set_params(level=lv)
                    q = pr.predict(r["params"], r["tokens"], **info)
                    extra[f"lower_{round(100 * lv)}"], extra[f"upper_{round(100 * lv)}"] = q.lower, q.upper
                pr.set_params(level=base_level)
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
                "selected": pr.name if m == "auto" else None, **vcols,
                **({"given": getattr(pr, "last_given_", None)} if info else {}),
                "cv_scores": scores, "warnings": p.warnings, **steps, **extra,
            })
    return out
