"""Hybrid retrieval over a store: BM25 (FTS5) and dense candidates fused by reciprocal-rank fusion."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .models.embedders import Embedder
from .settings import Settings
from .store import Bot, Store
from .types import Hit


def rrf(rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion: score(d) = Σ w_i / (k + rank_i(d)), ranks from 1."""
    scores: dict[str, float] = {}
    for i, ranking in enumerate(rankings):
        w = weights[i] if weights else 1.0
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


@dataclass
class Retrieval:
    hits: list[Hit]
    ms: float
    lexical: list[tuple[str, float]] = field(default_factory=list)
    dense: list[tuple[str, float]] = field(default_factory=list)


def embedded_with_other(store: Store, bot: Bot, identity: str) -> str | None:
    """The embedder a document of the bot was embedded with when it is not `identity` (dense search finds no
    vectors of the new one until `ragtune sync` re-embeds), else None."""
    for source in store.list_sources(bot):
        for state in store.document_states(bot, source).values():
            if state.embedder != identity:
                return state.embedder
    return None


class Retriever:
    """Searches one bot. The embedder is only touched when dense retrieval is used."""

    def __init__(self, store: Store, settings: Settings, embedder: Embedder | None) -> None:
        self.store, self.settings, self.embedder = store, settings, embedder

    def search(self, bot: Bot, query: str, k: int | None = None, mode: str | None = None,
               vector: np.ndarray | None = None) -> Retrieval:
        """`vector`: the query's embedding when the caller already has it."""
        started = time.perf_counter()
        k = k or self.settings.top_k
        mode = mode or self.settings.retrieval
        n = max(self.settings.candidates, k)
        lexical = self.store.search_lexical(bot, query, n) if mode in ("hybrid", "bm25") else []
        dense = []
        if mode in ("hybrid", "dense") and self.embedder is not None:
            if vector is None:
                vector = self.embedder.embed_query(query)
            dense = self.store.search_dense(bot, vector, n, self.embedder.identity)
        if mode == "bm25":
            scored = lexical[:k]
        elif mode == "dense":
            scored = dense[:k]
        else:
            scored = rrf([[c for c, _ in lexical], [c for c, _ in dense]], self.settings.rrf_k)[:k]
        hits = self.store.get_hits(bot, scored)
        return Retrieval(hits, (time.perf_counter() - started) * 1000, lexical, dense)
