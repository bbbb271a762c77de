"""The default store: one SQLite file (WAL, foreign keys, FTS5 for BM25, float32 vector blobs) with an
exact in-memory vector search over a per-bot matrix that is rebuilt only when the bot's data changes."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import RagtuneError
from ..types import Chunk, Hit, LoadedDocument
from .base import CORE_TABLES, DERIVED_COLUMNS, Bot, generation_cache, heading_path, joined_heading, lexical_heading
from .sql import SYNC_JOBS_TABLE, SqlStore

SCHEMA_VERSION = 5

# Numbered migrations: index i brings the schema from version i to i+1.
MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE bots (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        settings TEXT NOT NULL DEFAULT '{}',
        generation INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE sources (
        id INTEGER PRIMARY KEY,
        bot_id INTEGER NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        uri TEXT NOT NULL,
        kind TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}',
        added_at REAL NOT NULL,
        synced_at REAL,
        UNIQUE (bot_id, uri)
    );
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        bot_id INTEGER NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        title TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        mtime REAL NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        embedder TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        updated_at REAL NOT NULL,
        UNIQUE (bot_id, path)
    );
    CREATE INDEX documents_source ON documents(source_id);
    CREATE TABLE chunks (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        bot_id INTEGER NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        heading TEXT NOT NULL,
        text TEXT NOT NULL,
        tokens INTEGER NOT NULL
    );
    CREATE INDEX chunks_document ON chunks(document_id);
    CREATE INDEX chunks_bot ON chunks(bot_id);
    CREATE TABLE vectors (
        chunk_rowid INTEGER PRIMARY KEY REFERENCES chunks(rowid) ON DELETE CASCADE,
        bot_id INTEGER NOT NULL,
        embedder TEXT NOT NULL,
        vector BLOB NOT NULL
    );
    CREATE INDEX vectors_bot ON vectors(bot_id, embedder);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        heading, text, tokenize = 'porter unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
        DELETE FROM chunks_fts WHERE rowid = old.rowid;
    END;
    """,
    # 2: serving — per-bot keys and widget tokens (only a sha256 of each secret is kept), conversations with
    # their messages (an answer's `citations` lists the chunk ids it quotes, so erasure finds it) and feedback.
    """
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        bot_id INTEGER NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX api_keys_bot ON api_keys(bot_id);
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        bot_id INTEGER NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX conversations_bot ON conversations(bot_id, updated_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        citations TEXT NOT NULL DEFAULT '[]',
        meta TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_conversation ON messages(conversation_id, id);
    CREATE TABLE feedback (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    """,
    # 3: evaluation runs (`ragtune compare`): status (running until it completes, so an interrupted run is never
    # reported as complete), the process that runs it, lineage, config and results (metrics, per-question
    # answers). `chunk_ids` lists the chunks its answers cite or retrieved, so erasing a document erases the runs
    # that quote it.
    """
    CREATE TABLE eval_runs (
        id TEXT PRIMARY KEY,
        bot_id INTEGER NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        pid INTEGER NOT NULL DEFAULT 0,
        host TEXT NOT NULL DEFAULT '',
        lineage TEXT NOT NULL DEFAULT '{}',
        config TEXT NOT NULL DEFAULT '{}',
        result TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT '',
        chunk_ids TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX eval_runs_bot ON eval_runs(bot_id, started_at);
    """,
    # 4: evidence passages' vectors (each sentence of a chunk, embedded at indexing time; `ragtune.passages`),
    # keyed by the embedded text's hash; deleted with their chunk.
    """
    CREATE TABLE passage_vectors (
        bot_id INTEGER NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        embedder TEXT NOT NULL,
        key TEXT NOT NULL,
        chunk_id TEXT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
        vector BLOB NOT NULL,
        PRIMARY KEY (bot_id, embedder, key)
    );
    CREATE INDEX passage_vectors_chunk ON passage_vectors(chunk_id);
    """,
    # 5: sync jobs as rows (`ragtune.store.sql`: any worker of any server claims the oldest queued one — only a
    # worker on `pinned_host` when that is set, for files only that machine has; a running job whose worker
    # stopped sending heartbeats is claimed again — sync is idempotent per document).
    SYNC_JOBS_TABLE.format(key="INTEGER", real="REAL"),
]

