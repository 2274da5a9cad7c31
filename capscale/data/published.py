"""Pythia eval JSONs: what :func:`capscale.data.ladder_table.load_pythia_evals` does not provide.

* :func:`pythia_stderr` — per-model standard errors. The emergence report needs them to draw bootstrap
  replicates of an aggregate-only curve; Pythia's lm-eval (v0.3) JSONs carry ``<metric>_stderr`` beside
  every score. Rows are keyed exactly as the loader keys its rows (``model_id = <folder>@step<k>``,
  task, metric) and attached as a ``stderr`` column by :func:`attach_stderr`.
* :func:`load_pythia_tasks` — a minimal reader of *every* accuracy task of one shot setting (the 57
  MMLU subjects separately, and the five-shot files), which the shared loader does not read. Same ladder
  format, params and tokens as the loader (non-embedding N from ``datasets.PYTHIA_PARAMS``,
  tokens = step × 2,097,152), with a ``stderr`` column. ``crows_pairs_*`` tasks have no accuracy
  (likelihood difference, % stereotype) and are skipped and counted.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["pythia_stderr", "attach_stderr", "load_pythia_tasks"]

_DIR = re.compile(r"^pythia-(?P<size>[0-9.]+[mb])(?P<suffix>-deduped|-bf16)?$")


def pythia_stderr(path: str | os.PathLike) -> pd.DataFrame:
    """Standard errors of Pythia's zero-shot results: columns model_id, task, metric, stderr.

    ``mmlu`` is the unweighted mean of the 57 ``hendrycksTest-*`` subjects (as in the loader), so its
    SE is sqrt(Σ_s SE_s²)/57 (subjects are disjoint item sets). ``ppl`` keeps lm-eval's ``ppl_stderr``;
    ``task_loss`` = ln ppl gets SE ≈ ppl_stderr/ppl (delta method).
    """
    root = Path(path)
    if (root / "pythia-v1").is_dir():
        root = root / "pythia-v1"
    rows = []
    for d in sorted(root.iterdir()):
        if not _DIR.match(d.name) or not (d / "zero-shot").is_dir():
            continue
        for f in sorted((d / "zero-shot").glob("*.json")):
            js = json.loads(f.read_text())
            if js.get("config", {}).get("num_fewshot", 0) != 0:
                continue
            ms = re.search(r"revision=step(\d+)", js["config"].get("model_args", ""))
            if not ms:
                raise ValueError(f"{f}: config.model_args names no revision=step<k>")
            mid = f"{d.name}@step{int(ms.group(1))}"
            res = js["results"]
            for task, vals in res.items():
                if task.startswith(("hendrycksTest-", "crows_pairs")):
                    continue
                for k, v in vals.items():
                    if k.endswith("_stderr"):
                        rows.append((mid, task, k[: -len("_stderr")], float(v)))
                if task == "lambada_openai" and "ppl_stderr" in vals:
                    rows.append((mid, task, "task_loss", float(vals["ppl_stderr"]) / float(vals["ppl"])))
            subj = [k for k in res if k.startswith("hendrycksTest-")]
            for metric in ("acc", "acc_norm"):
                se = [res[k].get(f"{metric}_stderr") for k in subj]
                if subj and all(s is not None for s in se):
                    rows.append((mid, "mmlu", metric, float(np.sqrt(np.sum(np.square(se))) / len(subj))))
    return pd.DataFrame(rows, columns=["model_id", "task", "metric", "stderr"])


def attach_stderr(ladder: pd.DataFrame, se: pd.DataFrame) -> pd.DataFrame:
    """Left-join a ``stderr`` column onto a ladder table by (model_id, task, metric)."""
    out = ladder.drop(columns=["stderr"], errors="ignore").merge(se, on=["model_id", "task", "metric"], how="left")
    if len(out) != len(ladder):
        raise ValueError("stderr table has duplicate (model_id, task, metric) keys")
    return out


def load_pythia_tasks(path: str | os.PathLike, *, shots: int = 0, params: str = "non_embedding",
                      min_step: int = 1) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every accuracy task of Pythia's ``zero-shot/`` (shots=0) or ``five-shot/`` (shots=5) files.

    Returns
    -------
    (ladder, skipped)
        Ladder table (columns of :data:`capscale.data.ladder_table.LADDER_COLUMNS` plus ``run`` and ``stderr``)
        with metrics ``acc``/``acc_norm`` per task (``hendrycksTest-<subject>`` kept separate) and ``ppl``
        for LAMBADA; ``skipped`` counts files with another shot count, checkpoints below ``min_step``
        and non-accuracy task keys (crows_pairs).
    """
    from capscale.data.ladder_table import PYTHIA_PARAMS, PYTHIA_TOKENS_PER_STEP

    if shots not in (0, 5):
        raise ValueError(f"shots must be 0 or 5, not {shots!r}")
    root = Path(path)
    if (root / "pythia-v1").is_dir():
        root = root / "pythia-v1"
    if not root.is_dir():
        raise FileNotFoundError(f"Pythia evals: folder {str(root)!r} not found")
    sub = "zero-shot" if shots == 0 else "five-shot"
    rows = []
    skipped = {"files_other_shots": 0, "checkpoints_below_min_step": 0, "task_keys_without_accuracy": 0}
    for d in sorted(root.iterdir()):
        m = _DIR.match(d.name)
        if not m or not (d / sub).is_dir():
            continue
        family = "pythia-deduped" if m["suffix"] == "-deduped" else "pythia"
        n = PYTHIA_PARAMS[m["size"]][0 if params == "total" else 1]
        for f in sorted((d / sub).glob("*.json")):
            js = json.loads(f.read_text())
            if js.get("config", {}).get("num_fewshot", 0) != shots:
                skipped["files_other_shots"] += 1
                continue
            ms = re.search(r"revision=step(\d+)", js["config"].get("model_args", ""))
            if not ms:
                raise ValueError(f"{f}: config.model_args names no revision=step<k>")
            step = int(ms.group(1))
            if step < min_step:
                skipped["checkpoints_below_min_step"] += 1
                continue
            tokens = float(step * PYTHIA_TOKENS_PER_STEP)
            base = {"model_id": f"{d.name}@step{step}", "family": family, "params": float(n), "tokens": tokens,
                    "compute": 6.0 * n * tokens, "step": float(step), "run": d.name}
            for task, vals in js["results"].items():
                metrics = [k for k in ("acc", "acc_norm", "ppl") if k in vals]
                if not any(k in vals for k in ("acc", "acc_norm")):
                    skipped["task_keys_without_accuracy"] += 1
                    continue
                for k in metrics:
                    se = vals.get(f"{k}_stderr")
                    rows.append({**base, "task": task, "metric": k, "value": float(vals[k]),
                                 "stderr": float(se) if se is not None else np.nan})
    if not rows:
        raise ValueError(f"Pythia evals: no {sub} result JSONs under {str(root)!r}")
    return pd.DataFrame(rows), skipped
