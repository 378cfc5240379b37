#!/usr/bin/env bash
# Evaluates, on each dataset's test queries, the baselines and every model that
# scripts/train-every-sampler.sh trained. The tables in docs/evaluation.md come from this script.
#
#   scripts/eval-every-sampler.sh [DATASET ...]     (default: bestbuy_xbox instacart)
set -euo pipefail
cd "$(dirname "$0")/.."
aisle=target/release/aisle
[ -x "$aisle" ] || { echo "build first: cargo build --release" >&2; exit 1; }
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(bestbuy_xbox instacart)
for ds in "${datasets[@]}"; do
  models=()
  for dir in out/train-every-sampler/"$ds"-*/; do
    [ -f "$dir/model.aisle" ] || continue
    name=${dir%/}
    name=${name#out/train-every-sampler/"$ds"-}
    models+=(--model "dense:$name=$dir/model.aisle")
  done
  [ ${#models[@]} -gt 0 ] || { echo "no models for $ds: run scripts/train-every-sampler.sh first" >&2; exit 1; }
  "$aisle" eval --dataset "$ds" "${models[@]}"
  echo
done
