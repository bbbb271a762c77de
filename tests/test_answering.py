"""The answer path: citations, abstention from evidence, injection resistance, bad input, follow-ups."""

import json
from pathlib import Path

import pytest

from conftest import EXAMPLES, run_cli
from ragtune.errors import ConfigError, InputError
from ragtune.ingest.sync import register_sources, sync_bot
from ragtune.models.embedders import HashEmbedder
from ragtune.models.generators import EchoGenerator, Generator
from ragtune.strategies import BaseStrategy, BotProfile, RagStrategy, clean_question, condense, open_strategy
from ragtune.types import Answer

KB = EXAMPLES / "helpcenter" / "v1"


class ScriptedGenerator(Generator):
    """Fake that always says `text` (to test what the system does with a model that invents)."""

    name = "scripted"

    def __init__(self, text):
        self.text = text

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
        self.last_messages, self.max_tokens = messages, max_tokens
        for word in self.text.split(" "):
            yield word + " "


@pytest.fixture(scope="module")
def real_kb(tmp_path_factory):
    """The sample help centre indexed once with the real default embedder (abstention depends on it)."""
    from ragtune.models.embedders import open_embedder
    from ragtune.settings import Settings
    from ragtune.store.sqlite import SQLiteStore

    home = tmp_path_factory.mktemp("home")
    settings = Settings.load(overrides={"home": str(home), "progress": False}, env={})
    store = SQLiteStore(home / "ragtune.db")
    embedder = open_embedder(settings)
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(KB)], settings)
    sync_bot(store, settings, bot, embedder=embedder)
    yield store, bot, settings, embedder
    store.close()


@pytest.fixture
def kb(real_kb):
    store, bot, settings, embedder = real_kb
    store.update_bot_settings(bot, {"handoff": ""})
    return store, store.get_bot("default")


@pytest.fixture
def settings(real_kb):
    return real_kb[2]


def rag(kb, settings, generator, **kw):
    store, bot = kb
    from ragtune.models.embedders import open_embedder

    return RagStrategy(store, bot, settings, _EMB.setdefault("e", open_embedder(settings)), generator, **kw)


_EMB: dict = {}


def test_answer_has_citations_with_source_and_quote(kb, settings):
    a = rag(kb, settings, EchoGenerator()).answer("How long does a full battery charge take from empty?")
    assert not a.abstained and a.citations
    assert a.citations[0].source.endswith("battery-care.md")
    assert a.citations[0].quote and a.citations[0].chunk_id
    assert "[1]" in a.answer
    data = a.to_json()
    assert set(data) >= {"answer", "abstained", "citations", "strategy", "model", "timings_ms"}
    assert set(data["timings_ms"]) == {"retrieve", "generate", "total"}


def test_invented_answer_is_not_passed_through(kb, settings):
    liar = ScriptedGenerator("Yes, a full charge takes 17 minutes and costs $999.")
    a = rag(kb, settings, liar).answer("How long does a full battery charge take from empty?")
    assert "17 minutes" not in a.answer and "$999" not in a.answer
    assert not a.abstained and "4.5 hours" in a.answer  # the evidence is quoted instead


def test_unanswerable_question_abstains_with_handoff(kb, settings):
    store, bot = kb
    store.update_bot_settings(bot, {"handoff": "I don't know. Write to help@example.test."})
    bot = store.get_bot("default")
    liar = ScriptedGenerator("Yes. Our CEO is Jane Doe.")
    a = RagStrategy(store, bot, settings, _EMB.setdefault("e", real_emb(settings)), liar).answer(
        "Which submarine models do you rent in Japan?")
    assert a.abstained and a.answer == "I don't know. Write to help@example.test." and a.citations == ()


