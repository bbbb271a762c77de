"""Store conformance suite: every Store backend must pass it (SQLite now; Postgres joins via STORES)."""

import numpy as np
import pytest

from ragtune.errors import NotFoundError
from ragtune.ingest.chunking import chunk_document
from ragtune.models.embedders import HashEmbedder
from ragtune.store.sqlite import SQLiteStore
from ragtune.types import LoadedDocument, Section

EMB = HashEmbedder()


def _sqlite(tmp_path):
    return SQLiteStore(tmp_path / "s.db")


STORES = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(STORES))
def st(request, tmp_path):
    s = STORES[request.param](tmp_path)
    yield s
    s.close()


def put(store, bot, source, path, text, title="Doc"):
    doc = LoadedDocument(path, title, (Section((title,), text),), f"hash-{hash(text)}", 0.0)
    chunks = chunk_document(doc, bot.name, EMB.token_offsets, 50, 5)
    vecs = EMB.embed([c.text for c in chunks])
    return store.replace_document(bot, source, doc, chunks, vecs, EMB.identity)


def test_bots_are_isolated(st):
    a, b = st.ensure_bot("a"), st.ensure_bot("b")
    sa, sb = st.add_source(a, "/a", "folder", {}), st.add_source(b, "/b", "folder", {})
    put(st, a, sa, "/a/x.md", "The canary is purple giraffe seventeen.")
    put(st, b, sb, "/b/y.md", "Refunds take thirty days.")
    for bot, other in ((a, "thirty"), (b, "giraffe")):
        lex = st.get_hits(bot, st.search_lexical(bot, "canary giraffe refunds thirty", 10))
        dense = st.get_hits(bot, st.search_dense(bot, EMB.embed_query("canary giraffe refunds thirty"), 10, EMB.identity))
        assert lex and dense
        assert all(other not in h.text for h in lex + dense)
    # asking bot b for bot a's chunk ids returns nothing
    a_ids = [c for c, _ in st.search_lexical(a, "canary", 5)]
    assert st.get_hits(b, [(c, 1.0) for c in a_ids]) == []


def test_unknown_bot(st):
    with pytest.raises(NotFoundError, match="unknown bot 'nope'"):
        st.get_bot("nope")


def test_replace_document_replaces_everything(st):
    bot = st.ensure_bot("b")
    src = st.add_source(bot, "/kb", "folder", {})
    first = put(st, bot, src, "/kb/a.md", "old fact: the price is 10 dollars. " * 30)
    n_old = st.count(bot)["chunks"]
    second = put(st, bot, src, "/kb/a.md", "new fact: the price is 12 dollars.")
    assert first == second
    counts = st.count(bot)
    assert counts == {"documents": 1, "chunks": 1, "vectors": 1} and n_old > 1
    assert st.search_lexical(bot, "old", 5) == []
    assert st.search_lexical(bot, "12 dollars", 5)


def test_delete_document_and_source_cascade(st):
    bot = st.ensure_bot("b")
    src = st.add_source(bot, "/kb", "folder", {})
    doc_id = put(st, bot, src, "/kb/a.md", "alpha beta gamma")
    put(st, bot, src, "/kb/b.md", "delta epsilon")
    st.delete_document(bot, doc_id)
    assert st.count(bot) == {"documents": 1, "chunks": 1, "vectors": 1}
    assert st.search_lexical(bot, "alpha", 5) == []
    st.remove_source(bot, src.id)
    assert st.count(bot) == {"documents": 0, "chunks": 0, "vectors": 0}
    assert st.search_dense(bot, EMB.embed_query("delta"), 5, EMB.identity) == []


def test_dense_search_exact_and_cache_invalidation(st):
    bot = st.ensure_bot("b")
    src = st.add_source(bot, "/kb", "folder", {})
    put(st, bot, src, "/kb/a.md", "shipping to canada takes five days")
    first = st.search_dense(bot, EMB.embed_query("shipping canada"), 3, EMB.identity)
    put(st, bot, src, "/kb/b.md", "shipping canada")
    second = st.search_dense(bot, EMB.embed_query("shipping canada"), 3, EMB.identity)
    assert len(first) == 1 and len(second) == 2
    assert second[0][1] >= second[1][1]
    # vectors of another embedder identity are invisible
    assert st.search_dense(bot, EMB.embed_query("shipping"), 3, "other-model") == []


def test_lexical_query_with_fts_syntax_is_safe(st):
    bot = st.ensure_bot("b")
    src = st.add_source(bot, "/kb", "folder", {})
    put(st, bot, src, "/kb/a.md", "NEAR AND OR quotes \" and stars *")
    for q in ['"unbalanced', "NEAR(a b)", "*", "a AND OR NOT", "", "   ", "col:value", "\x00\x01"]:
        st.search_lexical(bot, q, 5)  # must not raise


