"""Cost of parsing in an isolated worker process: loaders called in-process vs through ParserPool (one reused
worker with time and memory limits), on N generated Markdown files and on the Poetry docs. Prints JSON.

    .venv/bin/python benchmarks/parse_isolation.py [--docs 1000] [--repeat 3] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ragtune.ingest.isolation import ParserPool
from ragtune.ingest.loaders import load_file

MB = 1024 * 1024


def in_process(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        load_file(f, 50 * MB)
    return time.perf_counter() - t0


def isolated(files: list[Path]) -> tuple[float, float]:
    """(seconds for all files including worker start and stop, seconds for the first file alone)"""
    t0 = time.perf_counter()
    with ParserPool() as pool:
        pool.load_file(files[0], 50 * MB)
        first = time.perf_counter() - t0
        for f in files[1:]:
            pool.load_file(f, 50 * MB)
    return time.perf_counter() - t0, first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        generated = []
        for i in range(args.docs):
            path = Path(tmp) / f"d{i:05d}.md"
            path.write_text(f"# Doc {i}\n\n" + f"Fact number {i} is about item {i}. " * 40)
            generated.append(path)
        corpora = {"generated": generated}
        poetry = Path(args.shared) / "datasets" / "poetry-docs" / "2.4.1" / "docs"
        if poetry.is_dir():
            corpora["poetry-2.4.1"] = sorted(poetry.glob("*.md"))
        for name, files in corpora.items():
            base = [in_process(files) for _ in range(args.repeat)]
            iso = [isolated(files) for _ in range(args.repeat)]
            b, s = statistics.median(base), statistics.median(t for t, _ in iso)
            results[name] = {
                "files": len(files),
                "in_process_s": round(b, 3),
                "isolated_s": round(s, 3),
                "overhead_s": round(s - b, 3),
                "overhead_ms_per_file": round(1000 * (s - b) / len(files), 3),
                "first_file_s": round(statistics.median(f for _, f in iso), 3),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
