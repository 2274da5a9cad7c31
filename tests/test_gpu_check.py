"""``results/bench/gpu_check.sh --smoke``: the GPU check's code path end to end on the CPU, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.shared_data
def test_gpu_check_smoke(tmp_path, mc_data):
    out = tmp_path / "gpu_check_smoke.txt"
    env = dict(os.environ, PYTHON=sys.executable, CAPSCALE_DATA=str(mc_data), OUT=str(out))
    r = subprocess.run(["bash", str(REPO / "results" / "bench" / "gpu_check.sh"), "--smoke"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    for needle in ("# capscale bench gpu-check --smoke", "matmul roofline", "SDPA kernels on the packed rows",
                   "mmlu_5shot", "arc_easy_0shot", "tokens fed: capscale", "parity: argmax agrees", "# total"):
        assert needle in text, needle
    res = json.loads(out.with_suffix(".json").read_text())
    assert not res["results"] == [] and res["smoke"] is True
    rows = {(x["model"], x["task"]): x for x in res["results"]}
    assert set(rows) == {(m, t) for m in ("pythia-tiny", "llama-tiny") for t in ("mmlu_5shot", "arc_easy_0shot")}
    for x in rows.values():
        assert x["max_abs_diff"] <= 1e-4 and x["argmax_agree"] == 1.0  # float32 on CPU: the parity target
    mmlu = rows[("pythia-tiny", "mmlu_5shot")]
    assert mmlu["n_prefixes"] == 2 and mmlu["capscale_tokens_fed"] < mmlu["capscale_tokens_without_prefix_reuse"]


def test_gpu_check_refuses_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from capscale.cli import main

    assert main(["bench", "gpu-check", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.txt")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
