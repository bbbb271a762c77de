"""`ragtune advise`: rag, finetune or hybrid for a project profile. The rule-based view weighs the seed article's
factors (how often the data changes, the knowledge's size and variety, real-time facts, budget, traffic, tone,
specialisation, privacy); a compare run's measurements are shown beside it and overturn it when they disagree
clearly, with the reason in plain words."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError, InputError

RECOMMENDATIONS = ("rag", "finetune", "hybrid")

# key: (valid values, assumed when missing, the question the questionnaire asks)
PROFILE: dict[str, tuple[tuple[Any, ...], Any, str]] = {
    "change_frequency": (("realtime", "daily", "weekly", "monthly", "yearly", "static"), "monthly",
                         "How often does the knowledge change?"),
    "knowledge_size": (("small", "medium", "large", "massive"), "medium",
                       "How much knowledge is there (small: a few dozen pages … massive: a whole library)?"),
    "knowledge_variety": (("narrow", "broad"), "broad",
                          "Is it one narrow domain or many products and topics?"),
    "realtime_facts": ((True, False), False,
                       "Must answers include facts that change by the hour (prices, stock, status)?"),
    "tone_consistency": (("low", "medium", "high"), "medium",
                         "How much does a consistent, on-brand tone matter?"),
    "domain_specialisation": (("low", "medium", "high"), "medium",
                              "How specialised is the domain (jargon, expert reasoning)?"),
    "training_budget": (("none", "low", "medium", "high"), "low",
                        "What budget and skills do you have to train and maintain a model?"),
    "traffic": (("low", "medium", "high"), "medium", "How much traffic will the bot get?"),
    "privacy": (("standard", "strict"), "standard", "Are there strict privacy or data-protection constraints?"),
}
PROFILE_KEYS = tuple(PROFILE)
_ORDER = {k: list(v[0]) for k, v in PROFILE.items()}
_FRESH = ("realtime", "daily", "weekly")
NAMES = {"rag": "RAG", "finetune": "fine-tuning", "hybrid": "hybrid (fine-tuning + RAG)", "base": "the base model"}


def _valid(key: str) -> str:
    values = PROFILE[key][0]
    return ", ".join("true, false" if v is True else str(v) for v in values if v is not False) \
        if key == "realtime_facts" else ", ".join(values)


def parse_value(key: str, value: Any) -> Any:
    """A profile value checked against its valid values; ConfigError listing them otherwise."""
    if key not in PROFILE:
        raise ConfigError(f"unknown profile key {key!r}; valid keys: {', '.join(PROFILE_KEYS)}")
    if key == "realtime_facts":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "y", "1"):
            return True
        if text in ("false", "no", "n", "0"):
            return False
        raise ConfigError(f"unknown realtime_facts {value!r}; valid values: true, false")
    text = str(value).strip().lower()
    if text not in PROFILE[key][0]:
        raise ConfigError(f"unknown {key} {value!r}; valid values: {_valid(key)}")
    return text


def load_profile(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"profile file {path} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"profile file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"profile file {path} must hold a JSON object with keys such as {', '.join(PROFILE_KEYS[:3])}")
    return {k: parse_value(k, v) for k, v in data.items()}


def complete(profile: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The profile with every key (missing ones assumed), and a sentence per assumption."""
    for key in profile:
        if key not in PROFILE:
            raise ConfigError(f"unknown profile key {key!r}; valid keys: {', '.join(PROFILE_KEYS)}")
    full, assumed = {}, []
    for key, (_, default, _) in PROFILE.items():
        if key in profile and profile[key] is not None:
            full[key] = parse_value(key, profile[key])
        else:
            full[key] = default
            shown = str(default).lower()
            assumed.append(f"{key} = {shown} (not given; assumed)")
    return full, assumed


# --------------------------------------------------------------------------- the rule-based view
@dataclass(frozen=True)
class Factor:
    strategy: str  # "rag" | "finetune"
    points: int
    reason: str


