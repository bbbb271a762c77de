"""The `ragtune` command line: parses flags into Settings, calls the layers below, prints text or --json.
User mistakes become one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from . import __version__
from .errors import RagtuneError
from .settings import Settings

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


def emit(args: argparse.Namespace, data: Any, text: str | Callable[[], str]) -> None:
    """Print JSON when --json was given, else the human text."""
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=None))
    else:
        print(text() if callable(text) else text)


# --------------------------------------------------------------------------- parser
MODEL_HELP = "generator: smollm2 | qwen-0.5b | echo | openai, or a path to a .gguf file"  # every --model that answers
RUNTIMES = Settings.__dataclass_fields__["generator_runtime"].metadata["choices"]  # every --runtime
RUNTIME_HELP = ("engine for a local model (generator_runtime): llama.cpp (default) or torch (Llama-family GGUF; "
                "on CPUs with AMX reads long prompts ~1.4x faster but writes tokens slower; ~4 s to start)")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--bot", help="bot (named knowledge base) to use; default: default")
    p.add_argument("--home", help="state folder (default ~/.ragtune, or RAGTUNE_HOME)")
    p.add_argument("--config", help="settings file (default ./ragtune.toml, or RAGTUNE_CONFIG)")
    p.add_argument("--embedder", help="minilm | minilm-torch | openai | hash")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


def _queue_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", action="store_true", help="queue the sync as a job instead (a `ragtune worker` or "
                   "`ragtune serve` sharing the store runs it) and print the job")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Turn your documents into a support bot; compare RAG, fine-tuning and hybrid on your own data.",
    )
    parser.add_argument("--version", action="version", version=f"ragtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("ingest", parents=[common], help="add sources (files, folders, websites) to a bot and sync them",
                       description="Register SOURCEs with the bot and sync: new and changed documents are "
                       "indexed, unchanged ones cost a hash check, vanished ones are removed. A URL source crawls "
                       "its site: robots.txt is obeyed, sitemap.xml used, and only pages of the same host under "
                       "the start URL's folder are fetched; re-syncs send conditional requests.")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="file, folder (read recursively) or http(s) URL (crawled)")
    p.add_argument("--include", help="comma-separated globs files must match, e.g. '*.md,docs/**'")
    p.add_argument("--exclude", help="comma-separated globs of files to skip")
    p.add_argument("--redact-pii", dest="redact_pii", action=argparse.BooleanOptionalAction, default=None,
                   help="replace e-mails, phone numbers, card numbers, IBANs, national ids and IP addresses with "
                   "placeholders such as <EMAIL_ADDRESS> before indexing; kept as the bot's setting "
                   "(--no-redact-pii turns it off)")
    p.add_argument("--allow-private", dest="allow_private", action="store_true", default=None,
                   help="let URL sources reach loopback, private and other non-public addresses (intranet sites); "
                   "remembered for these sources")
    p.add_argument("--max-pages", dest="crawl_max_pages", type=int, metavar="N",
                   help=f"most pages fetched per website (default {_default('crawl_max_pages')}; the crawl "
                   "limits a site is added with are kept for its later syncs)")
    p.add_argument("--max-depth", dest="crawl_max_depth", type=int, metavar="N",
                   help=f"most link hops from the start URL (default {_default('crawl_max_depth')})")
    p.add_argument("--max-mb", dest="crawl_max_mb", type=float, metavar="MB",
                   help=f"most megabytes downloaded per website (default {_default('crawl_max_mb'):g})")
    p.add_argument("--crawl-timeout", dest="crawl_timeout", type=float, metavar="SECONDS",
                   help=f"most seconds one website's crawl may take (default {_default('crawl_timeout'):g})")
    p.add_argument("--parse-timeout", dest="parse_timeout", type=float, metavar="SECONDS",
                   help=f"most seconds one file or page may take to parse (default {_default('parse_timeout'):g})")
    _queue_flag(p)

    p = sub.add_parser("forget", parents=[common], help="erase a source or document from a bot, leaving no trace",
                       description="Remove SOURCE — a registered source, one file or page, or a folder inside a "
                       "folder source — from every table and index of the bot (chunks, vectors, full-text "
                       "index, chat logs that quote it), reclaim the space so no byte of it stays in the "
                       "database files, keep it out of later syncs, and write an audit record holding only a "
                       "hash of SOURCE and counts.")
    p.add_argument("source", metavar="SOURCE", help="source URI, file path, page URL or folder")

    p = sub.add_parser("sync", parents=[common], help="re-sync every source of a bot",
                       description="Re-sync the bot's sources: only changed documents are re-embedded.")
    _queue_flag(p)
    sub.add_parser("jobs", parents=[common], help="a bot's sync jobs, newest first, with their progress",
                   description="Sync jobs queued by `ragtune sync --queue` or through the API, as every process "
                   "sharing the store sees them: state (queued, running, done, failed), documents processed, the "
                   "worker that ran them and their report.")
    p = sub.add_parser("worker", parents=[common], help="run queued sync jobs of every bot (for a shared store)",
                       description="Claim sync jobs from the store (queued by `ragtune sync --queue`, the API or "
                       "the admin page) and run them, one at a time; several workers on several machines share "
                       "one Postgres store's jobs, none runs a job another holds. A job whose worker stopped is "
                       "taken over after job_stale_seconds. Runs until interrupted, or with --once until no job "
                       "is waiting.")
    p.add_argument("--once", action="store_true", help="run the waiting jobs, then exit")

    p = sub.add_parser("search", parents=[common], help="search a bot's knowledge base (hybrid BM25 + dense)")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=None, help="number of hits (default: top_k setting, 5)")
    p.add_argument("--mode", choices=["hybrid", "bm25", "dense"], help="retrieval mode (default hybrid)")

    sub.add_parser("sources", parents=[common], help="list a bot's sources with their last sync time")
    sub.add_parser("bots", parents=[common], help="list bots with document and chunk counts")
    sub.add_parser("config", parents=[common], help="show effective settings and where each came from")

    p = sub.add_parser("bench", help="benchmarks (retrieval on BEIR data, answers on a question file)")
    bench = p.add_subparsers(dest="bench_command", metavar="BENCH")
    b = bench.add_parser("retrieval", parents=[common], help="nDCG@10 / recall@100 / MRR@10 on a BEIR dataset",
                         description="Index a BEIR-format dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv) "
                         "in a temporary home and score bm25, dense and hybrid retrieval.")
    b.add_argument("--beir", required=True, metavar="DIR", help="BEIR dataset folder")
    b.add_argument("--split", default="test", help="qrels split to score (default test)")
    b.add_argument("--max-docs", type=int, default=0, help="index only the first N corpus docs (0 = all)")

    for extra in _EXTENSIONS:
        extra(sub, bench, common)
    return parser


# Later layers (answering, serving, training) add their sub-commands here.
_EXTENSIONS: list[Callable] = []


_INGEST_FLAGS = ("redact_pii", "allow_private", "crawl_max_pages", "crawl_max_depth", "crawl_max_mb", "crawl_timeout",
                 "parse_timeout")


def _default(name: str):
    return Settings.__dataclass_fields__[name].default


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in ("bot", "home", "embedder", "include", "exclude",
                                                          *_INGEST_FLAGS)}
    if getattr(args, "json", False):
        flags["progress"] = False
    return Settings.load(overrides=flags, config_file=getattr(args, "config", None))


# --------------------------------------------------------------------------- commands
@command("ingest")
def cmd_ingest(args, settings: Settings) -> int:
    from .ingest.sync import register_sources, sync_bot
    from .store import open_store

    with open_store(settings) as store:
        bot = store.ensure_bot(settings.bot)
        if args.redact_pii is not None and bool(bot.settings.get("redact_pii")) != args.redact_pii:
            bot = store.update_bot_settings(bot, {"redact_pii": args.redact_pii})
        register_sources(store, bot, args.sources, settings)
        if args.queue:
            return _queue(args, store, settings, bot)
        report = sync_bot(store, settings, bot)
    emit(args, report.to_json(), lambda: _report_text(report))
    return 0


def _queue(args, store, settings: Settings, bot) -> int:
    from .ingest.worker import queue_sync

    job = queue_sync(store, settings, bot)
    emit(args, job, f"queued sync job {job['id']} for bot {bot.name!r}; `ragtune jobs --bot {bot.name}` shows its "
         "progress once a worker runs it")
    return 0


@command("sync")
def cmd_sync(args, settings: Settings) -> int:
    from .ingest.sync import sync_bot
    from .store import open_store

    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        if args.queue:
            return _queue(args, store, settings, bot)
        report = sync_bot(store, settings, bot)
    emit(args, report.to_json(), lambda: _report_text(report))
    return 0


def _job_line(job: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(job["created_at"]))
    failed = len((job["report"] or {}).get("failed", []))
    detail = job["error"] or (f"{job['processed']} documents" + (f", now {job['current']}" if job["current"] else "")
                              + (f", {failed} could not be read (see --json)" if failed else ""))
    return f"{job['id']}  {when}  {job['state']:<7}  {detail}"


@command("jobs")
def cmd_jobs(args, settings: Settings) -> int:
    from .store import open_store

    with open_store(settings) as store:
        jobs = store.list_jobs(store.get_bot(settings.bot))
    emit(args, jobs, lambda: "\n".join(_job_line(j) for j in jobs) or "no sync jobs")
    return 0


@command("worker")
def cmd_worker(args, settings: Settings) -> int:
    import logging

    from .ingest.worker import SyncWorker

    if args.once:
        jobs = SyncWorker(settings).run_pending()
        emit(args, jobs, lambda: "\n".join(f"{j['bot']}  {_job_line(j)}" for j in jobs) or "no sync job was waiting")
        return 1 if any(j["state"] == "failed" for j in jobs) else 0
    worker = SyncWorker(settings, on_job=lambda j: print(json.dumps(j) if args.json else f"{j['bot']}  {_job_line(j)}",
                                                          flush=True))
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # each job's start, on stderr
    print(f"sync worker {worker.name} waiting for jobs (Ctrl-C stops it)", file=sys.stderr)
    try:
        worker.serve()
    except KeyboardInterrupt:
        pass
    return 0


@command("forget")
def cmd_forget(args, settings: Settings) -> int:
    from .erasure import forget
    from .store import open_store

    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        report = forget(store, bot, args.source)
    emit(args, report.to_json(), lambda: (
        f"forgot {report.documents} documents ({report.chunks} chunks, {report.derived_rows} quoting rows, "
        f"{report.sources} sources) in {report.seconds:.2f}s; "
        + ("space reclaimed" if report.reclaimed else "another process holds the store open: space is reclaimed "
           "at its next checkpoint")
        + (f"; {report.adapters_marked_stale} adapters marked stale ({', '.join(report.stale_adapters)})"
           if report.adapters_marked_stale else "")))
    return 0


def _report_text(r) -> str:
    lines = [f"added {r.added}, updated {r.updated}, removed {r.removed}, unchanged {r.unchanged}, "
             f"failed {len(r.failed)} in {r.seconds:.2f}s"]
    lines += [f"  failed: {f['source']}: {f['error']}" for f in r.failed]
    return "\n".join(lines)


@command("search")
def cmd_search(args, settings: Settings) -> int:
    from .ingest.chunking import heading_path
    from .models.embedders import open_embedder
    from .retrieval import Retriever
    from .store import open_store

    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        mode = args.mode or settings.retrieval
        embedder = None if mode == "bm25" else open_embedder(settings)
        result = Retriever(store, settings, embedder).search(bot, args.query, k=args.k, mode=mode)
    data = {
        "query": args.query,
        "ms": round(result.ms, 1),
        "hits": [{"chunk_id": h.chunk_id, "score": round(h.score, 5), "source": h.source, "title": h.title,
                  "heading": list(h.heading), "text": h.text} for h in result.hits],
    }

    def text() -> str:
        if not result.hits:
            return "no hits"
        out = []
        for i, h in enumerate(result.hits, 1):
            where = heading_path(h.title, h.heading)
            snippet = " ".join(h.text.split())[:200]
            out.append(f"{i}. [{h.score:.4f}] {where}\n   {h.source}\n   {snippet}")
        return "\n".join(out)

    emit(args, data, text)
    return 0


@command("sources")
def cmd_sources(args, settings: Settings) -> int:
    from .store import open_store

    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        sources = store.list_sources(bot)
    data = [{"id": s.id, "uri": s.uri, "kind": s.kind, "options": s.options, "added_at": s.added_at,
             "synced_at": s.synced_at} for s in sources]
    emit(args, data, lambda: "\n".join(
        f"{s.id}\t{s.kind}\t{s.uri}\tlast synced {_when(s.synced_at)}" for s in sources) or "no sources")
    return 0


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "never"


@command("bots")
def cmd_bots(args, settings: Settings) -> int:
    from .store import open_store

    with open_store(settings) as store:
        data = [{"name": b.name, **store.count(b)} for b in store.list_bots()]
    emit(args, data, lambda: "\n".join(
        f"{d['name']}\t{d['documents']} documents\t{d['chunks']} chunks" for d in data) or "no bots")
    return 0


@command("config")
def cmd_config(args, settings: Settings) -> int:
    flags = {name: getattr(args, name, None) for name in ("bot", "home", "embedder")}
    _, origins = Settings.load_with_origins(overrides=flags, config_file=args.config)
    rows = settings.describe(origins)
    emit(args, rows, lambda: "\n".join(f"{r['name']:<22} {r['value']!s:<28} ({r['origin']})" for r in rows))
    return 0


@command("bench")
def cmd_bench(args, settings: Settings) -> int:
    if args.bench_command == "retrieval":
        from .evaluate.retrieval_bench import bench_retrieval

        result = bench_retrieval(args.beir, settings, split=args.split, max_docs=args.max_docs)
        emit(args, result, lambda: json.dumps(result, indent=2))
        return 0
    handler = COMMANDS.get(f"bench {args.bench_command}")
    if handler is None:
        print("usage: ragtune bench {retrieval,answers} ... (see ragtune bench --help)", file=sys.stderr)
        return 2
    return handler(args, settings)


# --------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        settings = settings_from(args)
        return COMMANDS[args.command](args, settings)
    except RagtuneError as exc:
        print(f"ragtune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ragtune: interrupted; the store keeps every document that finished", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the database itself refused (a damaged or hand-edited store): one line, no traceback
        if not type(exc).__module__.startswith(("sqlite3", "psycopg")):
            raise
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"ragtune: error: the store failed: {line} (a change it was making is rolled back; `ragtune bots` "
              "checks that the store opens)", file=sys.stderr)
        return 1


def _load_extensions() -> None:
    """Import the command modules of later layers (each registers its sub-commands)."""
    import importlib

    for name in ("ragtune.answer_cli", "ragtune.server_cli", "ragtune.train_cli", "ragtune.compare_cli"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


if __name__ == "__main__":
    sys.exit(main())
