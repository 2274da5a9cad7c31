"""``capscale fit`` and ``capscale predict``: one law fitted to a task, or a task predicted at a target (N, D).

:func:`run` does one of the two, set by :class:`Options`:

* ``form`` set (``capscale fit``): :func:`capscale.analysis.predict.fit_law`; with ``out``, writes
  ``fit_<task>_<form>.json`` (the fit's :meth:`~capscale.analysis.predict.LawFit.to_dict`) and a figure
  ``fit_<task>_<form>.png``;
* ``target`` set (``capscale predict``): :func:`capscale.analysis.predict.fit_method` on the whole ladder, then
  ``predict(params, tokens)``; with ``out``, writes ``predict_<task>.json`` (the prediction and the fit's
  report) and ``predict_<task>.png`` (the ladder runs and the prediction with its 90 % interval).

Accuracies are fractions in [0, 1]; compute is C = 6·N·D FLOPs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from capscale._io import atomic_write_text, dumps_json, write_json
from capscale.analysis import predict
from capscale.data.store import TaskReader
from capscale.errors import UsageError
from capscale.pipelines._base import RunResult, StageOptions
from capscale.plotting.predict import plot_backtest, plot_law_fit

__all__ = ["Options", "run", "parse_target", "parse_target_family", "parse_target_scores", "parse_tasks", "parse_chance",
           "select_tasks", "predictor_options"]


def parse_target(text: str) -> tuple[float, float]:
    """``"params=N,tokens=D"`` (CLI ``--target``) as (N parameters, D tokens); an optional ``family=F`` is read by
    :func:`parse_target_family`.

    Raises
    ------
    capscale.errors.UsageError
        Not exactly ``params`` and ``tokens``, or a value that is not a number.
    """
    vals: dict[str, float] = {}
    for part in text.split(","):
        if "=" not in part:
            raise UsageError(f"--target {text!r}: expected params=N,tokens=D")
        k, v = part.split("=", 1)
        if k.strip() == "family":
            continue
        try:
            vals[k.strip()] = float(v)
        except ValueError as e:
            raise UsageError(f"--target {text!r}: {k.strip()} = {v!r} is not a number") from e
    if set(vals) != {"params", "tokens"}:
        raise UsageError(f"--target {text!r}: give exactly params=N,tokens=D")
    return vals["params"], vals["tokens"]


def parse_target_family(text: str) -> str | None:
    """The ``family=F`` of a ``--target`` (``params=N,tokens=D,family=F``), or None; methods that take the target's
    family (``observational``) use it."""
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() == "family":
            if not v.strip():
                raise UsageError(f"--target {text!r}: family= needs a name")
            return v.strip()
    return None


def parse_chance(text: str | None) -> dict[str, float] | None:
    """``"gsm8k=0,rte=0.5"`` (CLI ``--chance``) as {task: chance accuracy}; None when not given.

    Raises
    ------
    capscale.errors.UsageError
        A part that is not TASK=P, or P outside [0, 1].
    """
    from capscale.data.lmeval_results import parse_mapping

    out = parse_mapping(text, what="--chance")
    bad = {k: v for k, v in out.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise UsageError(f"--chance {text!r}: chance accuracies must lie in [0, 1], not {bad}")
    return out or None


def parse_target_scores(text: str | None) -> dict[str, float] | None:
    """``"arc_easy=0.71,piqa=0.78"`` (CLI ``--target-scores``) as {task: score}; None when not given.

    The target's measured scores on other tasks, as fractions in [0, 1] on the metric the ladder uses for each task;
    methods that read them (``observational``) estimate the target's capabilities from them.

    Raises
    ------
    capscale.errors.UsageError
        A part that is not TASK=VALUE, or a value outside [0, 1].
    """
    from capscale.data.lmeval_results import parse_mapping

    out = parse_mapping(text, what="--target-scores")
    bad = {k: v for k, v in out.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise UsageError(f"--target-scores {text!r}: scores are fractions in [0, 1], not {bad}")
    return out or None


def parse_tasks(text: str | None) -> tuple[str, ...]:
    """A comma-separated task list (CLI ``--task``) as a tuple (empty for ``None``)."""
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def select_tasks(ladder: pd.DataFrame, tasks: tuple[str, ...], all_tasks: bool = False) -> list[str]:
    """The tasks to run: ``tasks``, checked against the ladder, or with ``all_tasks`` every task with an
    ``acc`` or ``acc_norm`` metric (sorted).

    Raises
    ------
    capscale.errors.UsageError
        No task given (and not ``all_tasks``), or a task the ladder does not have (the message lists its tasks).
    """
    if all_tasks:
        return sorted(ladder.loc[ladder["metric"].isin(["acc", "acc_norm"]), "task"].unique())
    if not tasks:
        raise UsageError("give --task T (comma-separated for several) or --all-tasks")
    known = set(ladder["task"])
    bad = [t for t in tasks if t not in known]
    if bad:
        raise UsageError(f"unknown task(s) {bad}; tasks in the ladder: {sorted(known)}")
    return list(tasks)


def predictor_options(bootstrap: int, seed: int, loss_task: str | None = None,
                      loss_metric: str | None = None, chance: dict[str, float] | None = None,
                      fit_loss: str | None = None, fit_link: str | None = None) -> dict[str, Any]:
    """Predictor options from the CLI's ``--bootstrap``, ``--seed``, ``--loss-task``, ``--loss-metric``, ``--chance``,
    ``--fit-loss`` and ``--fit-link`` (each only when given; ``chance`` maps task to chance accuracy; the fit sets
    are queries over the ladder's columns for the chained methods' two steps)."""
    kw: dict[str, Any] = {"bootstrap": bootstrap, "seed": seed}
    if fit_loss:
        kw["fit_loss"] = fit_loss
    if fit_link:
        kw["fit_link"] = fit_link
    if chance:
        kw["chance"] = dict(chance)
    if loss_task:
        kw["x_task"] = loss_task
    if loss_metric:
        kw["x_metric"] = loss_metric
    return kw


@dataclass(frozen=True)
class Options(StageOptions):
    """Settings of ``capscale fit`` (``form`` set) and ``capscale predict`` (``target`` set).

    Attributes
    ----------
    tasks : tuple of str
        Tasks named on the command line; the first one is fitted (all are checked against the ladder).
    metric : str, optional
        The accuracy metric (default: the task's ``acc``, else ``acc_norm``).
    loss_task, loss_metric : str, optional
        The loss to chain through where the task has none.
    form : str, optional
        ``capscale fit``: a form of :data:`capscale.analysis.predict.FORMS`.
    target : (float, float), optional
        ``capscale predict``: (N parameters, D tokens) of the model to predict.
    target_family : str, optional
        ``capscale predict``: the target's family (``--target ...,family=F``), for methods that use it
        (``observational``); other methods ignore it, with a note.
    target_scores : dict of str to float, optional
        ``capscale predict``: the target's measured scores on other tasks (``--target-scores TASK=V,...``), for
        methods that use them (``observational``); other methods ignore them, with a note. A score of the predicted
        task itself is refused.
    method : str
        ``capscale predict``: a name of :data:`capscale.analysis.predict.METHODS` or ``"auto"``.
    chance : dict of str to float, optional
        Chance accuracy per task (CLI ``--chance TASK=P,...``) for tasks the ladder and capscale's table do not know.
    fit : str, optional
        ``capscale predict``: a query selecting the rows to fit on (``params<2e9``, ``multiplier<=20``); default all.
    fit_loss, fit_link : str, optional
        ``capscale predict``: queries selecting, among those rows, the ones the chained methods' loss step and link
        step are fitted on (default: all of them for both).
    bootstrap : int
        ``capscale predict``: bootstrap resamples over ladder runs.
    seed : int
        ``capscale predict``: random seed.
    out : str, optional
        Folder for the JSON and the figure (nothing is written without it).
    """

    tasks: tuple[str, ...] = ()
    metric: str | None = None
    loss_task: str | None = None
    loss_metric: str | None = None
    form: str | None = None
    target: tuple[float, float] | None = None
    target_family: str | None = None
    target_scores: dict[str, float] | None = None
    method: str = "auto"
    bootstrap: int = 50
    seed: int = 0
    out: str | None = None
    chance: dict[str, float] | None = None
    fit: str | None = None
    fit_loss: str | None = None
    fit_link: str | None = None

    def __post_init__(self) -> None:
        if (self.form is None) == (self.target is None):
            raise UsageError("fit options: give exactly one of form (capscale fit) and target (capscale predict)")
        if self.form is not None and self.form not in predict.FORMS:
            raise UsageError(f"unknown form {self.form!r}; forms: {list(predict.FORMS)}")

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **overrides: Any) -> Options:
        """Options from ``capscale fit`` or ``capscale predict`` arguments (``--task`` split at commas,
        ``--target`` parsed by :func:`parse_target`)."""
        conv: dict[str, Any] = {"tasks": parse_tasks(getattr(args, "task", None)),
                                "chance": parse_chance(getattr(args, "chance", None))}
        if getattr(args, "target", None) is not None:
            conv["target"] = parse_target(args.target)
            conv["target_family"] = parse_target_family(args.target)
        if getattr(args, "target_scores", None) is not None:
            conv["target_scores"] = parse_target_scores(args.target_scores)
        return super().from_cli(args, **{**conv, **overrides})

    def predictor_options(self) -> dict[str, Any]:
        """The predictor options (``bootstrap``, ``seed``, ``x_task``, ``x_metric``) these settings give."""
        return predictor_options(self.bootstrap, self.seed, self.loss_task, self.loss_metric, self.chance,
                                 self.fit_loss, self.fit_link)


def run(ladder: pd.DataFrame, options: Options, *, store: pd.DataFrame | TaskReader | None = None) -> RunResult:
    """Fit a law (``options.form``) or predict a target (``options.target``); see the module docstring.

    Parameters
    ----------
    ladder : pandas.DataFrame
        The ladder table (for a prediction, without the target's own rows).
    options : Options
        The settings.
    store : pandas.DataFrame or capscale.data.store.TaskReader, optional
        The per-choice score store of the ladder's models (``capscale predict``; needed by ``mass``); of a
        ``TaskReader`` only the predicted task's rows are read.

    Returns
    -------
    RunResult
        ``stage`` ``"fit"`` or ``"predict"``; ``summary`` the JSON ``capscale fit`` / ``capscale predict --json``
        prints; ``tables["points"]`` the points fitted (fit); ``notes`` the law's warnings (fit) or the
        prediction's (predict).
    """
    task = select_tasks(ladder, options.tasks)[0]
    if options.target is None:
        return _fit(ladder, task, options)
    return _predict(ladder, task, options.target, options, store.read_task(task) if isinstance(store, TaskReader)
                    else store)


def _fit(ladder: pd.DataFrame, task: str, options: Options) -> RunResult:
    form = str(options.form)
    fit = predict.fit_law(ladder, task, form, metric=options.metric, loss_task=options.loss_task,
                          loss_metric=options.loss_metric, chance=(options.chance or {}).get(task))
    summary = fit.to_dict()
    files: list[Path] = []
    out = Path(options.out) if options.out else None
    if out is not None:
        files.append(write_json(out / f"fit_{task}_{form}.json", summary, indent=2))
        files.append(Path(plot_law_fit(fit, out / f"fit_{task}_{form}.png")))
    return RunResult(stage="fit", out=out, files=files, summary=summary, tables={"points": fit.points},
                     notes=fit.warnings)


def _predict(ladder: pd.DataFrame, task: str, target: tuple[float, float], options: Options,
             store: pd.DataFrame | None) -> RunResult:
    params, tokens = target
    given = dict(options.target_scores or {})
    if task in given:
        raise UsageError(f"--target-scores gives the predicted task {task!r} itself; give the target's scores on "
                         "other tasks only")
    unknown = sorted(set(given) - set(ladder["task"].astype(str)))
    if unknown:
        raise UsageError(f"--target-scores: task(s) {unknown} are not in the ladder (tasks: "
                         f"{sorted(ladder['task'].astype(str).unique())})")
    if options.fit:
        from capscale.errors import InputError

        mask = predict.query_rows(ladder, options.fit, what="--fit")
        if not mask.any():
            raise InputError(f"--fit {options.fit!r} selects no row of the ladder; columns: "
                             f"{list(predict.QUERY_COLUMNS)}")
        ladder = ladder[mask]
    metric = predict.default_metric(ladder, task, options.metric)
    pr, scores = predict.fit_method(ladder, task, options.method, metric=metric, store=store,
                                    **options.predictor_options())
    notes: list[str] = []
    if getattr(pr, "accepts_target_info", False):
        p = pr.predict(params, tokens, family=options.target_family, **({"scores": given} if given else {}))
    else:
        p = pr.predict(params, tokens)
        if options.target_family is not None:
            notes.append(f"method {pr.name!r} predicts from compute alone: the target's family "
                         f"{options.target_family!r} is not used")
        if given:
            notes.append(f"method {pr.name!r} predicts from compute alone: the target's scores on {sorted(given)} "
                         "are not used")
    summary: dict[str, Any] = {
        "task": task, "method": pr.name if options.method != "auto" else "auto", "selected": pr.name,
        "metric": metric, "target_params": params, "target_tokens": tokens, "prediction": p.value,
        "lower": p.lower, "upper": p.upper, "verdict": getattr(pr, "verdict_", None),
        "given": getattr(pr, "last_given_", "compute"), "target_scores": given or None,
        "warnings": notes + p.warnings}
    if summary["verdict"] is None:
        v = predict.task_verdict(ladder, task, metric, store=store, chance=(options.chance or {}).get(task))
        summary["verdict"] = v.verdict if v is not None else None
    if scores is not None:
        summary["cv_scores"] = scores
    files: list[Path] = []
    out = Path(options.out) if options.out else None
    if out is not None:
        # no final newline: the file has always been written this way
        files.append(atomic_write_text(out / f"predict_{task}.json",
                                       dumps_json({**summary, "fit": pr.report()}, indent=2)))
        row = {"task": task, "method": pr.name, "heldout_model": "target", "predicted": p.value,
               "actual": float("nan"), "lower": p.lower, "upper": p.upper, "params": params, "tokens": tokens}
        files.append(Path(plot_backtest([row], ladder, task, metric, out / f"predict_{task}.png")))
    return RunResult(stage="predict", out=out, files=files, summary=summary, notes=notes + list(p.warnings))
