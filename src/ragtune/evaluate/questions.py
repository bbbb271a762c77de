"""Question sets for `ragtune compare`: a user's file checked against the documents it names, or a set generated
from the knowledge base — answerable questions about facts that hold a value, plus unanswerable ones about things
no document mentions — kept disjoint from the fine-tuning data (no question is a training question)."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import grounding as g
from ..errors import InputError
from ..store import Bot, Store
from .answers_bench import load_questions

# Questions a support bot's documents rarely answer, each with the words that must be absent from every chunk for
# it to count as unanswerable here (a knowledge base that does mention its CEO keeps that question out).
UNANSWERABLE = (
    ("Who is the CEO of the company?", ("ceo", "chief")),
    ("In which year was the company founded?", ("founded", "founder")),
    ("What is the street address of your headquarters?", ("headquarters", "hq")),
    ("How many employees work at the company?", ("employees", "staff")),
    ("What is the company's stock ticker symbol?", ("ticker", "stock", "shares")),
    ("What is the Wi-Fi password in your showroom?", ("wi-fi", "wifi", "password", "showroom")),
    ("How many weeks of parental leave do your employees get?", ("parental", "leave")),
    ("What is the name of the office dog?", ("dog", "pet")),
    ("Which charity did the company donate to last year?", ("charity", "donate", "donation")),
    ("Do you sponsor a professional football team?", ("sponsor", "football")),
    ("What was the company's revenue last year?", ("revenue", "turnover")),
    ("Which programming language is your app written in?", ("programming", "language", "kotlin", "swift")),
)

# Question openings per kind of value asked for; deliberately not the training templates' wording.
_ASK = {
    "duration": "how long is it",
    "money": "how much is it",
    "percent": "what percentage applies",
    "time": "at what time",
    "phone": "what number should I call",
    "email": "what address should I write to",
    "count": "how many",
}
_PERSON = re.compile(r"\b([Yy]ou are|[Yy]our|[Yy]ou|[Ww]e are|[Ww]e|[Oo]ur|us)\b")  # not "US", the country
_SWAP = {"you are": "I am", "your": "my", "you": "I", "we are": "you are", "we": "you", "our": "your", "us": "you"}


def normalise(question: str) -> str:
    return " ".join(g.words(question))


def check_sources(questions: Sequence[dict[str, Any]], known: Iterable[str], path: str, where: str) -> None:
    """InputError when questions name `source` documents that `known` (file names or paths) lacks."""
    names = {Path(k).name for k in known}
    missing: dict[str, list[int]] = {}
    for n, q in enumerate(questions, 1):
        source = q.get("source") or ""
        if source and Path(source).name not in names:
            missing.setdefault(source, []).append(n)
    if missing:
        listed = "; ".join(f"{s} (question {', '.join(map(str, lines[:5]))}{', …' if len(lines) > 5 else ''})"
                           for s, lines in sorted(missing.items()))
        raise InputError(f"{path} names sources that {where} lacks: {listed}. Its documents are: "
                         f"{', '.join(sorted(names)[:30]) or 'none'}")


def load_question_file(path: str | Path, known_sources: Iterable[str], where: str) -> list[dict[str, Any]]:
    """A user's question file (issue B's JSONL), every named source checked against `known_sources`."""
    questions = load_questions(path)
    check_sources(questions, known_sources, str(path), where)
    for q in questions:
        q["origin"] = "file"
    return questions


def _clause(sentence: str, value: str) -> str:
    body = sentence.rstrip(".!?")
    if value:
        body = body.replace(value, "…", 1)
    return _PERSON.sub(lambda m: _SWAP[m.group(1).lower()], body)


def _lower_first(text: str) -> str:
    return text if text[1:2].isupper() else text[:1].lower() + text[1:]  # "GPS data", not "gPS data"


def _question(fact, variant: int) -> str:
    c = fact.chunk
    section = c.heading[-1] if c.heading and c.heading[-1] != c.title else c.title
    ask = _ASK.get(fact.kind, "what is it")
    clause = _clause(fact.sentence, fact.value)
    words = [w for w in g.words(clause) if w not in g.STOPWORDS and len(w) > 2][:7]
    forms = (f"On {section.lower()}: {clause} — {ask}?",
             f"Help me with {c.title.lower()}: {ask}, given that {_lower_first(clause)}?",
             f"{ask[0].upper() + ask[1:]} ({section.lower()}: {' '.join(words)})?")
    return " ".join(forms[variant % len(forms)].split())


def generate_questions(store: Store, bot: Bot, training_questions: Iterable[str] = (), answerable: int = 24,
                       unanswerable: int = 6, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A question set from the bot's documents: `answerable` questions about facts that state a value (spread
    over the documents, the value as key fact) and up to `unanswerable` about things no chunk mentions. A
    question equal (after normalising) to a training question is rephrased or dropped. Returns (questions,
    info about how they were made)."""
    from ..train.dataset import extract_facts, read_knowledge

    chunks, _ = read_knowledge(store, bot)
    facts = [f for f in extract_facts(chunks) if f.value and f.kind in _ASK]
    if not facts:
        raise InputError(f"bot {bot.name!r} has no facts to ask about (sentences with a number, price, duration, "
                         "time, phone or e-mail); give a question file with --questions")
    training = {normalise(q) for q in training_questions}
    rng = random.Random(seed)
    by_doc: dict[str, list] = {}
    for f in facts:
        by_doc.setdefault(f.chunk.path, []).append(f)
    for group in by_doc.values():
        rng.shuffle(group)
    order = sorted(by_doc)
    picked = []
    while len(picked) < answerable and any(by_doc.values()):  # round-robin over documents
        for path in order:
            if by_doc[path] and len(picked) < answerable:
                picked.append(by_doc[path].pop())
    out, collisions, dropped, seen_values = [], 0, 0, set()
    for i, fact in enumerate(picked):
        key = (fact.chunk.path, fact.value)
        if key in seen_values:  # the same value twice in one document cannot tell two questions apart
            continue
        seen_values.add(key)
        for attempt in range(3):
            q = _question(fact, i + attempt)
            if normalise(q) not in training:
                break
            collisions += 1
        else:
            dropped += 1
            continue
        out.append({"question": q, "answers": [fact.value], "source": Path(fact.chunk.path).name,
                    "split": "generated", "origin": "generated", "fact": fact.sentence})
    candidates = list(UNANSWERABLE)
    rng.shuffle(candidates)
    df, _ = store.term_frequencies(bot, [w for _, terms in candidates for w in terms])
    kept_una = 0
    for question, terms in candidates:
        if kept_una >= unanswerable:
            break
        if any(df.get(t, 0) for t in terms) or normalise(question) in training:
            continue
        out.append({"question": question, "answers": [], "source": "", "split": "generated", "origin": "generated"})
        kept_una += 1
    info = {"method": "template", "facts": len(facts), "answerable": sum(1 for q in out if q["answers"]),
            "unanswerable": kept_una, "training_questions_checked": len(training),
            "rephrased_to_avoid_training": collisions, "dropped_as_training": dropped, "seed": seed,
            "sha256": hashlib.sha256("\n".join(q["question"] for q in out).encode()).hexdigest()}
    return out, info


def overlap_with_training(questions: Sequence[dict[str, Any]], training_questions: Iterable[str]) -> int:
    """How many of `questions` are (after normalising) training questions."""
    training = {normalise(q) for q in training_questions}
    return sum(1 for q in questions if normalise(q["question"]) in training)
