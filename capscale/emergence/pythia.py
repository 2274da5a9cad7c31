"""Standard errors for Pythia's eval JSONs, which :func:`capscale.datasets.load_pythia_evals` does not keep.

The emergence report needs a per-model standard error to draw bootstrap replicates of an aggregate-only
curve. Pythia's lm-eval (v0.3) JSONs carry ``<metric>_stderr`` beside every score; this module reads
only those fields, for the zero-shot files the loader reads, and attaches them as a ``stderr`` column
keyed exactly as the loader keys its rows (``model_id = <folder>@step<k>``, task, metric).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["pythia_stderr", "attach_stderr"]

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
