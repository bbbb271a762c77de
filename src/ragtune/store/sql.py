"""The Store methods whose SQL is the same in every backend: bots, sources, document states, chunk listings, API keys,
conversations, feedback and evaluation runs, written once with `?` placeholders and portable SQL. A backend supplies
`_run` (one statement, placeholders translated, rows readable by column name), `_insert` (an INSERT, returning the
new row's id) and `_tx` (one transaction), and keeps what differs between databases: storing and searching chunks
and vectors, erasure, copies."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from abc import abstractmethod
from typing import Any, Sequence

from ..errors import NotFoundError, RagtuneError
from .base import (JOB_ATTEMPTS, JOB_SELECT, JOBS_KEPT, KEY_SELECT, ApiKey, Bot, DocumentState, Source, Store,
                   StoredChunk, bot_record, document_state, heading_path, job_record, key_record, message_record,
                   new_run_id, run_changes, run_record, source_record)


# The sync job queue's table (each backend's migrations create it, with its own integer and float types).
SYNC_JOBS_TABLE = """
    CREATE TABLE sync_jobs (
        id TEXT PRIMARY KEY,
        bot_id {key} NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
        source_ids TEXT,
        state TEXT NOT NULL,
        processed INTEGER NOT NULL DEFAULT 0,
        current_item TEXT NOT NULL DEFAULT '',
        report TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT NOT NULL DEFAULT '',
        pinned_host TEXT NOT NULL DEFAULT '',
        created_at {real} NOT NULL,
        started_at {real},
        finished_at {real},
        heartbeat_at {real}
    );
    CREATE INDEX sync_jobs_state ON sync_jobs(state, created_at);
    CREATE INDEX sync_jobs_bot ON sync_jobs(bot_id, created_at);
