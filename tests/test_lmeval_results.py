"""Loaders of lm-eval result folders and BigScience checkpoint ladders (capscale.data.lmeval_results), the OLMo 3B N."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capscale.data import lmeval_results as lr
from capscale.data import published
from capscale.pipelines.inputs import guess_format, read_ladder_or_store


def _write(path, results, shots=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"results": results, "config": {"model_args": "x", "num_fewshot": shots}}))


def _folder(tmp_path):
    root = tmp_path / "results"
    for name, acc in (("fam-560m", 0.3), ("fam-1b1", 0.4), ("fam-7b1", 0.5)):
        _write(root / "fam" / name / f"{name}_cs_0-shot.json",
               {"piqa": {"acc": acc, "acc_stderr": 0.01}, "lambada_openai": {"ppl": 20.0, "acc": acc}})
        _write(root / "fam" / name / f"{name}_mmlu_5-shot.json",
               {"hendrycksTest-a": {"acc": acc}, "hendrycksTest-b": {"acc": acc + 0.02}}, shots=5)
    return root


def test_params_from_name():
    assert lr.params_from_name("bloom-560m") == 560e6
    assert lr.params_from_name("bloom-1b1") == pytest.approx(1.1e9)
    assert lr.params_from_name("bloom-7b1") == pytest.approx(7.1e9)
    assert lr.params_from_name("xglm-1.7B") == pytest.approx(1.7e9)
    assert lr.params_from_name("llama-30B") == 30e9
    assert lr.params_from_name("gpt-neo") is None


def test_load_folder_golden(tmp_path):
    root = _folder(tmp_path)
    lad = lr.load_lmeval_results(root, tokens={"fam": 1e11})
    assert sorted(lad["model_id"].unique()) == ["fam-1b1", "fam-560m", "fam-7b1"]
    r = lad[(lad.model_id == "fam-1b1") & (lad.task == "piqa")].iloc[0]
    assert r["params"] == pytest.approx(1.1e9) and r["tokens"] == 1e11 and r["stderr"] == 0.01
    assert r["compute"] == pytest.approx(6 * 1.1e9 * 1e11)
    mm = lad[(lad.model_id == "fam-560m") & (lad.task == "mmlu_5shot")]["value"].item()
    assert mm == pytest.approx(0.31)
    tl = lad[(lad.model_id == "fam-560m") & (lad.metric == "task_loss")]["value"].item()
    assert tl == pytest.approx(np.log(20.0))
    assert "hendrycksTest-a_5shot" in set(lad["task"])
    # a model's own entry wins over its family's
    lad2 = lr.load_lmeval_results(root, tokens={"fam": 1e11, "fam-7b1": 2e11})
    assert lad2.loc[lad2.model_id == "fam-7b1", "tokens"].unique().tolist() == [2e11]
    assert guess_format(root) == "lmeval-results"
    lad3, store = read_ladder_or_store(root, tokens={"fam": 1e11})
    assert store is None and len(lad3) == len(lad)


def test_missing_tokens_and_size_are_errors(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(lr.LmEvalResultsError, match=r"training tokens of 'fam-1b1'.*--tokens fam=D"):
        lr.load_lmeval_results(root)
    _write(root / "fam" / "gpt-neo" / "x.json", {"piqa": {"acc": 0.5}})
    with pytest.raises(lr.LmEvalResultsError, match="cannot read N from the model name 'gpt-neo'"):
        lr.load_lmeval_results(root, tokens=1e11)
    lad = lr.load_lmeval_results(root, tokens=1e11, sizes={"gpt-neo": 1.3e9})
    assert lad.loc[lad.model_id == "gpt-neo", "params"].unique().tolist() == [1.3e9]


@pytest.mark.parametrize("content, match", [
    ("{not json", "not a JSON file"),
    (json.dumps({"config": {"num_fewshot": 0}}), "no 'results' object"),
    (json.dumps({"results": {"piqa": {"acc": 0.5}}}), "config.num_fewshot"),
    (json.dumps({"results": {"piqa": {"acc": "high"}}, "config": {"num_fewshot": 0}}), r"results\.piqa\.acc"),
    (json.dumps({"results": {"piqa": {"acc": 1.4}}, "config": {"num_fewshot": 0}}), "outside"),
])
def test_bad_files_name_file_and_key(tmp_path, content, match):
    f = tmp_path / "fam" / "fam-1b" / "bad.json"
    f.parent.mkdir(parents=True)
    f.write_text(content)
    with pytest.raises(lr.LmEvalResultsError, match=match) as e:
        lr.load_lmeval_results(tmp_path, tokens=1e11)
    assert "bad.json" in str(e.value) or "outside" in str(e.value)


def test_conflicting_duplicates(tmp_path):
    root = _folder(tmp_path)
    _write(root / "fam" / "fam-560m" / "fam-560m_glue_0-shot.json", {"piqa": {"acc": 0.9}})
    with pytest.raises(lr.LmEvalResultsError, match=r"conflicts with .*'fam-560m'.*'piqa'"):
        lr.load_lmeval_results(root, tokens=1e11)
    with pytest.warns(UserWarning, match="differ between two files"):
        lad = lr.load_lmeval_results(root, tokens=1e11, duplicates="first")
    assert lad[(lad.model_id == "fam-560m") & (lad.task == "piqa")]["value"].item() == 0.3
    # an identical repeat is read once, silently
    _write(root / "fam" / "fam-560m" / "fam-560m_glue_0-shot.json", {"piqa": {"acc": 0.3}})
    assert len(lr.load_lmeval_results(root, tokens=1e11)) == len(lad)


def test_bigscience_loader(tmp_path):
    f = tmp_path / "tr3" / "run-1B3_agg.json"
    f.parent.mkdir()
    f.write_text(json.dumps({"tokens": [1e10, 2e10], "checkpoints": [100, 200],
                             "results": {"piqa": {"acc": [0.6, 0.62], "acc_stderr": [0.01, 0.01]}}}))
    lad = lr.load_bigscience_ladder(tmp_path)
    assert list(lad["model_id"]) == ["run-1B3@step100", "run-1B3@step200"]
    assert (lad["params"] == 1.3e9).all() and list(lad["tokens"]) == [1e10, 2e10]
    assert guess_format(tmp_path) == "bigscience-evals"
    f.write_text(json.dumps({"tokens": [1e10, 2e10], "checkpoints": [100, 200],
                             "results": {"piqa": {"acc": [0.6]}}}))
    with pytest.raises(lr.LmEvalResultsError, match=r"run-1B3_agg.json: key 'results.piqa.acc'"):
        lr.load_bigscience_ladder(tmp_path)
    f.write_text(json.dumps({"checkpoints": [1], "results": {}}))
    with pytest.raises(lr.LmEvalResultsError, match="key 'tokens' missing"):
        lr.load_bigscience_ladder(tmp_path)


def test_parse_mapping():
    assert lr.parse_mapping("bloom=3.66e11, llama-30B=1.4e12") == {"bloom": 3.66e11, "llama-30B": 1.4e12}
    with pytest.raises(ValueError, match="not a number"):
        lr.parse_mapping("bloom=many")


def test_real_lmeval_results(shared_data):
    with pytest.warns(UserWarning, match="differ between two files"):
        lad = lr.load_lmeval_results(shared_data / "lmeval-2023-results" / "results", tokens=lr.PAPER_TOKENS,
                                     duplicates="first")
    sizes = lad.groupby("model_id")["params"].first()
    assert sizes["bloom-7b1"] == pytest.approx(7.1e9) and sizes["xglm-564M"] == pytest.approx(564e6)
    assert lad.loc[lad.model_id == "llama-30B", "tokens"].unique().tolist() == [1.4e12]
    # golden: bloom-1b1 arc_easy acc as in its common-sense file
    v = lad[(lad.model_id == "bloom-1b1") & (lad.task == "arc_easy") & (lad.metric == "acc")]["value"].item()
    assert v == pytest.approx(0.5147306397306397)
    assert {"mmlu_5shot"} <= set(lad.loc[lad.family == "llama", "task"])


def test_real_bigscience(shared_data):
    lad = lr.load_bigscience_ladder(shared_data / "bigscience-evals")
    assert lad["run"].nunique() == 5
    ck = lad.groupby("run")["model_id"].nunique()
    assert ck["tr3e-1B3-c4-checkpoints"] == 34 and ck["tr12b-1B3-oscar-en-filtered-dedup"] == 66
    assert lad["tokens"].max() == pytest.approx(112.28e9, rel=1e-3)


def test_real_olmo_3b_params(shared_data):
    n3, f3, det = published.olmo_3b_params(shared_data / "olmo-ladder")
    assert f3 == pytest.approx(22970355200.0)
    assert n3 == pytest.approx(3.1185e9, rel=1e-3)
    assert det["n_nearest_ratio"] == pytest.approx(2.907e9, rel=1e-3)
    lad = published.load_olmo_ladder(shared_data / "olmo-ladder", runs="all+3b", targets=False)
    assert lad.loc[lad.run.str.startswith("3B"), "run"].nunique() == 6
