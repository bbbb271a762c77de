"""Small frozen result types shared by every layer: documents and chunks on the way in,
hits, citations and answers on the way out, and the sync report."""

from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Any


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (e.g. ("Billing", "Refunds"))."""

    heading: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class LoadedDocument:
    """What a loader makes of one file or page, before chunking."""

    path: str  # file path or URL: the citation's `source`
    title: str
    sections: tuple[Section, ...]
    content_hash: str  # sha256 of the raw bytes
    mtime: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    id: str  # stable: derived from bot, document path, position and text
    ordinal: int
    heading: tuple[str, ...]
    text: str
    tokens: int


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with the document facts a citation needs."""

    chunk_id: str
    score: float
    text: str
    heading: tuple[str, ...]
    source: str
    title: str
    document_id: int


@dataclass(frozen=True)
class Citation:
    source: str
    title: str
    chunk_id: str
    quote: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    answer: str
    abstained: bool
    citations: tuple[Citation, ...]
    strategy: str
    model: str
    timings_ms: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {
            "answer": self.answer,
            "abstained": self.abstained,
            "citations": [c.to_json() for c in self.citations],
            "strategy": self.strategy,
            "model": self.model,
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }
        out.update(self.extra)
        return out


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    chunks_embedded: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "failed": list(self.failed),
            "seconds": round(self.seconds, 3),
            "chunks_embedded": self.chunks_embedded,
        }
