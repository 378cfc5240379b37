#!/usr/bin/env python3
"""Writes crates/aisle-transformer/tests/fixtures/minilm-reference.json: the embeddings that
sentence-transformers itself computes for all-MiniLM-L6-v2, which the parity test in
crates/aisle-transformer/tests/bert.rs compares the Rust encoder against (cosine >= 0.999).

Opt-in and never run by CI: the fixture is committed, and this script only regenerates it.

Texts: COUNT (100) distinct titles spread evenly over a titles file, followed by the
hand-written edge cases below (empty, accents, CJK, emoji, a text far past the 256-token limit,
...). Use titles of aisle's own synthetic world, never those of the real data sets:

    target/release/aisle generate --products 300 --users 20 --sessions 50 --out /tmp/minilm-world

The titles file is either a CSV with a `title` column (such as that world's products.csv) or
plain text with one title per line.

Environment (a one-off; the venv lives outside the repository or under the ignored out/):

    python3 -m venv /tmp/minilm-venv
    /tmp/minilm-venv/bin/pip install sentence-transformers
    bash scripts/fetch-minilm.sh

`pip install sentence-transformers` pulls torch, which on Linux x86_64 comes from PyPI as the CUDA
build with its nvidia-* wheels, about 3 GB in all; only the CPU is used here.

Run:

    /tmp/minilm-venv/bin/python scripts/minilm-reference.py /tmp/minilm-world/products.csv

Options: --model-dir (default $AISLE_MINILM_DIR, else out/models/all-minilm-l6-v2),
--out (default the fixture path), --count (default 100).
"""

import argparse
import csv
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "crates/aisle-transformer/tests/fixtures/minilm-reference.json"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def long_text() -> str:
    """About 400 words of made-up product copy: far past the model's 256 tokens, so the
    fixture checks that both sides truncate at the same place."""
    sentences = [
        "This stainless steel kettle boils a full litre of water in under four minutes",
        "the handle stays cool and the lid opens with one press of a wide button",
        "a blue light shows when it is heating and it switches off by itself when done",
        "the base turns all the way round so it suits left and right hands alike",
        "a removable filter keeps scale out of your tea and rinses clean under the tap",
        "the cord tucks away underneath so the counter stays tidy after breakfast",
        "it comes with a two year warranty and a printed guide in six languages",
        "customers say it is quiet, quick and easy to pour without any drips",
    ]
    parts = []
    words = 0
    section = 1
    while words < 400:
        for s in sentences:
            sentence = f"Part {section}: {s}."
            parts.append(sentence)
            words += len(sentence.split())
            if words >= 400:
                break
        section += 1
    return " ".join(parts)


EDGE_CASES = [
    "",
    "x",
    "Crème brûlée torch – café édition",
    "无线蓝牙耳机 主动降噪 超长续航",
    "🔥 Hot deal 🎧 wireless earbuds 🚀✨ for 🏃‍♀️ runners",
    "HEAVY DUTY STAINLESS STEEL GARLIC PRESS WITH SILICONE GRIP",
    '55" 4K UHD TV 120Hz, 3x HDMI 2.1, 250 cd/m², 12.5 kg',
    "!!! Best... deal?! (new) [2-pack] {sale} <<50% off>> ;-) -- ** ~~ #1 @home & more...",
    long_text(),
    "cable cable cable cable cable cable cable cable cable cable cable cable usb cable cable",
    "https://shop.example.com/products/usb-c-hub-7in1?ref=search&utm_source=aisle#specs",
    "WH-1000XM5 vs. QC45ii: SoundLink Mini (SLM-II) model xB7-Qz9 rev.C",
]


def read_titles(path: Path) -> list[str]:
    """Titles in file order: the `title` column of a CSV, else one title per line."""
    with open(path, newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "title" not in reader.fieldnames:
                sys.exit(f"{path}: no `title` column")
            return [row["title"] for row in reader]
        return [line.rstrip("\n") for line in f]


def distinct(titles: list[str], count: int) -> list[str]:
    """`count` distinct titles spread evenly over the file (it is grouped by category), so
    every part of the catalogue is represented."""
    unique = list(dict.fromkeys(t.strip() for t in titles if t.strip()))
    if len(unique) <= count:
        return unique
    return [unique[i * len(unique) // count] for i in range(count)]


def main() -> None:
    default_model = os.environ.get("AISLE_MINILM_DIR") or str(ROOT / "out/models/all-minilm-l6-v2")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("titles", type=Path, help="products.csv (column `title`) or one title a line")
    p.add_argument("--model-dir", default=default_model)
    p.add_argument("--out", type=Path, default=FIXTURE)
    p.add_argument("--count", type=int, default=100)
    args = p.parse_args()

    titles = distinct(read_titles(args.titles), args.count)
    if len(titles) < args.count:
        sys.exit(f"{args.titles}: only {len(titles)} distinct titles, {args.count} wanted")
    texts = titles + [t for t in EDGE_CASES if t not in set(titles)]

    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model_dir, device="cpu")
    modules = [type(m).__name__ for m in model]
    # all-MiniLM-L6-v2's modules.json already ends in Normalize, so encode() returns unit
    # vectors; normalize_embeddings=True on top of it changes nothing.
    print(f"modules: {modules}, max_seq_length {model.max_seq_length}", file=sys.stderr)
    emb = model.encode(
        texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    assert emb.shape == (len(texts), 384), emb.shape

    def row(v) -> str:
        # 7 significant digits: the f32 vectors to within 1e-7 relative, in half the bytes.
        return "[" + ",".join(f"{float(x):.7g}" for x in v) + "]"

    head = {
        "model": MODEL_NAME,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "max_seq_length": model.max_seq_length,
        "modules": modules,
    }
    # One embedding a line keeps the file readable and its diffs small.
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('  "texts": [')
    lines.append(",\n".join("    " + json.dumps(t, ensure_ascii=False) for t in texts))
    lines.append("  ],")
    lines.append('  "embeddings": [')
    lines.append(",\n".join("    " + row(v) for v in emb))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    back = json.loads(text)  # what serde will read
    assert len(back["texts"]) == len(back["embeddings"]) == len(texts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(texts)} texts x 384, {len(text.encode())} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
