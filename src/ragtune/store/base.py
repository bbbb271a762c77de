"""The Store interface: bots, sources, documents, chunks, vectors and lexical search, one implementation per
database (sqlite.py, postgres.py) over the SQL they share (sql.py), all held to the same conformance tests
(tests/test_store.py); and the row records and conventions every backend uses."""

from __future__ import annotations

import json
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..types import Chunk, Hit, LoadedDocument


@dataclass(frozen=True)
class Bot:
    id: int
    name: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Source:
    id: int
    bot_id: int
    uri: str
    kind: str  # "folder" | "file" | "url"
    options: dict[str, Any]
    added_at: float
    synced_at: float | None


@dataclass(frozen=True)
class DocumentState:
    """What sync needs to decide whether a document changed."""

    id: int
    source_id: int
    path: str
    content_hash: str
    embedder: str
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. a page's ETag, links; whether PII was redacted


@dataclass(frozen=True)
class StoredChunk:
    """One chunk as stored, with its document's id, path and title: what training data is read from."""

    chunk_id: str
    document_id: int
    path: str
    title: str
    heading: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class ApiKey:
    """A bot's API key or widget token; the secret itself is never stored, only its sha256 digest."""

    id: int
    bot_id: int
    bot: str
    kind: str  # "key" (the bot's API) | "widget" (chat with the bot, nothing else)
    hint: str  # the secret's first characters, to tell keys apart
    label: str
    created_at: float
    revoked_at: float | None


# Row → record conversions and bookkeeping shared by the backends (their SQL differs, what they return does not).
# A row is anything indexable by column name (sqlite3.Row, a psycopg dict row).

# Erasure's convention for tables that quote document text (chat logs, feedback, eval results, training sets …):
# give them a `document_id` or `chunk_id` column, or a text column named `chunk_ids` / `citations` that holds the
# chunk ids it quotes. erase() finds such tables in the database's catalogue and deletes the rows that refer to
# erased documents or chunks; a table that quotes text without one of these columns would escape erasure.
DERIVED_COLUMNS = ("document_id", "chunk_id", "chunk_ids", "citations")
# Tables erase() handles itself (index tables go with their chunks), never scanned as derived ones
CORE_TABLES = frozenset({"meta", "bots", "sources", "documents", "chunks", "vectors", "passage_vectors", "audit"})


def bot_record(row) -> Bot:
    return Bot(id=row["id"], name=row["name"], settings=json.loads(row["settings"]))


def source_record(row) -> Source:
    return Source(id=row["id"], bot_id=row["bot_id"], uri=row["uri"], kind=row["kind"],
                  options=json.loads(row["options"]), added_at=row["added_at"], synced_at=row["synced_at"])


def document_state(row) -> DocumentState:
    return DocumentState(row["id"], row["source_id"], row["path"], row["content_hash"], row["embedder"],
                         json.loads(row["metadata"]))


def joined_heading(heading: Sequence[str]) -> str:
    """A chunk's heading path as stored: joined by " > " (heading_path splits it again)."""
    return " > ".join(heading)


def heading_path(row) -> tuple[str, ...]:
    """A stored chunk row's heading path."""
    return tuple(h for h in row["heading"].split(" > ") if h)


def lexical_heading(title: str, heading: Sequence[str]) -> str:
    """What lexical search reads as a chunk's heading: its document's title, then its heading path."""
    return f"{title} {joined_heading(heading)}"


def generation_cache(caches: dict[int, tuple[int, dict]], bot_id: int, generation: int, limit: int = 50_000) -> dict:
    """A bot's cache of values that change only when its data does: emptied when the bot's generation moved on
    (or it grew past `limit` entries)."""
    cache = caches.get(bot_id)
    if cache is None or cache[0] != generation or len(cache[1]) > limit:
        cache = caches[bot_id] = (generation, {})
    return cache[1]


KEY_SELECT = "SELECT k.*, b.name AS bot FROM api_keys k JOIN bots b ON b.id = k.bot_id "


