"""Fine-tuning commands: `ragtune finetune`, `ragtune tune-embedder` and `ragtune adapters` (registered into the
CLI)."""

from __future__ import annotations

import time

from . import cli
from .answer_cli import answer_settings
from .errors import ConfigError
from .settings import Settings


@cli.command("tune-embedder")
def cmd_tune_embedder(args, settings: Settings) -> int:
    from .models.generators import open_generator
    from .store import open_store
    from .train.embedder import TuneConfig, tune_embedder

    settings = answer_settings(args, settings)
    config = TuneConfig(questions_per_chunk=args.questions_per_chunk, epochs=args.epochs)
    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        data = tune_embedder(store, bot, settings, open_generator(settings), config, progress=settings.progress)

    def text() -> str:
        r = data["recall_at_1"]
        return (f"wrote {data['path']}\n{data['questions']} questions for {data['chunks']} chunks by "
                f"{data['generator']} ({data['seconds']['questions']} s), {data['steps']} training steps "
                f"({data['seconds']['training']} s)\nheld-out questions finding their chunk first: {r['before']} "
                f"before, {r['after']} after\nto use it, set in ragtune.toml:\n  embedder = \"minilm-torch\"\n"
                f"  embedder_path = \"{data['path']}\"\nthen run `ragtune sync` for every bot (all are "
                "re-embedded with it)")

    cli.emit(args, data, text)
    return 0


def _add_parsers(sub, bench, common) -> None:
    p = sub.add_parser(
        "finetune", parents=[common], help="train a LoRA adapter from the knowledge base and/or curated Q&A",
        description="Build training data — questions synthesised from the bot's documents (several phrasings per "
        "fact), curated Q&A (--qa) and tone examples (--style) — hold out a share for early stopping, and train a "
        "LoRA adapter on the local model (fp32 from its GGUF). The adapter is stored under "
        "RAGTUNE_HOME/adapters/BOT/ID with a manifest of its lineage and used by `ask --strategy finetune|hybrid`. "
        "A run killed midway resumes when the same command is run again. --json prints {adapter, stale, "
        "training: {steps_run, stopped, seconds, peak_memory_mb, ...}, data: {train, held_out, ...}, metrics, "
        "size_bytes}.")
    p.add_argument("--qa", action="append", default=[], metavar="FILE",
                   help="curated question/answer pairs: CSV with a 'question,answer' header, or JSONL lines "
                   "{\"question\": ..., \"answer\": ...} (repeatable)")
    p.add_argument("--style", action="append", default=[], metavar="FILE",
                   help="tone/style examples in the same formats: how the bot should word its answers (repeatable)")
    p.add_argument("--steps", type=int, metavar="N", help="training steps (default 400, at most ~12 minutes here; the learning "
                   "rate decays over them; training also stops early when held-out loss stops improving, or when "
                   "--max-minutes is spent)")
    p.add_argument("--max-minutes", dest="max_minutes", type=float, metavar="M",
                   help="wall-clock safety limit of the training loop in minutes (default 14)")
    p.add_argument("--raft", action="store_true",
                   help="RAFT-style hybrid training: add examples whose sources hold the relevant chunk among 1-3 "
                   "distractors (some with distractors only), answered by quoting the evidence")
    p.add_argument("--no-kb", dest="no_kb", action="store_true",
                   help="train on the --qa/--style files only, not on questions synthesised from the documents")
    p.add_argument("--synth", choices=["template", "model", "auto"], default="template",
                   help="how questions are synthesised: template (deterministic; the default, measured better "
                   "here), model (the configured generator writes them), auto (measure both on a sample, keep the "
                   "better)")
    p.add_argument("--paraphrases", type=int, default=4, metavar="N", help="questions per fact (default 4)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="training device (default cpu)")
    p.add_argument("--export", metavar="FILE", help="also write the training data (train + held-out) as JSONL")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="build (and --export) the training data, then stop without training")
    p.add_argument("--model", help="base model to train: smollm2 (default) | qwen-0.5b | a path to a .gguf file")

    p = sub.add_parser(
        "tune-embedder", parents=[common], help="fine-tune the embedder on questions written about the bot's documents",
        description="Adapt retrieval to the bot's vocabulary: the generator (--model; qwen-0.5b writes better "
        "questions than the default, ~2-3 s a chunk here) writes questions each chunk answers (cached under "
        "RAGTUNE_HOME/embedders by chunk text, so a re-run asks only about new or changed chunks), then all-MiniLM-L6-v2 (or "
        "the embedder_path folder) is fine-tuned to rank each question's chunk first (needs the train extra). One "
        "question of every tenth chunk is held out and its recall@1 reported before and after. Writes a "
        "sentence-transformers folder under RAGTUNE_HOME/models/embedders; use it with embedder = minilm-torch and "
        "embedder_path = that folder, then `ragtune sync` (the embedder is shared by all bots of a store). --json "
        "prints {bot, path, generator, chunks, questions, train_pairs, held_out, steps, recall_at_1: {before, "
        "after}, seconds: {questions, training, total}, use: {embedder, embedder_path}}.")
    p.add_argument("--questions-per-chunk", dest="questions_per_chunk", type=int, default=3, metavar="N",
                   help="questions the generator writes per chunk (default 3)")
    p.add_argument("--epochs", type=int, default=1, metavar="N", help="passes over the questions (default 1)")
    p.add_argument("--model", help="generator that writes the questions: smollm2 (default) | qwen-0.5b | a .gguf path")
    p.add_argument("--runtime", choices=cli.RUNTIMES, help=cli.RUNTIME_HELP + " (qwen-0.5b on torch: ~2 s a chunk)")

    p = sub.add_parser("adapters", parents=[common], help="list a bot's fine-tuned adapters and whether they are stale",
                       description="List the bot's adapters, newest last, with their lineage summary. An adapter is "
                       "stale when a document it learned from changed or was removed (or erased): the model still "
                       "holds the old facts, so retrain with `ragtune finetune`.")


