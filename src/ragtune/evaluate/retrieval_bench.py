"""`ragtune bench retrieval`: index a BEIR dataset through the real ingest pipeline in a temporary home and
score bm25, dense and hybrid retrieval (document score = best chunk), plus pipeline vs raw embedding speed."""

from __future__ import annotations

import csv
import json
import re
import tempfile
import time
from pathlib import Path

from ..errors import InputError
from ..ingest.chunking import embedding_text
from ..ingest.sync import register_sources, sync_bot
from ..models.embedders import open_embedder
from ..retrieval import Retriever
from ..settings import Settings
from ..store import Store
from ..store.sqlite import SQLiteStore
from .metrics import mrr_at_k, ndcg_at_k, recall_at_k


def read_beir(folder: str | Path, split: str = "test"):
    root = Path(folder)
    need = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise InputError(f"not a BEIR dataset folder: missing {', '.join(missing)}")
    try:
        corpus = [json.loads(line) for line in need[0].open(encoding="utf-8") if line.strip()]
        queries = {q["_id"]: q["text"] for q in map(json.loads, need[1].open(encoding="utf-8")) if q}
    except (json.JSONDecodeError, KeyError) as exc:
        raise InputError(f"malformed BEIR jsonl in {root}: {exc}") from exc
    qrels: dict[str, dict[str, int]] = {}
    with need[2].open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or not row[2].lstrip("-").isdigit():
                continue  # header
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return corpus, queries, qrels


def _doc_ranking(hits, file_to_id) -> list[str]:
    ranked: list[str] = []
    for h in hits:
        doc = file_to_id[Path(h.source).stem]
        if doc not in ranked:
            ranked.append(doc)
    return ranked


def bench_retrieval(folder: str | Path, settings: Settings, split: str = "test", max_docs: int = 0,
                    store: Store | None = None, raw_embed: bool = True) -> dict:
    """`store`: an empty store to index into (benchmarks/store_retrieval.py passes a Postgres one), else a temporary
    SQLite store; it is closed at the end either way. `raw_embed`: also time the bare embedder on the same texts."""
    corpus, queries, qrels = read_beir(folder, split)
    if max_docs:
        corpus = corpus[:max_docs]
        keep = {d["_id"] for d in corpus}
        qrels = {q: r for q, r in qrels.items() if set(r) & keep}
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
        docs_dir = Path(tmp) / "corpus"
        docs_dir.mkdir()
        file_to_id = {}
        for i, d in enumerate(corpus):
            stem = f"d{i:07d}"
            file_to_id[stem] = d["_id"]
            title = re.sub(r"\s+", " ", d.get("title") or "").strip()
            body = (d.get("text") or "").strip()
            (docs_dir / f"{stem}.md").write_text(f"# {title}\n\n{body}\n" if title else body + "\n", encoding="utf-8")
        settings = settings.replace(home=tmp, bot="bench")
        store = store if store is not None else SQLiteStore(Path(tmp) / "ragtune.db")
        embedder = open_embedder(settings)
        bot = store.ensure_bot("bench")
        register_sources(store, bot, [str(docs_dir)], settings)
        report = sync_bot(store, settings, bot, embedder=embedder)
        # the bare embedder on exactly the texts the pipeline embedded, in the same run
        texts = [embedding_text(c.title, c.heading, c.text) for c in store.list_chunks(bot)]
        raw_seconds = 0.0
        if raw_embed:
            started = time.perf_counter()
            embedder.embed(texts, batch_size=settings.embed_batch_size)
            raw_seconds = time.perf_counter() - started

        retriever = Retriever(store, settings.replace(candidates=300), embedder)
        results = {}
        qps = 0.0
        scored_queries = [q for q in qrels if q in queries]
        for mode in ("bm25", "dense", "hybrid"):
            nd, rc, mr = [], [], []
            started = time.perf_counter()
            for qid in scored_queries:
                hits = retriever.search(bot, queries[qid], k=300, mode=mode).hits
                ranked = _doc_ranking(hits, file_to_id)
                nd.append(ndcg_at_k(ranked, qrels[qid], 10))
                rc.append(recall_at_k(ranked, qrels[qid], 100))
                mr.append(mrr_at_k(ranked, qrels[qid], 10))
            elapsed = time.perf_counter() - started
            if mode == "hybrid":
                qps = len(scored_queries) / elapsed if elapsed else 0.0
            n = max(len(scored_queries), 1)
            results[mode] = {"ndcg@10": round(sum(nd) / n, 4), "recall@100": round(sum(rc) / n, 4),
                             "mrr@10": round(sum(mr) / n, 4)}
        store.close()
    n_chunks = len(texts)
    return {
        "dataset": str(folder),
        "split": split,
        "documents": len(corpus),
        "chunks": n_chunks,
        "queries": len(scored_queries),
        "store": type(store).__name__,
        "embedder": embedder.identity,
        "results": results,
        "index_seconds": round(report.seconds, 2),
        "embed_per_second_pipeline": round(n_chunks / report.seconds, 1) if report.seconds else 0.0,
        "embed_per_second_raw": round(n_chunks / raw_seconds, 1) if raw_seconds else 0.0,
        "queries_per_second": round(qps, 1),
        "failed": report.failed,
    }