def test_sources_listing_and_sync_time(st):
    bot = st.ensure_bot("b")
    src = st.add_source(bot, "/kb", "folder", {"include": "*.md"})
    assert st.list_sources(bot)[0].synced_at is None
    st.mark_synced(src, 123.0)
    assert st.list_sources(bot)[0].synced_at == 123.0
    with pytest.raises(NotFoundError):
        st.remove_source(st.ensure_bot("other"), src.id)


def test_list_chunks_in_document_order_for_one_bot_only(st):
    bot, other = st.ensure_bot("b"), st.ensure_bot("other")
    src = st.add_source(bot, "/kb", "folder", {})
    assert st.list_chunks(bot) == []
    b_id = put(st, bot, src, "/kb/b.md", "second document, one chunk.", title="Bee")
    a_id = put(st, bot, src, "/kb/a.md", " ".join(f"sentence {i} of the first document." for i in range(40)), "Ay")
    put(st, other, st.add_source(other, "/x", "folder", {}), "/x/c.md", "another bot's text")
    chunks = st.list_chunks(bot)
    assert [c.path for c in chunks] == sorted(c.path for c in chunks)  # by path, then position
    first = [c for c in chunks if c.path == "/kb/a.md"]
    assert len(first) > 1 and {c.document_id for c in first} == {a_id} and first[0].title == "Ay"
    assert "sentence 0 " in first[0].text and "sentence 39 " in first[-1].text
    assert first[0].heading == ("Ay",)
    hits = st.get_hits(bot, [(c.chunk_id, 1.0) for c in chunks])  # the same chunks search returns
    assert [(h.chunk_id, h.text, h.heading, h.source, h.title) for h in hits] == \
        [(c.chunk_id, c.text, c.heading, c.path, c.title) for c in chunks]
    assert chunks[-1].document_id == b_id and chunks[-1].title == "Bee"
    assert all("another bot" not in c.text for c in chunks)
    st.delete_document(bot, a_id)
    assert [c.path for c in st.list_chunks(bot)] == ["/kb/b.md"]


def test_passage_vectors_are_kept_per_bot_and_go_with_their_chunk(st):
    from ragtune import passages

    a, b = st.ensure_bot("a"), st.ensure_bot("b")
    src = st.add_source(a, "/kb", "folder", {})
    st.add_source(b, "/kb", "folder", {})
    text = "Refunds take thirty days. Repairs cost 45 dollars per hour."
    doc = LoadedDocument("/kb/a.md", "Doc", (Section(("Doc",), text),), "h1", 0.0)
    chunks = chunk_document(doc, a.name, EMB.token_offsets, 50, 5)
    rows = passages.index_rows(EMB, doc.title, chunks)
    units = passages.sentence_units(doc.title, chunks[0].heading, chunks[0].text)
    assert len(rows) == len(units) == 2 and units[0] == "Doc: Refunds take thirty days."
    # runs of up to `window` consecutive sentences too: the two sentences, then both together
    windows = passages.sentence_units(doc.title, chunks[0].heading, chunks[0].text, window=3)
    assert windows == units + ["Doc: Refunds take thirty days. Repairs cost 45 dollars per hour."]
    assert [r[1] for r in passages.index_rows(EMB, doc.title, chunks, window=3)] == \
        [passages.unit_key(u) for u in windows]
    st.replace_document(a, src, doc, chunks, EMB.embed([c.text for c in chunks]), EMB.identity, rows)
    keys = [passages.unit_key(u) for u in units]
    kept = st.passage_vectors(a, EMB.identity, keys + ["missing"])
    assert sorted(kept) == sorted(keys)
    assert np.allclose(kept[keys[0]], EMB.embed([units[0]])[0])
    assert st.passage_vectors(b, EMB.identity, keys) == {}  # another bot's
    assert st.passage_vectors(a, "other-embedder", keys) == {}
    # vectors(): kept ones are read, the rest embedded, in order
    mixed = [units[1], "Doc: a sentence nobody indexed.", units[0]]
    assert np.allclose(passages.vectors(st, a, EMB, mixed), EMB.embed(mixed), atol=1e-6)
    # replaced without passages: the old chunk's vectors are gone with it
    st.replace_document(a, src, doc, chunks, EMB.embed([c.text for c in chunks]), EMB.identity)
    assert st.passage_vectors(a, EMB.identity, keys) == {}
    doc_id = st.replace_document(a, src, doc, chunks, EMB.embed([c.text for c in chunks]), EMB.identity, rows)
    st.delete_document(a, doc_id)
    assert st.passage_vectors(a, EMB.identity, keys) == {}
