"""Family specs: YAML/CSV loading, N/D derivation, errors naming the checkpoint, and folder scanning."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capscale.cli import main
from capscale.data.family import (
    Checkpoint,
    FamilySpec,
    FamilySpecError,
    count_params,
    load_spec,
    scan,
    spec_from_checkpoint,
    spec_from_dict,
)


def _fake_checkpoint(d, shapes, *, weights=True):
    """config.json + a safetensors file whose header declares tensors of these shapes (data zero-filled)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text("{}")
    if not weights:
        return
    header, off = {}, 0
    for i, shp in enumerate(shapes):
        n = 1
        for s in shp:
            n *= s
        header[f"t{i}"] = {"dtype": "F32", "shape": list(shp), "data_offsets": [off, off + 4 * n]}
        off += 4 * n
    h = json.dumps(header).encode()
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * off)


def test_yaml_spec_relative_paths_tokens_per_step_and_ids(tmp_path):
    (tmp_path / "m" / "step100").mkdir(parents=True)
    (tmp_path / "fam.yaml").write_text(
        "family: toy\ntokens_per_step: 2097152\nparams_kind: non-embedding\ncheckpoints:\n"
        "  - {path: m/step100, params: 1000, step: 100}\n"
        "  - {path: EleutherAI/pythia-410m, revision: step13000, params: 405334016, tokens: 27262976000,"
        " step: 13000}\n")
    spec = load_spec(tmp_path / "fam.yaml")
    a, b = spec.checkpoints
    assert a.path == str((tmp_path / "m" / "step100").resolve())
    assert a.tokens == 100 * 2097152 and a.family == "toy" and a.model_id == "m-step100"
    assert b.path == "EleutherAI/pythia-410m" and b.model_id == "pythia-410m@step13000"
    assert b.tokens == 27262976000 and b.looks_like_hub_id()
    assert spec.params_kind == "non-embedding"
    a.check_location()
    b.check_location()  # a hub id is accepted (loading decides whether it is cached)


def test_csv_spec_equals_yaml(tmp_path):
    (tmp_path / "f.csv").write_text("family,path,params,tokens,step,tokens_per_step\n"
                                    "toy,a/step1,10,,1,50\ntoy,a/step2,10,123,2,50\n")
    spec = load_spec(tmp_path / "f.csv")
    assert [c.tokens for c in spec.checkpoints] == [50, 123]
    assert spec.family == "toy" and spec.tokens_per_step == 50


@pytest.mark.parametrize("body, words", [
    ("  - {path: a, tokens: 5}\n", ["'a'", "params (N)"]),
    ("  - {path: a, params: 5, step: 3}\n", ["'a'", "tokens (D)", "tokens_per_step"]),
    ("  - {path: a, params: 5, tokens: 1.5}\n", ["'a'", "integer"]),
    ("  - {path: a, params: 5, tokens: 7, bogus: 1}\n", ["bogus"]),
    ("  - {path: a, params: 5, tokens: 7}\n  - {path: a, params: 5, tokens: 8}\n", ["duplicate"]),
])
def test_bad_specs_name_the_checkpoint(tmp_path, body, words):
    (tmp_path / "s.yaml").write_text("family: f\ncheckpoints:\n" + body)
    with pytest.raises(FamilySpecError) as e:
        load_spec(tmp_path / "s.yaml")
    for w in words:
        assert w in str(e.value)


def test_missing_local_path_error_names_checkpoint(tmp_path):
    ck = Checkpoint(model_id="m1", path=str(tmp_path / "nope"), params=1, tokens=1)
    with pytest.raises(FileNotFoundError, match="checkpoint 'm1'.*does not exist"):
        ck.check_location()


@settings(max_examples=30, deadline=None)
@given(step=st.integers(0, 10**6), tps=st.integers(1, 10**7), n=st.integers(1, 10**10))
def test_tokens_from_step(step, tps, n):
    d = {"family": "f", "tokens_per_step": tps, "checkpoints": [{"path": "x/y", "params": n, "step": step}]}
    if step == 0:
        with pytest.raises(FamilySpecError, match="positive"):
            spec_from_dict(d)
        return
    ck = spec_from_dict(d).checkpoints[0]
    assert ck.tokens == step * tps and ck.params == n