def test_a_hand_off_suggests_the_pages_it_searched(kb, settings):
    """Below the bar to answer, the best page is often still the right one: it is offered as a place to look, one
    entry per document, never as a citation; a question about nothing in the documents gets no pages."""
    strict = settings.replace(min_support=0.99, min_support_agreed=0.99, min_support_value=0.99)
    a = rag(kb, strict, EchoGenerator()).answer("How long does a full battery charge take from empty?")
    assert a.abstained and a.citations == ()
    pages = a.to_json()["suggestions"]
    assert 1 <= len(pages) <= strict.suggest_pages and pages[0]["source"].endswith("battery-care.md")
    assert len({p["source"] for p in pages}) == len(pages) and all(p["title"] and p["chunk_id"] for p in pages)
    from ragtune.answer_cli import render_answer
    assert "Pages that may help:" in render_answer(a) and "battery-care.md" in render_answer(a)
    none = rag(kb, strict.replace(suggest_pages=0), EchoGenerator()).answer("How long does a full battery charge take?")
    assert none.abstained and none.to_json()["suggestions"] == []
    far = rag(kb, settings, EchoGenerator()).answer("Which submarine models do you rent in Japan?")
    assert far.abstained and far.to_json()["suggestions"] == []
    answered = rag(kb, settings, EchoGenerator()).answer("How long does a full battery charge take from empty?")
    assert not answered.abstained and "suggestions" not in answered.to_json()


def test_a_chunk_one_retriever_is_sure_of_is_candidate_evidence(kb, settings):
    """Fusion keeps the top-1 hit here; the chunk dense or BM25 alone ranks first or second joins as evidence."""
    one = settings.replace(top_k=1)
    strategy = rag(kb, one, EchoGenerator())
    q = "I'm not sure the bike is for me. How long do I have to send it back and get my money back?"
    retrieval = strategy.retriever.search(strategy.bot, q, k=1)
    widened = strategy._widen(retrieval)
    expected = {c for c, _ in retrieval.dense[:2]} | {c for c, _ in retrieval.lexical[:2]} | {retrieval.hits[0].chunk_id}
    assert {h.chunk_id for h in widened} == expected and len(widened) > 1
    none = rag(kb, one.replace(evidence_rescue=0), EchoGenerator())
    assert [h.chunk_id for h in none._widen(retrieval)] == [retrieval.hits[0].chunk_id]


def test_two_near_equal_passages_are_both_quoted_with_their_sources(kb, settings):
    q = "How long does a full battery charge take from empty?"
    one = rag(kb, settings.replace(quote_passages=1), EchoGenerator(), answer_mode="extract").answer(q)
    two = rag(kb, settings.replace(quote_passages=2, quote_margin=1.0), EchoGenerator(), answer_mode="extract").answer(q)
    assert one.answer.count('"') == 2 and len(one.citations) == 1
    assert two.answer.count('"') == 4 and two.answer.startswith(one.answer)  # best first, then the runner-up
    assert 1 <= len(two.citations) <= 2 and "[1]" in two.answer


def real_emb(settings):
    from ragtune.models.embedders import open_embedder

    return open_embedder(settings)


def test_generate_mode_abstains_when_nothing_is_supported(kb, settings):
    liar = ScriptedGenerator("Our submarines are free on Tuesdays.")
    a = rag(kb, settings, liar, answer_mode="generate").answer("How long does a full battery charge take from empty?")
    assert a.abstained


def test_instructions_inside_documents_never_reach_the_model(kb, settings):
    spy = ScriptedGenerator("Gift cards are available.")
    strategy = rag(kb, settings, spy, answer_mode="auto")  # the model reads every retrieved chunk
    a = strategy.answer("Can I buy a gift card, and do gift cards expire?")
    prompt = json.dumps(spy.last_messages)
    assert "ignore all previous instructions" not in prompt.lower()
    assert "free" not in a.answer.lower() or "bikes are free" not in a.answer.lower()
    assert a.extra["evidence"]["injections_removed"] >= 0


def test_streaming_yields_text_then_the_answer(kb, settings):
    items = list(rag(kb, settings, EchoGenerator()).stream("How long does a full battery charge take from empty?"))
    assert isinstance(items[-1], Answer)
    assert all(isinstance(i, str) for i in items[:-1]) and items[:-1]


@pytest.mark.parametrize("bad", ["", "   ", "\x00\x01\x02", "x" * 100_000])
def test_bad_questions_are_one_line_errors(kb, settings, bad):
    with pytest.raises(InputError) as err:
        rag(kb, settings, EchoGenerator()).answer(bad)
    assert "\n" not in str(err.value)


def test_control_characters_and_other_languages_are_graceful(kb, settings):
    s = rag(kb, settings, EchoGenerator())
    assert clean_question("How\x07 long\tdoes it\x1b take?") == "How long does it take?"
    a = s.answer("¿Cuánto cuesta el plan más barato? 自行车多少钱？")
    assert isinstance(a.answer, str) and a.answer