def key_record(row) -> ApiKey:
    return ApiKey(row["id"], row["bot_id"], row["bot"], row["kind"], row["hint"], row["label"], row["created_at"],
                  row["revoked_at"])


def message_record(row) -> dict[str, Any]:
    """A stored message joined with its feedback (columns rating, comment), as get_conversation returns it."""
    return {"id": row["id"], "role": row["role"], "content": row["content"],
            "citations": json.loads(row["citations"]), "meta": json.loads(row["meta"]), "created_at": row["created_at"],
            "feedback": None if row["rating"] is None else {"rating": row["rating"], "comment": row["comment"]}}


JOB_SELECT = "SELECT j.*, b.name AS bot FROM sync_jobs j JOIN bots b ON b.id = j.bot_id "
JOBS_KEPT = 200  # finished sync jobs remembered per bot
JOB_ATTEMPTS = 3  # claims of one job (workers that stopped midway) before it fails


def job_record(row) -> dict[str, Any]:
    """A sync job as the API shows it (`current`: the document being synced while it runs)."""
    return {"id": row["id"], "bot": row["bot"], "state": row["state"],
            "source_ids": None if row["source_ids"] is None else json.loads(row["source_ids"]),
            "processed": row["processed"], "current": row["current_item"],
            "report": None if row["report"] is None else json.loads(row["report"]), "error": row["error"],
            "attempts": row["attempts"], "worker": row["worker"], "host": row["pinned_host"],
            "created_at": row["created_at"], "started_at": row["started_at"], "finished_at": row["finished_at"],
            "heartbeat_at": row["heartbeat_at"]}


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def run_changes(*, status: str | None, result: dict[str, Any] | None, lineage: dict[str, Any] | None,
                chunk_ids: Sequence[str] | None, error: str | None) -> dict[str, Any]:
    """The eval_runs columns an update_run call sets, with their stored values."""
    sets: dict[str, Any] = {}
    if lineage is not None:
        sets["lineage"] = json.dumps(lineage)
    if status is not None:
        sets["status"] = status
        sets["finished_at"] = None if status == "running" else time.time()
    if result is not None:
        sets["result"] = json.dumps(result)
    if chunk_ids is not None:
        sets["chunk_ids"] = " ".join(sorted(set(chunk_ids)))
    if error is not None:
        sets["error"] = error
    return sets


def run_record(row, bot: Bot) -> dict[str, Any]:
    return {"id": row["id"], "bot": bot.name, "kind": row["kind"], "status": row["status"],
            "started_at": row["started_at"], "finished_at": row["finished_at"], "pid": row["pid"],
            "host": row["host"], "lineage": json.loads(row["lineage"]), "config": json.loads(row["config"]),
            "result": json.loads(row["result"]), "error": row["error"]}


