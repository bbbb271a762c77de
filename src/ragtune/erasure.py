"""Erasure (`ragtune forget`): remove a document, a folder of documents or a whole source from every table and
index of a bot — chunks, vectors, full-text rows, and derived tables that quote them (chat logs and the like,
found by the store's column convention) — reclaim the space so no byte of the text stays in the database
files, keep it from coming back at the next sync, mark adapters trained on it stale (dropping their cached
training data), drop the questions `tune-embedder` cached about it, and write an audit record that holds no
personal data (a hash of what was forgotten, counts and the time)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import NotFoundError
from .ingest.sync import path_hash
from .store import Bot, Source, Store
from .train.adapters import record_erasure
from .train.embedder import forget_questions


@dataclass(frozen=True)
class ForgetReport:
    subject_sha256: str  # what was forgotten, hashed: the same value the audit record holds
    scope: str  # "source" (a registered source, removed with all its documents) or "documents"
    documents: int
    chunks: int
    sources: int
    derived_rows: int  # rows of chat logs and other tables that quoted the documents
    adapters_marked_stale: int
    stale_adapters: tuple[str, ...]  # ids of the adapters that learned from what was forgotten, now stale
    reclaimed: bool  # false when another process held the database open and the WAL could not be emptied
    seconds: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        out["stale_adapters"] = list(self.stale_adapters)
        return out


def subject_hash(subject: str) -> str:
    return hashlib.sha256(subject.encode("utf-8")).hexdigest()


def forget(store: Store, bot: Bot, subject: str) -> ForgetReport:
    """Forget `subject`: a registered source (its URI, or a path that resolves to it), one document (a file path
    or page URL), or a folder inside a folder source (every document under it). Documents forgotten from a
    source that stays registered are remembered by hash in the source's options, so a sync does not bring
    them back. NotFoundError when nothing matches."""
    started = time.perf_counter()
    sources = store.list_sources(bot)
    candidates = _candidates(subject)
    whole = [s for s in sources if s.uri in candidates]
    documents: dict[int, tuple[Source, str]] = {}
    if not whole:
        for source in sources:
            for path, state in store.document_states(bot, source).items():
                if any(path == c or (c.rstrip("/") and path.startswith(c.rstrip("/") + "/")) for c in candidates):
                    documents[state.id] = (source, path)
    if not whole and not documents:
        raise NotFoundError(f"nothing to forget: no source or document {subject!r} in bot {bot.name!r}")
    # keep forgotten documents from coming back with the next sync of a source that stays
    for source in {id(s): s for s, _ in documents.values()}.values():
        hashes = {path_hash(p) for s, p in documents.values() if s.id == source.id}
        remembered = sorted(set(source.options.get("forgotten", [])) | hashes)
        store.add_source(bot, source.uri, source.kind, {**source.options, "forgotten": remembered})
    document_ids = list(documents)
    for source in whole:
        document_ids += [state.id for state in store.document_states(bot, source).values()]
    # before the rows go: an interruption after this leaves adapters stale, never current on erased text, and
    # the questions tune-embedder had a generator write about the erased chunks gone
    db = getattr(store, "path", None)
    home = Path(db).parent if db is not None else None  # adapters and caches live beside the database file
    stale = record_erasure(store, bot, document_ids, home)
    if home is not None:
        forget_questions(home, store, bot, document_ids)
    scope = "source" if whole else "documents"
    audit = {"action": "forget", "subject_sha256": subject_hash(subject), "scope": scope,
             "adapters_marked_stale": len(stale)}
    counts = store.erase(bot, list(documents), [s.id for s in whole], audit)
    return ForgetReport(subject_sha256=audit["subject_sha256"], scope=scope, documents=counts["documents"],
                        chunks=counts["chunks"], sources=counts["sources"], derived_rows=counts["derived_rows"],
                        adapters_marked_stale=len(stale), stale_adapters=tuple(stale),
                        reclaimed=bool(counts.get("reclaimed", 1)), seconds=time.perf_counter() - started)


def _candidates(subject: str) -> set[str]:
    """The spellings a subject may be stored under: as given, and for a local path, resolved."""
    out = {subject, subject.rstrip("/")}
    if "://" not in subject:
        try:
            out.add(str(Path(subject).expanduser().resolve()))
        except (OSError, RuntimeError):
            pass
    else:
        from .ingest.crawler import normalize_url

        try:
            out.add(normalize_url(subject))
        except ValueError:
            pass
    return {c for c in out if c}
