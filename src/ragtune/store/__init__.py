"""Stores: where bots, documents, chunks and vectors live. `open_store(settings)` picks the backend: SQLite in the
home folder (default) or Postgres at `store_url`."""

from __future__ import annotations

from ..settings import Settings
from .base import ApiKey, Bot, DocumentState, Source, Store, StoredChunk

__all__ = ["ApiKey", "Bot", "DocumentState", "Source", "Store", "StoredChunk", "open_store"]


def open_store(settings: Settings) -> Store:
    """The Postgres store at `store_url` when one is set, else the SQLite file in `home`."""
    if settings.store_url:
        from .postgres import PostgresStore

        return PostgresStore(settings.store_url, settings.store_vector_index, settings.store_ef_search)
    from .sqlite import SQLiteStore

    home = settings.home_path
    home.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(home / "ragtune.db")
