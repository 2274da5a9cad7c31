"""Ingest of lm-eval --log_samples output: a real log from lm-eval's simple_evaluate on a tiny random model."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from helpers_models import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from capscale.cli import main
from capscale.data import store
from capscale.data.family import Checkpoint
from capscale.data.ingest import IngestError, _pair, ingest_lm_eval, samples_to_rows, task_from_filename
from capscale.data.tasks import build_items, local_tasks_dir, resolve_tasks
from capscale.eval.shards import EvalOptions, score_items


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory, mc_data):
    """simple_evaluate(HFLM(tiny model), local arc_easy + winogrande, limit 4, log_samples) and its JSONL files."""
    import os

    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.getbasetemp() / "hf_datasets")
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tok = tiny_model(seed=3)
    lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tok), batch_size=2)
    tm = TaskManager(include_path=str(local_tasks_dir()), include_defaults=False,
                     metadata={"capscale_data_dir": str(mc_data)})
    res = lm_eval.simple_evaluate(model=lm, tasks=["arc_easy", "winogrande"], task_manager=tm, limit=4,
                                  log_samples=True, bootstrap_iters=0, device="cpu")
    out = tmp_path_factory.mktemp("lmeval") / "out"
    # as lm-eval's CLI does with --output_path out --log_samples --model_args pretrained=EleutherAI/none
    tracker = EvaluationTracker(output_path=str(out))
    tracker.general_config_tracker.log_experiment_args(model_source="hf", model_args="pretrained=EleutherAI/none",
                                                       system_instruction=None, chat_template=None,
                                                       fewshot_as_multiturn=False)
    agg = {k: v for k, v in res.items() if k != "samples"}
    agg["config"] = {**res["config"], "model_args": "pretrained=EleutherAI/none"}
    tracker.save_results_aggregated(results=agg, samples=res["samples"])
    for task in ("arc_easy", "winogrande"):
        tracker.save_results_samples(task_name=task, samples=copy.deepcopy(res["samples"][task]))
    return model, tok, res, out


def _spec(tmp_path):
    (tmp_path / "fam.yaml").write_text("family: tiny\ncheckpoints:\n"
                                       "  - {path: EleutherAI/none, model_id: tiny-3, params: 60000, tokens: 1000000,"
                                       " step: 7}\n"
                                       "  - {path: EleutherAI/other, model_id: tiny-4, params: 90000, tokens: 2000000}\n")
    return tmp_path / "fam.yaml"


def test_ingest_real_lm_eval_log(lm_eval_run, tmp_path, mc_data, capsys):
    model, tok, res, out = lm_eval_run
    files = sorted(out.rglob("samples_*.jsonl"))
    assert files and files[0].parent.name == "EleutherAI__none"
    assert [task_from_filename(f) for f in files] == ["arc_easy", "winogrande"]
    line = json.loads(files[0].read_text().splitlines()[0])
    assert isinstance(line["filtered_resps"][0][0], str)  # the on-disk form: strings
    spec = _spec(tmp_path)
    # the checkpoint is found from the results JSON beside the samples (model_args pretrained=...)
    rc = main(["ingest", "lm-eval", str(out), "--family", str(spec), "--out", str(tmp_path / "store")])
    assert rc == 0, capsys.readouterr().err
    df = store.read(tmp_path / "store")
    assert set(df.model_id) == {"tiny-3"} and set(df.step) == {7} and set(df.params) == {60000}
    for task in ("arc_easy", "winogrande"):
        sub = df[df.task == task].sort_values(["doc_id", "choice_idx"])
        mem = sorted(res["samples"][task], key=lambda s: s["doc_id"])
        assert sorted(sub.doc_id.unique()) == [s["doc_id"] for s in mem]
        want = [float(ll) for s in mem for ll, _ in s["filtered_resps"]]
        assert np.array_equal(sub.loglik.to_numpy(), np.array(want))
        # acc recomputed from the store equals lm-eval's per-sample acc
        for s in mem:
            rows = sub[sub.doc_id == s["doc_id"]]
            assert float(rows.is_correct.to_numpy()[np.argmax(rows.loglik.to_numpy())]) == s["acc"]
        # acc_norm (by characters) too, for the normal task
        if task == "arc_easy":
            for s in mem:
                rows = sub[sub.doc_id == s["doc_id"]]
                pred = np.argmax(rows.loglik.to_numpy() / rows.n_chars.to_numpy())
                assert float(rows.is_correct.to_numpy()[pred]) == s["acc_norm"]
    assert df[df.task == "winogrande"].multiple_input.all()

    # capscale's own engine on the same items gives the same numbers (<= 1e-4 nats, fp32)
    (spec_t,) = resolve_tasks("arc_easy", data_dir=mc_data, limit=4)
    built = build_items(spec_t)
    mine, _ = score_items(model, tok, built.items, checkpoint=Checkpoint("tiny-3", "x", 1, 1), task="arc_easy",
                          options=EvalOptions(progress=False))
    ref = df[df.task == "arc_easy"].sort_values(["doc_id", "choice_idx"])
    assert np.abs(mine.sort_values(["doc_id", "choice_idx"]).loglik.to_numpy() - ref.loglik.to_numpy()).max() <= 1e-4
    assert (mine.sort_values(["doc_id", "choice_idx"]).is_correct.to_numpy() == ref.is_correct.to_numpy()).all()

    # rerun skips existing shards; several checkpoints without --model-id is an error naming the file
    again = ingest_lm_eval(out, spec, tmp_path / "store", model_id="tiny-3")
    assert again.shards == [] and len(again.excluded["shard_exists_skipped"]) == 2
    # a store written with the old (non-injective) shard names: the old file counts as this shard, and
    # --overwrite replaces it instead of leaving two copies of the rows
    sdir = tmp_path / "store"
    for task in ("arc_easy", "winogrande"):
        (sdir / store.shard_name("tiny-3", task)).rename(sdir / store.legacy_shard_name("tiny-3", task))
    assert ingest_lm_eval(out, spec, sdir, model_id="tiny-3").shards == []
    ingest_lm_eval(out, spec, sdir, model_id="tiny-3", overwrite=True)
    assert len(store.read(sdir)) == len(df) and len(list(sdir.glob("*.parquet"))) == 2
    for f in out.rglob("results_*.json"):
        f.unlink()
    # without the results JSON the folder name (lm-eval's sanitised model name) still identifies it
    assert ingest_lm_eval(out, spec, tmp_path / "store1").n_rows == len(df)
    other = tmp_path / "renamed" / "some_model"
    other.mkdir(parents=True)
    for f in files:
        shutil.copy(f, other / f.name)
    with pytest.raises(IngestError, match="cannot tell which checkpoint.*--model-id"):
        ingest_lm_eval(other.parent, spec, tmp_path / "store2")
    assert ingest_lm_eval(other.parent, spec, tmp_path / "store2", model_id="tiny-4").n_rows == len(df)


def test_in_memory_samples_and_value_forms(lm_eval_run):
    _, _, res, _ = lm_eval_run
    ck = Checkpoint("m", "x", 5, 6, family="f")
    df = samples_to_rows(res["samples"]["arc_easy"], task="arc_easy", checkpoint=ck)
    assert len(df) == sum(len(s["filtered_resps"]) for s in res["samples"]["arc_easy"])
    assert _pair(["-1.5", "False"]) == (-1.5, False) and _pair("(-2.0, True)") == (-2.0, True)
    assert _pair([["-3", "True"]]) == (-3.0, True)  # resps: one list of repeats per request
    # an older-style sample: list arguments, resps only, target as a choice string
    s = {"doc_id": 0, "target": " b", "arguments": [["ctx", " a"], ["ctx", " b"]],
         "resps": [[["-2.0", "False"]], [["-1.0", "True"]]]}
    d = samples_to_rows([s], task="t", checkpoint=ck)
    assert list(d.is_correct) == [False, True] and list(d.loglik) == [-2.0, -1.0] and list(d.n_chars) == [1, 1]
    with pytest.raises(IngestError, match="t doc_id=0: 2 arguments but 1 responses"):
        samples_to_rows([{**s, "resps": [[["-1", "False"]]]}], task="t", checkpoint=ck)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_samples_roundtrip_property(data):
    """Any logged MC sample, in the on-disk (strings) or in-memory form, gives back its logliks and gold."""
    k = data.draw(st.integers(1, 6))
    lls = data.draw(st.lists(st.floats(-1e4, 0, allow_nan=False), min_size=k, max_size=k))
    greedy = data.draw(st.lists(st.booleans(), min_size=k, max_size=k))
    gold = data.draw(st.integers(0, k - 1))
    choices = [f"choice {j} é" for j in range(k)]
    mem = {"doc_id": 3, "target": gold, "arguments": [("Q: x\nA:", " " + c) for c in choices],
           "filtered_resps": list(zip(lls, greedy, strict=True)), "filter": "none"}
    disk = {**mem, "target": str(gold),
            "arguments": {f"gen_args_{j}": {"arg_0": a, "arg_1": b} for j, (a, b) in enumerate(mem["arguments"])},
            "filtered_resps": [[repr(ll), str(g)] for ll, g in mem["filtered_resps"]]}
    ck = Checkpoint("m", "x", 5, 6, family="f")
    for s in (mem, disk):
        df = samples_to_rows([s], task="t", checkpoint=ck)
        assert df.loglik.tolist() == lls and df.is_greedy.tolist() == greedy
        assert df.is_correct.tolist() == [j == gold for j in range(k)]
        assert df.n_chars.tolist() == [len(c) for c in choices] and df.n_bytes.tolist() == [len(c.encode())
                                                                                            for c in choices]