def test_follow_up_is_condensed_with_history():
    history = [{"role": "user", "content": "How long does shipping to the US take?"},
               {"role": "assistant", "content": "5 to 7 business days."}]
    assert "shipping" in condense("and for Canada?", history)
    assert condense("How do I reset my password?", history) == "How do I reset my password?"


def test_base_strategy_has_no_citations(settings):
    a = BaseStrategy(ScriptedGenerator("Probably yes."), settings, BotProfile()).answer("Is it free?")
    assert a.citations == () and a.strategy == "base"


def test_unknown_strategy_and_mode(kb, settings):
    store, bot = kb
    with pytest.raises(ConfigError, match="valid values: base, rag"):
        open_strategy("magic", store, bot, settings, None, EchoGenerator())
    with pytest.raises(ConfigError, match="answer_mode"):
        rag(kb, settings, EchoGenerator(), answer_mode="guess")


def test_cli_ask_json_and_errors(home):
    run_cli(home, "ingest", str(KB))
    out = run_cli(home, "ask", "How long does a full battery charge take from empty?", "--model", "echo", "--json")
    data = json.loads(out.stdout)
    assert data["strategy"] == "rag" and data["citations"][0]["source"].endswith("battery-care.md")
    for args, code, words in [
        (["ask", "hello", "--bot", "nobody", "--model", "echo"], 3, "unknown bot 'nobody'"),
        (["ask", "", "--model", "echo"], 2, "question is empty"),
        (["ask", "hi", "--model", "openai", "--json"], 2, "generator_url"),
        (["ask", "hi", "--model", "nonsense"], 2, "valid values"),
    ]:
        p = run_cli(home, *args, check=False)
        assert p.returncode == code, (args, p.stderr)
        assert words in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_cli_bench_answers_scores_what_it_printed(home):
    """The benchmark's figures are recomputed here from its own per-question rows (a key fact in the answer and
    the expected source cited; abstention on the unanswerable), with their 95% intervals."""
    run_cli(home, "ingest", str(KB))
    questions = EXAMPLES / "helpcenter" / "questions-v1.jsonl"
    out = json.loads(run_cli(home, "bench", "answers", "--questions", str(questions), "--split", "dev", "--limit", "12",
                             "--model", "echo", "--answer-mode", "extract", "--json").stdout)
    rows = out["per_question"]
    assert out["questions"] == len(rows) == 12 and out["split"] == "dev"
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    assert ans and una and out["answerable"] == len(ans)
    for r in ans:
        expected = (not r["abstained"] and any(k.lower() in r["answer"].lower() for k in r["expected"])
                    and Path(r["expected_source"]).name in {Path(c).name for c in r["cited"]})
        assert r["correct"] == expected, r
    assert out["answer_accuracy"] == round(sum(r["correct"] for r in ans) / len(ans), 4)
    assert out["abstention_accuracy"] == round(sum(r["abstained"] for r in una) / len(una), 4)
    lo, hi = out["answer_accuracy_ci95"]
    assert 0 <= lo <= out["answer_accuracy"] <= hi <= 1 and hi - lo > 0.1  # 12 questions cannot pin a rate down
    assert out["false_abstentions"] == sum(r["abstained"] for r in ans)
    assert 0 <= out["false_abstentions_with_right_page"] <= out["false_abstentions"]
    assert out["unanswerable_with_suggestions"] == sum(bool(r["suggested"]) for r in una)
    assert out["latency_ms_p50"] <= out["latency_ms_p95"]
    assert out["model_ran"] == sum(r["model_ran"] for r in rows) == 0  # extract mode: no model
    assert out["runtime"] == ""  # the echo generator runs nothing local
    auto = json.loads(run_cli(home, "bench", "answers", "--questions", str(questions), "--split", "dev", "--limit",
                              "12", "--model", "echo", "--answer-mode", "auto", "--json").stdout)
    assert 0 < auto["model_ran"] == sum(not r["abstained"] for r in auto["per_question"])  # every answer: the model's
    assert auto["model_ran_latency_ms_p50"] <= auto["model_ran_latency_ms_p95"]


def test_cli_unreachable_endpoint_is_one_line(home):
    run_cli(home, "ingest", str(KB))
    p = run_cli(home, "ask", "How long does a full battery charge take?", "--model", "openai", check=False,
                RAGTUNE_GENERATOR_URL="http://127.0.0.1:9/v1", RAGTUNE_GENERATOR_MODEL="x", RAGTUNE_ANSWER_MODE="generate")
    assert p.returncode == 6 and "127.0.0.1:9" in p.stderr and p.stderr.count("\n") == 1


