#!/usr/bin/env bash
# Re-creates vendor/usearch: the usearch crate as published on crates.io, with aisle's patches
# (vendor/usearch-*.patch) applied. The workspace builds it through [patch.crates-io] in
# Cargo.toml; vendor/README.md says why each patch exists and what it measured.
#
#   bash scripts/vendor-usearch.sh [VERSION]     # default: the version vendored now
#
# To move to a newer usearch: run it with the new version, check that every patch still applies,
# update `usearch = "..."` in crates/aisle-search/Cargo.toml, `cargo update -p usearch`, and
# re-measure (scripts/bench-usearch-flags.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-$(sed -n 's/^version = "\(.*\)"$/\1/p' vendor/usearch/Cargo.toml | head -1)}
[ -n "$VERSION" ] || { echo "vendor-usearch.sh: no version given and vendor/usearch/Cargo.toml names none" >&2; exit 2; }
REGISTRY=${CARGO_HOME:-$HOME/.cargo}/registry/src
SRC=$(ls -d "$REGISTRY"/*/usearch-"$VERSION" 2>/dev/null | head -1 || true)
if [ -z "$SRC" ]; then
  # Let cargo download the published crate into its registry.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/src" && touch "$tmp/src/lib.rs"
  printf '[package]\nname = "fetch-usearch"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n[dependencies]\nusearch = { version = "=%s", default-features = false }\n' "$VERSION" > "$tmp/Cargo.toml"
  cargo fetch --manifest-path "$tmp/Cargo.toml" >&2
  SRC=$(ls -d "$REGISTRY"/*/usearch-"$VERSION" | head -1)
fi
rm -rf vendor/usearch.new
cp -r "$SRC" vendor/usearch.new
rm -f vendor/usearch.new/.cargo-ok
for p in vendor/usearch-*.patch; do
  patch --quiet --forward -d vendor/usearch.new -p1 < "$p"
  echo "applied $p" >&2
done
# The published crate carries no license file; its Cargo.toml says Apache-2.0, whose text is this.
cp vendor/LICENSE-APACHE-2.0 vendor/usearch.new/LICENSE
# Never formatted or linted as aisle's own code (cargo fmt --all follows path dependencies).
printf 'disable_all_formatting = true\n' > vendor/usearch.new/rustfmt.toml
rm -rf vendor/usearch
mv vendor/usearch.new vendor/usearch
echo "vendor/usearch: usearch $VERSION from $SRC, patched" >&2