def factors(p: Mapping[str, Any]) -> list[Factor]:
    """Each of the seed's factors that points one way, with its weight and the reason in plain words."""
    out: list[Factor] = []
    change = p["change_frequency"]
    if change in ("realtime", "daily"):
        out.append(Factor("rag", 3, f"your knowledge changes {change}: RAG answers from the latest documents right "
                                    "after a sync, while a fine-tuned model would need retraining every time"))
    elif change == "weekly":
        out.append(Factor("rag", 2, "your knowledge changes weekly: RAG stays current with a sync, fine-tuning "
                                    "would need frequent retraining"))
    elif change == "yearly":
        out.append(Factor("finetune", 2, "your knowledge changes about once a year: stable enough to teach a model"))
    elif change == "static":
        out.append(Factor("finetune", 3, "your knowledge does not change: a fine-tuned model stays right for good"))
    if p["realtime_facts"]:
        out.append(Factor("rag", 3, "answers need real-time facts, which only retrieval at question time can "
                                    "supply; a trained model knows only what it was trained on"))
    size, variety = p["knowledge_size"], p["knowledge_variety"]
    if variety == "broad":
        if size in ("large", "massive"):
            out.append(Factor("rag", 2, f"a {size}, broad knowledge base is better retrieved on demand than stored "
                                        "in a model's weights"))
        else:
            out.append(Factor("rag", 1, "broad knowledge across many topics suits retrieval"))
    elif size in ("small", "medium"):
        out.append(Factor("finetune", 1, f"a {size}, narrow body of knowledge fits in an adapter"))
    elif change in ("yearly", "static"):
        out.append(Factor("finetune", 1, f"{size} but focused, stable knowledge: fine-tuning can master a narrow field"))
    budget = p["training_budget"]
    if budget == "none":
        out.append(Factor("rag", 3, "there is no budget to train and maintain a model"))
    elif budget == "low":
        out.append(Factor("rag", 2, "with limited resources RAG is the more affordable and flexible option"))
    elif budget == "medium":  # an enabler, not a reason to fine-tune
        out.append(Factor("finetune", 0, "you have resources to train and maintain a model"))
    else:
        out.append(Factor("finetune", 1, "you have ample resources to train and maintain a specialised model"))
    if p["traffic"] == "high":
        if variety == "narrow":
            out.append(Factor("finetune", 1, "high traffic of repeatable, specialised requests: a fine-tuned model "
                                             "answers without a retrieval step"))
        else:
            out.append(Factor("rag", 1, "high traffic with wide-ranging questions: RAG scales without the model "
                                        "storing all the knowledge"))
    if p["tone_consistency"] == "high":
        out.append(Factor("finetune", 2, "a consistent, on-brand tone matters, and fine-tuning teaches it"))
    if p["domain_specialisation"] == "high":
        out.append(Factor("finetune", 2, "the domain is highly specialised: fine-tuning gives depth and the field's "
                                         "language"))
    if p["privacy"] == "strict":
        out.append(Factor("finetune", 1, "strict privacy: a model trained on a static, controlled dataset exposes "
                                         "less than retrieval from live sources (ragtune's RAG reads only your own "
                                         "store, and erasing a document from its index is immediate)"))
    return out


def both_needs(p: Mapping[str, Any]) -> bool:
    """The seed's hybrid case: a specialised, focused service (tone or domain expertise that retrieval cannot
    give) whose facts still change. Broad or massive fast-changing knowledge (its legal, financial and healthcare
    cases) stays with RAG even when specialised."""
    fresh = p["change_frequency"] in _FRESH or bool(p["realtime_facts"])
    special = p["tone_consistency"] == "high" or p["domain_specialisation"] == "high"
    return fresh and special and p["knowledge_variety"] == "narrow"


