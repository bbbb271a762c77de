"""What the installed llama.cpp build computes, so two builds (levels, patches in tools/llama-cpp/) can be compared.
The default model (its served copy, as `ragtune ask` loads it) reads Poetry doc pages: each page's first --prompt
tokens as one batch (the prompt kernels), then --steps tokens one at a time (the per-token kernels), and reports the
mean negative log-likelihood of each true next token on both paths (lower = the model predicts the docs better; a
build that computes wrong numbers shows here) and the time per prompt and per token (a prompt's time here includes
the output layer at every position, which answering computes only at the last: compare builds with it, not with
answer latencies). `--save FILE` keeps the predicted (top) tokens; `--compare FILE` reports how often this build
predicts the same top token as the saved one. Prints one JSON object.

    .venv/bin/python benchmarks/llama_numerics.py --save /tmp/a.json      # build A
    (rebuild: LLAMA_LEVEL=... sh tools/install-llama-cpp.sh .venv/bin/python, or edit a patch)
    .venv/bin/python benchmarks/llama_numerics.py --compare /tmp/a.json   # build B against A
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "poetry-docs" / "2.4.1" / "docs"
PAGES = ("cli.md", "managing-dependencies.md", "configuration.md")


def log_softmax_at(logits, token: int) -> tuple[float, int]:
    """(negative log-likelihood of `token`, the top token) from one row of logits."""
    import numpy as np

    row = np.asarray(logits, dtype=np.float64)
    top = float(row.max())
    return top + math.log(float(np.exp(row - top).sum())) - float(row[token]), int(row.argmax())


def main() -> None:
    import llama_cpp

    from ragtune.models.generators import open_generator
    from ragtune.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", type=int, default=600, help="tokens read as one batch per page")
    ap.add_argument("--steps", type=int, default=200, help="tokens then read one at a time per page")
    ap.add_argument("--save", help="write the top tokens here")
    ap.add_argument("--compare", help="a file written by --save with another build")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as home:  # the served copy of the default model, as `ask` makes it
        generator = open_generator(Settings.load(overrides={"home": home, "progress": False}))
        report = measure(llama_cpp, generator.model_file(), generator.runtime(), generator.n_threads, args)
    print(json.dumps(report))


def measure(llama_cpp, model: Path, runtime: str, threads: int, args: argparse.Namespace) -> dict:
    n = args.prompt + args.steps
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=n + 8, n_threads=threads, n_threads_batch=threads,
                          flash_attn=True, logits_all=True, verbose=False)
    prompt_nll, step_nll, tops, prompt_s, step_ms = [], [], [], [], []
    for page in PAGES:
        tokens = llm.tokenize((DOCS / page).read_text().encode())[:n]
        llm.reset()
        started = time.perf_counter()
        llm.eval(tokens[:args.prompt])
        prompt_s.append(time.perf_counter() - started)
        # llm.scores[i]: the logits after token i (logits_all keeps every row, across llama.cpp's batches)
        prompt_nll += [log_softmax_at(llm.scores[i], tokens[i + 1])[0] for i in range(args.prompt - 1)]
        for i in range(args.prompt, len(tokens)):
            nll, top = log_softmax_at(llm.scores[i - 1], tokens[i])
            step_nll.append(nll)
            tops.append(top)
            started = time.perf_counter()
            llm.eval([tokens[i]])
            step_ms.append((time.perf_counter() - started) * 1000)
    report = {"build": runtime, "model": model.name, "pages": list(PAGES), "prompt_tokens": args.prompt, "steps": len(step_nll),
              "prompt_nll": round(statistics.fmean(prompt_nll), 4), "step_nll": round(statistics.fmean(step_nll), 4),
              "prompt_s_p50": round(statistics.median(prompt_s), 3), "step_ms_p50": round(statistics.median(step_ms), 2)}
    if args.compare:
        other = json.loads(Path(args.compare).read_text())
        pairs = list(zip(other["tops"], tops))
        report["same_top_token"] = round(sum(a == b for a, b in pairs) / max(1, len(pairs)), 4)
        report["compared_with"] = {k: other[k] for k in ("build", "prompt_nll", "step_nll")}
    if args.save:
        Path(args.save).write_text(json.dumps({**report, "tops": tops}))
    llm.close()
    return report


if __name__ == "__main__":
    main()
