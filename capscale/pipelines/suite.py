"""``capscale backtest-suite``: one backtest protocol over several real ladders, in a development and a confirmation half.

Each data set of :data:`DATASETS` is a ladder, a list of tasks, a holdout (:func:`capscale.analysis.predict.split_holdout`)
and optionally a fit query. For each task, ``auto`` and every single method (``all``: ``ensemble``, ``ladder``,
``ladder_c``, ``direct``, ``sigmoid``, ``gadre``, ``loglinear``) are fitted on the training part only and predict each
held-out run's final value. A method that cannot run (too few fitting sizes, no loss) is a *refusal* row with its reason,
never a silent drop.

Development half: ``olmo`` (16 ladder runs -> OLMo-2 7B and 13B), ``olmo_3b`` (OLMo runs <= 1.3B -> the six 3B runs, N
derived, :func:`capscale.data.published.olmo_3b_params`), ``pythia`` (70m-1.4b -> 2.8b, 6.9b, 12b), ``demo`` (the demo
family, largest size held out). Confirmation half: ``bloom`` (<= 1b7 -> 3b, 7b1), ``xglm`` (<= 2.9B -> 4.5B, 7.5B),
``bigscience`` (each 1.3B run: checkpoints <= 40B tokens -> its final checkpoint), ``olmo_05x`` (the four 0.5xC runs
held out from the rest of the OLMo ladder), ``llama`` (7B, 13B -> 30B: two fitting sizes).

Outputs under ``out``: ``<half>_rows.csv`` (every prediction), ``<half>_summary.csv`` (per data set and method, and
pooled: MAE in points, 90 % coverage, uninformative intervals, mean width in points, refusals), ``<half>_verdicts.csv``
(verdict counts per data set) and ``<half>.txt`` (the same, printable). Accuracies are fractions; MAE and widths are
reported in points (x100).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from capscale._io import atomic_write, atomic_write_text
from capscale.analysis import laws, predict
from capscale.data.ladder_table import UnknownChanceError, chance_of
from capscale.errors import CapscaleError, InputError, UsageError
from capscale.pipelines._base import RunResult, StageOptions
from capscale.plotting.predict import plot_reliability

__all__ = ["Dataset", "DATASETS", "SUITE_METHODS", "RULES", "Options", "run", "summarize", "uninformative",
           "rule_table"]

#: The methods every data set is scored with (``auto`` first; ``loglinear`` is the baseline).
SUITE_METHODS = ("auto", "ensemble", "ladder", "ladder_c", "direct", "sigmoid", "gadre", "loglinear")
#: Further nominal levels of the reliability table (90 % is every prediction's own interval).
LEVELS = (0.5, 0.8, 0.95)
#: An interval is uninformative when it reaches from chance (within this many points) up to 1 (within as many).
UNINFORMATIVE_TOL = 0.01


@dataclass(frozen=True)
class Dataset:
    """One data set of the suite: how to load it, what to predict, how to split it."""

    name: str
    half: str
    description: str
    load: Callable[[Path, Options], pd.DataFrame]
    tasks: Callable[[pd.DataFrame], list[str]]
    holdout: str
    fit: str | None = None
    metric: str | None = None
    by_family: bool = False


OLMO_TASKS = ["mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "csqa", "socialiqa", "openbookqa"]
PYTHIA_TASKS = ["lambada_openai", "piqa", "arc_easy", "arc_challenge", "sciq", "winogrande", "mmlu"]


def _quiet(fn: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _olmo(runs: str, targets: bool) -> Callable[[Path, Options], pd.DataFrame]:
    def load(data: Path, opts: Options) -> pd.DataFrame:
        from capscale.data.published import load_olmo_ladder

        return _quiet(lambda: load_olmo_ladder(data / "olmo-ladder", runs=runs, targets=targets))
    return load


def _pythia(data: Path, opts: Options) -> pd.DataFrame:
    from capscale.data.published import load_pythia_evals

    return _quiet(lambda: load_pythia_evals(data / "pythia-evals", families=("pythia",)))


def _lmeval(family: str) -> Callable[[Path, Options], pd.DataFrame]:
    def load(data: Path, opts: Options) -> pd.DataFrame:
        from capscale.data.lmeval_results import PAPER_TOKENS, load_lmeval_results

        return _quiet(lambda: load_lmeval_results(data / "lmeval-2023-results" / "results", tokens=PAPER_TOKENS,
                                                  families=(family,), duplicates="first"))
    return load


def _bigscience(data: Path, opts: Options) -> pd.DataFrame:
    from capscale.data.lmeval_results import load_bigscience_ladder

    return load_bigscience_ladder(data / "bigscience-evals")


def _demo(data: Path, opts: Options) -> pd.DataFrame:
    from capscale.analysis.chain import ladder_from_store
    from capscale.data import store as store_mod
    from capscale.data.ladder_table import check_ladder, with_chance
    from capscale.pipelines.demo import evaluate_family

    if opts.demo_store:
        sdf = store_mod.read(opts.demo_store)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="capscale-suite-demo-") as tmp:
            sdf = evaluate_family(tmp)
    lad = with_chance(ladder_from_store(sdf), sdf)
    # the checkpoints of one size form one run (as `capscale mass --run-from-params`)
    return check_ladder(lad.assign(run=lad["params"].map(lambda p: f"demo-N{int(p)}")))


def _common_tasks(lad: pd.DataFrame) -> list[str]:
    """Accuracy tasks every model of the ladder has, whose chance level is known (others are listed as skipped)."""
    acc = lad[lad["metric"] == "acc"]
    n = acc["model_id"].nunique()
    have = acc.groupby("task")["model_id"].nunique()
    out = []
    for t in sorted(have.index[have == n]):
        try:
            chance_of(t, ladder=lad)
        except UnknownChanceError:
            continue
        out.append(t)
    return out


def _zero_shot_common(lad: pd.DataFrame) -> list[str]:
    """:func:`_common_tasks` without the multilingual x* splits and BLiMP-style paradigms (one task per benchmark)."""
    skip = ("xcopa_", "xnli_", "xstory_cloze_", "xwinograd_", "pawsx_", "blimp_", "lambada_openai_mt", "hendrycksTest")
    return [t for t in _common_tasks(lad) if not t.startswith(skip)]


#: The suite's data sets, in order.
DATASETS: tuple[Dataset, ...] = (
    Dataset("olmo", "dev", "OLMo ladder, 16 runs (190M-1.3B x 1-10xC) -> OLMo-2 7B and 13B",
            _olmo("paper", True), lambda lad: OLMO_TASKS, holdout="params > 2e9", metric="acc_norm"),
    Dataset("olmo_3b", "dev", "OLMo ladder runs <= 1.3B (0.5-10xC, reruns) -> the six 3B runs (N derived from "
            "per-token FLOPs)", _olmo("all+3b", False), lambda lad: OLMO_TASKS, holdout="params > 2e9",
            metric="acc_norm"),
    Dataset("pythia", "dev", "Pythia 70m-1.4b (final checkpoints) -> 2.8b, 6.9b, 12b", _pythia,
            lambda lad: PYTHIA_TASKS, holdout="params > 2e9", metric="acc"),
    Dataset("demo", "dev", "demo family (5 sizes, 18 checkpoints), largest size held out", _demo,
            lambda lad: sorted(lad.loc[lad["metric"] == "acc", "task"].unique()), holdout="largest", metric="acc"),
    Dataset("bloom", "confirm", "BLOOM 560m-1b7 -> 3b, 7b1 (D = 366B tokens, BLOOM paper)", _lmeval("bloom"),
            _zero_shot_common, holdout="params > 2e9", metric="acc"),
    Dataset("xglm", "confirm", "XGLM 564M-2.9B -> 4.5B, 7.5B (D = 500B tokens, XGLM paper)", _lmeval("xglm"),
            _zero_shot_common, holdout="params > 3e9", metric="acc"),
    Dataset("bigscience", "confirm", "BigScience 1.3B runs (5 data mixes): checkpoints <= 40B tokens -> the final "
            "checkpoint (112B tokens)", _bigscience, _common_tasks, holdout="tokens > 4e10", fit="tokens <= 4e10",
            metric="acc", by_family=True),
    Dataset("olmo_05x", "confirm", "OLMo ladder: the four 0.5xC runs held out from the other 20 runs",
            _olmo("all", False), lambda lad: OLMO_TASKS, holdout="run.str.endswith('0.5xC')", metric="acc_norm"),
    Dataset("llama", "confirm", "LLaMA-1 7B, 13B -> 30B (two fitting sizes; D 1.0T, 1.0T, 1.4T)", _lmeval("llama"),
            _zero_shot_common, holdout="params > 2e10", metric="acc"),
)


@dataclass(frozen=True)
class Options(StageOptions):
    """Settings of ``capscale backtest-suite``.

    Attributes
    ----------
    data : str
        The folder of public data (``olmo-ladder/``, ``pythia-evals/``, ``lmeval-2023-results/``, ``bigscience-evals/``);
        the CLI's ``--data`` defaults to ``$CAPSCALE_SHARED_DATA``.
    half : {"dev", "confirm", "all"}
        Which half of :data:`DATASETS` to run.
    sets : tuple of str
        Only these data sets (default: every data set of the half).
    bootstrap : int
        Bootstrap resamples over ladder runs per fit.
    seed : int
        Random seed.
    demo_store : str, optional
        A score store of the demo family (default: evaluate the committed family in a temporary folder, about a
        minute on 2 cores).
    out : str, optional
        Folder for the outputs.
    progress : bool
        Print one line per data set and task.
    """

    data: str = "data"
    half: str = "dev"
    sets: tuple[str, ...] = ()
    bootstrap: int = 50
    seed: int = 0
    demo_store: str | None = None
    out: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.half not in ("dev", "confirm", "all"):
            raise UsageError(f"half must be dev, confirm or all, not {self.half!r}")
        known = {d.name for d in DATASETS}
        bad = [s for s in self.sets if s not in known]
        if bad:
            raise UsageError(f"unknown suite data set(s) {bad}; known: {sorted(known)}")

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **overrides: Any) -> Options:
        """Options from ``capscale backtest-suite`` arguments (``--sets`` split at commas)."""
        sets = tuple(s.strip() for s in (getattr(args, "sets", None) or "").split(",") if s.strip())
        return super().from_cli(args, **{"sets": sets, **overrides})


def uninformative(lower: float, upper: float, chance: float) -> bool:
    """True when an interval spans the whole range from chance to 1 (no forecast)."""
    return bool(lower <= chance + UNINFORMATIVE_TOL and upper >= 1 - UNINFORMATIVE_TOL)


_REFUSALS = (InputError, laws.FitInputError, predict.MethodNotApplicable, ValueError, RuntimeError,
             np.linalg.LinAlgError)


def _rows_for_task(ds: Dataset, lad: pd.DataFrame, task: str, opts: Options, fam: str | None) -> list[dict]:
    metric = predict.default_metric(lad, task, ds.metric if ds.metric in set(lad.loc[lad["task"] == task, "metric"])
                                    else None)
    kw = {"bootstrap": opts.bootstrap, "seed": opts.seed}
    out: list[dict] = []
    for m in ("all", "auto"):
        t0 = time.time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows = predict.backtest(lad, task, m, holdout=ds.holdout, fit=ds.fit, metric=metric,
                                        levels=LEVELS, **kw)
        except _REFUSALS as e:
            names = [x for x in SUITE_METHODS if x != "auto"] if m == "all" else ["auto"]
            rows = [{"task": task, "method": n, "heldout_model": None, "predicted": math.nan, "actual": math.nan,
                     "abs_err": math.nan, "lower": math.nan, "upper": math.nan, "covered": None,
                     "warnings": [f"refused: {e}"]} for n in names]
        for r in rows:
            r["seconds"] = round(time.time() - t0, 1)
        out += rows
    try:
        ch = chance_of(task, ladder=lad)
    except UnknownChanceError:
        ch = math.nan
    for r in out:
        r.update({"dataset": ds.name, "half": ds.half, "family": fam, "metric": metric, "chance": ch,
                  "refused": r.get("heldout_model") is None,
                  "reason": "; ".join(r.get("warnings") or []) if r.get("heldout_model") is None else ""})
        if not r["refused"]:
            r["uninformative"] = uninformative(r["lower"], r["upper"], ch)
            r["width"] = r["upper"] - r["lower"]
    return out


def _covered(ok: pd.DataFrame, level: float) -> pd.Series:
    lo, hi = f"lower_{round(100 * level)}", f"upper_{round(100 * level)}"
    if lo not in ok.columns:
        return pd.Series(np.nan, index=ok.index)
    v = (ok[lo] <= ok["actual"]) & (ok["actual"] <= ok[hi])
    return v.where(ok[lo].notna()).astype(float)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (data set, method) and pooled (``dataset`` = ``pooled``): predictions, refusals, MAE and max error (points),
    90 % coverage, uninformative intervals, mean width of the informative ones (points), and the coverage of the
    nominal 50/80/95 % intervals (``coverage_50`` ...)."""
    def one(g: pd.DataFrame) -> pd.Series:
        ok = g[~g["refused"].astype(bool)]
        inf = ok[~ok["uninformative"].astype(bool)] if len(ok) else ok
        return pd.Series({
            "n": len(ok), "refused": int(g["refused"].astype(bool).sum()),
            "mae_points": 100 * ok["abs_err"].mean() if len(ok) else math.nan,
            "max_err_points": 100 * ok["abs_err"].max() if len(ok) else math.nan,
            "coverage_90": ok["covered"].astype(float).mean() if len(ok) else math.nan,
            "uninformative": int(ok["uninformative"].astype(bool).sum()) if len(ok) else 0,
            "mean_width_points": 100 * inf["width"].mean() if len(inf) else math.nan,
            **{f"coverage_{round(100 * lv)}": (_covered(ok, lv).mean() if len(ok) else math.nan) for lv in LEVELS},
        })

    per = rows.groupby(["dataset", "method"], sort=False).apply(one, include_groups=False).reset_index()
    pooled = rows.groupby("method", sort=False).apply(one, include_groups=False).reset_index()
    pooled.insert(0, "dataset", "pooled")
    out = pd.concat([per, pooled], ignore_index=True)
    order = {m: i for i, m in enumerate(SUITE_METHODS)}
    out["_o"] = out["method"].map(order).fillna(99)
    return out.sort_values(["dataset", "_o"], key=lambda s: s if s.name == "_o" else s.map(
        {d.name: i for i, d in enumerate(DATASETS)} | {"pooled": 99}), kind="stable").drop(columns="_o")


