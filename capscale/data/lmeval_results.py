"""Readers of folders of lm-eval result files and of the BigScience checkpoint ladders, as ladder tables.

* :func:`load_lmeval_results` -- any folder of lm-eval (v0.3-era) result JSONs (``{"results": {task: {metric:
  value, metric_stderr: ...}}, "config": {"model_args", "num_fewshot", ...}}``), one model per folder, e.g.
  ``lmeval-2023-results/results/<family>/<model>/*.json`` (BLOOM, XGLM, LLaMA-1, MPT). N comes from the
  model name (``560m``, ``1b1`` = 1.1e9, ``1.7B``, ``7B``) or a size table the caller gives; D must be given by
  the caller (``tokens``): the files do not state it. The values the papers state are in the data folder's
  MANIFEST and in :data:`PAPER_TOKENS` (an external fact, not data).
* :func:`load_bigscience_ladder` -- the BigScience 1.3B checkpoint ladders (``tr3*/tr12*_agg.json``: one run per
  file, 34-66 checkpoints over 10-112B tokens, 28 zero-shot tasks).

Every reader validates what it reads and names the file and the key that is wrong (:class:`LmEvalResultsError`).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from capscale.data.ladder_table import LadderError, check_ladder
from capscale.errors import UsageError

__all__ = ["LmEvalResultsError", "PAPER_TOKENS", "BIGSCIENCE_PARAMS", "params_from_name", "parse_mapping",
           "load_lmeval_results", "load_bigscience_ladder"]


class LmEvalResultsError(LadderError):
    """A result file that cannot be read as lm-eval output; the message names the file and the key."""


#: Training tokens of the families of ``lmeval-2023-results`` as their papers state them (copied from that
#: folder's MANIFEST.md; external facts, not in the files). Keys match a model folder name or its family folder.
PAPER_TOKENS: dict[str, float] = {
    "bloom": 366e9,  # BLOOM paper: 366B tokens (350B for some counts)
    "xglm": 500e9,  # XGLM paper: 500B tokens
    "llama-7B": 1.0e12, "llama-13B": 1.0e12, "llama-30B": 1.4e12,  # LLaMA-1 paper
    "mpt": 1.0e12,  # MPT-7B: 1T tokens
}
#: Parameters of the BigScience tr3/tr12 ablation models ("1B3" in their names; the run names state no finer count).
BIGSCIENCE_PARAMS = 1.3e9

_SIZE = re.compile(r"^(?P<a>\d+(?:\.\d+)?)(?P<u>[mMbBkK])(?P<b>\d+)?$")
_UNIT = {"k": 1e3, "m": 1e6, "b": 1e9}
#: Metrics read from lm-eval results (fractions, except the perplexity).
_METRICS = ("acc", "acc_norm", "ppl")


def params_from_name(name: str) -> float | None:
    """N from a model name: the last ``-``-separated part that reads as a size (``560m``, ``1b1``, ``1.7B``, ``7B``).

    ``1b1`` and ``7b1`` are BLOOM's spellings of 1.1e9 and 7.1e9. Returns None when no part reads as a size.
    """
    for part in reversed(re.split(r"[-_/]", name)):
        m = _SIZE.match(part)
        if m:
            v = float(m["a"]) + (float(f"0.{m['b']}") if m["b"] else 0.0)
            return v * _UNIT[m["u"].lower()]
    return None


def parse_mapping(text: str | None, *, what: str = "--tokens") -> dict[str, float]:
    """``"bloom=3.66e11,llama-30B=1.4e12"`` (a CLI mapping) as a dict of str to float.

    Raises
    ------
    capscale.errors.UsageError
        A part without ``=`` or a value that is not a number (the message names it).
    """
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"{what} {text!r}: expected NAME=VALUE[,NAME=VALUE...], got {part!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError as e:
            raise UsageError(f"{what} {text!r}: {k.strip()} = {v!r} is not a number") from e
    return out


def _lookup(table: Mapping[str, float], model: str, family: str) -> float | None:
    """The value for ``model`` (exact model name first, then its family folder name), case-insensitive."""
    low = {k.lower(): v for k, v in table.items()}
    for key in (model, family):
        if key.lower() in low:
            return float(low[key.lower()])
    return None


def _task_name(key: str, shots: int) -> str:
    return key if shots == 0 else f"{key}_{shots}shot"


def load_lmeval_results(path: str | os.PathLike, *, tokens: Mapping[str, float] | float | None = None,
                        sizes: Mapping[str, float] | None = None, families: tuple[str, ...] | None = None,
                        duplicates: str = "error") -> pd.DataFrame:
    """Read a folder of lm-eval result JSONs (one model per folder) as a ladder table of final checkpoints.

    Parameters
    ----------
    path : path-like
        A folder whose sub-folders (at any depth) hold ``*.json`` result files; a model is a folder holding
        result files (its name is the model name, its parent folder's name the family, e.g.
        ``results/bloom/bloom-560m/``).
    tokens : mapping or float
        D, training tokens, per model name or family name (the model name wins), or one number for all.
        Required: lm-eval result files do not state D (:data:`PAPER_TOKENS` holds the papers' values).
    sizes : mapping, optional
        N, parameters, per model name or family; overrides the size read from the model name.
    families : tuple of str, optional
        Only these family folders.
    duplicates : {"error", "first"}
        A (model, task, metric) found in two files of the same shot count with different values (lm-eval
        groups overlap: ``boolq`` is in LLaMA's common-sense and SuperGLUE files, from separate runs):
        ``"error"`` refuses, naming both files; ``"first"`` keeps the value of the file that sorts first and
        warns with the count. Identical repeats are read once either way.

    Returns
    -------
    pandas.DataFrame
        Ladder table, one row per (model, task, metric): ``model_id`` = ``run`` = model name, ``family`` the
        family folder, ``params`` N, ``tokens`` D, ``compute`` 6·N·D FLOPs, metrics ``acc``/``acc_norm`` (fractions)
        with a ``stderr`` column, ``ppl`` and ``task_loss`` = ln ppl (nats per target word) where a task has a
        perplexity. Zero-shot tasks keep lm-eval's key; tasks of k-shot files are named ``<key>_<k>shot``.
        ``hendrycksTest-*`` subjects are also averaged into ``mmlu`` (``mmlu_5shot`` for 5-shot files).

    Raises
    ------
    LmEvalResultsError
        A file that is not JSON, lacks ``results`` or ``config.num_fewshot``, or has a non-numeric value; the same
        (model, task, metric) in two files with different values (identical repeats are read once); a model whose N or D is unknown (the message says how to give it).
    FileNotFoundError
        ``path`` does not exist.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"lm-eval results: folder {str(root)!r} not found")
    model_dirs = sorted({f.parent for f in root.rglob("*.json")})
    if families is not None:
        model_dirs = [d for d in model_dirs if d.parent.name in families]
    if not model_dirs:
        raise LmEvalResultsError(f"lm-eval results: no *.json result files under {str(root)!r}"
                                 + (f" for families {list(families)}" if families is not None else ""))
    if duplicates not in ("error", "first"):
        raise UsageError(f"duplicates must be 'error' or 'first', not {duplicates!r}")
    records: list[dict] = []
    conflicts: list[str] = []
    seen: dict[tuple[str, str, str], tuple[str, float]] = {}
    for d in model_dirs:
        model, family = d.name, d.parent.name
        n = _lookup(sizes, model, family) if sizes else None
        n = n if n is not None else params_from_name(model)
        if n is None:
            raise LmEvalResultsError(f"lm-eval results: cannot read N from the model name {model!r} ({str(d)!r}); "
                                     "give a size table (sizes={model: N}, CLI --sizes MODEL=N)")
        if isinstance(tokens, int | float):
            dd: float | None = float(tokens)
        else:
            dd = _lookup(tokens, model, family) if tokens else None
        if dd is None:
            raise LmEvalResultsError(
                f"lm-eval results: training tokens of {model!r} (family {family!r}) are not given: result files do not "
                f"state D; give tokens={{'{family}': D}} (CLI --tokens {family}=D). The papers' values are in the data "
                "folder's MANIFEST and capscale.data.lmeval_results.PAPER_TOKENS")
        if not (math.isfinite(n) and n > 0 and math.isfinite(dd) and dd > 0):
            raise LmEvalResultsError(f"lm-eval results: model {model!r}: N = {n!r} and D = {dd!r} must be positive")
        base = {"model_id": model, "run": model, "family": family, "params": float(n), "tokens": float(dd),
                "compute": 6.0 * n * dd, "step": np.nan}
        for f in sorted(d.glob("*.json")):
            try:
                js = json.loads(f.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise LmEvalResultsError(f"{f}: not a JSON file ({e})") from e
            if not isinstance(js, dict) or not isinstance(js.get("results"), dict):
                raise LmEvalResultsError(f"{f}: no 'results' object (is this an lm-eval result file?)")
            shots = js.get("config", {}).get("num_fewshot") if isinstance(js.get("config"), dict) else None
            if not isinstance(shots, int):
                raise LmEvalResultsError(f"{f}: key 'config.num_fewshot' missing or not an integer ({shots!r})")
            subj: dict[str, list[float]] = {}
            for key, vals in js["results"].items():
                if not isinstance(vals, dict):
                    raise LmEvalResultsError(f"{f}: key 'results.{key}' is not an object of metrics")
                task = _task_name(key, shots)
                for metric in _METRICS:
                    if metric not in vals:
                        continue
                    v = vals[metric]
                    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(float(v)):
                        raise LmEvalResultsError(f"{f}: key 'results.{key}.{metric}' = {v!r} is not a finite number")
                    if metric != "ppl" and not 0.0 <= float(v) <= 1.0:
                        raise LmEvalResultsError(f"{f}: key 'results.{key}.{metric}' = {v!r} lies outside [0, 1] (an "
                                                 "accuracy as a percentage?)")
                    out_metrics = [(metric, float(v))]
                    if metric == "ppl":
                        if v <= 0:
                            raise LmEvalResultsError(f"{f}: key 'results.{key}.ppl' = {v!r} is not positive")
                        out_metrics.append(("task_loss", math.log(float(v))))
                    elif key.startswith("hendrycksTest-"):
                        subj.setdefault(metric, []).append(float(v))
                    for m, val in out_metrics:
                        k3 = (model, task, m)
                        if k3 in seen:
                            if math.isclose(seen[k3][1], val, rel_tol=1e-9, abs_tol=1e-12):
                                continue  # the same result written to two files (e.g. boolq in two groups)
                            if duplicates == "first":
                                conflicts.append(f"{model}/{task}/{m}")
                                continue
                            raise LmEvalResultsError(
                                f"{f}: key 'results.{key}.{metric}' = {val!r} conflicts with (model {model!r}, task "
                                f"{task!r}, metric {m!r}) = {seen[k3][1]!r} read from {seen[k3][0]}")
                        seen[k3] = (str(f), val)
                        se = vals.get(f"{metric}_stderr") if m != "task_loss" else None
                        records.append({**base, "task": task, "metric": m, "value": val,
                                        "stderr": float(se) if isinstance(se, int | float) else np.nan,
                                        "source": str(f)})
            for metric, v in subj.items():
                task = _task_name("mmlu", shots)
                k3, val = (model, task, metric), float(np.mean(v))
                if k3 in seen:
                    raise LmEvalResultsError(f"{f}: hendrycksTest subjects duplicate (model {model!r}, task {task!r}, "
                                             f"metric {metric!r}) already read from {seen[k3][0]}")
                seen[k3] = (str(f), val)
                records.append({**base, "task": task, "metric": metric, "value": val,
                                "stderr": np.nan, "source": str(f)})
    if not records:
        raise LmEvalResultsError(f"lm-eval results: no acc/acc_norm/ppl values under {str(root)!r}")
    if conflicts:
        warnings.warn(f"lm-eval results: {len(conflicts)} (model, task, metric) value(s) differ between two files; "
                      f"kept the first file's (duplicates='first'): {conflicts[:10]}", stacklevel=2)
    return check_ladder(pd.DataFrame.from_records(records), source=str(root))


def load_bigscience_ladder(path: str | os.PathLike, *, params: float = BIGSCIENCE_PARAMS) -> pd.DataFrame:
    """Read the BigScience 1.3B checkpoint ladders (``*_agg.json``) as a ladder table.

    Parameters
    ----------
    path : path-like
        The ``bigscience-evals`` folder, ``evaluation/results`` under it, or one ``*_agg.json`` file.
    params : float
        N of every run (the files state none; the run names say 1B3).

    Returns
    -------
    pandas.DataFrame
        Ladder table: one row per (checkpoint, task, metric); ``run`` and ``family`` the file's stem without
        ``_agg`` (e.g. ``tr3m-1B3-pile-checkpoints``), ``model_id`` ``<run>@step<k>``, ``tokens`` the file's token
        count of that checkpoint, ``compute`` 6·N·D FLOPs, metrics ``acc``/``acc_norm`` with ``stderr``. Every
        checkpoint of a run has the same N: a fit over these rows is a fit along D (data scaling) only.

    Raises
    ------
    LmEvalResultsError
        A file without ``tokens``/``checkpoints``/``results``, lists of different lengths, or a non-numeric value
        (names the file and key).
    """
    root = Path(path)
    if root.is_file():
        files = [root]
    else:
        if not root.is_dir():
            raise FileNotFoundError(f"BigScience evals: {str(root)!r} not found")
        files = sorted(root.rglob("*_agg.json"))
    if not files:
        raise LmEvalResultsError(f"BigScience evals: no *_agg.json checkpoint ladders under {str(root)!r}")
    records: list[dict] = []
    for f in files:
        try:
            js = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LmEvalResultsError(f"{f}: not a JSON file ({e})") from e
        for key in ("tokens", "checkpoints", "results"):
            if key not in js:
                raise LmEvalResultsError(f"{f}: key {key!r} missing (expected a BigScience *_agg.json ladder)")
        toks, steps = js["tokens"], js["checkpoints"]
        if not isinstance(toks, list) or len(toks) != len(steps):
            raise LmEvalResultsError(f"{f}: keys 'tokens' and 'checkpoints' are not lists of the same length")
        run = f.stem.removesuffix("_agg")
        for task, mets in js["results"].items():
            for metric in ("acc", "acc_norm"):
                if metric not in mets:
                    continue
                vals, ses = mets[metric], mets.get(f"{metric}_stderr", [None] * len(toks))
                if not isinstance(vals, list) or len(vals) != len(toks):
                    raise LmEvalResultsError(f"{f}: key 'results.{task}.{metric}' is not a list of {len(toks)} "
                                             "values (one per checkpoint)")
                for i, (t, s, v) in enumerate(zip(toks, steps, vals, strict=True)):
                    if not isinstance(v, int | float) or not math.isfinite(float(v)):
                        raise LmEvalResultsError(f"{f}: key 'results.{task}.{metric}[{i}]' = {v!r} is not a number")
                    se = ses[i] if isinstance(ses, list) and i < len(ses) else None
                    records.append({"model_id": f"{run}@step{int(s)}", "run": run, "family": run,
                                    "params": float(params), "tokens": float(t), "compute": 6.0 * params * float(t),
                                    "step": float(s), "task": task, "metric": metric, "value": float(v),
                                    "stderr": float(se) if isinstance(se, int | float) else np.nan})
    return check_ladder(pd.DataFrame.from_records(records), source=str(root))
