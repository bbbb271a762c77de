"""The default model reading ~1,000 tokens of retrieved context, per runtime (llama.cpp, torch), in one run.
For each held-out Poetry question, the bot's own prompt (system turn + numbered sources + question) is filled with
the retrieved chunks up to --context tokens, and the model writes a whole answer (up to --max-tokens, or its end of
turn). Reports, per runtime: time to the model's first token and to the end of the answer (p50/p95), the prompt's
size and the answer's length in tokens. Prints JSON lines, then a summary.

    .venv/bin/python benchmarks/long_context.py [--split test] [--context 1000] [--max-tokens 60]
        [--runtimes llama.cpp,torch]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from answers_matrix import SETS  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def main() -> None:
    from ragtune.evaluate.answers_bench import load_questions
    from ragtune.ingest.sync import register_sources, sync_bot
    from ragtune.models.embedders import open_embedder
    from ragtune.models.generators import open_generator
    from ragtune.settings import Settings
    from ragtune.store.sqlite import SQLiteStore
    from ragtune.strategies import RagStrategy

    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    ap.add_argument("--set", default="poetry-2.4.1", choices=list(SETS))
    ap.add_argument("--context", type=int, default=1000, help="tokens of sources in each prompt (about)")
    ap.add_argument("--max-tokens", type=int, default=60, help="most tokens an answer may have")
    ap.add_argument("--runtimes", default="llama.cpp,torch")
    args = ap.parse_args()
    docs, qfile = SETS[args.set]
    summary = []
    with tempfile.TemporaryDirectory() as home:
        # a window that leaves room for --context tokens of sources (RagStrategy._pack's own budget rule)
        settings = Settings.load(overrides={"home": home, "progress": False, "top_k": 12,
                                            "context_tokens": args.context + args.max_tokens + 250,
                                            "max_tokens": args.max_tokens})
        store = SQLiteStore(Path(home) / "ragtune.db")
        embedder = open_embedder(settings)
        bot = store.ensure_bot(args.set)
        register_sources(store, bot, [str(docs)], settings)
        sync_bot(store, settings, bot, embedder=embedder)
        questions = load_questions(qfile, args.split)
        for runtime in args.runtimes.split(","):
            run_settings = settings.replace(generator_runtime=runtime, context_tokens=2048)
            generator = open_generator(run_settings)
            generator.count_tokens("warm up")  # loads the model before the clock starts
            rag = RagStrategy(store, bot, settings, embedder, generator)
            first, total, sizes, lengths = [], [], [], []
            for case in questions:
                hits = rag.retriever.search(bot, case["question"], k=settings.top_k).hits
                context, _ = rag._pack(hits)
                messages = [{"role": "system", "content": rag.profile.system_prompt},
                            {"role": "user", "content": f"Sources:\n{context}\n\nQuestion: {case['question']}"}]
                started = time.perf_counter()
                t_first, text = None, ""
                for piece in generator.stream(messages, max_tokens=args.max_tokens):
                    if t_first is None:
                        t_first = time.perf_counter() - started
                    text += piece
                total.append(time.perf_counter() - started)
                first.append(t_first if t_first is not None else total[-1])
                sizes.append(generator.count_tokens(context))
                lengths.append(generator.count_tokens(text) if text else 0)
            row = {"runtime": runtime, "build": generator.runtime(), "model": generator.name, "set": args.set,
                   "split": args.split, "questions": len(questions), "context_tokens_p50": statistics.median(sizes),
                   "answer_tokens_p50": statistics.median(lengths), "answer_tokens_max": max(lengths),
                   "first_token_s_p50": round(percentile(first, 50), 3),
                   "first_token_s_p95": round(percentile(first, 95), 3),
                   "answer_s_p50": round(percentile(total, 50), 3), "answer_s_p95": round(percentile(total, 95), 3)}
            summary.append(row)
            print(json.dumps(row), flush=True)
            generator.close()
        store.close()
    base = summary[0]
    for row in summary[1:]:
        row["speedup_answer_p50_vs_" + base["runtime"]] = round(base["answer_s_p50"] / row["answer_s_p50"], 2)
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
