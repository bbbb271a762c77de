"""`ragtune compare` / `ragtune runs`: metrics per strategy, stored runs with lineage, freshness on a copy (the
user's bot untouched), generated questions disjoint from training data, the HTML report, and bad input —
malformed or mismatched question files, an interrupted run (never reported complete)."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, run_cli, run_json
from ragtune.errors import ConfigError, InputError, MissingExtraError
from ragtune.evaluate.compare import (CompareRequest, StrategyProvider, AdapterUse, latest_complete_run, list_runs,
                                      open_run, parse_strategies, run_compare, summary)
from ragtune.evaluate.questions import generate_questions, overlap_with_training
from ragtune.evaluate.report import render_report
from ragtune.ingest.sync import register_sources, sync_bot
from ragtune.models.embedders import HashEmbedder
from ragtune.models.generators import EchoGenerator, Generator
from ragtune.strategies import BaseStrategy, BotProfile, RagStrategy, Strategy

HC = EXAMPLES / "helpcenter"
QUESTIONS = [json.loads(line) for line in (HC / "questions-v1.jsonl").read_text().splitlines()]
AFTER = [json.loads(line) for line in (HC / "questions-v2.jsonl").read_text().splitlines()]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def kb(tmp_path):
    """A private copy of the sample help centre (v1), so a test may change it."""
    folder = tmp_path / "kb"
    shutil.copytree(HC / "v1", folder)
    return folder


@pytest.fixture
def bot(store, settings, kb):
    b = store.ensure_bot("default")
    register_sources(store, b, [str(kb)], settings)
    sync_bot(store, settings, b, embedder=HashEmbedder())
    return store.get_bot("default")


@pytest.fixture
def qfile(tmp_path):
    rows = [QUESTIONS[i] for i in (0, 2, 3, 6, 7, 8, 14)]  # five answerable (the hash-embedder rag answers three)
    assert sum(1 for r in rows if not r["answers"]) >= 1
    return write_jsonl(tmp_path / "q.jsonl", rows)


def compare(store, bot, settings, provider=None, **request):
    request.setdefault("strategies", ("base", "rag"))
    settings = settings.replace(generator="echo")
    return run_compare(store, bot, settings, HashEmbedder(), EchoGenerator(), CompareRequest(**request),
                       provider=provider)


# --------------------------------------------------------------------------- metrics, runs, lineage
def test_compare_measures_every_strategy_and_stores_the_run(store, bot, settings, qfile):
    run = compare(store, bot, settings, questions_file=str(qfile))
    assert run["status"] == "complete"
    metrics = run["result"]["strategies"]
    assert list(metrics) == ["base", "rag"]
    for name, m in metrics.items():
        assert {"accuracy", "abstention_accuracy", "grounded", "latency_ms_p50", "latency_ms_p95", "cost"} <= set(m)
        assert set(m["cost"]) == {"training_seconds", "adapter_mb", "index_mb", "tokens_per_answer"}
        assert m["answerable"] == 5 and m["unanswerable"] == 2
    assert "recall@k" in metrics["rag"] and "recall@k" not in metrics["base"]
    assert metrics["rag"]["recall@k"] > 0.5 and metrics["rag"]["k"] == settings.top_k
    assert metrics["rag"]["cost"]["index_mb"] > 0 and metrics["base"]["cost"]["index_mb"] == 0
    assert metrics["base"]["accuracy"] == 0.0  # the echo model alone has no sources to echo
    assert metrics["rag"]["accuracy"] == 0.6  # echoes the retrieved evidence
    per = run["result"]["per_question"]
    assert len(per) == 7 and set(per[0]["results"]) == {"base", "rag"}
    cited = [r for p in per for r in [p["results"]["rag"]] if r["citations"]]
    assert cited and all(0 <= r["grounded"] <= 1 for r in cited)
    # lineage: version, models, config, every document with its hash
    lineage = run["lineage"]
    assert lineage["ragtune_version"] and lineage["models"]["generator"] == "echo"
    assert lineage["models"]["embedder"] == "hash-384" and lineage["config"]["top_k"] == settings.top_k
    assert len(lineage["documents"]) == 18 and all(d["content_hash"] and d["id"] for d in lineage["documents"])
    assert lineage["questions_file"]["sha256"]
    # listed and reopened
    assert [r["id"] for r in list_runs(store, bot)] == [run["id"]]
    assert open_run(store, bot, run["id"])["result"]["strategies"] == metrics
    assert summary(run)["run_id"] == run["id"] and summary(run)["freshness"] is None


def test_parse_strategies_lists_valid_values():
    assert parse_strategies(None) == ("base", "rag", "finetune", "hybrid")
    assert parse_strategies("rag, base") == ("rag", "base")
    with pytest.raises(ConfigError, match="valid values: base, rag, finetune, hybrid"):
        parse_strategies("rag,rlhf")


# --------------------------------------------------------------------------- freshness
def test_freshness_runs_on_a_copy_and_leaves_the_bot_alone(store, bot, settings, qfile, tmp_path, kb):
    before = {d.path: d.content_hash for s in store.list_sources(bot) for d in store.document_states(bot, s).values()}
    counts = store.count(bot)
    after_file = write_jsonl(tmp_path / "after.jsonl", AFTER[:6])
    run = compare(store, bot, settings, questions_file=str(qfile), changed_docs=str(HC / "v2"),
                  questions_after=str(after_file))
    fresh = run["result"]["freshness"]
    assert set(fresh) >= {"base", "rag", "sync_seconds", "retrain_seconds"}
    assert fresh["sync_mode"] == "incremental"
    assert fresh["sync"]["updated"] == 9 and fresh["sync"]["added"] == 1 and fresh["sync"]["unchanged"] == 9
    assert 0 <= fresh["rag"]["accuracy_after_change"] <= 1 and fresh["base"]["seconds_to_fresh"] is None
    assert fresh["retrain_seconds"] is None  # no adapter strategy compared
    assert run["result"]["per_question_after"][0]["results"]["rag"]["answer"]
    # the user's bot: same sources, same documents, same hashes, same counts
    assert [s.uri for s in store.list_sources(bot)] == [str(kb.resolve())]
    now = {d.path: d.content_hash for s in store.list_sources(bot) for d in store.document_states(bot, s).values()}
    assert now == before and store.count(bot) == counts
    assert not any(str(HC / "v2") in p for p in now)


def test_changed_docs_needs_questions_after_and_checks_its_sources(store, bot, settings, qfile, tmp_path):
    with pytest.raises(InputError, match="--questions-after"):
        compare(store, bot, settings, questions_file=str(qfile), changed_docs=str(HC / "v2"))
    with pytest.raises(InputError, match="--changed-docs"):
        compare(store, bot, settings, questions_file=str(qfile), questions_after=str(qfile))
    referral = write_jsonl(tmp_path / "r.jsonl", [{"question": "Referral?", "answers": ["one free month"],
                                                  "source": "referral-program.md"}])
    with pytest.raises(InputError, match="referral-program.md"):  # v1 has no referral document
        compare(store, bot, settings, questions_file=str(qfile), changed_docs=str(HC / "v1"),
                questions_after=str(referral))
    assert list_runs(store, bot) == []  # bad input fails before a run is recorded


# --------------------------------------------------------------------------- bad question files
def test_malformed_question_file_names_the_line(store, bot, settings, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(QUESTIONS[0]) + "\n{not json\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        compare(store, bot, settings, questions_file=str(bad))
    bad.write_text(json.dumps({"question": "x", "answers": "30 days"}) + "\n")
    with pytest.raises(InputError, match="must be a list of strings"):
        compare(store, bot, settings, questions_file=str(bad))
    assert list_runs(store, bot) == []


def test_question_file_naming_missing_sources_is_refused(store, bot, settings, tmp_path):
    rows = QUESTIONS[:3] + [{"question": "Refer a friend?", "answers": ["one free month"],
                             "source": "referral-program.md"}]
    path = write_jsonl(tmp_path / "q.jsonl", rows)
    with pytest.raises(InputError) as err:
        compare(store, bot, settings, questions_file=str(path))
    assert "referral-program.md (question 4)" in str(err.value) and "bot 'default' lacks" in str(err.value)
    assert list_runs(store, bot) == []


# --------------------------------------------------------------------------- interrupted runs
class Interrupting(StrategyProvider):
    """Ctrl-C arrives while the second strategy answers."""

    def open(self, name, store, bot, settings=None):
        return Stopped() if name == "rag" else super().open(name, store, bot, settings)


class Stopped(Strategy):
    name = "rag"

    def stream(self, question, history=()):
        raise KeyboardInterrupt
        yield  # a generator, like every strategy


def test_interrupted_run_is_never_reported_complete(store, bot, settings, qfile):
    done = compare(store, bot, settings, questions_file=str(qfile))
    provider = Interrupting(settings.replace(generator="echo"), HashEmbedder(), EchoGenerator())
    with pytest.raises(KeyboardInterrupt):
        compare(store, bot, settings, provider=provider, questions_file=str(qfile))
    runs = list_runs(store, bot)
    assert [r["status"] for r in runs] == ["interrupted", "complete"]
    partial = runs[0]
    assert "base" in partial["result"]["strategies"] and "rag" not in partial["result"]["strategies"]
    assert latest_complete_run(store, bot)["id"] == done["id"]
    html = render_report(partial)
    assert "This run is interrupted, not complete" in html


def test_a_run_whose_process_died_reads_as_interrupted(store, bot):
    run_id = store.create_run(bot, "compare", {}, {})
    store.db.execute("UPDATE eval_runs SET pid = ? WHERE id = ?", (_dead_pid(), run_id))
    assert open_run(store, bot, run_id)["status"] == "interrupted"
    live = store.create_run(bot, "compare", {}, {})  # this process: still running
    assert open_run(store, bot, live)["status"] == "running"
    assert latest_complete_run(store, bot) is None


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_killed_compare_process_leaves_an_interrupted_run(home, kb, tmp_path):
    """A real `ragtune compare` stopped with SIGTERM mid-run: the stored run says interrupted."""
    import signal
    import subprocess
    import sys

    from conftest import cli_env

    run_cli(home, "ingest", str(kb))
    slow = write_jsonl(tmp_path / "many.jsonl", QUESTIONS * 40)
    proc = subprocess.Popen([sys.executable, "-m", "ragtune", "compare", "--model", "echo", "--strategies",
                             "base,rag", "--questions", str(slow)], env=cli_env(home), stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    for line in proc.stderr:  # wait until it is answering, then stop it
        if "answering" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 130
    runs = run_json(home, "runs")
    assert runs and runs[0]["status"] == "interrupted"


# --------------------------------------------------------------------------- generated questions
def test_generated_questions_include_unanswerable_and_avoid_training_questions(store, bot, settings):
    from ragtune.train.dataset import build_dataset

    dataset = build_dataset(store, bot)
    training = [e.question for e in dataset.train + dataset.held_out]
    questions, info = generate_questions(store, bot, training, answerable=10, unanswerable=3)
    assert info["answerable"] == 10 and info["unanswerable"] == 3
    assert overlap_with_training(questions, training) == 0
    names = {p.name for p in (HC / "v1").iterdir()}
    for q in questions:
        if q["answers"]:
            assert q["source"] in names
            text = (HC / "v1" / q["source"]).read_text()
            assert q["answers"][0] in text and q["answers"][0] not in q["question"]
    # a training set that holds a generated question makes it rephrase (or drop) that question
    again, info2 = generate_questions(store, bot, training + [questions[0]["question"]], answerable=10,
                                      unanswerable=3)
    assert overlap_with_training(again, training + [questions[0]["question"]]) == 0
    assert info2["rephrased_to_avoid_training"] + info2["dropped_as_training"] >= 1


def test_compare_without_questions_generates_them(store, bot, settings):
    run = compare(store, bot, settings)
    q = run["result"]["questions"]
    assert q["origin"] == "generated" and q["unanswerable"] >= 1 and q["overlap_with_training"] == 0
    assert run["result"]["strategies"]["rag"]["answerable"] == q["answerable"]


# --------------------------------------------------------------------------- adapter strategies
class FakeAdapters(StrategyProvider):
    """Adapter strategies without training a model: `finetune` is a model that memorised v1's answers (a test
    double for a trained adapter), `hybrid` the rag strategy on top of it. Training is counted."""

    trained = 0

    def prepare(self, store, bot, names, train_config, on_event):
        for n in names:
            self.adapters[n] = AdapterUse("fake-1", n == "hybrid", False, 12.5, 3.25, False, "/nonexistent")

    def copy_adapters(self, bot, home):
        pass  # nothing on disk to carry into the copy

    def train(self, store, bot, raft, train_config, settings=None):
        FakeAdapters.trained += 1

        from types import SimpleNamespace

        adapter = SimpleNamespace(id="fake-2", raft=raft, manifest={"training": {"seconds": 7.0}, "files": {}},
                                  gguf=None, path="/x")
        return adapter, 7.0

    def open(self, name, store, bot, settings=None):
        settings = settings or self.settings
        if name == "finetune":
            return BaseStrategy(Memorised(), settings, BotProfile())
        if name == "hybrid":
            return RagStrategy(store, bot, settings, self.embedder, Memorised())
        return super().open(name, store, bot, settings)


class Memorised(Generator):
    name = "memorised"
    facts = {q["question"]: f"It is {q['answers'][0]}." for q in QUESTIONS if q["answers"]}

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
        question = messages[-1]["content"].split("Question: ")[-1]
        yield self.facts.get(question, "I don't know.")


def test_four_strategies_with_costs_and_freshness(store, bot, settings, qfile, tmp_path):
    provider = FakeAdapters(settings.replace(generator="echo"), HashEmbedder(), EchoGenerator())
    after = write_jsonl(tmp_path / "after.jsonl", AFTER[:6])
    run = compare(store, bot, settings, provider=provider, strategies=("base", "rag", "finetune", "hybrid"),
                  questions_file=str(qfile), changed_docs=str(HC / "v2"), questions_after=str(after), retrain=True)
    m = run["result"]["strategies"]
    assert list(m) == ["base", "rag", "finetune", "hybrid"]
    assert m["finetune"]["accuracy"] == 1.0  # memorised every v1 answer
    assert m["finetune"]["cost"]["training_seconds"] == 12.5 and m["finetune"]["cost"]["adapter_mb"] == 3.25
    assert m["finetune"]["cost"]["index_mb"] == 0 and m["hybrid"]["cost"]["index_mb"] > 0
    assert "recall@k" in m["hybrid"] and "recall@k" not in m["finetune"]
    fresh = run["result"]["freshness"]
    # v1 answers memorised: after the change the fine-tuned model states the old facts
    assert fresh["finetune"]["accuracy_after_change"] < m["finetune"]["accuracy"]
    assert fresh["retrain_measured"] and fresh["retrain_seconds"] == 7.0 and FakeAdapters.trained == 1
    assert fresh["finetune"]["seconds_to_fresh"] == pytest.approx(fresh["sync_seconds"] + 7.0, abs=0.1)
    assert "accuracy_after_retrain" in fresh["finetune"]


class NoTraining(StrategyProvider):
    def prepare(self, store, bot, names, train_config, on_event):
        raise MissingExtraError("peft", "train")


def test_adapter_strategies_skipped_unless_named(store, bot, settings, qfile):
    provider = NoTraining(settings.replace(generator="echo"), HashEmbedder(), EchoGenerator())
    run = compare(store, bot, settings, provider=provider, strategies=("base", "rag", "finetune", "hybrid"),
                  questions_file=str(qfile))
    assert list(run["result"]["strategies"]) == ["base", "rag"]
    assert "pip install 'ragtune[train]'" in run["result"]["skipped"]["finetune"]
    with pytest.raises(MissingExtraError):
        compare(store, bot, settings, provider=provider, strategies=("rag", "finetune"), strategies_explicit=True,
                questions_file=str(qfile))
    assert [r["status"] for r in list_runs(store, bot)] == ["failed", "complete"]


# --------------------------------------------------------------------------- report, erasure, CLI
def test_report_is_self_contained_and_escapes_text(store, bot, settings, tmp_path):
    rows = [{"question": "<script>alert(1)</script> How long is the trial?", "answers": ["30 days"],
             "source": "returns-and-refunds.md"}, QUESTIONS[2]]
    run = compare(store, bot, settings, questions_file=str(write_jsonl(tmp_path / "x.jsonl", rows)))
    html = render_report(run)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert html.count("<svg") >= 10  # a chart per metric and the latency distribution
    assert "Every question, every strategy" in html and "returns-and-refunds.md" in html


def test_forgetting_a_document_erases_runs_that_quote_it(store, bot, settings, qfile, kb):
    from ragtune.erasure import forget

    compare(store, bot, settings, questions_file=str(qfile))
    assert list_runs(store, bot)
    forget(store, bot, str(kb / "returns-and-refunds.md"))
    assert list_runs(store, bot) == []


def test_cli_compare_runs_and_report(home, kb, tmp_path, qfile):
    run_cli(home, "ingest", str(kb))
    out = run_json(home, "compare", "--model", "echo", "--strategies", "base,rag", "--questions", str(qfile),
                   "--html", str(tmp_path / "r.html"))
    assert set(out) >= {"strategies", "freshness", "run_id"} and out["status"] == "complete"
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    listed = run_json(home, "runs")
    assert listed[0]["id"] == out["run_id"] and listed[0]["status"] == "complete"
    again = run_json(home, "runs", out["run_id"], "--html", str(tmp_path / "again.html"))
    assert again["strategies"] == out["strategies"] and (tmp_path / "again.html").is_file()
    bad = run_cli(home, "compare", "--model", "echo", "--strategies", "rag,magic", check=False)
    assert bad.returncode == 2 and "valid values: base, rag, finetune, hybrid" in bad.stderr
    missing = run_cli(home, "runs", "nope", check=False)
    assert missing.returncode == 3 and "no run 'nope'" in missing.stderr
    malformed = tmp_path / "m.jsonl"
    malformed.write_text("{oops\n")
    r = run_cli(home, "compare", "--model", "echo", "--questions", str(malformed), check=False)
    assert r.returncode == 2 and "m.jsonl:1: not valid JSON" in r.stderr and "Traceback" not in r.stderr


def test_admin_api_shows_the_latest_comparison_and_recommendation(store, bot, settings, qfile, home):
    pytest.importorskip("fastapi")
    from serverkit import bearer, local_client
    from ragtune.server.app import create_app
    from ragtune.server.auth import create_key

    store.update_bot_settings(bot, {"advisor_profile": {"change_frequency": "weekly"}})
    run = compare(store, store.get_bot("default"), settings, questions_file=str(qfile))
    other = store.ensure_bot("other")
    key = create_key(store, other, "key")[0]  # reaches bot "other" only
    app = create_app(settings.replace(generator="echo"), generator=EchoGenerator(), embedder=HashEmbedder())
    with local_client(app) as c:
        data = c.get("/api/bots/default/comparison").json()
        assert data["run"]["run_id"] == run["id"] and data["run"]["strategies"]["rag"]["accuracy"] == 0.6
        rec = data["recommendation"]
        assert rec["recommendation"] in ("rag", "finetune", "hybrid") and rec["evidence"]["run_id"] == run["id"]
        assert not any(a.startswith("change_frequency") for a in rec["assumed"])
        assert data["runs"][0]["id"] == run["id"]
        page = c.get(f"/api/bots/default/runs/{run['id']}/report")
        assert page.status_code == 200 and page.text.startswith("<!doctype html>")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert c.get("/api/bots/default/runs/nope/report").status_code == 404
        assert c.get("/api/bots/other/comparison").json()["run"] is None
        admin = c.get("/admin").text
        assert 'id="comparison"' in admin and "/static/compare.js" in admin
        assert c.get("/static/compare.js").status_code == 200
        assert c.get("/api/bots/default/comparison", headers=bearer(key)).status_code == 404  # foreign = missing
        assert c.get("/api/bots/other/comparison", headers=bearer(key)).status_code == 200
