"""Comparison commands: `ragtune compare`, `ragtune runs` and `ragtune advise` (registered into the CLI)."""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager

from . import cli
from .errors import InputError
from .settings import Settings

_ADVISE_FLAGS = {
    "change_frequency": "how often the knowledge changes",
    "knowledge_size": "how much knowledge there is",
    "knowledge_variety": "one narrow domain or many topics",
    "realtime_facts": "whether answers need facts that change by the hour (true/false)",
    "tone_consistency": "how much a consistent tone matters",
    "domain_specialisation": "how specialised the domain is",
    "training_budget": "budget and skills to train and maintain a model",
    "traffic": "expected traffic",
    "privacy": "privacy constraints",
}


def _add_parsers(sub, bench, common) -> None:
    from .advisor import PROFILE, _valid

    p = sub.add_parser(
        "compare", parents=[common], help="measure base, RAG, fine-tuning and hybrid on your own questions",
        description="Answer a question set with each strategy and measure accuracy (a key fact present and not "
        "abstained), abstention accuracy, groundedness (answer sentences backed by the cited chunks), retrieval "
        "recall@k, latency p50/p95 and cost (training seconds, adapter MB, index MB, tokens per answer). Without "
        "--questions a set is generated from the knowledge base (with unanswerable questions, none of them a "
        "training question). finetune and hybrid use the bot's current adapter, or train one. With --changed-docs "
        "and --questions-after, a copy of the bot gets DIR as its documents, is synced, and every strategy answers "
        "again without retraining (your bot is never changed). The run is stored with its lineage: `ragtune runs` "
        "lists and reopens runs. --json prints {strategies: {name: metrics}, freshness: {name: "
        "{accuracy_after_change}, sync_seconds, retrain_seconds}, run_id}.")
    p.add_argument("--questions", metavar="FILE",
                   help="JSONL lines {question, answers: [key facts], source}; empty answers = unanswerable")
    p.add_argument("--strategies", metavar="LIST", help="comma-separated, from base,rag,finetune,hybrid (default: "
                   "all four; finetune and hybrid are skipped with a note when they cannot run here, unless named)")
    p.add_argument("--changed-docs", dest="changed_docs", metavar="DIR",
                   help="the documents after a change (measured on a copy of the bot)")
    p.add_argument("--questions-after", dest="questions_after", metavar="FILE",
                   help="questions (same format) whose answers follow the changed documents")
    p.add_argument("--retrain", action="store_true",
                   help="with --changed-docs: also retrain the adapter on the changed copy and measure the time "
                   "and accuracy (default: the adapter's own training time is reported as the retraining time)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (charts, every answer)")
    p.add_argument("--model", help=cli.MODEL_HELP)

    p = sub.add_parser("runs", parents=[common], help="list a bot's comparison runs, or reopen one",
                       description="Without RUN_ID: the bot's runs, newest first, with their status (a run that "
                       "was stopped before it finished shows as interrupted, never complete). With RUN_ID: that "
                       "run's figures (--json: the same shape as `ragtune compare --json`); --html writes its "
                       "report again.")
    p.add_argument("run_id", nargs="?", metavar="RUN_ID")
    p.add_argument("--html", metavar="FILE", help="write the run's HTML report")
    p.add_argument("--limit", type=int, default=20, help="most runs listed (default 20)")

    p = sub.add_parser(
        "advise", parents=[common], help="recommend rag, finetune or hybrid from your profile and measurements",
        description="Recommend a strategy from the project's profile (the factors of the RAG-vs-fine-tuning "
        "decision: change frequency, size and variety of the knowledge, real-time facts, tone, specialisation, "
        "training budget, traffic, privacy) and, where a comparison run exists (--run, or the bot's latest "
        "complete run), from measurements on your own data, which can overturn the rules. Missing profile keys "
        "are assumed and said so. In a terminal without --profile or flags it asks the questions. --json prints "
        "{recommendation, reasons, assumed, evidence, would_change_if}.")
    p.add_argument("--profile", metavar="FILE", help="JSON object with any of: " + ", ".join(PROFILE))
    for key, text in _ADVISE_FLAGS.items():
        p.add_argument("--" + key.replace("_", "-"), dest=f"profile_{key}", metavar="VALUE",
                       help=f"{text}: {_valid(key)} (overrides --profile)")
    p.add_argument("--run", metavar="RUN_ID", help="compare run to weigh (default: the bot's latest complete run)")
    p.add_argument("--no-run", dest="no_run", action="store_true", help="rules only, ignore comparison runs")


