"""Answering commands: `ragtune ask`, `ragtune chat`, `ragtune bench answers` (registered into the CLI)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from . import cli
from .errors import ConfigError
from .settings import Settings
from .types import Answer


def _add_parsers(sub, bench, common) -> None:
    def answer_flags(p):
        p.add_argument("--strategy", choices=["base", "rag", "finetune", "hybrid"],
                       help="base | rag | finetune | hybrid (default: the bot's strategy, else rag); finetune and "
                       "hybrid use the bot's newest adapter (`ragtune finetune`)")
        p.add_argument("--model", help="generator: smollm2 | qwen-0.5b | echo | openai, or a path to a .gguf file")
        p.add_argument("--answer-mode", dest="answer_mode", help="rag answer composition: auto | generate | extract | quote")
        p.add_argument("--runtime", choices=cli.RUNTIMES, help=cli.RUNTIME_HELP)

    p = sub.add_parser("ask", parents=[common], help="answer one question with citations (or say I don't know)",
                       description="Answer QUESTION from the bot's documents. --json prints {answer, abstained, "
                       "citations: [{source, title, chunk_id, quote}], strategy, model, timings_ms}; finetune and hybrid "
                       "answers add adapter: {id, stale, stale_reason, changed, removed}.")
    p.add_argument("question")
    answer_flags(p)
    p = sub.add_parser("chat", parents=[common], help="multi-turn chat in the terminal (streams tokens)",
                       description="Chat with the bot. Follow-ups are condensed with the history before "
                       "retrieval. Commands: /reset clears the history, /quit (or Ctrl-D) leaves.")
    answer_flags(p)
    b = bench.add_parser("answers", parents=[common], help="answer accuracy, abstention accuracy and latency",
                         description="Ask every question of a JSONL file ({question, answers: [key facts], source}; "
                         "empty answers = unanswerable) and score answers (a key fact in the answer and the right "
                         "source cited), abstentions and latency.")
    b.add_argument("--questions", required=True, metavar="FILE")
    b.add_argument("--split", default="all", help="only questions with this split field (dev/test); default all")
    b.add_argument("--limit", type=int, default=0, help="first N questions only")
    answer_flags(b)
    c = sub.add_parser("calibrate", parents=[common], help="set the bot's hand-off bar from labelled questions",
                       description="Answer a question file (same format as `bench answers`; use its dev split) "
                       "with the hand-off bar off, then save as the bot's min_support the bar that answers the most "
                       "questions right while handing off at least --target of the unanswerable ones. --json prints "
                       "{bot, questions, answerable, unanswerable, target, previous, chosen, saved}; previous and "
                       "chosen are {min_support, answer_accuracy, abstention_accuracy} on these questions.")
    c.add_argument("--questions", metavar="FILE", help="JSONL questions ({question, answers, source, split})")
    c.add_argument("--split", default="dev", help="only questions with this split field (default dev; all = every one)")
    c.add_argument("--target", type=float, default=0.85,
                   help="least share of unanswerable questions the bot must hand off (default 0.85)")
    c.add_argument("--dry-run", action="store_true", help="report the bar without saving it")
    c.add_argument("--reset", action="store_true", help="drop the bot's own bar (the min_support setting applies)")
    b = bench.add_parser("rgb", parents=[common], help="counterfactual robustness on RGB en_fact (wrong passages mixed in)",
                         description="For each RGB question, index its correct, wrong and irrelevant passages in a "
                         "temporary bot and report how often each strategy's answer follows a wrong passage.")
    b.add_argument("--file", required=True, metavar="JSON", help="RGB en_fact.json (JSON lines)")
    b.add_argument("--limit", type=int, default=0, help="first N questions only")
    answer_flags(b)


cli._EXTENSIONS.append(_add_parsers)


def answer_settings(args, settings: Settings) -> Settings:
    changes = {}
    model = getattr(args, "model", None)
    if model:
        if model.endswith(".gguf"):
            changes.update(generator="gguf", generator_path=model)
        else:
            changes["generator"] = model
    if getattr(args, "answer_mode", None):
        changes["answer_mode"] = args.answer_mode
    if getattr(args, "runtime", None):
        changes["generator_runtime"] = args.runtime
    if getattr(args, "strategy", None):
        changes["strategy"] = args.strategy
    if not changes:
        return settings
    try:
        return settings.replace(**changes)
    except TypeError as exc:  # pragma: no cover - replace() only gets known names
        raise ConfigError(str(exc)) from exc


@dataclass
class Session:
    """Everything one answering process holds: store, bot, models (loaded once), the strategy."""

    store: object
    bot: object
    strategy: object
    generator: object

    def close(self) -> None:
        self.store.close()


def open_session(settings: Settings, strategy: str | None = None) -> Session:
    from .models.embedders import open_embedder
    from .models.generators import open_generator
    from .retrieval import embedded_with_other
    from .store import open_store
    from .strategies import BotProfile, open_strategy

    store = open_store(settings)
    try:
        bot = store.get_bot(settings.bot)
        name = strategy or (settings.strategy if settings.strategy != "rag" else BotProfile.of(bot).strategy)
        embedder = open_embedder(settings) if name != "base" else None
        other = embedded_with_other(store, bot, embedder.identity) if embedder is not None else None
        if other:
            print(f"ragtune: warning: bot {bot.name!r} was embedded with {other}, not {embedder.identity}: answers use "
                  f"keyword search alone until `ragtune sync --bot {bot.name}` re-embeds it", file=sys.stderr)
        generator = open_generator(settings)
        return Session(store, bot, open_strategy(name, store, bot, settings, embedder, generator), generator)
    except BaseException:
        store.close()
        raise


@cli.command("ask")
def cmd_ask(args, settings: Settings) -> int:
    settings = answer_settings(args, settings)
    session = open_session(settings, args.strategy)
    try:
        answer = session.strategy.answer(args.question)
    finally:
        session.close()
    cli.emit(args, answer.to_json(), lambda: render_answer(answer))
    return 0


def render_answer(answer: Answer) -> str:
    return "\n".join([answer.answer, *source_lines(answer, "  ")])


def source_lines(answer: Answer, indent: str) -> list[str]:
    """The cited sources, or on a hand-off the pages suggested as places to look."""
    lines = [f"{indent}[{i}] {c.title} — {c.source}" for i, c in enumerate(answer.citations, 1)]
    pages = answer.extra.get("suggestions") or []
    if pages:
        lines.append(f"{indent}Pages that may help:")
        lines += [f"{indent}  - {p['title']} — {p['source']}" for p in pages]
    return lines


@cli.command("chat")
def cmd_chat(args, settings: Settings) -> int:
    from .errors import InputError

    settings = answer_settings(args, settings)
    session = open_session(settings, args.strategy)
    history: list[dict] = []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"ragtune chat — bot {session.bot.name!r}, {session.strategy.name} with {session.generator.name}. "
              "/reset clears history, /quit leaves.")
    try:
        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                history.clear()
                print("(history cleared)")
                continue
            print("bot> ", end="", flush=True)
            final = None
            try:
                for item in session.strategy.stream(line, history):
                    if isinstance(item, Answer):
                        final = item
                    else:
                        print(item, end="", flush=True)
            except InputError as exc:
                print(f"(error: {exc})")
                continue
            print()
            for line in source_lines(final, "     "):
                print(line)
            history += [{"role": "user", "content": line}, {"role": "assistant", "content": final.answer}]
            history = history[-12:]
    finally:
        session.close()
    return 0


@cli.command("calibrate")
def cmd_calibrate(args, settings: Settings) -> int:
    from .errors import InputError
    from .evaluate.answers_bench import load_questions
    from .evaluate.calibrate import choose, observe, outcome
    from .models.embedders import open_embedder
    from .models.generators import EchoGenerator
    from .store import open_store
    from .strategies import BotProfile, RagStrategy

    if not 0.0 <= args.target <= 1.0:
        raise InputError("--target must be between 0 and 1")
    if not args.questions and not args.reset:
        raise InputError("give --questions FILE (or --reset)")
    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        if args.reset:
            bot = store.update_bot_settings(bot, {"min_support": None})
            cli.emit(args, {"bot": bot.name, "reset": True, "min_support": settings.min_support},
                     f"bot {bot.name!r} hands off below min_support {settings.min_support} again")
            return 0
        questions = load_questions(args.questions, split=args.split)
        # quotes only (the model does not decide what is right), every support bar off
        off = RagStrategy(store, bot, settings, open_embedder(settings), EchoGenerator(), answer_mode="extract",
                          min_support=-2.0)
        rows = observe(off, questions, settings.progress)
        before = outcome(rows, BotProfile.of(bot).support_bar(settings), settings)
        chosen = choose(rows, args.target, settings)
        if not args.dry_run:
            store.update_bot_settings(bot, {"min_support": round(chosen.bar, 3)})
    data = {"bot": bot.name, "questions": len(rows), "answerable": sum(r["answerable"] for r in rows),
            "unanswerable": sum(not r["answerable"] for r in rows), "target": args.target,
            "previous": before.to_json(), "chosen": chosen.to_json(), "saved": not args.dry_run}
    b, c = data["previous"], data["chosen"]
    cli.emit(args, data, f"min_support {b['min_support']} -> {c['min_support']} "
             f"({'saved for' if data['saved'] else 'not saved;'} bot {bot.name!r}). On {len(rows)} questions: answer "
             f"accuracy {b['answer_accuracy']} -> {c['answer_accuracy']}, abstention accuracy "
             f"{b['abstention_accuracy']} -> {c['abstention_accuracy']}")
    return 0


@cli.command("bench rgb")
def cmd_bench_rgb(args, settings: Settings) -> int:
    from .evaluate.rgb_bench import bench_rgb
    from .models.embedders import open_embedder
    from .models.generators import open_generator

    settings = answer_settings(args, settings)
    result = bench_rgb(args.file, settings, open_embedder(settings), open_generator(settings), limit=args.limit)
    summary = {k: v for k, v in result.items() if k != "per_question"}
    cli.emit(args, result, lambda: json.dumps(summary, indent=2))
    return 0


@cli.command("bench answers")
def cmd_bench_answers(args, settings: Settings) -> int:
    from .evaluate.answers_bench import bench_answers, load_questions

    settings = answer_settings(args, settings)
    questions = load_questions(args.questions, split=args.split)
    if args.limit:
        questions = questions[: args.limit]
    session = open_session(settings, args.strategy)
    try:
        result = bench_answers(session.strategy, questions, settings.progress)
    finally:
        session.close()
    result.update({"questions_file": args.questions, "split": args.split, "bot": settings.bot})
    summary = {k: v for k, v in result.items() if k != "per_question"}
    cli.emit(args, result, lambda: json.dumps(summary, indent=2))
    return 0
