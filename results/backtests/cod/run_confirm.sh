#!/usr/bin/env bash
# Confirmation runs of cod against mass and the aggregate methods, with cod's defaults frozen (commit 7de20c7).
# Run once from the repository root:  flock /tmp/capscale-heavy.lock bash results/backtests/cod/run_confirm.sh STORE
# STORE: the demo family's score store, made by (results/backtests/README.md)
#   capscale eval --family capscale/synthetic/family/family.yaml --tasks synth_onehop,synth_twohop,synth_birthdate \
#       --include-path capscale/synthetic/family/tasks --out STORE --no-progress
set -euo pipefail
export HF_HUB_OFFLINE=1
S=${1:?usage: run_confirm.sh DEMO_STORE}
O=results/backtests/cod
C=.venv/bin/capscale
uptime
# demo family, size scaling: the largest size (s4, 3.3M) held out, every other checkpoint fits
$C backtest "$S" --all-tasks --method all --bootstrap 50 --seed 0 --out $O --name demo_sizes_all > $O/demo_sizes_all.txt
$C backtest "$S" --all-tasks --method auto --bootstrap 50 --seed 0 --out $O --name demo_sizes_auto > $O/demo_sizes_auto.txt
# demo family, data scaling: every size's final checkpoint (770,048 tokens) held out, the earlier checkpoints fit
$C backtest "$S" --all-tasks --method all --holdout 'tokens>=770048' --bootstrap 50 --seed 0 --out $O \
    --name demo_tokens_all > $O/demo_tokens_all.txt
$C backtest "$S" --all-tasks --method auto --holdout 'tokens>=770048' --bootstrap 50 --seed 0 --out $O \
    --name demo_tokens_auto > $O/demo_tokens_auto.txt
# simulation: capscale mass-sim's planted per-choice laws, seed 0 (the committed results/backtests/mass_sim store)
$C mass-sim /tmp/cod_mass_sim_seed0.parquet --seed 0
$C backtest /tmp/cod_mass_sim_seed0.parquet --all-tasks --method all --bootstrap 50 --seed 0 --out $O \
    --name sim_all > $O/sim_all.txt
$C backtest /tmp/cod_mass_sim_seed0.parquet --all-tasks --method auto --bootstrap 50 --seed 0 --out $O \
    --name sim_auto > $O/sim_auto.txt
.venv/bin/python $O/summarize.py
uptime