cli._EXTENSIONS.append(_add_parsers)


@contextmanager
def _sigterm_interrupts():
    """A `kill` (SIGTERM) stops a run the way Ctrl-C does, so it is recorded as interrupted."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@cli.command("compare")
def cmd_compare(args, settings: Settings) -> int:
    from .answer_cli import answer_settings
    from .evaluate.compare import CompareRequest, parse_strategies, run_compare, summary
    from .evaluate.report import check_writable, write_report
    from .models.embedders import open_embedder
    from .models.generators import open_generator
    from .store import open_store

    settings = answer_settings(args, settings)
    request = CompareRequest(strategies=parse_strategies(args.strategies),
                             strategies_explicit=args.strategies is not None, questions_file=args.questions,
                             changed_docs=args.changed_docs, questions_after=args.questions_after,
                             retrain=args.retrain)
    if args.html:
        check_writable(args.html)
    if args.retrain and not args.changed_docs:
        raise InputError("--retrain needs --changed-docs DIR and --questions-after FILE")
    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        embedder = open_embedder(settings)
        generator = open_generator(settings)
        try:
            with _sigterm_interrupts():
                run = run_compare(store, bot, settings, embedder, generator, request, on_event=_say)
        finally:
            generator.close()
    if args.html:
        write_report(run, args.html)
    data = summary(run)
    cli.emit(args, data, lambda: render_summary(data) + (f"\nreport: {args.html}" if args.html else ""))
    return 0


def render_summary(d: dict) -> str:
    from .evaluate.report import _num, _pct

    lines = [f"run {d['run_id']} ({d['status']}) — bot {d['bot']}, {(d.get('questions') or {}).get('count', '?')} "
             f"questions, {_num(d.get('seconds'), 0)} s"]
    head = f"{'strategy':<10}{'accuracy':>9}{'abstain':>9}{'grounded':>9}{'recall@k':>9}{'p50 ms':>9}{'p95 ms':>9}" \
           f"{'train s':>9}{'adapt MB':>9}{'index MB':>9}{'tok/ans':>8}"
    lines.append(head)
    for name, m in d["strategies"].items():
        c = m.get("cost") or {}
        lines.append(f"{name:<10}{_pct(m.get('accuracy')):>9}{_pct(m.get('abstention_accuracy')):>9}"
                     f"{_pct(m.get('grounded')):>9}{_pct(m.get('recall@k')):>9}{_num(m.get('latency_ms_p50'), 0):>9}"
                     f"{_num(m.get('latency_ms_p95'), 0):>9}{_num(c.get('training_seconds'), 0):>9}"
                     f"{_num(c.get('adapter_mb'), 1):>9}{_num(c.get('index_mb'), 2):>9}"
                     f"{_num(c.get('tokens_per_answer'), 0):>8}")
    for name, reason in (d.get("skipped") or {}).items():
        lines.append(f"{name}: not measured — {reason}")
    fresh = d.get("freshness")
    if fresh:
        parts = [f"{n} {_pct(v.get('accuracy_after_change'))}" for n, v in fresh.items()
                 if isinstance(v, dict) and "accuracy_after_change" in v]
        lines.append(f"after the change (no retraining): {', '.join(parts)}; sync {_num(fresh.get('sync_seconds'), 2)} s, "
                     f"retrain {_num(fresh.get('retrain_seconds'), 0)} s"
                     f"{'' if fresh.get('retrain_measured') else ' (the adapter’s own training time)'}")
    if d.get("status") != "complete":
        lines.append(f"this run is {d.get('status')}, not complete: {d.get('error') or 'partial figures'}")
    return "\n".join(lines)


@cli.command("runs")
def cmd_runs(args, settings: Settings) -> int:
    from .evaluate.compare import list_runs, open_run, summary
    from .evaluate.report import check_writable, write_report
    from .store import open_store

    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        if args.run_id:
            if args.html:
                check_writable(args.html)
            run = open_run(store, bot, args.run_id)
            if args.html:
                write_report(run, args.html)
            data = summary(run)
            data["lineage"] = run["lineage"]
            cli.emit(args, data, lambda: render_summary(data) + (f"\nreport: {args.html}" if args.html else ""))
            return 0
        if args.html:
            raise InputError("--html needs a RUN_ID: `ragtune runs RUN_ID --html FILE`")
        runs = list_runs(store, bot, args.limit)
    rows = [{"id": r["id"], "status": r["status"], "started_at": r["started_at"], "finished_at": r["finished_at"],
             "strategies": {n: m.get("accuracy") for n, m in (r["result"].get("strategies") or {}).items()},
             "questions": (r["result"].get("questions") or {}).get("count"),
             "freshness": bool(r["result"].get("freshness"))} for r in runs]

    def text() -> str:
        if not rows:
            return f"bot {settings.bot!r} has no comparison runs; run `ragtune compare`"
        out = []
        for r in rows:
            acc = ", ".join(f"{n} {'n/a' if a is None else f'{a:.0%}'}" for n, a in r["strategies"].items())
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"]))
            fresh = "\tfreshness" if r["freshness"] else ""
            out.append(f"{r['id']}\t{when}\t{r['status']:<11}\t{r['questions'] or '?'} questions\t{acc or '-'}{fresh}")
        return "\n".join(out)

    cli.emit(args, rows, text)
    return 0


@cli.command("advise")
def cmd_advise(args, settings: Settings) -> int:
    from .advisor import PROFILE, advise, load_profile, parse_value, questionnaire

    profile = load_profile(args.profile) if args.profile else {}
    flags = {k: getattr(args, f"profile_{k}") for k in PROFILE if getattr(args, f"profile_{k}", None) is not None}
    for key, value in flags.items():
        profile[key] = parse_value(key, value)
    if not args.profile and not flags and sys.stdin.isatty():
        profile = questionnaire(lambda prompt: _ask(prompt), lambda text: print(text, file=sys.stderr))
    run = None if args.no_run else _evidence_run(settings, args.run)
    result = advise(profile, run)
    cli.emit(args, result, lambda: render_advice(result))
    return 0


def _ask(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def _evidence_run(settings: Settings, run_id: str | None):
    """The run to weigh: --run ID (it must be complete), else the bot's latest complete run, else None."""
    from .errors import NotFoundError
    from .evaluate.compare import latest_complete_run, open_run
    from .store import open_store

    if not settings.store_url and not (settings.home_path / "ragtune.db").is_file():
        if run_id:
            raise NotFoundError(f"no run {run_id!r}: there is no store at {settings.home_path}")
        return None
    with open_store(settings) as store:
        try:
            bot = store.get_bot(settings.bot)
        except NotFoundError:
            if run_id:
                raise
            return None
        if run_id:
            run = open_run(store, bot, run_id)
            if run["status"] != "complete":
                raise InputError(f"run {run_id} is {run['status']}, not complete: its figures are partial; give a "
                                 "complete run (`ragtune runs` lists them)")
            return run
        return latest_complete_run(store, bot)


