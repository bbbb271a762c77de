"""`ragtune bench answers`: score a strategy on a question file — answer accuracy (a key fact in the answer and
the right source cited), abstention accuracy on unanswerable questions, latency and time to first token."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..ingest.loaders import JsonlError, jsonl_rows
from ..types import Answer
from .metrics import percentile, wilson_interval


def load_questions(path: str | Path, split: str = "all") -> list[dict[str, Any]]:
    """JSONL lines {"question": str, "answers": [str], "source": str}; empty answers = unanswerable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"question file {path} does not exist")
    out = []
    try:
        for n, row in jsonl_rows(p.read_text(encoding="utf-8", errors="replace")):
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
                raise InputError(f"{path}:{n}: each line needs a non-empty \"question\" string")
            answers = row.get("answers", [])
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise InputError(f"{path}:{n}: \"answers\" must be a list of strings")
            if split != "all" and row.get("split", "all") != split:
                continue
            out.append({"question": row["question"], "answers": answers, "source": row.get("source") or "",
                        "split": row.get("split", "")})
    except JsonlError as exc:
        raise InputError(f"{path}:{exc.line}: not valid JSON ({exc.msg})") from None
    if not out:
        raise InputError(f"{path}: no questions" + (f" with split {split!r}" if split != "all" else ""))
    return out


def is_correct(answer: Answer, case: dict[str, Any], require_citation: bool = True) -> bool:
    if answer.abstained or not case["answers"]:
        return False
    text = answer.answer.lower()
    if not any(a.lower() in text for a in case["answers"]):
        return False
    if not require_citation or not case["source"]:
        return True
    return any(Path(c.source).name == Path(case["source"]).name for c in answer.citations)


def _model_ran(answer: Answer) -> bool:
    """Whether the generator wrote (part of) this answer: not an extractive one, nor a hand-off decided before
    the model ran (rag records what the model said as evidence.raw_answer; strategies without evidence always
    run it)."""
    evidence = answer.extra.get("evidence")
    return answer.model != "extractive" and (evidence is None or "raw_answer" in evidence)


def _names(sources) -> set[str]:
    return {Path(s).name for s in sources if s}


def bench_answers(strategy, questions: list[dict[str, Any]], progress: bool = False) -> dict[str, Any]:
    from tqdm import tqdm

    per, latencies, ttfts = [], [], []
    generator = getattr(strategy, "generator", None)
    if generator is not None:  # a local model loads (and verifies) before the clock starts, as a server's does once
        generator.count_tokens("warm up")
    for case in tqdm(questions, desc=f"answering ({strategy.name})", unit="q", disable=not progress, file=sys.stderr,
                     leave=False):
        started = time.perf_counter()
        first = None
        final = None
        for item in strategy.stream(case["question"]):
            if first is None:
                first = (time.perf_counter() - started) * 1000
            if isinstance(item, Answer):
                final = item
        total = (time.perf_counter() - started) * 1000
        latencies.append(total)
        ttfts.append(first or total)
        answerable = bool(case["answers"])
        ok = is_correct(final, case) if answerable else final.abstained
        per.append({"question": case["question"], "answerable": answerable, "correct": ok,
                    "abstained": final.abstained, "answer": final.answer,
                    "expected": case["answers"], "expected_source": case["source"],
                    "cited": [c.source for c in final.citations],
                    "suggested": [c["source"] for c in final.extra.get("suggestions", [])], "ms": round(total, 1),
                    "evidence": final.extra.get("evidence"), "model_ran": _model_ran(final)})
    ans = [p for p in per if p["answerable"]]
    una = [p for p in per if not p["answerable"]]
    ran = [p["ms"] for p in per if p["model_ran"]]
    read = [p["evidence"]["context_tokens"] for p in per if p["model_ran"] and "context_tokens" in (p["evidence"] or {})]
    rate = lambda xs: round(sum(p["correct"] for p in xs) / len(xs), 4) if xs else None  # noqa: E731

    def interval(xs):
        ci = wilson_interval(sum(p["correct"] for p in xs), len(xs))
        return [round(ci[0], 3), round(ci[1], 3)] if ci else None
    generator = getattr(strategy, "generator", None)
    return {
        "strategy": strategy.name,
        "model": getattr(generator, "name", ""),
        # what ran the model (e.g. llama.cpp's build level): latencies differ ~2x between builds on one CPU
        "runtime": generator.runtime() if generator else "",
        "questions": len(per), "answerable": len(ans), "unanswerable": len(una),
        "answer_accuracy": rate(ans), "abstention_accuracy": rate(una),
        # 95% Wilson intervals: a set of 20 questions cannot tell 0.75 from 0.85
        "answer_accuracy_ci95": interval(ans), "abstention_accuracy_ci95": interval(una),
        "false_abstentions": sum(p["abstained"] for p in ans),
        # hand-offs still point somewhere: how often a false abstention suggested the page holding the answer, and
        # how often an unanswerable question got pages suggested at all
        "false_abstentions_with_right_page": sum(p["abstained"] and bool(_names(p["suggested"]) &
                                                                         _names([p["expected_source"]])) for p in ans),
        "unanswerable_with_suggestions": sum(bool(p["suggested"]) for p in una),
        "latency_ms_p50": round(percentile(latencies, 50), 1), "latency_ms_p95": round(percentile(latencies, 95), 1),
        "first_token_ms_p50": round(percentile(ttfts, 50), 1), "first_token_ms_p95": round(percentile(ttfts, 95), 1),
        # answers the model wrote part of (quote mode runs it only when a value is asked for) and their latency
        "model_ran": len(ran), "model_ran_latency_ms_p50": round(percentile(ran, 50), 1) if ran else None,
        "model_ran_latency_ms_p95": round(percentile(ran, 95), 1) if ran else None,
        # tokens of sources the model read besides the question, where it ran
        "context_tokens_p50": round(percentile(read, 50)) if read else None,
        "context_tokens_max": max(read) if read else None,
        "per_question": per,
    }