"""


class SqlStore(Store):
    # appended to a SELECT of rows the same transaction then updates (SQLite's transactions lock the whole database)
    _lock_rows = ""
    # appended to the SELECT that claims a sync job: Postgres skips rows another worker is claiming
    _claim_rows = ""

    @abstractmethod
    def _run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Execute one statement written with `?` placeholders; a cursor whose rows read by column name."""

    @abstractmethod
    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        """Execute one INSERT into a table with an integer `id` key; the new row's id."""

    @abstractmethod
    def _tx(self) -> Any:
        """A context manager: one transaction (nested use joins the outer one)."""

    def _bump(self, bot_id: int) -> None:
        self._run("UPDATE bots SET generation = generation + 1 WHERE id = ?", (bot_id,))

    # ------------------------------------------------------------------ bots
    def ensure_bot(self, name: str) -> Bot:
        with self._tx():
            self._run("INSERT INTO bots(name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                      (name, time.time()))
        return self.get_bot(name)

    def get_bot(self, name: str) -> Bot:
        row = self._run("SELECT * FROM bots WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown bot {name!r}; create it with `ragtune ingest SOURCE --bot {name}`")
        return bot_record(row)

    def list_bots(self) -> list[Bot]:
        return [bot_record(r) for r in self._run("SELECT * FROM bots ORDER BY name").fetchall()]

    def update_bot_settings(self, bot: Bot, settings: dict[str, Any]) -> Bot:
        merged = {**bot.settings, **settings}
        with self._tx():
            self._run("UPDATE bots SET settings = ? WHERE id = ?", (json.dumps(merged), bot.id))
        return Bot(bot.id, bot.name, merged)

    # ------------------------------------------------------------------ sources
    def add_source(self, bot: Bot, uri: str, kind: str, options: dict[str, Any]) -> Source:
        with self._tx():
            self._run("INSERT INTO sources(bot_id, uri, kind, options, added_at) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (bot_id, uri) DO UPDATE SET options = excluded.options, kind = excluded.kind",
                      (bot.id, uri, kind, json.dumps(options), time.time()))
            return source_record(self._run("SELECT * FROM sources WHERE bot_id = ? AND uri = ?",
                                           (bot.id, uri)).fetchone())

    def list_sources(self, bot: Bot) -> list[Source]:
        return [source_record(r) for r in self._run("SELECT * FROM sources WHERE bot_id = ? ORDER BY id",
                                                    (bot.id,)).fetchall()]

    def mark_synced(self, source: Source, when: float) -> None:
        with self._tx():
            self._run("UPDATE sources SET synced_at = ? WHERE id = ?", (when, source.id))

    def move_source(self, bot: Bot, source_id: int, uri: str) -> Source:
        with self._tx():
            row = self._run("SELECT * FROM sources WHERE id = ? AND bot_id = ?" + self._lock_rows,
                            (source_id, bot.id)).fetchone()
            if row is None:
                raise NotFoundError(f"no source {source_id} in bot {bot.name!r}")
            old = row["uri"]
            if row["kind"] == "url":
                raise RagtuneError("a website source cannot be moved; add the new site as a source")
            self._run("UPDATE sources SET uri = ? WHERE id = ?", (uri, source_id))
            if row["kind"] == "file":
                self._run("UPDATE documents SET path = ? WHERE source_id = ? AND path = ?", (uri, source_id, old))
            else:  # a folder: every document under the old path moves with it
                prefix = old.rstrip("/") + "/"
                self._run("UPDATE documents SET path = ? || substr(path, ?) WHERE source_id = ? "
                          "AND substr(path, 1, ?) = ?",
                          (uri.rstrip("/") + "/", len(prefix) + 1, source_id, len(prefix), prefix))
            self._bump(bot.id)
            return source_record(self._run("SELECT * FROM sources WHERE id = ?", (source_id,)).fetchone())

    def remove_source(self, bot: Bot, source_id: int) -> None:
        with self._tx():
            if self._run("DELETE FROM sources WHERE id = ? AND bot_id = ?", (source_id, bot.id)).rowcount == 0:
                raise NotFoundError(f"no source {source_id} in bot {bot.name!r}")
            self._bump(bot.id)

    # ------------------------------------------------------------------ documents and chunks
    def document_states(self, bot: Bot, source: Source) -> dict[str, DocumentState]:
        rows = self._run("SELECT id, source_id, path, content_hash, embedder, metadata FROM documents "
                         "WHERE bot_id = ? AND source_id = ?", (bot.id, source.id)).fetchall()
        return {r["path"]: document_state(r) for r in rows}

    def delete_document(self, bot: Bot, document_id: int) -> None:
        with self._tx():
            self._run("DELETE FROM documents WHERE id = ? AND bot_id = ?", (document_id, bot.id))
            self._bump(bot.id)

    def list_chunks(self, bot: Bot) -> list[StoredChunk]:
        rows = self._run("SELECT c.id, c.document_id, c.heading, c.text, d.path, d.title FROM chunks c "
                         "JOIN documents d ON d.id = c.document_id WHERE c.bot_id = ? ORDER BY d.path, c.ordinal",
                         (bot.id,)).fetchall()
        return [StoredChunk(r["id"], r["document_id"], r["path"], r["title"], heading_path(r), r["text"]) for r in rows]

    # ------------------------------------------------------------------ keys
    def add_key(self, bot: Bot, kind: str, digest: str, hint: str, label: str = "") -> ApiKey:
        with self._tx():
            key_id = self._insert("INSERT INTO api_keys(bot_id, kind, digest, hint, label, created_at) "
                                  "VALUES (?, ?, ?, ?, ?, ?)", (bot.id, kind, digest, hint, label, time.time()))
        return key_record(self._run(KEY_SELECT + "WHERE k.id = ?", (key_id,)).fetchone())

    def find_key(self, digest: str) -> ApiKey | None:
        row = self._run(KEY_SELECT + "WHERE k.digest = ? AND k.revoked_at IS NULL", (digest,)).fetchone()
        return key_record(row) if row else None

    def list_keys(self, bot: Bot) -> list[ApiKey]:
        return [key_record(r) for r in self._run(KEY_SELECT + "WHERE k.bot_id = ? ORDER BY k.id",
                                                 (bot.id,)).fetchall()]

    def revoke_key(self, bot: Bot, key_id: int) -> None:
        with self._tx():
            cur = self._run("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND bot_id = ? AND revoked_at IS NULL",
                            (time.time(), key_id, bot.id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no key {key_id} in bot {bot.name!r}")

    # ------------------------------------------------------------------ conversations
    def add_messages(self, bot: Bot, conversation_id: str | None, messages: Sequence[dict[str, Any]],
                     channel: str = "api") -> tuple[str, list[int]]:
        now = time.time()
        with self._tx():
            if conversation_id is None:
                conversation_id = secrets.token_urlsafe(16)
                self._run("INSERT INTO conversations(id, bot_id, channel, created_at, updated_at) "
                          "VALUES (?, ?, ?, ?, ?)", (conversation_id, bot.id, channel, now, now))
            elif self._run("UPDATE conversations SET updated_at = ? WHERE id = ? AND bot_id = ?",
                           (now, conversation_id, bot.id)).rowcount == 0:
                raise NotFoundError(f"no conversation {conversation_id!r} in bot {bot.name!r}")
            ids = [self._insert("INSERT INTO messages(conversation_id, role, content, citations, meta, created_at) "
                                "VALUES (?, ?, ?, ?, ?, ?)",
                                (conversation_id, m["role"], m["content"], json.dumps(m.get("citations") or []),
                                 json.dumps(m.get("meta") or {}), now)) for m in messages]
        return conversation_id, ids

    def list_conversations(self, bot: Bot, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        rows = self._run(
            "SELECT c.id, c.channel, c.created_at, c.updated_at, count(m.id) AS messages, "
            "(SELECT content FROM messages WHERE conversation_id = c.id AND role = 'user' ORDER BY id LIMIT 1) "
            "AS first_question, sum(CASE WHEN f.rating > 0 THEN 1 ELSE 0 END) AS thumbs_up, "
            "sum(CASE WHEN f.rating < 0 THEN 1 ELSE 0 END) AS thumbs_down "
            "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
            "LEFT JOIN feedback f ON f.message_id = m.id WHERE c.bot_id = ? "
            "GROUP BY c.id ORDER BY c.updated_at DESC, c.id LIMIT ? OFFSET ?", (bot.id, limit, offset)).fetchall()
        return [{**dict(r), "thumbs_up": int(r["thumbs_up"] or 0), "thumbs_down": int(r["thumbs_down"] or 0),
                 "first_question": r["first_question"] or ""} for r in rows]

    def get_conversation(self, bot: Bot, conversation_id: str) -> dict[str, Any]:
        conv = self._run("SELECT id, channel, created_at, updated_at FROM conversations WHERE id = ? AND bot_id = ?",
                         (conversation_id, bot.id)).fetchone()
        if conv is None:
            raise NotFoundError(f"no conversation {conversation_id!r} in bot {bot.name!r}")
        rows = self._run("SELECT m.*, f.rating, f.comment FROM messages m LEFT JOIN feedback f ON f.message_id = m.id "
                         "WHERE m.conversation_id = ? ORDER BY m.id", (conversation_id,)).fetchall()
        return {**dict(conv), "messages": [message_record(r) for r in rows]}

    def set_feedback(self, bot: Bot, message_id: int, rating: int, comment: str = "") -> None:
        with self._tx():
            row = self._run("SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                            "WHERE m.id = ? AND c.bot_id = ? AND m.role = 'assistant'", (message_id, bot.id)).fetchone()
            if row is None:
                raise NotFoundError(f"no answer {message_id} in bot {bot.name!r}")
            self._run("INSERT INTO feedback(message_id, rating, comment, created_at) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT (message_id) DO UPDATE SET rating = excluded.rating, "
                      "comment = excluded.comment, created_at = excluded.created_at",
                      (message_id, rating, comment, time.time()))

    # ------------------------------------------------------------------ evaluation runs
    def create_run(self, bot: Bot, kind: str, config: dict[str, Any], lineage: dict[str, Any]) -> str:
        run_id = new_run_id()
        with self._tx():
            self._run("INSERT INTO eval_runs(id, bot_id, kind, status, started_at, pid, host, lineage, config) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (run_id, bot.id, kind, "running", time.time(), os.getpid(), socket.gethostname(),
                       json.dumps(lineage), json.dumps(config)))
        return run_id

    def update_run(self, bot: Bot, run_id: str, *, status: str | None = None, result: dict[str, Any] | None = None,
                   lineage: dict[str, Any] | None = None, chunk_ids: Sequence[str] | None = None,
                   error: str | None = None) -> None:
        sets = run_changes(status=status, result=result, lineage=lineage, chunk_ids=chunk_ids, error=error)
        if not sets:
            return
        with self._tx():
            cur = self._run(f"UPDATE eval_runs SET {', '.join(f'{c} = ?' for c in sets)} WHERE id = ? AND bot_id = ?",
                            (*sets.values(), run_id, bot.id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no run {run_id!r} in bot {bot.name!r}")

    def get_run(self, bot: Bot, run_id: str) -> dict[str, Any]:
        row = self._run("SELECT * FROM eval_runs WHERE id = ? AND bot_id = ?", (run_id, bot.id)).fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id!r} in bot {bot.name!r}; list runs with `ragtune runs --bot {bot.name}`")
        return run_record(row, bot)

    def list_runs(self, bot: Bot, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._run("SELECT * FROM eval_runs WHERE bot_id = ? AND (CAST(? AS TEXT) IS NULL OR kind = ?) "
                         "ORDER BY started_at DESC, id DESC LIMIT ?", (bot.id, kind, kind, limit)).fetchall()
        return [run_record(r, bot) for r in rows]

    # ------------------------------------------------------------------ sync jobs
    def add_job(self, bot: Bot, source_ids: Sequence[int] | None = None, host: str = "") -> dict[str, Any]:
        job_id = secrets.token_urlsafe(9)
        with self._tx():
            self._run("INSERT INTO sync_jobs(id, bot_id, source_ids, state, pinned_host, created_at) "
                      "VALUES (?, ?, ?, 'queued', ?, ?)",
                      (job_id, bot.id, None if source_ids is None else json.dumps(list(source_ids)), host, time.time()))
            self._run("DELETE FROM sync_jobs WHERE bot_id = ? AND finished_at IS NOT NULL AND id NOT IN (SELECT id "
                      "FROM sync_jobs WHERE bot_id = ? AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?)",
                      (bot.id, bot.id, JOBS_KEPT))
        return self.get_job(bot, job_id)

    def claim_job(self, worker: str, stale_after: float, host: str = "") -> dict[str, Any] | None:
        now = time.time()
        waiting = "(state = 'queued' OR (state = 'running' AND heartbeat_at < ?)) AND pinned_host IN ('', ?)"
        if self._run(f"SELECT 1 FROM sync_jobs WHERE {waiting} LIMIT 1", (now - stale_after, host)).fetchone() is None:
            return None  # an idle worker's poll: a read, no write lock
        with self._tx():
            self._run("UPDATE sync_jobs SET state = 'failed', finished_at = ?, current_item = '', error = ? "
                      "WHERE state = 'running' AND heartbeat_at < ? AND attempts >= ?",
                      (now, f"its worker stopped {JOB_ATTEMPTS} times during this job (see the workers' logs); "
                       "start the sync again", now - stale_after, JOB_ATTEMPTS))
            row = self._run(f"SELECT id FROM sync_jobs WHERE {waiting} ORDER BY created_at, id LIMIT 1" + self._claim_rows,
                            (now - stale_after, host)).fetchone()
            if row is None:
                return None
            self._run("UPDATE sync_jobs SET state = 'running', worker = ?, attempts = attempts + 1, processed = 0, "
                      "current_item = '', started_at = coalesce(started_at, ?), heartbeat_at = ? WHERE id = ?",
                      (worker, now, now, row["id"]))
            return job_record(self._run(JOB_SELECT + "WHERE j.id = ?", (row["id"],)).fetchone())

    def job_progress(self, job_id: str, worker: str, processed: int, current: str) -> bool:
        with self._tx():
            return self._run("UPDATE sync_jobs SET processed = ?, current_item = ?, heartbeat_at = ? "
                             "WHERE id = ? AND worker = ? AND state = 'running'",
                             (processed, current, time.time(), job_id, worker)).rowcount > 0

    def finish_job(self, job_id: str, worker: str, report: dict[str, Any] | None = None,
                   error: str | None = None) -> None:
        with self._tx():
            self._run("UPDATE sync_jobs SET state = ?, report = ?, error = ?, current_item = '', finished_at = ? "
                      "WHERE id = ? AND worker = ? AND state = 'running'",
                      ("failed" if error is not None else "done", None if report is None else json.dumps(report),
                       error, time.time(), job_id, worker))

    def _forget_job_items(self, bot: Bot) -> None:
        """Part of an erasure: a job's `current` names the document being synced (left behind by a worker that
        stopped midway), which may be the one erased. Job reports hold counts, and paths only of files that
        never loaded."""
        self._run("UPDATE sync_jobs SET current_item = '' WHERE bot_id = ? AND current_item <> ''", (bot.id,))

    def get_job(self, bot: Bot, job_id: str) -> dict[str, Any]:
        row = self._run(JOB_SELECT + "WHERE j.id = ? AND j.bot_id = ?", (job_id, bot.id)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r} in bot {bot.name!r}")
        return job_record(row)

    def list_jobs(self, bot: Bot | None = None, states: Sequence[str] = (), limit: int = 50) -> list[dict[str, Any]]:
        where, params = [], []
        if bot is not None:
            where.append("j.bot_id = ?")
            params.append(bot.id)
        if states:
            where.append(f"j.state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        rows = self._run(JOB_SELECT + (f"WHERE {' AND '.join(where)} " if where else "")
                         + "ORDER BY j.created_at DESC, j.id DESC LIMIT ?", (*params, limit)).fetchall()
        return [job_record(r) for r in rows]
