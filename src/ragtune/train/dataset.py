"""Training data for fine-tuning: facts read from a bot's chunks, several paraphrased questions per fact (by a
deterministic template method or by a generator), curated Q&A and tone examples from files, a held-out split,
RAFT examples (the relevant chunk among distractors), and JSONL export.

Knowledge injection only generalises to new phrasings when training sees many phrasings of each fact (Ovadia et
al. 2024), so every fact gets `paraphrases` questions; one phrasing of some facts is held out, so the held-out
loss measures exactly that generalisation (early stopping watches it)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import grounding as g
from ..errors import InputError
from ..ingest.chunking import heading_path
from ..ingest.loaders import JsonlError, jsonl_rows, qa_keys
from ..store import Bot, Store, StoredChunk

# The closed-book prompt: used for training and by the `finetune` strategy (the same text, or the adapter sees a
# prompt it never learned). Short on purpose: every prompt token is paid for at every training step.
FINETUNE_SYSTEM = "You are our customer-support assistant."
MIN_EXAMPLES = 8  # fewer training examples than this cannot teach anything measurable
MAX_FIELD_CHARS = 2000  # one curated question or answer; longer ones are refused with their line number
SYNTH_METHODS = ("template", "model", "auto")


# --------------------------------------------------------------------------- types
KnowledgeChunk = StoredChunk  # one chunk with its document's id, path and title, as the store lists it


@dataclass(frozen=True)
class DocumentRef:
    """Lineage of one document: what an adapter learned from (the store's id, path and content hash)."""

    id: int
    path: str
    content_hash: str


@dataclass(frozen=True)
class Fact:
    """One sentence of the knowledge base worth asking about, with the value a question would ask for."""

    id: str
    sentence: str  # as written in the chunk (Markdown stripped)
    answer: str  # what the model learns to say: the sentence, led by its section when it needs context
    value: str  # the asked-for span ("30 days", "$25", ...); "" for facts without one
    kind: str  # duration | money | percent | time | phone | email | count | name | text
    chunk: KnowledgeChunk


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    kind: str  # fact | topic | curated | style | raft
    group: str  # paraphrases of one fact share a group
    context: tuple[str, ...] = ()  # RAFT: numbered source blocks shown before the question
    documents: tuple[int, ...] = ()
    split: str = "train"  # train | held_out

    def messages(self, system: str) -> list[dict[str, str]]:
        """The chat messages the model sees; `system` is FINETUNE_SYSTEM, or the bot's RAG prompt for RAFT."""
        if self.context:
            user = "Sources:\n" + "\n\n".join(self.context) + f"\n\nQuestion: {self.question}"
        else:
            user = self.question
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["context"] = list(self.context)
        out["documents"] = list(self.documents)
        return out


@dataclass
class Dataset:
    train: list[Example]
    held_out: list[Example]
    documents: list[DocumentRef]  # every document a training example came from
    files: list[dict[str, str]] = field(default_factory=list)  # {"path", "kind", "sha256"}
    synthesis: dict[str, Any] = field(default_factory=dict)  # method chosen and the measurement behind it
    facts: int = 0

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for ex in self.train + self.held_out:
            h.update(json.dumps(ex.to_json(), sort_keys=True).encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for ex in self.train:
            kinds[ex.kind] = kinds.get(ex.kind, 0) + 1
        return {"train": len(self.train), "held_out": len(self.held_out), "facts": self.facts, "kinds": kinds,
                "documents": len(self.documents), "files": self.files, "synthesis": self.synthesis,
                "sha256": self.sha256}

    def export_jsonl(self, path: str | Path) -> Path:
        """One example per line ({question, answer, kind, group, context, documents, split}); the file can be
        edited and given back to `ragtune finetune --qa` (only question and answer are read from it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for ex in self.train + self.held_out:
                fh.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
        return path


# --------------------------------------------------------------------------- reading the knowledge base
def read_knowledge(store: Store, bot: Bot) -> tuple[list[KnowledgeChunk], list[DocumentRef]]:
    """Every chunk of the bot (in document order) and every document's lineage (id, path, content hash)."""
    docs = [DocumentRef(s.id, s.path, s.content_hash)
            for source in store.list_sources(bot) for s in store.document_states(bot, source).values()]
    chunks = store.list_chunks(bot)
    return chunks, sorted(docs, key=lambda d: d.path)


# --------------------------------------------------------------------------- facts
_VALUE_PATTERNS = [
    ("phone", r"\+?\d[\d ()-]{6,}\d"),
    ("email", r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"),
    ("money", r"[$€£]\s?\d(?:[\d,]*\d)?(?:\.\d+)?(?:\s*(?:per|a)\s+(?:month|year|bike|day))?"),
    ("percent", r"\b\d+(?:\.\d+)?\s?%"),
    ("time", r"\b\d{1,2}[:.]\d{2}(?:\s*(?:to|-|–)\s*\d{1,2}[:.]\d{2})?(?:\s*[A-Z]{2,4}\b)?"),
    ("duration", r"\b\d+(?:[.,]\d+)?(?:\s*(?:to|-|–|or)\s*\d+)?\s*(?:business\s+|working\s+|calendar\s+)?"
                 r"(?:minutes?|hours?|days?|weeks?|months?|years?)\b"),
    ("count", r"\b\d[\d,]*(?:\.\d+)?(?:\s*(?:to|-|–)\s*\d+)?\s+[a-z]+(?:\s+[a-z]+)?"),
    ("number", r"\b\d(?:[\d,.]*\d)?\b"),
]
_VALUES = [(kind, re.compile(p)) for kind, p in _VALUE_PATTERNS]
_PRONOUN_START = re.compile(r"^(it|this|they|these|that|those|there|here)\b", re.IGNORECASE)
_LABEL = re.compile(r"^[^:]{1,40}:\s")


def find_value(sentence: str) -> tuple[str, str]:
    """The span a question about this sentence would ask for, and its kind; ("", "name"/"text") if none."""
    for kind, pattern in _VALUES:
        m = pattern.search(sentence)
        if m:
            return m.group(0).strip(), kind
    names = [w for i, w in enumerate(sentence.split()) if i and w[:1].isupper() and w.lower() not in g.STOPWORDS]
    return ("", "name") if names else ("", "text")


def extract_facts(chunks: Sequence[KnowledgeChunk], min_words: int = 5) -> list[Fact]:
    """Sentences that state something a customer could ask about: those holding a value (number, price,
    duration, time, phone, e-mail) or a name. Instruction-like text (prompt injection) is never learned."""
    facts, seen = [], set()
    for chunk in chunks:
        clean, _ = g.strip_injections(chunk.text)
        section = chunk.heading[-1] if chunk.heading and chunk.heading[-1] != chunk.title else chunk.title
        for sentence in g.sentences(clean):
            sentence = " ".join(sentence.split())
            if len(sentence.split()) < min_words and not _LABEL.match(sentence):
                continue
            if g.is_injection(sentence) or sentence.startswith("#"):
                continue
            value, kind = find_value(sentence)
            if kind == "text":
                continue
            key = sentence.lower()
            if key in seen:  # chunk overlap repeats sentences
                continue
            seen.add(key)
            needs_context = bool(_PRONOUN_START.match(sentence)) or bool(_LABEL.match(sentence)) \
                or len(sentence.split()) < 8
            answer = f"{section}: {sentence}" if needs_context and section else sentence
            fid = hashlib.sha256(f"{chunk.chunk_id}\x00{sentence}".encode()).hexdigest()[:12]
            facts.append(Fact(fid, sentence, answer, value, kind, chunk))
    return facts


# --------------------------------------------------------------------------- template questions
# Generic support-domain synonyms (written for any help centre, not for one question set): a question phrased
# with the other word should still reach the fact.
SYNONYMS = {
    "return": ["send back"], "refund": ["money back", "reimbursement"], "deliver": ["ship"],
    "delivery": ["shipping"], "subscription": ["plan", "membership"], "cancel": ["end", "stop"],
    "price": ["cost"], "fee": ["charge", "cost"], "pause": ["freeze", "suspend"], "customer": ["client"],
    "business days": ["working days"], "phone": ["telephone", "call"], "warranty": ["guarantee"],
    "discount": ["reduction", "money off"], "minimum": ["smallest", "at least"], "maximum": ["longest", "most"],
    "bike": ["e-bike", "bicycle"], "account": ["profile"], "collect": ["pick up"], "repair": ["fix"],
    "support": ["customer service", "help"], "email": ["e-mail"], "month": ["monthly"], "company": ["business"],
    "stolen": ["theft"], "charged": ["billed"], "expire": ["run out"], "valid": ["usable"],
}
_WH = {
    "duration": ["How long", "How many {unit}", "Within what time", "What is the time limit:"],
    "money": ["How much", "What does it cost:", "What is the price:", "How much do I pay:"],
    "percent": ["What percentage", "How much off", "How big is the discount:"],
    "time": ["What time", "Until when", "What are the hours:"],
    "phone": ["What is the phone number:", "Which number do I call:"],
    "email": ["What is the e-mail address:", "Where do I write:"],
    "count": ["How many", "What number", "How many exactly:"],
    "number": ["What number", "Which number", "What is the number:"],
    "name": ["What", "Tell me", "What do you say:", "Is it true:"],
}
_STEMS = ["", "Can you tell me: ", "I'd like to know: ", "Quick question: ", "Please tell me: "]
_PERSON = re.compile(r"\b(you are|yours|your|you|we are|we|our|us)\b", re.IGNORECASE)
_SUBJECT_BEFORE = re.compile(r"(^|[,;:]|\b(if|when|once|and|or|but|that|can|do|will|should|must|before|after|until|"
                             r"unless|because|so))$", re.IGNORECASE)


def _unit(value: str) -> str:
    m = re.search(r"(business days|working days|minutes|hours|days|weeks|months|years|minute|hour|day|week|month|year)",
                  value)
    word = m.group(1) if m else "days"
    return word if word.endswith("s") else word + "s"


def _first_person(text: str) -> str:
    """The help centre's "you"/"we" turned into the customer's "I"/"you", in one pass."""
    def swap(m: re.Match) -> str:
        w = m.group(1).lower()
        if w == "you":  # subject ("you can") or object ("we send you")
            return "I" if _SUBJECT_BEFORE.search(text[: m.start()].rstrip()) else "me"
        return {"you are": "I am", "yours": "mine", "your": "my", "we are": "you are", "we": "you", "our": "your",
                "us": "you"}[w]
    return _PERSON.sub(swap, text)


def _keywords(text: str, limit: int = 7) -> list[str]:
    out: list[str] = []
    for w in g.words(text):
        if w in g.STOPWORDS or len(w) < 3 or w.isdigit() or w in out:
            continue
        out.append(w)
    return out[:limit]


def _synonymise(text: str, rng: random.Random) -> str:
    for word, alternatives in SYNONYMS.items():
        if re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) and rng.random() < 0.7:
            text = re.sub(rf"\b{re.escape(word)}\b", rng.choice(alternatives), text, count=1, flags=re.IGNORECASE)
    return text


def template_questions(fact: Fact, n: int) -> list[str]:
    """`n` distinct questions about `fact`, deterministic (seeded by the fact id): the asked-for value is
    replaced by a question word, the sentence turned to the customer's point of view, its topic (document and
    section) named, and support-domain synonyms swapped in, so the phrasings vary in words and in form."""
    rng = random.Random(fact.id)
    c = fact.chunk
    section = c.heading[-1] if c.heading and c.heading[-1] != c.title else ""
    topic = f"{c.title.lower()}, {section.lower()}" if section else c.title.lower()
    whs = [w.replace("{unit}", _unit(fact.value)) for w in _WH.get(fact.kind, _WH["name"])]
    body = fact.sentence.rstrip(".!?")
    if fact.value:
        body = body.replace(fact.value, "…", 1)
    clause = _first_person(body)
    keys = _keywords(body)
    candidates = [
        f"{whs[0]} — {clause}?",
        f"{whs[1 % len(whs)]} for {section.lower() or c.title.lower()}?",
        f"{rng.choice(_STEMS)}{whs[2 % len(whs)]} {_synonymise(' '.join(keys[:5]), rng)}?",
        f"{_synonymise(clause, rng)} — {whs[3 % len(whs)].lower()}?",
        f"About {topic}: {whs[0].lower()} {' '.join(keys[:4])}?",
        f"{rng.choice(_STEMS[1:])}{' '.join(_synonymise(' '.join(keys), rng).split()[:6])} ({section.lower() or c.title.lower()})?",
        f"{whs[rng.randrange(len(whs))]} {' '.join(rng.sample(keys, min(4, len(keys))))}?",
    ]
    out: list[str] = []
    for q in candidates:
        q = " ".join(q.replace(" ?", "?").split())
        q = q[0].upper() + q[1:] if q else q
        if q and q.lower() not in {o.lower() for o in out} and (not fact.value or fact.value not in q):
            out.append(q)
    return out[:n]


def topic_example(chunk: KnowledgeChunk, max_words: int = 24) -> Example | None:
    """"What do you say about <section>?" answered with the section's opening sentences: ties each section's
    facts to its name."""
    clean, _ = g.strip_injections(chunk.text)
    sents = [s for s in g.sentences(clean) if not g.is_injection(s)]
    if not sents:
        return None
    answer, words = [], 0
    for s in sents:
        if answer and words + len(s.split()) > max_words:
            break
        answer.append(s)
        words += len(s.split())
    where = heading_path(chunk.title, chunk.heading)
    return Example(f"What should I know about {where.lower().replace(' > ', ': ')}?", " ".join(answer), "topic",
                   f"topic:{chunk.chunk_id}", documents=(chunk.document_id,))


# --------------------------------------------------------------------------- generator questions
_QUESTION_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*(.+?\?)\s*$")


def model_questions(generator, text: str, n: int, answer: str = "") -> list[str]:
    """Questions about `text` written by a generator (the local model, or a stronger OpenAI-compatible endpoint
    when that is the configured generator). Lines that are not questions, or that give `answer` away, are
    dropped."""
    prompt = (f"Text: {text}\n\nWrite {n} different questions that a customer could ask and that this text "
              "answers. Vary the wording. One question per line, nothing else.")
    text = generator.generate([{"role": "system", "content": "You write customer questions."},
                               {"role": "user", "content": prompt}], max_tokens=24 * n, temperature=0.0)
    out: list[str] = []
    for line in text.splitlines():
        m = _QUESTION_LINE.match(line)
        if not m:
            continue
        q = " ".join(m.group(1).split())
        if q.lower() not in {o.lower() for o in out} and (not answer or answer not in q):
            out.append(q)
    return out[:n]


def score_questions(store: Store, bot: Bot, fact_questions: Sequence[tuple[Fact, list[str]]], n: int) -> dict:
    """How good a set of synthesised questions is, without a model: `valid` (a question of 4–30 words that does
    not contain its answer), `specific` (BM25 over the bot ranks the fact's own chunk in the top 3 for it, so the
    question is about that fact), `coverage` (questions made / asked for) and `diversity` (1 − mean word overlap
    between a fact's questions). quality = mean(valid and specific) × coverage."""
    made = asked = good = 0
    overlaps = []
    for fact, questions in fact_questions:
        asked += n
        made += len(questions)
        for q in questions:
            valid = q.endswith("?") and 4 <= len(q.split()) <= 30 and (not fact.value or fact.value not in q)
            top = [cid for cid, _ in store.search_lexical(bot, q, 3)] if valid else []
            good += int(valid and fact.chunk.chunk_id in top)
        sets = [set(g.content_terms(q)) for q in questions]
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                union = sets[i] | sets[j]
                overlaps.append(len(sets[i] & sets[j]) / len(union) if union else 1.0)
    specific = good / made if made else 0.0
    coverage = made / asked if asked else 0.0
    return {"questions": made, "valid_and_specific": round(specific, 3), "coverage": round(coverage, 3),
            "diversity": round(1 - sum(overlaps) / len(overlaps), 3) if overlaps else 0.0,
            "quality": round(specific * coverage, 3)}


def compare_synthesis(store: Store, bot: Bot, facts: Sequence[Fact], generator, n: int, sample: int = 12,
                      seed: int = 0) -> dict[str, Any]:
    """Measure both methods on the same sample of facts; returns {"template": scores, "model": scores, "best"}."""
    rng = random.Random(seed)
    picked = rng.sample(list(facts), min(sample, len(facts)))
    out: dict[str, Any] = {"sample": len(picked)}
    out["template"] = score_questions(store, bot, [(f, template_questions(f, n)) for f in picked], n)
    if generator is not None:
        import time

        t0 = time.perf_counter()
        written = [(f, model_questions(generator, f.answer, n, f.value)) for f in picked]
        out["model"] = score_questions(store, bot, written, n)
        out["model"]["seconds"] = round(time.perf_counter() - t0, 1)
        out["model"]["generator"] = getattr(generator, "name", "")
    best = max((m for m in ("template", "model") if m in out), key=lambda m: out[m]["quality"])
    out["best"] = best
    return out


# --------------------------------------------------------------------------- curated files
def load_pairs(path: str | Path, kind: str = "qa") -> list[tuple[str, str]]:
    """Question/answer pairs from a CSV (header with question and answer columns) or JSONL file ({"question",
    "answer"} per line; "prompt"/"response" also accepted). InputError names the file, line and problem."""
    p = Path(path)
    what = "tone/style" if kind == "style" else "Q&A"
    if not p.is_file():
        raise InputError(f"{what} file {path} does not exist")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{what} file {path} is not UTF-8 text") from None
    if not text.strip():
        raise InputError(f"{what} file {path} is empty: it needs question/answer pairs (CSV with a header "
                         "'question,answer', or JSONL lines {\"question\": ..., \"answer\": ...})")
    suffix = p.suffix.lower()
    looks_json = text.lstrip().startswith("{")
    pairs = _jsonl_pairs(text, path) if suffix in (".jsonl", ".json", ".ndjson") or looks_json else _csv_pairs(text, path)
    if not pairs:
        raise InputError(f"{what} file {path} has no question/answer pairs")
    return pairs


def _check_pair(q: Any, a: Any, where: str) -> tuple[str, str]:
    if not isinstance(q, str) or not q.strip():
        raise InputError(f"{where}: the question is missing or empty")
    if not isinstance(a, str) or not a.strip():
        raise InputError(f"{where}: the answer is missing or empty")
    if len(q) > MAX_FIELD_CHARS or len(a) > MAX_FIELD_CHARS:
        raise InputError(f"{where}: a question or answer is longer than {MAX_FIELD_CHARS} characters")
    return " ".join(q.split()), a.strip()


def _jsonl_pairs(text: str, path) -> list[tuple[str, str]]:
    pairs = []
    try:
        for n, row in jsonl_rows(text):
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: each line must be an object with \"question\" and \"answer\"")
            q = row.get("question", row.get("prompt"))
            a = row.get("answer", row.get("response"))
            pairs.append(_check_pair(q, a, f"{path}:{n}"))
    except JsonlError as exc:
        raise InputError(f"{path}:{exc.line}: not valid JSON ({exc.msg})") from None
    return pairs


def _csv_pairs(text: str, path) -> list[tuple[str, str]]:
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InputError(f"{path}: not valid CSV ({exc})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]] if rows else []
    qi, ai = qa_keys({name: i for i, name in reversed(list(enumerate(header)))})  # the first of equal names wins
    if qi is None or ai is None:
        raise InputError(f"{path}:1: a CSV Q&A file needs a header row with 'question' and 'answer' columns, "
                         f"found {rows[0] if rows else []}")
    pairs = []
    for n, row in enumerate(rows[1:], 2):
        if len(row) <= max(qi, ai):
            raise InputError(f"{path}:{n}: expected {len(header)} columns, found {len(row)}")
        pairs.append(_check_pair(row[qi], row[ai], f"{path}:{n}"))
    return pairs


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- RAFT
def source_block(n: int, chunk: KnowledgeChunk) -> str:
    """A numbered source exactly as the rag strategy packs it into its prompt."""
    clean, _ = g.strip_injections(chunk.text)
    return f"[{n}] {heading_path(chunk.title, chunk.heading)}\n{clean.strip()}"


def raft_examples(facts: Sequence[tuple[Fact, str]], chunks: Sequence[KnowledgeChunk], seed: int = 0,
                  max_distractors: int = 3, distractor_only_share: float = 0.2) -> list[Example]:
    """RAFT (Zhang et al. 2024): each (fact, question) becomes an example whose sources hold the fact's chunk among
    1..max_distractors chunks of other documents, answered by quoting the evidence with its [n] marker; in a
    `distractor_only_share` of examples the fact's chunk is left out and the answer comes from memory without a
    citation, so the adapter learns both to use the right source and not to lean on noise."""
    rng = random.Random(seed)
    out = []
    for fact, question in facts:
        others = [c for c in chunks if c.document_id != fact.chunk.document_id]
        if not others:
            continue
        distractors = rng.sample(others, min(len(others), rng.randint(1, max_distractors)))
        oracle = rng.random() >= distractor_only_share
        picked = distractors + ([fact.chunk] if oracle else [])
        rng.shuffle(picked)
        blocks = tuple(source_block(i + 1, c) for i, c in enumerate(picked))
        if oracle:
            n = picked.index(fact.chunk) + 1
            answer = f"{fact.sentence} [{n}]"
        else:
            answer = fact.answer
        docs = tuple(sorted({c.document_id for c in picked}))
        out.append(Example(question, answer, "raft", f"raft:{fact.id}", blocks, docs))
    return out


# --------------------------------------------------------------------------- building the dataset
def held_out_split(examples: Sequence[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out one phrasing of a `share` of the facts that have at least three: the fact stays in training (so
    held-out loss measures generalisation to a new phrasing, not recall of an unseen fact)."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        if ex.kind == "fact":
            groups.setdefault(ex.group, []).append(i)
    eligible = sorted(k for k, idx in groups.items() if len(idx) >= 3)
    rng = random.Random(seed)
    chosen = rng.sample(eligible, min(len(eligible), max(1, round(share * len(groups))))) if eligible and share else []
    held = {groups[k][-1] for k in chosen}
    train = [ex for i, ex in enumerate(examples) if i not in held]
    out = [Example(**{**asdict(examples[i]), "split": "held_out"}) for i in sorted(held)]
    return train, out


def build_dataset(store: Store, bot: Bot, *, qa_files: Iterable[str | Path] = (), style_files: Iterable[str | Path] = (),
                  use_kb: bool = True, paraphrases: int = 4, synth: str = "template", generator=None,
                  raft: bool = False, raft_max: int = 64, held_out_share: float = 0.12, seed: int = 0,
                  max_facts: int = 0) -> Dataset:
    """Everything `ragtune finetune` trains on. InputError when there is too little to train on."""
    if synth not in SYNTH_METHODS:
        raise InputError(f"unknown synthesis method {synth!r}; valid values: {', '.join(SYNTH_METHODS)}")
    examples: list[Example] = []
    files: list[dict[str, str]] = []
    for kind, paths in (("curated", qa_files), ("style", style_files)):
        for path in paths:
            pairs = load_pairs(path, "style" if kind == "style" else "qa")
            files.append({"path": str(Path(path).resolve()), "kind": kind, "sha256": file_sha256(path),
                          "pairs": len(pairs)})
            examples += [Example(q, a, kind, f"{kind}:{hashlib.sha256(q.encode()).hexdigest()[:12]}") for q, a in pairs]
    chunks, docs = read_knowledge(store, bot) if use_kb else ([], [])
    facts = extract_facts(chunks)
    if max_facts:
        facts = facts[:max_facts]
    synthesis: dict[str, Any] = {"method": synth if facts else "none", "paraphrases": paraphrases}
    if facts and synth != "template":
        if generator is None:
            raise InputError("question synthesis by model needs a generator")
        if synth == "auto":
            measured = compare_synthesis(store, bot, facts, generator, paraphrases, seed=seed)
            synthesis.update(measured=measured, method=measured["best"])
    method = synthesis["method"]
    fact_questions: list[tuple[Fact, list[str]]] = []
    for fact in facts:
        # facts holding a value (price, duration, number, contact) get every phrasing: a wrong value is the costly
        # error and the one the base model cannot guess; facts without one get half
        n = paraphrases if fact.value else max(2, paraphrases // 2)
        qs = model_questions(generator, fact.answer, n, fact.value) if method == "model" else []
        if len(qs) < n:  # the template method fills what the model did not write
            qs += [q for q in template_questions(fact, n) if q not in qs][: n - len(qs)]
        fact_questions.append((fact, qs))
        examples += [Example(q, fact.answer, "fact", f"fact:{fact.id}", documents=(fact.chunk.document_id,))
                     for q in qs]
    seen_sections = set()
    for chunk in chunks:
        key = (chunk.document_id, chunk.heading)
        if key in seen_sections or not any(f.chunk.chunk_id == chunk.chunk_id for f in facts):
            continue
        seen_sections.add(key)
        ex = topic_example(chunk)
        if ex is not None:
            examples.append(ex)
    if raft and facts:
        rng = random.Random(seed + 1)
        pool = [(f, qs[0]) for f, qs in fact_questions if qs]
        pool = rng.sample(pool, min(raft_max, len(pool)))
        examples += raft_examples(pool, chunks, seed=seed)
    if not examples:
        raise InputError("nothing to train on: the bot has no documents with facts and no --qa file was given; "
                         "run `ragtune ingest` first or pass --qa FILE")
    if len(examples) < MIN_EXAMPLES:
        raise InputError(f"too little to train on: {len(examples)} examples (at least {MIN_EXAMPLES} are needed); "
                         "add documents with `ragtune ingest` or question/answer pairs with --qa FILE")
    train, held = held_out_split(examples, held_out_share, seed)
    used = {d for ex in examples for d in ex.documents}
    return Dataset(train, held, [d for d in docs if d.id in used], files, synthesis, facts=len(facts))
