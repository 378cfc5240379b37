#!/usr/bin/env python3
"""What the wire protocol costs: Qdrant's own Python client (qdrant-client 1.17.x) over REST and
over gRPC, against a collection aisle uploaded, one query after the other; beside it, aisle's
REST client on the same collection (`aisle bench search --backend qdrant` prints its round trip
as "qdrant REST, straight from the client").

Opt-in, never in CI:  pip install 'qdrant-client==1.17.*'
    python3 scripts/bench-qdrant-protocol.py --url http://127.0.0.1:6333 --grpc-port 6334 \
        --collection aisle-bench-100000 [--queries 2000] [--ef 256]

Query vectors are points of the collection itself (fetched once), so every query has real
neighbours; latency does not depend on which vectors are asked.
"""
import argparse
import statistics
import time

from qdrant_client import QdrantClient, models


def timed(client, collection, vectors, ef, n):
    params = models.SearchParams(hnsw_ef=ef) if ef else None
    times = []
    for i in range(200 + n):
        q = vectors[i % len(vectors)]
        t = time.perf_counter()
        client.query_points(collection, query=q, limit=10, search_params=params, with_payload=False)
        if i >= 200:
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:6333")
    ap.add_argument("--grpc-port", type=int, default=6334)
    ap.add_argument("--collection", required=True, help="a collection or an alias")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--ef", type=int, default=256)
    a = ap.parse_args()
    rest = QdrantClient(url=a.url, prefer_grpc=False, timeout=30)
    grpc = QdrantClient(url=a.url, grpc_port=a.grpc_port, prefer_grpc=True, timeout=30)
    points, _ = rest.scroll(a.collection, limit=500, with_vectors=True, with_payload=False)
    vectors = [p.vector for p in points]
    print(f"qdrant-client, {a.queries} sequential queries (k = 10, hnsw_ef {a.ef}) on {a.collection}")
    for name, client in (("REST", rest), ("gRPC", grpc)):
        p50, p99 = timed(client, a.collection, vectors, a.ef, a.queries)
        print(f"  python {name}:  p50 {p50:.3f} ms   p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