def _verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    a = rows[(rows["method"] == "auto") & rows["verdict"].notna()] if "verdict" in rows else rows.iloc[0:0]
    per_task = a.drop_duplicates(["dataset", "family", "task"])
    if not len(per_task):
        return pd.DataFrame(columns=["dataset"])
    tab = per_task.pivot_table(index="dataset", columns="verdict", values="task", aggfunc="count", fill_value=0)
    return tab.reset_index()


def _auto_check(summary: pd.DataFrame) -> pd.DataFrame:
    """Per data set: auto's MAE against the best of ensemble, sigmoid, loglinear (target: within 0.5 points)."""
    out = []
    for ds, g in summary.groupby("dataset", sort=False):
        m = g.set_index("method")["mae_points"]
        ref = m.reindex(["ensemble", "sigmoid", "loglinear"]).dropna()
        if "auto" not in m or not len(ref):
            continue
        out.append({"dataset": ds, "auto": m["auto"], "best_ref": ref.min(), "best_ref_method": ref.idxmin(),
                    "auto_minus_best": m["auto"] - ref.min(), "within_0.5": bool(m["auto"] - ref.min() <= 0.5)})
    return pd.DataFrame(out)


#: Candidate rules of ``auto`` compared on the same rows (:func:`rule_table`): name -> members whose median is taken
#: (a single member: that method). Every rule predicts ``at_chance`` tasks at chance (auto's own rows).
#: The selection criterion, fixed before the development rows were seen: among the combination rules (``auto_as_run``,
#: i.e. the CV rule of :func:`capscale.analysis.predict.select_method`, ``ensemble``, ``median_members_loglinear``,
#: ``median_ensemble_sigmoid_loglinear``), the smallest ``worst_gap`` on the development half, then the smallest
#: pooled MAE; ``sigmoid`` and ``loglinear`` alone are listed for reference only.
RULES: dict[str, tuple[str, ...]] = {
    "ensemble": ("ensemble",),
    "median_members_loglinear": ("ladder", "ladder_c", "direct", "sigmoid", "gadre", "loglinear"),
    "median_ensemble_sigmoid_loglinear": ("ensemble", "sigmoid", "loglinear"),
    "sigmoid": ("sigmoid",),
    "loglinear": ("loglinear",),
}


