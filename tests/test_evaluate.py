"""The eval orchestrator on tiny random-init checkpoints and real items: shards, reruns, interruption,
the lm-eval backend, the items fast path, and bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from helpers_models import save_tiny_checkpoint, tiny_model

from capscale.cli import main
from capscale.data import store
from capscale.data.family import Checkpoint, load_spec
from capscale.errors import InputError
from capscale.eval import local
from capscale.eval.evaluate import evaluate, evaluate_item_sets, evaluate_items
from capscale.eval.shards import RUN_LOG, EvalError, EvalOptions

OPTS = EvalOptions(progress=False, batch_size=4)


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf_datasets"))


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("fam")
    save_tiny_checkpoint(root / "tiny" / "step100", seed=0)
    save_tiny_checkpoint(root / "tiny" / "step200", seed=1)
    (root / "family.yaml").write_text("family: tiny\ntokens_per_step: 5000\ncheckpoints:\n"
                                      "  - {path: tiny/step100, params: 60000, step: 100}\n"
                                      "  - {path: tiny/step200, params: 60000, step: 200}\n")
    return root / "family.yaml"


def test_eval_cli_writes_valid_shards_and_run_log(family, mc_data, tmp_path, capsys):
    out = tmp_path / "store"
    rc = main(["eval", "--family", str(family), "--tasks", "arc_easy,winogrande", "--out", str(out),
               "--data-dir", str(mc_data), "--limit", "3", "--batch-size", "4", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    shards = sorted(p.name for p in out.glob("*.parquet"))
    assert shards == sorted(store.shard_name(m, t) for m in ("tiny-step100", "tiny-step200")
                            for t in ("arc_easy", "winogrande"))
    df = store.read(out)
    assert set(df["tokens"]) == {500_000, 1_000_000} and set(df["step"]) == {100, 200}
    arc = df[(df.task == "arc_easy") & (df.model_id == "tiny-step100")].sort_values(["doc_id", "choice_idx"])
    first = json.loads(open(mc_data / "arc_easy" / "test.jsonl").readline())
    texts = [c["text"] for c in first["question"]["choices"]]
    got = arc[arc.doc_id == 0]
    assert list(got.n_chars) == [len(t) for t in texts] and list(got.n_bytes) == [len(t.encode()) for t in texts]
    assert got.is_correct.sum() == 1 and (got.loglik < 0).all() and (got.n_tokens > 0).all()
    wg = df[df.task == "winogrande"]
    assert wg.multiple_input.all() and not arc.multiple_input.any()
    assert set(df.task_source) == {"capscale-local:tasks/arc_easy.yaml", "capscale-local:tasks/winogrande.yaml"}
    # the two checkpoints differ (different seeds): the rows are not copies
    a = df[df.model_id == "tiny-step100"].sort_values(["task", "doc_id", "choice_idx"]).loglik.to_numpy()
    b = df[df.model_id == "tiny-step200"].sort_values(["task", "doc_id", "choice_idx"]).loglik.to_numpy()
    assert not np.allclose(a, b)
    log = json.loads((out / RUN_LOG).read_text())["runs"][-1]
    assert log["status"] == "done" and log["options"]["dtype"] is None and log["options"]["device"] == "cpu"
    assert log["options"]["batch_size"] == 4 and {"torch", "transformers", "lm_eval"} <= set(log["versions"])
    assert log["tasks"]["arc_easy"] == "capscale-local:tasks/arc_easy.yaml"
    assert len(log["shards"]) == 4 and all(s["wall_s"] > 0 and s["dtype"] == "float32" for s in log["shards"])

    # rerun: everything skipped, files untouched
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    res = evaluate(family, "arc_easy,winogrande", out, data_dir=mc_data, limit=3, options=OPTS)
    assert [r.status for r in res] == ["skipped"] * 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == mtimes
    assert all(r.note is None for r in res)
    # a rerun with other settings refuses (tests/test_eval_reruns.py) and leaves the shards as they were
    with pytest.raises(InputError, match="dtype: 'float32' in the shard, 'bfloat16' in this run"):
        evaluate(family, "arc_easy", out, data_dir=mc_data, limit=3,
                 options=EvalOptions(progress=False, dtype="bfloat16"))
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == mtimes


def test_interrupted_run_keeps_finished_shards_and_resumes(family, mc_data, tmp_path, monkeypatch):
    out = tmp_path / "store"
    real = local.run_shard
    calls = []

    def flaky(shard, options, **kw):
        calls.append(shard.key)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second shard
        return real(shard, options, **kw)

    monkeypatch.setattr(local, "run_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluate(family, "piqa,copa", out, data_dir=mc_data, limit=2, options=OPTS)
    assert [p.name for p in out.glob("*.parquet")] == [store.shard_name("tiny-step100", "piqa")]
    assert not list(out.glob("_tmp*"))
    store.read(out)  # the finished shard is valid
    assert json.loads((out / RUN_LOG).read_text())["runs"][-1]["status"] == "failed"
    monkeypatch.setattr(local, "run_shard", real)
    res = evaluate(family, "piqa,copa", out, data_dir=mc_data, limit=2, options=OPTS)
    assert [r.status for r in res] == ["skipped", "done", "done", "done"]
    assert len(store.read(out)) == 4 * 2 * 2


def test_lm_eval_backend_agrees_with_capscale_engine(family, mc_data, tmp_path):
    spec = load_spec(family).select(["tiny-step100"])
    a = evaluate(spec, "arc_easy,blimp_adjunct_island", tmp_path / "a", data_dir=mc_data, limit=3, options=OPTS)
    b = evaluate(spec, "arc_easy,blimp_adjunct_island", tmp_path / "b", data_dir=mc_data, limit=3,
                 options=EvalOptions(progress=False, backend="lm-eval", batch_size=2))
    assert all(r.status == "done" for r in a + b)
    da, db = store.read(tmp_path / "a"), store.read(tmp_path / "b")
    key = ["task", "doc_id", "choice_idx"]
    m = da.merge(db, on=key, suffixes=("", "_ref"))
    assert len(m) == len(da) == len(db)
    assert np.abs(m.loglik - m.loglik_ref).max() <= 1e-4  # parity tolerance, fp32 (docs/scoring.md)
    assert (m.is_greedy == m.is_greedy_ref).all() and (m.n_tokens == m.n_tokens_ref).all()
    assert set(db.backend) == {"lm-eval"}


def test_include_path_task_and_items_fast_path_agree(family, tmp_path):
    folder = tmp_path / "synth"
    folder.mkdir()
    recs = [{"doc_id": i, "context": f"Item {i} has the colour", "choices": ["red", "blue", "light green"],
             "gold": i % 3} for i in range(4)]
    (folder / "colour.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (folder / "colour.yaml").write_text(
        "task: colour\noutput_type: multiple_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        "    test: colour.jsonl\ntest_split: test\ndoc_to_text: \"{{context}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{gold}}\"\ntarget_delimiter: \" \"\nmetadata:\n  version: 1.0\n")
    res = evaluate(family, "colour", tmp_path / "s1", include_path=folder, options=OPTS)
    assert [r.status for r in res] == ["done", "done"]
    via_lm_eval = store.read(tmp_path / "s1")
    fast = evaluate_items(family, pd.DataFrame(recs), "colour", out=tmp_path / "s2", options=OPTS)
    key = ["model_id", "doc_id", "choice_idx"]
    m = via_lm_eval.merge(fast, on=key, suffixes=("", "_fast"))
    assert len(m) == 2 * 4 * 3
    assert np.array_equal(m.loglik.to_numpy(), m.loglik_fast.to_numpy())
    assert (m.is_correct == m.is_correct_fast).all() and (m.n_chars == m.n_chars_fast).all()
    assert via_lm_eval.task_source.iloc[0].startswith("include:")
    assert len(store.read(tmp_path / "s2")) == 24
    # several item sets at once (each checkpoint loaded once); existing shards are read back, not rescored
    both = evaluate_item_sets(family, {"colour": recs, "colour2": recs[:2]}, out=tmp_path / "s2", options=OPTS)
    assert sorted(both.groupby("task").size().to_dict().items()) == [("colour", 24), ("colour2", 12)]
    c2 = both[both.task == "colour2"].merge(fast, on=key, suffixes=("", "_one"))
    assert np.array_equal(c2.loglik.to_numpy(), c2.loglik_one.to_numpy())


def test_bad_input_errors_name_checkpoint_or_task(family, mc_data, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"family: tiny\ncheckpoints:\n  - {{path: {family.parent / 'tiny' / 'step100'}, params: 5, "
                   "tokens: 7, model_id: good}\n  - {path: ./missing/step9, params: 5, tokens: 7, model_id: gone}\n")
    with pytest.raises(FileNotFoundError, match="checkpoint 'gone'"):
        evaluate(bad, "piqa", tmp_path / "o", data_dir=mc_data, limit=1, options=OPTS)
    assert not list((tmp_path).glob("o/*.parquet"))  # nothing started: paths are checked first

    model, tok = tiny_model()
    ck = Checkpoint("m", "mem", 10, 10, family="f")
    with pytest.raises(EvalError, match="checkpoint 'm', task 't'.*item 0 choice 1 has an empty continuation"):
        evaluate_items(model, [{"context": "a b", "choices": ["x", ""], "gold": 0}], "t", tokenizer=tok,
                       checkpoint=ck, target_delimiter="", options=OPTS)
    nospecial = tiny_model()[1].__class__(tokenizer_object=tok.backend_tokenizer)
    assert nospecial.bos_token_id is None and nospecial.eos_token_id is None
    with pytest.raises(EvalError, match="checkpoint 'm', task 'pairs'.*neither bos_token nor eos_token"):
        evaluate_items(model, [{"context": "", "choices": ["a cat", "cat a"], "gold": 0}], "pairs",
                       tokenizer=nospecial, checkpoint=ck, options=OPTS)
    # a failing shard (empty context, tokenizer without BOS/EOS) is recorded in the run log; earlier shards stay
    nospecial.save_pretrained(tmp_path / "nobos")
    model.save_pretrained(tmp_path / "nobos")
    (tmp_path / "nb.yaml").write_text(f"family: nb\ncheckpoints:\n  - {{path: {tmp_path / 'nobos'}, params: 5, "
                                      "tokens: 7}\n")
    with pytest.raises(EvalError, match="checkpoint 'nobos', task 'blimp_adjunct_island'.*bos_token"):
        evaluate(tmp_path / "nb.yaml", "piqa,blimp_adjunct_island", tmp_path / "o4", data_dir=mc_data, limit=1,
                 options=OPTS)
    assert [p.name for p in (tmp_path / "o4").glob("*.parquet")] == [store.shard_name("nobos", "piqa")]
    run = json.loads((tmp_path / "o4" / RUN_LOG).read_text())["runs"][-1]
    assert run["status"] == "failed" and [s["status"] for s in run["shards"]] == ["done", "failed"]
    assert "bos_token" in run["shards"][1]["error"]
    # a single checkpoint folder without D
    with pytest.raises(Exception, match=r"tokens \(D\)"):
        evaluate(family.parent / "tiny" / "step100", "piqa", tmp_path / "o2", data_dir=mc_data, limit=1,
                 options=OPTS)
    rc = main(["eval", "--family", str(family.parent / "tiny" / "step100"), "--params", "9", "--tokens", "99",
               "--tasks", "piqa", "--out", str(tmp_path / "o3"), "--data-dir", str(mc_data), "--limit", "1",
               "--no-progress"])
    assert rc == 0 and store.read(tmp_path / "o3")["tokens"].iloc[0] == 99


def test_batch_size_invariance(family, mc_data, tmp_path):
    spec = load_spec(family).select(["tiny-step200"])
    frames = []
    for bs in (1, 7, "auto"):
        evaluate(spec, "social_iqa", tmp_path / str(bs), data_dir=mc_data, limit=5,
                 options=EvalOptions(progress=False, batch_size=bs))
        frames.append(store.read(tmp_path / str(bs)).sort_values(["doc_id", "choice_idx"]).loglik.to_numpy())
    assert np.abs(frames[0] - frames[1]).max() <= 1e-5 and np.abs(frames[0] - frames[2]).max() <= 1e-5
    assert os.path.isfile(tmp_path / "1" / RUN_LOG)
