"""Evidence checks that do not trust the model: sentence splitting, lexical support of a sentence by evidence,
question coverage by retrieved text, prompt-injection detection in retrieved text, and best-sentence extraction."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from .store.sqlite import STOPWORDS

_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9`])")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|[\s:|-]*$")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.']*[A-Za-z0-9]|[A-Za-z0-9]")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_NEGATION = re.compile(r"\b(no|not|never|cannot|nobody|nothing|none)\b|n't\b", re.IGNORECASE)
_MD = re.compile(r"^\s*(?:[-*+>#]+|\d+[.)])\s+|[*`]+|(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])")
CODE_ATTACH_CHARS = 240  # a code block at most this long is read with the sentence before it

# Instruction-like text aimed at the assistant. Retrieved text is data: such sentences never reach the prompt
# and are never quoted as an answer.
_INJECTION = re.compile(
    r"(ignore|disregard|forget|override)\s+(all\s+|any\s+)?(the\s+)?(previous|prior|above|earlier|your|system)\s+"
    r"(instructions?|prompts?|rules?|messages?)"
    r"|\b(note|message|instructions?)\s+(to|for)\s+(ai|the\s+ai|assistants?|language\s+models?|llms?|chat\s*bots?)\b"
    r"|\byou\s+are\s+now\b|\bsystem\s+prompt\b|\bnew\s+instructions?\s*:|\bas\s+an\s+ai\s+(assistant|model)\b",
    re.IGNORECASE,
)

# Words that carry no question-specific meaning in support questions (beyond the stopword list).
_QUESTION_WORDS = frozenset(
    "what which who whom whose when where why how many much does do did can could would should shall may might "
    "is are was were will tell know please need want get give long often anything something there".split()
)


@functools.lru_cache(maxsize=1)
def _stemmer():
    try:
        import Stemmer  # PyStemmer: Snowball, as bm25s uses

        return Stemmer.Stemmer("english").stemWord
    except ImportError:  # pragma: no cover - PyStemmer is a core dependency
        return lambda w: w


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    return _stemmer()(word)


def words(text: str) -> list[str]:
    return [w.lower().strip(".'-") for w in _WORD.findall(text)]


def content_terms(text: str, drop_question_words: bool = False) -> list[str]:
    """Stemmed content words (stopwords removed), in order, duplicates kept."""
    out = []
    for w in words(text):
        if not w or w in STOPWORDS or (drop_question_words and w in _QUESTION_WORDS):
            continue
        out.append(stem(w))
    return out


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def sentences(text: str) -> list[str]:
    """Split text (plain or Markdown) into sentences, list items and table rows; Markdown markers stripped, very
    short fragments dropped. Hard-wrapped paragraph lines are joined first, and a short code block is read with
    the sentence before it ("…you can do so with: poetry install --only main"): in documentation the command
    or setting a sentence introduces is usually the answer."""
    out: list[str] = []
    with_code: set[int] = set()  # indexes of sentences that already carry a code block
    for kind, block in _blocks(text):
        if kind == "code":
            code = "; ".join(ln.strip() for ln in block.split("\n") if ln.strip())
            if not re.search(r"[A-Za-z0-9]", code):
                continue
            if out and len(code) <= CODE_ATTACH_CHARS and len(out) - 1 not in with_code:
                out[-1] = f"{out[-1]} {code}"
            else:
                out.append(code)
            with_code.add(len(out) - 1)
            continue
        for part in (_SENT_END.split(block) if kind == "prose" else [block]):
            s = _MD.sub("", part or "").strip()
            if len(s) >= 3 and re.search(r"[A-Za-z0-9]", s):
                out.append(s)
    return out


def _blocks(text: str) -> Iterator[tuple[str, str]]:
    """("prose" | "item" | "row" | "code", text) blocks in order: paragraphs with their wrapped lines joined,
    list items with their continuation lines, table rows (cells joined by " | "), fenced code verbatim."""
    para: list[str] = []
    fence: str | None = None
    code: list[str] = []
    kind = "prose"

    def flush():
        nonlocal para
        if para:
            yield kind, " ".join(para)
            para = []

    for line in text.split("\n"):
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().lstrip(fence[0]):
                yield "code", "\n".join(code)
                fence, code = None, []
            else:
                code.append(line)
            continue
        m = _FENCE.match(line)
        if m:
            yield from flush()
            fence = m.group(1)
            continue
        stripped = line.strip()
        if not stripped:
            yield from flush()
            continue
        if stripped.startswith("|"):
            yield from flush()
            if not _TABLE_RULE.match(stripped):
                yield "row", " | ".join(c.strip() for c in stripped.strip("|").split("|") if c.strip())
            continue
        if _ITEM.match(line) or stripped.startswith("#"):
            yield from flush()
            kind = "item"
            para = [stripped]
            continue
        if not para:
            kind = "prose"
        para.append(stripped)
    if fence is not None and code:
        yield "code", "\n".join(code)
    yield from flush()


def is_injection(text: str) -> bool:
    return bool(_INJECTION.search(text))


def strip_injections(text: str) -> tuple[str, int]:
    """Remove instruction-like sentences from retrieved text; returns (clean text, number removed)."""
    parts = re.split(r"(?<=[.!?])\s+|\n", text)
    kept = [p for p in parts if not is_injection(p)]
    return ("\n".join(kept) if len(kept) != len(parts) else text), len(parts) - len(kept)


def support(sentence: str, evidence: Iterable[str]) -> float:
    """How well the evidence supports one sentence: the best share of the sentence's content terms found in
    one evidence sentence whose words hold every number and name the sentence states (a sentence that puts
    another name in a retrieved sentence's words is not supported by it) and that negates when the sentence
    does ("No, the dev group can't include other groups" is not supported by a sentence saying it can)."""
    terms = set(content_terms(sentence))
    facts = _facts(sentence)
    if not terms:
        return 1.0
    negated = bool(_NEGATION.search(sentence))
    best = 0.0
    for ev in evidence:
        ev_terms = set(content_terms(ev))
        if facts and not facts <= (numbers(ev) | set(words(ev))):
            continue
        if negated != bool(_NEGATION.search(ev)):
            continue
        best = max(best, len(terms & ev_terms) / len(terms))
    return best


@dataclass(frozen=True)
class Groundedness:
    share: float  # share of answer sentences supported
    supported: tuple[str, ...]
    unsupported: tuple[str, ...]


def groundedness(answer: str, evidence_texts: Sequence[str], threshold: float = 0.6) -> Groundedness:
    ev = [s for t in evidence_texts for s in sentences(t)]
    sup, unsup = [], []
    for s in sentences(answer):
        (sup if support(s, ev) >= threshold else unsup).append(s)
    total = len(sup) + len(unsup)
    return Groundedness(len(sup) / total if total else 0.0, tuple(sup), tuple(unsup))


def coverage(question: str, text: str, idf: dict[str, float] | None = None) -> float:
    """IDF-weighted share of the question's content terms that occur in `text` (1.0 = all of them)."""
    q = set(content_terms(question, drop_question_words=True))
    if not q:
        return 0.0
    t = set(content_terms(text))
    weight = (lambda term: idf.get(term, max(idf.values(), default=1.0))) if idf else (lambda term: 1.0)
    total = sum(weight(term) for term in q)
    return sum(weight(term) for term in q & t) / total if total else 0.0


def idf_from(texts: Sequence[str]) -> dict[str, float]:
    """Smoothed IDF over a set of texts (the retrieved candidates stand in for the corpus)."""
    df: dict[str, int] = {}
    for t in texts:
        for term in set(content_terms(t)):
            df[term] = df.get(term, 0) + 1
    n = len(texts)
    return {term: math.log((n + 1) / (c + 0.5)) + 1.0 for term, c in df.items()}


def _facts(text: str, initial: bool = False) -> set[str]:
    """Numbers and capitalised words that are not sentence-initial (with `initial`, the first word too unless it
    is a stopword): the parts where two versions of a fact differ."""
    out = set(numbers(text))
    tokens = text.split()
    for i, tok in enumerate(tokens):
        word = tok.strip(".,;:!?()[]{}\"'“”‘’«»…*_`")
        if (i > 0 or initial) and word[:1].isupper() and word.lower() not in STOPWORDS:
            out.add(word.lower())
    return out


def conflict(a: str, b: str, min_overlap: float = 0.5) -> bool:
    """Two passages that say mostly the same thing (at least `min_overlap` of their content terms shared, over
    both passages' terms) but name different facts (numbers, names) disagree. Measured over the union, not the
    shorter passage: a short sentence whose words recur in a long passage of another page is not a rewrite."""
    ta, tb = set(content_terms(a)), set(content_terms(b))
    if not ta or not tb:
        return False
    if len(ta & tb) / len(ta | tb) < min_overlap:
        return False
    fa, fb = _facts(a, initial=True), _facts(b, initial=True)  # "Norway set the record" vs "U.S. set the record"
    return bool(fa - fb) and bool(fb - fa)


# Expected answer types (classic QA answer-type matching): a question pattern, and what a passage that
# answers it usually contains. Used as a small bonus when picking evidence, never to reject it.
_ANSWER_TYPES = [
    (r"\bhow (long|soon|quickly)\b|\bhow many (days|hours|weeks|months|minutes|years)\b|\bwhen will\b",
     r"\b\d+(?:[.,]\d+)?\s*(?:to\s+\d+\s*)?(?:business\s+|working\s+)?(?:minutes?|hours?|days?|weeks?|months?|years?)\b"),
    (r"\bhow much\b|\bprice\b|\bcost\b|\bfee\b|\bcharge\b|\bdiscount\b|\bpercent",
     r"[$€£]\s?\d|\b\d+(?:\.\d+)?\s?%|\b\d+(?:\.\d+)?\s?(?:dollars|euros|usd|eur|gbp)\b"),
    (r"\bwhat time\b|\buntil when\b|\bopening hours\b|\b(open|reach|available)\b.*\b(until|till)\b",
     r"\b\d{1,2}[:.]\d{2}\b|\b\d{1,2}\s?(?:am|pm)\b"),
    (r"\bversion\b", r"\b\d+\.\d+"),
    (r"\bcommand\b|\bhow (?:do|can|should) i (?:run|install|add|activate|create|remove|update|build|publish|export)\b",
     r"`[^`]+`|^\s*\$?\s*[a-z][\w.-]*\s+[a-z-]+"),
    (r"\bsetting\b|\boption\b|\bconfig(?:uration)?\s+(?:key|value)\b", r"\b[a-z][\w-]*\.[a-z][\w.-]*\b|`[^`]+`"),
    (r"\bwhere\b", r"[~/][\w./ -]+|\b(?:at|in|on)\s+(?:the\s+)?(?-i:[A-Z])"),  # a path, or "in/at/on" + a Name
    (r"\b(phone|call|telephone)\b", r"\+?\d[\d\s().-]{6,}\d"),
    (r"\be-?mail\b", r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"),
]
_ANSWER_TYPES_C = [(re.compile(q, re.IGNORECASE), re.compile(a, re.IGNORECASE | re.MULTILINE)) for q, a in _ANSWER_TYPES]


def asks_for_value(question: str) -> bool:
    """True when the question asks for a kind of value `answer_type_match` knows (duration, price, time,
    version, command, setting, place, phone, email)."""
    return any(q.search(question) for q, _ in _ANSWER_TYPES_C)


def answer_type_match(question: str, passage: str) -> bool:
    """True when the question asks for a kind of value (duration, price, time, version, command, setting,
    place, phone, email) and the passage contains one."""
    return any(q.search(question) and a.search(passage) for q, a in _ANSWER_TYPES_C)
