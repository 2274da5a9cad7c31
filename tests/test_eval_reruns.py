"""Reruns of ``capscale eval`` never mix settings: a finished shard is reused only when every setting that
changes its numbers matches (else exit 1 naming the shard, the setting, both values and ``--overwrite``);
shard names are injective and fit any file system; the run log marks killed runs abandoned."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers_models import save_tiny_checkpoint

from capscale.cli import main
from capscale.data import store
from capscale.errors import InputError
from capscale.eval.evaluate import evaluate, evaluate_item_sets
from capscale.eval.shards import RUN_LOG, EvalOptions

OPTS = EvalOptions(progress=False, batch_size=4)


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf_datasets"))


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("fam")
    save_tiny_checkpoint(root / "tiny" / "step100", seed=0)
    (root / "family.yaml").write_text("family: tiny\ntokens_per_step: 5000\ncheckpoints:\n"
                                      "  - {path: tiny/step100, params: 60000, step: 100}\n")
    return root / "family.yaml"


def _eval(family, out, mc_data, *extra):
    return main(["eval", "--family", str(family), "--tasks", "arc_easy", "--out", str(out), "--data-dir",
                 str(mc_data), "--batch-size", "4", "--no-progress", *extra])


def _n_items(out):
    return store.read(out).doc_id.nunique()


def test_rerun_with_another_limit_refuses_then_overwrites(family, mc_data, tmp_path, capsys):
    out = tmp_path / "s"
    assert _eval(family, out, mc_data, "--limit", "2") == 0
    capsys.readouterr()
    assert _eval(family, out, mc_data, "--limit", "3") == 1
    err = capsys.readouterr().err
    shard = next(out.glob("*.parquet")).name
    assert shard in err and "limit" in err and "2" in err and "3" in err and "--overwrite" in err
    assert "Traceback" not in err and _n_items(out) == 2  # nothing mixed, nothing written
    assert _eval(family, out, mc_data, "--limit", "3", "--overwrite") == 0
    assert _n_items(out) == 3
    assert _eval(family, out, mc_data, "--limit", "3") == 0  # same settings: reused
    assert "0 shard(s) written, 1 already finished" in capsys.readouterr().out


@pytest.mark.parametrize("extra,setting", [(["--num-fewshot", "1"], "num_fewshot"),
                                           (["--dtype", "bfloat16"], "dtype"),
                                           (["--add-bos-token", "true"], "add_bos_token")])
def test_rerun_with_other_settings_refuses(family, mc_data, tmp_path, capsys, extra, setting):
    out = tmp_path / "s"
    assert _eval(family, out, mc_data, "--limit", "2") == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    capsys.readouterr()
    assert _eval(family, out, mc_data, "--limit", "2", *extra) == 1
    err = capsys.readouterr().err
    assert setting in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == before


def test_api_overwrite_and_input_error(family, mc_data, tmp_path):
    out = tmp_path / "s"
    evaluate(family, "arc_easy", out, data_dir=mc_data, limit=2, options=OPTS)
    with pytest.raises(InputError, match=r"limit.*2.*3"):
        evaluate(family, "arc_easy", out, data_dir=mc_data, limit=3, options=OPTS)
    res = evaluate(family, "arc_easy", out, data_dir=mc_data, limit=3, options=OPTS, overwrite=True)
    assert [r.status for r in res] == ["done"] and _n_items(out) == 3
    meta = store.shard_settings(next(out.glob("*.parquet")))
    for k in ("limit", "num_fewshot", "fewshot_seed", "task_sha256", "revision", "tokenizer", "add_bos_token",
              "max_length", "dtype", "backend", "task_source"):
        assert k in meta, k
    assert meta["limit"] == 3 and meta["dtype"] == "float32"


def test_a_changed_task_definition_is_refused(family, tmp_path):
    folder = tmp_path / "synth"
    folder.mkdir()
    recs = [{"doc_id": i, "context": f"Item {i} is", "choices": ["red", "blue"], "gold": i % 2} for i in range(3)]
    (folder / "colour.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (folder / "colour.yaml").write_text(
        "task: colour\noutput_type: multiple_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        "    test: colour.jsonl\ntest_split: test\ndoc_to_text: \"{{context}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{gold}}\"\nmetadata:\n  version: 1.0\n")
    evaluate(family, "colour", tmp_path / "s", include_path=folder, options=OPTS)
    recs[1]["choices"] = ["red", "green"]  # the data file changes under the same task name
    (folder / "colour.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(InputError, match="task_sha256"):
        evaluate(family, "colour", tmp_path / "s", include_path=folder, options=OPTS)


def test_shards_written_before_settings_were_recorded_are_reused_with_a_note(family, mc_data, tmp_path):
    out = tmp_path / "s"
    evaluate(family, "arc_easy", out, data_dir=mc_data, limit=2, options=OPTS)
    new = next(out.glob("*.parquet"))
    legacy = out / store.legacy_shard_name("tiny-step100", "arc_easy")
    pd.read_parquet(new).to_parquet(legacy, index=False)  # an old shard: old name, no recorded settings
    new.unlink()
    (out / RUN_LOG).rename(out / "run_log.json")
    res = evaluate(family, "arc_easy", out, data_dir=mc_data, limit=2, options=OPTS)
    assert [r.status for r in res] == ["skipped"] and "older capscale" in res[0].note
    assert [p.name for p in out.glob("*.parquet")] == [new.name]  # renamed to its injective name
    # what an old shard does record is still checked
    with pytest.raises(InputError, match="limit|items"):
        evaluate(family, "arc_easy", out, data_dir=mc_data, limit=3, options=OPTS)


def test_shard_names_are_injective_and_fit_255_bytes():
    assert store.shard_name("m", "sub/evil") != store.shard_name("m", "sub_evil")
    assert store.shard_name("a__b", "c") != store.shard_name("a", "b__c")
    for task in ("x" * 255, "é" * 300, "_hidden", ".dot"):
        name = store.shard_name("m" * 300, task)
        assert len(name.encode()) <= 255 and not name.startswith(("_", "."))
        assert name.endswith(".parquet")


def test_colliding_and_long_task_names_all_land_in_the_store(family, tmp_path):
    recs = [{"doc_id": i, "context": f"Item {i} is", "choices": ["red", "blue"], "gold": i % 2} for i in range(2)]
    names = ["sub/evil", "sub_evil", "t" * 255]
    df = evaluate_item_sets(family, dict.fromkeys(names, recs), out=tmp_path / "s", options=OPTS)
    assert sorted(df.task.unique()) == sorted(names)
    back = store.read(tmp_path / "s")
    assert sorted(back.task.unique()) == sorted(names) and len(back) == 3 * 2 * 2


def test_a_killed_run_is_marked_abandoned(family, mc_data, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    old = {"run_id": "killed", "status": "running", "pid": dead.pid, "host": socket.gethostname(),
           "last_seen_utc": "2020-01-01T00:00:00Z", "shards": []}
    (out / RUN_LOG).write_text(json.dumps({"runs": [old]}))
    evaluate(family, "arc_easy", out, data_dir=mc_data, limit=1, options=OPTS)
    runs = {r["run_id"]: r for r in json.loads((out / RUN_LOG).read_text())["runs"]}
    assert runs["killed"]["status"] == "abandoned" and runs["killed"]["last_seen_utc"] == "2020-01-01T00:00:00Z"
    assert "abandoned_utc" in runs["killed"]
    new = [r for r in runs.values() if r["run_id"] != "killed"][0]
    assert new["status"] == "done" and new["last_seen_utc"] and new["pid"] and new["host"]


def test_settings_survive_in_parquet_metadata(family, mc_data, tmp_path):
    out = tmp_path / "s"
    evaluate(family, "arc_easy", out, data_dir=mc_data, limit=1, options=OPTS)
    md = pq.read_schema(next(out.glob("*.parquet"))).metadata
    assert b"capscale.shard" in md


def _cli(family, out, mc_data, env, **kw):
    cmd = [sys.executable, "-c", "import sys; from capscale.cli import main; sys.exit(main(sys.argv[1:]))", "eval", "--family", str(family), "--tasks", "piqa,copa", "--out",
           str(out), "--data-dir", str(mc_data), "--limit", "3", "--batch-size", "2", "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def _sorted_store(out):
    key = ["model_id", "task", "doc_id", "choice_idx"]
    return store.read(out).sort_values(key).reset_index(drop=True)


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_equals_an_uninterrupted_run(tmp_path, mc_data):
    """Fault injection on the local executor: SIGKILL ``capscale eval`` at seeded random points (3 kills),
    rerun to completion; the store equals an uninterrupted run's, no temporary file is left and the killed
    runs are marked abandoned."""
    import os
    import random
    import signal
    import time

    root = tmp_path / "fam"
    for i, step in enumerate((100, 200)):
        save_tiny_checkpoint(root / "tiny" / f"step{step}", seed=i)
    family = root / "family.yaml"
    family.write_text("family: tiny\ntokens_per_step: 5000\ncheckpoints:\n"
                      "  - {path: tiny/step100, params: 60000, step: 100}\n"
                      "  - {path: tiny/step200, params: 60000, step: 200}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.monotonic()
    ref = _cli(family, tmp_path / "ref", mc_data, env)
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err.decode()[-2000:]
    t_ref = time.monotonic() - t0
    rng = random.Random(15)
    out = tmp_path / "killed"
    for _ in range(3):
        p = _cli(family, out, mc_data, env)
        time.sleep(rng.uniform(0.3, 1.0) * t_ref)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    final = _cli(family, out, mc_data, env)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert not list(out.glob("_tmp*"))
    pd.testing.assert_frame_equal(_sorted_store(out), _sorted_store(tmp_path / "ref"))
    runs = json.loads((out / RUN_LOG).read_text())["runs"]
    assert runs[-1]["status"] == "done"
    assert all(r["status"] in {"abandoned", "done"} for r in runs[:-1])
    killed = [r for r in runs[:-1] if r["status"] == "abandoned"]
    assert all(r.get("last_seen_utc") and r.get("abandoned_utc") for r in killed)


def test_ray_executor_overwrites_mismatching_shards(family, mc_data, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "s"
    evaluate(family, "arc_easy", out, data_dir=mc_data, limit=2, options=OPTS)
    with pytest.raises(InputError, match="limit"):
        evaluate(family, "arc_easy", out, data_dir=mc_data, limit=3, options=OPTS, executor="ray")
    res = evaluate(family, "arc_easy", out, data_dir=mc_data, limit=3, options=OPTS, executor="ray",
                   overwrite=True, executor_options={"num_cpus": 1, "warm_up": False})
    assert [r.status for r in res] == ["done"] and _n_items(out) == 3
    assert store.shard_settings(next(out.glob("*.parquet")))["limit"] == 3


def test_item_sets_fast_path_never_mixes_either(family, tmp_path):
    recs = [{"doc_id": i, "context": f"Item {i} is", "choices": ["red", "blue"], "gold": i % 2} for i in range(2)]
    out = tmp_path / "s"
    evaluate_item_sets(family, {"colour": recs}, out=out, options=OPTS)
    assert store.shard_settings(next(out.glob("*.parquet")))["dtype"] == "float32"
    changed = [dict(r, choices=["red", "green"]) for r in recs]
    with pytest.raises(InputError, match="task_sha256"):
        evaluate_item_sets(family, {"colour": changed}, out=out, options=OPTS)
    with pytest.raises(InputError, match="dtype"):
        evaluate_item_sets(family, {"colour": recs}, out=out, options=EvalOptions(progress=False, dtype="bfloat16"))
    df = evaluate_item_sets(family, {"colour": changed}, out=out, options=OPTS, overwrite=True)
    assert set(df.n_chars) == {3, 5} and set(store.read(out).n_chars) == {3, 5}
