"""Ladder tables: the long-format input of :mod:`capscale.analysis.laws` and :mod:`capscale.analysis.predict`.

A *ladder table* has one row per (checkpoint, task, metric):

=========== ======= ===========================================================================
column      dtype   meaning
=========== ======= ===========================================================================
model_id    str     checkpoint identifier (unique per checkpoint, e.g. ``190M-1xC@step2000``)
family      str     model family (``olmo2-ladder``, ``pythia``, ``pythia-deduped``, ...)
params      float   N, parameters (the loaders say which: non-embedding for OLMo, total or
                    non-embedding for Pythia)
tokens      float   D, training tokens seen by this checkpoint
compute     float   training FLOPs of this checkpoint (6·N·D where the source gives nothing better)
step        float   training step (NaN where unknown)
task        str     task name (short names: ``mmlu``, ``hellaswag``, ``arc_challenge``, ...)
metric      str     metric name, see below
value       float   the value
run         str     optional: the training run the checkpoint belongs to (default: model_id
                    without its ``@...`` suffix); final values and held-out models are per run
=========== ======= ===========================================================================

Metrics used by capscale: ``acc`` (argmax over choices of the summed log-likelihood), ``acc_norm``
(argmax of log-likelihood per character; OLMo's ``len_norm``), ``acc_bytes``, ``task_loss``
(mean negative log-likelihood of the correct answer in nats per item), ``task_bpb`` (bits per byte of
the correct answer), ``brier`` (mean over choices), ``p_choices`` / ``log_p_choices`` (probability /
log-probability of the correct choice under a softmax over the choices; OLMo's ``soft``/``soft_log``),
``val_loss`` (an LM validation loss in nats per token), ``ppl``. The fractions :data:`UNIT_METRICS` (``acc``,
``acc_norm``, ``acc_bytes``, ``brier``, ``p_choices``) must lie in [0, 1].

Optional column ``chance`` (float in [0, 1], one value per task): the task's chance accuracy (a uniform guess
over each item's choices), for tasks not in :data:`CHANCE`; :func:`chance_of` says where a chance level comes from.

Optional column ``n_items`` (int): the number of items the value was measured on; the prediction methods
use it for the binomial noise floor of their intervals (:mod:`capscale.analysis.predict`).

Users can write this table by hand (CSV or Parquet) and read it with :func:`read_ladder`;
:func:`capscale.analysis.chain.ladder_from_store` builds it from a score store;
:mod:`capscale.data.published` reads published evaluations (the OLMo ladder, Pythia's eval JSONs).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from capscale._io import atomic_write
from capscale.data.select import final_checkpoints
from capscale.data.store import MAX_LISTED as _MAX_LISTED
from capscale.errors import CapscaleError

__all__ = [
    "LADDER_COLUMNS",
    "LadderError",
    "CHANCE",
    "UNIT_METRICS",
    "validate_ladder",
    "check_ladder",
    "read_ladder",
    "write_ladder",
    "run_of",
    "final_values",
    "chance_of",
    "table_chance",
    "chance_from_store",
    "with_chance",
    "AVERAGES",
    "UnknownChanceError",
]

LADDER_COLUMNS = ["model_id", "family", "params", "tokens", "compute", "step", "task", "metric", "value"]
#: Metrics that are fractions in [0, 1] (accuracies, probabilities, the Brier score); a value outside is refused.
UNIT_METRICS = ("acc", "acc_norm", "acc_bytes", "brier", "p_choices")


class LadderError(CapscaleError, ValueError):
    """A ladder table is malformed; the message names the offending rows, columns or models."""


# ----------------------------------------------------------------------------------------------
# Validation, reading and writing
# ----------------------------------------------------------------------------------------------


def _value(v: object) -> str:
    """A value as the message shows it (``1.3``, not ``np.float64(1.3)``)."""
    try:
        return repr(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return repr(v)


def _rows(mask: np.ndarray, df: pd.DataFrame, *, value: bool = False) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(
        f"row {int(i)} (model_id={df['model_id'].iat[i]!r}, task={df['task'].iat[i]!r}, "
        f"metric={df['metric'].iat[i]!r}" + (f", value={_value(df['value'].iat[i])})" if value else ")")
        if {"model_id", "task", "metric"} <= set(df.columns) else f"row {i}"
        for i in idx[:_MAX_LISTED]
    )
    more = f" ... and {len(idx) - _MAX_LISTED} more" if len(idx) > _MAX_LISTED else ""
    return shown + more


def validate_ladder(df: pd.DataFrame, *, source: str | None = None) -> list[str]:
    """Return every problem of a ladder table as a message naming rows (empty list if valid).

    Checks: required columns present; ``params``, ``tokens`` and ``compute`` positive and finite;
    ``value`` finite (NaN is refused: drop such rows explicitly); losses and perplexities positive;
    the fractions of :data:`UNIT_METRICS` in [0, 1]; no duplicate (model_id, task, metric); one family/params/tokens/compute per model_id.
    """
    where = f"{source}: " if source else ""
    missing = [c for c in LADDER_COLUMNS if c not in df.columns and c not in ("step", "compute", "family")]
    if missing:
        return [f"{where}ladder table lacks required column(s) {missing}; columns present: {list(df.columns)}"]
    problems: list[str] = []
    if len(df) == 0:
        return [f"{where}ladder table has no rows"]
    for col in ("params", "tokens", "compute"):
        if col not in df.columns:
            continue
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(v) | (v <= 0)
        if col == "compute":  # missing compute is filled with 6·N·D
            bad &= ~np.isnan(v)
        if bad.any():
            problems.append(f"{where}{int(bad.sum())} row(s) with a non-positive, missing or non-finite {col!r}: "
                            + _rows(bad, df))
    v = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(v)
    if bad.any():
        problems.append(f"{where}{int(bad.sum())} row(s) with a NaN, missing or infinite 'value': " + _rows(bad, df))
    lossy = df["metric"].astype(str).isin(["task_loss", "task_bpb", "val_loss", "ppl"]).to_numpy()
    badl = lossy & np.isfinite(v) & (v <= 0)
    if badl.any():
        problems.append(f"{where}{int(badl.sum())} loss/perplexity row(s) with a non-positive value: "
                        + _rows(badl, df, value=True))
    unit = df["metric"].astype(str).isin(UNIT_METRICS).to_numpy()
    badu = unit & np.isfinite(v) & ((v < 0) | (v > 1))
    if badu.any():
        problems.append(f"{where}{int(badu.sum())} row(s) of a fraction metric {list(UNIT_METRICS)} with a value "
                        "outside [0, 1] (an impossible accuracy/probability: a percentage, or a broken export?): "
                        + _rows(badu, df, value=True))
    if "chance" in df.columns:
        ch = pd.to_numeric(df["chance"], errors="coerce").to_numpy(dtype=float)
        badc = np.isfinite(ch) & ((ch < 0) | (ch > 1))
        if badc.any():
            problems.append(f"{where}{int(badc.sum())} row(s) with a 'chance' outside [0, 1]: " + _rows(badc, df))
        nun = df.assign(_c=ch).dropna(subset=["_c"]).groupby("task")["_c"].nunique()
        if (nun > 1).any():
            problems.append(f"{where}task(s) with several 'chance' values: {list(nun.index[nun > 1][:_MAX_LISTED])}")
    dup = df.duplicated(["model_id", "task", "metric"], keep=False).to_numpy()
    if dup.any():
        problems.append(f"{where}{int(dup.sum())} row(s) duplicate a (model_id, task, metric) key (duplicate "
                        "models?): " + _rows(dup, df))
    for col in ("family", "params", "tokens", "compute"):
        if col in df.columns:
            nun = df.groupby("model_id", sort=False)[col].nunique(dropna=False)
            inc = nun[nun > 1]
            if len(inc):
                problems.append(f"{where}{len(inc)} model_id(s) have several values of {col!r}: "
                                f"{list(inc.index[:_MAX_LISTED])}")
    return problems


def check_ladder(df: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Validate and normalise a ladder table; raise :class:`LadderError` listing every problem.

    Returns a copy with canonical dtypes, ``family`` filled with ``"default"``, ``compute`` filled with
    6·N·D FLOPs where missing, ``step`` as float (NaN where unknown) and a ``run`` column.
    """
    problems = validate_ladder(df, source=source)
    if problems:
        raise LadderError("invalid ladder table:\n  - " + "\n  - ".join(problems))
    out = df.copy()
    out["model_id"] = out["model_id"].astype(str)
    out["task"] = out["task"].astype(str)
    out["metric"] = out["metric"].astype(str)
    out["family"] = out["family"].astype(str) if "family" in out else "default"
    for c in ("params", "tokens", "value"):
        out[c] = pd.to_numeric(out[c]).astype(float)
    c6 = 6.0 * out["params"] * out["tokens"]
    out["compute"] = pd.to_numeric(out["compute"]).astype(float).fillna(c6) if "compute" in out else c6
    out["step"] = pd.to_numeric(out["step"], errors="coerce").astype(float) if "step" in out else np.nan
    if "run" not in out or out["run"].isna().any():
        default_run = out["model_id"].str.split("@").str[0]
        out["run"] = out["run"].fillna(default_run) if "run" in out else default_run
    out["run"] = out["run"].astype(str)
    return out


