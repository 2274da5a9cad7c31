"""capscale.data.select.final_checkpoints: the one rule for the final checkpoint of each run or size."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capscale.data.select import final_checkpoints, run_keys


def _ladder(**cols):
    return pd.DataFrame(cols)


def test_most_tokens_wins_then_step_then_model_id():
    lad = _ladder(model_id=["r@1", "r@2", "r@3", "s@1", "s@2"], tokens=[1e8, 3e8, 3e8, 5e8, 5e8],
                  step=[1, 2, 3, 7, 7], params=1e6)
    # run r: 3e8 tokens tie between steps 2 and 3 -> step 3; run s: full tie -> larger model_id "s@2"
    assert sorted(final_checkpoints(lad)["model_id"]) == ["r@3", "s@2"]


def test_keeps_every_row_of_the_chosen_checkpoint_in_input_order():
    store = pd.DataFrame({"model_id": ["a", "a", "b", "b", "a"], "params": 1.0, "family": "f",
                          "tokens": [1.0, 1.0, 2.0, 2.0, 1.0], "choice": [0, 1, 0, 1, 2]})
    out = final_checkpoints(store, by="params")
    assert out.index.tolist() == [2, 3] and set(out["model_id"]) == {"b"}


def test_by_params_groups_per_family_and_size():
    df = _ladder(model_id=["f1", "f2", "g1", "g2"], family=["f", "f", "g", "g"], params=[1e6] * 4,
                 tokens=[1, 2, 3, 1])
    assert sorted(final_checkpoints(df, by="params")["model_id"]) == ["f2", "g1"]


def test_missing_tokens_lose_against_known_ones():
    df = _ladder(model_id=["x@a", "x@b"], tokens=[float("nan"), 1.0])
    assert final_checkpoints(df)["model_id"].tolist() == ["x@b"]


def test_run_column_beats_the_model_id_prefix():
    df = _ladder(model_id=["a@1", "b@1"], run=["r", "r"], tokens=[1, 2])
    assert final_checkpoints(df)["model_id"].tolist() == ["b@1"]
    assert run_keys(df).tolist() == ["r", "r"]


def test_auto_uses_sizes_when_runs_are_single_checkpoints():
    """A store ladder whose model ids carry no @step: checkpoints of one size count as one run."""
    lad = _ladder(model_id=["a-1", "a-2", "b-1", "b-2", "b-3"], run=["a-1", "a-2", "b-1", "b-2", "b-3"],
                  family="f", params=[1e6, 1e6, 4e6, 4e6, 4e6], tokens=[1e8, 2e8, 1e8, 3e8, 2e8],
                  step=[1.0, 2.0, 1.0, 3.0, 2.0])
    assert sorted(final_checkpoints(lad, by="auto")["model_id"]) == ["a-2", "b-2"]
    # a data-scaling family (one size) keeps every checkpoint
    one = lad[lad["params"] == 4e6]
    assert len(final_checkpoints(one, by="auto")) == 3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="by must be"):
        final_checkpoints(_ladder(model_id=["a"], tokens=[1]), by="size")
    with pytest.raises(ValueError, match="params"):
        final_checkpoints(_ladder(model_id=["a"], tokens=[1]), by="params")


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.tuples(st.sampled_from("abc"), st.integers(0, 4)), st.integers(0, 3), min_size=1,
                       max_size=15))
def test_one_checkpoint_per_run_with_the_most_tokens(rows):
    df = pd.DataFrame([{"model_id": f"{r}@{s}", "tokens": float(t), "step": s} for (r, s), t in rows.items()])
    out = final_checkpoints(df)
    runs = df["model_id"].str.split("@").str[0]
    assert out["model_id"].nunique() == runs.nunique()
    best = df.groupby(runs)["tokens"].max()
    got = out.set_index(out["model_id"].str.split("@").str[0])["tokens"]
    assert (got.sort_index() == best.sort_index()).all()
    # order does not matter
    assert set(final_checkpoints(df.sample(frac=1, random_state=0))["model_id"]) == set(out["model_id"])
