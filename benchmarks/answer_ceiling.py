"""Where answers are lost: retrieval or the choice of evidence? For each question set (answerable questions):
- the rank of the first chunk from the expected source that holds a key fact, in the fused, dense and BM25
  lists (recall@1/3/5/10: does the answer reach the evidence step at all);
- answer accuracy if the bot never handed off (extract mode, support bars off): the most that tuning the
  abstention bar could give with the present ranking.
Prints one JSON object per set. Figures for tuning come from `--split dev`; report `test`.

    .venv/bin/python benchmarks/answer_ceiling.py [--split dev] [--sets helpcenter-v1,poetry-2.4.1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from answers_matrix import SETS  # noqa: E402

CUTS = (1, 3, 5, 10)


def first_rank(ranked_ids: list[str], good: set[str]) -> int | None:
    return next((k for k, cid in enumerate(ranked_ids) if cid in good), None)


def main() -> None:
    from ragtune.evaluate.answers_bench import bench_answers, load_questions
    from ragtune.ingest.sync import register_sources, sync_bot
    from ragtune.models.embedders import open_embedder
    from ragtune.models.generators import open_generator
    from ragtune.settings import Settings
    from ragtune.store.sqlite import SQLiteStore
    from ragtune.strategies import RagStrategy

    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="dev")
    ap.add_argument("--sets", default=",".join(SETS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.load(overrides={"home": home, "progress": False, "generator": "echo"})
        store = SQLiteStore(Path(home) / "ragtune.db")
        embedder = open_embedder(settings)
        generator = open_generator(settings)
        never = settings.replace(min_support=-1.0, min_support_agreed=-1.0)
        for name in args.sets.split(","):
            docs, qfile = SETS[name]
            bot = store.ensure_bot(name)
            register_sources(store, bot, [str(docs)], settings)
            sync_bot(store, settings, bot, embedder=embedder)
            questions = [q for q in load_questions(qfile, args.split) if q["answers"]]
            strategy = RagStrategy(store, bot, never, embedder, generator, answer_mode="extract")
            found = {lst: {c: 0 for c in CUTS} for lst in ("fused", "dense", "bm25")}
            for case in questions:
                r = strategy.retriever.search(bot, case["question"], k=settings.candidates)
                keys = [a.lower() for a in case["answers"]]
                good = {h.chunk_id for h in r.hits if Path(h.source).name == Path(case["source"]).name
                        and any(k in h.text.lower() for k in keys)}
                ranks = {"fused": first_rank([h.chunk_id for h in r.hits], good),
                         "dense": first_rank([c for c, _ in r.dense], good),
                         "bm25": first_rank([c for c, _ in r.lexical], good)}
                for lst, rank in ranks.items():
                    for c in CUTS:
                        found[lst][c] += rank is not None and rank < c
            result = bench_answers(strategy, questions)
            n = len(questions)
            print(json.dumps({
                "set": name, "split": args.split, "answerable": n,
                "answer_chunk_recall": {lst: {f"@{c}": round(v / n, 3) for c, v in cuts.items()}
                                        for lst, cuts in found.items()},
                "answer_accuracy_never_handing_off": result["answer_accuracy"],
                "answer_accuracy_never_handing_off_ci95": result["answer_accuracy_ci95"],
                "handed_off_anyway": result["false_abstentions"],  # sources that disagree still hand off
            }), flush=True)
        store.close()


if __name__ == "__main__":
    main()
