"""Freshness for `ragtune compare --changed-docs DIR --questions-after FILE`: on a throw-away copy of the bot (the
user's bot is never touched), its source content is replaced by DIR and synced, then every strategy answers the
after-change questions without retraining. Reports accuracy_after_change per strategy, the sync time and the
retraining time (measured on the copy with `retrain`, else the adapter's own training time)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ..models.embedders import Embedder
from ..settings import Settings
from ..store import Bot, Store
from .compare import ADAPTER_STRATEGIES, _adapter_use, answer_questions, score


def check_changed_docs(changed_docs: str | None, questions_after: str | None) -> list[dict[str, Any]] | None:
    """The after-change questions, checked against the documents in DIR; None when freshness is not asked for."""
    from ..ingest.loaders import SUPPORTED_SUFFIXES
    from .answers_bench import load_questions
    from .questions import check_sources

    if not changed_docs and not questions_after:
        return None
    if not changed_docs:
        raise InputError("--questions-after needs --changed-docs DIR: the changed documents to answer them from")
    if not questions_after:
        raise InputError("--changed-docs needs --questions-after FILE: the questions to ask once the documents "
                         "changed (same format as --questions)")
    folder = Path(changed_docs)
    if not folder.is_dir():
        raise InputError(f"--changed-docs {changed_docs} is not a folder")
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
             and not p.name.startswith(".")]
    if not files:
        raise InputError(f"--changed-docs {changed_docs} holds no supported documents")
    questions = load_questions(questions_after)
    check_sources(questions, [str(p) for p in files], questions_after, f"--changed-docs {changed_docs}")
    return questions


def _replace_sources(store: Store, bot: Bot, folder: Path) -> str:
    """Make `folder` the bot's source content. One folder source is moved there (an incremental sync: unchanged
    documents cost a hash); otherwise every source is replaced by the folder (everything is indexed again)."""
    sources = store.list_sources(bot)
    if len(sources) == 1 and sources[0].kind == "folder":
        store.move_source(bot, sources[0].id, str(folder.resolve()))
        return "incremental"
    for s in sources:
        store.remove_source(bot, s.id)
    return "full"


def measure_freshness(store: Store, bot: Bot, settings: Settings, embedder: Embedder | None, provider,
                      strategies: Sequence[str], changed_docs: str, questions: list[dict[str, Any]], request,
                      say) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from ..ingest.sync import register_sources, sync_bot
    from ..store import open_store

    folder = Path(changed_docs)
    with tempfile.TemporaryDirectory(prefix="ragtune-freshness-") as tmp:
        home = Path(tmp)
        store.copy_bot(bot, home)
        provider.copy_adapters(bot, home)
        csettings = settings.replace(home=str(home), store_url="")  # the copy is a SQLite home of its own
        cstore = open_store(csettings)
        try:
            cbot = cstore.get_bot(bot.name)
            mode = _replace_sources(cstore, cbot, folder)
            if mode == "full":
                register_sources(cstore, cbot, [str(folder)], csettings)
            started = time.perf_counter()
            report = sync_bot(cstore, csettings, cbot, embedder=embedder)
            sync_seconds = round(time.perf_counter() - started, 2)
            say(f"freshness: synced the copy in {sync_seconds:.1f}s ({report.updated} updated, {report.added} added, "
                f"{report.removed} removed, {report.unchanged} unchanged); answering without retraining …")
            per = [{"question": q["question"], "answers": q["answers"], "source": q["source"],
                    "answerable": bool(q["answers"]), "results": {}} for q in questions]
            out: dict[str, Any] = {}
            for name in strategies:
                rows = _answer(provider, name, cstore, cbot, csettings, questions, f"{name} (after change)", say)
                for p, r in zip(per, rows):
                    p["results"][name] = r
                m = score(rows, questions)
                out[name] = {"accuracy_after_change": m["accuracy"],
                             "abstention_accuracy_after_change": m["abstention_accuracy"],
                             "grounded_after_change": m["grounded"]}
                if name in ADAPTER_STRATEGIES:
                    out[name]["adapter_stale"] = any(r.get("adapter_stale") for r in rows)
            adapter_names = [n for n in strategies if n in ADAPTER_STRATEGIES]
            retrain_seconds, measured = None, False
            if adapter_names and request.retrain:
                say("freshness: retraining the adapter on the changed copy …")
                adapter, retrain_seconds = provider.train(cstore, cbot, "hybrid" in adapter_names,
                                                          request.train_config, settings=csettings)
                measured = True
                saved = dict(provider.adapters)
                try:
                    for n in adapter_names:
                        provider.adapters[n] = _adapter_use(adapter, retrain_seconds)
                    for n in adapter_names:
                        rows = _answer(provider, n, cstore, cbot, csettings, questions, f"{n} (retrained)", say)
                        for p, r in zip(per, rows):
                            p["results"][f"{n} (retrained)"] = r
                        out[n]["accuracy_after_retrain"] = score(rows, questions)["accuracy"]
                finally:
                    provider.adapters = saved
            elif adapter_names:  # not measured here: the adapter's own training took this long on this data
                retrain_seconds = max(provider.adapters[n].training_seconds for n in adapter_names)
            for name in strategies:
                if name == "base":
                    fresh = None  # the model alone never learns the documents
                elif name == "finetune":
                    fresh = round(sync_seconds + (retrain_seconds or 0.0), 1)
                else:  # retrieval serves the new text as soon as it is synced
                    fresh = sync_seconds
                out[name]["seconds_to_fresh"] = fresh
            out["sync_seconds"] = sync_seconds
            out["retrain_seconds"] = None if retrain_seconds is None else round(retrain_seconds, 1)
            out["retrain_measured"] = measured
            out["sync_mode"] = mode
            out["sync"] = report.to_json()
            out["changed_docs"] = str(folder)
            out["questions_after"] = request.questions_after
            return out, per
        finally:
            cstore.close()


def _answer(provider, name, store, bot, settings, questions, label, say):
    strategy = provider.open(name, store, bot, settings)
    try:
        return answer_questions(strategy, questions, store, bot, provider.count_tokens, settings.progress, label,
                                say)
    finally:
        provider.release(strategy)

