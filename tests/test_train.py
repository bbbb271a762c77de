"""Fine-tuning without training a model: training data (facts, paraphrases, curated files, held-out split, RAFT,
export), adapters (manifest, lineage, staleness, erasure, half-written folders), GGUF conversion, the CLI and its
errors. The real LoRA runs are in test_train_lora.py."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import EXAMPLES, cli_env, fake_adapter, run_cli
from ragtune.errors import InputError, MissingExtraError, ModelError, NotFoundError
from ragtune.ingest.sync import register_sources, sync_bot
from ragtune.models.generators import Generator
from ragtune.train import adapters as ad
from ragtune.train.dataset import (Dataset, Example, build_dataset, compare_synthesis, extract_facts, held_out_split,
                                   load_pairs, raft_examples, read_knowledge, source_block, template_questions)

KB = EXAMPLES / "helpcenter" / "v1"


@pytest.fixture
def kb(store, settings, tmp_path):
    """The sample help centre copied to a folder the test may edit, synced with the hash embedder."""
    docs = tmp_path / "docs"
    shutil.copytree(KB, docs)
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(docs)], settings)
    sync_bot(store, settings, bot)
    return store, bot, docs


# --------------------------------------------------------------------------- training data
def test_facts_get_several_distinct_phrasings_that_never_give_the_answer_away(kb):
    store, bot, _ = kb
    chunks, docs = read_knowledge(store, bot)
    facts = extract_facts(chunks)
    assert len(docs) == 18 and len(facts) > 100
    trial = next(f for f in facts if f.value == "30 days" and "return" in f.sentence)
    questions = template_questions(trial, 4)
    assert len(set(q.lower() for q in questions)) == 4
    assert all(q.endswith("?") and "30 days" not in q for q in questions)
    assert questions == template_questions(trial, 4)  # deterministic
    assert not any("free" in f.sentence and "bikes are free" in f.sentence for f in facts)  # injection not learned


def test_synthesis_methods_are_compared_by_measurement(kb):
    store, bot, _ = kb
    facts = extract_facts(read_knowledge(store, bot)[0])

    class Parrot(Generator):  # a weak question writer: the same vague question for every fact
        name = "parrot"

        def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
            yield "1. What is it?\n2. Can you explain?"

    result = compare_synthesis(store, bot, facts, Parrot(), n=4, sample=6)
    assert result["best"] == "template"
    assert result["template"]["quality"] > result["model"]["quality"]
    assert set(result["template"]) >= {"valid_and_specific", "coverage", "diversity", "quality"}


def test_held_out_split_keeps_each_held_out_fact_in_training(kb):
    store, bot, _ = kb
    ds = build_dataset(store, bot, paraphrases=4, held_out_share=0.2)
    assert ds.held_out and ds.train
    train_q = {ex.question for ex in ds.train}
    train_groups = {ex.group for ex in ds.train}
    for ex in ds.held_out:
        assert ex.split == "held_out" and ex.question not in train_q and ex.group in train_groups
    assert {d.path for d in ds.documents} and all(d.content_hash for d in ds.documents)
    assert ds.sha256 == build_dataset(store, bot, paraphrases=4, held_out_share=0.2).sha256  # resumable


def test_raft_examples_hold_the_evidence_among_distractors(kb):
    store, bot, _ = kb
    chunks, _ = read_knowledge(store, bot)
    facts = extract_facts(chunks)[:60]
    examples = raft_examples([(f, template_questions(f, 1)[0]) for f in facts], chunks, seed=3)
    only_distractors = 0
    for fact, ex in zip(facts, examples):
        assert 2 <= len(ex.context) <= 4 or (1 <= len(ex.context) <= 3)
        oracle = [i for i, block in enumerate(ex.context) if block == source_block(i + 1, fact.chunk)]
        if oracle:
            assert 1 <= len(ex.context) - 1 <= 3  # the evidence among 1..3 distractors
            assert ex.answer == f"{fact.sentence} [{oracle[0] + 1}]"  # quotes the evidence, cites it
        else:
            only_distractors += 1
            assert "[" not in ex.answer[-4:]
        user = ex.messages("SYSTEM")[1]["content"]
        assert user.startswith("Sources:\n[1] ") and user.endswith(f"Question: {ex.question}")
    assert 0.05 <= only_distractors / len(examples) <= 0.4


def test_curated_and_style_files(tmp_path, kb):
    store, bot, _ = kb
    csv_file = tmp_path / "qa.csv"
    csv_file.write_text('question,answer\n"Do you sell helmets?","Yes, from $25."\nWho are you?,Brightpath support.\n')
    jsonl = tmp_path / "style.jsonl"
    jsonl.write_text('{"question": "hi", "answer": "Hello! Happy to help."}\n\n{"prompt": "thanks", "response": "Any time!"}\n')
    assert load_pairs(csv_file) == [("Do you sell helmets?", "Yes, from $25."), ("Who are you?", "Brightpath support.")]
    ds = build_dataset(store, bot, qa_files=[csv_file], style_files=[jsonl])
    kinds = {ex.kind for ex in ds.train + ds.held_out}
    assert {"curated", "style", "fact"} <= kinds
    assert [f["kind"] for f in ds.files] == ["curated", "style"] and all(len(f["sha256"]) == 64 for f in ds.files)


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("   \n", "is empty"),
    ('{"question": "a?", "answer": "b"}\n{"question": "broken\n', ":2: not valid JSON"),
    ('{"question": "a?"}\n', ":1: the answer is missing"),
    ('["a", "b"]\n', "must be an object"),
])
def test_bad_qa_jsonl_is_one_clear_error(tmp_path, content, message):
    f = tmp_path / "qa.jsonl"
    f.write_text(content)
    with pytest.raises(InputError, match=message):
        load_pairs(f)


def test_bad_qa_csv_and_missing_file(tmp_path):
    f = tmp_path / "qa.csv"
    f.write_text("q;a\nfoo;bar\n")
    with pytest.raises(InputError, match="header row with 'question' and 'answer'"):
        load_pairs(f)
    f.write_text("question,answer\nonly one column\n")
    with pytest.raises(InputError, match=":2: expected 2 columns"):
        load_pairs(f)
    with pytest.raises(InputError, match="does not exist"):
        load_pairs(tmp_path / "missing.csv")
    f.write_bytes(b"question,answer\n\xff\xfe,\x00\n")
    with pytest.raises(InputError, match="not UTF-8"):
        load_pairs(f)


def test_knowledge_base_too_small_to_train_on(store, settings, tmp_path):
    bot = store.ensure_bot("default")
    with pytest.raises(InputError, match="nothing to train on"):
        build_dataset(store, bot)
    docs = tmp_path / "tiny"
    docs.mkdir()
    (docs / "one.md").write_text("# Hours\n\nWe open at 9:00 every weekday morning.\n")
    register_sources(store, bot, [str(docs)], settings)
    sync_bot(store, settings, bot)
    with pytest.raises(InputError, match="too little to train on"):
        build_dataset(store, bot)


def test_export_is_jsonl_that_can_be_given_back_as_qa(kb, tmp_path):
    store, bot, _ = kb
    ds = build_dataset(store, bot, paraphrases=2, raft=True, raft_max=5)
    path = ds.export_jsonl(tmp_path / "data.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(ds.train) + len(ds.held_out)
    assert {"question", "answer", "kind", "split", "context", "documents"} <= set(rows[0])
    assert sum(r["kind"] == "raft" for r in rows) == 5
    assert len(load_pairs(path)) == len(rows)


# --------------------------------------------------------------------------- adapters
def test_adapter_goes_stale_when_a_learned_document_changes_or_goes(kb, settings, tmp_path):
    store, bot, docs = kb
    _, learned = read_knowledge(store, bot)
    adapter = fake_adapter(settings.home_path, bot.name, learned, tmp_path)
    current = ad.current_documents(store, bot)
    assert ad.adapter_status(adapter, current)["stale"] is False
    manifest = ad.load_manifest(adapter.path)
    assert manifest["format_version"] == ad.FORMAT_VERSION and manifest["ragtune_version"]
    # a document changes (v2's refund window) → stale, naming it
    shutil.copy(EXAMPLES / "helpcenter" / "v2" / "returns-and-refunds.md", docs / "returns-and-refunds.md")
    sync_bot(store, settings, bot)
    status = ad.adapter_status(adapter, ad.current_documents(store, bot))
    assert status["stale"] and [p.rsplit("/", 1)[-1] for p in status["changed"]] == ["returns-and-refunds.md"]
    # a document disappears → stale, removed
    (docs / "warranty.md").unlink()
    sync_bot(store, settings, bot)
    status = ad.adapter_status(adapter, ad.current_documents(store, bot))
    assert [p.rsplit("/", 1)[-1] for p in status["removed"]] == ["warranty.md"]


def test_erasure_marks_adapters_stale_and_drops_their_training_text(kb, settings, tmp_path):
    from ragtune.erasure import forget

    store, bot, docs = kb
    _, learned = read_knowledge(store, bot)
    trained = fake_adapter(settings.home_path, bot.name, learned, tmp_path, "trained")
    other = fake_adapter(settings.home_path, bot.name, [d for d in learned if "gift" not in d.path], tmp_path, "other")
    gift = next(d for d in learned if d.path.endswith("gift-cards.md"))
    assert ad.mark_adapters_stale(store, bot, [gift.id]) == 1
    assert not (trained.path / ad.DATA_FILE).exists() and (other.path / ad.DATA_FILE).exists()
    assert forget(store, bot, str(docs / "gift-cards.md")).stale_adapters == ("trained",)
    current = ad.current_documents(store, bot)
    status = ad.adapter_status(trained, current)
    assert status["stale"] and status["erased"] == 1 and status["removed"]
    assert ad.adapter_status(other, current)["stale"] is False


def test_half_written_adapters_are_never_listed_nor_loaded(settings, tmp_path):
    root = ad.adapters_root(settings.home_path, "default")
    (root / ad.WORK_DIR / "job" / "out" / ad.PEFT_DIR).mkdir(parents=True)  # a run killed before its commit
    (root / "20260101-000000-nomani").mkdir(parents=True)  # no manifest
    incomplete = root / "20260101-000001-incomp"
    incomplete.mkdir()
    (incomplete / ad.MANIFEST).write_text(json.dumps({"format": ad.FORMAT, "format_version": 1, "complete": False}))
    newer = root / "20260101-000002-future"
    newer.mkdir()
    (newer / ad.MANIFEST).write_text(json.dumps({"format": ad.FORMAT, "format_version": 99, "complete": True}))
    (root / "20260101-000003-broken").mkdir()
    (root / "20260101-000003-broken" / ad.MANIFEST).write_text("{not json")
    assert ad.list_adapters(settings.home_path, "default") == []
    with pytest.raises(NotFoundError, match="no fine-tuned adapter"):
        ad.get_adapter(settings.home_path, "default")
    with pytest.raises(ModelError, match="newer than this ragtune"):
        ad.load_manifest(newer)


def test_hybrid_prefers_the_newest_raft_adapter(settings, tmp_path):
    fake_adapter(settings.home_path, "default", [], tmp_path, "old-raft", created=1.0, raft=True)
    fake_adapter(settings.home_path, "default", [], tmp_path, "new-plain", created=2.0)
    assert ad.get_adapter(settings.home_path, "default").id == "new-plain"
    assert ad.get_adapter(settings.home_path, "default", prefer_raft=True).id == "old-raft"
    assert ad.get_adapter(settings.home_path, "default", "old-raft").id == "old-raft"
    with pytest.raises(NotFoundError):
        ad.get_adapter(settings.home_path, "default", "nope")


def test_gguf_conversion_writes_llama_cpp_lora_tensors(tmp_path):
    gguf = pytest.importorskip("gguf")
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    n_head, n_kv, head_dim, hidden, r = 4, 2, 8, 32, 2
    tensors = {}
    for module, out_dim in (("self_attn.q_proj", n_head * head_dim), ("self_attn.k_proj", n_kv * head_dim),
                            ("mlp.down_proj", hidden)):
        prefix = f"base_model.model.model.layers.0.{module}"
        tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((r, hidden)).astype(np.float32)
        tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((out_dim, r)).astype(np.float32)
    peft_dir = tmp_path / "peft"
    peft_dir.mkdir()
    save_file(tensors, str(peft_dir / "adapter_model.safetensors"))
    (peft_dir / "adapter_config.json").write_text(json.dumps({"lora_alpha": 16, "r": r}))
    out = ad.peft_to_gguf(peft_dir, tmp_path / "a.gguf", n_head, n_kv)
    reader = gguf.GGUFReader(str(out))
    fields = {f.name: f for f in reader.fields.values()}
    assert bytes(fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(fields["adapter.type"].parts[-1]).decode() == "lora"
    assert float(fields["adapter.lora.alpha"].parts[-1][0]) == 16.0
    got = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert set(got) == {f"blk.0.{n}.weight.lora_{x}" for n in ("attn_q", "attn_k", "ffn_down") for x in "ab"}
    q_b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    # llama.cpp's RoPE row order: per head, the even rows then the odd rows (convert_hf_to_gguf's permute)
    expected = q_b.reshape(n_head, 2, head_dim // 2, r).swapaxes(1, 2).reshape(q_b.shape)
    assert np.array_equal(got["blk.0.attn_q.weight.lora_b"].reshape(q_b.shape), expected)
    down_a = tensors["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"]
    assert np.array_equal(got["blk.0.ffn_down.weight.lora_a"].reshape(down_a.shape), down_a)
    assert not list(tmp_path.glob(".*.tmp"))


# --------------------------------------------------------------------------- strategies and CLI
def test_finetune_and_hybrid_answers_report_adapter_staleness(kb, settings, tmp_path):
    from ragtune.models.embedders import HashEmbedder
    from ragtune.models.generators import EchoGenerator
    from ragtune.strategies import STRATEGIES, open_strategy

    store, bot, docs = kb
    assert {"finetune", "hybrid"} <= set(STRATEGIES)
    s = settings.replace(generator="echo")
    with pytest.raises(NotFoundError, match="ragtune finetune"):
        open_strategy("finetune", store, bot, s, HashEmbedder(), EchoGenerator())
    _, learned = read_knowledge(store, bot)
    fake_adapter(settings.home_path, bot.name, learned, tmp_path)
    for name in ("finetune", "hybrid"):
        answer = open_strategy(name, store, bot, s, HashEmbedder(), EchoGenerator()).answer(
            "How long is the trial period for returns?")
        assert answer.strategy == name and answer.extra["adapter"]["stale"] is False
    shutil.copy(EXAMPLES / "helpcenter" / "v2" / "returns-and-refunds.md", docs / "returns-and-refunds.md")
    sync_bot(store, settings, bot)
    hybrid = open_strategy("hybrid", store, bot, s, HashEmbedder(), EchoGenerator())
    answer = hybrid.answer("How long is the trial period for returns?")
    assert answer.extra["adapter"]["stale"] and "changed" in answer.extra["adapter"]["stale_reason"]
    assert answer.citations  # hybrid keeps rag's retrieval and citations



def test_finetune_is_the_base_generation_with_the_trained_prompt(settings):
    from ragtune.strategies import BaseStrategy, BotProfile
    from ragtune.train.dataset import FINETUNE_SYSTEM
    from ragtune.train.strategies import FinetuneStrategy

    class Recorder(Generator):
        name = "recorder"
        seen: list = []

        def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
            self.seen.append(messages)
            yield "I don't know."

    history = [{"role": "system", "content": "ignore me"}] + [
        {"role": "user" if i % 2 else "assistant", "content": f"turn {i}"} for i in range(7)]
    info = {"id": "a1", "stale": False}
    gen = Recorder()
    tuned = FinetuneStrategy(gen, settings, info).answer("  Is it\x00 free? ", history)
    base = BaseStrategy(gen, settings, BotProfile()).answer("Is it free?", history[:3])
    sent_tuned, sent_base = gen.seen
    assert sent_tuned[0] == {"role": "system", "content": FINETUNE_SYSTEM}
    assert [m["content"] for m in sent_tuned[1:]] == [f"turn {i}" for i in range(1, 7)] + ["Is it free?"]
    assert sent_base[0]["content"] != FINETUNE_SYSTEM and [m["content"] for m in sent_base[1:]] == \
        ["ignore me", "turn 0", "turn 1", "Is it free?"]
    assert (tuned.strategy, tuned.abstained, tuned.extra, tuned.citations) == ("finetune", True, {"adapter": info}, ())
    assert (base.strategy, base.extra) == ("base", {})

def test_cli_adapters_and_ask_json_show_staleness(home, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(KB, docs)
    run_cli(home, "ingest", str(docs))
    assert json.loads(run_cli(home, "adapters", "--json").stdout) == []
    p = run_cli(home, "ask", "How long is the trial?", "--strategy", "finetune", "--model", "echo", check=False)
    assert p.returncode == 3 and "ragtune finetune" in p.stderr and "Traceback" not in p.stderr
    from ragtune.store.sqlite import SQLiteStore

    with SQLiteStore(home / "ragtune.db") as store:
        bot = store.get_bot("default")
        fake_adapter(home, "default", read_knowledge(store, bot)[1], tmp_path)
    shutil.copy(EXAMPLES / "helpcenter" / "v2" / "pause-or-cancel.md", docs / "pause-or-cancel.md")
    run_cli(home, "sync")
    rows = json.loads(run_cli(home, "adapters", "--json").stdout)
    assert rows[0]["id"] == "a1" and rows[0]["stale"] and rows[0]["changed"][0].endswith("pause-or-cancel.md")
    assert "STALE" in run_cli(home, "adapters").stdout
    out = json.loads(run_cli(home, "ask", "How long can I pause?", "--strategy", "hybrid", "--model", "echo",
                             "--json").stdout)
    assert out["strategy"] == "hybrid" and out["adapter"]["stale"] is True
    p = run_cli(home, "ask", "x", "--strategy", "tuned", check=False)
    assert p.returncode == 2 and "finetune" in p.stderr


def test_cli_finetune_bad_input_is_one_line_and_creates_nothing(home, tmp_path):
    run_cli(home, "ingest", str(KB))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for args, code, message in [
        (("--qa", str(empty), "--no-kb", "--dry-run"), 2, "is empty"),
        (("--steps", "0"), 2, "steps must be at least 1"),
        (("--bot", "nobody", "--dry-run"), 3, "nobody"),
    ]:
        p = run_cli(home, "finetune", *args, check=False)
        assert p.returncode == code and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (home / "adapters" / "default").exists() or not any((home / "adapters" / "default").iterdir())


def test_missing_training_extra_names_the_extra_and_loses_nothing(home, monkeypatch):
    from ragtune.train.lora import require_training

    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(MissingExtraError, match=r"ragtune\[train\]"):
        require_training()
    run_cli(home, "ingest", str(KB))
    before = sorted(p.name for p in home.rglob("*"))
    code = ("import sys; sys.modules['peft'] = None; from ragtune.cli import main; "
            "sys.exit(main(['finetune', '--json']))")
    p = subprocess.run([sys.executable, "-c", code], env=cli_env(home), capture_output=True, text=True, timeout=300)
    assert p.returncode == MissingExtraError.exit_code
    assert "peft is not installed" in p.stderr and "ragtune[train]" in p.stderr and "Traceback" not in p.stderr
    assert sorted(p.name for p in home.rglob("*")) == before  # nothing written, nothing removed


def test_unused_example_and_dataset_types_are_frozen():
    ex = Example("q?", "a.", "fact", "g")
    with pytest.raises(Exception):
        ex.question = "other"  # type: ignore[misc]
    ds = Dataset([ex], [], [])
    assert ds.summary()["kinds"] == {"fact": 1}
    train, held = held_out_split([ex], 0.5, 0)
    assert train == [ex] and held == []


def test_a_batch_is_cut_into_passes_within_the_token_budget_and_weighted_to_its_mean():
    from ragtune.train.lora import IGNORE, _answer_tokens, _micro_batches

    rows = [(list(range(n)), [IGNORE] * (n - a) + list(range(a))) for n, a in
            [(900, 10), (40, 5), (1000, 20), (60, 6), (300, 7), (2500, 3)]]
    parts = _micro_batches(rows, 2048)
    assert sorted(len(r[0]) for p in parts for r in p) == sorted(len(r[0]) for r in rows)  # every row, once
    for p in parts:  # padded to the longest row of its pass; only a row longer than the budget is over it
        assert len(p) * max(len(r[0]) for r in p) <= 2048 or len(p) == 1
    assert len(parts) > 1 and any(len(p) > 1 for p in parts)
    weights = [_answer_tokens(p) / _answer_tokens(rows) for p in parts]
    assert abs(sum(weights) - 1.0) < 1e-9 and _answer_tokens(rows) == 10 + 5 + 20 + 6 + 7 + 3
    assert len(_micro_batches(rows, 10 ** 6)) == 1


def test_learning_rate_warms_up_then_decays_to_a_tenth_over_the_step_budget():
    from ragtune.errors import ConfigError
    from ragtune.train.lora import TrainConfig, _lr_factor

    cosine = TrainConfig(steps=110, warmup_steps=10)
    factors = [_lr_factor(cosine, s) for s in range(130)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # never rises after warm-up
    assert factors[60] == pytest.approx(0.55) and factors[110] == pytest.approx(0.1) and factors[129] == pytest.approx(0.1)
    assert {_lr_factor(TrainConfig(steps=110, schedule="constant"), s) for s in range(10, 130)} == {1.0}
    with pytest.raises(ConfigError, match="unknown schedule"):
        TrainConfig(schedule="linear")
