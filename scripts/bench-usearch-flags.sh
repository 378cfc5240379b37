#!/usr/bin/env bash
# Opt-in, never in CI: one usearch graph searched by the same program built with usearch's C++
# compiled four ways (no flags, its `numkong` SIMD feature, -march=x86-64-v3, -march=native),
# one thread; then the crates.io usearch against aisle's vendored, patched one (vendor/usearch:
# transparent huge pages), both -march=x86-64-v3. The figures in
# docs/scale-out.md#the-embedded-index-against-its-peers come from it.
#
#   target/release/aisle bench search --sizes 200000 --connectivity 32 --expansion-add 256 \
#       --expansion-search 64 --export-vectors /tmp/ann --seconds 2
#   bash scripts/bench-usearch-flags.sh /tmp/ann/200000 [M] [efConstruction] [EF,EF,...]
#
# With VARIANTS=1 it then measures the experiments in usearch-flags/variants/ (patches to the
# crates.io usearch: prefetching, skipping key reads; none helped, vendor/README.md) and i8
# vectors (a second graph, built once), each against the plain -march=x86-64-v3 build.
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
# The vendored build runs in a copy, so that patching usearch leaves this folder's Cargo.lock as is.
VENDOR=$(cd ../.. && pwd)/vendor/usearch
rm -rf "$T/vendored-src" && mkdir -p "$T" && cp -r . "$T/vendored-src"
(cd "$T/vendored-src" && build vendored "-march=x86-64-v3" \
  --config "patch.crates-io.usearch.path=\"$VENDOR\"")
# The graph is built once per DIR, M and efConstruction; delete the .usearch file to rebuild it.
[ -f "$DIR/usearch-flags-M$M-efc$EFC.usearch" ] || "$T/none/release/usearch-flags" build "$DIR" "$M" "$EFC"
for round in 1 2; do
  for v in none numkong x86-64-v3 native vendored; do
    "$T/$v/release/usearch-flags" load "$DIR" "$M" "$EFC" "$EFS" | sed "s/^/round $round, $v: /"
  done
done
"$T/none/release/usearch-flags" view "$DIR" "$M" "$EFC" "$EFS" | sed "s/^/none, memory-mapped: /"
[ "${VARIANTS:-0}" = 1 ] || exit 0
CRATE=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/usearch-2.26.6 | head -1)
names=()
for patch in variants/*.patch; do
  name=$(basename "$patch" .patch)
  rm -rf "$T/usearch-$name" "$T/$name-src"
  cp -r "$CRATE" "$T/usearch-$name" && patch --quiet -d "$T/usearch-$name" -p1 < "$patch"
  cp -r . "$T/$name-src"
  (cd "$T/$name-src" && build "$name" "-march=x86-64-v3" \
    --config "patch.crates-io.usearch.path=\"$T/usearch-$name\"")
  names+=("$name")
done
[ -f "$DIR/usearch-flags-i8-M$M-efc$EFC.usearch" ] ||
  USEARCH_FLAGS_SCALAR=i8 "$T/x86-64-v3/release/usearch-flags" build "$DIR" "$M" "$EFC"
for round in 1 2; do
  for v in x86-64-v3 "${names[@]}"; do
    "$T/$v/release/usearch-flags" load "$DIR" "$M" "$EFC" "$EFS" | sed "s/^/round $round, $v: /"
  done
  USEARCH_FLAGS_SCALAR=i8 "$T/x86-64-v3/release/usearch-flags" load "$DIR" "$M" "$EFC" "$EFS" |
    sed "s/^/round $round, x86-64-v3 i8: /"
done
