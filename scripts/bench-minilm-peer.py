#!/usr/bin/env python3
"""The peer figures for aisle's MiniLM benchmark: how fast sentence-transformers itself encodes
titles and fine-tunes all-MiniLM-L6-v2 on this machine, CPU only, 2 threads.

Opt-in and never run by CI. Environment: the venv of scripts/minilm-reference.py
(`python3 -m venv /tmp/minilm-venv && /tmp/minilm-venv/bin/pip install sentence-transformers`,
then `bash scripts/fetch-minilm.sh`). Titles from aisle's synthetic world, e.g.

    target/release/aisle generate --products 2500 --users 20 --sessions 50 --out /tmp/minilm-bench
    /tmp/minilm-venv/bin/python scripts/bench-minilm-peer.py /tmp/minilm-bench/products.csv

What is measured (only the measured steps are timed, after a warm-up):
- encode: N (2,000) titles, `model.encode(batch_size=64)` in eval mode, no gradients;
  titles/s = N / seconds. Warm-up: one encode of 128 titles.
- fine-tune: M (30) steps of MultipleNegativesRankingLoss at batch 64, in a plain torch loop
  (tokenise, the model's forward for both sides + loss, backward, AdamW step at lr 2e-5,
  zero_grad), dropout on (train mode). Pairs: (query, title) where the query is the title's
  first 3 words and the title is the positive; the other titles of the batch are the
  negatives. Step i takes titles [64*i, 64*i+64) of the list (wrapping round).
  pairs/s = M * 64 / seconds. Warm-up: 2 steps first, not timed.
"""

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_titles(path: Path) -> list[str]:
    """Non-empty titles in file order: the `title` column of a CSV, else one title per line."""
    with open(path, newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "title" not in reader.fieldnames:
                sys.exit(f"{path}: no `title` column")
            rows = [row["title"] for row in reader]
        else:
            rows = [line.rstrip("\n") for line in f]
    return [t.strip() for t in rows if t.strip()]


def main() -> None:
    default_model = os.environ.get("AISLE_MINILM_DIR") or str(ROOT / "out/models/all-minilm-l6-v2")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("titles", type=Path, help="products.csv (column `title`) or one title a line")
    p.add_argument("--model-dir", default=default_model)
    p.add_argument("-n", "--titles-count", type=int, default=2000)
    p.add_argument("-m", "--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    titles = read_titles(args.titles)
    if len(titles) < args.titles_count:
        sys.exit(f"{args.titles}: {len(titles)} titles, {args.titles_count} wanted")
    titles = titles[: args.titles_count]

    model = SentenceTransformer(args.model_dir, device="cpu")
    print(
        f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, "
        f"max_seq_length {model.max_seq_length}",
        file=sys.stderr,
    )

    # --- encode
    model.eval()
    model.encode(titles[:128], batch_size=args.batch, show_progress_bar=False)
    t0 = time.perf_counter()
    emb = model.encode(titles, batch_size=args.batch, show_progress_bar=False)
    encode_s = time.perf_counter() - t0
    assert emb.shape == (len(titles), 384)

    # --- fine-tune
    loss_fn = MultipleNegativesRankingLoss(model)
    # `tokenize` became `preprocess` in sentence-transformers 6.
    prepare = getattr(model, "preprocess", None) or model.tokenize
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    model.train()

    def batch(i: int) -> tuple[list[str], list[str]]:
        start = (i * args.batch) % len(titles)
        docs = [titles[(start + j) % len(titles)] for j in range(args.batch)]
        queries = [" ".join(d.split()[:3]) for d in docs]
        return queries, docs

    def step(i: int) -> float:
        queries, docs = batch(i)
        features = [prepare(queries), prepare(docs)]
        loss = loss_fn(features, None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    warm = 2
    for i in range(warm):
        step(i)
    t0 = time.perf_counter()
    last = 0.0
    for i in range(warm, warm + args.steps):
        last = step(i)
    train_s = time.perf_counter() - t0
    print(f"last loss {last:.4f}", file=sys.stderr)

    version = ".".join(sentence_transformers.__version__.split(".")[:2])
    print(f"sentence-transformers {version} encode: {len(titles) / encode_s:.0f} titles/s")
    print(f"fine-tune: {args.steps * args.batch / train_s:.1f} pairs/s")


if __name__ == "__main__":
    main()