def test_chat_keeps_history(home):
    run_cli(home, "ingest", str(KB))
    import subprocess
    import sys

    from conftest import cli_env

    proc = subprocess.run([sys.executable, "-m", "ragtune", "chat", "--model", "echo"], env=cli_env(home),
                          input="How long does a full battery charge take from empty?\nand with the fast charger?\n/quit\n",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("bot> ") == 2 and "battery-care.md" in proc.stdout


def test_real_default_model_answers_with_citation_or_abstains(kb, settings):
    """The whole path with SmolLM2 (llama.cpp): an answerable question gets a cited, supported answer and an
    unanswerable one the handoff, whatever the small model says."""
    from ragtune.models.generators import open_generator

    generator = open_generator(settings.replace(generator="smollm2", max_tokens=48))
    s = rag(kb, settings.replace(max_tokens=48), generator)
    a = s.answer("How long does the battery take to charge from empty?")
    assert not a.abstained and a.model.startswith("smollm2")
    assert a.citations and a.citations[0].source.endswith("battery-care.md")
    assert "4.5 hours" in a.answer
    b = s.answer("Which submarine models do you rent in Japan?")
    assert b.abstained and b.citations == ()


def test_passages_that_name_different_facts_in_the_same_words_conflict():
    from ragtune import grounding as g

    a = "Apr 9, 2012 ... “Apple announced today that it has reached an agreement to acquire Instagram, a photo app."
    b = "Apr 9, 2012 ... “Facebook announced today that it has reached an agreement to acquire Instagram, a photo app."
    assert g.conflict(a, b)  # the names inside curly quotes are facts too
    assert g.conflict("The City plan costs $39 per month.", "The City plan costs $42 per month.")
    assert not g.conflict("The City plan costs $39 per month.", "Delivery takes 5 to 7 business days.")
    assert not g.conflict(a, a)


def test_disagreeing_sources_within_the_quote_margin_hand_off(tmp_path, settings):
    """An outdated copy beside the current page: quoting either (or both) would mislead, so the bot hands off."""
    from ragtune.store.sqlite import SQLiteStore

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pricing.md").write_text("# Pricing\n\nThe Nimbus plan costs $39 per month, billed monthly.\n")
    (docs / "pricing-old.md").write_text("# Pricing (2023)\n\nThe Nimbus plan costs $35 per month, billed monthly.\n")
    (docs / "other.md").write_text("# Delivery\n\nDelivery takes 5 to 7 business days.\n")
    s = settings.replace(home=str(tmp_path / "home"), embedder="hash")
    store = SQLiteStore(tmp_path / "rt.db")
    bot = store.ensure_bot("b")
    emb = HashEmbedder()
    register_sources(store, bot, [str(docs)], s)
    sync_bot(store, s, bot, embedder=emb)
    a = RagStrategy(store, bot, s.replace(min_support=0.0), emb, EchoGenerator(), answer_mode="extract").answer(
        "How much does the Nimbus plan cost per month?")
    assert a.abstained and a.extra["evidence"]["reason"] == "sources disagree"
    store.close()


def test_a_sentence_naming_another_name_in_the_evidence_words_is_not_supported():
    from ragtune import grounding as g

    ev = ["New Vanguard CEO Tim Buckley: there are so many brilliant people in this business."]
    assert g.support("The new CEO of Vanguard is Abigail Johnson.", ev) == 0.0
    assert g.support("The new CEO of Vanguard is Tim Buckley.", ev) == 1.0
    assert g.support("A full charge takes about 4.5 hours.", ["A full charge takes about 4 hours."]) == 0.0


def test_a_sentence_that_negates_what_the_evidence_says_is_not_supported():
    from ragtune import grounding as g

    ev = ["The dev group can include other groups: include-groups pulls in everything from the test and lint groups."]
    assert g.support("No, the dev group can't pull in everything from the test and lint groups.", ev) == 0.0
    assert g.support("The dev group pulls in everything from the test and lint groups.", ev) == 1.0
    cargo = ["The student discount is not available on the Cargo plan."]
    assert g.support("The student discount is not available on the Cargo plan.", cargo) == 1.0
    assert g.support("The student discount is available on the Cargo plan.", cargo) == 0.0


def test_a_short_sentence_whose_words_recur_in_a_longer_passage_is_no_conflict():
    from ragtune import grounding as g

    short = "Install Poetry 2.0 with pipx install poetry."
    long = ("With pipx you can add a plugin to the Poetry installation: pipx inject poetry poetry-plugin-export. "
            "Plugins extend Poetry with new commands.")
    assert not g.conflict(short, long)


def test_sentences_join_wrapped_lines_keep_identifiers_and_read_code_with_its_sentence():
    from ragtune import grounding as g

    text = ("If you only want the runtime dependencies, you can do so with the\n`--only main` notation:\n\n"
            "```bash\npoetry install --only main\n```\n\n"
            "1. Environment variables (for example, `POETRY_VIRTUALENVS_CREATE`)\n2. The local file\n   continued.\n\n"
            "| Value | Meaning |\n|---|---|\n| `-1` | quiet |\n")
    assert g.sentences(text) == [
        "If you only want the runtime dependencies, you can do so with the --only main notation: "
        "poetry install --only main",
        "Environment variables (for example, POETRY_VIRTUALENVS_CREATE)",
        "The local file continued.",
        "Value | Meaning",
        "-1 | quiet",
    ]


def test_passages_that_differ_only_in_their_first_word_conflict():
    from ragtune import grounding as g

    a = "Norway set the record for most total medals at a single Winter Olympics with 39."
    b = "U.S. set the record for most total medals at a single Winter Olympics with 39."
    assert g.conflict(a, b)


def test_passage_vectors_kept_at_indexing_give_the_same_answers_as_embedding_them_when_asked(real_kb, tmp_path):
    from ragtune import passages
    from ragtune.settings import Settings
    from ragtune.store.sqlite import SQLiteStore

    store, bot, settings, embedder = real_kb
    plain_settings = Settings.load(overrides={"home": str(tmp_path), "progress": False, "embed_sentences": False},
                                   env={})
    plain = SQLiteStore(tmp_path / "ragtune.db")
    plain_bot = plain.ensure_bot("default")
    register_sources(plain, plain_bot, [str(KB)], plain_settings)
    sync_bot(plain, plain_settings, plain_bot, embedder=embedder)
    chunk = store.list_chunks(bot)[0]
    units = passages.sentence_units(chunk.title, chunk.heading, chunk.text, settings.evidence_window)
    keys = [passages.unit_key(u) for u in units]
    assert len(keys) > len(passages.sentence_units(chunk.title, chunk.heading, chunk.text))  # windows too
    assert len(store.passage_vectors(bot, embedder.identity, keys)) == len(set(keys)) > 0
    assert plain.passage_vectors(plain_bot, embedder.identity, keys) == {}
    for q in ("How long does a full battery charge take from empty?", "Can I pay with PayPal?",
              "Which submarine models do you rent in Japan?"):
        kept = RagStrategy(store, store.get_bot("default"), settings, embedder, EchoGenerator(),
                           answer_mode="extract").answer(q)
        fresh = RagStrategy(plain, plain_bot, plain_settings, embedder, EchoGenerator(),
                            answer_mode="extract").answer(q)
        assert (kept.answer, kept.abstained) == (fresh.answer, fresh.abstained)
        assert kept.extra["evidence"]["support"] == pytest.approx(fresh.extra["evidence"]["support"], abs=1e-3)
    plain.close()


def test_quote_mode_drops_a_run_on_addition_cut_at_quote_max_tokens(kb, settings):
    q = "How long does a full battery charge take from empty?"
    short = ScriptedGenerator("A full battery charge from empty takes about 4.5 hours")
    rag(kb, settings, short, answer_mode="quote").answer(q)
    assert short.max_tokens == settings.quote_max_tokens == 48
    rag(kb, settings, short, answer_mode="auto").answer(q)
    assert short.max_tokens == settings.max_tokens  # without a quote the model writes the whole answer
    run_on = ScriptedGenerator(" ".join(["a full battery charge from empty takes about 4.5 hours and"] * 12))
    b = rag(kb, settings, run_on, answer_mode="quote").answer(q)
    assert "hours and" not in b.answer and not b.abstained and b.citations  # the quote stands alone


def test_quote_mode_runs_the_model_only_for_a_question_asking_for_a_value(kb, settings):
    """After a quote the model may add only the kind of value asked for (duration, price, time, …): for a
    question asking for none, the quote is the whole answer and the model is not run."""
    spy = ScriptedGenerator("The charger's light turns green when charging is complete.")
    a = rag(kb, settings, spy, answer_mode="quote").answer("What should I do if my battery swells or smells of burning?")
    assert not hasattr(spy, "last_messages") and a.model == "extractive"
    assert not a.abstained and a.citations and a.citations[0].source.endswith("battery-care.md")
    asked = ScriptedGenerator("The charger's light turns green when charging is complete.")
    b = rag(kb, settings, asked, answer_mode="quote").answer("How many hours does a full battery charge take from empty?")
    assert hasattr(asked, "last_messages") and b.model == "scripted" and "4.5 hours" in b.answer



def test_quote_context_retrieved_lets_the_model_read_every_retrieved_chunk(kb, settings):
    """quote_context = retrieved: the model adding to a quote reads every retrieved chunk (for runtimes that
    read long prompts fast), not only the quoted passages; the quote and its citation are the same."""
    q = "How many hours does a full battery charge take from empty?"
    short = ScriptedGenerator("A full battery charge from empty takes about 4.5 hours.")
    a = rag(kb, settings, short, answer_mode="quote").answer(q)
    quoted_prompt = short.last_messages[-1]["content"]
    wide = ScriptedGenerator("A full battery charge from empty takes about 4.5 hours.")
    b = rag(kb, settings.replace(quote_context="retrieved"), wide, answer_mode="quote").answer(q)
    retrieved_prompt = wide.last_messages[-1]["content"]
    assert b.extra["evidence"]["context_tokens"] > 2 * a.extra["evidence"]["context_tokens"]
    assert retrieved_prompt.count("\n[") > quoted_prompt.count("\n[")  # more numbered sources
    assert a.answer.split('"')[1] == b.answer.split('"')[1] and a.citations[0] == b.citations[0]


def test_answer_sentences_stops_the_model_once_enough_is_said(kb, settings):
    """auto/generate: the model is stopped after `answer_sentences` supported sentences (0 = up to max_tokens)."""
    text = ("A full charge from empty takes about 4.5 hours with the supplied 4A charger. For everyday riding, "
            "keeping the battery between 20% and 80% is best for its lifespan. Do not charge the battery below 0°C "
            "or above 40°C.")
    q = "How should I charge the battery, and how long does a full charge take?"
    two = rag(kb, settings.replace(answer_sentences=2), ScriptedGenerator(text), answer_mode="auto").answer(q)
    every = rag(kb, settings.replace(answer_sentences=0), ScriptedGenerator(text), answer_mode="auto").answer(q)
    assert "4.5 hours" in two.answer and "20% and 80%" in two.answer and "40°C" not in two.answer
    assert "40°C" in every.answer


def test_a_passage_that_only_restates_the_question_is_not_the_answer(tmp_path, real_kb):
    """A cross-reference echoes the question's words (high similarity) but tells nothing: the passage that adds
    something is quoted instead."""
    from ragtune.store.sqlite import SQLiteStore

    _, _, settings, embedder = real_kb
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "basic-usage.md").write_text("# Basic usage\n\n## Activating the virtual environment\n\n"
                                         "See Activating the virtual environment.\n")
    (docs / "managing-environments.md").write_text(
        "# Managing environments\n\n## Activating the environment\n\nThe poetry env activate command prints the "
        "command that activates the virtual environment in your current shell.\n")
    s = settings.replace(home=str(tmp_path / "home"))
    store = SQLiteStore(tmp_path / "rt.db")
    bot = store.ensure_bot("b")
    register_sources(store, bot, [str(docs)], s)
    sync_bot(store, s, bot, embedder=embedder)
    q = "How do I activate my project's virtual environment from the terminal?"
    a = RagStrategy(store, bot, s.replace(min_support=0.0), embedder, EchoGenerator(), answer_mode="extract").answer(q)
    assert "poetry env activate" in a.answer and a.citations[0].source.endswith("managing-environments.md")
    plain = RagStrategy(store, bot, s.replace(min_support=0.0, echo_penalty=0.0), embedder, EchoGenerator(),
                        answer_mode="extract").answer(q)
    assert plain.citations[0].source.endswith("basic-usage.md")  # what the penalty changes
    store.close()
