"""The ``cod`` predictor (difficulty clusters) on a simulated store whose item clusters are planted.

The planted store: 8 models evenly spaced in x = log10 C (19 .. 22.5), 4 choices; items in four groups of
known difficulty law. Item j of a regular group g has gold logit z = 2.5·(x − x0_g) + offset_j + noise
(x0 = 19.6, 20.6, 21.6; offsets N(0, 0.3), noise N(0, 0.3)); the distractors are at 0 ± 0.05 nats. The fourth
(noisy) group shares a level drawn afresh for every model (N(0, 2.5)): its accuracy jumps up and down across
the ladder and is unpredictable by construction. The largest model is held out.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from capscale.analysis import chain
from capscale.analysis.predict import METHODS, MethodNotApplicable, backtest, fit_method, get_method
from capscale.analysis.predict._cod import CodPredictor
from capscale.analysis.predict._select import _candidates
from capscale.errors import InputError, UsageError

X = np.linspace(19.0, 22.5, 8)
GROUPS = {0: (19.5, 60), 1: (20.5, 60), 2: (21.5, 60), 3: (None, 30)}  # group: (x0, items); None = noisy
SLOPE, OFFSET_SD = 2.0, 0.5  # gold logit per decade; SD of the item offsets (logits)
#: The stability threshold of these tests (jackknife SE at 0.5 decades beyond the largest training model): the noisy
#: cluster's is 0.12-0.25 on seeds 0-3, the regular clusters' at most 0.072 (the last to rise).
STABILITY = 0.1


def planted_cluster_store(seed: int = 0, x: np.ndarray = X) -> tuple[pd.DataFrame, np.ndarray]:
    """The store described in the module docstring and the planted group of every item (by doc_id)."""
    rng = np.random.default_rng(seed)
    truth = np.concatenate([np.full(n, g) for g, (_, n) in GROUPS.items()])
    n_items, K = len(truth), 4
    off = rng.normal(0, OFFSET_SD, n_items)
    level = rng.normal(0, 2.5, len(x))
    rows = []
    for m, xm in enumerate(x):
        x0 = np.array([GROUPS[g][0] if GROUPS[g][0] is not None else np.nan for g in truth])
        z = np.where(np.isnan(x0), level[m] + off, SLOPE * (xm - np.nan_to_num(x0)) + off)
        z = z + rng.normal(0, 0.3, n_items)
        ll = np.c_[z, rng.normal(0, 0.05, (n_items, K - 1))] - 5.0  # log-likelihoods in nats
        C = 10.0**xm
        params = int(round(math.sqrt(C / 120.0)))
        tokens = int(round(C / (6.0 * params)))
        for j in range(n_items):
            for c in range(K):
                rows.append((f"pc-m{m}", "pc", params, tokens, "planted_clusters", j, c, c == 0, float(ll[j, c])))
    df = pd.DataFrame(rows, columns=["model_id", "family", "params", "tokens", "task", "doc_id", "choice_idx",
                                     "is_correct", "loglik"])
    df["compute"] = 6.0 * df["params"].astype(float) * df["tokens"].astype(float)
    return df, truth


@pytest.fixture(scope="module")
def planted():
    store, truth = planted_cluster_store()
    ladder = chain.ladder_from_store(store)
    train_ids = [f"pc-m{m}" for m in range(len(X) - 1)]
    lad_tr = ladder[ladder["model_id"].isin(train_ids)]
    st_tr = store[store["model_id"].isin(train_ids)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr = CodPredictor(n_clusters=4, stability=STABILITY, bootstrap=30).fit(lad_tr, "planted_clusters", store=st_tr)
    return store, truth, ladder, pr


def test_registered_and_in_all_candidates():
    assert METHODS["cod"].endswith("_cod:CodPredictor")
    assert get_method("cod").needs_store
    assert "cod" in _candidates(pd.DataFrame(), None) and "mass" in _candidates(pd.DataFrame(), None)
    assert "cod" not in _candidates(None, None)


def test_recovers_the_planted_clusters(planted):
    _, truth, _, pr = planted
    labels = pr.labels_.sort_index().to_numpy()
    # stated tolerance: adjusted Rand index >= 0.9 against the four planted groups (seed 0)
    assert adjusted_rand_score(truth, labels) >= 0.9


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recovery_and_noisy_flag_on_other_seeds(seed):
    store, truth = planted_cluster_store(seed)
    train = [f"pc-m{m}" for m in range(len(X) - 1)]
    ladder = chain.ladder_from_store(store[store["model_id"].isin(train)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr = CodPredictor(n_clusters=4, stability=STABILITY, bootstrap=0, inflate=False).fit(
            ladder, "planted_clusters", store=store)
    labels = pr.labels_.sort_index().to_numpy()
    assert adjusted_rand_score(truth, labels) >= 0.85
    noisy = np.bincount(labels[truth == 3]).argmax()
    assert pr.clusters_.set_index("cluster")["predictable"].to_dict() == {k: k != noisy for k in range(4)}


def test_flags_the_noisy_cluster_only(planted):
    _, truth, _, pr = planted
    labels = pr.labels_.sort_index().to_numpy()
    noisy = np.bincount(labels[truth == 3]).argmax()
    tab = pr.clusters_.set_index("cluster")
    assert not tab.loc[noisy, "predictable"]
    assert tab.drop(index=noisy)["predictable"].all()
    assert pr.predictable_fraction_ == pytest.approx(1 - (truth == 3).mean(), abs=0.02)
    rep = pr.report()
    assert rep["predictable_fraction"] == pr.predictable_fraction_
    assert len(rep["clusters"]) == 4 and rep["method"] == "cod"


def test_predicts_the_held_out_size(planted):
    store, truth, ladder, pr = planted
    big = store[store["model_id"] == f"pc-m{len(X) - 1}"]
    items = chain.compute(big).set_index("doc_id").sort_index()
    labels = pr.labels_.sort_index()
    keep = pr.use_[labels.to_numpy()]
    p, t = float(big["params"].iloc[0]), float(big["tokens"].iloc[0])
    # the predictable subset's own accuracy: within 0.03 of its observed accuracy at the held-out model
    assert abs(pr.subset_prediction(p, t) - items["acc"].to_numpy()[keep].mean()) <= 0.03
    # the task: within 0.1 of the observed accuracy (the noisy 14 % of items are a coin flip there), interval covers
    pred = pr.predict(p, t)
    actual = items["acc"].mean()
    assert abs(pred.value - actual) <= 0.1
    assert pred.lower <= actual <= pred.upper
    assert pred.warnings[0].startswith("cod: predictable subset 3 of 4 clusters")


def test_backtest_and_all_on_a_store(planted):
    store, _, ladder, _ = planted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = backtest(ladder, "planted_clusters", "cod", store=store, bootstrap=10, n_clusters=4)
    assert len(rows) == 1 and rows[0]["heldout_model"] == f"pc-m{len(X) - 1}"
    assert rows[0]["warnings"][0].startswith("cod: predictable subset")
    assert np.isfinite(rows[0]["predicted"]) and rows[0]["lower"] <= rows[0]["predicted"] <= rows[0]["upper"]


def test_bad_input(planted):
    store, _, ladder, _ = planted
    one = store[store["model_id"] == "pc-m0"]
    with pytest.raises(InputError, match=r"at least 4 training models .* got 1"):
        CodPredictor(bootstrap=0).fit(ladder[ladder["model_id"] == "pc-m0"], "planted_clusters", store=one)
    with pytest.raises(InputError, match="task 'nope' has no rows in the store"):
        CodPredictor(bootstrap=0).fit(ladder, "nope", store=store)
    with pytest.raises(InputError, match=r"210 item\(s\).*50 clusters need at least 250"):
        CodPredictor(n_clusters=50, bootstrap=0).fit(ladder, "planted_clusters", store=store)
    with pytest.raises(MethodNotApplicable, match="needs the per-choice score store"):
        fit_method(ladder, "planted_clusters", "cod")
    with pytest.raises(UsageError, match="feature must be one of"):
        CodPredictor(feature="margin").fit(ladder, "planted_clusters", store=store)
    with pytest.raises(InputError, match="predicts per-item accuracies"):
        CodPredictor(bootstrap=0).fit(ladder, "planted_clusters", metric="brier", store=store)


def test_mass_auto_checkpoints_predicts_intermediate_targets_from_every_checkpoint():
    from capscale.analysis.mass import predict_task
    from capscale.analysis.predict._mass import MassPredictor
    from capscale.testing import simulate_store

    sim = simulate_store(n_items=30, seed=9, x=(19.0, 19.5, 20.0, 20.5, 21.0, 21.5))
    lad = chain.ladder_from_store(sim)
    lad["run"] = lad["model_id"].map(lambda m: "runA" if int(m[-1]) < 3 else "runB")  # two runs of 3 checkpoints
    p = MassPredictor(checkpoints="auto", inflate=False).fit(lad, "sim", store=sim)
    assert sorted(p.fit_.models["model_id"]) == ["sim-m2", "sim-m5"] and len(p.fit_all_.models) == 6
    fin = p.fit_.models.iloc[0]
    mid = p.predict(float(fin["params"]), 0.5 * p.final_tokens_)
    assert mid.warnings[0].startswith("mass: target tokens D") and "every checkpoint" in mid.warnings[0]
    x = math.log10(6 * float(fin["params"]) * 0.5 * p.final_tokens_)
    assert mid.value == pytest.approx(predict_task(p.fit_all_, x, metrics=("acc",))["acc"].value)
    final = p.predict(float(fin["params"]), p.final_tokens_)
    assert not final.warnings or not final.warnings[0].startswith("mass: target tokens D")
