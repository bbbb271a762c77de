"""Embedding speed of the two all-MiniLM-L6-v2 backends on the same texts in the same run (SciFact abstracts),
plus how close their vectors are. Prints JSON.

    .venv/bin/python benchmarks/embedders.py [--n 400]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ragtune.models.embedders import OnnxMiniLMEmbedder, TorchMiniLMEmbedder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/scifact/corpus.jsonl"))
    args = ap.parse_args()
    texts = []
    with open(args.corpus, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts.append(f"{d.get('title', '')}\n{d['text']}")
            if len(texts) >= args.n:
                break
    queries = [json.loads(line)["text"] for line in open(Path(args.corpus).with_name("queries.jsonl"), encoding="utf-8")]
    queries = queries[: args.n]
    out = {"texts": len(texts), "queries": len(queries)}
    vecs = {}
    for name, emb in (("onnx-int8", OnnxMiniLMEmbedder()), ("torch-fp32", TorchMiniLMEmbedder())):
        t0 = time.perf_counter()
        emb.embed(texts[:16])  # load + warm up
        out[f"{name}_load_seconds"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        vecs[name] = emb.embed(texts)
        out[f"{name}_passages_per_second"] = round(len(texts) / (time.perf_counter() - t0), 1)
        t0 = time.perf_counter()
        for q in queries:
            emb.embed_query(q)
        out[f"{name}_single_queries_per_second"] = round(len(queries) / (time.perf_counter() - t0), 1)
    cos = np.sum(vecs["onnx-int8"] * vecs["torch-fp32"], axis=1)
    out["cosine_onnx_vs_torch_mean"] = round(float(cos.mean()), 4)
    out["cosine_onnx_vs_torch_min"] = round(float(cos.min()), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
