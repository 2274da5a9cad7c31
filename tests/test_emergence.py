"""Emergence diagnostics: reference values of emergence.md §2.4/§9.9, planted families, guards, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from capscale._io import write_json
from capscale.analysis import _stats, chain
from capscale.analysis import emergence as em
from capscale.analysis.emergence import fits, stats
from capscale.testing import planted_store

REQUIRED_KEYS = {"task", "family", "n_models", "n_items", "metrics", "verdict", "reasons", "caveats", "x",
                 "x_spacing", "passuntil", "crossing_points"}

# ------------------------------------------------------------------------------------------------
# reference values (§2.4, §9.9)


@pytest.mark.parametrize("y, interest, B, L", [
    (np.arange(8.0), 7, 7.0, 7.0),
    ([0, 0, 0, 0, 0, 0, 0, 1.0], 1, math.inf, 2.646),
    ([0, 0, 0, 0.5, 1, 1, 1, 1], 1, math.inf, 3.742),
    (7 - np.arange(8.0), -7, -7.0, -7.0),
    (1 / (1 + np.exp(-2 * (np.arange(8.0) - 5))), 0.982, 9.702, 4.661),
])
def test_bigbench_table(y, interest, B, L):
    assert stats.interestingness(y) == pytest.approx(interest, abs=5e-4)
    assert stats.breakthroughness(y) == pytest.approx(B, abs=5e-4)
    assert stats.linearity(y) == pytest.approx(L, abs=5e-4)


def test_b_zero_and_constant_curves():
    assert stats.breakthroughness([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert stats.linearity([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert np.isnan(stats.jump_share([1.0, 1.0, 1.0]))


def test_mirage_toy_eight_sizes():
    N = np.logspace(8, 11.5, 8)
    p = np.exp(-((N / 1e9) ** -0.6))
    np.testing.assert_allclose(p, [0.019, 0.136, 0.368, 0.606, 0.778, 0.882, 0.939, 0.969], atol=6e-4)
    acc, ted = p**10, -10 * (1 - p)
    assert stats.breakthroughness(acc) / 7 == pytest.approx(1.40, abs=0.005)
    assert stats.breakthroughness(ted) / 7 == pytest.approx(1.16, abs=0.005)
    assert stats.jump_share(acc) == pytest.approx(0.340, abs=5e-4)
    assert stats.jump_share(ted) == pytest.approx(0.250, abs=5e-4)
    assert stats.j_lin(np.log10(N)) == pytest.approx(1 / 7)


def test_mirage_toy_gpt3_sizes():
    N = np.array([3.5e8, 1.3e9, 6.7e9, 1.75e11])
    p = np.exp(-((N / 1e9) ** -0.6))
    acc, ted = p**10, -10 * (1 - p)
    np.testing.assert_allclose(acc, [0.000, 0.000, 0.041, 0.637], atol=6e-4)
    assert stats.breakthroughness(acc) / 3 == pytest.approx(5.20, abs=0.005)
    assert stats.breakthroughness(ted) / 3 == pytest.approx(0.98, abs=0.005)
    assert stats.jump_share(acc) == pytest.approx(0.94, abs=0.005)
    assert stats.jump_share(ted) == pytest.approx(0.37, abs=0.006)
    jl = stats.j_lin(np.log10(N))
    assert jl == pytest.approx(0.525, abs=5e-4)
    assert stats.jump_share(acc) - jl == pytest.approx(0.41, abs=0.005)
    assert stats.jump_share(ted) - jl == pytest.approx(-0.15, abs=0.005)


@pytest.mark.parametrize("n, ref", [(4, 0.0833), (5, 0.0167), (6, 0.00278), (7, 3.97e-4)])
def test_kendall_exact_p_is_two_over_n_factorial(n, ref):
    x = np.arange(n, dtype=float)
    tau, p, method = stats.kendall_exact(x, x**2)
    assert tau == pytest.approx(1.0) and method == "exact"
    assert p == pytest.approx(2 / math.factorial(n), rel=1e-9)
    assert p == pytest.approx(ref, rel=3e-3)
    assert stats.kendall_exact(x, -x)[1] == pytest.approx(2 / math.factorial(n), rel=1e-9)
    assert stats.factorial_p(n) == pytest.approx(2 / math.factorial(n))


def test_fewer_than_five_models_never_significant():
    assert all(stats.factorial_p(n) > 0.05 for n in (2, 3, 4))
    assert stats.factorial_p(5) < 0.05


def test_kendall_with_ties_falls_back_to_asymptotic():
    tau, p, method = stats.kendall_exact(np.arange(5.0), [0, 0, 1, 2, 3.0])
    assert method.startswith("asymptotic") and 0 < p < 1 and tau > 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=4, max_size=9))
def test_vectorised_tau_b_matches_scipy(y):
    y = np.asarray(y, dtype=float)
    ref = sst.kendalltau(np.arange(len(y)), y).statistic
    got = stats.kendall_tau_rows(y)
    if np.isnan(ref):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(ref, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=3, max_size=9))
def test_breakthroughness_bounds_and_affine_invariance(y):
    y = np.asarray(y, dtype=float) / 10  # exact after the affine map: no rounding-made ties
    n = len(y)
    L = stats.linearity(y)
    assert abs(L) <= (n - 1) + 1e-9
    if np.ptp(y) > 1e-3:
        assert stats.breakthroughness(3 * y + 7) == pytest.approx(stats.breakthroughness(y), rel=1e-6)
        J = stats.jump_share(y)
        assert 1 / (n - 1) - 1e-12 <= J <= 1 + 1e-12


def test_benjamini_hochberg_values():
    q = stats.benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.005, np.nan]))
    np.testing.assert_allclose(q[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(q[4])


# ------------------------------------------------------------------------------------------------
# fits and bootstrap


def test_fit_all_aicc_is_nan_where_undefined():
    x = np.linspace(20.0, 24.0, 5)
    y = np.array([[0.1, 0.15, 0.4, 0.7, 0.8]])
    f = fits.fit_all(x, y, bounded=True)
    tss = float(((y - y.mean()) ** 2).sum())
    assert f["linear"]["aicc"][0] == pytest.approx(_stats.aicc(f["linear"]["rss"][0], 5, 3, tss))
    assert math.isfinite(f["linear"]["aicc"][0])
    assert math.isnan(f["broken"]["aicc"][0])  # k = 5: n - k - 1 < 1 with 5 models


def test_fits_recover_planted_parameters():
    x = np.linspace(20, 24, 9)
    sig = 1 / (1 + np.exp(-3.0 * (x - 22.3)))
    f = fits.fit_sigmoid2(x, sig[None, :], refine=True)
    assert f["x0"][0] == pytest.approx(22.3, abs=1e-4) and f["k"][0] == pytest.approx(3.0, rel=1e-3)
    assert f["width_dec"][0] == pytest.approx(fits.LN81 / 3.0, rel=1e-3)
    y = 1 + 0.5 * x + 2.0 * np.maximum(0, x - 22.5)
    b = fits.fit_broken(x, y[None, :])
    assert b["x_b"][0] == pytest.approx(22.5, abs=b["grid_step"])
    assert b["d"][0] == pytest.approx(2.0, rel=0.05)
    s4 = fits.fit_sigmoid4(x, (0.2 + 0.5 * sig)[None, :])
    assert s4["floor"][0] == pytest.approx(0.2, abs=0.02) and s4["top"][0] == pytest.approx(0.7, abs=0.02)
    assert s4["x0"][0] == pytest.approx(22.3, abs=s4["grid_step"])
    h = fits.fit_hinge2(x, (0.7 * np.maximum(0, x - 21.0))[None, :])
    assert h["x_b"][0] == pytest.approx(21.0, abs=h["grid_step"]) and h["s"][0] == pytest.approx(0.7, rel=0.02)


def test_bootstrap_is_paired_and_balanced():
    rng = np.random.default_rng(1)
    W = em.bootstrap_weights(50, 300, rng)
    assert W.shape == (300, 50) and np.all(W.sum(axis=1) == 50)
    s1 = rng.normal(size=50)
    ti = em.from_arrays("t", "f", ["a", "b", "c", "d", "e"], [1e20, 2e20, 4e20, 8e20, 1.6e21],
                        {"choice_logodds": np.stack([s1 + 0.1 * k for k in range(5)])})
    rep = em.analyse(ti, B=300, keep_curves=True, min_items=10)
    Y = rep["_replicates"]["choice_logodds"]
    # the same items in every model: a constant per-item offset survives every replicate exactly
    np.testing.assert_allclose(np.diff(Y, axis=1), 0.1, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# planted families (§9.4-G, §9.5)


@pytest.fixture(scope="module")
def planted_reports():
    out = {}
    for kind in ("linear", "kink"):
        items = chain.compute(planted_store(kind, n_models=10, n_items=400, seed=3))
        out[kind] = em.analyse(em.from_items(items, "planted"), B=1000)
    return out


def test_planted_linear_latent_is_metric_induced(planted_reports):
    r = planted_reports["linear"]
    assert r["verdict"] == "METRIC_INDUCED", r["reasons"]
    acc, lo = r["metrics"]["acc"], r["metrics"]["choice_logodds"]
    assert acc["J_ex_ci"][0] > 0 and acc["B_norm"] > 1  # accuracy is sharp ...
    assert abs(lo["J_ex"]) < 0.05 and lo["tau_model"] == pytest.approx(1.0)  # ... the latent is a straight line
    assert lo["fits"]["dAICc"]["broken_minus_quadratic"] > -2
    cp = r["crossing_points"]
    assert cp["iqr_dec"] < 0.6 and cp["frac_nonimproving"] < 0.01 and cp["implied_inside_band"]
    assert r["decision"]["sharp_a"]
    assert r["per_item_tau_ordering"]["holds"]  # logp_vocab >= p_choices >= -Brier >= acc (Schaeffer 2024)
    assert r["detection"]["hidden_progress_dec"] is not None


def test_planted_slope_change_is_genuine(planted_reports):
    r = planted_reports["kink"]
    assert r["verdict"] == "GENUINE_TRANSITION_CANDIDATE", r["reasons"]
    kink = r["metrics"]["choice_logodds"]["fits"]["dAICc"]["broken_minus_quadratic"]
    assert kink <= -2
    assert r["metrics"]["choice_logodds"]["fits"]["broken"]["x_b"] == pytest.approx(22.5, abs=0.3)
    assert any("kink" in s for s in r["reasons"])


def test_planted_flat_case_is_smooth_under_the_effect_size_floor():
    # the `flat` case of results/emergence/README.md (400 items, 10 models, seed 0): a gradual rise whose
    # largest step is significant (CI of J_ex above 0, ~6.7 SE) but holds only ~3% more of the total change
    # than an even spread; before the floor it was called METRIC_INDUCED
    items = chain.compute(planted_store("flat", task="flat", seed=0))
    r = em.analyse(em.from_items(items, "flat"), B=1000)
    acc = r["metrics"]["acc"]
    assert acc["J_ex_ci"][0] > 0 and acc["J_ex"] < 0.05  # significant, but tiny
    assert r["verdict"] == "SMOOTH", r["reasons"]
    eff = r["decision"]["effect_size"]
    assert not eff["passes"] and eff["min_jex"] == em.DEFAULTS["min_jex"] == 0.10
    assert eff["min_step_z"] == em.DEFAULTS["min_step_z"] and eff["max_pre_ratio"] == em.DEFAULTS["max_pre_ratio"]
    assert "effect-size floor" in r["reasons"][0] and "J_ex" in r["reasons"][0]
    assert r["settings"]["min_jex"] == 0.10
    # the floor is a setting: without it the old verdict comes back
    r0 = em.analyse(em.from_items(items, "flat"), B=1000, min_jex=0.0, min_step_z=-np.inf, max_pre_ratio=np.inf)
    assert r0["verdict"] == "METRIC_INDUCED" and r0["decision"]["effect_size"]["passes"]


def test_effect_size_floor_is_kept_by_bh_control():
    items = pd.concat([chain.compute(planted_store(k, task=k, n_models=8, n_items=300, seed=4))
                       for k in ("linear", "flat")], ignore_index=True)
    reps = em.scan([em.from_items(items, k) for k in ("linear", "flat")], B=300, min_jex=0.9)
    assert all(r["settings"]["min_jex"] == 0.9 for r in reps)
    assert all(r["verdict"] == "SMOOTH" for r in reps), [r["reasons"] for r in reps]


def test_duplicated_models_and_rows_are_named():
    from capscale.errors import InputError

    acc = np.zeros((5, 30))
    with pytest.raises(InputError, match=r"model id\(s\) \['m0'\] appear more than once"):
        em.from_arrays("t", "f", ["m0", "m0", "m1", "m2", "m3"], 10 ** np.linspace(20, 23, 5), {"acc": acc})
    items = chain.compute(planted_store("linear", n_models=5, n_items=30))
    dup = pd.concat([items, items[items["model_id"] == items["model_id"].iloc[0]].head(3)], ignore_index=True)
    with pytest.raises(InputError, match=r"task 'planted': 6 per-item rows share a \(model_id, doc_id\)"):
        em.from_items(dup, "planted")


def test_four_models_are_insufficient():
    items = chain.compute(planted_store("linear", n_models=4, x_range=(20.5, 23.5), n_items=200))
    r = em.analyse(em.from_items(items, "planted"), B=200)
    assert r["verdict"] == "INSUFFICIENT_DATA"
    assert "n_models = 4" in r["reasons"][0]
    assert "tau_significance" in r["metrics"]["acc"]["not_computed"]
    assert r["metrics"]["acc"]["tau_p"] == pytest.approx(2 / 24)  # perfectly monotone, still p > 0.05


def test_linear_accuracy_is_smooth():
    # item i is solved by model m iff m >= i // 100: accuracy rises in equal steps
    n, n_items = 10, 1000
    acc = (np.arange(n)[:, None] >= (np.arange(n_items) // 100)[None, :]).astype(float)
    lo = np.where(acc > 0, 1.0, -1.0) + np.linspace(-3, 3, n)[:, None]
    ti = em.from_arrays("lin", "f", [f"m{i}" for i in range(n)], 10 ** np.linspace(20, 23, n),
                        {"acc": acc, "choice_logodds": lo}, n_choices=np.full(n_items, 4))
    r = em.analyse(ti, B=300)
    assert r["verdict"] == "SMOOTH", r["reasons"]


def test_chain_test_vector_through_from_items():
    df = pd.DataFrame(dict(model_id="m", family="f", params=10**6, tokens=10**9, task="t", doc_id=0,
                           choice_idx=[0, 1, 2, 3], is_correct=[False, True, False, False],
                           loglik=[-2.0, -1.0, -3.0, -4.0]))
    ti = em.from_items(chain.compute(df), "t")
    assert ti.items["p_choices"][0, 0] == pytest.approx(0.643914, abs=1e-6)
    assert ti.items["neg_brier"][0, 0] == pytest.approx(-0.047883, abs=1e-6)
    assert ti.items["choice_logodds"][0, 0] == pytest.approx(0.592394, abs=1e-6)
    assert ti.items["margin"][0, 0] == 1.0 and ti.items["acc"][0, 0] == 1.0
    assert ti.items["logp_vocab"][0, 0] == -1.0


# ------------------------------------------------------------------------------------------------
# guards (§9.8)


def _arrays(n=6, n_items=60, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(20, 23, n)
    m = 1.5 * (x[:, None] - rng.normal(21.5, 0.5, n_items)[None, :]) + rng.normal(0, 0.5, (n, n_items))
    return x, {"acc": (m > 0).astype(float), "choice_logodds": m, "margin": m}


def test_unsorted_compute_is_sorted_and_reported():
    x, sc = _arrays()
    perm = np.array([3, 0, 5, 1, 4, 2])
    ids = [f"m{i}" for i in range(6)]
    a = em.analyse(em.from_arrays("t", "f", ids, 10**x, sc), B=200)
    b = em.analyse(em.from_arrays("t", "f", [ids[i] for i in perm], 10 ** x[perm],
                                  {k: v[perm] for k, v in sc.items()}), B=200)
    assert b["models"] == a["models"] and b["metrics"]["acc"]["y"] == a["metrics"]["acc"]["y"]
    assert any("not sorted by compute" in g for g in b["guards"])
    assert not any("not sorted" in g for g in a["guards"])


def test_tied_compute_becomes_seeds():
    x, sc = _arrays()
    xs = np.append(x, x[2])
    sc2 = {k: np.vstack([v, v[2:3]]) for k, v in sc.items()}
    ti = em.from_arrays("t", "f", [f"m{i}" for i in range(7)], 10**xs, sc2)
    assert ti.n_models == 6 and "+" in ti.model_ids[2]
    r = em.analyse(ti, B=200)
    assert r["n_models"] == 6 and any("tied compute" in g for g in r["guards"])
    assert r["seed_variance"]["n_seeds"] == [1, 1, 2, 1, 1, 1]
    assert r["seed_variance"]["acc"][2] == 0.0 and r["seed_variance"]["acc"][0] is None  # identical seeds


def test_nan_scores_and_too_few_items_and_missing_metrics():
    x, sc = _arrays(n_items=60)
    sc["choice_logodds"][2, 5] = np.nan
    sc["acc"][0, 7] = np.inf
    ti = em.from_arrays("t", "f", [f"m{i}" for i in range(6)], 10**x, sc)
    assert ti.n_items == 58 and ti.exclusions["items_nonfinite_or_missing"] == 2
    r = em.analyse(ti, B=200)
    assert r["exclusions"]["items_nonfinite_or_missing"] == 2
    few = em.analyse(em.from_arrays("t", "f", [f"m{i}" for i in range(6)], 10**x,
                                    {k: v[:, :8] for k, v in _arrays()[1].items()}), B=200)
    assert few["verdict"] == "INSUFFICIENT_DATA" and "too few items" in few["reasons"][0]
    # a store without n_chars/n_bytes: acc_norm and neg_bpb are reported as unavailable, not dropped silently
    st_ = planted_store("linear", n_models=5, n_items=30).drop(columns=["n_chars", "n_bytes"])
    r2 = em.analyse(em.from_items(chain.compute(st_), "planted"), B=100)
    assert "acc_norm" in r2["not_computed"]["metrics"] and "acc_norm" not in r2["metrics"]
    # no discrete metric at all
    r3 = em.analyse(em.from_arrays("t", "f", [f"m{i}" for i in range(6)], 10**x,
                                   {"choice_logodds": sc["choice_logodds"][:, 6:]}), B=100)
    assert r3["verdict"] == "INSUFFICIENT_DATA" and "no discrete metric" in r3["reasons"][0]


def test_bad_compute_raises_with_model_name():
    x, sc = _arrays()
    c = 10**x
    c[1] = -1
    with pytest.raises(ValueError, match="m1"):
        em.from_arrays("t", "f", [f"m{i}" for i in range(6)], c, sc)


def test_json_is_strict_and_infinite_b_is_a_string(tmp_path):
    x = np.linspace(20, 23, 6)
    acc = np.zeros((6, 40))
    acc[5] = 1.0  # more than half the steps are 0: B = +inf
    ti = em.from_arrays("step", "f", [f"m{i}" for i in range(6)], 10**x, {"acc": acc}, n_choices=np.full(40, 4))
    r = em.analyse(ti, B=100)
    assert r["metrics"]["acc"]["B"] == math.inf
    p = write_json(tmp_path / "step.json", r, drop_private=True)
    j = json.loads(p.read_text())  # strict JSON (no Infinity literal)
    assert j["metrics"]["acc"]["B"] == "inf"
    assert REQUIRED_KEYS <= set(j)


# ------------------------------------------------------------------------------------------------
# ladder input, FDR, CLI


def _ladder(with_se=True):
    rows = []
    sizes = [1e7, 3e7, 1e8, 3e8, 1e9, 3e9]
    for j, n in enumerate(sizes):
        for step in (1000, 2000):
            acc = 0.25 + 0.05 * j * step / 2000
            base = dict(model_id=f"s{j}@step{step}", family="toy", params=n, tokens=step * 1e6,
                        compute=6 * n * step * 1e6, step=step, task="toy_task")
            rows.append({**base, "metric": "acc", "value": acc})
            if with_se:
                rows.append({**base, "metric": "acc_stderr", "value": 0.01})
    return pd.DataFrame(rows)


def test_ladder_input_final_step_and_not_computed():
    ti = em.from_ladder(_ladder(), "toy", "toy_task", chance={"acc": 0.25})
    assert ti.n_models == 6 and all(m.endswith("@step2000") for m in ti.model_ids)
    r = em.analyse(ti, B=300)
    assert r["input"].startswith("aggregate") and "crossing_points" in r["not_computed"]
    assert r["metrics"]["acc"]["ci"] is not None
    r2 = em.analyse(em.from_ladder(_ladder(with_se=False), "toy", "toy_task"), B=300)
    assert r2["metrics"]["acc"]["ci"] is None and any("no standard errors" in g for g in r2["guards"])
    assert r2["verdict"] == "INSUFFICIENT_DATA"


def test_scan_applies_bh():
    reps = []
    for s in range(3):
        x, sc = _arrays(n=7, n_items=80, seed=s)
        reps.append(em.from_arrays(f"t{s}", "f", [f"m{i}" for i in range(7)], 10**x, sc, n_choices=np.full(80, 2)))
    out = em.scan(reps, B=200)
    for r in out:
        assert r["fdr"]["m_tests"] == 3 and r["fdr"]["q_sharp"] >= r["fdr"]["p_sharp"]
    t = em.verdict_table(out)
    assert list(t["task"]) == ["t0", "t1", "t2"] and set(t["verdict"]) <= set(em.VERDICTS)


def test_cli_writes_schema_and_figures(tmp_path):
    from capscale.cli import main
    from capscale.data import store

    df = planted_store("linear", n_models=7, n_items=60)
    df.loc[0, "loglik"] = np.nan  # guard: the item is excluded and counted, not an error
    path = tmp_path / "s.parquet"
    df.to_parquet(path)
    out = tmp_path / "out"
    assert main(["emergence", str(path), "--family", "planted", "--task", "planted", "--out", str(out),
                 "--B", "200", "--quiet"]) == 0
    j = json.loads((out / "planted.json").read_text())
    assert REQUIRED_KEYS <= set(j) and j["n_models"] == 7 and j["n_items"] == 59
    assert j["exclusions"]["items_nonfinite_loglik"] == 1
    assert (out / "verdicts.csv").exists() and (out / "figures" / "planted_P1_ladder.png").exists()
    assert main(["emergence", str(path), "--task", "nope", "--out", str(out)]) == 1  # invalid input
    assert main(["emergence", str(path), "--out", str(out)]) == 2  # usage: neither --task nor --all-tasks
    assert store is not None


@pytest.mark.shared_data
def test_pythia_evals_scan(shared_data):
    from capscale.data import ladder_table as datasets
    from capscale.data import published
    from capscale.data.published import attach_stderr, pythia_stderr

    path = shared_data / "pythia-evals"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    with pytest.warns(UserWarning):
        lad = published.load_pythia_evals(path, params="non_embedding", families=("pythia-deduped",))
    lad = attach_stderr(lad, pythia_stderr(path))
    assert lad.loc[lad["metric"] == "acc", "stderr"].notna().all()
    tis = [em.from_ladder(lad, "pythia-deduped", t, chance={"acc": datasets.chance_of(t)})
           for t in ("lambada_openai", "sciq")]
    out = em.scan(tis, B=300)
    for r in out:
        assert r["n_models"] == 8 and r["verdict"] in em.VERDICTS and r["metrics"]["acc"]["ci"] is not None
    assert out[0]["continuous_metric"] == "logp_vocab"  # from LAMBADA's perplexity


@pytest.mark.shared_data
def test_pythia_all_tasks_reader(shared_data):
    from capscale.data.published import load_pythia_tasks

    path = shared_data / "pythia-evals"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    lad, skipped = load_pythia_tasks(path, shots=5)
    assert lad["task"].nunique() == 65  # 8 tasks + 57 MMLU subjects, no crows_pairs in five-shot files
    assert lad["stderr"].notna().all() and skipped["files_other_shots"] == 0
    final = lad[(lad["step"] == 143000) & (lad["family"] == "pythia-deduped")]
    assert final["run"].nunique() == 8
    ti = em.from_ladder(lad, "pythia-deduped", "hendrycksTest-anatomy", chance={"acc": 0.25})
    assert ti.n_models == 8 and set(ti.agg) == {"acc", "acc_norm"}


def test_constant_accuracy_is_smooth_not_an_error():
    x = np.linspace(20, 23, 6)
    acc = np.tile((np.arange(40) % 4 == 0).astype(float), (6, 1))  # every model scores exactly 0.25
    r = em.analyse(em.from_arrays("c", "f", [f"m{i}" for i in range(6)], 10**x, {"acc": acc},
                                  n_choices=np.full(40, 4)), B=100)
    assert r["verdict"] == "SMOOTH" and "constant" in r["reasons"][0]


def test_store_with_several_checkpoints_keeps_the_final_one():
    from capscale.analysis.emergence.inputs import final_only

    a = planted_store("linear", n_models=5, n_items=20)
    b = a.copy()
    b["model_id"] = b["model_id"] + "@early"
    b["tokens"] = b["tokens"] // 2
    out, note = final_only(pd.concat([a, b]))
    assert set(out["model_id"]) == set(a["model_id"]) and "5 of 10" in note
    assert final_only(a)[1] is None


def test_scan_with_workers_matches_serial():
    tis = []
    for s in range(2):
        x, sc = _arrays(n=6, n_items=50, seed=s)
        tis.append(em.from_arrays(f"t{s}", "f", [f"m{i}" for i in range(6)], 10**x, sc, n_choices=np.full(50, 2)))
    a = em.scan(tis, B=100)
    b = em.scan(tis, B=100, workers=2)
    assert [r["verdict"] for r in a] == [r["verdict"] for r in b]
    assert [r["metrics"]["acc"]["J_ex_ci"] for r in a] == [r["metrics"]["acc"]["J_ex_ci"] for r in b]


def test_run_from_a_store(tmp_path):
    from capscale.errors import InputError, UsageError
    from capscale.pipelines import emergence

    df = pd.concat([planted_store(k, task=k, n_models=7, n_items=60, seed=1) for k in ("linear", "kink")])
    res = emergence.run(df, emergence.Options(out=tmp_path / "em", B=150, figures="none"))
    verdicts = res.summary["verdicts"]
    assert list(verdicts) == ["kink", "linear"] and set(verdicts.values()) <= set(em.VERDICTS)
    assert res.summary["reports"] == 2 and res.summary["figures"] == 0
    assert list(res.tables["verdicts"]["task"]) == ["kink", "linear"]
    j = json.loads((tmp_path / "em" / "kink.json").read_text())
    assert REQUIRED_KEYS <= set(j) and j["fdr"]["m_tests"] == 2
    assert j["command"] == "capscale.pipelines.emergence.run('the score store', Options(B=150, figures='none'))"
    assert res.files == [tmp_path / "em" / f for f in ("kink.json", "linear.json", "verdicts.csv")]
    # the same store from a file gives the same reports (apart from the input-format note and the command)
    store_path = tmp_path / "s.parquet"
    df.to_parquet(store_path)
    res2 = emergence.run(store_path, emergence.Options(B=150, figures="none"))
    assert res2.files == [] and res2.out is None and res2.summary["verdicts"] == verdicts
    pd.testing.assert_frame_equal(res2.tables["verdicts"], res.tables["verdicts"])
    with pytest.raises(InputError, match=r"family must be one of \['planted'\], not 'x' \(the score store\)"):
        emergence.run(df, emergence.Options(family="x"))
    with pytest.raises(UsageError, match="steps must be one of"):
        emergence.Options(steps="last")


def test_load_inputs_from_store_and_ladder(tmp_path):
    """The API behind `capscale emergence INPUT`: format detection, family/task selection, clear errors."""
    import pandas as pd

    from capscale.data import store
    from capscale.pipelines.emergence import detect_format, load_inputs
    from capscale.testing import planted_store

    df = pd.concat([planted_store("linear", n_models=6, n_items=30, task="a", seed=1),
                    planted_store("flat", n_models=6, n_items=30, task="b", seed=2)], ignore_index=True)
    path = tmp_path / "s.parquet"
    store.write(df, path)
    assert detect_format(path) == "store"
    inputs, notes = load_inputs(path)
    assert [ti.task for ti in inputs] == ["a", "b"] and notes[0] == "input format: store"
    assert [ti.task for ti in load_inputs(path, tasks=["b"])[0]] == ["b"]
    with pytest.raises(ValueError, match=r"task\(s\) \['c'\] not in .*it has \['a', 'b'\]"):
        load_inputs(path, tasks=["c"])
    with pytest.raises(ValueError, match=r"family must be one of \['planted'\], not 'x'"):
        load_inputs(path, family="x")
    with pytest.raises(ValueError, match="unknown format"):
        load_inputs(path, fmt="csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_inputs(tmp_path / "missing.parquet")
    ladder = tmp_path / "ladder.csv"
    pd.DataFrame({"family": "f", "model_id": ["m1", "m2"], "task": "t", "metric": "acc", "value": [0.3, 0.4],
                  "params": [1e6, 1e7], "tokens": [1e9, 1e9]}).to_csv(ladder, index=False)
    assert detect_format(ladder) == "ladder"


def test_wilson_interval_golden_and_resolution_uses_it():
    from capscale.analysis.emergence.stats import wilson_interval

    lo, hi = wilson_interval(0.5, 100)
    assert (float(lo), float(hi)) == pytest.approx((0.403832, 0.596168), abs=1e-6)
    lo, hi = wilson_interval(np.array([0.0, 1.0]), 20)
    assert lo[0] == pytest.approx(0.0, abs=1e-12) and hi[1] == pytest.approx(1.0, abs=1e-12)
    assert 0 < hi[0] < 0.2 and 0.8 < lo[1] < 1


def test_planted_const_and_saturating_kinds():
    acc = {k: chain.compute(planted_store(k, n_models=7, n_items=2000, seed=1)).groupby("model_id")["acc_first"]
           .mean().to_numpy() for k in ("const", "saturating")}
    assert np.ptp(acc["const"]) < 0.05  # the latent does not depend on compute
    d = np.diff(acc["saturating"])
    assert (d > 0).all() and d[0] > 3 * d[-1]  # rises early, levels off


def test_calibration_grid_runs_and_shares_are_consistent():
    from capscale.benchmarks.emergence_calibration import calibrate, targets

    fam, shares, jump = calibrate(items=(200,), models=(7,), noises=(0.5,), reps=2, B=200, progress=False)
    assert len(fam) == 10 and set(fam["class"]) == {"flat", "smooth-linear", "smooth-saturating",
                                                     "metric-induced", "genuine"}
    cols = ["METRIC_INDUCED", "GENUINE_TRANSITION_CANDIDATE", "SMOOTH", "INVERSE_OR_NONMONOTONE",
            "INSUFFICIENT_DATA"]
    assert np.allclose(shares[[f"{c}_share" for c in cols]].sum(axis=1), 1.0)
    assert ((shares["sharp_lo"] <= shares["sharp_share"]) & (shares["sharp_share"] <= shares["sharp_hi"])).all()
    # the planted truth: expected accuracy, and the power set is the positive classes with a jump >= 20 points
    assert (fam["true_max_step"] >= 0).all() and (fam["true_range"] <= 1).all()
    assert set(jump["class"]) <= {"metric-induced", "genuine"}
    assert jump["n"].sum() == ((fam["class"].isin(["metric-induced", "genuine"])) & (fam["true_max_step"] >= 0.2)).sum()
    lines = targets(shares, jump)
    assert lines[0].startswith("false 'sharp'") and any("confusion" in s for s in lines)


def test_cli_floor_defaults_are_the_analysis_defaults():
    import argparse

    from capscale.commands import emergence as cmd

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cmd.register(sub)
    args = p.parse_args(["emergence", "x", "--all-tasks", "--out", "o"])
    for k in ("min_jex", "min_step_z", "max_pre_ratio"):
        assert getattr(args, k) == em.DEFAULTS[k], k


def test_jump_shape_effect_sizes_by_hand():
    from capscale.analysis.emergence.analysis import _jump_shape

    x = np.arange(5.0)
    # steps 0.30, 0.32, 0.18, 0.10: the largest is the second; an even rise would give 0.9 / 4 = 0.225 there
    S = np.array([[0.0, 0.30, 0.62, 0.80, 0.90]])
    out = _jump_shape(x, S, 1)
    assert out["excess_step"] == pytest.approx(0.32 - 0.225)
    assert out["pre_slope_ratio"] == pytest.approx(0.30 / 0.32)  # saturating: as steep before as at the step
    assert out["excess_step_z"] is None  # no replicates
    # a slow phase, then the jump: small ratio; replicates give the excess in bootstrap SDs
    S = np.array([[0.0, 0.02, 0.05, 0.60, 0.70], [0.0, 0.03, 0.05, 0.58, 0.70], [0.0, 0.01, 0.06, 0.63, 0.71],
                  [0.0, 0.02, 0.04, 0.61, 0.69]])
    out = _jump_shape(x, S, 2)
    assert out["pre_slope_ratio"] == pytest.approx((0.05 / 2) / 0.55)
    sd = np.diff(S[1:], axis=1)[:, 2].std(ddof=1)
    assert out["excess_step_z"] == pytest.approx((0.55 - 0.70 / 4) / sd)
    assert _jump_shape(x, S, 0)["pre_slope_ratio"] is None  # nothing before the first step


def test_kink_change_is_relative_slope_change():
    from capscale.analysis.emergence.analysis import _kink_change

    assert _kink_change({"fits": {"broken": {"b": 0.3, "d": 3.7}}}) == pytest.approx(3.7 / 4.0)
    assert _kink_change({"fits": {"broken": {"b": 2.0, "d": -0.2}}}) == pytest.approx(0.1)
    assert _kink_change({"fits": {}}) is None


def test_crossing_point_implied_accuracy_is_unbiased_at_high_noise():
    # a thresholded linear latent with 1.5 logits of noise per model x item: the leverage-corrected implied
    # accuracy follows the observed curve (before the correction it was flatter by up to ~0.05)
    items = chain.compute(planted_store("linear", n_models=10, n_items=2000, noise=1.5, seed=5))
    r = em.analyse(em.from_items(items, "planted"), B=200)
    cp = r["crossing_points"]
    assert np.max(np.abs(np.subtract(cp["observed_acc"], cp["implied_acc"]))) < 0.025
    assert cp["implied_inside_band"] and cp["max_abs_z"] < em.DEFAULTS["crossing_tol"]
    assert len(cp["paired_se"]) == 10 and min(cp["paired_se"]) >= 1 / 2000


def test_negative_tau_needs_significance_for_inverse():
    # a latent that does not move with compute: accuracy's tau is -0.23 by chance (exact p 0.37); that is not
    # inverse scaling (before, any tau < 0 gave INVERSE_OR_NONMONOTONE)
    items = chain.compute(planted_store("const", n_models=10, n_items=400, task="c", seed=1))
    r = em.analyse(em.from_items(items, "c"), B=500)
    acc = r["metrics"]["acc"]
    assert acc["tau_model"] < 0 and acc["tau_p"] > 0.05
    assert r["verdict"] == "SMOOTH", r["reasons"]
    assert acc["drop_alpha"] == pytest.approx(0.05 / 9)
