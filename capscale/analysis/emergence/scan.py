"""Scanning many tasks: Benjamini–Hochberg control, JSON output and the verdict table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from capscale.analysis.emergence import stats as _st
from capscale.analysis.emergence.analysis import DEFAULTS, analyse, decide
from capscale.analysis.emergence.inputs import TaskInput

__all__ = ["apply_fdr", "scan", "to_jsonable", "write_json", "verdict_table", "safe_name", "run_emergence"]


def to_jsonable(obj):
    """Recursively convert numpy types; ±inf become the strings "inf"/"-inf", NaN becomes null (§9.7)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    return obj


def safe_name(task: str) -> str:
    """A file-system-safe file stem for a task name."""
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in task)


def write_json(report: dict, path: str | os.PathLike) -> Path:
    """Atomically write a report as strict JSON (no NaN/Infinity literals)."""
    from capscale._io import atomic_write_text

    return atomic_write_text(path, json.dumps(to_jsonable(report), indent=1, allow_nan=False) + "\n")


def apply_fdr(reports: list[dict], alpha: float = 0.05) -> list[dict]:
    """Benjamini–Hochberg over the per-task "D sharp" tests (criterion 1a's J_ex > 0), in place.

    Each report gains ``fdr = {p_sharp, q_sharp, m_tests}``; criterion 1(a) then also requires
    q ≤ α and the verdict is recomputed (criteria 1b/1c are not p-values and are left as they are).
    """
    p = np.array([r.get("decision", {}).get("p_sharp", np.nan) or np.nan for r in reports], dtype=float)
    q = _st.benjamini_hochberg(p)
    m = int(np.isfinite(p).sum())
    cfg = dict(DEFAULTS, alpha=alpha)
    for r, pv, qv in zip(reports, p, q):
        r["fdr"] = {"p_sharp": None if np.isnan(pv) else float(pv), "q_sharp": None if np.isnan(qv) else float(qv),
                    "m_tests": m, "alpha": alpha}
        if np.isnan(qv) or not r.get("metrics"):
            continue
        before = r["verdict"]
        v, reasons, comp = decide(r, cfg, sharp_a_override=bool(qv <= alpha))
        if v != before:
            reasons = reasons + [f"verdict before BH control was {before}; criterion 1a needs q = {qv:.3g} <= {alpha}"]
        r["verdict"], r["reasons"] = v, reasons
        r["decision"].update(comp)
    return reports


def _analyse_one(args: tuple) -> dict:
    ti, kw = args
    return analyse(ti, **kw)


def scan(inputs: Iterable[TaskInput], *, B: int = 2000, seed: int = 0, alpha: float = 0.05, min_items: int = 20,
         fdr: bool = True, progress: bool = False, keep_curves: bool = False, workers: int = 1) -> list[dict]:
    """Analyse many tasks (same settings, each with its own fixed seed) and apply BH control across them.

    ``workers > 1`` analyses tasks in that many processes; every task has its own generator seeded with
    ``seed``, so the results do not depend on ``workers``.
    """
    from tqdm.auto import tqdm

    items = list(inputs)
    kw = {"B": B, "seed": seed, "alpha": alpha, "min_items": min_items, "keep_curves": keep_curves}
    if workers > 1 and len(items) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as ex:
            out = list(tqdm(ex.map(_analyse_one, [(ti, kw) for ti in items], chunksize=1), total=len(items),
                            disable=not progress, desc="emergence"))
    else:
        out = [analyse(ti, **kw) for ti in tqdm(items, disable=not progress, desc="emergence")]
    if fdr and len(out) > 1:
        apply_fdr(out, alpha)
    return out


