#!/usr/bin/env bash
# Evaluates, on each dataset's test queries, the baselines and every model that
# scripts/train-every-sampler.sh trained. The tables in docs/evaluation.md come from this script.
#
#   scripts/eval-every-sampler.sh [DATASET ...]     (default: bestbuy_xbox instacart)
#   SPLIT=query_disjoint scripts/eval-every-sampler.sh bestbuy_xbox   (models trained on that split)
set -euo pipefail
cd "$(dirname "$0")/.."
aisle=target/release/aisle
[ -x "$aisle" ] || { echo "build first: cargo build --release" >&2; exit 1; }
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(bestbuy_xbox instacart)
for ds in "${datasets[@]}"; do
  models=()
  prefix="out/train-every-sampler/$ds${SPLIT:+@$SPLIT}-"
  for dir in "$prefix"*/; do
    [ -f "$dir/model.aisle" ] || continue
    name=${dir%/}
    name=${name#"$prefix"}
    models+=(--model "dense:$name=$dir/model.aisle")
  done
  [ ${#models[@]} -gt 0 ] || { echo "no models for $ds: run scripts/train-every-sampler.sh first" >&2; exit 1; }
  split_args=()
  [ -z "${SPLIT:-}" ] || split_args=(--split "$SPLIT")
  "$aisle" eval --dataset "$ds" "${split_args[@]}" "${models[@]}"
  echo
done