def test_scan_infers_fields_and_reports_missing(tmp_path, capsys):
    root = tmp_path / "ladder"
    _fake_checkpoint(root / "pythia-70m" / "step0", [(4, 8), (8,)])
    _fake_checkpoint(root / "pythia-70m" / "step1000", [(4, 8), (8,)])
    _fake_checkpoint(root / "pythia-70m" / "step2000", [], weights=False)  # no weights: skipped
    _fake_checkpoint(root / "olmo-1b" / "stage1-step10-tokens5B", [(3, 3)])
    assert count_params(root / "pythia-70m" / "step0") == 40
    res = scan(root, tokens_per_step=1000)
    by = {c["model_id"]: c for c in res.spec["checkpoints"]}
    assert set(by) == {"pythia-70m-step0", "pythia-70m-step1000", "olmo-1b-stage1-step10-tokens5B"}
    assert by["pythia-70m-step1000"] == {"model_id": "pythia-70m-step1000", "path": "pythia-70m/step1000",
                                         "params": 40, "tokens": 1_000_000, "step": 1000}
    assert by["olmo-1b-stage1-step10-tokens5B"]["tokens"] == 5_000_000_000
    assert res.missing == {"pythia-70m-step0": ["tokens"]}  # step 0 -> D = 0 is not a valid D
    assert any("step2000" in n and "without weights" in n for n in res.notes)
    # the CLI prints the YAML, lists what it could not infer and exits 1
    rc = main(["family", "scan", str(root), "--tokens-per-step", "1000", "--out", str(root / "family.yaml")])
    err = capsys.readouterr().err
    assert rc == 1 and "pythia-70m-step0: tokens" in err
    # without tokens_per_step nothing gives D except tokensMB
    res2 = scan(root)
    assert res2.missing["pythia-70m-step1000"] == ["tokens"]


def test_scan_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        scan(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint folders"):
        scan(tmp_path / "empty")


def test_single_checkpoint_spec(tmp_path):
    d = tmp_path / "run" / "step300"
    _fake_checkpoint(d, [(10, 10)])
    spec = spec_from_checkpoint(d, tokens_per_step=7)
    ck = spec.checkpoints[0]
    assert (ck.params, ck.tokens, ck.step, spec.family) == (100, 2100, 300, "run")
    with pytest.raises(FamilySpecError, match=r"tokens \(D\).*--tokens"):
        spec_from_checkpoint(d)


def test_select_and_to_dict_roundtrip():
    spec = FamilySpec("f", (Checkpoint("a", "x/a", 1, 2, family="f"), Checkpoint("b", "x/b", 3, 4, family="f")))
    assert [c.model_id for c in spec.select(["b"]).checkpoints] == ["b"]
    with pytest.raises(FamilySpecError, match="unknown model_id"):
        spec.select(["zz"])
    again = spec_from_dict(spec.to_dict())
    assert [(c.model_id, c.params, c.tokens) for c in again.checkpoints] == [("a", 1, 2), ("b", 3, 4)]


@pytest.mark.parametrize("name", ["nope.yaml", "nope.yml", "nope.csv", "nope.json", "NOPE.YAML"])
def test_missing_spec_file_says_it_does_not_exist(tmp_path, capsys, name):
    path = tmp_path / name
    with pytest.raises(FileNotFoundError, match=r"family spec '.*' does not exist") as err:
        spec_from_checkpoint(path)
    assert str(path) in str(err.value) and "params" not in str(err.value)
    rc = main(["eval", "--family", str(path), "--tasks", "x", "--out", str(tmp_path / "o")])
    lines = capsys.readouterr().err.splitlines()
    assert rc == 1 and lines == [f"capscale eval: error: family spec {str(path)!r} does not exist"]


def test_json_spec_file_is_read_as_a_spec(tmp_path):
    path = tmp_path / "fam.json"
    path.write_text(json.dumps({"family": "f", "checkpoints": [{"path": "org/m", "params": 10, "tokens": 20}]}))
    spec = spec_from_checkpoint(path)
    assert spec.family == "f" and [(c.params, c.tokens) for c in spec.checkpoints] == [(10, 20)]


def test_spec_path_that_is_a_folder_or_not_text(tmp_path):
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(IsADirectoryError, match=r"family spec '.*d\.yaml' is a folder, not a spec file"):
        load_spec(tmp_path / "d.yaml")
    for name in ("bin.yaml", "bin.csv"):
        (tmp_path / name).write_bytes(b"\xff\xfe\x00family: x\n")
        with pytest.raises(FamilySpecError, match=rf"family spec '.*{name}': not UTF-8 text \(byte 0\)"):
            load_spec(tmp_path / name)