def rule_view(p: Mapping[str, Any]) -> dict[str, Any]:
    """{recommendation, scores, reasons}: hybrid when both_needs and there is budget to train; otherwise the side
    with more weight (ties go to rag: cheaper, easier to keep current); never a trained model without a
    training budget."""
    fs = factors(p)
    scores = {s: sum(f.points for f in fs if f.strategy == s) for s in ("rag", "finetune")}
    rag, ft = scores["rag"], scores["finetune"]
    budget = p["training_budget"]
    lead = ""
    if budget == "none":
        choice = "rag"
        lead = "no training budget rules out fine-tuning"
    elif both_needs(p) and budget in ("medium", "high"):
        choice = "hybrid"
        lead = ("both needs are strong: fine-tune for the tone and the specialised domain, and retrieve the facts "
                "that change (the seed's hybrid case)")
    elif ft > rag:
        choice = "finetune"
    else:
        choice = "rag"
        if both_needs(p):
            lead = "a hybrid would fit both needs, but the training budget is low"
    ordered = sorted(fs, key=lambda f: -f.points)
    if choice == "hybrid":
        reasons = [f.reason for f in ordered]
    else:
        side = "finetune" if choice == "finetune" else "rag"
        reasons = [f.reason for f in ordered if f.strategy == side]
        reasons += [f"against it: {f.reason}" for f in ordered if f.strategy != side and f.points]
    if lead:
        reasons.insert(0, lead)
    return {"recommendation": choice, "scores": scores, "reasons": reasons}


def would_change(p: Mapping[str, Any]) -> list[str]:
    """For each factor, the nearest value that would flip the rule-based recommendation."""
    base = rule_view(p)["recommendation"]
    out = []
    for key, values in _ORDER.items():
        here = values.index(p[key])
        for dist in range(1, len(values)):
            flipped = None
            for i in (here - dist, here + dist):
                if 0 <= i < len(values):
                    alt = rule_view({**p, key: values[i]})["recommendation"]
                    if alt != base:
                        flipped = (values[i], alt)
                        break
            if flipped:
                shown = lambda v: str(v).lower()  # noqa: E731
                out.append(f"{key} were {shown(flipped[0])} instead of {shown(p[key])}: {flipped[1]}")
                break
    return out


