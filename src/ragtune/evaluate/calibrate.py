"""Calibrating a bot's hand-off bar on its own labelled questions (`ragtune calibrate`).

How high the evidence must score before the bot answers depends on the knowledge base (short help-centre pages
score differently from a long CLI reference), so one global `min_support` is a compromise. Calibration answers a
question file once with the bar off (quotes only, no model: fast), notes for each question its evidence support and
whether the answer would be right, then picks the bar that answers the most questions right while handing off at
least `target` of the unanswerable ones. Calibrate on a `dev` split and judge the result on held-out questions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import InputError


@dataclass(frozen=True)
class Outcome:
    bar: float
    answer_accuracy: float
    abstention_accuracy: float

    def to_json(self) -> dict[str, float]:
        return {"min_support": round(self.bar, 3), "answer_accuracy": round(self.answer_accuracy, 4),
                "abstention_accuracy": round(self.abstention_accuracy, 4)}


def observe(strategy, questions: Sequence[dict[str, Any]], progress: bool = False) -> list[dict[str, Any]]:
    """Per-question rows of `bench answers` for a strategy whose support bars are off."""
    from .answers_bench import bench_answers

    return bench_answers(strategy, list(questions), progress)["per_question"]


def outcome(rows: Sequence[dict[str, Any]], bar: float, settings) -> Outcome:
    """What the rows would score with `bar` as min_support (strategies.hand_off_bar decides each answer)."""
    from ..strategies import hand_off_bar

    def answered(r) -> bool:
        ev = r.get("evidence") or {}
        return not r["abstained"] and ev.get("support", 0.0) >= hand_off_bar(bar, settings, ev)

    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    return Outcome(bar, sum(r["correct"] and answered(r) for r in ans) / max(1, len(ans)),
                   sum(not answered(r) for r in una) / max(1, len(una)))


def choose(rows: Sequence[dict[str, Any]], target: float, settings) -> Outcome:
    """The bar with the best answer accuracy among those handing off at least `target` of the unanswerable
    questions (then the best abstention accuracy); of equally good bars, the middle one, so the bar sits mid-gap
    between the questions it separates rather than against one of them."""
    from ..strategies import bar_relief

    if not any(r["answerable"] for r in rows) or all(r["answerable"] for r in rows):
        raise InputError("calibration needs both answerable questions and unanswerable ones (empty answers)")
    # the bars at which some question changes sides: its support plus its relief
    edges = sorted({round(ev.get("support", 0.0) + bar_relief(settings, ev), 4)
                    for ev in ((r.get("evidence") or {}) for r in rows)})
    cuts = [edges[0] - 0.01, *((a + b) / 2 for a, b in zip(edges, edges[1:])), edges[-1] + 0.01]
    results = [outcome(rows, c, settings) for c in cuts]
    feasible = [o for o in results if o.abstention_accuracy >= target] or results
    best = max((o.answer_accuracy, o.abstention_accuracy) for o in feasible)
    ties = [o for o in feasible if (o.answer_accuracy, o.abstention_accuracy) == best]
    return ties[len(ties) // 2]
