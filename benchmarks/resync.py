"""Whole-process time of re-ingesting unchanged Poetry docs with the real default embedder, then the counts
after swapping in the next release. Prints JSON.

    .venv/bin/python benchmarks/resync.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def ingest(home: Path, docs: Path) -> tuple[float, dict]:
    env = {**os.environ, "RAGTUNE_HOME": str(home), "RAGTUNE_NO_PROGRESS": "1"}
    env = {k: v for k, v in env.items() if k not in ("RAGTUNE_EMBEDDER",)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ragtune", "ingest", str(docs), "--json"], env=env,
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    poetry = Path(args.shared) / "datasets" / "poetry-docs"
    with tempfile.TemporaryDirectory() as tmp:
        home, docs = Path(tmp) / "home", Path(tmp) / "docs"
        shutil.copytree(poetry / "1.8.5" / "docs", docs)
        first_s, first = ingest(home, docs)
        runs = [ingest(home, docs) for _ in range(args.repeat)]
        shutil.rmtree(docs)
        shutil.copytree(poetry / "2.4.1" / "docs", docs)
        swap_s, swap = ingest(home, docs)
    walls = [r[0] for r in runs]
    print(json.dumps({
        "first_ingest_seconds": round(first_s, 2), "first": first,
        "reingest_unchanged_wall_seconds_median": round(statistics.median(walls), 3),
        "reingest_unchanged_wall_seconds_max": round(max(walls), 3),
        "reingest_chunks_embedded": [r[1]["chunks_embedded"] for r in runs],
        "reingest_counts": {k: runs[-1][1][k] for k in ("added", "updated", "removed", "unchanged")},
        "swap_to_2_4_1_seconds": round(swap_s, 2),
        "swap_counts": {k: swap[k] for k in ("added", "updated", "removed", "unchanged")}, "swap_failed": swap["failed"],
    }))


if __name__ == "__main__":
    main()
