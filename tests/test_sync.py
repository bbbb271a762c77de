"""Incremental sync: counts, no work when nothing changed, bad input reported per file, crash safety."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import DATASETS, cli_env, run_cli, run_json
from ragtune.ingest.sync import register_sources, sync_bot
from ragtune.models.embedders import HashEmbedder
from ragtune.store.sqlite import SQLiteStore

POETRY = DATASETS / "poetry-docs"


class CountingEmbedder(HashEmbedder):
    """The hash fake, counting the texts it is asked to embed."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def embed_batch(self, texts):
        self.calls += len(texts)
        return super().embed_batch(texts)


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def test_add_update_remove_unchanged(settings, store, tmp_path):
    kb = tmp_path / "kb"
    write(kb, "a.md", "# A\n\nApples are red.")
    write(kb, "b.md", "# B\n\nBananas are yellow.")
    write(kb, "sub/c.txt", "Cherries are dark.")
    write(kb, "notes.xyz", "ignored: unsupported suffix")
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(kb)], settings)
    emb = CountingEmbedder()
    r = sync_bot(store, settings, bot, embedder=emb)
    assert (r.added, r.updated, r.removed, r.unchanged, r.failed) == (3, 0, 0, 0, [])
    emb.calls = 0
    r = sync_bot(store, settings, bot, embedder=emb)
    assert (r.added, r.updated, r.removed, r.unchanged) == (0, 0, 0, 3) and emb.calls == 0
    write(kb, "a.md", "# A\n\nApples are green now.")
    (kb / "b.md").unlink()
    r = sync_bot(store, settings, bot, embedder=emb)
    assert (r.added, r.updated, r.removed, r.unchanged) == (0, 1, 1, 1)
    assert store.count(bot)["documents"] == 2
    assert store.search_lexical(bot, "bananas", 5) == []
    assert store.search_lexical(bot, "green", 5)


def test_include_exclude_globs(settings, store, tmp_path):
    kb = tmp_path / "kb"
    write(kb, "a.md", "alpha")
    write(kb, "drafts/b.md", "beta")
    write(kb, "c.txt", "gamma")
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(kb)], settings.replace(include="*.md", exclude="drafts/*"))
    r = sync_bot(store, settings, bot)
    assert r.added == 1


def test_changing_embedder_reembeds_and_never_mixes(settings, store, tmp_path):
    kb = tmp_path / "kb"
    write(kb, "a.md", "alpha beta")
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(kb)], settings)
    sync_bot(store, settings, bot, embedder=HashEmbedder())
    other = HashEmbedder(dim=64)
    r = sync_bot(store, settings, bot, embedder=other)
    assert r.updated == 1 and r.unchanged == 0
    assert store.search_dense(bot, HashEmbedder().embed_query("alpha"), 5, "hash-384") == []
    assert store.search_dense(bot, other.embed_query("alpha"), 5, other.identity)


def test_sentence_vectors_are_added_to_documents_indexed_without_them(settings, store, tmp_path):
    from ragtune import passages

    kb = tmp_path / "kb"
    write(kb, "a.md", "# A\n\nApples are red. Pears are green.")
    write(kb, "b.md", "# B\n\nBananas are yellow.")
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(kb)], settings)
    emb = HashEmbedder()
    r = sync_bot(store, settings.replace(embed_sentences=False), bot, embedder=emb)  # an older store
    assert r.added == 2
    key = passages.unit_key(passages.unit_text("A", "Apples are red."))
    assert store.passage_vectors(bot, emb.identity, [key]) == {}
    r = sync_bot(store, settings.replace(embed_sentences=False), bot, embedder=emb)
    assert r.unchanged == 2  # not asked for: nothing to do
    single = settings.replace(evidence_window=1)  # sentences only, as stores indexed before windows were
    r = sync_bot(store, single, bot, embedder=emb)
    assert (r.updated, r.unchanged) == (2, 0) and list(store.passage_vectors(bot, emb.identity, [key])) == [key]
    pair = passages.unit_key(passages.unit_text("A", "Apples are red. Pears are green."))
    assert store.passage_vectors(bot, emb.identity, [pair]) == {}
    r = sync_bot(store, settings, bot, embedder=emb)  # windows of up to evidence_window sentences: re-indexed
    assert (r.updated, r.unchanged) == (2, 0) and list(store.passage_vectors(bot, emb.identity, [pair])) == [pair]
    r = sync_bot(store, settings, bot, embedder=emb)
    assert r.unchanged == 2
    assert sync_bot(store, single, bot, embedder=emb).unchanged == 2  # more than asked for is kept


def test_poetry_docs_version_change(tmp_path, home):
    """The acceptance case: 1.8.5 → 2.4.1 in place = 1 added, 14 updated, 0 removed, 1 unchanged."""
    docs = tmp_path / "docs"
    shutil.copytree(POETRY / "1.8.5" / "docs", docs)
    first = run_json(home, "ingest", str(docs))
    assert first["added"] == 15 and first["failed"] == []
    again = run_json(home, "ingest", str(docs))
    assert (again["added"], again["updated"], again["removed"], again["unchanged"]) == (0, 0, 0, 15)
    assert again["chunks_embedded"] == 0
    shutil.rmtree(docs)
    shutil.copytree(POETRY / "2.4.1" / "docs", docs)
    r = run_json(home, "sync")
    assert (r["added"], r["updated"], r["removed"], r["unchanged"]) == (1, 14, 0, 1)
    assert r["failed"] == []


