#!/usr/bin/env bash
# aisle's all-MiniLM-L6-v2 (candle) against sentence-transformers (torch) on the same machine, the
# same titles and the same settings, in one run: encode titles/s (batch 64) and MNRL fine-tuning
# pairs/s (batch 64, AdamW lr 2e-5). Opt-in, never run by CI.
#
#   bash scripts/fetch-minilm.sh                         # the model files, once
#   python3 -m venv /tmp/minilm-venv && /tmp/minilm-venv/bin/pip install sentence-transformers
#   bash scripts/bench-minilm.sh                         # MINILM_PYTHON=... for another venv, ROUNDS=N
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
# ROUNDS rounds (default 3), the two systems' order alternating from round to round, so that a
# slow spell of this machine does not fall on one system only; each system's every figure is
# printed, then the medians.
rounds=${ROUNDS:-3}
run_aisle() {
  RAYON_NUM_THREADS=2 "$aisle" bench minilm --titles-file "$work/titles.txt" --titles 2000 --batch 64 --steps 30 \
    | tee -a "$work/aisle.log"
}
run_peer() {
  "$python" scripts/bench-minilm-peer.py "$work/titles.txt" 2> "$work/peer.err" | tee -a "$work/peer.log" \
    || { cat "$work/peer.err" >&2; exit 1; }
  grep -E "^sentence-transformers [0-9.]+, torch|^last loss" "$work/peer.err" || true
}
for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds"
  if [ $((r % 2)) -eq 1 ]; then run_aisle; run_peer; else run_peer; run_aisle; fi
done
python3 - "$work/aisle.log" "$work/peer.log" <<'PY'
import re, statistics, sys
def figures(path, pattern):
    return [float(x) for x in re.findall(pattern, open(path, encoding="utf-8").read())]
rows = [
    ("encode (titles/s)",
     figures(sys.argv[1], r"encode\s+([0-9.]+) titles/s"),
     figures(sys.argv[2], r"encode: ([0-9.]+) titles/s")),
    ("fine-tune (pairs/s)",
     figures(sys.argv[1], r"fine-tune\s+([0-9.]+) pairs/s"),
     figures(sys.argv[2], r"fine-tune: ([0-9.]+) pairs/s")),
]
print("== medians")
for name, ours, peer in rows:
    if not ours or not peer:
        sys.exit(f"no {name} figures in the logs")
    a, b = statistics.median(ours), statistics.median(peer)
    runs = lambda v: " / ".join(f"{x:.1f}" for x in v)
    print(f"{name:<20} aisle {a:7.1f} ({runs(ours)})   sentence-transformers {b:7.1f} ({runs(peer)})   ratio {a / b:.2f}")
PY
