"""Training the model ladder: a tiny ladder in seconds, determinism, the family spec and bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from oracles import simple_score_family

from capscale import cli
from capscale.synthetic import ladder
from capscale.synthetic import world as synthetic

TINY_WORLD = synthetic.WorldConfig(n_people=24, exposures=4, company_exposures=3, n_items=12, seed=1)


def tiny_config(**kw) -> ladder.LadderConfig:
    base = dict(sizes=dict(ladder.QUICK_SIZES), world=TINY_WORLD, seq_len=16,
                batch_size=4, n_checkpoints=6, seed=0, threads=1)
    return ladder.LadderConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_ladder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ladder")
    ladder.train_ladder(out, tiny_config(), log=lambda m: None)
    return out


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_checkpoint_steps():
    assert ladder.checkpoint_steps(640, 7) == [10, 20, 40, 80, 160, 320, 640]
    steps = ladder.checkpoint_steps(24, 6)
    assert len(steps) == 6 and steps[-1] == 24 and steps == sorted(set(steps)) and steps[0] >= 1
    with pytest.raises(ValueError, match="cannot hold"):
        ladder.checkpoint_steps(3, 6)


def test_tokenizer_is_word_level_and_scores_continuations():
    tok = ladder.build_tokenizer(["ab cd was born in ef .", "gh works for ij ."])
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ladder.SPECIALS
    ctx = tok("ab cd was born in", add_special_tokens=False)["input_ids"]
    full = tok("ab cd was born in ef", add_special_tokens=False)["input_ids"]
    assert full[: len(ctx)] == ctx and len(full) == len(ctx) + 1
    assert tok.decode(full) == "ab cd was born in ef"
    assert tok("zz", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_model_sizes_are_log_spaced_and_span_the_issue_range():
    for shape in [*ladder.QUICK_SIZES.values(), ladder.SIZES["s0"]]:
        assert ladder.shape_params(shape) == ladder.non_embedding_params(ladder.make_model(shape, 300, 64, 0))
    n = [ladder.shape_params(s) for s in ladder.SIZES.values()]
    assert len(n) >= 8 and n == sorted(n)
    assert 20_000 <= n[0] <= 40_000 and n[-1] >= 3_000_000
    ratios = np.diff(np.log(n))
    assert ratios.min() > 0.5 * ratios.mean() and ratios.max() < 1.5 * ratios.mean()


def test_tiny_ladder_writes_a_valid_family(tiny_ladder):
    from capscale.data import family

    spec = yaml.safe_load((tiny_ladder / "family.yaml").read_text())
    assert spec["family"] == ladder.FAMILY and spec["params_kind"] == "non_embedding"
    per_step = spec["tokens_per_step"]
    assert per_step == 16 * 4
    by_size: dict[str, list[dict]] = {}
    for c in spec["checkpoints"]:
        by_size.setdefault(c["path"].split("/")[0], []).append(c)
        assert c["tokens"] == c["step"] * per_step
        folder = tiny_ladder / c["path"]
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            assert (folder / f).is_file(), folder / f
    assert sorted(by_size) == ["q0", "q1"]
    for cs in by_size.values():
        assert len(cs) >= 6 and len({c["params"] for c in cs}) == 1
    assert by_size["q0"][0]["params"] < by_size["q1"][0]["params"]
    # fp16 weights, non-embedding count matches the saved model
    from safetensors import safe_open
    c = by_size["q1"][-1]
    with safe_open(str(tiny_ladder / c["path"] / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert dtypes == {"torch.float16"}
    # the project's family-spec reader accepts it
    fs = family.load_spec(tiny_ladder / "family.yaml")
    assert len(fs.checkpoints) == len(spec["checkpoints"])
    assert synthetic.load_tasks(tiny_ladder / spec["tasks_dir"]).keys() == set(synthetic.TASKS)
    log = (tiny_ladder / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("size,step,lr,loss")


def test_init_seeds_of_existing_sizes_do_not_move():
    """Adding sizes must not change the committed family's checkpoints: the seed offsets of the sizes that
    existed first (s0-s4, q0, q1) stay 0-6, and every canonical size has its own offset."""
    cfg = ladder.LadderConfig(seed=2)
    old = ["s0", "s1", "s2", "s3", "s4", "q0", "q1"]
    cfg.sizes = {**ladder.SIZES, **ladder.QUICK_SIZES}
    assert [ladder._init_seed(cfg, name, 99) for name in old] == [2000 + i for i in range(7)]
    seeds = [ladder._init_seed(cfg, name, 99) for name in cfg.sizes]
    assert len(set(seeds)) == len(seeds) and 2099 not in seeds


def test_training_is_deterministic_for_a_seed(tmp_path, tiny_ladder):
    """Same seed: bit-identical checkpoints, also when a size is trained alone (subset runs)."""
    cfg = tiny_config(sizes={"q0": ladder.QUICK_SIZES["q0"]})
    ladder.train_ladder(tmp_path / "a", cfg, log=lambda m: None)
    spec = yaml.safe_load((tmp_path / "a" / "family.yaml").read_text())
    for c in spec["checkpoints"]:
        assert _digest(tmp_path / "a" / c["path"]) == _digest(tiny_ladder / c["path"])
    ladder.train_ladder(tmp_path / "b", tiny_config(sizes={"q0": ladder.QUICK_SIZES["q0"]}, seed=5),
                        log=lambda m: None)
    last = spec["checkpoints"][-1]["path"]
    assert _digest(tmp_path / "b" / last) != _digest(tiny_ladder / last)


def test_loss_falls(tiny_ladder):
    import pandas as pd

    log = pd.read_csv(tiny_ladder / "train_log.csv")
    for _, g in log.groupby("size"):
        assert g["loss"].iloc[-1] < g["loss"].iloc[0] - 1.0


def test_too_small_world_fails_before_training(tmp_path):
    cfg = tiny_config(world=synthetic.WorldConfig(n_people=10, exposures=1, company_exposures=1, n_items=5),
                      batch_size=64, seq_len=64)
    with pytest.raises(ValueError, match="world too small"):
        ladder.train_ladder(tmp_path / "x", cfg, log=lambda m: None)
    assert not (tmp_path / "x" / "world").exists()


def test_unwritable_output_fails_clearly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot write to output folder"):
        ladder.train_ladder(blocker / "out", tiny_config(), log=lambda m: None)
    assert cli.main(["ladder", "train", "--quick", "--out", str(blocker / "out")]) == 1  # invalid input


def test_bad_shapes():
    with pytest.raises(ValueError, match="heads"):
        tiny_config(sizes={"bad": (30, 1, 4, 32)}).validate()
    with pytest.raises(ValueError, match="empty"):
        tiny_config(sizes={}).validate()


def test_evaluate_family_matches_the_simple_oracle(tiny_ladder):
    """evaluate_family (the eval stage's loop and scoring engine) against the self-contained scorer in oracles.py."""
    a = simple_score_family(tiny_ladder / "family.yaml")
    b = ladder.evaluate_family(tiny_ladder)  # the folder works as well as its family.yaml
    key = ["model_id", "task", "doc_id", "choice_idx"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    assert (a[key] == b[key]).all().all()
    np.testing.assert_allclose(a["loglik"], b["loglik"], atol=1e-4)
    assert (a["is_greedy"] == b["is_greedy"]).mean() > 0.99
    for col in ("n_tokens", "is_correct", "n_chars", "n_bytes"):
        assert (a[col] == b[col]).all(), col
    assert set(b["task_source"]) == {"synthetic"} and set(b["dtype"]) == {"float32"}
    from capscale.data import store

    assert store.validate(b) == []
    checks = ladder.check_targets(b)
    assert set(checks["median_spearman"]) == set(synthetic.TASKS)
    assert len(checks["multi_curve"]) == b["model_id"].nunique()


def test_export_respects_the_size_cap(tiny_ladder, tmp_path):
    spec = yaml.safe_load((tiny_ladder / "family.yaml").read_text())
    one = sum(f.stat().st_size for f in (tiny_ladder / spec["checkpoints"][-1]["path"]).iterdir())
    new = ladder.export_family(tiny_ladder, tmp_path / "fam", max_bytes=200_000 + 4 * one)
    total = sum(f.stat().st_size for f in (tmp_path / "fam").rglob("*") if f.is_file())
    assert total <= 200_000 + 4 * one
    paths = [c["path"] for c in new["checkpoints"]]
    finals = {max((c for c in spec["checkpoints"] if c["path"].startswith(s)), key=lambda c: c["step"])["path"]
              for s in ("q0", "q1")}
    assert finals <= set(paths)
    assert (tmp_path / "fam" / "tasks" / "synth_onehop.jsonl").is_file()
    assert len(ladder.evaluate_family(tmp_path / "fam" / "family.yaml")) > 0
    with pytest.raises(ValueError, match="final checkpoints alone"):
        ladder.export_family(tiny_ladder, tmp_path / "fam2", max_bytes=1000)


def test_cli_quick(tmp_path):
    assert cli.main(["ladder", "train", "--quick", "--sizes", "q0", "--out", str(tmp_path / "q")]) == 0
    assert (tmp_path / "q" / "family.yaml").is_file()
    assert cli.main(["synthetic", "generate", "--out", str(tmp_path / "w"), "--n-people", "30",
                     "--n-items", "10"]) == 0
    assert len(synthetic.load_tasks(tmp_path / "w" / "tasks")["synth_onehop"]) == 10
    assert cli.main(["ladder", "train", "--out", str(tmp_path / "z"), "--sizes", "nope"]) == 2


def test_rebuild_spec_matches_the_written_one(tiny_ladder, tmp_path):
    import shutil

    spec = yaml.safe_load((tiny_ladder / "family.yaml").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(tiny_ladder, copy)
    (copy / "family.yaml").unlink()
    ladder.rebuild_spec(copy, tiny_config())
    again = yaml.safe_load((copy / "family.yaml").read_text())
    key = lambda c: c["path"]  # noqa: E731
    assert sorted(again["checkpoints"], key=key) == sorted(spec["checkpoints"], key=key)
    shutil.rmtree(copy / "q1")
    with pytest.raises(FileNotFoundError, match="'q1'"):
        ladder.rebuild_spec(copy, tiny_config())
