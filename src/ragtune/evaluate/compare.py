"""`ragtune compare`: answer one question set with several strategies (base, rag, finetune, hybrid) and measure
each — accuracy, abstention, groundedness, retrieval recall@k, latency, cost — optionally after the documents
change (freshness.py), and store the whole thing as a run with its lineage. A run is "running" until it is
saved complete, so an interrupted run is never reported as complete."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__
from ..errors import ConfigError, InputError, MissingExtraError, ModelError, NotFoundError
from ..grounding import groundedness
from ..models.embedders import Embedder
from ..models.generators import Generator
from ..settings import Settings
from ..store import Bot, Store
from ..strategies import Strategy
from ..types import Answer
from .answers_bench import is_correct
from .metrics import percentile

FORMAT_VERSION = 1
RUN_KIND = "compare"
COMPARE_STRATEGIES = ("base", "rag", "finetune", "hybrid")
RETRIEVAL_STRATEGIES = ("rag", "hybrid")
ADAPTER_STRATEGIES = ("finetune", "hybrid")
STATUSES = ("running", "complete", "failed", "interrupted")
Events = Callable[[str], None]


def parse_strategies(text: str | None) -> tuple[str, ...]:
    """`base,rag,...` → a tuple in the given order; ConfigError naming the valid values for an unknown one."""
    if text is None:
        return COMPARE_STRATEGIES
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--strategies is empty; valid values: {', '.join(COMPARE_STRATEGIES)}")
    for n in names:
        if n not in COMPARE_STRATEGIES:
            raise ConfigError(f"unknown strategy {n!r}; valid values: {', '.join(COMPARE_STRATEGIES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--strategies names a strategy twice: {text}")
    return tuple(names)


@dataclass
class CompareRequest:
    strategies: tuple[str, ...] = COMPARE_STRATEGIES
    strategies_explicit: bool = False  # named by the user: a strategy that cannot run is an error, not skipped
    questions_file: str | None = None  # None: generate questions from the knowledge base
    changed_docs: str | None = None
    questions_after: str | None = None
    retrain: bool = False  # freshness: also retrain the adapter on the changed copy and measure it
    train_config: Any = None  # ragtune.train.lora.TrainConfig; None = its defaults
    generate_answerable: int = 24
    generate_unanswerable: int = 6

    def config(self) -> dict[str, Any]:
        return {"strategies": list(self.strategies), "questions": self.questions_file,
                "changed_docs": self.changed_docs, "questions_after": self.questions_after, "retrain": self.retrain,
                "train": self.train_config.to_json() if hasattr(self.train_config, "to_json") else None}


# --------------------------------------------------------------------------- strategies and adapters
@dataclass
class AdapterUse:
    """The adapter a strategy answers with, and what it cost."""

    id: str
    raft: bool
    trained_now: bool
    training_seconds: float
    adapter_mb: float
    stale: bool
    path: str


class StrategyProvider:
    """Where compare gets its strategies: `ragtune.strategies.open_strategy` for all four, with `settings.adapter`
    set to the adapter chosen here for finetune and hybrid — a current one of the bot, else one trained through
    ragtune.train's entry point (build_dataset → finetune, as `ragtune finetune` does). Tests subclass it."""

    def __init__(self, settings: Settings, embedder: Embedder | None, generator: Generator) -> None:
        self.settings, self.embedder, self.generator = settings, embedder, generator
        self.adapters: dict[str, AdapterUse] = {}
        self._opened: list[Strategy] = []

    # adapters -------------------------------------------------------------------------------------------------
    def prepare(self, store: Store, bot: Bot, names: Sequence[str], train_config: Any, on_event: Events) -> None:
        """Choose (or train) the adapter each adapter strategy in `names` uses; fills self.adapters. Hybrid
        prefers a RAFT-trained adapter; one trained here serves both (RAFT when hybrid is compared)."""
        wanted = [n for n in names if n in ADAPTER_STRATEGIES]
        if not wanted:
            return
        from ..train.adapters import adapter_status, current_documents, list_adapters

        docs = current_documents(store, bot)
        current = [a for a in list_adapters(self.settings.home_path, bot.name) if not adapter_status(a, docs)["stale"]]
        raft = "hybrid" in wanted
        trained = None
        if not current:
            on_event(f"no current adapter for bot {bot.name!r}: training one{' (RAFT)' if raft else ''} …")
            trained = self.train(store, bot, raft, train_config)
            current = [trained[0]]
        for name in wanted:
            plain = [a for a in current if not a.raft]
            rafts = [a for a in current if a.raft]
            pick = (rafts or current)[-1] if name == "hybrid" else (plain or current)[-1]
            now = trained is not None and pick.id == trained[0].id
            self.adapters[name] = _adapter_use(pick, trained[1] if now else None)

    def train(self, store: Store, bot: Bot, raft: bool, train_config: Any, settings: Settings | None = None):
        """Train an adapter exactly as `ragtune finetune [--raft]` does; returns (Adapter, wall seconds)."""
        from ..strategies import BotProfile
        from ..train.dataset import build_dataset
        from ..train.lora import TrainConfig, finetune, require_training

        settings = settings or self.settings
        require_training()
        config = train_config or TrainConfig()
        started = time.perf_counter()
        dataset = build_dataset(store, bot, raft=raft, seed=config.seed)
        adapter, _ = finetune(dataset, config, settings, bot.name, raft=raft,
                              raft_system=BotProfile.of(bot).system_prompt)
        return adapter, time.perf_counter() - started

    def training_questions(self, bot: Bot) -> list[str]:
        """Every question the bot's adapters were trained on (their exported training data), so a generated
        question set can stay disjoint from it."""
        import json

        from ..train.adapters import DATA_FILE, list_adapters

        out = []
        for adapter in list_adapters(self.settings.home_path, bot.name):
            data = adapter.path / DATA_FILE
            if not data.is_file():
                continue
            for line in data.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(line)["question"])
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    def planned_training_questions(self, store: Store, bot: Bot) -> list[str]:
        """Questions a newly trained adapter would see (the deterministic template synthesis)."""
        from ..train.dataset import build_dataset

        try:
            dataset = build_dataset(store, bot, raft=False)
        except InputError:
            return []
        return [e.question for e in dataset.train + dataset.held_out]

    # strategies -----------------------------------------------------------------------------------------------
    def open(self, name: str, store: Store, bot: Bot, settings: Settings | None = None) -> Strategy:
        from ..strategies import open_strategy

        settings = settings or self.settings
        if name in ADAPTER_STRATEGIES:
            use = self.adapters.get(name)
            if use is None:
                raise NotFoundError(f"no adapter prepared for {name}")
            settings = settings.replace(adapter=use.id)
        strategy = open_strategy(name, store, bot, settings, self.embedder, self.generator)
        self._opened.append(strategy)
        return strategy

    def release(self, strategy: Strategy) -> None:
        """Free an adapter strategy's model (each opened its own); the shared generator stays."""
        gen = getattr(strategy, "generator", None)
        if gen is not None and gen is not self.generator:
            gen.close()

    def count_tokens(self, text: str) -> int:
        return self.generator.count_tokens(text) if text else 0

    def copy_adapters(self, bot: Bot, home: Path) -> None:
        """Put the adapters in use into a copy's home (strategies read them from `<home>/adapters/<bot>/<id>`)."""
        from ..train.adapters import adapters_root

        for use in {a.id: a for a in self.adapters.values()}.values():
            target = adapters_root(home, bot.name) / use.id
            if not target.exists():
                shutil.copytree(use.path, target, ignore=shutil.ignore_patterns("data.jsonl"))


