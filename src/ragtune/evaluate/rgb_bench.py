"""`ragtune bench rgb`: counterfactual robustness on RGB en_fact — each question gets its own bot holding correct,
deliberately wrong and irrelevant passages; how often does an answer follow a wrong passage, per strategy?"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..ingest.sync import register_sources, sync_bot
from ..settings import Settings
from ..store.sqlite import SQLiteStore
from ..strategies import open_strategy


def _as_list(v) -> list[str]:
    if isinstance(v, list):
        return [str(x) for item in v for x in (item if isinstance(item, list) else [item])]
    return [str(v)]


def bench_rgb(path: str | Path, settings: Settings, embedder, generator, strategies=("base", "rag"),
              limit: int = 0, n_pos: int = 2, n_wrong: int = 2, n_neg: int = 2) -> dict[str, Any]:
    try:
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read RGB file {path}: {exc}") from exc
    rows = rows[:limit] if limit else rows
    stats = {s: {"follows_wrong": 0, "correct": 0, "abstained": 0} for s in strategies}
    per = []
    with tempfile.TemporaryDirectory(prefix="ragtune-rgb-") as tmp:
        settings = settings.replace(home=tmp, progress=False)
        store = SQLiteStore(Path(tmp) / "ragtune.db")
        for row in rows:
            folder = Path(tmp) / f"q{row['id']}"
            folder.mkdir()
            passages = (row["positive"][:n_pos] + row["positive_wrong"][:n_wrong] + row["negative"][:n_neg])
            for j, text in enumerate(passages):
                (folder / f"p{j}.txt").write_text(text, encoding="utf-8")
            bot = store.ensure_bot(f"q{row['id']}")
            register_sources(store, bot, [str(folder)], settings)
            sync_bot(store, settings, bot, embedder=embedder)
            item = {"id": row["id"], "query": row["query"]}
            for name in strategies:
                a = open_strategy(name, store, bot, settings, embedder, generator).answer(row["query"])
                text = a.answer.lower()
                wrong = any(f.lower() in text for f in _as_list(row["fakeanswer"])) and not a.abstained
                right = any(x.lower() in text for x in _as_list(row["answer"])) and not a.abstained
                stats[name]["follows_wrong"] += wrong
                stats[name]["correct"] += right
                stats[name]["abstained"] += a.abstained
                item[name] = {"answer": a.answer[:300], "follows_wrong": wrong, "correct": right,
                              "abstained": a.abstained}
            per.append(item)
        store.close()
    n = max(len(rows), 1)
    return {
        "file": str(path), "questions": len(rows),
        "passages_per_question": {"correct": n_pos, "wrong": n_wrong, "irrelevant": n_neg},
        "strategies": {s: {"follows_wrong_rate": round(v["follows_wrong"] / n, 4), "correct_rate": round(v["correct"] / n, 4),
                           "abstained_rate": round(v["abstained"] / n, 4)} for s, v in stats.items()},
        "per_question": per,
    }
