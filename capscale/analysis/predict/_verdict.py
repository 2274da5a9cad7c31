"""A predictability verdict per task, from the fitting data alone (after Lourie et al. 2025).

Before extrapolating, ask whether the ladder shows a trend worth extrapolating. :func:`predictability` looks only
at the training runs' final values of one task (never at the target) and returns one of:

================  ================================================================================================
``at_chance``     the largest fitting size is at chance: its distance from chance, either way, is below
                  max(z·SE, ``min_excess``·(1 − chance)) (SE of that size's mean final value; the floor 0.05 of the
                  headroom is an effect-size floor, as in the emergence stage: a benchmark of thousands of items
                  makes 1 point "significant"). A size scoring *below* chance by more than that (a label-imbalanced
                  two-way task, a metric whose chance level is lower than the table says) is not at chance: the
                  observed level, not chance, is what to extrapolate, and the checks below apply
``inverse``       the trend in log10 C is negative and significant (slope < −z·SE of the slope)
``noisy``         the fitted rise over the ladder's compute range is smaller than 2 scatter SDs (the residual
                  scatter around the line, or the measurement SE where larger)
``non_monotone``  sizes out of order: Spearman correlation of the per-size means with size below 0.6
``predictable``   none of the above
================  ================================================================================================

The statistics behind the verdict are kept in :attr:`Verdict.stats` (points are accuracy fractions). Rules and
thresholds are fixed here in advance and are the same for every ladder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from capscale.analysis.predict._runs import auto_window, extract_runs, final_value

__all__ = ["VERDICTS", "Verdict", "predictability"]

#: The verdicts, "predictable" first.
VERDICTS = ("predictable", "at_chance", "noisy", "non_monotone", "inverse")
#: One-sided z of the tests (95 %).
Z = NormalDist().inv_cdf(0.95)
#: Effect-size floor of ``at_chance``: excess over chance below this share of the headroom (1 − chance).
MIN_EXCESS = 0.05
#: Spearman correlation of per-size means with size below which the sizes are out of order.
MIN_RHO = 0.6


@dataclass
class Verdict:
    """The predictability of one task on a training ladder.

    Attributes
    ----------
    task, metric : str
        What was judged.
    verdict : str
        One of :data:`VERDICTS`.
    reason : str
        One sentence with the numbers behind the verdict.
    stats : dict
        ``n_runs``, ``n_sizes``, ``chance``, ``top_mean`` (mean final value of the largest size), ``excess`` (over
        chance), ``se_top``, ``slope_per_decade`` and ``slope_se`` (of final value on log10 C), ``rise`` (slope x
        the ladder's log10 compute range), ``scatter`` (residual SD, or the measurement SE where larger),
        ``spearman`` (per-size means vs size), ``below_chance`` (the largest size is significantly below chance);
        fractions of the metric.
    """

    task: str
    metric: str
    verdict: str
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def predictable(self) -> bool:
        """True for ``predictable``."""
        return self.verdict == "predictable"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: task, metric, verdict, reason and the statistics."""
        return {"task": self.task, "metric": self.metric, "verdict": self.verdict, "reason": self.reason,
                **{k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in self.stats.items()}}


def _measurement_se(ladder: pd.DataFrame, task: str, metric: str, v: float) -> float:
    """SE of one final value: binomial at ``n_items``, else the median ``stderr`` column, else NaN."""
    sub = ladder[(ladder["task"] == task) & (ladder["metric"] == metric)]
    if "n_items" in sub.columns:
        n = pd.to_numeric(sub["n_items"], errors="coerce").dropna()
        n = n[n > 0]
        if len(n):
            q = min(max(v, 0.01), 0.99)
            return math.sqrt(q * (1 - q) / float(n.median()))
    if "stderr" in sub.columns:
        s = pd.to_numeric(sub["stderr"], errors="coerce").dropna()
        s = s[s > 0]
        if len(s):
            return float(s.median())
    return float("nan")


def _late_scatter(runs: list) -> float:
    """Pooled SD of each run's late checkpoints (past half its tokens, at least 3) around a line in log tokens."""
    ss, dof = 0.0, 0
    for r in runs:
        keep = r.tokens >= 0.5 * r.tokens[-1]
        if keep.sum() < 3 or np.ptp(np.log(r.tokens[keep])) == 0:
            continue
        lx, y = np.log(r.tokens[keep]), r.y[keep]
        coef = np.polyfit(lx, y, 1)
        ss += float(np.sum((y - np.polyval(coef, lx)) ** 2))
        dof += len(y) - 2
    return math.sqrt(ss / dof) if dof else float("nan")


def predictability(ladder: pd.DataFrame, task: str, metric: str, chance: float) -> Verdict:
    """The predictability verdict of ``task`` on a (training) ladder; see the module docstring for the rules.

    Parameters
    ----------
    ladder : pandas.DataFrame
        The fitting ladder only (never the target's rows).
    task, metric : str
        What is predicted (an accuracy: a fraction in [0, 1]).
    chance : float
        The task's chance accuracy (:func:`capscale.data.ladder_table.chance_of`).

    Returns
    -------
    Verdict
    """
    runs = extract_runs(ladder, task, metric, None)
    w = auto_window(runs)
    one_n = len({r.params for r in runs}) == 1
    size = np.array([r.params * r.tokens[-1] if one_n else r.params for r in runs])
    c = np.array([6.0 * r.params * r.tokens[-1] for r in runs])
    y = np.array([final_value(r.y, w) for r in runs])
    sizes = np.unique(size)
    means = np.array([y[size == s].mean() for s in sizes])
    top = size == sizes[-1]
    top_mean = float(y[top].mean())
    se_meas = _measurement_se(ladder, task, metric, top_mean)
    late = _late_scatter(runs)
    x = np.log10(c)
    stats: dict[str, Any] = {"n_runs": len(runs), "n_sizes": len(sizes), "chance": float(chance),
                             "top_mean": top_mean, "excess": top_mean - chance}
    resid_sd = float("nan")
    slope = slope_se = float("nan")
    if len(runs) >= 3 and np.ptp(x) > 0:
        coef, cov = np.polyfit(x, y, 1, cov=True) if len(runs) >= 4 else (np.polyfit(x, y, 1), None)
        slope = float(coef[0])
        res = y - np.polyval(coef, x)
        resid_sd = float(np.sqrt(np.sum(res**2) / max(len(y) - 2, 1)))
        slope_se = float(math.sqrt(cov[0, 0])) if cov is not None else float("nan")
    elif len(runs) == 2 and np.ptp(x) > 0:
        slope = float((y[np.argmax(x)] - y[np.argmin(x)]) / np.ptp(x))
    noise = [v for v in (se_meas, late) if math.isfinite(v)]
    sd_one = max(noise) if noise else (resid_sd if math.isfinite(resid_sd) else 0.0)
    se_top = sd_one / math.sqrt(int(top.sum()))
    scatter = max([v for v in (resid_sd, sd_one) if math.isfinite(v)], default=0.0)
    rise = slope * float(np.ptp(x)) if math.isfinite(slope) else float("nan")
    rho = float(pd.Series(means).corr(pd.Series(np.arange(len(means))), method="spearman")) if len(means) >= 3 \
        else float("nan")
    stats.update({"se_top": se_top, "slope_per_decade": slope, "slope_se": slope_se, "rise": rise,
                  "scatter": scatter, "spearman": rho})
    need = max(Z * se_top, MIN_EXCESS * (1 - chance))
    pts = 100.0
    stats["below_chance"] = bool(top_mean - chance <= -need)
    if abs(top_mean - chance) < need:
        return Verdict(task, metric, "at_chance",
                       f"largest fitting size scores {top_mean:.3f}, {pts * (top_mean - chance):+.1f} points from chance "
                       f"{chance:.3g}: at chance (a distance from chance needs > {pts * need:.1f} points: max of "
                       f"{Z:.2f} SE = {pts * Z * se_top:.1f} and {MIN_EXCESS:.0%} of the headroom)", stats)
    if math.isfinite(slope_se) and slope < -Z * slope_se:
        return Verdict(task, metric, "inverse", f"accuracy falls with compute: {pts * slope:+.1f} points per decade "
                       f"(SE {pts * slope_se:.1f})", stats)
    if math.isfinite(rise) and rise < 2 * scatter:
        return Verdict(task, metric, "noisy", f"rise over the ladder {pts * rise:+.1f} points is below 2 scatter SDs "
                       f"({pts * 2 * scatter:.1f} points)", stats)
    if math.isfinite(rho) and rho < MIN_RHO:
        return Verdict(task, metric, "non_monotone", f"sizes out of order: Spearman {rho:.2f} of per-size means with "
                       f"size (< {MIN_RHO})", stats)
    return Verdict(task, metric, "predictable", f"{pts * (top_mean - chance):+.1f} points over chance at the largest "
                   f"size, rise {pts * rise:+.1f} points over the ladder against scatter {pts * scatter:.1f}", stats)
