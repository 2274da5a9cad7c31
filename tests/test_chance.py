"""Chance levels that are known, not guessed (capscale.data.ladder_table.chance_of and its sources)."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from capscale.analysis import predict
from capscale.data import ladder_table as lt
from capscale.pipelines import backtest, fit


def test_table_two_way_generative_and_averages():
    assert lt.chance_of("piqa") == 0.5 and lt.chance_of("winogrande") == 0.5
    assert lt.chance_of("gsm8k") == 0.0 and lt.chance_of("gsm8k_8shot") == 0.0
    assert lt.chance_of("lambada_openai") == 0.0 and lt.chance_of("humaneval") == 0.0
    assert lt.chance_of("socialiqa") == pytest.approx(1 / 3) and lt.chance_of("csqa") == 0.2
    assert lt.chance_of("xcopa_it") == 0.5 and lt.chance_of("xnli_de") == pytest.approx(1 / 3)
    assert lt.chance_of("hendrycksTest-anatomy_5shot") == 0.25
    assert lt.chance_of("mmlu") == 0.25 and lt.chance_of("mmlu_5shot") == 0.25  # the mean of its parts


def test_unknown_task_is_an_error_that_says_how():
    with pytest.raises(lt.UnknownChanceError, match=r"--chance my_task=P.*'chance' column"):
        lt.chance_of("my_task")
    assert lt.chance_of("my_task", chance=0.1) == 0.1
    assert lt.chance_of("my_task", chance={"my_task": 0.2, "x": 0.9}) == 0.2
    with pytest.raises(lt.UnknownChanceError, match=r"must lie in \[0, 1\]"):
        lt.chance_of("my_task", chance=1.5)


def test_stated_beats_column_beats_store_beats_table():
    lad = pd.DataFrame({"task": ["piqa", "piqa"], "chance": [0.4, 0.4]})
    assert lt.chance_of("piqa", ladder=lad) == 0.4
    assert lt.chance_of("piqa", ladder=lad, chance=0.3) == 0.3
    store = pd.DataFrame({"model_id": ["m"] * 5, "task": ["piqa"] * 5, "doc_id": [0, 0, 1, 1, 1],
                          "choice_idx": [0, 1, 0, 1, 2], "is_correct": [True, False, False, True, False]})
    # items with 2 and 3 choices: (1/2 + 1/3) / 2
    assert lt.chance_from_store(store) == {"piqa": pytest.approx(5 / 12)}
    assert lt.chance_of("piqa", store=store) == pytest.approx(5 / 12)
    assert lt.chance_of("piqa", ladder=lad, store=store) == 0.4
    assert lt.with_chance(pd.DataFrame({"task": ["piqa"]}), store)["chance"].item() == pytest.approx(5 / 12)


def test_chance_column_validated():
    df = pd.DataFrame({"model_id": ["a", "b"], "params": [1e8, 1e9], "tokens": [1e10, 1e11], "task": ["t", "t"],
                       "metric": ["acc", "acc"], "value": [0.3, 0.4], "chance": [0.25, 1.25]})
    with pytest.raises(lt.LadderError, match="'chance' outside"):
        lt.check_ladder(df)
    with pytest.raises(lt.LadderError, match="several 'chance' values"):
        lt.check_ladder(df.assign(chance=[0.25, 0.5]))


def _ladder(task="my_task", chance=None):
    rows = []
    for i, n in enumerate([1e8, 3e8, 1e9, 3e9]):
        r = dict(model_id=f"m{i}", family="f", params=n, tokens=20 * n, task=task, metric="acc",
                 value=0.1 + 0.1 * i)
        if chance is not None:
            r["chance"] = chance
        rows.append(r)
    return lt.check_ladder(pd.DataFrame(rows))


def test_predictor_uses_the_stated_chance():
    with pytest.raises(lt.UnknownChanceError, match="my_task"):
        predict.get_method("sigmoid", bootstrap=0).fit(_ladder(), "my_task")
    pr = predict.get_method("sigmoid", bootstrap=0, chance=0.0).fit(_ladder(), "my_task")
    assert pr.chance_ == 0.0
    assert predict.get_method("sigmoid", bootstrap=0).fit(_ladder(chance=0.05), "my_task").chance_ == 0.05
    # loglinear does not need chance, but accuracy tasks are resolved the same way for every method
    pr, _ = predict.fit_method(_ladder(), "my_task", "loglinear", bootstrap=0, chance={"my_task": 0.0})
    assert pr.chance_ == 0.0


def test_cli_chance_flag_parsed():
    ns = argparse.Namespace(task="a", all_tasks=False, holdout="largest", method="sigmoid", name=None, bootstrap=0,
                            seed=0, chance="a=0,b=0.5")
    o = backtest.Options.from_cli(ns)
    assert o.chance == {"a": 0.0, "b": 0.5} and o.predictor_options()["chance"] == {"a": 0.0, "b": 0.5}
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        fit.parse_chance("a=2")
    lad = _ladder()
    res = backtest.run(lad, backtest.Options(tasks=("my_task",), method="sigmoid", bootstrap=0,
                                             chance={"my_task": 0.0}))
    assert np.isfinite(res.summary["mae"])
