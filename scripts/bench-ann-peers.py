#!/usr/bin/env python3
"""aisle's embedded HNSW index (usearch) beside faiss-cpu HNSW and hnswlib, on the very same
vectors: recall@10 against exact search and queries per second on one thread, at several ef.

Opt-in, never in CI (pip install faiss-cpu hnswlib numpy). First let aisle export the vectors
and time its own index on them:

    target/release/aisle bench search --sizes 1000000 --export-vectors out/ann \
        [--connectivity 32 --expansion-add 256] [--expansion-search 64,128,256,512]
    python3 scripts/bench-ann-peers.py --dir out/ann/1000000

It reads DIR/products.npy and DIR/queries.npy (the catalog and the test queries through the
trained towers), builds each peer with the M and efConstruction aisle used (from
DIR/aisle-ann.tsv), and prints one table with aisle's rows. Queries run one at a time on one
thread for every system. Every system gets the vectors in a shuffled order, as aisle's index and
its Qdrant upload do: a graph grown in catalog order (sorted by category) links the clusters
poorly, and `--catalog-order` shows by how much. Recall counts ties as aisle does: a result outside the exact top 10 whose
similarity is at least the exact 10th's (within 1e-5) is a hit.

aisle's index asks the kernel for transparent huge pages (vendor/README.md), which is worth
11-15% more queries/s at 1M products. The peers get the same: the script re-runs itself with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1, so that glibc's malloc asks for them on faiss's and
hnswlib's large blocks. `--no-hugepages` runs them as they come.
"""
import argparse
import csv
import os
import sys
import time

import numpy as np


def exact_top(products, queries, k):
    sims = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 256):
        block = queries[s : s + 256] @ products.T
        top = np.argpartition(-block, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(block, top, axis=1), axis=1)
        ids[s : s + 256] = np.take_along_axis(top, order, axis=1)
        sims[s : s + 256] = np.take_along_axis(block, ids[s : s + 256], axis=1)
    return ids, sims


def recall(found, products, queries, truth_ids, truth_sims, k):
    total = 0.0
    for i, row in enumerate(found):
        kth = truth_sims[i, k - 1]
        truth = set(truth_ids[i].tolist())
        hits = sum(
            1
            for p in row[:k]
            if p >= 0 and (p in truth or float(products[p] @ queries[i]) >= kth - 1e-5)
        )
        total += min(hits, k) / k
    return total / len(found)


def timed(search_one, queries, k, seconds=1.0, at_least=2000):
    found = [search_one(q, k) for q in queries]
    t = time.perf_counter()
    done = 0
    while done < at_least or time.perf_counter() - t < seconds:
        search_one(queries[done % len(queries)], k)
        done += 1
    return found, done / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--catalog-order", action="store_true", help="insert the peers' vectors in catalog order, not shuffled")
    ap.add_argument("--no-hugepages", action="store_true", help="do not ask glibc's malloc for transparent huge pages")
    a = ap.parse_args()
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not a.no_hugepages and "glibc.malloc.hugetlb" not in tunables:
        # glibc reads its tunables once, at start: run again with huge pages asked for.
        env = dict(os.environ, GLIBC_TUNABLES=":".join(t for t in (tunables, "glibc.malloc.hugetlb=1") if t))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    pages = "with" if "glibc.malloc.hugetlb=1" in tunables else "without"
    products = np.load(os.path.join(a.dir, "products.npy")).astype(np.float32)
    queries = np.load(os.path.join(a.dir, "queries.npy")).astype(np.float32)
    with open(os.path.join(a.dir, "aisle-ann.tsv")) as f:
        aisle_rows = list(csv.DictReader(f, delimiter="\t"))
    m = int(aisle_rows[0]["M"])
    efc = int(aisle_rows[0]["efConstruction"])
    efs = [int(r["ef"]) for r in aisle_rows]
    n, d = products.shape
    truth_ids, truth_sims = exact_top(products, queries, a.k)
    # The peers' insertion order; a search's positions map back to products through it.
    order = np.arange(n) if a.catalog_order else np.random.default_rng(42).permutation(n)
    shuffled = np.ascontiguousarray(products[order])
    rows = [
        (r["system"], m, efc, float(r["build_s"]), int(r["ef"]), float(r["recall_at_10"]), float(r["queries_per_s"]))
        for r in aisle_rows
    ]

    import faiss

    faiss.omp_set_num_threads(2)  # building may use both cores, as usearch does
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = efc
    index.add(shuffled)
    build = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    for ef in efs:
        index.hnsw.efSearch = ef
        found, qps = timed(lambda q, k: index.search(q[None, :], k)[1][0], queries, a.k)
        found = [[order[p] if p >= 0 else -1 for p in row] for row in found]
        rows.append(("faiss-cpu HNSWFlat", m, efc, build, ef, recall(found, products, queries, truth_ids, truth_sims, a.k), qps))

    import hnswlib

    t = time.perf_counter()
    h = hnswlib.Index(space="ip", dim=d)
    h.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=42)
    h.set_num_threads(2)
    h.add_items(shuffled, order)
    build = time.perf_counter() - t
    h.set_num_threads(1)
    for ef in efs:
        h.set_ef(max(ef, a.k))
        found, qps = timed(lambda q, k: h.knn_query(q[None, :], k=k)[0][0], queries, a.k)
        rows.append(("hnswlib", m, efc, build, ef, recall(found, products, queries, truth_ids, truth_sims, a.k), qps))

    inserted = "in catalog order" if a.catalog_order else "shuffled"
    print(f"{n:,} products x {d}, {len(queries):,} queries, k = {a.k}, one query at a time on one thread, peers' vectors inserted {inserted}, {pages} transparent huge pages")
    print("| system | M | efConstruction | build s | ef | recall@10 | queries/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s, m_, e, b, ef, r, q in rows:
        print(f"| {s} | {m_} | {e} | {b:.1f} | {ef} | {r:.3f} | {q:,.0f} |")
    print("aisle's build time includes BM25 (tantivy) over the catalog; the peers' Python loop adds a few microseconds a query")


if __name__ == "__main__":
    main()
