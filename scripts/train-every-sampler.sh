#!/usr/bin/env bash
# Trains aisle with every negative sampler on the real datasets, with the default settings, and
# prints each run's training time, throughput and validation Recall@10 curve. The figures in
# docs/training.md come from this script. Needs a release build (cargo build --release) and the
# data in ../shared/data (or $AISLE_DATA_DIR). Runs go to out/train-every-sampler/.
#
#   scripts/train-every-sampler.sh [DATASET ...]     (default: bestbuy_xbox instacart)
#   SPLIT=query_disjoint SAMPLERS="in-batch taxonomy" scripts/train-every-sampler.sh bestbuy_xbox
#
# SPLIT picks another split than the dataset's default; SAMPLERS (space-separated) a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
aisle=target/release/aisle
[ -x "$aisle" ] || { echo "build first: cargo build --release" >&2; exit 1; }
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(bestbuy_xbox instacart)
samplers=(in-batch random popularity bm25 ance "ance:index=exact" taxonomy
  "mix:0.5*taxonomy+0.5*random" "curriculum:random->taxonomy@500..1500")
[ -z "${SAMPLERS:-}" ] || read -r -a samplers <<< "$SAMPLERS"
split_args=()
[ -z "${SPLIT:-}" ] || split_args=(--split "$SPLIT")
for ds in "${datasets[@]}"; do
  for s in "${samplers[@]}"; do
    slug=$(printf '%s' "$s" | tr -c 'a-z0-9' '-')
    start=$(date +%s.%N)
    out=$("$aisle" train --dataset "$ds" "${split_args[@]}" --sampler "$s" --quiet \
      --out "out/train-every-sampler/$ds${SPLIT:+@$SPLIT}-$slug" 2>/dev/null)
    end=$(date +%s.%N)
    printf '== %s | %s | %.1f s wall (load, train, validation, files)\n' "$ds${SPLIT:+ ($SPLIT)}" "$s" "$(echo "$end - $start" | bc)"
    echo "$out" | grep -E "training time|validation R@10|positives removed"
  done
done
