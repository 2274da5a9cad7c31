"""Chain metrics: golden test vector (docs/chain.md §2.1, docs/emergence.md §9.2) and deterministic properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capscale.analysis import chain


def _item(ll, gold, **extra) -> pd.DataFrame:
    k = len(ll)
    gold = {gold} if isinstance(gold, int) else set(gold)
    d = dict(model_id="m", family="f", params=10, tokens=10, task="t", doc_id=0, choice_idx=list(range(k)),
             is_correct=[i in gold for i in range(k)], loglik=list(map(float, ll)))
    d |= extra
    return pd.DataFrame(d)


def test_golden_vector():
    r = chain.compute(_item([-2, -1, -3, -4], 1)).iloc[0]
    p = np.exp(np.array([-2, -1, -3, -4.0]) - np.log(np.exp([-2, -1, -3, -4.0]).sum()))
    np.testing.assert_allclose(p, [0.236883, 0.643914, 0.087144, 0.032059], atol=1e-6)
    assert r.p_choices_correct == pytest.approx(0.643914, abs=1e-6)
    assert r.log_p_choices_correct == pytest.approx(-0.440190, abs=1e-6)
    assert r.p_vocab_correct == pytest.approx(0.367879, abs=1e-6)
    assert r.log_p_vocab_incorrect == pytest.approx(-1.592394, abs=1e-6)
    assert r.choice_logodds == pytest.approx(0.592394, abs=1e-6)
    assert r.margin == pytest.approx(1.0, abs=1e-12)
    assert r.acc == 1.0
    assert r.brier == pytest.approx(0.047883, abs=1e-6)
    assert r.brier * 4 == pytest.approx(0.191532, abs=1e-6)


def test_ties_fractional_and_first_index():
    r0 = chain.compute(_item([-1, -1, -3], 0)).iloc[0]
    r1 = chain.compute(_item([-1, -1, -3], 1)).iloc[0]
    r2 = chain.compute(_item([-1, -1, -3], 2)).iloc[0]
    assert (r0.acc, r1.acc, r2.acc) == (0.5, 0.5, 0.0)
    assert (r0.acc_first, r1.acc_first) == (1.0, 0.0)


def test_acc_norm_by_characters_and_bytes():
    # choice 0 longer: raw loglik favours choice 1, per-character favours choice 0
    df = _item([-6.0, -4.0], 0, n_chars=[12, 4], n_bytes=[12, 10])
    r = chain.compute(df).iloc[0]
    assert r.acc == 0.0 and r.acc_norm == 1.0 and r.acc_bytes == 0.0
    assert r.neg_bpb == pytest.approx(-6.0 / (12 * np.log(2)))
    with pytest.raises(ValueError, match="empty choice"):
        chain.compute(_item([-6.0, -4.0], 0, n_chars=[0, 4]))


def test_target_is_greedy_and_multi_gold():
    r = chain.compute(_item([-2, -1, -3], 1, is_greedy=[False, True, False])).iloc[0]
    assert r.target_is_greedy == 1.0
    r = chain.compute(_item([-2, -1, -3], [0, 1])).iloc[0]
    assert r.log_p_vocab_correct == -1.0  # max over golds
    assert r.p_choices_correct == pytest.approx(np.exp(-2) / np.exp([-2, -1, -3]).sum() + np.exp(-1) /
                                                np.exp([-2, -1, -3]).sum())


def test_extreme_logliks_do_not_underflow():
    r = chain.compute(_item([-2000.0, -2001.0, -2005.0, -1999.5], 0)).iloc[0]
    assert np.isfinite(r.log_p_choices_correct) and 0 < r.p_choices_correct < 1
    assert r.log_p_vocab_correct == -2000.0 and r.p_vocab_correct == 0.0


logliks = st.lists(st.floats(-60, 0, allow_nan=False), min_size=2, max_size=7)


@settings(max_examples=200, deadline=None)
@given(ll=logliks, data=st.data())
def test_accuracy_forced_outside_window_and_brier_bounds(ll, data):
    k = len(ll)
    gold = data.draw(st.integers(0, k - 1))
    r = chain.compute(_item(ll, gold)).iloc[0]
    p = r.p_choices_correct
    if p > 0.5 + 1e-9:
        assert r.acc == 1.0
    if p < 1 / k - 1e-9:
        assert r.acc == 0.0
    lo, hi = (1 - p) ** 2 / (k - 1), 2 * (1 - p) ** 2 / k
    assert lo - 1e-12 <= r.brier <= hi + 1e-12
    assert 0 <= r.brier <= 2 / k + 1e-12
    # acc = 1[margin > 0] away from ties; p_choices = sigmoid(logodds)
    if abs(r.margin) > 1e-9:
        assert r.acc == float(r.margin > 0)
    assert p == pytest.approx(1 / (1 + np.exp(-r.choice_logodds)), rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(ll=logliks, shift=st.floats(-50, 50), data=st.data())
def test_shift_invariance(ll, shift, data):
    gold = data.draw(st.integers(0, len(ll) - 1))
    a = chain.compute(_item(ll, gold)).iloc[0]
    b = chain.compute(_item([x + shift for x in ll], gold)).iloc[0]
    for m in ("p_choices_correct", "brier", "margin", "choice_logodds"):
        assert a[m] == pytest.approx(b[m], rel=1e-7, abs=1e-9), m
    if abs(a.margin) > 1e-6:
        assert a.acc == b.acc
    assert b.log_p_vocab_correct == pytest.approx(a.log_p_vocab_correct + shift, abs=1e-9)


def test_vectorised_matches_per_item_reference():
    from scipy.special import logsumexp

    from capscale.data import store

    df = store.example_store(n_models=4, n_items=30, k=5, seed=3)
    out = chain.compute(df)
    for _, r in out.sample(20, random_state=0).iterrows():
        g = df[(df.model_id == r.model_id) & (df.doc_id == r.doc_id)].sort_values("choice_idx")
        ll, y = g.loglik.to_numpy(), g.is_correct.to_numpy()
        p = np.exp(ll - logsumexp(ll))
        c = int(np.argmax(y))
        assert r.log_p_choices_correct == pytest.approx(ll[c] - logsumexp(ll))
        assert r.brier == pytest.approx(np.mean((p - y) ** 2))
        assert r.acc == float(np.argmax(ll) == c)
        assert r.log_p_vocab_incorrect == pytest.approx(logsumexp(np.delete(ll, c)))
        assert r.margin == pytest.approx(ll[c] - np.delete(ll, c).max())
    assert len(out) == 4 * 30


def test_acc_norm_partial_n_chars_and_empty_choice_is_input_error():
    from capscale.errors import InputError

    a = _item([-2, -1, -3, -4], 1, n_chars=[10, 1, 10, 10])
    b = _item([-2, -1, -3, -4], 1).assign(doc_id=1)
    items = chain.compute(pd.concat([a, b], ignore_index=True))
    assert items.loc[items["doc_id"] == 0, "acc_norm"].iloc[0] == 0.0
    assert np.isnan(items.loc[items["doc_id"] == 1, "acc_norm"].iloc[0])
    cov = chain.metric_coverage(items)["acc_norm"]
    assert cov["rows"] == 1 and cov["rows_total"] == 2 and "n_chars" in cov["missing_reason"]
    with pytest.raises(InputError, match="n_chars"):
        chain.compute(_item([-2, -1, -3, -4], 1, n_chars=[0, 1, 1, 1]))
