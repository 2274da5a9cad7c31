"""Emergence diagnostics: is a sharp jump in a benchmark curve real, or made by the metric?

Implements the report of ``docs/emergence.md`` §9 (the capscale specification) for one task x model
family, from per-item, per-choice log-likelihoods (a score store, via :func:`capscale.analysis.chain.compute`)
or from aggregate scores only (a ladder table such as Pythia's eval JSONs).

Public API
----------
:func:`from_items` / :func:`from_arrays` / :func:`from_ladder`
    Build a :class:`TaskInput` (applies the guards of §9.8).
:func:`analyse`
    The report dict (JSON schema §9.7) with the verdict (``METRIC_INDUCED``,
    ``GENUINE_TRANSITION_CANDIDATE``, ``SMOOTH``, ``INVERSE_OR_NONMONOTONE``, ``INSUFFICIENT_DATA``)
    and its ``reasons``.
:func:`scan` / :func:`apply_fdr`
    Many tasks with Benjamini–Hochberg control of the per-task "D sharp" tests.
:func:`verdict_table`
    One row per report.
:func:`to_shape`
    A metric's curves in its shape space (chance-normalised, log-NLL, ...), as the fits see them.
:mod:`~capscale.analysis.emergence.stats`, :mod:`~capscale.analysis.emergence.fits`
    The statistics (breakthroughness, linearity, jump shares, Kendall τ with exact p, BH) and the
    parametric fits, vectorised over bootstrap replicates.

Reading inputs from files and writing the reports, the verdict table and the figures to a folder (what
``capscale emergence`` does) is :mod:`capscale.pipelines.emergence`; the figures are
:func:`capscale.plotting.emergence.plot_report`.

Example
-------
>>> import numpy as np
>>> from capscale.analysis import emergence as em
>>> N = np.logspace(8, 11.5, 8); p = np.exp(-(N / 1e9) ** -0.6)
>>> round(em.stats.breakthroughness(p**10) / 7, 2), round(em.stats.breakthroughness(-10 * (1 - p)) / 7, 2)
(1.4, 1.16)

Where this implementation deviates from emergence.md §9, and why
------------------------------------------------------------------
* **Crossing points (§9.4-G) use the per-item ``margin``** (ℓ_gold − max_{c≠gold} ℓ_c), not
  ``choice_logodds``: accuracy is exactly 1[margin > 0], whereas for K > 2 choices logodds > 0 is only
  sufficient, so the implied accuracy from logodds would be biased low. The two coincide for K = 2.
  ``choice_logodds`` is used when margin is unavailable.
* **The continuous metric K of the decision** is ``choice_logodds`` when per-choice data exist; ``logp_vocab``
  (in log-NLL space) is reported beside it but decides only when ``choice_logodds`` is absent (e.g. a ladder
  with a perplexity). Optional PassUntil β₂ is reported (``passuntil.beta2_ci``, ``accelerated``) but is not
  part of the decision (the spec makes it optional).
* **Verdict table gaps.** §9.5 does not say what happens when D is sharp, K is smooth and the crossing-point
  accuracy leaves the band; this gives ``GENUINE_TRANSITION_CANDIDATE`` (thresholding a smooth latent does not
  explain D). When D is sharp and no continuous metric exists (accuracy-only ladders) the verdict is
  ``INSUFFICIENT_DATA`` with that reason. Check order: input problems / n < 5 → nonmonotone
  (τ < 0 or a significant drop in D or K) → J_ex CI width > 0.5 → effect-size floor → D sharp? → models on each
  side → K → crossing.
* **Effect-size floor (not in §9.5).** Criteria 1(a)-(c) are significance tests; with hundreds of items they
  fire on mild S shapes (a planted gradual rise, 400 items: J_ex = 0.028 with its CI above 0, step 6.7 SE, was
  called ``METRIC_INDUCED``), and on curves that rise early and level off. D counts as sharp only when its
  largest adjacent step passes three size conditions (``decision["effect_size"]`` holds the numbers;
  otherwise the verdict is ``SMOOTH``):

  - ``J_ex >= min_jex`` (0.10): the step holds at least 10 % more of the total change than an even spread
    over log compute would;
  - ``excess_step_z >= min_step_z`` (3.5): the step minus the even-rise step, Δy_i − (y_n − y_1)·Δx_i/(x_n −
    x_1), is at least 3.5 bootstrap SDs of Δy_i. This scales with the item count: with 50 items a noisy even
    rise often has one step twice the others (J_ex 0.1-0.3), which is noise, not a jump;
  - ``pre_slope_ratio <= max_pre_ratio`` (0.6): the mean slope from the smallest model to the start of the
    step is at most 0.6 x the step's slope, i.e. the jump follows a slower phase. Saturating curves are
    steepest at their start (ratio near or above 1); emergence is a slow phase followed by a rise. A jump at
    the first step has no "before" and goes on to the models-on-each-side guard.

  The defaults were chosen on a development run of the planted classes (seeds disjoint from the committed
  calibration run) and then checked once by ``capscale bench emergence-calibration``
  (results/emergence/calibration/README.txt says where the targets are met and where not).
* **Kink materiality (step 2).** A broken line preferred by ΔAICc fails "K smooth" only if its slope changes
  by at least ``min_kink_change`` (0.5) of the larger of the two slopes, |d| / max(|b|, |b + d|): with
  thousands of items the continuous metric is so precise that a slight curvature wins the ΔAICc test. A
  smaller change is noted in ``reasons`` and ``decision["kink_slope_change"]``.
* **Crossing-point check (step 3)**: the implied accuracy is mean_i Φ(ŷ_im / (σ̂_i·sqrt(1 − h_m))), with
  h_m the leverage of model m in the per-item line fit; plugging in fitted values without the sqrt(1 − h)
  factor gives Φ(μ/(σ·sqrt(1 + h))), a curve flatter than the truth, which made correctly planted
  thresholding with noisy latents look unexplained. Observed and implied accuracy are compared with the
  paired standard error over items of their difference (floored at 1/n_items); thresholding explains D when
  max_m |observed − implied| ≤ ``crossing_tol`` (4) paired SEs. Reported: ``max_abs_z``, ``paired_se``.
* **Fits** are unweighted; the 4-PL sigmoid (n ≥ 7) is fitted for every metric and reported (descriptive, not in
  the decision); BNSL is not implemented (descriptive only in the spec, n ≥ 9). Bootstrap CIs of x₀ / break points come from grid search (grid step reported).
* **Leave-top-1-out z of K**: §9.5 asks |z| < 2 for "K smooth"; here only z > 2 (an unpredicted *gain*)
  fails smoothness. z < −2 is under-performance (saturation, diminishing returns — e.g. LAMBADA log p on
  Pythia), which is not evidence of a transition; it is reported in ``reasons`` as a note.
* **Extrapolation z** uses the spec's sqrt(SE_obs² + SE_pred²) with both SEs from the same paired bootstrap.
* **p_vocab** appears as the ``passuntil`` block (PU, u, β₂), not as a separate metric block; ``margin`` is used
  only by the crossing-point analysis.
* **BH control**: the per-task p-value of "D sharp" is the bootstrap p of J_ex(D) > 0,
  p = min(1, 2·(#{J_ex_b ≤ 0} + 1)/(B + 1)) (so p < α ⇔ the lower CI bound is above 0); in a scan criterion 1(a)
  additionally needs q ≤ α. Criteria 1(b)/(c) are not p-values and are not adjusted.
* **Aggregate-only input (ladder tables)**: no item pairing is possible, so replicates are independent normals
  from the reported standard errors (conservative for steps). Per-item τ, crossing points, PassUntil, Wilson
  CIs and every continuous metric except ``logp_vocab`` from a perplexity are unavailable and listed under
  ``not_computed``.
* **Seeds**: tied compute is averaged per size and resampled hierarchically (seeds, then items); the seed SD of
  every aggregate is reported per size under ``seed_variance``.
* The loss view (§9.4-H) and plots P8, P9 are not implemented (no ``val_loss`` in the score store); P1–P7 and
  P10 are (:mod:`capscale.plotting.emergence`).
"""

from __future__ import annotations

from capscale.analysis.emergence import fits, stats
from capscale.analysis.emergence.analysis import (
    DEFAULTS,
    VERDICTS,
    analyse,
    bootstrap_weights,
    decide,
    to_shape,
)
from capscale.analysis.emergence.inputs import (
    TaskInput,
    drop_nonfinite_items,
    from_arrays,
    from_items,
    from_ladder,
)
from capscale.analysis.emergence.scan import apply_fdr, scan, verdict_table

__all__ = [
    "DEFAULTS",
    "VERDICTS",
    "TaskInput",
    "analyse",
    "apply_fdr",
    "bootstrap_weights",
    "decide",
    "drop_nonfinite_items",
    "fits",
    "from_arrays",
    "from_items",
    "from_ladder",
    "scan",
    "stats",
    "to_shape",
    "verdict_table",
]