def _bad_corpus(kb: Path) -> dict[str, str]:
    """Files that must each fail with a one-line reason; returns name → expected words in the reason."""
    import docx

    write(kb, "good1.md", "# Good\n\nThe warranty lasts two years.")
    write(kb, "good2.txt", "Support is open on weekdays.")
    (kb / "empty.txt").write_bytes(b"")
    (kb / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(3000))
    d = docx.Document()
    d.add_heading("Title", 1)
    d.add_paragraph("text " * 200)
    d.save(kb / "full.docx")
    data = (kb / "full.docx").read_bytes()
    (kb / "full.docx").unlink()
    (kb / "truncated.docx").write_bytes(data[: len(data) // 2])
    (kb / "garbage.txt").write_bytes(bytes(range(256)) * 40)
    with open(kb / "huge.txt", "wb") as f:  # sparse: 200 MB that costs no disk
        f.truncate(200 * 1024 * 1024)
    os.symlink(kb / "does-not-exist.md", kb / "vanished.md")  # listed, gone when read
    return {"empty.txt": "empty", "corrupt.pdf": "pdf", "truncated.docx": "docx", "garbage.txt": "binary",
            "huge.txt": "200.0 MB", "vanished.md": "disappeared"}


def test_bad_files_are_reported_and_the_rest_lands(settings, store, tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    expected = _bad_corpus(kb)
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(kb)], settings)
    r = sync_bot(store, settings, bot)
    failed = {Path(f["source"]).name: f["error"] for f in r.failed}
    assert set(failed) == set(expected), failed
    for name, words in expected.items():
        assert words.lower() in failed[name].lower(), (name, failed[name])
        assert "\n" not in failed[name] and "Traceback" not in failed[name]
    assert r.added == 2
    assert store.integrity_check() == "ok"
    assert store.search_lexical(bot, "warranty", 5)


def test_unreadable_folder_is_reported(tmp_path):
    """Permissions do not bind root, so as root the sync runs without the DAC-override capabilities."""
    kb = tmp_path / "kb"
    write(kb, "ok.md", "readable document")
    write(kb, "locked/secret.md", "unreadable")
    home = tmp_path / "home"
    home.mkdir()
    (kb / "locked").chmod(0o000)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's DAC override"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "ragtune", "ingest", str(kb), "--json"],
                              env=cli_env(home), capture_output=True, text=True, timeout=300)
    finally:
        (kb / "locked").chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    import json

    r = json.loads(proc.stdout)
    assert r["added"] == 1
    assert [f["source"] for f in r["failed"]] == [str(kb / "locked")]
    assert "cannot read folder" in r["failed"][0]["error"]


def test_missing_source_folder_keeps_documents(settings, store, tmp_path):
    kb = tmp_path / "kb"
    write(kb, "a.md", "alpha")
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(kb)], settings)
    sync_bot(store, settings, bot)
    shutil.rmtree(kb)
    r = sync_bot(store, settings, bot)
    assert r.removed == 0 and r.failed == [{"source": str(kb), "error": "folder not found"}]
    assert store.count(bot)["documents"] == 1