# --------------------------------------------------------------------------- measured evidence
def weigh_evidence(rule: str, p: Mapping[str, Any], run: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(final recommendation, the reason in plain words, evidence). A measured strategy beats the rule-based one
    when its accuracy — averaged with accuracy after the documents changed, when the data changes often and the
    run measured it — is higher by more than the margin a sample of this size can tell apart; a trained model is
    never recommended without a training budget."""
    result = run.get("result") or {}
    metrics = result.get("strategies") or {}
    fresh = result.get("freshness") or {}
    acc = {s: m.get("accuracy") for s, m in metrics.items()}
    after = {s: (fresh.get(s) or {}).get("accuracy_after_change") for s in metrics if isinstance(fresh.get(s), dict)}
    n = max([m.get("answerable") or 0 for m in metrics.values()] or [0])
    dynamic = p["change_frequency"] in _FRESH or bool(p["realtime_facts"])
    use_after = dynamic and bool(after)
    measured = {}
    for s in RECOMMENDATIONS:
        if acc.get(s) is None:
            continue
        value = acc[s]
        if use_after and after.get(s) is not None:
            value = (acc[s] + after[s]) / 2
        measured[s] = round(value, 4)
    margin = round(max(0.1, 2 * math.sqrt(0.25 / n)) if n else 1.0, 3)  # ~2 standard errors at 50%
    evidence = {"run_id": run["id"], "bot": run.get("bot"), "status": run.get("status"),
                "questions": n, "accuracy": acc, "abstention_accuracy": {s: m.get("abstention_accuracy")
                                                                          for s, m in metrics.items()},
                "accuracy_after_change": after or None, "latency_ms_p50": {s: m.get("latency_ms_p50")
                                                                           for s, m in metrics.items()},
                "score": measured, "margin": margin, "uses_freshness": use_after}
    if not measured:
        evidence.update(verdict="inconclusive", measured_best=None)
        return rule, "the comparison run measured none of rag, finetune or hybrid, so it cannot weigh in", evidence
    allowed = [s for s in measured if p["training_budget"] != "none" or s == "rag"]
    best = max(allowed or measured, key=lambda s: (measured[s], s == rule, s == "rag"))
    evidence["measured_best"] = best
    facts = _facts_sentence(acc, after if use_after else {}, [s for s in RECOMMENDATIONS if s in measured])
    change = f"your documents change {p['change_frequency']}" + ("; answers need real-time facts"
                                                                 if p["realtime_facts"] else "")
    if rule not in measured:
        evidence["verdict"] = "inconclusive"
        return rule, f"measured on your data, {facts}; {NAMES[rule]} was not measured, so the rule-based view " \
                     "stands", evidence
    gap = measured[best] - measured[rule]
    if best != rule and gap > margin:
        evidence["verdict"] = "overturned"
        return best, f"on your data {facts}; {change}; recommend {best}", evidence
    evidence["verdict"] = "agrees"
    if best == rule:
        return rule, f"measured on your data, {facts}: {NAMES[rule]} did best; recommend {rule}", evidence
    return rule, (f"measured on your data, {facts}: {NAMES[best]} leads by {gap:.0%}, within the "
                  f"{margin:.0%} a {n}-question sample cannot tell apart; recommend {rule}"), evidence


def _facts_sentence(acc: Mapping[str, Any], after: Mapping[str, Any], names) -> str:
    parts = []
    for s in names:
        text = f"{NAMES[s]} answered {acc[s]:.0%}"
        if after.get(s) is not None:
            text += f" ({after[s]:.0%} after the documents changed)"
        parts.append(text)
    return " and ".join([", ".join(parts[:-1]), parts[-1]]) if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------- advice
def advise(profile: Mapping[str, Any], run: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"recommendation", "reasons", "assumed", "evidence", "would_change_if"} plus the rule-based view and the
    effective profile."""
    full, assumed = complete(profile)
    view = rule_view(full)
    recommendation = view["recommendation"]
    reasons = list(view["reasons"])
    evidence = None
    if run is not None:
        recommendation, why, evidence = weigh_evidence(recommendation, full, run)
        evidence["reason"] = why
        if recommendation != view["recommendation"]:
            reasons.insert(0, f"measured evidence overturns the rule-based {view['recommendation']}: {why}")
        else:
            reasons.insert(0, why)
    changes = [f"the rule-based view would recommend {c.split(': ')[-1]} if {c.rsplit(': ', 1)[0]}"
               for c in would_change(full)]
    if run is None:
        changes.append("a `ragtune compare` run on your own documents measured a clear difference (run "
                       "`ragtune compare`, then `ragtune advise` again)")
    else:
        changes.append("a later comparison measured a different strategy clearly ahead")
    return {"recommendation": recommendation, "reasons": reasons, "assumed": assumed, "evidence": evidence,
            "would_change_if": changes, "rule_based": {"recommendation": view["recommendation"],
                                                       "scores": view["scores"]}, "profile": full}


def questionnaire(ask: Callable[[str], str], say: Callable[[str], None]) -> dict[str, Any]:
    """Ask each profile question in the terminal; Enter keeps the assumption (reported as assumed)."""
    answers: dict[str, Any] = {}
    say("A few questions about your project (Enter = the assumption in brackets).")
    for key, (values, default, question) in PROFILE.items():
        shown = "yes/no" if key == "realtime_facts" else "/".join(values)
        default_shown = ("yes" if default else "no") if key == "realtime_facts" else default
        while True:
            try:
                reply = ask(f"{question} [{shown}] ({default_shown}): ").strip()
            except EOFError:
                return answers
            if not reply:
                break
            try:
                answers[key] = parse_value(key, reply)
                break
            except ConfigError as exc:
                say(str(exc))
    return answers