def verdict_table(reports: list[dict]) -> pd.DataFrame:
    """One row per report: task, family, n, verdict, the D/K metrics and the headline statistics."""
    rows = []
    for r in reports:
        D, K = r.get("decision_metric"), r.get("continuous_metric")
        d = r.get("metrics", {}).get(D, {}) if D else {}
        k = r.get("metrics", {}).get(K, {}) if K else {}
        fd = r.get("fdr") or {}
        da = (d.get("fits") or {}).get("dAICc", {})
        rows.append({
            "task": r["task"], "family": r["family"], "n_models": r["n_models"], "n_items": r.get("n_items"),
            "verdict": r["verdict"], "D": D, "K": K,
            "D_first": (d.get("y") or [None])[0], "D_last": (d.get("y") or [None])[-1],
            "tau_D": d.get("tau_model"), "tau_p_D": d.get("tau_p"), "B_norm_D": d.get("B_norm"),
            "J_ex_D": d.get("J_ex"), "J_ex_lo": (d.get("J_ex_ci") or [None, None])[0],
            "J_ex_hi": (d.get("J_ex_ci") or [None, None])[1],
            "dAICc_sig_lin": da.get("sigmoid2_minus_linear"), "dAICc_hinge_lin": da.get("hinge2_minus_linear"),
            "z_top1_D": ((d.get("extrapolation") or {}).get("z") or [None])[0],
            "kink_dAICc_K": ((k.get("fits") or {}).get("dAICc") or {}).get("broken_minus_quadratic"),
            "z_top1_K": ((k.get("extrapolation") or {}).get("z") or [None])[0],
            "p_sharp": fd.get("p_sharp"), "q_sharp": fd.get("q_sharp"),
            "reasons": " | ".join(map(str, r.get("reasons") or [])),
        })
    return pd.DataFrame(rows)


def run_emergence(store_df: pd.DataFrame, out: str | os.PathLike, *, family: str | None = None,
                  tasks: list[str] | None = None, B: int = 2000, seed: int = 0, alpha: float = 0.05,
                  steps: str = "final", min_items: int = 20, figures: bool = True, progress: bool = False,
                  workers: int = 1) -> dict:
    """Score store in, emergence reports out: the Python equivalent of ``capscale emergence STORE --all-tasks``.

    Parameters
    ----------
    store_df : DataFrame
        A score store (per-choice log-likelihoods in nats; see :mod:`capscale.data.store`).
    out : path-like
        Output folder: ``<task>.json`` per task (``<family>/<task>.json`` when the store holds several
        families), ``verdicts.csv`` and ``figures/``.
    family, tasks : optional
        Restrict to one family / these tasks (default: all).
    steps : {"final", "all"}
        ``final`` keeps the checkpoint with the most tokens per size (run); ``all`` uses every checkpoint.

    Returns
    -------
    dict with ``summary`` (verdict per family/task), ``out`` and ``files``.
    """
    from capscale.analysis import chain
    from capscale.analysis.emergence.inputs import drop_nonfinite_items, final_checkpoints, from_items

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = store_df
    if family is not None:
        df = df[df["family"].astype(str) == family]
    if tasks is not None:
        df = df[df["task"].isin(tasks)]
    if df.empty:
        raise ValueError(f"no rows for family {family!r} and tasks {tasks!r}")
    notes = []
    if steps == "final":
        df, note = final_checkpoints(df)
        if note:
            notes.append(note)
    elif steps != "all":
        raise ValueError(f"steps must be 'final' or 'all', got {steps!r}")
    df, dropped = drop_nonfinite_items(df)
    items = chain.compute(df)
    fams = sorted(items["family"].astype(str).unique())
    files: list[str] = []
    summary: dict = {}
    all_reports = []
    for fam in fams:
        sub = items[items["family"].astype(str) == fam]
        inputs = []
        for t in sorted(sub["task"].astype(str).unique()):
            ti = from_items(sub, t, fam)
            if dropped.get(t):
                ti.exclusions["items_nonfinite_loglik"] = dropped[t]
                ti.guards.append(f"{dropped[t]} item(s) with a NaN/inf loglik were excluded for every model")
            ti.guards.extend(notes)
            inputs.append(ti)
        reports = scan(inputs, B=B, seed=seed, alpha=alpha, min_items=min_items, progress=progress,
                       keep_curves=figures, workers=workers)
        d = out if len(fams) == 1 else out / safe_name(fam)
        for r in reports:
            r["command"] = (f"capscale.analysis.emergence.run_emergence(store, {str(out)!r}, B={B}, seed={seed}, "
                            f"alpha={alpha}, steps={steps!r})")
            files.append(str(write_json(r, d / f"{safe_name(r['task'])}.json")))
            if figures:
                from capscale.plotting.emergence import plot_report

                files += [str(p) for p in plot_report(r, d / "figures")]
            summary[f"{fam}/{r['task']}" if len(fams) > 1 else r["task"]] = r["verdict"]
        all_reports += reports
    table = verdict_table(all_reports)
    tmp = out / ".verdicts.csv.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, out / "verdicts.csv")
    files.append(str(out / "verdicts.csv"))
    return {"summary": summary, "out": str(out), "files": files}
