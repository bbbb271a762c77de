"""Sync jobs started from the API: queued as rows in the store (so any server sharing the store shows them, and
any worker may run them), run by this server's own sync worker unless `sync_worker` is off (dedicated `ragtune
worker` processes take them then), with progress (documents processed, the current one) to poll."""

from __future__ import annotations

import time
from typing import Any

from ..ingest.worker import SyncWorker, queue_sync
from ..settings import Settings
from ..store import Bot, Store


class SyncJobs:
    def __init__(self, settings: Settings, store: Store, embedder=None) -> None:
        self.store, self.settings = store, settings
        self.worker = SyncWorker(settings, embedder) if settings.sync_worker else None
        if self.worker is not None:
            self.worker.start()

    def submit(self, bot: Bot, source_ids: list[int] | None = None) -> dict[str, Any]:
        job = queue_sync(self.store, self.settings, bot, source_ids)
        if self.worker is not None:
            self.worker.wake()
        return job

    def get(self, bot: Bot, job_id: str) -> dict[str, Any]:
        return self.store.get_job(bot, job_id)  # another bot's job reads like a missing one

    def list(self, bot: Bot) -> list[dict[str, Any]]:
        return self.store.list_jobs(bot)

    def wait(self, timeout: float = 60.0) -> None:
        """Block until no job of any bot is queued or running (tests, shutdown)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.store.list_jobs(states=("queued", "running"), limit=1):
            time.sleep(0.02)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
