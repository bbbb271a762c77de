"""Erasure: after `ragtune forget`, a canary string is in no file under RAGTUNE_HOME (database, -wal, -shm),
rows that quote it (a chat answer citing it with its feedback, tables of later layers following the column
convention) are gone, the other documents still answer, a sync does not bring it back, and the audit record
holds no personal data."""

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import fake_adapter, run_cli, run_json
from ragtune.erasure import forget
from ragtune.errors import NotFoundError
from ragtune.ingest.sync import register_sources, sync_bot
from ragtune.store.sqlite import SQLiteStore
from ragtune.train import adapters as ad

CANARY = "qqzcanary7f3a9c"  # one token, as the full-text index stores it (porter leaves it whole)
NEEDLE = CANARY[3:]  # FTS5 prefix-compresses terms: look for the part no other term shares


def make_kb(kb: Path) -> Path:
    kb.mkdir()
    (kb / "a.md").write_text("# Refunds\n\nThe refund window is 30 days from delivery.\n")
    (kb / "b.md").write_text("# Shipping\n\nParcels ship within two business days.\n")
    (kb / "sub").mkdir()
    (kb / "sub" / "c.md").write_text("# Warranty\n\nThe warranty lasts two years.\n")
    secret = kb / "secret.md"
    paragraphs = [f"Customer note {i}: the account holder's code word is {CANARY} (case {i})." for i in range(60)]
    secret.write_text("# Private notes\n\n" + "\n\n".join(paragraphs) + "\n")
    return secret


