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
]

LADDER_COLUMNS = ["model_id", "family", "params", "tokens", "compute", "step", "task", "metric", "value"]
_MAX_LISTED = 10
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


#: Chance accuracy per OLMo task (used by the ladder method's p0 and by chance normalisation).
CHANCE = {"piqa": 0.5, "socialiqa": 1 / 3, "csqa": 0.2, "winogrande": 0.5, "boolq": 0.5,
          "sciq": 0.25, "wsc": 0.5, "lambada_openai": 0.0, "logiqa": 0.25}


def chance_of(task: str) -> float:
    """Chance accuracy of a task: the paper's table, 0.25 by default."""
    return CHANCE.get(task, 0.25)