_WORD = re.compile(r"\w+", re.UNICODE)

# Words too common to help BM25 (FTS5 has no stopword list; a short English one keeps OR-queries precise).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves""".split()
)


def query_terms(text: str) -> list[str]:
    """The distinct lower-case words of free text that lexical search looks for (stopwords dropped unless nothing
    else is left): word characters only, so no user-supplied query syntax reaches FTS5 or Postgres."""
    words = [w.lower() for w in _WORD.findall(text)]
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS) or dict.fromkeys(words))


def fts_query(text: str) -> str:
    """Turn free text into a safe FTS5 OR-query of quoted terms."""
    return " OR ".join(f'"{w}"' for w in query_terms(text))


class SQLiteStore(SqlStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise RagtuneError(f"cannot open the store at {self.path}: {exc}") from exc
        self.db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._matrices: dict[tuple[int, str], tuple[int, np.ndarray, np.ndarray]] = {}
        self._df_cache: dict[int, tuple[int, dict[str, int]]] = {}
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise RagtuneError(f"the store at {self.path} is not a usable SQLite database: {exc}") from exc

    # ------------------------------------------------------------------ plumbing
    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RagtuneError(
                f"the store at {self.path} has schema {version}, newer than this ragtune ({SCHEMA_VERSION}); upgrade ragtune"
            )
        for i in range(version, SCHEMA_VERSION):
            with self._tx():
                for statement in _split_sql(MIGRATIONS[i]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={i + 1}")

    def _tx(self):
        return _Transaction(self.db, self._lock)

    def _run(self, sql: str, params: Sequence[Any] = ()):
        return self.db.execute(sql, params)

    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        return self.db.execute(sql, params).lastrowid

    def integrity_check(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]

    # ------------------------------------------------------------------ documents
    def replace_document(self, bot, source, doc: LoadedDocument, chunks: Sequence[Chunk], vectors: np.ndarray,
                         embedder: str, passages: Sequence[tuple[str, str, np.ndarray]] = ()) -> int:
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        blobs = np.ascontiguousarray(vectors, dtype=np.float32)
        now = time.time()
        with self._tx():
            old = self.db.execute(
                "SELECT id, version FROM documents WHERE bot_id = ? AND path = ?", (bot.id, doc.path)
            ).fetchone()
            if old is not None:
                self.db.execute("DELETE FROM chunks WHERE document_id = ?", (old["id"],))
                self.db.execute(
                    "UPDATE documents SET source_id=?, title=?, content_hash=?, mtime=?, metadata=?, embedder=?, "
                    "version=version+1, updated_at=? WHERE id=?",
                    (source.id, doc.title, doc.content_hash, doc.mtime, json.dumps(doc.metadata), embedder, now, old["id"]),
                )
                doc_id = old["id"]
            else:
                doc_id = self.db.execute(
                    "INSERT INTO documents(bot_id, source_id, path, title, content_hash, mtime, metadata, embedder, "
                    "updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (bot.id, source.id, doc.path, doc.title, doc.content_hash, doc.mtime, json.dumps(doc.metadata),
                     embedder, now),
                ).lastrowid
            for chunk, vec in zip(chunks, blobs):
                heading = joined_heading(chunk.heading)
                rowid = self.db.execute(
                    "INSERT INTO chunks(id, bot_id, document_id, ordinal, heading, text, tokens) VALUES (?,?,?,?,?,?,?)",
                    (chunk.id, bot.id, doc_id, chunk.ordinal, heading, chunk.text, chunk.tokens),
                ).lastrowid
                self.db.execute("INSERT INTO chunks_fts(rowid, heading, text) VALUES (?,?,?)",
                                (rowid, lexical_heading(doc.title, chunk.heading), chunk.text))
                self.db.execute("INSERT INTO vectors(chunk_rowid, bot_id, embedder, vector) VALUES (?,?,?,?)",
                                (rowid, bot.id, embedder, vec.tobytes()))
            self.db.executemany(
                "INSERT OR IGNORE INTO passage_vectors(bot_id, embedder, key, chunk_id, vector) VALUES (?,?,?,?,?)",
                [(bot.id, embedder, key, cid, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                 for cid, key, v in passages])
            self._bump(bot.id)
        return doc_id

    # ------------------------------------------------------------------ erasure
    def erase(self, bot: Bot, document_ids: Sequence[int], source_ids: Sequence[int],
              audit: dict[str, Any]) -> dict[str, int]:
        """Delete the documents (and sources, with all their documents), every row of a derived table that refers
        to them (see base.DERIVED_COLUMNS), then reclaim the space: FTS5 segments merged, VACUUM, WAL truncated —
        with secure_delete on, and temporary tables in memory, so no copy of the text stays in any file."""
        with self._lock:
            self.db.execute("PRAGMA secure_delete=ON")
            self.db.execute("PRAGMA temp_store=MEMORY")
            try:
                with self._tx():
                    counts = self._erase_rows(bot, document_ids, source_ids, audit)
                # busy: another connection still reads an old snapshot; its WAL copy goes at its next checkpoint
                counts["reclaimed"] = int(self._reclaim()["checkpoint_busy"] == 0)
            finally:
                self.db.execute("PRAGMA secure_delete=OFF")
        return counts

    def _erase_rows(self, bot: Bot, document_ids, source_ids, audit: dict[str, Any]) -> dict[str, int]:
        db = self.db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS erase_docs (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS erase_chunks (id TEXT PRIMARY KEY)")
        db.execute("DELETE FROM temp.erase_docs")
        db.execute("DELETE FROM temp.erase_chunks")
        db.executemany("INSERT OR IGNORE INTO temp.erase_docs SELECT id FROM documents WHERE id = ? AND bot_id = ?",
                       [(int(d), bot.id) for d in document_ids])
        db.executemany("INSERT OR IGNORE INTO temp.erase_docs SELECT id FROM documents WHERE source_id = ? "
                       "AND bot_id = ?", [(int(s), bot.id) for s in source_ids])
        db.execute("INSERT INTO temp.erase_chunks SELECT id FROM chunks WHERE document_id IN "
                   "(SELECT id FROM temp.erase_docs)")
        documents = db.execute("SELECT count(*) FROM temp.erase_docs").fetchone()[0]
        chunks = db.execute("SELECT count(*) FROM temp.erase_chunks").fetchone()[0]
        derived = 0
        for table, column in self._derived_columns():
            if column == "document_id":
                where = f'"{column}" IN (SELECT id FROM temp.erase_docs)'
            elif column == "chunk_id":
                where = f'"{column}" IN (SELECT id FROM temp.erase_chunks)'
            else:  # a text column listing chunk ids (JSON or otherwise)
                where = f'EXISTS (SELECT 1 FROM temp.erase_chunks e WHERE instr("{column}", e.id) > 0)'
            derived += db.execute(f'DELETE FROM "{table}" WHERE {where}').rowcount
        db.execute("DELETE FROM documents WHERE id IN (SELECT id FROM temp.erase_docs)")
        sources = 0
        for source_id in source_ids:
            sources += db.execute("DELETE FROM sources WHERE id = ? AND bot_id = ?", (int(source_id), bot.id)).rowcount
        counts = {"documents": documents, "chunks": chunks, "sources": sources, "derived_rows": derived}
        db.execute("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, action TEXT NOT NULL, "
                   "bot TEXT NOT NULL, detail TEXT NOT NULL)")
        db.execute("INSERT INTO audit(at, action, bot, detail) VALUES (?, ?, ?, ?)",
                   (time.time(), str(audit.get("action", "erase")), bot.name, json.dumps({**audit, **counts})))
        db.execute("DELETE FROM temp.erase_docs")
        db.execute("DELETE FROM temp.erase_chunks")
        self._forget_job_items(bot)
        self._bump(bot.id)
        return counts

    def _derived_columns(self) -> list[tuple[str, str]]:
        tables = self.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
        virtual = [r["name"] for r in tables if (r["sql"] or "").upper().startswith("CREATE VIRTUAL TABLE")]
        out = []
        for row in tables:
            name = row["name"]
            if name in CORE_TABLES or name.startswith("sqlite_") or name == "chunks_fts":
                continue
            if any(name.startswith(v + "_") for v in virtual):  # FTS shadow tables follow their virtual table
                continue
            columns = {c["name"] for c in self.db.execute(f'PRAGMA table_info("{name}")')}
            out.extend((name, c) for c in DERIVED_COLUMNS if c in columns)
        return out

    def _reclaim(self) -> dict[str, int]:
        """Merge FTS5 segments (dropping deleted entries), rebuild the file, and empty the WAL."""
        fts = [r[0] for r in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%fts5%'")]
        with self._tx():
            for name in fts:
                self.db.execute(f'INSERT INTO "{name}"("{name}") VALUES (\'optimize\')')
        self.db.execute("VACUUM")
        busy, wal_pages, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return {"checkpoint_busy": busy, "wal_pages": wal_pages}

    def count(self, bot: Bot) -> dict[str, int]:
        q = lambda sql: self.db.execute(sql, (bot.id,)).fetchone()[0]  # noqa: E731
        return {
            "documents": q("SELECT count(*) FROM documents WHERE bot_id = ?"),
            "chunks": q("SELECT count(*) FROM chunks WHERE bot_id = ?"),
            "vectors": q("SELECT count(*) FROM vectors WHERE bot_id = ?"),
        }

    # ------------------------------------------------------------------ search
    def search_lexical(self, bot: Bot, query: str, k: int) -> list[tuple[str, float]]:
        match = fts_query(query)
        if not match:
            return []
        rows = self.db.execute(
            "SELECT c.id, bm25(chunks_fts, 0.5, 1.0) AS s FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
            "WHERE chunks_fts MATCH ? AND c.bot_id = ? ORDER BY s LIMIT ?",
            (match, bot.id, k),
        )
        return [(r[0], -r[1]) for r in rows]  # FTS5's bm25() is lower-is-better

    def term_frequencies(self, bot: Bot, words: Sequence[str]) -> tuple[dict[str, int], int]:
        # Counts only change when the bot's data does: cached per bot generation (every answer asks for them).
        generation = self.db.execute("SELECT generation FROM bots WHERE id = ?", (bot.id,)).fetchone()[0]
        counts = generation_cache(self._df_cache, bot.id, generation)
        out = {}
        for w in set(words):
            clean = w.replace('"', "")
            if not clean.strip():
                continue
            if clean not in counts:
                counts[clean] = self.db.execute(
                    "SELECT count(*) FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
                    "WHERE chunks_fts MATCH ? AND c.bot_id = ?", (f'"{clean}"', bot.id)).fetchone()[0]
            out[w] = counts[clean]
        if "" not in counts:
            counts[""] = self.db.execute("SELECT count(*) FROM chunks WHERE bot_id = ?", (bot.id,)).fetchone()[0]
        return out, counts[""]

    def _matrix(self, bot: Bot, embedder: str) -> tuple[np.ndarray, np.ndarray]:
        generation = self.db.execute("SELECT generation FROM bots WHERE id = ?", (bot.id,)).fetchone()[0]
        key = (bot.id, embedder)
        cached = self._matrices.get(key)
        if cached and cached[0] == generation:
            return cached[1], cached[2]
        rows = self.db.execute(
            "SELECT chunk_rowid, vector FROM vectors WHERE bot_id = ? AND embedder = ? ORDER BY chunk_rowid",
            (bot.id, embedder),
        ).fetchall()
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        else:
            ids, matrix = np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        self._matrices[key] = (generation, ids, matrix)
        return ids, matrix

    def search_dense(self, bot: Bot, vector: np.ndarray, k: int, embedder: str) -> list[tuple[str, float]]:
        with self._lock:
            ids, matrix = self._matrix(bot, embedder)
        if len(ids) == 0:
            return []
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        rowids = [int(i) for i in ids[top]]
        names = dict(
            self.db.execute(
                f"SELECT rowid, id FROM chunks WHERE rowid IN ({','.join('?' * len(rowids))})", rowids
            ).fetchall()
        )
        return [(names[r], float(scores[t])) for r, t in zip(rowids, top) if r in names]

    def passage_vectors(self, bot: Bot, embedder: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                rows = self.db.execute(
                    f"SELECT key, vector FROM passage_vectors WHERE bot_id = ? AND embedder = ? AND key IN "
                    f"({','.join('?' * len(part))})", (bot.id, embedder, *part)).fetchall()
                out.update((r["key"], np.frombuffer(r["vector"], dtype=np.float32)) for r in rows)
        return out

    def get_hits(self, bot: Bot, scored: Sequence[tuple[str, float]]) -> list[Hit]:
        if not scored:
            return []
        ids = [cid for cid, _ in scored]
        rows = self.db.execute(
            "SELECT c.id, c.text, c.heading, c.document_id, d.path, d.title FROM chunks c "
            f"JOIN documents d ON d.id = c.document_id WHERE +c.bot_id = ? AND c.id IN ({','.join('?' * len(ids))})",
            [bot.id, *ids],
        ).fetchall()
        by_id = {r["id"]: r for r in rows}
        hits = []
        for cid, score in scored:
            r = by_id.get(cid)
            if r is None:
                continue
            hits.append(Hit(cid, score, r["text"], heading_path(r), r["path"], r["title"], r["document_id"]))
        return hits

    # ------------------------------------------------------------------ size and copies
    def index_bytes(self, bot: Bot) -> int:
        text, chunks = self.db.execute("SELECT coalesce(sum(length(CAST(text AS BLOB)) + length(CAST(heading AS "
                                       "BLOB))), 0), count(*) FROM chunks WHERE bot_id = ?", (bot.id,)).fetchone()
        vectors = self.db.execute("SELECT coalesce(sum(length(vector)), 0) FROM vectors WHERE bot_id = ?",
                                  (bot.id,)).fetchone()[0]
        all_chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        try:  # the lexical index is shared by all bots: this bot's share of its pages
            fts = self.db.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'chunks_fts%'"
                                  ).fetchone()[0]
            fts = fts * chunks / all_chunks if all_chunks else 0
        except sqlite3.Error:  # SQLite built without dbstat: the FTS index is about the size of its text
            fts = text
        return int(text + vectors + fts)

    def copy_bot(self, bot: Bot, home: str | Path) -> None:
        target_dir = Path(home)
        target_dir.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(target_dir / "ragtune.db", isolation_level=None)
        try:
            with self._lock:
                self.db.backup(target)  # a consistent snapshot, even while other processes write
            target.execute("PRAGMA foreign_keys=ON")
            target.execute("BEGIN")
            # what the copy must not carry: other bots, and this bot's keys, conversations and runs
            target.execute("DELETE FROM bots WHERE id != ?", (bot.id,))
            for table in ("api_keys", "conversations", "eval_runs", "sync_jobs"):
                target.execute(f"DELETE FROM {table}")
            target.execute("COMMIT")
            target.execute("PRAGMA journal_mode=WAL")
        finally:
            target.close()

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception; serialised within this process."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self) -> None:
        self.lock.acquire()
        if self.db.in_transaction:
            self.nested = True
            return
        self.nested = False
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self.nested:
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (complete_statement keeps triggers' inner `;` together)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