def _adapter_use(adapter, measured_seconds: float | None) -> AdapterUse:
    m = adapter.manifest
    training = m.get("training", {})
    files = m.get("files", {})
    size = files.get("gguf_size_bytes") if adapter.gguf is not None else files.get("size_bytes")
    seconds = measured_seconds if measured_seconds is not None else training.get("total_seconds",
                                                                                  training.get("seconds", 0.0))
    return AdapterUse(adapter.id, adapter.raft, measured_seconds is not None, round(float(seconds or 0.0), 1),
                      round((size or 0) / 2**20, 2), False, str(adapter.path))


# --------------------------------------------------------------------------- answering and scoring
def answer_questions(strategy: Strategy, questions: Sequence[dict[str, Any]], store: Store, bot: Bot,
                     count_tokens: Callable[[str], int], progress: bool = False, label: str = "",
                     on_event: Events | None = None) -> list[dict[str, Any]]:
    """Ask every question; per question: answer, abstained, correct, citations, ms, grounded, tokens. Without a
    progress bar, `on_event` hears how far it got every tenth question."""
    from tqdm import tqdm

    rows = []
    for n, case in enumerate(tqdm(questions, desc=label or strategy.name, unit="q", disable=not progress,
                                  file=sys.stderr, leave=False)):
        if on_event is not None and not progress and n and n % 10 == 0:
            on_event(f"{label or strategy.name}: {n}/{len(questions)} answered")
        started = time.perf_counter()
        final: Answer | None = None
        for item in strategy.stream(case["question"]):
            if isinstance(item, Answer):
                final = item
        ms = (time.perf_counter() - started) * 1000
        assert final is not None
        answerable = bool(case["answers"])
        correct = is_correct(final, case, require_citation=False) if answerable else final.abstained
        grounded = None
        if not final.abstained:
            hits = store.get_hits(bot, [(c.chunk_id, 0.0) for c in final.citations])
            grounded = round(groundedness(final.answer, [h.text for h in hits]).share, 4)
        rows.append({"answer": final.answer, "abstained": final.abstained, "correct": bool(correct),
                     "citations": [{"source": Path(c.source).name, "title": c.title, "chunk_id": c.chunk_id}
                                   for c in final.citations],
                     "ms": round(ms, 1), "grounded": grounded, "tokens": count_tokens(final.answer),
                     "model": final.model,
                     "adapter_stale": (final.extra.get("adapter") or {}).get("stale")})
    return rows