def rule_table(rows: pd.DataFrame) -> pd.DataFrame:
    """MAE (points) per data set and pooled of ``auto`` as run (``auto_as_run``) and of each rule of :data:`RULES`
    recomputed from the single methods' point predictions on the same held-out runs (at_chance tasks: chance).

    Also ``worst_gap``: the largest, over data sets, of a rule's MAE minus the best of ensemble / sigmoid /
    loglinear there: the criterion the auto rule was chosen by (smallest worst gap, then smallest pooled MAE).
    """
    ok = rows[~rows["refused"].astype(bool)]
    key = ["dataset", "family", "task", "heldout_model"]
    piv = ok.pivot_table(index=key, columns="method", values="predicted", aggfunc="first", dropna=False)
    act = ok.groupby(key, dropna=False)["actual"].first()
    auto = ok[ok["method"] == "auto"].set_index(key)
    at_chance = auto["selected"] == "chance" if "selected" in auto else pd.Series(False, index=auto.index)
    preds: dict[str, pd.Series] = {"auto_as_run": auto["predicted"]}
    for name, members in RULES.items():
        have = [m for m in members if m in piv.columns]
        v = piv[have].median(axis=1, skipna=True) if have else pd.Series(np.nan, index=piv.index)
        v = v.reindex(auto.index)
        preds[name] = v.where(~at_chance, auto["predicted"])
    out = []
    for name, v in preds.items():
        err = (v - act.reindex(v.index)).abs()
        g = err.groupby(level="dataset", sort=False).mean().mul(100)
        out.append({"rule": name, **g.to_dict(), "pooled": 100 * err.mean(), "n_missing": int(err.isna().sum())})
    tab = pd.DataFrame(out)
    ref = []
    sm = summarize(rows)
    for ds in [c for c in tab.columns if c not in ("rule", "pooled", "n_missing")]:
        m = sm[(sm["dataset"] == ds) & sm["method"].isin(["ensemble", "sigmoid", "loglinear"])]["mae_points"]
        ref.append((ds, m.min()))
    tab["worst_gap"] = [max(r[ds] - b for ds, b in ref) for _, r in tab.iterrows()]
    return tab


