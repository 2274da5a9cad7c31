"""Scanning many tasks: Benjamini–Hochberg control across them and the verdict table.

Writing the reports to a folder is :func:`capscale.pipelines.emergence.run`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from capscale.analysis.emergence import stats as _st
from capscale.analysis.emergence.analysis import DEFAULTS, analyse, decide
from capscale.analysis.emergence.inputs import TaskInput

__all__ = ["apply_fdr", "scan", "verdict_table"]


#: Settings of the effect-size floor carried from a report's settings into a re-decision.
FLOOR_KEYS = ("min_jex", "min_step_z", "max_pre_ratio")


def apply_fdr(reports: list[dict], alpha: float = 0.05) -> list[dict]:
    """Benjamini–Hochberg over the per-task "D sharp" tests (criterion 1a's J_ex > 0), in place.

    Each report gains ``fdr = {p_sharp, q_sharp, m_tests}``; criterion 1(a) then also requires
    q ≤ α and the verdict is recomputed (criteria 1b/1c are not p-values and are left as they are).
    """
    p = np.array([r.get("decision", {}).get("p_sharp", np.nan) or np.nan for r in reports], dtype=float)
    q = _st.benjamini_hochberg(p)
    m = int(np.isfinite(p).sum())
    for r, pv, qv in zip(reports, p, q):
        floors = {k: v for k, v in (r.get("settings") or {}).items() if k in FLOOR_KEYS}
        cfg = dict(DEFAULTS, alpha=alpha, **floors)
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
         fdr: bool = True, progress: bool = False, keep_curves: bool = False, workers: int = 1,
         min_jex: float = DEFAULTS["min_jex"], min_step_z: float = DEFAULTS["min_step_z"],
         max_pre_ratio: float = DEFAULTS["max_pre_ratio"]) -> list[dict]:
    """Analyse many tasks (same settings, each with its own fixed seed) and apply BH control across them.

    ``workers > 1`` analyses tasks in that many processes; every task has its own generator seeded with
    ``seed``, so the results do not depend on ``workers``.
    """
    from tqdm.auto import tqdm

    items = list(inputs)
    kw = {"B": B, "seed": seed, "alpha": alpha, "min_items": min_items, "keep_curves": keep_curves,
          "min_jex": min_jex, "min_step_z": min_step_z, "max_pre_ratio": max_pre_ratio}
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
