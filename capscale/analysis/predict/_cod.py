"""The ``cod`` method: accuracy predicted from clusters of items of similar difficulty (Clustering-On-Difficulty).

In the spirit of Xu et al. 2025 ("Unveiling downstream performance scaling of LLMs: a clustering-based
perspective"). From the per-choice score store of the training models:

1. **Features.** Every item's trajectory across the training models (sorted by compute C = 6·N·D FLOPs) of
   ``p_choices(correct)`` (softmax probability of the gold over the choices, :mod:`capscale.analysis.chain`;
   ``feature="p_choices"``, the default) or of its accuracy (``feature="acc"``).
2. **Clusters.** k-means (scikit-learn, ``n_init=10``, seeded) on those trajectories: ``n_clusters`` groups of
   items that scale alike.
3. **Cluster laws.** Each cluster's mean accuracy over its items, per training model, is fitted against log10 C:
   by default (``law="logit"``) its empirical logit linearly (:class:`capscale.analysis.laws.LogLinear`, weighted
   by the binomial variance, so acc = σ(a + b·log10 C)); ``law="sigmoid"`` uses the ``sigmoid`` method's law
   (:class:`capscale.analysis.laws.ObsSigmoid`, floor in [0, chance]).
4. **Predictable subset.** A cluster is predictable when its fit is stable under leave-one-model-out: the
   jackknife standard error of its prediction at ``horizon`` decades of compute beyond the largest training model,
   SE = sqrt((M − 1)/M · Σ_m (ŷ₋ₘ − ȳ₋)²) over the M fits that each leave one training model out, is at most
   ``stability`` (accuracy, a fraction); clusters whose fit fails are not predictable either. The subset's
   accuracy is the item-weighted mean of its clusters' laws.
5. **Mapping.** Full-task accuracy as a linear function of the subset's accuracy, fitted by least squares on the
   training models (the identity when every cluster is predictable); the prediction is the mapping of the
   subset's predicted accuracy.

Clusters and the predictable subset are decided once, on all training models; the nominal 90 % interval is the
percentile bootstrap over training models of steps 3 and 5 (as for the ladder methods,
:class:`~capscale.analysis.predict.LadderMethod`), widened in quadrature by the leave-largest-out error of the
whole prediction. The fraction of items that was predictable is in :meth:`CodPredictor.report`
(``predictable_fraction``) and in every prediction's warnings.

Defaults. ``n_clusters=3``, ``stability=1.0`` and ``feature="p_choices"`` were chosen on development data only
(simulated stores, ``results/backtests/cod/dev_grid.py``, by a criterion stated before the run) and frozen before the
confirmation runs: there, every stricter threshold (0.05, 0.1) made the mean error worse (the linear subset -> task
mapping extrapolates badly when the clusters left out still move), so by default only a cluster whose jackknife SE
exceeds 1.0 (a fit that flips between the extremes) or whose fit fails is left out, and the prediction is mostly the
item-weighted mixture of the clusters' laws. ``horizon`` (0.5 decades) and ``law`` (``logit``: closed form, where the
sigmoid's least squares diverge on clusters that step from 0 to 1) were not tuned.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from capscale.analysis import chain as _chain
from capscale.analysis import laws
from capscale.analysis._stats import lstsq
from capscale.analysis.predict._base import MethodNotApplicable, Prediction, check_is_fitted, law_dict
from capscale.analysis.predict._methods import FIT_ERRORS, LadderMethod
from capscale.analysis.predict._runs import Run
from capscale.data.ladder_table import chance_of
from capscale.data.select import final_checkpoints
from capscale.errors import InputError, UsageError

__all__ = ["CodPredictor", "FEATURES", "CLUSTER_LAWS", "ITEM_METRICS", "MIN_MODELS"]

#: Trajectory features items are clustered on, and the :func:`capscale.analysis.chain.compute` column of each.
FEATURES = {"p_choices": "p_choices_correct", "acc": "acc"}
#: Laws of a cluster's accuracy against log10 C: ``logit``, an empirical-logit line (closed form, see
#: :class:`_ClusterLaw`); ``sigmoid``, the ``sigmoid`` method's law (least squares; slow where a cluster steps from 0
#: to 1 between two models, as its slope then grows without bound).
CLUSTER_LAWS = ("logit", "sigmoid")
#: Accuracy metrics ``cod`` predicts (each a per-item column of :func:`capscale.analysis.chain.compute`).
ITEM_METRICS = ("acc", "acc_norm", "acc_bytes")
#: Fewest training models (distinct computes): each leave-one-model-out refit of a cluster's law is fitted on 3 or more.
MIN_MODELS = 4


class CodPredictor(LadderMethod):
    """Predictor ``cod``: accuracy from difficulty clusters of items (see the module docstring).

    Parameters
    ----------
    n_clusters : int
        Clusters of items (k of k-means).
    feature : {"p_choices", "acc"}
        The per-item trajectory clustered on (:data:`FEATURES`).
    law : {"logit", "sigmoid"}
        Each cluster's law of accuracy in log10 C (:data:`CLUSTER_LAWS`).
    stability : float
        Largest leave-one-model-out (jackknife) standard error, in accuracy (a fraction), of a cluster's prediction
        at ``horizon`` for the cluster to count as predictable.
    horizon : float
        Decades of compute beyond the largest training model at which stability is judged.
    min_cluster_items : int
        The task needs at least ``n_clusters * min_cluster_items`` items.
    checkpoints : {"final", "all"}
        ``"final"``: the final checkpoint of each ladder run (:func:`capscale.data.select.final_checkpoints`,
        ``by="auto"``: one per model size when every checkpoint is its own run), as ``mass``; ``"all"``: every
        checkpoint is a training model.
    bootstrap, seed, level, inflate, chance, widen
        As for :class:`~capscale.analysis.predict.LadderMethod` (``seed`` also seeds k-means).

    Attributes
    ----------
    clusters_ : pandas.DataFrame
        One row per cluster: ``cluster``, ``n_items``, ``predictable``, ``jackknife_se`` (at the horizon),
        ``pred_horizon`` (the full fit's accuracy there), ``acc_first``/``acc_last`` (the cluster's accuracy at the
        smallest and largest training model) and ``why`` (empty, or why it is not predictable).
    labels_ : pandas.Series
        Cluster of every item, indexed by ``doc_id``.
    predictable_fraction_ : float
        Share of the task's items in predictable clusters.
    mapping_ : (float, float)
        Intercept and slope of full-task accuracy on the predictable subset's accuracy (training models).
    models_ : pandas.DataFrame
        The training models (``model_id``, ``params``, ``tokens``, ``compute``), by compute.
    """

    name = "cod"
    needs_store = True
    #: One point per training model: its own value (no smoothing window over checkpoints).
    final_window: ClassVar[int] = 1
    x_task: ClassVar[str | None] = None
    x_metric: ClassVar[str | None] = None

    def __init__(self, *, n_clusters: int = 3, feature: str = "p_choices", law: str = "logit", stability: float = 1.0,
                 horizon: float = 0.5, min_cluster_items: int = 5, checkpoints: str = "final",
                 bootstrap: int = 100, seed: int = 0, level: float = 0.9, inflate: bool = True,
                 chance: float | None = None, widen: float = 1.0):
        self.n_clusters = n_clusters
        self.feature = feature
        self.law = law
        self.stability = stability
        self.horizon = horizon
        self.min_cluster_items = min_cluster_items
        self.checkpoints = checkpoints
        self.bootstrap = bootstrap
        self.seed = seed
        self.level = level
        self.inflate = inflate
        self.chance = chance
        self.widen = widen

    # -- fitting ------------------------------------------------------------------------------------------------

    def _check_options(self) -> None:
        if self.feature not in FEATURES:
            raise UsageError(f"cod: feature must be one of {sorted(FEATURES)}, not {self.feature!r}")
        if self.law not in CLUSTER_LAWS:
            raise UsageError(f"cod: law must be one of {list(CLUSTER_LAWS)}, not {self.law!r}")
        if self.checkpoints not in ("final", "all"):
            raise UsageError(f"cod: checkpoints must be 'final' or 'all', not {self.checkpoints!r}")
        if not (isinstance(self.n_clusters, int | np.integer) and self.n_clusters >= 1):
            raise UsageError(f"cod: n_clusters must be a positive integer, not {self.n_clusters!r}")
        if not (isinstance(self.min_cluster_items, int | np.integer) and self.min_cluster_items >= 1):
            raise UsageError(f"cod: min_cluster_items must be a positive integer, not {self.min_cluster_items!r}")
        for name in ("stability", "horizon"):
            v = getattr(self, name)
            if not (isinstance(v, int | float | np.floating) and math.isfinite(v) and v >= 0):
                raise UsageError(f"cod: {name} must be a finite number >= 0, not {v!r}")

    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> CodPredictor:
        """Cluster the items of ``task``, fit the clusters' laws and the mapping; returns ``self``.

        Parameters
        ----------
        ladder : pandas.DataFrame
            The training models' ladder table; its ``model_id`` column selects the store rows used.
        task : str
            The task.
        metric : str
            ``acc`` (default), ``acc_norm`` or ``acc_bytes`` (:data:`ITEM_METRICS`).
        store : pandas.DataFrame
            Per-choice score-store rows (required).

        Raises
        ------
        MethodNotApplicable
            No ``store``.
        capscale.errors.UsageError
            An invalid option.
        capscale.errors.InputError
            An unsupported metric; no store rows of ``task``; several families; fewer than :data:`MIN_MODELS`
            training models; fewer than ``n_clusters * min_cluster_items`` items scored by every training model.
        """
        self._check_options()
        if store is None:
            raise MethodNotApplicable("the 'cod' method needs the per-choice score store of the training models "
                                      "(store=...): it clusters items by their trajectories, which an aggregate "
                                      "ladder table does not contain")
        if metric not in ITEM_METRICS:
            raise InputError(f"the 'cod' method predicts per-item accuracies {list(ITEM_METRICS)}, not {metric!r}")
        s = store[store["task"].astype(str) == str(task)]
        if s.empty:
            tasks = sorted(store["task"].astype(str).unique())
            raise InputError(f"cod: task {task!r} has no rows in the store (tasks: {tasks[:20]})")
        lt = ladder[(ladder["task"].astype(str) == str(task)) & (ladder["metric"] == metric)]
        if lt.empty:
            raise InputError(f"cod: the ladder has no rows of task {task!r} and metric {metric!r}")
        if self.checkpoints == "final":
            lt = final_checkpoints(lt, by="auto")
        keep = set(lt["model_id"].astype(str))
        s = s[s["model_id"].astype(str).isin(keep)]
        if s.empty:
            raise InputError(f"cod: none of the ladder's models {sorted(keep)[:5]} has rows of task {task!r} in the "
                             "store")
        if "family" in s and s["family"].nunique() > 1:
            raise InputError(f"cod: store rows of task {task!r} span several families "
                             f"{sorted(s['family'].astype(str).unique())}; filter the store first")
        items = _chain.compute(s)
        col, fcol = metric, FEATURES[self.feature]
        if items[col].isna().all():
            raise InputError(f"cod: task {task!r}: the store has no per-item {metric!r} (it needs "
                             f"{_chain.METRIC_INPUTS.get(metric, 'loglik')})")
        models = (items[["model_id", "params", "tokens", "compute"]].drop_duplicates("model_id")
                  .sort_values(["compute", "model_id"], kind="stable").reset_index(drop=True))
        n_x = models["compute"].nunique()
        if n_x < MIN_MODELS:
            raise InputError(f"cod: task {task!r}: needs at least {MIN_MODELS} training models of distinct compute "
                             f"(each leave-one-model-out refit of a cluster's law needs 3), got {n_x} "
                             f"({len(models)} model(s): {models['model_id'].astype(str).tolist()[:10]})")
        mids = models["model_id"].tolist()
        A = items.pivot(index="doc_id", columns="model_id", values=col).reindex(columns=mids)
        F = items.pivot(index="doc_id", columns="model_id", values=fcol).reindex(columns=mids)
        common = A.notna().all(axis=1) & F.notna().all(axis=1)
        n_all = len(A)
        A, F = A[common], F[common]
        need = int(self.n_clusters) * int(self.min_cluster_items)
        if len(A) < need:
            raise InputError(f"cod: task {task!r} has {len(A)} item(s) scored by every training model (of {n_all}); "
                             f"{self.n_clusters} clusters need at least {need} ({self.min_cluster_items} per cluster): "
                             "lower n_clusters")
        labels = self._cluster(F.to_numpy(float))
        self.labels_ = pd.Series(labels, index=A.index, name="cluster")
        self.models_ = models
        self.task_items_ = int(len(A))
        self.items_excluded_ = int(n_all - len(A))
        Av = A.to_numpy(float)
        ks = np.unique(labels)
        # per-model aggregates: cluster mean accuracy (K, M) and the full task's mean accuracy (M,)
        self.agg_ = np.vstack([Av[labels == k].mean(0) for k in ks])
        self.n_items_c_ = np.array([int((labels == k).sum()) for k in ks])
        self.full_ = Av.mean(0)
        self.logc_ = np.log10(models["compute"].to_numpy(float))
        self.pos_ = {str(m): i for i, m in enumerate(mids)}
        # the ladder the LadderMethod machinery sees: one run per training model, its value the store's mean
        lad = lt[lt["model_id"].astype(str).isin(set(map(str, mids)))].copy()
        lad["run"] = lad["model_id"].astype(str)
        lad["value"] = lad["model_id"].astype(str).map(dict(zip(map(str, mids), self.full_, strict=True)))
        self.chance_ = chance_of(task, chance=self.chance, ladder=ladder, store=store)
        self._decide_predictable()
        return super().fit(lad, task, metric=metric, store=store)  # type: ignore[return-value]

    def _cluster(self, F: np.ndarray) -> np.ndarray:
        """k-means labels of the item trajectories ``F`` (items x models), relabelled by mean feature (0 = hardest)."""
        from sklearn.cluster import KMeans

        k = int(self.n_clusters)
        if k == 1:
            return np.zeros(len(F), dtype=int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "fewer distinct points than clusters" is reported by the counts
            lab = KMeans(n_clusters=k, n_init=10, random_state=int(self.seed)).fit_predict(F)
        order = np.argsort([F[lab == j].mean() if (lab == j).any() else np.inf for j in range(k)], kind="stable")
        remap = np.empty(k, dtype=int)
        remap[order] = np.arange(k)
        return remap[lab]

    def _law(self, x: np.ndarray, y: np.ndarray, n: int) -> _ClusterLaw:
        return _ClusterLaw(self.law, n, self.chance_).fit(x, y)

    def _decide_predictable(self) -> None:
        """Jackknife (leave-one-model-out) stability of every cluster's law at the horizon; sets ``clusters_``."""
        x, M = self.logc_, len(self.logc_)
        xh = float(x.max() + self.horizon)
        rows = []
        for k in range(len(self.agg_)):
            y = self.agg_[k]
            row = {"cluster": k, "n_items": int(self.n_items_c_[k]), "acc_first": float(y[0]),
                   "acc_last": float(y[-1]), "pred_horizon": float("nan"), "jackknife_se": float("nan"), "why": ""}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    n = int(self.n_items_c_[k])
                    row["pred_horizon"] = self._law(x, y, n).predict(xh)
                    loo = np.array([self._law(np.delete(x, m), np.delete(y, m), n).predict(xh) for m in range(M)])
                se = float(math.sqrt((M - 1) / M * np.sum((loo - loo.mean()) ** 2)))
                row["jackknife_se"] = se
                if not math.isfinite(se) or se > self.stability:
                    row["why"] = (f"leave-one-model-out standard error {se:.3f} at {self.horizon:g} decade(s) beyond "
                                  f"the largest model exceeds {self.stability:g}")
            except FIT_ERRORS as e:
                row["why"] = f"fit failed: {e}"
            row["predictable"] = row["why"] == ""
            rows.append(row)
        self.clusters_ = pd.DataFrame(rows)[["cluster", "n_items", "predictable", "jackknife_se", "pred_horizon",
                                             "acc_first", "acc_last", "why"]]
        pred = self.clusters_["predictable"].to_numpy(bool)
        self.fallback_ = not pred.any()
        self.use_ = np.ones(len(pred), bool) if self.fallback_ else pred
        self.predictable_fraction_ = float(self.n_items_c_[pred].sum() / self.n_items_c_.sum())
        w = self.n_items_c_ * self.use_
        self.weights_ = w / w.sum()

    def _core(self, runs: list[Run]):
        """Fit the used clusters' laws and the subset -> full mapping on ``runs`` (training models, maybe repeated)."""
        idx = np.array([self.pos_[r.run.split("#")[0]] for r in runs])
        x = self.logc_[idx]
        fitted: dict[str, _ClusterLaw] = {}
        for k in np.flatnonzero(self.use_):
            fitted[f"cluster{k}"] = self._law(x, self.agg_[k, idx], int(self.n_items_c_[k]))
        sub = self.weights_ @ self.agg_[:, idx]
        full = self.full_[idx]
        if self.use_.all() or np.ptp(sub) <= 1e-12:
            a, b = 0.0, 1.0
            if not self.use_.all():  # a flat subset tells nothing: the rest at its training mean
                a = float(np.mean(full - sub))
        else:
            coef = lstsq(np.c_[np.ones(len(sub)), sub], full).coef
            if not np.all(np.isfinite(coef)):
                raise laws.FitInputError("cod: the subset -> task mapping is not identified")
            a, b = float(coef[0]), float(coef[1])
        if not self._warm:  # the point fit
            self.mapping_ = (a, b)
            self.subset_range_ = (float(sub.min()), float(sub.max()))
        keys = [int(k[len("cluster"):]) for k in fitted]
        ws = self.weights_[keys]
        lws = list(fitted.values())

        def fn(p: float, t: float) -> float:
            lc = math.log10(6.0 * p * t)
            s_hat = float(sum(w * law.predict(lc) for w, law in zip(ws, lws, strict=True)))
            return a + b * s_hat

        return fn, {k: v.law_ for k, v in fitted.items()}

    # -- output -------------------------------------------------------------------------------------------------

    def subset_prediction(self, params: float, tokens: float) -> float:
        """The predictable subset's accuracy (before the mapping) at N = ``params``, D = ``tokens``."""
        check_is_fitted(self, "fn_", action="subset_prediction")
        lc = math.log10(6.0 * float(params) * float(tokens))
        return float(sum(w * _ClusterLaw.link(self.law, self.laws_[f"cluster{k}"], lc, self.chance_)
                         for k, w in zip(np.flatnonzero(self.use_), self.weights_[self.use_], strict=True)))

    def predict(self, params: float, tokens: float) -> Prediction:
        """Full-task accuracy at N = ``params``, D = ``tokens`` (C = 6·N·D FLOPs), with its interval and warnings
        that state the predictable fraction (see :meth:`LadderMethod.predict`)."""
        p = super().predict(params, tokens)
        n_pred = int(self.clusters_["predictable"].sum())
        msg = (f"cod: predictable subset {n_pred} of {len(self.clusters_)} clusters, {self.predictable_fraction_:.0%} of "
               f"{self.task_items_} items")
        if self.fallback_:
            msg += "; no cluster was stable under leave-one-model-out, so every cluster is used"
        s = self.subset_prediction(params, tokens)
        lo, hi = self.subset_range_
        if not self.use_.all() and not (lo - 1e-9 <= s <= hi + 1e-9):
            msg += (f"; the subset's predicted accuracy {s:.3f} lies outside its training range [{lo:.3f}, {hi:.3f}]: "
                    "the subset -> task mapping extrapolates")
        p.warnings.insert(0, msg)
        return p

    def report(self) -> dict[str, Any]:
        """:meth:`LadderMethod.report` plus the clusters, the predictable fraction and the mapping."""
        check_is_fitted(self, "fn_", action="report")
        out = super().report()
        out.update({"n_clusters": int(self.n_clusters), "feature": self.feature, "stability": self.stability,
                    "horizon": self.horizon, "checkpoints": self.checkpoints,
                    "predictable_fraction": self.predictable_fraction_, "fallback_all_clusters": self.fallback_,
                    "n_items": self.task_items_, "n_items_excluded": self.items_excluded_,
                    "mapping": {"intercept": self.mapping_[0], "slope": self.mapping_[1],
                                "subset_range": list(self.subset_range_)},
                    "models": self.models_["model_id"].astype(str).tolist(),
                    "clusters": self.clusters_.to_dict("records"),
                    "laws": {k: law_dict(v) for k, v in self.laws_.items()}})
        return out


