"""Incremental sync of a bot's sources: hash → (load → chunk → embed) only what changed → one transaction per
document; vanished documents are removed with their chunks and vectors. No model is loaded when nothing changed.
Files are parsed in an isolated worker process (isolation.py); website sources are crawled (crawler.py); PII is
redacted before chunking when the bot asks for it (pii.py)."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .. import passages
from ..errors import InputError, SourceError
from ..models.embedders import Embedder, embedder_identity, open_embedder
from ..settings import Settings
from ..store import Bot, DocumentState, Source, Store
from ..types import SyncReport
from .chunking import chunk_document, embedding_text
from .isolation import ParserPool
from .loaders import SUPPORTED_SUFFIXES, hash_file
from .pii import is_redacted

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
    existing = {s.uri: s for s in store.list_sources(bot)}
    out = []
    for uri in uris:
        kind = source_kind(uri)
        if kind == "url":
            from .crawler import normalize_url

            uri = normalize_url(uri)
            # the limits a site was added with stay with it: a later `ragtune sync` crawls it the same way
            options = {"crawl": {name: getattr(settings, name) for name in CRAWL_SETTINGS}}
            if settings.allow_private:
                options["allow_private"] = True
        else:
            uri = str(Path(uri).resolve())
            options = {"include": settings.include, "exclude": settings.exclude} if kind == "folder" else {}
        forgotten = existing[uri].options.get("forgotten") if uri in existing else None
        if forgotten:  # documents erased with `ragtune forget` stay out when the source is added again
            options["forgotten"] = forgotten
        out.append(store.add_source(bot, uri, kind, options))
    return out


CRAWL_SETTINGS = ("crawl_max_pages", "crawl_max_depth", "crawl_max_mb", "crawl_timeout")


def path_hash(path: str) -> str:
    """How a forgotten document's path is remembered in its source's options (never the path itself)."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


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
    forgotten = frozenset(source.options.get("forgotten", ()))
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
            if forgotten and path_hash(str(path)) in forgotten:
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
    redact = bool(settings.redact_pii or bot.settings.get("redact_pii"))
    max_bytes = int(settings.max_file_mb * 1024 * 1024)
    work: list[tuple[Source, list[_Pending]]] = []
    sites: list[Source] = []
    for source in sources if sources is not None else store.list_sources(bot):
        if source.kind == "url":
            sites.append(source)
            continue
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
            if state and state.content_hash == digest and _indexed_as_asked(state, identity, redact, settings):
                report.unchanged += 1
            else:
                pending.append(_Pending(path, key, digest, state is None))
        for key, state in states.items():
            if key not in seen and not any(key.startswith(p) for p in skip_prefixes):
                store.delete_document(bot, state.id)
                report.removed += 1
        work.append((source, pending))

    total = sum(len(p) for _, p in work)
    ctx = _Context(store, settings, bot, embedder, redact, report)
    try:
        if total:
            ctx.pool.start()  # the worker imports while the embedder loads
            ctx.embedder = ctx.embedder or open_embedder(settings)
            bar = _progress(total, settings.progress)
            try:
                for source, pending in work:
                    for start in range(0, len(pending), GROUP):
                        _ingest_group(ctx, source, pending[start : start + GROUP], max_bytes, bar, on_document)
            finally:
                if bar is not None:
                    bar.close()
        sites = [source for source in sites if _sync_site(ctx, source, on_document)]
    finally:
        ctx.close()
    now = time.time()
    for source in [s for s, _ in work] + sites:
        store.mark_synced(source, now)
    report.seconds = time.perf_counter() - started
    return report


class _Context:
    """What one sync shares across sources: the parser worker, the embedder and the redactor, each made on
    first use (no model, no process, no Presidio when nothing changed)."""

    def __init__(self, store, settings, bot, embedder, redact, report) -> None:
        self.store, self.settings, self.bot, self.report = store, settings, bot, report
        self.embedder: Embedder | None = embedder
        self.redact = redact
        self._pool: ParserPool | None = None
        self._redactor = None

    @property
    def pool(self) -> ParserPool:
        if self._pool is None:
            self._pool = ParserPool.from_settings(self.settings)
        return self._pool

    def get_embedder(self) -> Embedder:
        if self.embedder is None:
            self.embedder = open_embedder(self.settings)
        return self.embedder

    def prepare(self, doc):
        """Redact (when asked) and chunk one loaded document; SourceError when nothing is left."""
        if self.redact:
            if self._redactor is None:
                from .pii import PiiRedactor

                self._redactor = PiiRedactor()
            doc = self._redactor.redact_document(doc)
        embedder = self.get_embedder()
        chunks = chunk_document(doc, self.bot.name, embedder.token_offsets, self.settings.chunk_tokens,
                                self.settings.chunk_overlap)
        if not chunks:
            raise SourceError("no text found")
        return doc, chunks

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def _ingest_group(ctx: _Context, source, group, max_bytes, bar, on_document) -> None:
    loaded = []
    report = ctx.report
    for item in group:
        try:
            doc, chunks = ctx.prepare(ctx.pool.load_file(item.path, max_bytes))
            loaded.append((item.is_new, doc, chunks))
        except FileNotFoundError:
            report.failed.append({"source": item.key, "error": "file disappeared during sync"})
        except OSError as exc:
            report.failed.append({"source": item.key, "error": f"cannot read file: {exc.strerror or exc}"})
        except SourceError as exc:
            report.failed.append({"source": item.key, "error": str(exc)})
        if on_document:
            on_document(item.key)
    _store_loaded(ctx, source, loaded)
    if bar is not None:
        bar.update(len(group))


