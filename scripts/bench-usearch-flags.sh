#!/usr/bin/env bash
# Opt-in, never in CI: one usearch graph searched by the same program built with usearch's C++
# compiled four ways (no flags, its `numkong` SIMD feature, -march=x86-64-v3, -march=native),
# one thread. The figures in docs/scale-out.md#the-embedded-index-against-its-peers come from it.
#
#   target/release/aisle bench search --sizes 200000 --connectivity 32 --expansion-add 256 \
#       --expansion-search 64 --export-vectors /tmp/ann --seconds 2
#   bash scripts/bench-usearch-flags.sh /tmp/ann/200000 [M] [efConstruction] [EF,EF,...]
#
# The numkong build costs about 4 CPU-minutes. Each build sets CXXFLAGS_x86_64_unknown_linux_gnu
# itself, overriding the workspace's .cargo/config.toml.
set -euo pipefail
DIR=${1:?usage: bench-usearch-flags.sh DIR [M] [efConstruction] [EF,EF,...]}
M=${2:-32}
EFC=${3:-256}
EFS=${4:-64,128,256}
cd "$(dirname "$0")/usearch-flags"
T=${CARGO_TARGET_DIR_BASE:-/tmp/usearch-flags-target}
build() { # NAME FLAGS [cargo args]
  local name=$1 flags=$2; shift 2
  CXXFLAGS_x86_64_unknown_linux_gnu="$flags" CARGO_TARGET_DIR="$T/$name" \
    cargo build --release --quiet "$@"
}
build none ""
build numkong "" --features numkong
build x86-64-v3 "-march=x86-64-v3"
build native "-march=native"
"$T/none/release/usearch-flags" build "$DIR" "$M" "$EFC"
for round in 1 2; do
  for v in none numkong x86-64-v3 native; do
    "$T/$v/release/usearch-flags" load "$DIR" "$M" "$EFC" "$EFS" | sed "s/^/round $round, $v: /"
  done
done
"$T/none/release/usearch-flags" view "$DIR" "$M" "$EFC" "$EFS" | sed "s/^/none, memory-mapped: /"
