"""`ragtune advise`: the seed article's own cases, assumptions said out loud, unknown values refused with the valid
ones listed, measured evidence beside the rules (and able to overturn them, in plain words), the questionnaire."""

import json

import pytest

from conftest import run_cli, run_json
from ragtune.advisor import PROFILE_KEYS, advise, complete, load_profile, questionnaire, rule_view
from ragtune.errors import ConfigError, InputError

# The seed's examples (../shared/seed/rag-vs-fine-tuning.txt), each as the profile its text describes.
SEED_CASES = {
    # "Customer Support for Diverse Products": many products, updates and FAQs, recent software updates
    "customer-support": ("rag", dict(change_frequency="weekly", knowledge_size="large", knowledge_variety="broad",
                                     realtime_facts=True, tone_consistency="medium", domain_specialisation="low",
                                     training_budget="medium", traffic="high", privacy="standard")),
    # "Legal or Financial Advice": laws, regulations and markets change daily; current statutes, stock prices
    "legal-financial": ("rag", dict(change_frequency="daily", knowledge_size="massive", knowledge_variety="broad",
                                    realtime_facts=True, tone_consistency="medium", domain_specialisation="high",
                                    training_budget="medium", traffic="medium", privacy="strict")),
    # "Healthcare and Medical Research": guidelines and studies constantly evolve, patient records in real time
    "healthcare": ("rag", dict(change_frequency="weekly", knowledge_size="massive", knowledge_variety="broad",
                               realtime_facts=True, tone_consistency="medium", domain_specialisation="high",
                               training_budget="high", traffic="medium", privacy="strict")),
    # "Specialized Customer Service": insurance or software; protocols, tone guidelines, on-brand answers
    "specialised-service": ("finetune", dict(change_frequency="monthly", knowledge_size="medium",
                                             knowledge_variety="narrow", realtime_facts=False,
                                             tone_consistency="high", domain_specialisation="high",
                                             training_budget="medium", traffic="medium", privacy="standard")),
    # "Content Generation in Specific Industries": styles, tones, terminology; technical writing, legal briefs
    "industry-content": ("finetune", dict(change_frequency="yearly", knowledge_size="large", knowledge_variety="narrow",
                                          realtime_facts=False, tone_consistency="high", domain_specialisation="high",
                                          training_budget="high", traffic="low", privacy="standard")),
    # "Internal Knowledge Systems": HR policies, handbooks, compliance documents that rarely change
    "internal-knowledge": ("finetune", dict(change_frequency="yearly", knowledge_size="small",
                                            knowledge_variety="narrow", realtime_facts=False,
                                            tone_consistency="medium", domain_specialisation="medium",
                                            training_budget="medium", traffic="high", privacy="strict")),
    # FAQ 3, "smaller businesses or startups with limited resources": little else known
    "startup": ("rag", dict(training_budget="low", traffic="low", knowledge_size="small")),
    # FAQ 1, the hybrid: fine-tuned for customer service of a specific product, RAG for real-time updates
    "hybrid": ("hybrid", dict(change_frequency="weekly", knowledge_size="medium", knowledge_variety="narrow",
                              realtime_facts=True, tone_consistency="high", domain_specialisation="high",
                              training_budget="medium", traffic="medium", privacy="standard")),
}


@pytest.mark.parametrize("case", sorted(SEED_CASES))
def test_seed_cases(case):
    expected, profile = SEED_CASES[case]
    result = advise(profile)
    assert result["recommendation"] == expected, result["reasons"]
    assert result["reasons"] and result["evidence"] is None
    assert set(result) >= {"recommendation", "reasons", "assumed", "evidence", "would_change_if"}


def test_reasons_follow_the_seed_factors():
    r = advise(SEED_CASES["legal-financial"][1])
    assert any("changes daily" in x for x in r["reasons"]) and any("real-time facts" in x for x in r["reasons"])
    r = advise(SEED_CASES["internal-knowledge"][1])
    assert any("once a year" in x for x in r["reasons"])
    r = advise(SEED_CASES["hybrid"][1])
    assert "hybrid" in r["reasons"][0]
    assert advise({"training_budget": "none", "tone_consistency": "high", "change_frequency": "static"}
                  )["recommendation"] == "rag"  # never a trained model without a training budget


def test_missing_keys_are_assumed_and_said_so():
    r = advise({"change_frequency": "weekly"})
    assert len(r["assumed"]) == len(PROFILE_KEYS) - 1
    assert "training_budget = low (not given; assumed)" in r["assumed"]
    assert not any(a.startswith("change_frequency") for a in r["assumed"])
    assert advise({})["assumed"] and complete({})[0]["realtime_facts"] is False


def test_would_change_if_names_the_flip():
    r = advise(SEED_CASES["specialised-service"][1])
    assert "the rule-based view would recommend hybrid if change_frequency were weekly instead of monthly" \
        in r["would_change_if"]


def test_unknown_value_lists_valid_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown change_frequency 'hourly'; valid values: realtime, daily, "
                                          "weekly, monthly, yearly, static"):
        advise({"change_frequency": "hourly"})
    with pytest.raises(ConfigError, match="unknown profile key 'colour'; valid keys: change_frequency"):
        advise({"colour": "blue"})
    with pytest.raises(ConfigError, match="valid values: true, false"):
        advise({"realtime_facts": "sometimes"})
    path = tmp_path / "p.json"
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        load_profile(path)
    path.write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        load_profile(path)


