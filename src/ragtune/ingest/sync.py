"""Incremental sync of a bot's sources: hash → (load → chunk → embed) only what changed → one transaction per
document; vanished documents are removed with their chunks and vectors. No model is loaded when nothing changed."""

from __future__ import annotations

import fnmatch
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..errors import InputError, SourceError
from ..models.embedders import Embedder, embedder_identity, open_embedder
from ..settings import Settings
from ..store import Bot, Source, Store
from ..types import SyncReport
from .chunking import chunk_document, embedding_text
from .loaders import SUPPORTED_SUFFIXES, hash_file, load_file

GROUP = 64  # documents embedded together (one batch stream), then written one transaction each


@dataclass
class _Pending:
    path: Path
    key: str
    digest: str
    is_new: bool


def source_kind(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return "url"
    p = Path(uri)
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "file"
    raise InputError(f"source {uri} does not exist (give a file, a folder or an http(s) URL)")


def register_sources(store: Store, bot: Bot, uris: Iterable[str], settings: Settings) -> list[Source]:
    out = []
    for uri in uris:
        kind = source_kind(uri)
        if kind == "url":
            raise InputError(f"website sources are not supported yet: {uri}")
        uri = str(Path(uri).resolve())
        options = {"include": settings.include, "exclude": settings.exclude} if kind == "folder" else {}
        out.append(store.add_source(bot, uri, kind, options))
    return out


def _globs(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def list_files(source: Source, failed: list[dict[str, str]]) -> list[Path] | None:
    """Supported files of a source, recursively for folders; None when the source itself is unreadable
    (then nothing of it is removed: an unmounted drive must not erase a knowledge base)."""
    root = Path(source.uri)
    if source.kind == "file":
        if not root.exists():
            failed.append({"source": source.uri, "error": "file not found"})
            return None
        return [root]
    if not root.is_dir():
        failed.append({"source": source.uri, "error": "folder not found"})
        return None
    include, exclude = _globs(source.options.get("include", "")), _globs(source.options.get("exclude", ""))
    errors: list[OSError] = []
    files = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in SUPPORTED_SUFFIXES or name.startswith("."):
                continue
            if include and not any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in include):
                continue
            if any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in exclude):
                continue
            files.append(path)
    for err in errors:
        where = err.filename or source.uri
        if Path(where) == root:
            failed.append({"source": str(where), "error": f"cannot read folder: {err.strerror or err}"})
            return None
        failed.append({"source": str(where), "error": f"cannot read folder: {err.strerror or err}"})
    return files


def _unreadable_prefixes(failed: list[dict[str, str]]) -> list[str]:
    return [f["source"].rstrip("/") + "/" for f in failed if f["error"].startswith("cannot read folder")]


def sync_bot(
    store: Store,
    settings: Settings,
    bot: Bot,
    sources: list[Source] | None = None,
    embedder: Embedder | None = None,
    on_document: Callable[[str], None] | None = None,
) -> SyncReport:
    """Bring the bot's index in line with its sources. `embedder` is created only if something changed."""
    started = time.perf_counter()
    report = SyncReport()
    identity = embedder.identity if embedder else embedder_identity(settings)
    max_bytes = int(settings.max_file_mb * 1024 * 1024)
    work: list[tuple[Source, list[_Pending]]] = []
    for source in sources if sources is not None else store.list_sources(bot):
        failed_before = len(report.failed)
        files = list_files(source, report.failed)
        if files is None:
            continue
        skip_prefixes = _unreadable_prefixes(report.failed[failed_before:])
        states = store.document_states(bot, source)
        pending: list[_Pending] = []
        seen: set[str] = set()
        for path in files:
            key = str(path)
            seen.add(key)
            state = states.get(key)
            try:
                size = path.stat().st_size
                if size > max_bytes:
                    raise SourceError(
                        f"file is {size / 2**20:.1f} MB, over the {settings.max_file_mb:g} MB limit (max_file_mb)")
                digest = hash_file(path)
            except FileNotFoundError:
                report.failed.append({"source": key, "error": "file disappeared during sync"})
                continue
            except OSError as exc:
                report.failed.append({"source": key, "error": f"cannot read file: {exc.strerror or exc}"})
                continue
            except SourceError as exc:
                report.failed.append({"source": key, "error": str(exc)})
                continue
            if state and state.content_hash == digest and state.embedder == identity:
                report.unchanged += 1
            else:
                pending.append(_Pending(path, key, digest, state is None))
        for key, state in states.items():
            if key not in seen and not any(key.startswith(p) for p in skip_prefixes):
                store.delete_document(bot, state.id)
                report.removed += 1
        work.append((source, pending))

    total = sum(len(p) for _, p in work)
    if total:
        embedder = embedder or open_embedder(settings)
        bar = _progress(total, settings.progress)
        try:
            for source, pending in work:
                for start in range(0, len(pending), GROUP):
                    _ingest_group(store, settings, bot, source, pending[start : start + GROUP], embedder, report,
                                  max_bytes, bar, on_document)
        finally:
            if bar is not None:
                bar.close()
    now = time.time()
    for source, _ in work:
        store.mark_synced(source, now)
    report.seconds = time.perf_counter() - started
    return report


def _ingest_group(store, settings, bot, source, group, embedder, report, max_bytes, bar, on_document) -> None:
    loaded = []
    for item in group:
        try:
            doc = load_file(item.path, max_bytes)
            chunks = chunk_document(doc, bot.name, embedder.token_offsets, settings.chunk_tokens,
                                    settings.chunk_overlap)
            if not chunks:
                raise SourceError("no text found")
            loaded.append((item, doc, chunks))
        except FileNotFoundError:
            report.failed.append({"source": item.key, "error": "file disappeared during sync"})
        except OSError as exc:
            report.failed.append({"source": item.key, "error": f"cannot read file: {exc.strerror or exc}"})
        except SourceError as exc:
            report.failed.append({"source": item.key, "error": str(exc)})
        if on_document:
            on_document(item.key)
    texts = [embedding_text(doc.title, c.heading, c.text) for _, doc, chunks in loaded for c in chunks]
    vectors = embedder.embed(texts, batch_size=settings.embed_batch_size)
    offset = 0
    for item, doc, chunks in loaded:
        # a file edited between hashing and loading is stored with the hash of what was loaded
        store.replace_document(bot, source, doc, chunks, vectors[offset : offset + len(chunks)], embedder.identity)
        offset += len(chunks)
        report.chunks_embedded += len(chunks)
        if item.is_new:
            report.added += 1
        else:
            report.updated += 1
    if bar is not None:
        bar.update(len(group))


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="indexing", unit="doc", file=sys.stderr, leave=False)
