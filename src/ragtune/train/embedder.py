"""Adapting the embedder to a bot's documents: a generator writes questions for each chunk (kept in a cache keyed
by the chunk's text and shared by the store's bots, so a re-run, or a second version of the same documents, only
asks about new or changed chunks), then all-MiniLM-L6-v2 (or the folder in
`embedder_path`) is fine-tuned to put each question next to its chunk, with the other chunks of a batch as
negatives (multiple-negatives ranking loss). One question of every tenth chunk is held out: recall@1 of those
questions over all the bot's chunks, before and after, says whether it learned the documents' vocabulary or only
memorised the phrasings it saw. The result is a sentence-transformers folder the `minilm-torch` embedder loads
(`embedder_path`). On the Poetry docs (504 chunks, questions by Qwen2.5-Coder-0.5B) held-out recall@1 went from
0.50 to 0.61, and the share of the dev questions answerable from the best evidence passage from 0.66 to 0.75
(benchmarks/answer_ceiling.py)."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import InputError, require
from ..ingest.chunking import embedding_text
from ..passages import unit_key
from ..settings import Settings
from ..store import Bot, Store, StoredChunk
from .dataset import model_questions

HELD_OUT_EVERY = 10  # one question of every tenth chunk is kept out of training
MIN_CHUNKS = 8  # fewer chunks than this leave no in-batch negatives worth learning from


@dataclass(frozen=True)
class TuneConfig:
    questions_per_chunk: int = 3
    epochs: int = 1
    learning_rate: float = 2e-5
    batch_size: int = 32
    scale: float = 20.0  # cosine similarities are multiplied by this before the softmax (sentence-transformers' value)
    seed: int = 0


def chunk_text(chunk: StoredChunk) -> str:
    """What the embedder reads for a chunk (the same text indexing embeds)."""
    return embedding_text(chunk.title, chunk.heading, chunk.text)


def cache_path(home: str | Path) -> Path:
    return Path(home).expanduser() / "embedders" / "questions.jsonl"


def _cached(cache: Path) -> list[dict]:
    rows = []
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                rows.append({"key": str(row["key"]), "n": int(row["n"]), "model": str(row["model"]),
                             "questions": [str(q) for q in row["questions"]]})
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a killed run
    return rows


def collect_questions(chunks: Sequence[StoredChunk], generator, n: int, cache: Path, progress: bool = True
                      ) -> dict[str, list[str]]:
    """Questions per chunk id, from `cache` (JSONL lines {key: the chunk text's hash, n, model, questions}) where
    this generator already wrote n for the same text, else from the generator (each appended to the cache at
    once: a killed run keeps what it made)."""
    from tqdm import tqdm

    known = {(r["key"], r["n"], r["model"]): r["questions"] for r in _cached(cache)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    todo = []
    for c in chunks:
        key = unit_key(chunk_text(c))
        if (key, n, generator.name) in known:
            out[c.chunk_id] = known[(key, n, generator.name)]
        else:
            todo.append((c, key))
    with open(cache, "a", encoding="utf-8") as fh:
        for c, key in tqdm(todo, desc="writing questions", unit="chunk", disable=not progress, file=sys.stderr):
            qs = model_questions(generator, chunk_text(c), n)
            fh.write(json.dumps({"key": key, "n": n, "model": generator.name, "questions": qs}) + "\n")
            fh.flush()
            out[c.chunk_id] = qs
    return out


def forget_questions(home: str | Path, store: Store, bot: Bot, document_ids: Sequence[int]) -> int:
    """Erasure: drop the cached questions written about the chunks of the bot's documents `document_ids` (the
    cache is rewritten, then renamed over the old one); returns how many entries went. The chunks are read only
    when there is a cache. A model already tuned on them keeps what it learned: tune again."""
    cache = cache_path(home)
    rows = _cached(cache)
    if not rows:
        return 0
    erased = set(document_ids)
    gone = {unit_key(chunk_text(c)) for c in store.list_chunks(bot) if c.document_id in erased}
    kept = [r for r in rows if r["key"] not in gone]
    if len(kept) < len(rows):
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, cache)
    return len(rows) - len(kept)


def split_pairs(questions: dict[str, list[str]], order: Sequence[str]) -> tuple[list[tuple[str, str]],
                                                                              list[tuple[str, str]]]:
    """(question, chunk id) pairs to train on and held out: the first question of every HELD_OUT_EVERY-th chunk
    that has at least two is held out (its chunk is still learned from its other questions)."""
    train, held = [], []
    for i, cid in enumerate(order):
        qs = questions.get(cid, [])
        if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 and len(qs) >= 2:
            held.append((qs[0], cid))
            qs = qs[1:]
        train.extend((q, cid) for q in qs)
    return train, held


def batches(pairs: Sequence[tuple[str, str]], size: int, rng: random.Random) -> list[list[tuple[str, str]]]:
    """Shuffled batches in which no chunk appears twice (its other question would count as a wrong answer):
    one question per chunk per round."""
    by_chunk: dict[str, list[str]] = {}
    for q, cid in pairs:
        by_chunk.setdefault(cid, []).append(q)
    out = []
    for r in range(max((len(v) for v in by_chunk.values()), default=0)):
        round_ = [(v[r], cid) for cid, v in by_chunk.items() if len(v) > r]
        rng.shuffle(round_)
        out += [round_[i:i + size] for i in range(0, len(round_), size) if len(round_[i:i + size]) > 1]
    rng.shuffle(out)
    return out


def recall_at_1(encode, held: Sequence[tuple[str, str]], ids: Sequence[str], texts: Sequence[str]) -> float | None:
    """Share of held-out questions whose own chunk is the nearest of all `texts` (None when none are held out)."""
    if not held:
        return None
    import numpy as np

    docs = encode(list(texts))
    qs = encode([q for q, _ in held])
    best = np.argmax(qs @ docs.T, axis=1)
    return round(float(np.mean([ids[b] == cid for b, (_, cid) in zip(best, held)])), 3)


def tune_embedder(store: Store, bot: Bot, settings: Settings, generator, config: TuneConfig = TuneConfig(),
                  progress: bool = True) -> dict:
    """Write questions, fine-tune, save; returns the report (`path` is the new model folder)."""
    torch = require("torch", "train")
    st = require("sentence_transformers", "train")
    from tqdm import tqdm

    from ..models.embedders import folder_identity, packaged_minilm_folder

    chunks = store.list_chunks(bot)
    if len(chunks) < MIN_CHUNKS:
        raise InputError(f"bot {bot.name!r} has {len(chunks)} chunks; tuning the embedder needs at least "
                         f"{MIN_CHUNKS} (run `ragtune ingest` first)")
    if config.questions_per_chunk < 1 or config.epochs < 1:
        raise InputError("--questions-per-chunk and --epochs must be at least 1")
    home = Path(settings.home).expanduser()
    started = time.perf_counter()
    questions = collect_questions(chunks, generator, config.questions_per_chunk,
                                  cache_path(home), progress)
    t_questions = time.perf_counter() - started
    ids = [c.chunk_id for c in chunks]
    texts = [chunk_text(c) for c in chunks]
    text_of = dict(zip(ids, texts))
    train, held = split_pairs(questions, ids)
    if len(train) < MIN_CHUNKS:
        raise InputError(f"the generator {generator.name} wrote only {len(train)} usable questions for "
                         f"{len(chunks)} chunks; try a stronger one (--model)")

    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    if not progress:  # transformers draws its own bars while loading and saving
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    base = Path(settings.embedder_path).expanduser() if settings.embedder_path else packaged_minilm_folder()
    model = st.SentenceTransformer(str(base), device="cpu")
    model.max_seq_length = 256

    def encode(xs):
        return model.encode(xs, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    before = recall_at_1(encode, held, ids, texts)
    t0 = time.perf_counter()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    plan = [b for _ in range(config.epochs) for b in batches(train, config.batch_size, rng)]
    model.train()

    def embed(xs):
        features = model.preprocess(xs) if hasattr(model, "preprocess") else model.tokenize(xs)
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    bar = tqdm(plan, desc="tuning embedder", unit="step", disable=not progress, file=sys.stderr)
    loss_value = None
    for batch in bar:
        q = embed([x[0] for x in batch])
        d = embed([text_of[x[1]] for x in batch])
        loss = torch.nn.functional.cross_entropy(config.scale * q @ d.T, torch.arange(len(batch)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        loss_value = float(loss.item())
        bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    t_train = time.perf_counter() - t0
    after = recall_at_1(encode, held, ids, texts)

    root = home / "models" / "embedders"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{bot.name}-"))
    try:
        model.save(str(tmp))
        digest = folder_identity(tmp).rsplit("/", 1)[1][:12]
        target = root / f"{bot.name}-{digest}"
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    made = sum(len(v) for v in questions.values())
    return {"bot": bot.name, "path": str(target), "base": str(base), "generator": generator.name,
            "chunks": len(chunks), "questions": made, "train_pairs": len(train), "held_out": len(held),
            "steps": len(plan), "final_loss": None if loss_value is None else round(loss_value, 4),
            "recall_at_1": {"before": before, "after": after},
            "seconds": {"questions": round(t_questions, 1), "training": round(t_train, 1),
                        "total": round(time.perf_counter() - started, 1)},
            "use": {"embedder": "minilm-torch", "embedder_path": str(target)}}