def run_with(acc, after=None, answerable=30, fresh=True):
    strategies = {n: {"accuracy": a, "abstention_accuracy": 1.0, "answerable": answerable, "latency_ms_p50": 100}
                  for n, a in acc.items()}
    freshness = None
    if after is not None:
        freshness = {n: {"accuracy_after_change": a} for n, a in after.items()}
        freshness.update(sync_seconds=1.0, retrain_seconds=600.0)
    return {"id": "r1", "bot": "default", "status": "complete",
            "result": {"strategies": strategies, "freshness": freshness}}


def test_measured_evidence_overturns_the_rules_with_the_reason():
    profile = SEED_CASES["specialised-service"][1] | {"change_frequency": "weekly", "knowledge_variety": "broad"}
    assert rule_view(complete(profile)[0])["recommendation"] == "finetune"
    run = run_with({"base": 0.1, "rag": 0.84, "finetune": 0.41})
    r = advise(profile, run)
    assert r["recommendation"] == "rag" and r["rule_based"]["recommendation"] == "finetune"
    assert r["evidence"]["verdict"] == "overturned" and r["evidence"]["measured_best"] == "rag"
    assert "RAG answered 84% and fine-tuning answered 41%" in r["reasons"][0]
    assert "your documents change weekly" in r["reasons"][0] and r["reasons"][0].endswith("recommend rag")


def test_evidence_that_agrees_or_is_too_close_keeps_the_rules():
    profile = SEED_CASES["customer-support"][1]
    r = advise(profile, run_with({"rag": 0.8, "finetune": 0.3, "hybrid": 0.75}))
    assert r["recommendation"] == "rag" and r["evidence"]["verdict"] == "agrees"
    close = advise(SEED_CASES["internal-knowledge"][1], run_with({"rag": 0.62, "finetune": 0.6}, answerable=12))
    assert close["recommendation"] == "finetune" and "cannot tell apart" in close["reasons"][0]


def test_freshness_counts_when_the_data_changes():
    # fine-tuning wins before the change but forgets the new facts; the data changes weekly
    profile = SEED_CASES["hybrid"][1] | {"knowledge_variety": "broad", "tone_consistency": "low",
                                         "domain_specialisation": "low", "realtime_facts": False,
                                         "change_frequency": "weekly", "training_budget": "high"}
    run = run_with({"rag": 0.7, "finetune": 0.9, "hybrid": 0.72}, after={"rag": 0.7, "finetune": 0.2, "hybrid": 0.7})
    r = advise(profile, run)
    assert r["evidence"]["uses_freshness"] and r["recommendation"] != "finetune"
    assert "after the documents changed" in r["reasons"][0]


def test_questionnaire_asks_and_keeps_assumptions():
    replies = iter(["weekly", "huge", "large", "", "yes"])
    said = []

    def ask(prompt):
        try:
            return next(replies)
        except StopIteration:
            raise EOFError from None

    answers = questionnaire(ask, said.append)
    assert answers == {"change_frequency": "weekly", "knowledge_size": "large", "realtime_facts": True}
    assert any("unknown knowledge_size 'huge'" in s for s in said)


def test_cli_advise(home, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(SEED_CASES["hybrid"][1]))
    out = run_json(home, "advise", "--profile", str(profile))
    assert out["recommendation"] == "hybrid" and out["assumed"] == [] and out["evidence"] is None
    assert set(out) >= {"recommendation", "reasons", "assumed", "evidence", "would_change_if"}
    flags = run_json(home, "advise", "--profile", str(profile), "--training-budget", "none")
    assert flags["recommendation"] == "rag"
    bad = run_cli(home, "advise", "--change-frequency", "hourly", check=False)
    assert bad.returncode == 2 and "valid values: realtime, daily, weekly, monthly, yearly, static" in bad.stderr
    text = run_cli(home, "advise", "--training-budget", "low").stdout  # stdin is not a terminal: no questions
    assert text.startswith("Recommendation: rag") and "Assumed" in text
    missing = run_cli(home, "advise", "--run", "nope", check=False)
    assert missing.returncode == 3


def test_cli_advise_weighs_the_latest_complete_run(home, tmp_path):
    from conftest import EXAMPLES

    run_cli(home, "ingest", str(EXAMPLES / "helpcenter" / "v1"))
    q = tmp_path / "q.jsonl"
    q.write_text("".join(l + "\n" for l in (EXAMPLES / "helpcenter" / "questions-v1.jsonl").read_text().splitlines()[:8]))
    run = run_json(home, "compare", "--model", "echo", "--strategies", "base,rag", "--questions", str(q))
    out = run_json(home, "advise", "--change-frequency", "weekly")
    assert out["evidence"]["run_id"] == run["run_id"]
    assert out["evidence"]["accuracy"]["rag"] == run["strategies"]["rag"]["accuracy"]
    assert run_json(home, "advise", "--no-run")["evidence"] is None