def read_ladder(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a ladder table from CSV or Parquet (see the module docstring for columns)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"ladder table {str(p)!r} does not exist")
    if p.suffix == ".csv":
        df = pd.read_csv(p)
    elif p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        raise LadderError(f"ladder table {str(p)!r}: expected a .csv or .parquet file")
    return check_ladder(df, source=str(p))


def write_ladder(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomically write a (validated) ladder table to ``.csv`` or ``.parquet``."""
    p = Path(path)
    df = check_ladder(df, source=str(p))
    if p.suffix == ".csv":
        atomic_write(p, lambda tmp: df.to_csv(tmp, index=False))
    elif p.suffix == ".parquet":
        atomic_write(p, lambda tmp: df.to_parquet(tmp, index=False))
    else:
        raise LadderError(f"cannot write a ladder table to {str(p)!r}: use .csv or .parquet")


def run_of(ladder: pd.DataFrame) -> pd.Series:
    """The run of each row (the ``run`` column, or model_id without its ``@...`` suffix)."""
    if "run" in ladder.columns:
        return ladder["run"].astype(str)
    return ladder["model_id"].astype(str).str.split("@").str[0]


def final_values(ladder: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """One row per run: its final checkpoint (:func:`capscale.data.select.final_checkpoints`), for one task/metric.

    Returns
    -------
    pandas.DataFrame
        Columns run, model_id, family, params, tokens, compute, step, value; sorted by compute.
    """
    sub = ladder[(ladder["task"] == task) & (ladder["metric"] == metric)].copy()
    sub["run"] = run_of(sub)
    last = final_checkpoints(sub, by="run")
    cols = ["run", "model_id", "family", "params", "tokens", "compute", "step", "value"]
    return last[[c for c in cols if c in last.columns]].sort_values("compute", kind="stable").reset_index(drop=True)


#: Chance accuracy of common tasks (the accuracy of a uniform random guess over each item's choices), by the
#: task's base name (a ``_<k>shot`` suffix is ignored). Two-way tasks 0.5; K-way multiple choice 1/K; generative
#: tasks (exact match, pass@k, LAMBADA's last word) 0. Averages: the mean of their parts (:data:`AVERAGES`).
#: A task not listed needs its chance level stated (:func:`chance_of`). ``multirc`` is deliberately not listed: its
#: ``acc`` is a two-way choice per answer in lm-eval 0.4 (chance 0.5) but exact match over all of a question's answers
#: in lm-eval 0.3 (chance about 0.5 to the power of the number of answers, a few percent).
CHANCE: dict[str, float] = {
    # two-way choice
    "piqa": 0.5, "winogrande": 0.5, "boolq": 0.5, "copa": 0.5, "wsc": 0.5, "wsc273": 0.5, "rte": 0.5, "wic": 0.5,
    "mrpc": 0.5, "qqp": 0.5, "qnli": 0.5, "sst": 0.5, "wnli": 0.5, "xcopa": 0.5, "xstory_cloze": 0.5,
    "xwinograd": 0.5, "pawsx": 0.5, "blimp": 0.5, "zorro": 0.5,
    # three-way
    "socialiqa": 1 / 3, "social_iqa": 1 / 3, "xnli": 1 / 3, "mnli": 1 / 3, "anli": 1 / 3, "cb": 1 / 3,
    "pubmedqa": 1 / 3,
    # four-way
    "arc_easy": 0.25, "arc_challenge": 0.25, "openbookqa": 0.25, "hellaswag": 0.25, "swag": 0.25, "sciq": 0.25,
    "logiqa": 0.25, "race": 0.25, "prost": 0.25, "mmlu": 0.25, "hendrycksTest": 0.25, "headqa_en": 0.25,
    "headqa": 0.25,
    # five-way
    "csqa": 0.2, "commonsense_qa": 0.2, "mathqa": 0.2,
    # generative: exact match / pass@k, no guessing floor
    "lambada": 0.0, "lambada_openai": 0.0, "lambada_standard": 0.0, "triviaqa": 0.0, "webqs": 0.0, "gsm8k": 0.0,
    "math": 0.0, "drop": 0.0, "arithmetic": 0.0, "humaneval": 0.0, "unscramble": 0.0,
}
#: Averages of tasks: name -> the tasks averaged (their chance levels are averaged). ``mmlu`` is the mean over
#: its subjects, every one four-way.
AVERAGES: dict[str, tuple[str, ...]] = {"mmlu": ("hendrycksTest",)}


class UnknownChanceError(LadderError):
    """An accuracy task whose chance level is not known; the message says how to state it."""


def _base_task(task: str) -> list[str]:
    """Names to look a task up under: itself, without a ``_<k>shot`` suffix, and its family prefixes
    (``hendrycksTest-anatomy`` -> ``hendrycksTest``, ``xcopa_it`` -> ``xcopa``, ``math_algebra`` -> ``math``)."""
    import re

    t = re.sub(r"_\d+shot$", "", task)
    out = [task, t]
    for sep in ("-", "_"):
        parts = t.split(sep)
        out += [sep.join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    return out


def table_chance(task: str) -> float | None:
    """Chance accuracy of ``task`` from :data:`CHANCE` (or the mean over an average's parts), None if not listed."""
    for name in _base_task(task):
        if name in CHANCE:
            return CHANCE[name]
        if name in AVERAGES:
            parts = [table_chance(p) for p in AVERAGES[name]]
            if all(p is not None for p in parts):
                return float(np.mean(parts))
    return None


def chance_from_store(store: pd.DataFrame) -> dict[str, float]:
    """Chance accuracy per task of a score store: 1/K per item (K its number of choices), averaged over items.

    Items are counted once (the first model that has them); multi-gold items count (number correct)/K.
    """
    if store is None or not len(store) or not {"task", "doc_id", "choice_idx", "is_correct"} <= set(store.columns):
        return {}
    first = store[store["model_id"] == store.groupby("task")["model_id"].transform("first")]
    g = first.groupby(["task", "doc_id"], sort=False)
    per_item = (g["is_correct"].sum() / g["choice_idx"].count()).clip(upper=1.0)
    return {str(t): float(v) for t, v in per_item.groupby(level=0).mean().items()}


def with_chance(ladder: pd.DataFrame, store: pd.DataFrame) -> pd.DataFrame:
    """The ladder with a ``chance`` column from the store behind it (:func:`chance_from_store`; an existing
    column's values are kept where set)."""
    ch = chance_from_store(store)
    col = ladder["task"].map(ch).astype(float)
    if "chance" in ladder.columns:
        col = pd.to_numeric(ladder["chance"], errors="coerce").fillna(col)
    return ladder.assign(chance=col)


def chance_of(task: str, *, chance: float | dict[str, float] | None = None, ladder: pd.DataFrame | None = None,
              store: pd.DataFrame | None = None) -> float:
    """Chance accuracy of ``task``: stated, from the ladder's ``chance`` column, from the store, or from the table.

    Parameters
    ----------
    task : str
        The task.
    chance : float or dict of str to float, optional
        Stated by the caller (CLI ``--chance TASK=P``); a dict is looked up by task.
    ladder : pandas.DataFrame, optional
        A ladder table; its optional ``chance`` column (one value per task) is used when present for the task.
    store : pandas.DataFrame, optional
        The score store behind the ladder: 1/K per item averaged over items (:func:`chance_from_store`).

    Returns
    -------
    float
        Chance accuracy in [0, 1], from the first of these that knows it, then :data:`CHANCE` / :data:`AVERAGES`.

    Raises
    ------
    UnknownChanceError
        No source knows it (a silent 0.25 would be wrong for two-way, generative and averaged tasks).
    """
    if isinstance(chance, dict):
        chance = chance.get(task)
    if chance is not None:
        c = float(chance)
        if not 0.0 <= c <= 1.0:
            raise UnknownChanceError(f"chance level of task {task!r} = {c!r} must lie in [0, 1]")
        return c
    if ladder is not None and "chance" in ladder.columns:
        v = pd.to_numeric(ladder.loc[ladder["task"] == task, "chance"], errors="coerce").dropna().unique()
        if len(v) == 1:
            return float(v[0])
        if len(v) > 1:
            raise UnknownChanceError(f"ladder column 'chance' has several values for task {task!r}: {sorted(v)[:5]}")
    if store is not None:
        c_store = chance_from_store(store[store["task"] == task]).get(task)
        if c_store is not None:
            return c_store
    c_tab = table_chance(task)
    if c_tab is not None:
        return c_tab
    raise UnknownChanceError(
        f"task {task!r}: its chance accuracy is not known (not in capscale's table of common tasks, no 'chance' "
        f"column in the ladder, no score store). State it: --chance {task}=P on the command line, chance={{'{task}': "
        "P} in Python, or a 'chance' column in the ladder table (P = 1/K for K-way multiple choice, 0.5 for two-way "
        "tasks, 0 for generative tasks)")
