"""Readers of published evaluations: ladder tables built from the files public projects release.

* :func:`load_olmo_ladder` — the OLMo model ladder (Bhagia et al. 2024, "Establishing Task Scaling Laws via
  Compute-Efficient Model Ladders", arXiv 2412.04403): 16 ladder runs (190M-1.3B x 1-10xC) and the OLMo-2 7B
  and 13B targets, from the paper's released CSVs.
* :func:`load_pythia_evals` — Pythia's lm-eval (v0.3) result JSONs (Biderman et al. 2023, arXiv 2304.01373):
  every size and checkpoint, zero-shot tasks.
* :func:`pythia_stderr` / :func:`attach_stderr` — per-model standard errors from the same JSONs (the emergence
  report draws bootstrap replicates of aggregate-only curves from them); rows are keyed exactly as the loader
  keys its rows (``model_id = <folder>@step<k>``, task, metric).
* :func:`load_pythia_tasks` — a minimal reader of *every* accuracy task of one shot setting (the 57 MMLU
  subjects separately, and the five-shot files). Same ladder format, params and tokens as the loader
  (non-embedding N from :data:`PYTHIA_PARAMS`, tokens = step × 2,097,152), with a ``stderr`` column.
  ``crows_pairs_*`` tasks have no accuracy (likelihood difference, % stereotype) and are skipped and counted.
* :func:`fetch` — download one of these data sets from its pinned public source (users with internet only).

Each data folder's ``MANIFEST.md`` describes its source, licence and checksums. Every reader returns a
validated ladder table (:mod:`capscale.data.ladder_table`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from capscale._io import atomic_write_bytes
from capscale.data.ladder_table import LadderError, check_ladder
from capscale.errors import InputError, UsageError

__all__ = ["OLMO_TASKS", "OLMO_PAPER_TASKS", "OLMO_REFERENCE_KEYS", "PYTHIA_PARAMS", "PYTHIA_TOKENS_PER_STEP",
           "load_olmo_ladder", "olmo_3b_params", "load_pythia_evals", "pythia_stderr", "attach_stderr", "load_pythia_tasks",
           "DATASETS", "fetch"]

# ----------------------------------------------------------------------------------------------
# OLMo model ladder (Bhagia et al. 2024)
# ----------------------------------------------------------------------------------------------

#: Short task name -> list of (split key, weight). MMLU is the paper's weighted mean of 4 groups.
OLMO_TASKS: dict[str, list[tuple[str, float]]] = {
    "mmlu": [("mmlu_stem_test", 0.215), ("mmlu_humanities_test", 0.335),
             ("mmlu_social_sciences_test", 0.219), ("mmlu_other_test", 0.231)],
    "hellaswag": [("hellaswag_val", 1.0)],
    "arc_challenge": [("arc_challenge_test", 1.0)],
    "arc_easy": [("arc_easy_test", 1.0)],
    "piqa": [("piqa_val", 1.0)],
    "csqa": [("csqa_val", 1.0)],
    "socialiqa": [("socialiqa_val", 1.0)],
    "openbookqa": [("openbookqa_test", 1.0)],
    "winogrande": [("winogrande_val", 1.0)],
    "boolq": [("boolq_val", 1.0)],
}
#: The 8 tasks of the paper (reference outputs), in the order of its tables.
OLMO_PAPER_TASKS = ["mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "csqa", "socialiqa", "openbookqa"]
#: Reference-output task keys of the 8 paper tasks.
OLMO_REFERENCE_KEYS = {
    "mmlu": "mmlu_avg_test_5shot", "hellaswag": "hellaswag_val_5shot",
    "arc_challenge": "arc_challenge_test_5shot", "arc_easy": "arc_easy_test_5shot", "piqa": "piqa_val_5shot",
    "csqa": "csqa_val_5shot", "socialiqa": "socialiqa_val_5shot", "openbookqa": "openbookqa_test_5shot",
}
_OLMO_METRICS = {
    # metric name here -> column template
    "task_bpb": "eval/downstream_bpb/{split}_rc_5shot_bpb",
    "acc_norm": "eval/downstream/{split}_rc_5shot_len_norm",
    "p_choices": "eval/downstream_soft/{split}_rc_5shot_soft",
    "log_p_choices": "eval/downstream_soft_log/{split}_rc_5shot_soft_log",
}


def _olmo_task_frame(raw: pd.DataFrame, where: str) -> dict[tuple[str, str], np.ndarray]:
    out: dict[tuple[str, str], np.ndarray] = {}
    for task, parts in OLMO_TASKS.items():
        for metric, tmpl in _OLMO_METRICS.items():
            cols = [tmpl.format(split=s) for s, _ in parts]
            if task == "boolq" and metric == "acc_norm":
                cols = ["eval/downstream/boolq_val_rc_5shot_acc"]
            if not all(c in raw.columns for c in cols):
                raise LadderError(f"{where}: missing column(s) {[c for c in cols if c not in raw.columns]}")
            w = np.array([wt for _, wt in parts])
            vals = raw[cols].to_numpy(dtype=float) @ w
            name = "acc" if (task == "boolq" and metric == "acc_norm") else metric
            out[(task, name)] = vals
    c4 = "eval/c4_en-validation/CrossEntropyLoss"
    if c4 in raw.columns:
        out[("c4_en", "val_loss")] = raw[c4].to_numpy(dtype=float)
    return out


def load_olmo_ladder(
    path: str | os.PathLike,
    *,
    runs: str = "paper",
    targets: bool = True,
    target_window: int = 5,
) -> pd.DataFrame:
    """Load the OLMo model-ladder CSVs (a folder ``olmo-ladder/`` as the paper released it) as a ladder table.

    Parameters
    ----------
    path : path-like
        The ``olmo-ladder`` folder (with ``configs/`` and ``ladder-runs/``).
    runs : {"paper", "all", "all+3b"}
        ``"paper"``: the 16 runs of ``configs/final.json`` (190M/370M/760M/1.3B x 1xC, 2xC, 5xC, 10xC).
        ``"all"`` adds the 0.5xC and 1xC-rerun runs of those four sizes (the 3B runs are excluded: their
        non-embedding N is not stated; a warning says so). ``"all+3b"`` adds the six 3B runs too, with N
        derived by :func:`olmo_3b_params` (not stated in the files: derived, see there).
    targets : bool
        Include the OLMo-2 targets ``7B-4T`` (the single annealed row) and ``13B-5T``.
    target_window : int
        The 13B target becomes one row whose values are the mean of its last ``target_window``
        checkpoints (the reference outputs' convention, 5).

    Returns
    -------
    pandas.DataFrame
        Ladder table; ``params`` = non-embedding N, ``tokens`` = D, ``compute`` = the config's FLOPs per
        token x D; metrics ``task_bpb`` (bits per byte of the gold answer), ``acc_norm`` (``len_norm``;
        ``acc`` for BoolQ), ``p_choices``/``log_p_choices`` (``soft``/``soft_log``) for every task of
        :data:`OLMO_TASKS`, and ``val_loss`` (C4 nats/token) under task ``c4_en``. Rows of the targets
        have ``family`` = ``olmo2-ladder`` too and ``run`` = ``7B-4T`` / ``13B-5T``.
    """
    root = Path(path)
    cfg_path = root / "configs" / "final.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"OLMo ladder: {str(cfg_path)!r} not found (is {str(root)!r} the olmo-ladder folder?)")
    cfg = json.loads(cfg_path.read_text())
    frames = []
    run_specs: list[tuple[str, Path, dict]] = []
    for _key, spec in cfg.items():
        if spec["mode"] == "eval" and not targets:
            continue
        for p in spec["paths"]:
            run_specs.append((Path(p).stem, root / "ladder-runs" / Path(p).name, spec))
    if runs in ("all", "all+3b"):
        extra = []
        for _key, spec in cfg.items():
            if spec["mode"] != "train":
                continue
            for p in spec["paths"]:
                stem = Path(p).stem
                if stem.endswith("-1xC"):
                    for suffix in ("-0.5xC", "-1xC-rerun"):
                        name = stem.replace("-1xC", suffix)
                        extra.append((name, root / "ladder-runs" / f"{name}.csv", spec))
        if runs == "all+3b":
            n3, f3, _ = olmo_3b_params(root)
            spec3 = {"mode": "train", "n": n3, "flops": f3, "label": "3B"}
            extra += [(f"3B-{b}", root / "ladder-runs" / f"3B-{b}.csv", spec3)
                      for b in ("0.5xC", "1xC", "1xC-rerun", "2xC", "5xC", "10xC")]
        else:
            warnings.warn("OLMo ladder: the 3B runs are excluded (non-embedding N not stated in the data; "
                          "runs='all+3b' adds them with a derived N)", stacklevel=2)
        run_specs += extra
    elif runs != "paper":
        raise UsageError(f"runs must be 'paper', 'all' or 'all+3b', not {runs!r}")

    for run, fpath, spec in run_specs:
        if not fpath.exists():
            raise FileNotFoundError(f"OLMo ladder: run file {str(fpath)!r} not found")
        raw = pd.read_csv(fpath)
        where = str(fpath)
        n = float(spec["n"])
        if "throughput/total_tokens" in raw.columns:
            tokens = raw["throughput/total_tokens"].to_numpy(dtype=float)
        elif "_step" in raw.columns:
            tokens = raw["_step"].to_numpy(dtype=float) * raw["batch_size_in_tokens"].to_numpy(dtype=float)
        else:
            raise LadderError(f"{where}: neither throughput/total_tokens nor _step to derive tokens from")
        step = raw["_step"].to_numpy(dtype=float) if "_step" in raw.columns else np.full(len(raw), np.nan)
        if run == "peteish7_eval_anneal":
            # MANIFEST: this file has no _step; its first column is throughput/total_tokens
            tokens = np.full(len(raw), 3_945_065_873_408.0)
        vals = _olmo_task_frame(raw, where)
        label = spec["label"] if spec["mode"] == "eval" else run
        if spec["mode"] == "eval" and len(raw) > 1:
            order = np.argsort(step, kind="stable")
            keep = order[-target_window:]
            tokens = np.array([tokens[order[-1]]])
            step = np.array([step[order[-1]]])
            vals = {k: np.array([v[keep].mean()]) for k, v in vals.items()}
        model_ids = [label if spec["mode"] == "eval" else f"{run}@step{int(s)}" for s in step]
        compute = float(spec["flops"]) * tokens
        for (task, metric), v in vals.items():
            frames.append(pd.DataFrame({
                "model_id": model_ids, "family": "olmo2-ladder", "params": n, "tokens": tokens,
                "compute": compute, "step": step, "task": task, "metric": metric, "value": v, "run": label,
            }))
    df = pd.concat(frames, ignore_index=True)
    nan = ~np.isfinite(df["value"].to_numpy(dtype=float))
    if nan.any():
        counts = df[nan].groupby(["run", "task", "metric"]).size()
        warnings.warn(f"OLMo ladder: dropped {int(nan.sum())} row(s) with missing values: "
                      f"{counts.head(10).to_dict()}", stacklevel=2)
        df = df[~nan].reset_index(drop=True)
    return check_ladder(df, source=str(root))


def olmo_3b_params(path: str | os.PathLike) -> tuple[float, float, dict[str, float]]:
    """N of the OLMo ladder's 3B size, which the files do not state, derived from its per-token FLOPs.

    The 3B CSVs give the training FLOPs per token F (``throughput/total_training_Gflops`` x 1e9 /
    ``throughput/total_tokens``, the median over ``3B-1xC.csv``'s rows). The other four sizes' configs give
    F/N, which falls with N (attention FLOPs per parameter shrink): 10.00, 9.28, 8.41, 7.90 from 190M to 1.3B.
    A power law F/N − 6 = a·N^b fitted to those four sizes is extrapolated and F = N·(6 + a·N^b) solved for N
    (3.12e9 on the released files). With the 1.3B ratio alone, N would be F/7.90 = 2.91e9 (7 % smaller), which
    ``details`` also reports.

    Returns
    -------
    (n, flops_per_token, details)
        N (non-embedding parameters), F (FLOPs per token) and the numbers behind them (``ratio_fit_a``,
        ``ratio_fit_b``, ``n_nearest_ratio``).

    Raises
    ------
    capscale.data.ladder_table.LadderError
        The 3B CSV or its FLOP/token columns are missing (the message names the file and column).
    """
    from scipy.optimize import brentq

    root = Path(path)
    cfg = json.loads((root / "configs" / "final.json").read_text())
    n = np.array([float(v["n"]) for v in cfg.values() if v["mode"] == "train"])
    f = np.array([float(v["flops"]) for v in cfg.values() if v["mode"] == "train"])
    csv = root / "ladder-runs" / "3B-1xC.csv"
    if not csv.exists():
        raise LadderError(f"OLMo ladder: {str(csv)!r} not found (needed to derive the 3B size's N)")
    raw = pd.read_csv(csv)
    for col in ("throughput/total_training_Gflops", "throughput/total_tokens"):
        if col not in raw.columns:
            raise LadderError(f"{csv}: column {col!r} missing (needed to derive the 3B size's N)")
    ok = raw["throughput/total_tokens"] > 0
    f3 = float(np.median(raw.loc[ok, "throughput/total_training_Gflops"] * 1e9 / raw.loc[ok, "throughput/total_tokens"]))
    b, loga = np.polyfit(np.log(n), np.log(f / n - 6.0), 1)
    n3 = float(brentq(lambda x: x * (6.0 + math.exp(loga) * x**b) - f3, n.max(), 100 * n.max()))
    return n3, f3, {"ratio_fit_a": math.exp(loga), "ratio_fit_b": float(b),
                    "n_nearest_ratio": f3 / float(f[np.argmax(n)] / n.max())}


# ----------------------------------------------------------------------------------------------
# Pythia evaluations
# ----------------------------------------------------------------------------------------------

#: size -> (total params, non-embedding params) from the Pythia README (MANIFEST.md).
PYTHIA_PARAMS: dict[str, tuple[int, int]] = {
    "70m": (70_426_624, 18_915_328), "160m": (162_322_944, 85_056_000), "410m": (405_334_016, 302_311_424),
    "1b": (1_011_781_632, 805_736_448), "1.4b": (1_414_647_808, 1_208_602_624),
    "2.8b": (2_775_208_960, 2_517_652_480), "6.9b": (6_857_302_016, 6_444_163_072),
    "12b": (11_846_072_320, 11_327_027_200),
}
PYTHIA_TOKENS_PER_STEP = 2_097_152
_PYTHIA_DIR = re.compile(r"^pythia-(?P<size>[0-9.]+[mb])(?P<suffix>-deduped|-bf16)?$")
_PYTHIA_TASKS = {"lambada_openai": ("acc",), "piqa": ("acc", "acc_norm"), "arc_easy": ("acc", "acc_norm"),
                 "arc_challenge": ("acc", "acc_norm"), "sciq": ("acc", "acc_norm"), "logiqa": ("acc", "acc_norm"),
                 "winogrande": ("acc",), "wsc": ("acc",)}


def _pythia_step(js: dict, f: Path) -> int:
    """The training step of one Pythia result JSON, from ``revision=step<k>`` in its ``config.model_args``."""
    ms = re.search(r"revision=step(\d+)", js.get("config", {}).get("model_args", ""))
    if not ms:
        raise LadderError(f"{f}: config.model_args names no revision=step<k>")
    return int(ms.group(1))


def load_pythia_evals(
    path: str | os.PathLike,
    *,
    params: str = "total",
    families: tuple[str, ...] = ("pythia", "pythia-deduped"),
    min_step: int = 1,
) -> pd.DataFrame:
    """Load Pythia's zero-shot evaluation JSONs (a folder ``pythia-evals/`` as the Pythia repository released it) as a ladder table.

    Parameters
    ----------
    path : path-like
        The ``pythia-evals`` folder (holding ``pythia-v1/``) or ``pythia-v1`` itself.
    params : {"total", "non_embedding"}
        Which parameter count goes into ``params`` (a first-order modelling choice for small models).
    families : tuple of str
        ``pythia`` (standard Pile; its 1B model is ``pythia-1b-bf16``) and/or ``pythia-deduped``.
    min_step : int
        Checkpoints with ``step < min_step`` are dropped (step 0 has D = 0 tokens); the count is warned.

    Returns
    -------
    pandas.DataFrame
        Ladder table with model_id ``pythia-<size>[-deduped]@step<k>``, run ``pythia-<size>[-deduped]``,
        tokens = step x 2,097,152, compute = 6·N·D, and metrics ``acc``/``acc_norm`` for lambada_openai,
        piqa, arc_easy, arc_challenge, sciq, logiqa, winogrande, wsc and ``mmlu`` (mean of the 57
        hendrycksTest subjects); ``ppl`` and ``task_loss`` = ln(ppl) (nats per LAMBADA target word) for
        lambada_openai. Only zero-shot files are read (the shot count is taken from ``config.num_fewshot``).
    """
    root = Path(path)
    if (root / "pythia-v1").is_dir():
        root = root / "pythia-v1"
    if not root.is_dir():
        raise FileNotFoundError(f"Pythia evals: folder {str(root)!r} not found")
    if params not in ("total", "non_embedding"):
        raise UsageError(f"params must be 'total' or 'non_embedding', not {params!r}")
    records: list[dict] = []
    dropped_steps = 0
    skipped_files: list[str] = []
    for d in sorted(root.iterdir()):
        m = _PYTHIA_DIR.match(d.name)
        if not m or not (d / "zero-shot").is_dir():
            continue
        family = "pythia-deduped" if m["suffix"] == "-deduped" else "pythia"
        if family not in families:
            continue
        size = m["size"]
        n = PYTHIA_PARAMS[size][0 if params == "total" else 1]
        run = d.name
        for f in sorted((d / "zero-shot").glob("*.json")):
            js = json.loads(f.read_text())
            if js.get("config", {}).get("num_fewshot", 0) != 0:
                skipped_files.append(str(f))
                continue
            step = _pythia_step(js, f)
            if step < min_step:
                dropped_steps += 1
                continue
            tokens = float(step * PYTHIA_TOKENS_PER_STEP)
            base = {"model_id": f"{run}@step{step}", "family": family, "params": float(n), "tokens": tokens,
                    "compute": 6.0 * n * tokens, "step": float(step), "run": run}
            res = js["results"]
            for task, metrics in _PYTHIA_TASKS.items():
                if task not in res:
                    continue
                for metric in metrics:
                    records.append({**base, "task": task, "metric": metric, "value": float(res[task][metric])})
            if "lambada_openai" in res:
                ppl = float(res["lambada_openai"]["ppl"])
                records.append({**base, "task": "lambada_openai", "metric": "ppl", "value": ppl})
                records.append({**base, "task": "lambada_openai", "metric": "task_loss", "value": math.log(ppl)})
            subj = [k for k in res if k.startswith("hendrycksTest-")]
            if subj:
                for metric in ("acc", "acc_norm"):
                    records.append({**base, "task": "mmlu", "metric": metric,
                                    "value": float(np.mean([res[k][metric] for k in subj]))})
    if not records:
        raise LadderError(f"Pythia evals: no zero-shot result JSONs found under {str(root)!r}")
    if dropped_steps:
        warnings.warn(f"Pythia evals: dropped {dropped_steps} checkpoint(s) with step < {min_step}", stacklevel=2)
    if skipped_files:
        warnings.warn(f"Pythia evals: skipped {len(skipped_files)} non-zero-shot file(s) in zero-shot folders",
                      stacklevel=2)
    return check_ladder(pd.DataFrame.from_records(records), source=str(root))




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
        if not _PYTHIA_DIR.match(d.name) or not (d / "zero-shot").is_dir():
            continue
        for f in sorted((d / "zero-shot").glob("*.json")):
            js = json.loads(f.read_text())
            if js.get("config", {}).get("num_fewshot", 0) != 0:
                continue
            mid = f"{d.name}@step{_pythia_step(js, f)}"
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
        raise InputError("stderr table has duplicate (model_id, task, metric) keys")
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

    if shots not in (0, 5):
        raise UsageError(f"shots must be 0 or 5, not {shots!r}")
    root = Path(path)
    if (root / "pythia-v1").is_dir():
        root = root / "pythia-v1"
    if not root.is_dir():
        raise FileNotFoundError(f"Pythia evals: folder {str(root)!r} not found")
    sub = "zero-shot" if shots == 0 else "five-shot"
    rows = []
    skipped = {"files_other_shots": 0, "checkpoints_below_min_step": 0, "task_keys_without_accuracy": 0}
    for d in sorted(root.iterdir()):
        m = _PYTHIA_DIR.match(d.name)
        if not m or not (d / sub).is_dir():
            continue
        family = "pythia-deduped" if m["suffix"] == "-deduped" else "pythia"
        n = PYTHIA_PARAMS[m["size"]][0 if params == "total" else 1]
        for f in sorted((d / sub).glob("*.json")):
            js = json.loads(f.read_text())
            if js.get("config", {}).get("num_fewshot", 0) != shots:
                skipped["files_other_shots"] += 1
                continue
            step = _pythia_step(js, f)
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
        raise InputError(f"Pythia evals: no {sub} result JSONs under {str(root)!r}")
    return pd.DataFrame(rows), skipped


# ----------------------------------------------------------------------------------------------
# Optional download for users with internet (never called by tests)
# ----------------------------------------------------------------------------------------------

#: Public sources, pinned to a commit; every file is checked against its pinned sha256.
DATASETS: dict[str, dict] = {
    "olmo-ladder": {
        "base": "https://raw.githubusercontent.com/allenai/OLMo-ladder/67a3f440f787d020da35e3ca8eeae475fae754f5/",
        "files": {
            "configs/final.json": ("src/scripts/paper/configs/final.json",
                                   "3fcb831b03e9761ab1be750f89c7a6b8832fda09c491d80bec8593ec9e08d1c8"),
            "reference-outputs/chained_main.csv": (
                "src/scripts/paper/figures/chained_main.csv",
                "62984273d7e0a2f8068771e4f4578deb9dd451e5fc93a1647fffd489efab0572"),
            "reference-outputs/step1_main.csv": (
                "src/scripts/paper/figures/step1_main.csv",
                "e689f6f427ca0abab58d07f642bfef10d49354011a290bab264bb7e373a6b224"),
            "reference-outputs/step2_main.csv": (
                "src/scripts/paper/figures/step2_main.csv",
                "4e20ac222cc6273d139fd1e8c121333129102977f170dcd0798836d9e1ee190f"),
            "ladder-runs/peteish7_eval_anneal.csv": (
                "src/scripts/paper/data/ladder-runs/peteish7_eval_anneal.csv",
                "0742d6c113aa0f9c789cf9e5745678fc6f30eb9b873a1f98068fc6f6522c85df"),
            "ladder-runs/peteish13_eval_final.csv": (
                "src/scripts/paper/data/ladder-runs/peteish13_eval_final.csv",
                "8cbdd4c2818b05ff30476a9bd4ecae620da89193ca61183bc2d61e111a9d0059"),
            **{f"ladder-runs/{s}-{b}.csv": (f"src/scripts/paper/data/ladder-runs/{s}-{b}.csv", h)
               for (s, b), h in {
                   ("190M", "1xC"): "8ac0066547d5edec4d05d2b861a26c7faf591eef6971e11acba2450a45e69c27",
                   ("190M", "2xC"): "db90c75f8d031d0754e7108f1a8d16f372603e0c04d2cb00cca08cf272ecf86a",
                   ("190M", "5xC"): "aefe54fa03bd158d6da178b1eb2ece88cb0681bb32403845b6e544ae9e4e5dcf",
                   ("190M", "10xC"): "192b115c3f02b6503043280f8303c59f5b10897cd631f1b8ec6aea944d22faa6",
                   ("370M", "1xC"): "3597a61872596affbb61e83f36c7cc3fe43485c3ed30ba6d658064b57edcea07",
                   ("370M", "2xC"): "73c686e580ad0600ca12334bf22ab3dad3265583a948e3beaae5b79b9a20c137",
                   ("370M", "5xC"): "199905d322b0332b69f1d0a40de9be43e5eb3cf576fc1d3031578cdea09708fa",
                   ("370M", "10xC"): "3f25b4ec4035caeb71b787d165857667779dc3b92739c6379b8f8ce7079fcb58",
                   ("760M", "1xC"): "a830185275c91cc077379540ec91a71b4bea6f191ca99a8090c851be19e7956d",
                   ("760M", "2xC"): "8c1ad2bf7da390b9eed24af7b6eb12a6393cc077164d51b4e4740f7221f1193c",
                   ("760M", "5xC"): "9c08b58d2625f427253bbd2079bad3a90726a66486154dd4f82ef84560e275ec",
                   ("760M", "10xC"): "e256c9df6d3b7af66bbcf4dc7ca84b45a812bd205b70648ca5177c8b74f6ff40",
                   ("1B", "1xC"): "7fe91f0552829238e591e55c03f66b743ac5931388d9710457a845d92c2d9102",
                   ("1B", "2xC"): "34ba12a08a52e10e89a71d88a5c13538c3df21e5e993c476cadb08eb4b2eb354",
                   ("1B", "5xC"): "d195153f05b846f6d4f8ca95247d1f79d9d00e898d856b244b17e20431539ddb",
                   ("1B", "10xC"): "ec7e7487c67a774d9b919ec35121966ded7ae2ce5ede135f1d32f509f451476f",
               }.items()},
        },
    },
}


def fetch(name: str, dest: str | os.PathLike) -> list[Path]:
    """Download a published data set from its pinned public source and check every file's sha256.

    Only for users with internet access; the files land under ``dest`` in the layout the loaders read.
    A file whose sha256 differs from the pinned one is deleted and an error raised.
    """
    import urllib.request

    if name not in DATASETS:
        raise UsageError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    spec = DATASETS[name]
    out: list[Path] = []
    for rel, (src, sha) in spec["files"].items():
        target = Path(dest) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(spec["base"] + src, timeout=60) as r:  # noqa: S310 (pinned https URL)
            data = r.read()
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise InputError(f"{name}: {rel} has sha256 {got}, expected {sha}; not written")
        atomic_write_bytes(target, data)
        out.append(target)
    return out
