"""Answer quality side by side: strategies × models × question sets, on the held-out `test` split.
Each set is indexed once into its own temporary bot; prints one JSON object per configuration as it finishes
(JSON lines), then a summary table.

    .venv/bin/python benchmarks/answers_matrix.py [--split test] [--configs rag:smollm2,base:smollm2,rag:qwen-0.5b]
        [--calibrate dev]

A model written `smollm2@torch` runs on the torch runtime (generator_runtime) instead of llama.cpp, and
`+name=value` after it sets any other setting for that configuration, e.g.
`--configs rag:smollm2,rag:smollm2@torch+quote_context=retrieved`.

--calibrate SPLIT first sets each bot's hand-off bar with `ragtune calibrate` on that split of its questions (never
the split being measured); rows then carry the bar as `calibrated`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETS = {
    "helpcenter-v1": (REPO / "examples/helpcenter/v1", REPO / "examples/helpcenter/questions-v1.jsonl"),
    "helpcenter-v2": (REPO / "examples/helpcenter/v2", REPO / "examples/helpcenter/questions-v2.jsonl"),
    "poetry-2.4.1": (REPO.parent / "shared/datasets/poetry-docs/2.4.1/docs", REPO / "benchmarks/questions/poetry-2.4.1.jsonl"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    ap.add_argument("--configs", default="rag-extract:smollm2,rag:smollm2,base:smollm2,rag:qwen-0.5b")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--calibrate", metavar="SPLIT", help="calibrate each bot's hand-off bar on this split first")
    args = ap.parse_args()
    if args.calibrate and args.calibrate in (args.split, "all"):
        ap.error("calibrate on a split other than the one measured")
    bars = {}
    summary = []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "RAGTUNE_HOME": home, "RAGTUNE_NO_PROGRESS": "1"}
        for name in args.sets.split(","):
            docs, _ = SETS[name]
            subprocess.run([sys.executable, "-m", "ragtune", "ingest", str(docs), "--bot", name, "--json"],
                           env=env, check=True, capture_output=True)
            if args.calibrate:
                out = subprocess.run([sys.executable, "-m", "ragtune", "calibrate", "--questions", str(SETS[name][1]),
                                      "--split", args.calibrate, "--bot", name, "--json"],
                                     env=env, check=True, capture_output=True, text=True).stdout
                bars[name] = json.loads(out)["chosen"]
                print(json.dumps({"set": name, "calibrated_on": args.calibrate, **bars[name]}), flush=True)
        for config in args.configs.split(","):
            strategy, model = config.split(":")
            model, *extra = model.split("+")  # smollm2+quote_context=retrieved: settings for this configuration
            model, _, runtime = model.partition("@")  # smollm2@torch: the torch runtime for a local GGUF model
            config_env = {f"RAGTUNE_{k.upper()}": v for k, v in (e.split("=", 1) for e in extra)}
            if runtime:
                config_env["RAGTUNE_GENERATOR_RUNTIME"] = runtime
            mode = []
            if strategy.startswith("rag-"):
                strategy, m = strategy.split("-", 1)
                mode = ["--answer-mode", m]
            for name in args.sets.split(","):
                _, questions = SETS[name]
                proc = subprocess.run(
                    [sys.executable, "-m", "ragtune", "bench", "answers", "--questions", str(questions), "--bot", name,
                     "--split", args.split, "--strategy", strategy, "--model", model, *mode, "--json"],
                    env={**env, **config_env}, capture_output=True, text=True)
                if proc.returncode:
                    row = {"config": config, "set": name, "error": proc.stderr.strip()}
                else:
                    r = json.loads(proc.stdout)
                    row = {"config": config, "set": name, **{k: v for k, v in r.items() if k != "per_question"}}
                    if name in bars:
                        row["calibrated"] = {"on": args.calibrate, "min_support": bars[name]["min_support"]}
                summary.append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps({"summary": [{k: r.get(k) for k in ("config", "set", "answer_accuracy", "abstention_accuracy",
                                                          "latency_ms_p50", "latency_ms_p95", "first_token_ms_p50", "context_tokens_p50",
                                                          "error")} for r in summary]}))


if __name__ == "__main__":
    main()
