"""Adapting the embedder (`ragtune tune-embedder`): questions cached per chunk text, fine-tuning of the packaged
MiniLM, the held-out recall figure, the folder the minilm-torch embedder then loads (`embedder_path`) and the
errors. The question writer is a fake generator (a real one takes ~2 s a chunk); the model trained is the real
all-MiniLM-L6-v2."""

import json
import re
import shutil

import numpy as np
import pytest

from conftest import EXAMPLES, run_cli
from ragtune.erasure import forget
from ragtune.errors import ConfigError, InputError, ModelError
from ragtune.ingest.sync import register_sources, sync_bot
from ragtune.models.embedders import TorchMiniLMEmbedder, embedder_identity, open_embedder, packaged_minilm_folder
from ragtune.models.generators import Generator
from ragtune.train.embedder import TuneConfig, collect_questions, tune_embedder



class Asker(Generator):
    """Writes two questions from a chunk's own words (its heading line and its first words), counting calls."""

    name = "asker"

    def __init__(self):
        self.calls = 0

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
        self.calls += 1
        text = re.search(r"Text: (.*?)\n\nWrite", messages[-1]["content"], re.S).group(1)
        head, _, body = text.partition("\n")
        words = re.findall(r"[A-Za-z]{4,}", body)
        yield f"1. What does {head} say?\n2. How about {' '.join(words[:6])}?\n3. Why {' '.join(words[6:10])}?"


@pytest.fixture
def kb(store, settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("plans-and-pricing.md", "returns-and-refunds.md", "shipping-and-delivery.md", "warranty.md",
                 "battery-care.md", "gift-cards.md"):  # a third of the help centre: ~40 chunks, a few seconds
        shutil.copy(EXAMPLES / "helpcenter" / "v1" / name, docs)
    bot = store.ensure_bot("default")
    register_sources(store, bot, [str(docs)], settings)
    sync_bot(store, settings, bot)
    return store, bot, docs


def test_tuned_folder_is_an_embedder_and_questions_are_not_asked_twice(kb, settings):
    store, bot, docs = kb
    asker = Asker()
    report = tune_embedder(store, bot, settings, asker, TuneConfig(questions_per_chunk=3), progress=False)
    chunks = len(store.list_chunks(bot))
    assert asker.calls == chunks and report["chunks"] == chunks
    assert report["questions"] == 3 * chunks and report["held_out"] == chunks // 10
    assert report["train_pairs"] == report["questions"] - report["held_out"] and report["steps"] > 0
    r = report["recall_at_1"]
    assert 0 <= r["before"] <= r["after"] <= 1  # learning the documents did not make held-out questions worse
    cache = settings.home_path / "embedders" / "questions.jsonl"
    assert len(cache.read_text().splitlines()) == chunks

    tuned = TorchMiniLMEmbedder(path=report["path"])
    plain = TorchMiniLMEmbedder()
    assert tuned.identity.startswith("st:default-") and tuned.identity != plain.identity
    text = "How long do I have to return a bike?"
    a, b = tuned.embed([text])[0], plain.embed([text])[0]
    assert abs(float(np.linalg.norm(a)) - 1) < 1e-4 and float(a @ b) < 0.9999  # its own weights
    s = settings.replace(embedder="minilm-torch", embedder_path=report["path"])
    assert embedder_identity(s) == tuned.identity == open_embedder(s).identity

    again = collect_questions(store.list_chunks(bot), asker, 3, cache, progress=False)
    assert asker.calls == chunks  # every chunk's questions came from the cache
    assert sum(len(q) for q in again.values()) == report["questions"]
    cache.write_text(cache.read_text() + '{"key": "cut short')  # a line a killed run left half-written
    assert collect_questions(store.list_chunks(bot), asker, 3, cache, progress=False) == again

    forget(store, bot, str(docs / "warranty.md"))  # erasure drops what the generator wrote about the page
    assert len(cache.read_text().splitlines()) == len(store.list_chunks(bot)) < chunks


def test_embedder_path_errors(settings, tmp_path):
    with pytest.raises(ConfigError, match="embedder = minilm-torch"):
        open_embedder(settings.replace(embedder="minilm", embedder_path=str(tmp_path)))
    with pytest.raises(ModelError, match="not a sentence-transformers folder"):
        embedder_identity(settings.replace(embedder="minilm-torch", embedder_path=str(tmp_path)))
    copy = tmp_path / "copy"
    shutil.copytree(packaged_minilm_folder(), copy)
    same = TorchMiniLMEmbedder(path=copy)
    assert same.identity.startswith("st:copy/")
    text = ["Cancel my plan"]
    assert np.allclose(same.embed(text), TorchMiniLMEmbedder().embed(text), atol=1e-5)
    assert same.dim == same.embed(text).shape[1] == 384


def test_a_wider_sentence_transformers_folder_sets_the_vector_width(tmp_path):
    """A user's folder of another size (all-mpnet-base-v2 writes 768-d vectors) is read at its own width."""
    wide = tmp_path / "wide"
    shutil.copytree(packaged_minilm_folder(), wide)
    pooling = json.loads((wide / "1_Pooling/config.json").read_text())
    (wide / "1_Pooling/config.json").write_text(json.dumps({**pooling, "word_embedding_dimension": 768}))
    assert TorchMiniLMEmbedder(path=wide).dim == 768
    (wide / "1_Pooling/config.json").unlink()  # no pooling config: the encoder's own width
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "hidden_size": 1024}))
    assert TorchMiniLMEmbedder(path=wide).dim == 1024


def test_a_generator_that_writes_no_questions_is_a_clear_error(kb, settings, home):
    store, bot, _ = kb
    with pytest.raises(InputError, match="usable questions"):
        tune_embedder(store, bot, settings, _Silent(), progress=False)
    proc = run_cli(home, "tune-embedder", "--model", "echo", check=False)  # echo answers "I don't know."
    assert proc.returncode != 0 and "usable questions" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(home, "tune-embedder", "--bot", "nosuch", check=False)
    assert proc.returncode != 0 and "nosuch" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(run_cli(home, "config", "--json").stdout)  # the store is still readable


class _Silent(Generator):
    name = "silent"

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
        yield "I don't know."