def run(options: Options) -> RunResult:
    """Run the suite's data sets of ``options.half`` (see the module docstring).

    Returns
    -------
    RunResult
        ``tables``: ``rows``, ``summary``, ``verdicts``, ``auto_check``; ``summary``: the pooled MAE and coverage of
        every method, the data sets run and their wall times; ``notes``: data sets or tasks skipped, with the reason.
    """
    data = Path(options.data)
    sets = [d for d in DATASETS if (options.half == "all" or d.half == options.half)
            and (not options.sets or d.name in options.sets)]
    rows: list[dict] = []
    notes: list[str] = []
    times: dict[str, float] = {}
    for ds in sets:
        t0 = time.time()
        try:
            lad = ds.load(data, options)
        except (CapscaleError, FileNotFoundError) as e:
            notes.append(f"{ds.name}: not run: {e}")
            continue
        fams = sorted(lad["family"].unique()) if ds.by_family else [None]
        for fam in fams:
            sub = lad[lad["family"] == fam] if fam is not None else lad
            for task in ds.tasks(sub):
                if options.progress:
                    print(f"[suite] {ds.name} {fam or ''} {task}", flush=True)
                rows += _rows_for_task(ds, sub, task, options, fam)
        times[ds.name] = round(time.time() - t0, 1)
    df = pd.DataFrame(rows)
    if not len(df):
        raise InputError(f"backtest-suite: nothing ran ({'; '.join(notes)})")
    summ = summarize(df)
    verd = _verdicts(df)
    check = _auto_check(summ)
    rules = rule_table(df)
    files: list[Path] = []
    out = Path(options.out) if options.out else None
    text = report_text(summ, verd, check, options, times, notes, rules)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        h = options.half if not options.sets else f"{options.half}_{'_'.join(options.sets)}"
        full = df.drop(columns=[c for c in ("cv_scores",) if c in df.columns]).assign(
            warnings=[" | ".join(w or []) for w in df["warnings"]])
        files.append(atomic_write(out / f"{h}_rows.csv", lambda tmp: full.to_csv(tmp, index=False, float_format="%.6g")))
        files.append(atomic_write(out / f"{h}_summary.csv", lambda tmp: summ.to_csv(tmp, index=False,
                                                                                     float_format="%.4g")))
        files.append(atomic_write(out / f"{h}_verdicts.csv", lambda tmp: verd.to_csv(tmp, index=False)))
        files.append(atomic_write(out / f"{h}_rules.csv", lambda tmp: rules.to_csv(tmp, index=False,
                                                                                   float_format="%.4g")))
        files.append(atomic_write_text(out / f"{h}.txt", text + "\n"))
        files.append(Path(plot_reliability(summ, out / f"{h}_reliability_auto.png")))
    pooled = summ[summ["dataset"] == "pooled"].set_index("method")
    summary = {"half": options.half, "datasets": [d.name for d in sets], "seconds": times,
               "pooled_mae_points": pooled["mae_points"].round(3).to_dict(),
               "pooled_coverage_90": pooled["coverage_90"].round(3).to_dict(), "text": text}
    return RunResult(stage="backtest-suite", out=out, files=files, summary=summary,
                     tables={"rows": df, "summary": summ, "verdicts": verd, "auto_check": check, "rules": rules},
                     notes=notes)