def kill_9_once(proc: subprocess.Popen, db: Path, count_sql: str, at_least: int = 100) -> None:
    """SIGKILL `proc` once `count_sql` on the SQLite store `db` counts `at_least` (within 120 s)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as con:
                    if (con.execute(count_sql).fetchone() or [0])[0] >= at_least:
                        break
            except sqlite3.Error:
                continue
    assert proc.poll() is None, "it finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def many_documents(kb: Path, n: int = 3000) -> None:
    for i in range(n):
        write(kb, f"d{i:04d}.md", f"# Doc {i}\n\n" + f"Fact number {i} is about item {i}. " * 40)


def test_kill_9_mid_ingest_leaves_a_consistent_store(tmp_path):
    kb = tmp_path / "kb"
    many_documents(kb)
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "ragtune", "ingest", str(kb), "--json"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = home / "ragtune.db"
    kill_9_once(proc, db, "SELECT count(*) FROM documents")
    store = SQLiteStore(db)
    assert store.integrity_check() == "ok"
    q = lambda sql: store.db.execute(sql).fetchone()[0]  # noqa: E731
    assert q("SELECT count(*) FROM chunks WHERE document_id NOT IN (SELECT id FROM documents)") == 0
    assert q("SELECT count(*) FROM vectors WHERE chunk_rowid NOT IN (SELECT rowid FROM chunks)") == 0
    assert q("SELECT count(*) FROM chunks_fts WHERE rowid NOT IN (SELECT rowid FROM chunks)") == 0
    assert q("SELECT count(*) FROM documents WHERE id NOT IN (SELECT document_id FROM chunks)") == 0
    n_docs = q("SELECT count(*) FROM documents")
    assert 0 < n_docs < 3000
    store.close()
    r = run_json(home, "sync")
    assert r["added"] == 3000 - n_docs and r["unchanged"] == n_docs


def test_queued_sync_jobs_run_by_a_worker_process(tmp_path):
    """`ragtune sync --queue` leaves the work to a worker; `ragtune jobs` shows how it went; a job that cannot
    finish (the embeddings endpoint is down) fails visibly, with the reason, and the worker exits non-zero."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Hours\n\nWe open at 9 am.\n")
    home = tmp_path / "home"
    first = run_json(home, "ingest", str(docs), "--bot", "kb", "--queue")  # registered, synced by a worker
    assert first["state"] == "queued" and run_json(home, "bots")[0]["documents"] == 0
    assert run_json(home, "worker", "--once")[0]["report"]["added"] == 1
    (docs / "b.md").write_text("# Refunds\n\nRefunds take 14 days.\n")
    queued = run_json(home, "sync", "--queue", "--bot", "kb", RAGTUNE_EMBEDDER="hash")
    assert queued["state"] == "queued" and run_json(home, "jobs", "--bot", "kb")[0]["id"] == queued["id"]
    ran = run_json(home, "worker", "--once", RAGTUNE_EMBEDDER="hash")
    assert [(j["id"], j["state"], j["report"]["added"], j["report"]["unchanged"]) for j in ran] == \
        [(queued["id"], "done", 1, 1)]
    assert run_json(home, "worker", "--once", RAGTUNE_EMBEDDER="hash") == []  # nothing left
    (docs / "c.md").write_text("# Phone\n\nCall us on 555 0100.\n")
    run_cli(home, "sync", "--queue", "--bot", "kb", RAGTUNE_EMBEDDER="hash")
    down = run_cli(home, "worker", "--once", "--json", check=False, RAGTUNE_EMBEDDER="openai",
                   RAGTUNE_EMBEDDER_URL="http://127.0.0.1:9/v1", RAGTUNE_EMBEDDER_MODEL="m")
    assert down.returncode == 1 and "Traceback" not in down.stderr
    failed = run_json(home, "jobs", "--bot", "kb")[0]
    assert failed["state"] == "failed" and "127.0.0.1:9" in failed["error"]
    assert run_json(home, "search", "Refunds", "--bot", "kb", RAGTUNE_EMBEDDER="hash")  # the index is intact


def test_a_killed_workers_job_is_taken_over_and_finished(tmp_path):
    """kill -9 a worker midway through a job: the documents it committed stay, and the next worker (once the
    job's heartbeat is stale) claims the job again and syncs only the rest."""
    kb = tmp_path / "kb"
    write(kb, "first.md", "# First\n\nThe first fact.\n")
    home = tmp_path / "home"
    run_cli(home, "ingest", str(kb), "--bot", "kb")
    many_documents(kb)
    job = run_json(home, "sync", "--queue", "--bot", "kb")
    proc = subprocess.Popen([sys.executable, "-m", "ragtune", "worker"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_9_once(proc, home / "ragtune.db", f"SELECT processed FROM sync_jobs WHERE id = '{job['id']}'")
    held = run_json(home, "jobs", "--bot", "kb")[0]
    assert held["state"] == "running" and held["processed"] >= 100
    assert run_json(home, "worker", "--once") == []  # its heartbeat is fresh: nobody takes it yet
    ran = run_json(home, "worker", "--once", RAGTUNE_JOB_STALE_SECONDS="0")
    assert [(j["id"], j["state"], j["attempts"]) for j in ran] == [(job["id"], "done", 2)]
    report = ran[0]["report"]
    assert report["unchanged"] > 1 and report["added"] + report["unchanged"] == 3001  # the first worker's work kept
    assert run_json(home, "sync", "--bot", "kb")["unchanged"] == 3001


def test_sync_jobs_of_local_files_are_pinned_to_this_machine_unless_shared(settings, store, tmp_path):
    import socket

    from ragtune.ingest.worker import job_host

    bot = store.ensure_bot("b")
    folder = register_sources(store, bot, [str(tmp_path)], settings)[0]
    site = store.add_source(bot, "https://docs.example.com/", "url", {})
    assert job_host(settings, [folder, site]) == socket.gethostname()
    assert job_host(settings, [site]) == ""  # any worker can reach a website
    assert job_host(settings.replace(sources_shared=True), [folder]) == ""


def test_a_damaged_store_is_a_one_line_error(tmp_path):
    write(tmp_path / "kb", "a.md", "# Hours\n\nWe open at 9 am.\n")
    home = tmp_path / "home"
    run_cli(home, "ingest", str(tmp_path / "kb"), "--bot", "kb")
    with sqlite3.connect(home / "ragtune.db") as con:
        con.execute("DROP TABLE sync_jobs")  # someone edited the file by hand
    proc = run_cli(home, "jobs", "--bot", "kb", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("ragtune: error: the store failed: no such table: sync_jobs")
    assert len(proc.stderr.strip().splitlines()) == 1
