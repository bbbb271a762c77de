"""Stores: where bots, documents, chunks and vectors live. `open_store(settings)` picks the backend."""

from __future__ import annotations

from ..settings import Settings
from .base import ApiKey, Bot, DocumentState, Source, Store, StoredChunk

__all__ = ["ApiKey", "Bot", "DocumentState", "Source", "Store", "StoredChunk", "open_store"]


def open_store(settings: Settings) -> Store:
    from .sqlite import SQLiteStore

    home = settings.home_path
    home.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(home / "ragtune.db")
