"""Correct vs incorrect probability mass with scale: per-item laws and accuracy predicted from them.

Schaeffer et al. (2024) show that accuracy is hard to predict because it compares the correct
choice with a few specific incorrect ones; they suggest that "scaling laws for incorrect choices
might be achievable" but fit none (``docs/chain.md`` §5). This package fits them.

Quantities (per item, per model; log-likelihoods in nats; x = log10(compute / FLOPs), C = 6·N·D)
------------------------------------------------------------------------------------------------
==================  ==================================================================
``correct``         ℓ_c, log p_vocab of the gold continuation (max over golds)
``incorrect``       ℓ_i for every incorrect choice i ≠ c (one trajectory per choice)
``lse_incorrect``   LSE_{i≠c} ℓ_i, the log of the summed incorrect vocabulary mass
``max_incorrect``   max_{i≠c} ℓ_i, the best-competing incorrect choice
``margin``          ℓ_c − max_{i≠c} ℓ_i (acc = 1[margin > 0])
==================  ==================================================================

Per-item fits
-------------
Every trajectory is fitted against x with a two-coefficient law y = a + b·u_k(x), where
u_k(x) = (1 − exp(−k (x − x_ref)))/k and x_ref is the mean log10 compute of the training models:

* ``linear``: k = 0, u = x − x_ref (y is linear in log compute);
* ``saturating``: k > 0 (per decade), y approaches the asymptote a + b/k as compute grows (upwards
  when b > 0, downwards when b < 0).

In both forms a is the value and b the slope (nats per decade) at x_ref, so coefficients of items
with different forms are comparable and pooled together. The saturation rate k is shared by all
items of a (task, quantity) group: it minimises the summed residual sum of squares over the group
on a grid (0 … 3 per decade) by profile likelihood. **Form criterion** (per group, since a single
item's 5-10 points cannot tell the forms apart): the saturating form is used when the group has at
least ``min_models_saturating`` (default 5) distinct training computes and its AICc, summed over the
items with per-item residual variances and with k counted as one extra parameter, is lower than
the all-linear AICc by more than ``aicc_margin`` (default 2), AICc = Σ_j n_j ln(RSS_j/n_j) + 2P +
2P(P + 1)/(N − P − 1) (P = 3 per item (a, b, σ), + 1 for k; N = all points; the penalty is
:func:`capscale.analysis._stats.aicc_penalty`, and where it is undefined, N − P − 1 < 1, the group stays
linear). Items with fewer than ``min_points_saturating`` (default 4) distinct computes stay linear.
The per-item least squares are :func:`capscale.analysis._stats.lstsq`.

Partial pooling (empirical Bayes). Within each (task, quantity) group the item coefficients
β_j = (a_j, b_j) are drawn from N(μ, T). μ and the between-item covariance T are estimated by the
method of moments from the per-item least-squares fits (T = Cov(β̂) − mean sampling covariance,
projected to positive definite); residual variances are shrunk toward a pooled value with a scaled
inverse-χ² prior whose degrees of freedom are estimated from the spread of log s² (limma's
moment estimator). The posterior of each item, computed in information form so that items with a
single model or a constant trajectory still get one, is

    P_j = (T⁻¹ + X_j'X_j / s̃_j²)⁻¹,   β̃_j = P_j (T⁻¹ μ + X_j'y_j / s̃_j²).

Accuracy from the masses
------------------------
At a target compute x*, the choices of item j have a joint normal predictive distribution: means
from the posterior laws of ``correct`` and of each ``incorrect`` choice, variances s̃² + u*'P u*
(residual plus parameter uncertainty), and correlations corr(correct, incorrect) and
corr(incorrect, incorrect) estimated per task from the standardised residuals (exchangeable;
never assumed zero). The predicted accuracy (``acc``, the default) is

    acc(x*) = (1/I) Σ_j P(ℓ_c > max_{i≠c} ℓ_i) = (1/I) Σ_j P(margin_j > 0),

by Monte Carlo over that distribution, so the best-competing incorrect choice is whichever wins in
each draw; ``p_choices`` (mean softmax probability of the gold) and ``brier`` (mean over choices, as
``chain.brier``) come from the same draws. Every draw also carries a model-level shift of the gold
shared by all items (its variance estimated from the training models' mean margin residuals,
widened by the leverage of x*), so the 90 % interval (5th-95th percentile of the draws' item means)
covers the realised metric of one held-out model, not only the item noise.

``acc_pair`` is the analytic two-variable version: the correct and the best-competing incorrect
log-likelihood (law fitted to the observed max_{i≠c} ℓ_i) are bivariate normal with correlation ρ_j
of the two laws' residuals (per item, shrunk toward the task's pooled value on the Fisher-z scale),
and acc = (1/I) Σ_j Φ(E[margin_j]/SD[margin_j]) with Var[margin] = v_c + v_m − 2ρ_j √(v_c v_m).
A maximum of diverging lines is convex in x, so a linear law for max_{i≠c} ℓ_i under-predicts the
best competitor when extrapolating; on simulated stores ``acc_pair`` over-predicts by 2-3 points
where ``acc`` is unbiased, hence the default.

Bad input: items observed by a single model, constant trajectories and non-finite (−inf)
log-likelihoods are handled and counted (``TaskFit.counts``), never dropped silently. Tasks marked
``multiple_input`` (Winogrande style, where ℓ_i are conditionals of the same suffix under different
contexts) are flagged in every output so that they are reported separately.

Modules
-------
* ``_model``: trajectories, the per-row fits with empirical-Bayes pooling, :class:`MassConfig`,
  :class:`GroupFit`, :class:`TaskFit`, :func:`fit`, :func:`fit_task`, :func:`basis`;
* ``_predict``: accuracy / p_choices / Brier from the laws, :class:`MetricPrediction`,
  :func:`predict_items`, :func:`predict_task`;
* ``_tables``: :func:`fits_table`, :func:`covariation`, :func:`covariation_table`.

Figures are in :mod:`capscale.plotting.mass`; a store with planted laws is
:func:`capscale.testing.simulate_store`.

Examples
--------
>>> from capscale.analysis import mass
>>> from capscale.testing import simulate_store
>>> sim = simulate_store(n_items=200, seed=0)
>>> fits = mass.fit(sim[sim["model_id"] != "sim-m6"])
>>> pred = mass.predict_task(fits["sim"], 22.0)
>>> 0.0 <= pred["acc"].value <= 1.0
True
"""

from capscale.analysis.mass._model import (
    QUANTITIES,
    GroupFit,
    MassConfig,
    TaskFit,
    basis,
    fit,
    fit_task,
    trajectories,
)
from capscale.analysis.mass._predict import (
    METRIC_ALIASES,
    SUPPORTED_METRICS,
    MetricPrediction,
    predict_items,
    predict_task,
)
from capscale.analysis.mass._tables import covariation, covariation_table, fits_table

__all__ = [
    "MassConfig",
    "GroupFit",
    "TaskFit",
    "MetricPrediction",
    "QUANTITIES",
    "SUPPORTED_METRICS",
    "METRIC_ALIASES",
    "basis",
    "trajectories",
    "fit",
    "fit_task",
    "predict_task",
    "predict_items",
    "fits_table",
    "covariation",
    "covariation_table",
]