def report_text(summ: pd.DataFrame, verd: pd.DataFrame, check: pd.DataFrame, options: Options,
                times: dict[str, float], notes: list[str], rules: pd.DataFrame | None = None) -> str:
    """The suite's results as printable text (the ``<half>.txt`` file)."""
    fmt = {"mae_points": "{:.2f}", "max_err_points": "{:.1f}", "coverage_90": "{:.2f}", "mean_width_points": "{:.1f}",
           **{f"coverage_{round(100 * lv)}": "{:.2f}" for lv in LEVELS}}
    show = summ.copy()
    for c, f in fmt.items():
        show[c] = [f.format(v) if isinstance(v, float) and math.isfinite(v) else "-" for v in show[c]]
    for c in ("n", "refused", "uninformative"):
        show[c] = show[c].astype(int)
    lines = [f"capscale backtest-suite --half {options.half} (bootstrap {options.bootstrap}, seed {options.seed})",
             "MAE and widths in points of accuracy; coverage of nominal 90% intervals; uninformative = spans chance..1",
             "", show.to_string(index=False), "", "auto vs the best of ensemble / sigmoid / loglinear (points):",
             check.to_string(index=False, float_format=lambda v: f"{v:.2f}") if len(check) else "-", "",
             "predictability verdicts (tasks per data set, auto's fitting data):",
             verd.to_string(index=False) if len(verd) else "-", "",
             "candidate auto rules recomputed from the same rows (MAE, points; worst_gap: worst data set's MAE minus "
             "the best of ensemble/sigmoid/loglinear there):",
             rules.to_string(index=False, float_format=lambda v: f"{v:.2f}") if rules is not None else "-", "",
             f"wall time per data set (s): {times}"]
    if notes:
        lines += ["", "notes:"] + [f"  {n}" for n in notes]
    return "\n".join(lines)

