"""End to end on real transformers models: score items, build a store, run the whole chain analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers_models import tiny_model

from capscale.analysis import chain, correlate
from capscale.data import store
from capscale.eval import scoring
from capscale.pipelines import analyze

ITEMS = [
    ("Question: What colour is the sky on a clear day?\nAnswer:", ["blue", "green", "red", "loud"], 0),
    ("Question: How many legs does a spider have?\nAnswer:", ["six", "eight", "ten", "two"], 1),
    ("The capital of France is", ["Berlin", "Madrid", "Paris", "Rome"], 2),
    ("Water boils at one hundred degrees", ["Kelvin", "Fahrenheit", "per hour", "Celsius"], 3),
    ("Question: Which is a fruit?\nAnswer:", ["apple", "carrot", "onion", "potato"], 0),
]


def _score_model(name: str, seed: int, arch: str) -> pd.DataFrame:
    model, tok = tiny_model(arch, seed=seed)
    reqs, meta = [], []
    for doc, (ctx, choices, gold) in enumerate(ITEMS):
        for i, ch in enumerate(choices):
            reqs.append(scoring.Request(ctx, " " + ch))
            meta.append((doc, i, i == gold, ch))
    scores = scoring.score_requests(model, tok, reqs, batch_size=4, progress=False)
    n = sum(p.numel() for p in model.parameters())
    return pd.DataFrame({
        "model_id": name, "family": f"tiny-{arch}", "params": n, "tokens": 1000 * (seed + 1), "task": "handmade",
        "doc_id": [m[0] for m in meta], "choice_idx": [m[1] for m in meta], "is_correct": [m[2] for m in meta],
        "loglik": [s.loglik for s in scores], "n_tokens": [s.n_tokens for s in scores],
        "is_greedy": [s.is_greedy for s in scores], "n_chars": [len(m[3]) for m in meta],
        "n_bytes": [len(m[3].encode()) for m in meta],
    })


def test_score_store_chain_analyze(tmp_path):
    df = pd.concat([_score_model(f"m{s}", s, "gpt_neox") for s in range(3)], ignore_index=True)
    assert store.validate(df) == []
    store.write(df, tmp_path / "scores.parquet")
    back = store.read(tmp_path / "scores.parquet")
    items = chain.compute(back)
    assert len(items) == 3 * len(ITEMS)
    assert np.isfinite(items["log_p_vocab_correct"]).all() and (items["log_p_vocab_correct"] < 0).all()
    np.testing.assert_allclose(
        items.groupby(["model_id", "doc_id"]).size(), 1)  # one row per model x item
    # p_choices is a distribution: summing the softmax of every choice gives 1
    for (_m, _d), g in back.groupby(["model_id", "doc_id"]):
        ll = g["loglik"].to_numpy()
        assert np.isclose(np.exp(ll - np.logaddexp.reduce(ll)).sum(), 1.0)
    corr = correlate.per_item_correlations(items)
    assert set(corr["method"]) == {"pearson", "spearman", "kendall"}
    info = analyze.run(back, analyze.Options(out=tmp_path / "analysis", progress=False)).summary
    assert info["models"] == 3
    assert (tmp_path / "analysis" / "summary.csv").exists()
