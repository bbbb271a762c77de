"""The sync worker: claims queued sync jobs from the store (queued by any server or process sharing it), runs each
with progress and heartbeats, and records how it ended. `ragtune serve` runs one in a thread; `ragtune worker`
runs one in the foreground, so several machines can share the ingestion work of one Postgres store (a job of
files or folders runs on the machine that queued it, unless `sources_shared`). A worker that stops midway leaves
nothing half-written (sync commits one document at a time); another worker claims the job again once its
heartbeat is `job_stale_seconds` old."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from typing import Any, Callable, Sequence

from ..errors import NotFoundError, RagtuneError
from ..settings import Settings
from ..store import Bot, Source, Store, open_store

log = logging.getLogger(__name__)


def job_host(settings: Settings, sources: Sequence[Source]) -> str:
    """Where a sync of `sources` may run: on this machine when one of them is a file or folder here (another
    machine would find it missing) — unless `sources_shared` says every worker sees the same files — else
    anywhere ("")."""
    local = any(s.kind != "url" for s in sources)
    return socket.gethostname() if local and not settings.sources_shared else ""


def job_sources(store: Store, bot: Bot, source_ids: Sequence[int] | None) -> list[Source]:
    """The bot's sources a job names (`source_ids`, or all of them); ids of removed sources name nothing."""
    return [s for s in store.list_sources(bot) if source_ids is None or s.id in source_ids]


def queue_sync(store: Store, settings: Settings, bot: Bot, source_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """Queue a sync job of the bot's sources (`source_ids`, or all), pinned as job_host says."""
    return store.add_job(bot, source_ids, host=job_host(settings, job_sources(store, bot, source_ids)))


class _Lost(Exception):
    """The job was claimed by another worker (this one was taken for stopped): stop syncing it."""


class SyncWorker:
    def __init__(self, settings: Settings, embedder=None, name: str | None = None,
                 on_job: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`on_job`: called with each job as it ended."""
        self.settings = settings.replace(progress=False)
        self.embedder, self.on_job = embedder, on_job
        self.host = socket.gethostname()
        self.name = name or f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def run_one(self, store: Store) -> dict[str, Any] | None:
        """Claim and run one job; the job as it ended, or None when none is waiting."""
        from ..ingest.sync import sync_bot

        job = store.claim_job(self.name, self.settings.job_stale_seconds, self.host)
        if job is None:
            return None
        log.info("sync job %s of bot %r: started (attempt %d)", job["id"], job["bot"], job["attempts"])
        done, bot = 0, None

        def progress(name: str) -> None:
            nonlocal done
            done += 1
            if not store.job_progress(job["id"], self.name, done, name):
                raise _Lost(job["id"])

        try:
            bot = store.get_bot(job["bot"])
            sources = job_sources(store, bot, job["source_ids"])
            if self.embedder is None:
                from ..models.embedders import open_embedder

                self.embedder = open_embedder(self.settings)  # loaded once, for every later job
            report = sync_bot(store, self.settings, bot, sources, embedder=self.embedder, on_document=progress)
            store.finish_job(job["id"], self.name, report=report.to_json())
        except _Lost:
            log.warning("sync job %s was claimed by another worker; this one stopped it", job["id"])
        except RagtuneError as exc:
            store.finish_job(job["id"], self.name, error=str(exc))
        except Exception as exc:  # a bug must still end the job visibly, not leave it "running"
            log.exception("sync job %s of bot %r failed", job["id"], job["bot"])
            store.finish_job(job["id"], self.name, error=f"{type(exc).__name__}: {exc}")
        try:
            return store.get_job(bot or store.get_bot(job["bot"]), job["id"])
        except NotFoundError:  # the bot was deleted meanwhile, and its jobs with it
            return {**job, "state": "failed", "error": f"bot {job['bot']!r} no longer exists"}

    def run_pending(self, store: Store | None = None) -> list[dict[str, Any]]:
        """Run jobs until none is waiting, on `store` or on a connection of its own (either way not the one
        readers use: they never see a document half-written)."""
        if store is None:
            with open_store(self.settings) as own:
                return self.run_pending(own)
        finished = []
        while not self._stop.is_set() and (job := self.run_one(store)) is not None:
            finished.append(job)
            if self.on_job is not None:
                self.on_job(job)
        return finished

    def serve(self) -> None:
        """Run jobs as they come, until stop(): woken at once by wake(), else every job_poll_seconds; one store
        connection throughout, opened again after an error."""
        store = None
        while not self._stop.is_set():
            try:
                store = store or open_store(self.settings)
                self.run_pending(store)
            except Exception as exc:  # e.g. the store is unreachable for now: say so, start afresh, try again later
                if isinstance(exc, RagtuneError):
                    log.warning("sync worker %s: %s", self.name, exc)
                else:
                    log.exception("sync worker %s", self.name)
                if store is not None:
                    with contextlib.suppress(Exception):
                        store.close()
                store = None
            self._wake.wait(self.settings.job_poll_seconds)
            self._wake.clear()
        if store is not None:
            store.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve, name="ragtune-sync", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
