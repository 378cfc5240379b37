#!/usr/bin/env bash
# aisle's all-MiniLM-L6-v2 (candle) against sentence-transformers (torch) on the same machine, the
# same titles and the same settings, in one run: encode titles/s (batch 64) and MNRL fine-tuning
# pairs/s (batch 64, AdamW lr 2e-5). Opt-in, never run by CI.
#
#   bash scripts/fetch-minilm.sh                         # the model files, once
#   python3 -m venv /tmp/minilm-venv && /tmp/minilm-venv/bin/pip install sentence-transformers
#   bash scripts/bench-minilm.sh                         # MINILM_PYTHON=... for another venv
#
# Needs a release build (cargo build --release). Titles: 2,000 distinct titles of a generated
# synthetic world. Both sides use 2 threads (RAYON_NUM_THREADS, torch.set_num_threads).
set -euo pipefail
cd "$(dirname "$0")/.."
aisle=target/release/aisle
python=${MINILM_PYTHON:-/tmp/minilm-venv/bin/python}
[ -x "$aisle" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x "$python" ] || { echo "no python with sentence-transformers at $python (see the header)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$aisle" generate --products 4000 --users 20 --sessions 50 --out "$work/world" > /dev/null
python3 - "$work/world/products.csv" "$work/titles.txt" <<'PY'
import csv, sys
seen, out = set(), []
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        t = row["title"].strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write("\n".join(out[:2000]) + "\n")
PY
echo "== aisle (candle)"
RAYON_NUM_THREADS=2 "$aisle" bench minilm --titles-file "$work/titles.txt" --titles 2000 --batch 64 --steps 30
echo "== sentence-transformers (torch)"
"$python" scripts/bench-minilm-peer.py "$work/titles.txt"
