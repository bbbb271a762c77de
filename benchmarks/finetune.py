"""Fine-tuning acceptance on the sample help centre (examples/helpcenter/v1), printed as JSON:

1. question synthesis: the deterministic template method vs the local generator, measured on the same facts;
2. `ragtune finetune --json` with the default budget, as a user runs it (its own process: wall time, peak RSS,
   adapter size);
3. base / rag / finetune / hybrid on questions-paraphrased-v1.jsonl (or `--questions FILE`) (`--split test`: 20 answerable questions
   phrased unlike any training question, never trained or tuned on; `--split dev`: 12 others, for tuning),
   accuracy = a key fact in the answer, latency p50/p95 in the same run;
4. the adapter served by llama.cpp (GGUF LoRA) vs transformers + peft on the same questions.

    .venv/bin/python benchmarks/finetune.py [--home DIR] [--raft] [--steps N] [--max-minutes M] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "helpcenter"


def run_cli(home: Path, *args: str, env_extra: dict | None = None) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update({"RAGTUNE_HOME": str(home), "RAGTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}, **(env_extra or {}))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ragtune", *args, "--json"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"ragtune {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - t0, json.loads(proc.stdout)


def evaluate(strategy, questions, require_citation: bool) -> dict:
    from ragtune.evaluate.answers_bench import is_correct
    from ragtune.evaluate.metrics import percentile

    rows, ms = [], []
    for case in questions:
        t0 = time.perf_counter()
        answer = strategy.answer(case["question"])
        ms.append((time.perf_counter() - t0) * 1000)
        rows.append({"question": case["question"], "expected": case["answers"], "answer": answer.answer[:300],
                     "correct": is_correct(answer, case, require_citation=False),
                     "correct_with_citation": is_correct(answer, case, require_citation=True),
                     "abstained": answer.abstained})
    n = len(rows)
    return {"accuracy": round(sum(r["correct"] for r in rows) / n, 3),
            "accuracy_with_citation": round(sum(r["correct_with_citation"] for r in rows) / n, 3)
            if require_citation else None,
            "abstained": sum(r["abstained"] for r in rows),
            "latency_ms_p50": round(percentile(ms, 50), 1), "latency_ms_p95": round(percentile(ms, 95), 1),
            "per_question": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", help="RAGTUNE_HOME to use (default: a temporary folder)")
    ap.add_argument("--raft", action="store_true", help="train with --raft")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--paraphrases", type=int, help="questions per fact (ragtune finetune --paraphrases)")
    ap.add_argument("--model", help="base model to train and answer with (ragtune finetune --model): smollm2 | qwen-0.5b")
    ap.add_argument("--threads", type=int, default=0, help="threads for answering (0 = all cores)")
    ap.add_argument("--synth-sample", type=int, default=12, help="facts in the synthesis comparison (0 = skip)")
    ap.add_argument("--transformers-n", type=int, default=6, help="questions answered by the transformers runtime")
    ap.add_argument("--skip-train", action="store_true", help="reuse the newest adapter already in --home")
    ap.add_argument("--strategies", default="base,rag,finetune,hybrid", help="comma-separated strategies to score")
    ap.add_argument("--no-runtimes", action="store_true", help="skip the llama.cpp vs transformers comparison")
    ap.add_argument("--split", default="test", help="questions of this split: test (report) or dev (tuning)")
    ap.add_argument("--questions", default=str(EXAMPLES / "questions-paraphrased-v1.jsonl"),
                    help="question file over the v1 help centre (answerable questions are scored); e.g. "
                         "examples/helpcenter/questions-v1.jsonl --split dev for 24 more customer-phrased dev questions")
    args = ap.parse_args()

    from ragtune.evaluate.answers_bench import load_questions
    from ragtune.ingest.sync import register_sources, sync_bot
    from ragtune.models.embedders import open_embedder
    from ragtune.models.generators import open_generator
    from ragtune.settings import Settings
    from ragtune.store.sqlite import SQLiteStore
    from ragtune.strategies import open_strategy
    from ragtune.train.dataset import compare_synthesis, extract_facts, read_knowledge

    tmp = tempfile.TemporaryDirectory()
    home = Path(args.home) if args.home else Path(tmp.name) / "home"
    home.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()}}
    settings = Settings.load(overrides={"home": str(home), "progress": False, "threads": args.threads,
                                        **({"generator": args.model} if args.model else {})}, env={})
    store = SQLiteStore(home / "ragtune.db")
    bot = store.ensure_bot("default")
    embedder = open_embedder(settings)
    if not store.count(bot)["documents"]:
        register_sources(store, bot, [str(EXAMPLES / "v1")], settings)
        sync_bot(store, settings, bot, embedder=embedder)
    out["kb"] = store.count(bot)

    # 1. question synthesis: template vs the local model, same facts
    generator = open_generator(settings)
    chunks, _ = read_knowledge(store, bot)
    facts = extract_facts(chunks)
    if args.synth_sample:
        out["synthesis"] = compare_synthesis(store, bot, facts, generator, n=4, sample=args.synth_sample)
        out["synthesis"]["facts"] = len(facts)

    # 2. training, as a user runs it
    if not args.skip_train:
        flags = ["finetune"] + (["--raft"] if args.raft else []) + \
            (["--steps", str(args.steps)] if args.steps else []) + \
            (["--max-minutes", str(args.max_minutes)] if args.max_minutes else []) + \
            (["--paraphrases", str(args.paraphrases)] if args.paraphrases else []) + \
            (["--model", args.model] if args.model else [])
        wall, trained = run_cli(home, *flags)
        out["training"] = {"command": "ragtune " + " ".join(flags) + " --json", "wall_seconds": round(wall, 1),
                           **trained}

    # 3. strategies on the paraphrased questions
    qfile = Path(args.questions)
    questions = [q for q in load_questions(qfile) if q["answers"] and q.get("split", "test") == args.split]
    out["questions"] = {"file": str(qfile), "split": args.split, "n": len(questions)}
    results = {}
    for name in args.strategies.split(","):
        strategy = open_strategy(name, store, bot, settings, embedder, generator)
        results[name] = evaluate(strategy, questions, require_citation=name in ("rag", "hybrid"))
        results[name]["model"] = strategy.generator.name
        if name in ("finetune", "hybrid"):
            results[name]["adapter"] = strategy.info
    out["strategies"] = results

    # 4. the adapter's two runtimes on the same first questions
    few = questions[: args.transformers_n]
    runtimes = {}
    for runtime in () if args.no_runtimes else ("llama.cpp", "transformers"):
        s = settings.replace(adapter_runtime=runtime)
        t0 = time.perf_counter()
        strategy = open_strategy("finetune", store, bot, s, embedder, generator)
        strategy.answer(few[0]["question"])  # loads the model
        load_s = time.perf_counter() - t0
        r = evaluate(strategy, few, require_citation=False)
        runtimes[runtime] = {"load_seconds": round(load_s, 1), "accuracy": r["accuracy"], "n": len(few),
                             "latency_ms_p50": r["latency_ms_p50"], "latency_ms_p95": r["latency_ms_p95"]}
    out["finetune_runtimes"] = runtimes
    acc = {k: v["accuracy"] for k, v in results.items()}
    out["acceptance"] = {"accuracy": acc}
    if "finetune" in acc:
        out["acceptance"]["finetune_ge_0.5"] = acc["finetune"] >= 0.5
    if "base" in acc:
        out["acceptance"]["base_le_0.2"] = acc["base"] <= 0.2
    if "hybrid" in acc and "rag" in acc:
        out["acceptance"]["hybrid_ge_rag"] = acc["hybrid"] >= acc["rag"]
    out["machine"]["load_average_end"] = os.getloadavg()
    store.close()
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