class _ClusterLaw:
    """A cluster's accuracy as a function of x = log10 C (FLOPs).

    ``logit``: the empirical logit z = ln((k + ½)/(n − k + ½)) of the cluster's k = acc·n correct items out of n,
    fitted linearly in x by :class:`capscale.analysis.laws.LogLinear` with weights 1/Var(z) ≈ 1/(1/(k + ½) +
    1/(n − k + ½)) (the binomial variance of the empirical logit), so acc(x) = σ(a + b·x). It is closed form and
    bounded where a cluster steps from 0 to 1 between two models. ``sigmoid``: :class:`capscale.analysis.laws.ObsSigmoid`
    with a floor in [0, chance], the ``sigmoid`` method's law.
    """

    def __init__(self, kind: str, n: int, chance: float):
        self.kind, self.n, self.chance = kind, n, chance

    def fit(self, x: np.ndarray, y: np.ndarray) -> _ClusterLaw:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if self.kind == "sigmoid":
            self.law_ = laws.ObsSigmoid(floor=(0.0, max(self.chance, 1e-9))).fit(x, y)
            return self
        k = np.clip(y, 0.0, 1.0) * self.n
        z = np.log((k + 0.5) / (self.n - k + 0.5))
        w = 1.0 / (1.0 / (k + 0.5) + 1.0 / (self.n - k + 0.5))
        self.law_ = laws.LogLinear().fit(10.0**x, z, weights=w)
        return self

    @staticmethod
    def link(kind: str, law: laws.Law, x: float, chance: float) -> float:
        """The accuracy of a fitted law (``law_``) at x = log10 C."""
        if kind == "sigmoid":
            return float(law.predict([[x]])[0])
        z = float(law.predict([10.0**x])[0])
        return float(1.0 / (1.0 + math.exp(-z))) if z > -700 else 0.0

    def predict(self, x: float) -> float:
        """Accuracy (a fraction) at x = log10 C."""
        return self.link(self.kind, self.law_, x, self.chance)
