"""Evidence passages: a chunk's sentences and runs of consecutive sentences as the answer path scores them (one
text per passage, led by the chunk's heading path) and their vectors. Indexing embeds every passage of up to
`evidence_window` sentences once and the store keeps the vectors with the chunk (deleted and erased with it), so
answering embeds only the question — embedding the windows around the best sentences took 0.1–0.35 s of each
answer on a 2-core CPU."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from . import grounding as g
from .ingest.chunking import heading_path

if TYPE_CHECKING:  # pragma: no cover
    from .models.embedders import Embedder
    from .store import Bot, Store
    from .types import Chunk


INDEXED = "sentence_vectors"  # document metadata: the longest passage (in sentences) embedded when it was indexed


def current(metadata: dict | None, embed_sentences: bool, window: int = 1) -> bool:
    """Whether a stored document is indexed as `embed_sentences` and `window` ask: sync re-indexes one whose
    passages of up to `window` sentences were not embedded (a store indexed with single sentences only, stored as
    `True`, or before passage vectors existed gets them on the next sync)."""
    return not embed_sentences or int((metadata or {}).get(INDEXED) or 0) >= window


def chunk_sentences(text: str) -> tuple[list[str], int]:
    """A chunk's quotable sentences (instruction-like ones removed) and how many were removed."""
    clean, removed = g.strip_injections(text)
    return g.sentences(clean), removed


def unit_text(path: str, text: str) -> str:
    """What the embedder reads for a passage: its chunk's heading path, then the passage."""
    return f"{path}: {text}"


def unit_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def window_spans(count: int, window: int, smallest: int = 1) -> Iterator[tuple[int, int]]:
    """(start, size) of every run of `smallest`..`window` consecutive sentences among `count`, shorter runs first:
    the passages indexing embeds and the answer path scores (one definition, so the vectors answering looks up
    are the ones indexing kept)."""
    for size in range(smallest, window + 1):
        for start in range(count - size + 1):
            yield start, size


def window_text(sentences: Sequence[str], start: int, size: int) -> str:
    """The passage of `size` consecutive sentences from `start` (how answering and indexing both join them)."""
    return " ".join(sentences[start : start + size])


def sentence_units(title: str, heading: tuple[str, ...], text: str, window: int = 1) -> list[str]:
    """The embedder texts of a chunk's passages: every sentence, then every run of 2..`window` consecutive ones."""
    path = heading_path(title, heading)
    sents = chunk_sentences(text)[0]
    return [unit_text(path, window_text(sents, j, w)) for j, w in window_spans(len(sents), window)]


def index_rows(embedder: "Embedder", title: str, chunks: Sequence["Chunk"], batch_size: int = 64, window: int = 1
               ) -> list[tuple[str, str, np.ndarray]]:
    """(chunk id, key, vector) for every passage of up to `window` sentences of `chunks` (one document's), for the
    store to keep."""
    units = [(c.id, t) for c in chunks for t in dict.fromkeys(sentence_units(title, c.heading, c.text, window))]
    if not units:
        return []
    vectors = embedder.embed([t for _, t in units], batch_size=batch_size)
    return [(cid, unit_key(t), v) for (cid, t), v in zip(units, vectors)]


def vectors(store: "Store", bot: "Bot", embedder: "Embedder", texts: Sequence[str]) -> np.ndarray:
    """Vectors of passage texts, in order: those kept at indexing time from the store, the rest embedded now."""
    keys = [unit_key(t) for t in texts]
    kept = store.passage_vectors(bot, embedder.identity, keys) if texts else {}
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
