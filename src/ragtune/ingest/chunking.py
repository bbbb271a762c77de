"""Structure-aware chunking: each section (heading path) is cut into chunks bounded by the embedder's own
token count, preferring paragraph, then line, then sentence breaks, with a token overlap between
neighbours. Chunk ids are derived from bot, document path, position and text, so they are stable."""

from __future__ import annotations

import bisect
import hashlib
import re
from typing import Callable

from ..types import Chunk, LoadedDocument

OffsetsFn = Callable[[str], list[tuple[int, int]]]

_PARA = re.compile(r"\n\s*\n")
_LINE = re.compile(r"\n")
_SENT = re.compile(r"(?<=[.!?:;])\s+")


def chunk_id(bot: str, path: str, ordinal: int, text: str) -> str:
    return hashlib.sha256(f"{bot}\x00{path}\x00{ordinal}\x00{text}".encode()).hexdigest()[:24]


def heading_path(title: str, heading: tuple[str, ...]) -> str:
    """"Title > Section > Subsection", without repeating a first heading that is the title."""
    if heading and heading[0] == title:
        heading = heading[1:]
    return " > ".join(h for h in (title, *heading) if h)


def embedding_text(title: str, heading: tuple[str, ...], text: str) -> str:
    """What the embedder reads for a chunk: its place in the document, then its text."""
    path = heading_path(title, heading)
    return f"{path}\n{text}" if path else text


def _breaks(text: str) -> list[tuple[int, int]]:
    """Candidate cut positions (char offset where the next chunk may start, priority: lower is better)."""
    out = []
    for prio, pattern in enumerate((_PARA, _LINE, _SENT)):
        out.extend((m.end(), prio) for m in pattern.finditer(text))
    return sorted(out)


def split_text(text: str, offsets_fn: OffsetsFn, max_tokens: int, overlap: int) -> list[str]:
    """Cut `text` into pieces of at most `max_tokens` tokens (by `offsets_fn`), overlapping by ~`overlap`."""
    text = text.strip()
    if not text:
        return []
    offsets = offsets_fn(text)
    n = len(offsets)
    if n <= max_tokens:
        return [text]
    starts = [o[0] for o in offsets]
    breaks = _breaks(text)
    pieces: list[str] = []
    s = 0  # token index where the current piece starts
    while s < n:
        e = s + max_tokens  # exclusive token limit
        if e >= n:
            pieces.append(text[offsets[s][0] :].strip())
            break
        lo_char, hi_char = offsets[s + max_tokens // 2][0], offsets[e][0]
        # best break inside the second half of the window: lowest priority value, then latest position
        best = None
        for pos, prio in breaks:
            if lo_char < pos <= hi_char and (best is None or (prio, -pos) < (best[1], -best[0])):
                best = (pos, prio)
        cut_tok = bisect.bisect_left(starts, best[0]) if best else e
        cut_tok = max(cut_tok, s + 1)
        cut_char = offsets[cut_tok][0] if cut_tok < n else len(text)
        pieces.append(text[offsets[s][0] : cut_char].strip())
        # next piece starts `overlap` tokens back, snapped forward to a sentence/line start inside the overlap
        back = max(cut_tok - overlap, s + 1)
        snap = next((bisect.bisect_left(starts, p) for p, _ in breaks if offsets[back][0] <= p < cut_char), back)
        s = snap if overlap else cut_tok
    return [p for p in pieces if p]


def chunk_document(doc: LoadedDocument, bot: str, offsets_fn: OffsetsFn, max_tokens: int, overlap: int) -> list[Chunk]:
    """Chunks for one document; the heading path and title leave room inside the embedder's window."""
    chunks: list[Chunk] = []
    for section in doc.sections:
        header_tokens = len(offsets_fn(embedding_text(doc.title, section.heading, "")))
        budget = max(16, max_tokens - min(header_tokens, max_tokens // 3))
        for piece in split_text(section.text, offsets_fn, budget, overlap):
            ordinal = len(chunks)
            chunks.append(Chunk(chunk_id(bot, doc.path, ordinal, piece), ordinal, section.heading, piece,
                                len(offsets_fn(piece))))
    return chunks
