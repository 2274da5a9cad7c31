#!/usr/bin/env bash
# Parity of capscale's engine with lm-eval's HFLM through `capscale eval`, on every local task over
# ../shared/data/mc (one leaf each of mmlu / blimp / zorro), first 10 items, two random-init architectures
# (2-layer GPT-NeoX with a byte-level BPE, 2-layer Llama with a SentencePiece-like BPE that adds BOS), fp32, CPU.
# Usage (from the repository root): bash results/eval/parity_local_tasks.sh > results/eval/parity_local_tasks.txt
set -euo pipefail
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
DATA=${CAPSCALE_DATA:-$(cd .. && pwd)/shared/data}
W=$(mktemp -d)
export HF_DATASETS_CACHE=$W/hf
PY=.venv/bin/python
T=arc_easy,arc_challenge,piqa,openbookqa,winogrande,social_iqa,copa,mmlu_anatomy,lambada,blimp_adjunct_island,zorro_agreement_determiner_noun-between_neighbors
PYTHONPATH=tests $PY - "$W" <<'PY'
import sys
from helpers_models import save_tiny_checkpoint
w = sys.argv[1]
save_tiny_checkpoint(f"{w}/neox", "gpt_neox", seed=0)
save_tiny_checkpoint(f"{w}/llama", "llama", seed=0)
open(f"{w}/family.yaml", "w").write("family: tiny-parity\ncheckpoints:\n"
    "  - {path: neox, model_id: neox-tiny, params: 1, tokens: 1}\n"
    "  - {path: llama, model_id: llama-tiny, params: 1, tokens: 1}\n")
PY
echo "# command: bash results/eval/parity_local_tasks.sh   ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU cores, CPU, float32)"
echo "# capscale eval --family FAMILY --tasks $T --data-dir DATA --limit 10 --out A"
echo "# capscale eval ... --backend lm-eval --batch-size 4 --out B ; then compare A and B per choice"
.venv/bin/capscale eval --family "$W/family.yaml" --tasks "$T" --data-dir "$DATA" --limit 10 --out "$W/capscale" --no-progress >/dev/null 2>&1
.venv/bin/capscale eval --family "$W/family.yaml" --tasks "$T" --data-dir "$DATA" --limit 10 --out "$W/lmeval" --backend lm-eval --batch-size 4 --no-progress >/dev/null 2>&1
$PY - "$W" <<'PY'
import sys
import numpy as np
from capscale import chain, store
w = sys.argv[1]
a, b = store.read(f"{w}/capscale"), store.read(f"{w}/lmeval")
m = a.merge(b, on=["model_id", "task", "doc_id", "choice_idx"], suffixes=("", "_ref"))
assert len(m) == len(a) == len(b)
ca, cb = chain.compute(a), chain.compute(b)
mc = ca.merge(cb, on=["model_id", "task", "doc_id"], suffixes=("", "_ref"))
print(f"{'model':11s} {'task':50s} {'items':>5s} {'max|dll|':>9s} {'acc':>5s} {'ref':>5s} {'acc_norm':>8s} {'ref':>5s} greedy=")
for (mid, t), g in m.groupby(["model_id", "task"]):
    c = mc[(mc.model_id == mid) & (mc.task == t)]
    print(f"{mid:11s} {t:50s} {len(c):5d} {np.abs(g.loglik - g.loglik_ref).max():9.2e} {c.acc.mean():5.2f} "
          f"{c.acc_ref.mean():5.2f} {c.acc_norm.mean():8.2f} {c.acc_norm_ref.mean():5.2f} "
          f"{bool((g.is_greedy == g.is_greedy_ref).all())}")
print(f"overall: {len(m)} choices; max |loglik(capscale) - loglik(lm-eval HFLM)| = "
      f"{np.abs(m.loglik - m.loglik_ref).max():.2e} nats (target <= 1e-4); acc identical: "
      f"{bool((mc.acc == mc.acc_ref).all())}; acc_norm identical: {bool((mc.acc_norm == mc.acc_norm_ref).all())}")
PY
rm -rf "$W"
