#!/usr/bin/env bash
# GPU check of the scoring engine (capscale vs lm-eval HFLM in one process): Pythia-1.4B- and 6.9B-shaped
# random-init models in bfloat16, MMLU 5-shot (lm-eval's prompt, first_n dev shots, 8 fixed subjects x 40
# items) and ARC-Easy 0-shot (500 items) from the shared data; items/s, ratio, tokens fed, FLOP/s and MFU,
# parity in bfloat16, peak GPU memory, and which SDPA kernels take the packed rows. About 8 minutes on one
# GPU, no network: torch (CUDA), transformers and lm-eval must already be installed for $PYTHON.
#
#   bash results/bench/gpu_check.sh            # on a GPU machine; writes results/bench/gpu_check.txt/.json
#   bash results/bench/gpu_check.sh --smoke    # on CPU in seconds (tiny models; what CI runs)
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3), CAPSCALE_DATA (the mc/ data
# folder; default ../shared/data/mc), OUT (report path; default results/bench/gpu_check.txt, or
# $TMPDIR/capscale_gpu_check_smoke.txt for --smoke). Extra arguments go to `capscale bench gpu-check`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DATA="${CAPSCALE_DATA:-$ROOT/../shared/data/mc}"
if [[ "${1:-}" == "--smoke" ]]; then
  OUT="${OUT:-${TMPDIR:-/tmp}/capscale_gpu_check_smoke.txt}"
else
  OUT="${OUT:-results/bench/gpu_check.txt}"
fi
exec "$PYTHON" -m capscale.cli bench gpu-check --data-dir "$DATA" --out "$OUT" "$@"
