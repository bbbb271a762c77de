"""Evidence passages: a chunk's sentences as the answer path scores them (one text per sentence, led by the
chunk's heading path) and their vectors. Indexing embeds every sentence once and the store keeps the vectors
with the chunk (deleted and erased with it), so answering embeds only the few multi-sentence windows it builds
around the best sentences — most of what a question used to wait for on a CPU."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import grounding as g
from .ingest.chunking import heading_path

if TYPE_CHECKING:  # pragma: no cover
    from .models.embedders import Embedder
    from .store import Bot, Store
    from .types import Chunk


INDEXED = "sentence_vectors"  # document metadata: its sentences were embedded when it was indexed


def current(metadata: dict | None, embed_sentences: bool) -> bool:
    """Whether a stored document is indexed as `embed_sentences` asks: sync re-indexes one whose sentences
    were not embedded (a store indexed before sentence vectors existed gets them on the next sync)."""
    return bool((metadata or {}).get(INDEXED)) or not embed_sentences


def chunk_sentences(text: str) -> tuple[list[str], int]:
    """A chunk's quotable sentences (instruction-like ones removed) and how many were removed."""
    clean, removed = g.strip_injections(text)
    return g.sentences(clean), removed


def unit_text(path: str, text: str) -> str:
    """What the embedder reads for a passage: its chunk's heading path, then the passage."""
    return f"{path}: {text}"


def unit_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def sentence_units(title: str, heading: tuple[str, ...], text: str) -> list[str]:
    """The embedder texts of a chunk's single-sentence passages."""
    path = heading_path(title, heading)
    return [unit_text(path, s) for s in chunk_sentences(text)[0]]


def index_rows(embedder: "Embedder", title: str, chunks: Sequence["Chunk"], batch_size: int = 64
               ) -> list[tuple[str, str, np.ndarray]]:
    """(chunk id, key, vector) for every sentence of `chunks` (one document's), for the store to keep."""
    units = [(c.id, t) for c in chunks for t in dict.fromkeys(sentence_units(title, c.heading, c.text))]
    if not units:
        return []
    vectors = embedder.embed([t for _, t in units], batch_size=batch_size)
    return [(cid, unit_key(t), v) for (cid, t), v in zip(units, vectors)]


def vectors(store: "Store", bot: "Bot", embedder: "Embedder", texts: Sequence[str], kept_ones: bool = True
            ) -> np.ndarray:
    """Vectors of passage texts, in order: those kept at indexing time from the store, the rest embedded now
    (`kept_ones` false: none can be kept, e.g. multi-sentence windows, so the store is not asked)."""
    keys = [unit_key(t) for t in texts]
    kept = store.passage_vectors(bot, embedder.identity, keys) if texts and kept_ones else {}
    missing = [i for i, k in enumerate(keys) if k not in kept]
    fresh = embedder.embed([texts[i] for i in missing]) if missing or not texts else None
    if not kept:
        return fresh
    out = np.empty((len(texts), len(next(iter(kept.values())))), dtype=np.float32)
    for i, k in enumerate(keys):
        if k in kept:
            out[i] = kept[k]
    if missing:
        out[missing] = fresh
    return out