cli._EXTENSIONS.append(_add_parsers)


@cli.command("finetune")
def cmd_finetune(args, settings: Settings) -> int:
    from .store import open_store
    from .strategies import BotProfile
    from .train.adapters import adapter_status, current_documents
    from .train.dataset import build_dataset
    from .train.lora import TrainConfig, finetune, require_training

    settings = answer_settings(args, settings)
    overrides = {k: v for k, v in (("steps", args.steps), ("max_minutes", args.max_minutes),
                                   ("device", args.device)) if v is not None}
    config = TrainConfig(**overrides)
    if args.paraphrases < 1:
        raise ConfigError("--paraphrases must be at least 1")
    if not args.dry_run:
        require_training()  # before any work: a missing extra costs nothing
    started = time.perf_counter()
    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        generator = None
        if args.synth != "template" and not args.no_kb:
            from .models.generators import open_generator

            generator = open_generator(settings)
        dataset = build_dataset(store, bot, qa_files=args.qa, style_files=args.style, use_kb=not args.no_kb,
                                paraphrases=args.paraphrases, synth=args.synth, generator=generator, raft=args.raft,
                                seed=config.seed)
        if args.export:
            dataset.export_jsonl(args.export)
        if args.dry_run:
            data = {"adapter": None, "data": dataset.summary(), "exported": args.export}
            cli.emit(args, data, lambda: _data_text(dataset.summary()) + (f"\nwrote {args.export}" if args.export else ""))
            return 0
        adapter, result = finetune(dataset, config, settings, bot.name, raft=args.raft,
                                   raft_system=BotProfile.of(bot).system_prompt)
        status = adapter_status(adapter, current_documents(store, bot))
    m = adapter.manifest
    data = {"adapter": adapter.id, "path": str(adapter.path), "stale": status["stale"],
            "runtime": "llama.cpp" if adapter.gguf else "transformers",
            "training": {k: m["training"][k] for k in ("steps_run", "stopped", "resumed_from", "seconds", "device",
                                                       "peak_memory_mb", "raft", "steps", "max_minutes")},
            "data": {k: v for k, v in m["data"].items() if k in ("train", "held_out", "facts", "kinds", "documents",
                                                                 "synthesis", "files")},
            "metrics": m["metrics"], "size_bytes": m["files"]["size_bytes"],
            "gguf_size_bytes": m["files"]["gguf_size_bytes"], "gguf_error": m["files"]["gguf_error"],
            "seconds": round(time.perf_counter() - started, 1), "exported": args.export}
    cli.emit(args, data, lambda: _finetune_text(data))
    return 0


def _data_text(summary: dict) -> str:
    kinds = ", ".join(f"{v} {k}" for k, v in summary["kinds"].items())
    return (f"training data: {summary['train']} examples ({kinds}), {summary['held_out']} held out; "
            f"{summary['facts']} facts from {summary['documents']} documents; questions by "
            f"{summary['synthesis'].get('method')}")


def _finetune_text(d: dict) -> str:
    t, m = d["training"], d["metrics"]
    loss = f"held-out loss {m['initial_held_out_loss']} → {m['held_out_loss']}" if m["held_out_loss"] is not None \
        else "no held-out examples"
    acc = f", held-out fact accuracy {m['held_out_fact_accuracy']:.0%}" if m["held_out_fact_accuracy"] is not None else ""
    return (f"adapter {d['adapter']} ({d['runtime']}): {t['steps_run']} steps ({t['stopped']}) in {t['seconds']:.0f}s, "
            f"peak memory {t['peak_memory_mb']:.0f} MB, {d['size_bytes'] / 2**20:.1f} MB\n"
            f"  {_data_text(d['data'] | {'facts': d['data'].get('facts', 0)})}\n  {loss}{acc}\n  {d['path']}")


@cli.command("adapters")
def cmd_adapters(args, settings: Settings) -> int:
    from .store import open_store
    from .train.adapters import describe_all

    with open_store(settings) as store:
        rows = describe_all(store, store.get_bot(settings.bot), settings.home_path)

    def text() -> str:
        if not rows:
            return f"bot {settings.bot!r} has no adapters; train one with `ragtune finetune`"
        out = []
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"] or 0))
            state = f"STALE ({r['stale_reason']})" if r["stale"] else "current"
            out.append(f"{r['id']}\t{when}\t{r['base_model']}{' raft' if r['raft'] else ''}\t{r['documents']} documents"
                       f"\t{r['steps']} steps\theld-out loss {r['held_out_loss']}\t{state}")
        return "\n".join(out)

    cli.emit(args, rows, text)
    return 0