def files_containing(home: Path, needle: str) -> list[str]:
    return [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def add_quoting_rows(db_path: Path) -> None:
    """Rows that quote the documents, as the serving layer writes them (a conversation whose answer cites
    chunks, with feedback), plus tables of later layers following the convention: an FTS index of chat text
    with a `chunk_ids` column, and per-document notes with a `document_id` column."""
    con = sqlite3.connect(db_path)
    with con:
        chunk_ids = {path: [r[0] for r in con.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.path LIKE ?", (f"%{path}",))]
            for path in ("secret.md", "a.md")}
        doc_ids = dict(con.execute("SELECT path, id FROM documents").fetchall())
        con.execute("INSERT INTO conversations(id, bot_id, channel, created_at, updated_at) "
                    "VALUES ('c1', 1, 'cli', 0, 0)")
        con.execute("CREATE VIRTUAL TABLE chat_fts USING fts5(content, chunk_ids)")
        con.execute("CREATE TABLE doc_notes (id INTEGER PRIMARY KEY, document_id INTEGER, note TEXT)")
        for path, ids in chunk_ids.items():
            quote = f"As the notes say: {CANARY}" if path == "secret.md" else "The refund window is 30 days."
            citations = json.dumps([{"source": path, "chunk_id": i, "quote": quote} for i in ids[:2]])
            con.execute("INSERT INTO messages(conversation_id, role, content, created_at) VALUES ('c1', 'user', "
                        "'what does it say?', 0)")
            message = con.execute("INSERT INTO messages(conversation_id, role, content, citations, created_at) "
                                  "VALUES ('c1', 'assistant', ?, ?, 0)", (quote, citations)).lastrowid
            con.execute("INSERT INTO feedback(message_id, rating, comment, created_at) VALUES (?, 1, ?, 0)",
                        (message, f"great answer: {quote}"))
            con.execute("INSERT INTO chat_fts(content, chunk_ids) VALUES (?, ?)", (quote, json.dumps(ids[:2])))
        for path, doc_id in doc_ids.items():
            note = f"helpful, mentions {CANARY}" if path.endswith("secret.md") else "helpful"
            con.execute("INSERT INTO doc_notes(document_id, note) VALUES (?, ?)", (doc_id, note))
    con.close()


def test_forget_leaves_no_byte_of_the_canary(tmp_path, home):
    kb = tmp_path / "kb"
    secret = make_kb(kb)
    assert run_json(home, "ingest", str(kb))["added"] == 4
    db = home / "ragtune.db"
    add_quoting_rows(db)
    assert files_containing(home, NEEDLE)  # the canary is there before

    report = run_json(home, "forget", str(secret))
    assert report["documents"] == 1 and report["chunks"] > 1 and report["sources"] == 0
    assert report["derived_rows"] == 3 and report["reclaimed"] is True  # the answer, its FTS row, the note
    assert files_containing(home, NEEDLE) == []
    wal = home / "ragtune.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0

    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT count(*) FROM messages").fetchone()[0] == 3  # two questions, one answer
        assert con.execute("SELECT count(*) FROM feedback").fetchone()[0] == 1  # went with its answer
        assert con.execute("SELECT count(*) FROM doc_notes").fetchone()[0] == 3
        audit = con.execute("SELECT action, bot, detail FROM audit").fetchall()
    finally:
        con.close()
    assert len(audit) == 1 and audit[0][0] == "forget"
    detail = json.loads(audit[0][2])
    assert detail["subject_sha256"] == report["subject_sha256"] and detail["documents"] == 1
    assert "secret" not in audit[0][2] and str(kb) not in audit[0][2]

    # the other documents still answer; the canary does not
    hits = run_json(home, "search", "how long is the refund window", "-k", "1")["hits"]
    assert hits and hits[0]["title"] == "Refunds"
    assert run_json(home, "search", CANARY, "--mode", "bm25")["hits"] == []
    # a sync (and re-adding the folder) does not bring it back while the file is still there
    again = run_json(home, "ingest", str(kb))
    assert (again["added"], again["unchanged"], again["removed"]) == (0, 3, 0)
    assert files_containing(home, NEEDLE) == []


def test_forget_a_whole_source_and_unknown_subjects(tmp_path, home):
    kb = tmp_path / "kb"
    make_kb(kb)
    run_json(home, "ingest", str(kb))
    report = run_json(home, "forget", str(kb))
    assert (report["scope"], report["documents"], report["sources"]) == ("source", 4, 1)
    assert run_json(home, "sources") == []
    assert run_json(home, "bots")[0]["documents"] == 0
    assert files_containing(home, NEEDLE) == [] and files_containing(home, "warranty") == []
    proc = run_cli(home, "forget", str(kb / "nothing.md"), check=False)
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1 and "nothing to forget" in proc.stderr


def test_forget_a_folder_inside_a_source_marks_the_adapters_that_learned_it_stale(tmp_path, settings, store):
    kb = tmp_path / "kb"
    make_kb(kb)
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(kb)], settings)
    sync_bot(store, settings, bot)
    docs = [d for source in store.list_sources(bot) for d in store.document_states(bot, source).values()]
    learned_it = fake_adapter(settings.home_path, bot.name, docs, tmp_path, "learned-it")
    not_it = fake_adapter(settings.home_path, bot.name, [d for d in docs if "/sub/" not in d.path], tmp_path, "not-it")

    report = forget(store, bot, str(kb / "sub"))
    assert (report.scope, report.documents, report.adapters_marked_stale) == ("documents", 1, 1)
    assert report.stale_adapters == ("learned-it",) and report.to_json()["stale_adapters"] == ["learned-it"]
    assert not (learned_it.path / ad.DATA_FILE).exists() and (not_it.path / ad.DATA_FILE).exists()
    rows = {r["id"]: r for r in ad.describe_all(store, bot, settings.home_path)}
    assert rows["learned-it"]["stale"] and "erased" in rows["learned-it"]["stale_reason"]
    assert rows["not-it"]["stale"] is False
    assert store.search_lexical(bot, "warranty", 5) == [] and store.search_lexical(bot, "refund", 5)
    assert sync_bot(store, settings, bot).added == 0  # stays forgotten
    with pytest.raises(NotFoundError):
        forget(store, bot, str(kb / "sub"))
    # adapters live beside the store's database: another store has none to mark
    (tmp_path / "elsewhere").mkdir()
    other = SQLiteStore(tmp_path / "elsewhere" / "plain.db")
    try:
        assert ad.mark_adapters_stale(other, bot, [d.id for d in docs]) == 0
    finally:
        other.close()


def test_forget_json_names_the_adapters_it_made_stale(tmp_path, home):
    kb = tmp_path / "kb"
    secret = make_kb(kb)
    run_json(home, "ingest", str(kb))
    store = SQLiteStore(home / "ragtune.db")
    try:
        bot = store.get_bot("default")
        docs = [d for source in store.list_sources(bot) for d in store.document_states(bot, source).values()]
    finally:
        store.close()
    fake_adapter(home, "default", docs, tmp_path, "a1")
    assert run_json(home, "adapters")[0]["stale"] is False
    report = run_json(home, "forget", str(secret))
    assert (report["adapters_marked_stale"], report["stale_adapters"]) == (1, ["a1"])
    row = run_json(home, "adapters")[0]
    assert row["stale"] is True and "erased" in row["stale_reason"]
    assert "1 adapters marked stale (a1)" in run_cli(home, "forget", str(kb / "b.md")).stdout