def render_advice(r: dict) -> str:
    from .advisor import NAMES

    lines = [f"Recommendation: {r['recommendation']} ({NAMES[r['recommendation']]})"]
    rb = r["rule_based"]
    if rb["recommendation"] != r["recommendation"]:
        lines.append(f"  (the rules alone say {rb['recommendation']}; your measurements overturned it)")
    lines.append("Why:")
    lines += [f"  - {x}" for x in r["reasons"]]
    if r["assumed"]:
        lines.append("Assumed (not in your profile):")
        lines += [f"  - {x}" for x in r["assumed"]]
    ev = r.get("evidence")
    if ev:
        acc = ", ".join(f"{n} {'n/a' if a is None else f'{a:.0%}'}" for n, a in ev["accuracy"].items())
        lines.append(f"Measured (run {ev['run_id']}, {ev['questions']} answerable questions): {acc}")
        if ev.get("accuracy_after_change"):
            after = ", ".join(f"{n} {'n/a' if a is None else f'{a:.0%}'}" for n, a in ev["accuracy_after_change"].items())
            lines.append(f"  after the documents changed: {after}")
        lines.append(f"  verdict: {ev['verdict']}")
    else:
        lines.append("Measured: no comparison run for this bot (run `ragtune compare` to measure on your data)")
    lines.append("Would change if:")
    lines += [f"  - {x}" for x in r["would_change_if"]]
    return "\n".join(lines)
