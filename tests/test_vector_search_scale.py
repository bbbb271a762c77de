"""Exact search stays exact at scale (timing lives in benchmarks/vector_search.py, not here)."""

import numpy as np

from ragtune.store.sqlite import SQLiteStore


def test_dense_top_k_matches_numpy_reference(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    bot = store.ensure_bot("b")
    src = store.add_source(bot, "/s", "folder", {})
    rng = np.random.default_rng(0)
    n, dim = 3000, 32
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    from ragtune.types import Chunk, LoadedDocument, Section

    for d in range(30):
        doc = LoadedDocument(f"/s/{d}", "t", (Section((), "x"),), "h", 0.0)
        chunks = [Chunk(f"c{d}-{i}", i, (), f"text {d} {i}", 2) for i in range(100)]
        store.replace_document(bot, src, doc, chunks, vecs[d * 100 : (d + 1) * 100], "syn")
    q = rng.standard_normal(dim).astype(np.float32)
    got = [cid for cid, _ in store.search_dense(bot, q, 10, "syn")]
    ref = np.argsort(-(vecs @ q))[:10]
    assert got == [f"c{i // 100}-{i % 100}" for i in ref]
    store.close()
