"""Sync jobs started from the API: one at a time in a background thread with its own store connection (so
readers never see a document half-written), with progress (documents processed, the current one) to poll."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import NotFoundError, RagtuneError
from ..settings import Settings
from ..store import Bot, open_store

KEEP = 200  # finished jobs remembered per server


@dataclass
class Job:
    id: str
    bot_id: int
    bot: str
    source_ids: list[int] | None
    state: str = "queued"  # queued | running | done | failed
    processed: int = 0
    current: str = ""
    report: dict[str, Any] | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "bot": self.bot, "source_ids": self.source_ids, "state": self.state,
                "processed": self.processed, "current": self.current, "report": self.report, "error": self.error,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at}


class SyncJobs:
    def __init__(self, settings: Settings, embedder=None) -> None:
        self.settings = settings.replace(progress=False)
        self.embedder = embedder
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragtune-sync")

    def submit(self, bot: Bot, source_ids: list[int] | None = None) -> Job:
        job = Job(secrets.token_urlsafe(9), bot.id, bot.name, source_ids)
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.finished_at]
            for old in sorted(finished, key=lambda j: j.finished_at)[:-KEEP]:
                del self._jobs[old.id]
        self._pool.submit(self._run, job)
        return job

    def get(self, bot: Bot, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or job.bot_id != bot.id:  # another bot's job reads like a missing one
            raise NotFoundError(f"no job {job_id!r} in bot {bot.name!r}")
        return job

    def list(self, bot: Bot) -> list[Job]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.bot_id == bot.id]
        return sorted(jobs, key=lambda j: -j.created_at)

    def _run(self, job: Job) -> None:
        from ..ingest.sync import sync_bot

        job.state, job.started_at = "running", time.time()

        def progress(name: str) -> None:
            job.processed += 1
            job.current = name

        try:
            with open_store(self.settings) as store:
                bot = store.get_bot(job.bot)
                sources = None
                if job.source_ids is not None:
                    sources = [s for s in store.list_sources(bot) if s.id in job.source_ids]
                report = sync_bot(store, self.settings, bot, sources, embedder=self.embedder, on_document=progress)
            job.report, job.state = report.to_json(), "done"
        except RagtuneError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # a bug must still end the job visibly, not leave it "running"
            job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
            logging.getLogger(__name__).exception("sync job %s of bot %r failed", job.id, job.bot)
        finally:
            job.current = ""
            job.finished_at = time.time()

    def wait(self, timeout: float = 60.0) -> None:
        """Block until every submitted job has finished (tests, shutdown)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                busy = any(j.finished_at is None for j in self._jobs.values())
            if not busy:
                return
            time.sleep(0.02)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