def _indexed_as_asked(state: DocumentState, identity: str, redact: bool, settings: Settings) -> bool:
    """Whether a stored document was indexed the way the settings now ask (embedder, PII redaction, passage
    vectors up to evidence_window sentences): one that was not is re-indexed even when its content is unchanged."""
    return state.embedder == identity and is_redacted(state.metadata) == redact and \
        passages.current(state.metadata, settings.embed_sentences, settings.evidence_window)


def _store_loaded(ctx: _Context, source, loaded) -> None:
    """Embed a group of prepared documents together, then write each in its own transaction."""
    store, settings, bot, report, embedder = ctx.store, ctx.settings, ctx.bot, ctx.report, ctx.get_embedder()
    texts = [embedding_text(doc.title, c.heading, c.text) for _, doc, chunks in loaded for c in chunks]
    vectors = embedder.embed(texts, batch_size=settings.embed_batch_size)
    offset = 0
    for is_new, doc, chunks in loaded:
        rows = ()
        if settings.embed_sentences:
            rows = passages.index_rows(embedder, doc.title, chunks, settings.embed_batch_size, settings.evidence_window)
            doc = dataclasses.replace(doc, metadata={**doc.metadata, passages.INDEXED: settings.evidence_window})
        # a file edited between hashing and loading is stored with the hash of what was loaded
        store.replace_document(bot, source, doc, chunks, vectors[offset : offset + len(chunks)], embedder.identity,
                               rows)
        offset += len(chunks)
        report.chunks_embedded += len(chunks)
        if is_new:
            report.added += 1
        else:
            report.updated += 1


def _sync_site(ctx: _Context, source: Source, on_document) -> bool:
    """Crawl a website source: changed pages are indexed in groups, pages now gone are removed, failures
    reported; when the crawl cannot start (refused address, robots.txt unreachable) stored pages are kept.
    Returns whether any page was fetched (the source counts as synced)."""
    from .crawler import CrawlLimits, SiteCrawler
    from .isolation import ParsedPage

    store, bot, report = ctx.store, ctx.bot, ctx.report
    states = store.document_states(bot, source)
    forgotten = frozenset(source.options.get("forgotten", ()))
    identity = ctx.embedder.identity if ctx.embedder else embedder_identity(ctx.settings)

    def parse(data: bytes, url: str, mtime: float, kind: str) -> ParsedPage:
        return ctx.pool.load_bytes(data, url, mtime, kind)

    crawler = SiteCrawler(
        source.uri, CrawlLimits.from_settings(ctx.settings.replace(**{
            k: v for k, v in source.options.get("crawl", {}).items() if k in CRAWL_SETTINGS})), parse,
        states=states,
        is_current=lambda s: _indexed_as_asked(s, identity, ctx.redact, ctx.settings),
        allow_private=bool(ctx.settings.allow_private or source.options.get("allow_private")),
        skip=lambda url: path_hash(url) in forgotten,
    )
    pending = []
    for event in crawler.crawl():
        if event.outcome == "unchanged":
            report.unchanged += 1
        elif event.outcome == "gone":
            store.delete_document(bot, states[event.url].id)
            report.removed += 1
        elif event.outcome == "failed":
            report.failed.append({"source": event.url, "error": event.error})
        else:
            try:
                doc, chunks = ctx.prepare(event.document)
                pending.append((event.url not in states, doc, chunks))
            except SourceError as exc:
                report.failed.append({"source": event.url, "error": str(exc)})
            if len(pending) >= GROUP:
                _store_loaded(ctx, source, pending)
                pending = []
        if on_document:
            on_document(event.url)
    if pending:
        _store_loaded(ctx, source, pending)
    return crawler.stats.pages > 0


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="indexing", unit="doc", file=sys.stderr, leave=False)