class Store(ABC):
    """Everything is scoped by bot: no method returns another bot's rows."""

    # bots ---------------------------------------------------------------
    @abstractmethod
    def ensure_bot(self, name: str) -> Bot: ...

    @abstractmethod
    def get_bot(self, name: str) -> Bot:
        """Raise NotFoundError for an unknown bot."""

    @abstractmethod
    def list_bots(self) -> list[Bot]: ...

    @abstractmethod
    def update_bot_settings(self, bot: Bot, settings: dict[str, Any]) -> Bot: ...

    # sources ------------------------------------------------------------
    @abstractmethod
    def add_source(self, bot: Bot, uri: str, kind: str, options: dict[str, Any]) -> Source: ...

    @abstractmethod
    def list_sources(self, bot: Bot) -> list[Source]: ...

    @abstractmethod
    def mark_synced(self, source: Source, when: float) -> None: ...

    @abstractmethod
    def move_source(self, bot: Bot, source_id: int, uri: str) -> Source:
        """Point a folder or file source at a new location (the folder moved): its documents' paths move with it,
        so the next sync compares content hashes instead of adding every document again."""

    @abstractmethod
    def remove_source(self, bot: Bot, source_id: int) -> None:
        """Remove the source with its documents, chunks and vectors."""

    # documents ------------------------------------------------------------
    @abstractmethod
    def document_states(self, bot: Bot, source: Source) -> dict[str, DocumentState]: ...

    @abstractmethod
    def replace_document(
        self,
        bot: Bot,
        source: Source,
        doc: LoadedDocument,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        embedder: str,
        passages: Sequence[tuple[str, str, np.ndarray]] = (),
    ) -> int:
        """Insert or replace one document with its chunks and vectors in ONE transaction; return its id.
        `passages`: (chunk id, key, vector) of the chunks' evidence sentences (`ragtune.passages`), kept until
        their chunk is deleted."""

    def passage_vectors(self, bot: Bot, embedder: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The kept passage vectors among `keys` (a store that keeps none returns {}: answering embeds them)."""
        return {}

    @abstractmethod
    def delete_document(self, bot: Bot, document_id: int) -> None: ...

    @abstractmethod
    def erase(self, bot: Bot, document_ids: Sequence[int], source_ids: Sequence[int],
              audit: dict[str, Any]) -> dict[str, int]:
        """Erase documents (and sources) so that no byte of their text remains in the store: rows, indexes,
        derived tables that quote them, and free space; record `audit` (no personal data) in the same
        transaction. Returns counts: documents, chunks, sources, derived_rows."""

    @abstractmethod
    def list_chunks(self, bot: Bot) -> list[StoredChunk]:
        """Every chunk of the bot, in document order: by document path, then position in the document."""

    @abstractmethod
    def count(self, bot: Bot) -> dict[str, int]:
        """{"documents": n, "chunks": n, "vectors": n}"""

    # search ---------------------------------------------------------------
    @abstractmethod
    def search_lexical(self, bot: Bot, query: str, k: int) -> list[tuple[str, float]]:
        """BM25 over chunk text and headings: [(chunk_id, score)], best first, higher is better."""

    @abstractmethod
    def term_frequencies(self, bot: Bot, words: Sequence[str]) -> tuple[dict[str, int], int]:
        """How many of the bot's chunks contain each word (as the lexical index matches it), and the chunk count."""

    @abstractmethod
    def search_dense(self, bot: Bot, vector: np.ndarray, k: int, embedder: str) -> list[tuple[str, float]]:
        """Nearest chunks by cosine similarity among vectors made by `embedder`: [(chunk_id, score)]."""

    @abstractmethod
    def get_hits(self, bot: Bot, scored: Sequence[tuple[str, float]]) -> list[Hit]:
        """Turn scored chunk ids into Hits (text, heading, source, title), keeping the order."""

    # keys (serving) ---------------------------------------------------------
    @abstractmethod
    def add_key(self, bot: Bot, kind: str, digest: str, hint: str, label: str = "") -> ApiKey: ...

    @abstractmethod
    def find_key(self, digest: str) -> ApiKey | None:
        """The live (not revoked) key of any bot whose secret has this sha256 digest."""

    @abstractmethod
    def list_keys(self, bot: Bot) -> list[ApiKey]: ...

    @abstractmethod
    def revoke_key(self, bot: Bot, key_id: int) -> None:
        """NotFoundError for an unknown, foreign or already revoked key."""

    # conversations (serving) ------------------------------------------------
    @abstractmethod
    def add_messages(self, bot: Bot, conversation_id: str | None, messages: Sequence[dict[str, Any]],
                     channel: str = "api") -> tuple[str, list[int]]:
        """Append messages ({role, content, citations, meta}) to one of the bot's conversations, or to a new one
        (random id) when `conversation_id` is None; return the conversation id and the new message ids.
        A foreign or unknown conversation id raises NotFoundError."""

    @abstractmethod
    def list_conversations(self, bot: Bot, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first: {id, channel, created_at, updated_at, messages, first_question, thumbs_up, thumbs_down}."""

    @abstractmethod
    def get_conversation(self, bot: Bot, conversation_id: str) -> dict[str, Any]:
        """{id, channel, created_at, updated_at, messages: [{id, role, content, citations, meta, created_at,
        feedback}]}; NotFoundError for a foreign or unknown id."""

    @abstractmethod
    def set_feedback(self, bot: Bot, message_id: int, rating: int, comment: str = "") -> None:
        """Thumbs up (1) or down (-1) with a comment on one of the bot's answers (replaces earlier feedback)."""

    # evaluation runs (`ragtune compare`) ---------------------------------------
    @abstractmethod
    def create_run(self, bot: Bot, kind: str, config: dict[str, Any], lineage: dict[str, Any]) -> str:
        """Record a new run with status "running", owned by this process (pid, host); return its id."""

    @abstractmethod
    def update_run(self, bot: Bot, run_id: str, *, status: str | None = None, result: dict[str, Any] | None = None,
                   lineage: dict[str, Any] | None = None, chunk_ids: Sequence[str] | None = None,
                   error: str | None = None) -> None:
        """Save a run's progress or outcome (given fields only); a status other than "running" also sets its
        finish time. NotFoundError for a foreign or unknown id."""

    @abstractmethod
    def get_run(self, bot: Bot, run_id: str) -> dict[str, Any]:
        """{id, bot, kind, status, started_at, finished_at, pid, host, lineage, config, result, error};
        NotFoundError for a foreign or unknown id."""

    @abstractmethod
    def list_runs(self, bot: Bot, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The bot's runs, newest first, each as get_run returns it."""

    # sync jobs (a queue any worker of any process shares) --------------------------
    @abstractmethod
    def add_job(self, bot: Bot, source_ids: Sequence[int] | None = None, host: str = "") -> dict[str, Any]:
        """Queue a sync of the bot's sources (`source_ids`, or all of them), to be run by a worker on `host` only
        when that is given (files only that machine has); the job as get_job returns it. Keeps the newest
        `JOBS_KEPT` finished jobs of the bot."""

    @abstractmethod
    def claim_job(self, worker: str, stale_after: float, host: str = "") -> dict[str, Any] | None:
        """Take the oldest queued job of any bot that is pinned to no host or to `host`, for `worker` (state
        "running"), or such a running one whose worker sent no heartbeat for `stale_after` seconds (its attempts
        counted; after `JOB_ATTEMPTS` it fails instead); None when there is none. Two workers never get the same
        job."""

    @abstractmethod
    def job_progress(self, job_id: str, worker: str, processed: int, current: str) -> bool:
        """Record progress and a heartbeat; False when `worker` no longer holds the job (it was claimed again)."""

    @abstractmethod
    def finish_job(self, job_id: str, worker: str, report: dict[str, Any] | None = None,
                   error: str | None = None) -> None:
        """End a job held by `worker`: "done" with its report, or "failed" with `error`."""

    @abstractmethod
    def get_job(self, bot: Bot, job_id: str) -> dict[str, Any]:
        """{id, bot, state, source_ids, processed, current, report, error, attempts, worker, host (pinned to, or
        ""), created_at, started_at, finished_at, heartbeat_at}; NotFoundError for a foreign or unknown id."""

    @abstractmethod
    def list_jobs(self, bot: Bot | None = None, states: Sequence[str] = (), limit: int = 50) -> list[dict[str, Any]]:
        """Jobs of the bot (of every bot when None), newest first, optionally only those in `states`."""

    @abstractmethod
    def index_bytes(self, bot: Bot) -> int:
        """Disk the bot's index takes: chunk text, vectors and its share of the lexical index."""

    @abstractmethod
    def copy_bot(self, bot: Bot, home: str | Path) -> None:
        """Write a standalone store under `home` (as open_store would open it) holding this bot alone: its
        settings, sources, documents, chunks, vectors and lexical index. The original is not touched."""

    # lifecycle ------------------------------------------------------------
    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