def retrieval_recall(store: Store, bot: Bot, settings: Settings, embedder: Embedder | None,
                     questions: Sequence[dict[str, Any]]) -> tuple[list[list[str] | None], list[str]]:
    """Per question the file names of the top-k retrieved chunks' documents (None for questions without a
    source), and every retrieved chunk id (the run quotes them)."""
    from ..retrieval import Retriever

    retriever = Retriever(store, settings, embedder)
    out, chunk_ids = [], []
    for case in questions:
        if not case["answers"] or not case.get("source"):
            out.append(None)
            continue
        hits = retriever.search(bot, case["question"], k=settings.top_k).hits
        out.append([Path(h.source).name for h in hits])
        chunk_ids += [h.chunk_id for h in hits]
    return out, chunk_ids


def _rate(values: Sequence[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def score(rows: Sequence[dict[str, Any]], questions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """accuracy (answerable: a key fact present and not abstained), abstention_accuracy (unanswerable: abstained),
    grounded (mean share of answer sentences supported by the cited chunks, over answers given), latency."""
    ans = [r for r, q in zip(rows, questions) if q["answers"]]
    una = [r for r, q in zip(rows, questions) if not q["answers"]]
    ms = [r["ms"] for r in rows]
    return {
        "accuracy": _rate([r["correct"] for r in ans]),
        "abstention_accuracy": _rate([r["correct"] for r in una]),
        "grounded": _mean([r["grounded"] for r in rows if r["grounded"] is not None]),
        "latency_ms_p50": round(percentile(ms, 50), 1),
        "latency_ms_p95": round(percentile(ms, 95), 1),
        "answerable": len(ans), "unanswerable": len(una),
        "false_abstentions": sum(r["abstained"] for r in ans),
    }


# --------------------------------------------------------------------------- lineage
def documents_lineage(store: Store, bot: Bot) -> list[dict[str, Any]]:
    return sorted(({"id": s.id, "path": s.path, "content_hash": s.content_hash}
                   for source in store.list_sources(bot) for s in store.document_states(bot, source).values()),
                  key=lambda d: d["path"])


def lineage(store: Store, bot: Bot, settings: Settings, embedder: Embedder | None, generator: Generator,
            questions_file: str | None) -> dict[str, Any]:
    docs = documents_lineage(store, bot)
    config = {name: getattr(settings, name) for name in (
        "generator", "generator_model", "embedder", "top_k", "candidates", "rrf_k", "retrieval", "answer_mode",
        "min_support", "min_support_agreed", "min_support_value", "max_tokens", "context_tokens", "chunk_tokens",
        "chunk_overlap", "generator_runtime", "quote_context",
        "adapter_runtime")
        if hasattr(settings, name)}
    out = {"format_version": FORMAT_VERSION, "ragtune_version": __version__,
           "python": platform.python_version(), "host": socket.gethostname(),
           "models": {"generator": generator.name, "embedder": getattr(embedder, "identity", None), "adapters": {}},
           "config": config, "documents": docs,
           "documents_sha256": hashlib.sha256("\n".join(f"{d['id']} {d['path']} {d['content_hash']}"
                                                        for d in docs).encode()).hexdigest()}
    if questions_file:
        out["questions_file"] = {"path": str(Path(questions_file).resolve()),
                                 "sha256": hashlib.sha256(Path(questions_file).read_bytes()).hexdigest()}
    return out


# --------------------------------------------------------------------------- runs
def run_status(run: dict[str, Any]) -> str:
    """A run's status as users should see it: a "running" run whose process is gone was interrupted."""
    if run["status"] != "running":
        return run["status"]
    if run.get("host") != socket.gethostname():
        return "running"  # another machine's process: its own record is the best we know
    try:
        os.kill(int(run.get("pid") or 0), 0)
    except ProcessLookupError:
        return "interrupted"
    except (PermissionError, ValueError, OSError):
        return "running"
    return "running" if run.get("pid") else "interrupted"


def with_status(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "status": run_status(run)}


def list_runs(store: Store, bot: Bot, limit: int = 50) -> list[dict[str, Any]]:
    return [with_status(r) for r in store.list_runs(bot, RUN_KIND, limit)]


def open_run(store: Store, bot: Bot, run_id: str) -> dict[str, Any]:
    return with_status(store.get_run(bot, run_id))


def latest_complete_run(store: Store, bot: Bot) -> dict[str, Any] | None:
    for run in list_runs(store, bot):
        if run["status"] == "complete":
            return run
    return None


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """What `ragtune compare --json` prints: {"strategies", "freshness", "run_id"} plus status and context."""
    result = run.get("result") or {}
    return {"strategies": result.get("strategies", {}), "freshness": result.get("freshness"), "run_id": run["id"],
            "status": run["status"], "bot": run["bot"], "questions": result.get("questions"),
            "skipped": result.get("skipped", {}), "seconds": result.get("seconds"),
            "started_at": run.get("started_at"), "finished_at": run.get("finished_at"),
            **({"error": run["error"]} if run.get("error") else {})}


# --------------------------------------------------------------------------- the whole comparison
def run_compare(store: Store, bot: Bot, settings: Settings, embedder: Embedder | None, generator: Generator,
                request: CompareRequest, provider: StrategyProvider | None = None,
                on_event: Events | None = None) -> dict[str, Any]:
    """Run a comparison and store it. Bad input fails before the run is recorded; a failure or interruption
    after that leaves the run recorded as failed or interrupted (never complete), and is re-raised."""
    from .freshness import check_changed_docs, measure_freshness
    from .questions import check_sources, generate_questions, overlap_with_training

    say = on_event or (lambda text: None)
    provider = provider or StrategyProvider(settings, embedder, generator)
    docs = documents_lineage(store, bot)
    if not docs:
        raise InputError(f"bot {bot.name!r} has no documents; add some with `ragtune ingest PATH --bot {bot.name}`")
    questions = None
    if request.questions_file:
        from .answers_bench import load_questions

        questions = load_questions(request.questions_file)
        check_sources(questions, [d["path"] for d in docs], request.questions_file, f"bot {bot.name!r}")
    after = check_changed_docs(request.changed_docs, request.questions_after)

    run_id = store.create_run(bot, RUN_KIND, request.config(),
                              lineage(store, bot, settings, embedder, generator, request.questions_file))
    started = time.perf_counter()
    result: dict[str, Any] = {"format_version": FORMAT_VERSION, "strategies": {}, "freshness": None,
                              "skipped": {}, "adapters": {}, "per_question": []}
    cited: set[str] = set()
    try:
        strategies = _prepare(store, bot, request, provider, result, say)
        run = store.get_run(bot, run_id)
        run["lineage"]["models"]["adapters"] = {n: vars(a) for n, a in provider.adapters.items()}
        store.update_run(bot, run_id, lineage=run["lineage"])
        if questions is None:
            training = provider.training_questions(bot)
            if not any(n in ADAPTER_STRATEGIES for n in strategies):
                training += provider.planned_training_questions(store, bot)
            questions, info = generate_questions(store, bot, training, request.generate_answerable,
                                                 request.generate_unanswerable)
            say(f"generated {len(questions)} questions from the knowledge base "
                f"({info['answerable']} answerable, {info['unanswerable']} unanswerable)")
            result["questions"] = {"origin": "generated", **info}
        else:
            training = provider.training_questions(bot)
            result["questions"] = {"origin": "file", "path": request.questions_file,
                                   "answerable": sum(1 for q in questions if q["answers"]),
                                   "unanswerable": sum(1 for q in questions if not q["answers"])}
        result["questions"]["overlap_with_training"] = overlap_with_training(questions, training)
        result["questions"]["count"] = len(questions)
        per = [{"question": q["question"], "answers": q["answers"], "source": q["source"],
                "answerable": bool(q["answers"]), "results": {}} for q in questions]
        result["per_question"] = per
        recall_sources = None
        if any(n in RETRIEVAL_STRATEGIES for n in strategies):
            recall_sources, ids = retrieval_recall(store, bot, settings, embedder, questions)
            cited.update(ids)
            for p, r in zip(per, recall_sources):
                p["retrieved"] = r
        index_mb = round(store.index_bytes(bot) / 2**20, 2)
        for name in strategies:
            say(f"answering {len(questions)} questions with {name} …")
            strategy = provider.open(name, store, bot)
            try:
                rows = answer_questions(strategy, questions, store, bot, provider.count_tokens, settings.progress,
                                        name, say)
            finally:
                provider.release(strategy)
            for p, r in zip(per, rows):
                p["results"][name] = r
                cited.update(c["chunk_id"] for c in r["citations"])
            result["strategies"][name] = _metrics(name, rows, questions, recall_sources, settings.top_k, index_mb,
                                                  provider.adapters.get(name))
            store.update_run(bot, run_id, result=result, chunk_ids=sorted(cited))  # progress, still "running"
        if after is not None:
            say(f"freshness: copying the bot, syncing {request.changed_docs} …")
            fresh, per_after = measure_freshness(store, bot, settings, embedder, provider, strategies,
                                                 request.changed_docs, after, request, say)
            for name, row in fresh.items():
                if isinstance(row, dict) and name in result["strategies"]:
                    row["accuracy_before_change"] = result["strategies"][name]["accuracy"]
            result["freshness"] = fresh
            result["per_question_after"] = per_after
        result["seconds"] = round(time.perf_counter() - started, 1)
        store.update_run(bot, run_id, status="complete", result=result, chunk_ids=sorted(cited))
    except KeyboardInterrupt:
        result["seconds"] = round(time.perf_counter() - started, 1)
        store.update_run(bot, run_id, status="interrupted", result=result, chunk_ids=sorted(cited),
                         error="interrupted before it completed")
        raise
    except BaseException as exc:
        result["seconds"] = round(time.perf_counter() - started, 1)
        store.update_run(bot, run_id, status="failed", result=result, chunk_ids=sorted(cited),
                         error=f"{type(exc).__name__}: {exc}")
        raise
    return open_run(store, bot, run_id)


def _prepare(store, bot, request: CompareRequest, provider: StrategyProvider, result, say) -> list[str]:
    """Adapters for finetune/hybrid: a strategy that cannot run (no training extra, a remote generator) is an
    error when the user named it, else skipped with the reason (recorded in the run)."""
    strategies = list(request.strategies)
    adapter_names = [n for n in strategies if n in ADAPTER_STRATEGIES]
    if not adapter_names:
        return strategies
    try:
        provider.prepare(store, bot, adapter_names, request.train_config, say)
    except (MissingExtraError, ModelError, ConfigError, InputError) as exc:  # e.g. too little to train on
        if request.strategies_explicit:
            raise
        for n in adapter_names:
            result["skipped"][n] = str(exc)
        say(f"skipping {', '.join(adapter_names)}: {exc}")
        return [n for n in strategies if n not in ADAPTER_STRATEGIES]
    result["adapters"] = {n: vars(a) for n, a in provider.adapters.items()}
    return strategies


def _metrics(name: str, rows, questions, recall_sources, k: int, index_mb: float, adapter: AdapterUse | None):
    out = score(rows, questions)
    if name in RETRIEVAL_STRATEGIES and recall_sources is not None:
        hits = [Path(q["source"]).name in (r or []) for q, r in zip(questions, recall_sources) if r is not None]
        out["recall@k"] = _rate(hits)
        out["k"] = k
    out["cost"] = {
        "training_seconds": adapter.training_seconds if adapter else 0.0,
        "adapter_mb": adapter.adapter_mb if adapter else 0.0,
        "index_mb": index_mb if name in RETRIEVAL_STRATEGIES else 0.0,
        "tokens_per_answer": round(sum(r["tokens"] for r in rows) / len(rows), 1) if rows else 0.0,
    }
    out["model"] = rows[0]["model"] if rows else ""
    if adapter:
        out["adapter"] = adapter.id
    return out
