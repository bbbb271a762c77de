"""Real LoRA training on the default model (a tiny fact, a handful of steps): a run killed midway resumes and no
half-written adapter is ever listed; the adapter is served by llama.cpp from its GGUF conversion; after the fact
changes the adapter is stale, rag and hybrid follow the new fact, finetune keeps the old one until retrained."""

import pytest

pytest.importorskip("peft")
pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from ragtune.ingest.sync import register_sources, sync_bot  # noqa: E402
from ragtune.models.embedders import open_embedder  # noqa: E402
from ragtune.models.generators import open_generator  # noqa: E402
from ragtune.settings import Settings  # noqa: E402
from ragtune.store.sqlite import SQLiteStore  # noqa: E402
from ragtune.strategies import open_strategy  # noqa: E402
from ragtune.train import adapters as ad  # noqa: E402
from ragtune.train.dataset import build_dataset, extract_facts, read_knowledge, template_questions  # noqa: E402
from ragtune.train.lora import TrainConfig, finetune  # noqa: E402

pytestmark = pytest.mark.slow

LOCKERS = """# Lockers

## Locker code

The locker code at the Amsterdam hub is {code}.

## Locker size

Each locker at the hub is 60 centimetres wide and holds one folded e-bike.
"""
HOURS = """# Opening hours

The Amsterdam hub opens at 7:30 on weekdays and closes at 19:00.
"""
CONFIG = TrainConfig(steps=12, batch_size=4, learning_rate=5e-3, warmup_steps=1, eval_every=7, patience=99,
                     checkpoint_every=2, eval_generate=0, max_minutes=5)


class Killed(Exception):
    pass


def test_lora_resume_staleness_and_freshness(tmp_path):
    home, docs = tmp_path / "home", tmp_path / "docs"
    docs.mkdir()
    (docs / "lockers.md").write_text(LOCKERS.format(code="4512"))
    (docs / "hours.md").write_text(HOURS)
    settings = Settings.load(overrides={"home": str(home), "progress": False, "max_tokens": 24, "threads": 1}, env={})
    home.mkdir()
    store = SQLiteStore(home / "ragtune.db")
    bot = store.ensure_bot("default")
    embedder = open_embedder(settings)
    register_sources(store, bot, [str(docs)], settings)
    sync_bot(store, settings, bot, embedder=embedder)
    generator = open_generator(settings)
    # a phrasing training sees (this test is about freshness; generalisation is measured in benchmarks/finetune.py)
    fact = next(f for f in extract_facts(read_knowledge(store, bot)[0]) if f.value == "4512")
    question = template_questions(fact, 4)[0]

    def train():
        dataset = build_dataset(store, bot, paraphrases=4, held_out_share=0.2)
        return finetune(dataset, CONFIG, settings, bot.name)

    def ask(name):
        return open_strategy(name, store, bot, settings, embedder, generator).answer(question)

    # killed midway: the checkpoint stays, no adapter is listed (nothing half-written can be loaded)
    def kill(step, loss):
        if step == 5:
            raise Killed()

    dataset = build_dataset(store, bot, paraphrases=4, held_out_share=0.2)
    with pytest.raises(Killed):
        finetune(dataset, CONFIG, settings, bot.name, on_step=kill)
    assert ad.list_adapters(home, "default") == []
    assert list((home / "adapters" / "default" / ad.WORK_DIR).glob("*/checkpoint.pt"))
    # the same command again resumes from the last checkpoint (step 4) and commits the adapter
    adapter, result = train()
    assert result.resumed_from == 4 and result.steps_run == CONFIG.steps
    assert adapter.gguf is not None and ad.list_adapters(home, "default")[0].id == adapter.id
    assert not (home / "adapters" / "default" / ad.WORK_DIR).exists() or \
        not any((home / "adapters" / "default" / ad.WORK_DIR).iterdir())
    assert result.held_out_loss < result.initial_held_out_loss
    m = adapter.manifest
    assert {d["path"].rsplit("/", 1)[-1] for d in m["documents"]} == {"lockers.md", "hours.md"}
    assert m["base_model"]["sha256"] and m["training"]["steps_run"] == CONFIG.steps and m["metrics"]["held_out_loss"]

    before = ask("finetune")
    assert before.extra["adapter"]["stale"] is False
    # Whether 12 CPU steps make the model recite "4512" varied between runs (thread scheduling), so recall of the
    # fact is measured by benchmarks/finetune.py, not asserted here; freshness and staleness are.

    # the fact changes: the adapter is stale, rag and hybrid follow the new fact, finetune does not
    (docs / "lockers.md").write_text(LOCKERS.format(code="7788"))
    sync_bot(store, settings, bot, embedder=embedder)
    rag, hybrid, tuned = ask("rag"), ask("hybrid"), ask("finetune")
    assert "7788" in rag.answer and "7788" in hybrid.answer
    assert "7788" not in tuned.answer
    assert tuned.extra["adapter"]["stale"] and hybrid.extra["adapter"]["stale"]

    # retrained: a new, current adapter that knows the new fact
    retrained, result2 = train()
    after = ask("finetune")
    assert after.extra["adapter"]["id"] == retrained.id and after.extra["adapter"]["stale"] is False
    assert result2.held_out_loss < result2.initial_held_out_loss
    learned = {d["path"].rsplit("/", 1)[-1]: d for d in retrained.manifest["documents"]}
    assert learned["lockers.md"] != {d["path"].rsplit("/", 1)[-1]: d for d in m["documents"]}["lockers.md"]
    store.close()
