"""The `finetune` strategy (the adapter alone, no retrieval) and the `hybrid` strategy (the adapter behind the rag
strategy's retrieval, evidence-based abstention and grounded sentences), plus the generator that serves an
adapter: llama.cpp with the GGUF LoRA (fast), or transformers + peft as the fallback. Every answer carries the
adapter's id and staleness in `extra["adapter"]`."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Iterator

from ..errors import ConfigError, ModelError
from ..models.embedders import Embedder
from ..models.generators import EchoGenerator, Generator, open_generator
from ..settings import Settings
from ..store import Bot, Store
from ..strategies import BaseStrategy, BotProfile, RagStrategy, Strategy
from ..types import Answer
from . import TRAIN_EXTRA
from .adapters import Adapter, adapter_status, current_documents, get_adapter
from .dataset import FINETUNE_SYSTEM

ADAPTER_STRATEGIES = ("finetune", "hybrid")
RUNTIMES = ("auto", "llama.cpp", "transformers")


class PeftGenerator(Generator):
    """The fallback runtime: the fp32 base model from its GGUF with the PEFT adapter, greedy decoding with a KV
    cache, in transformers. Loaded on first use; one generation at a time."""

    def __init__(self, adapter: Adapter, settings: Settings) -> None:
        from .lora import base_model_for

        self.adapter, self.settings = adapter, settings
        self.base = base_model_for(settings)
        self.name = f"{self.base.name}+lora:{adapter.id}(transformers)"
        self.context_tokens = settings.context_tokens
        self._model = self._tok = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            from ..errors import require
            from .lora import load_base

            torch = require("torch", TRAIN_EXTRA)
            peft = require("peft", TRAIN_EXTRA)
            if self.settings.threads:
                torch.set_num_threads(self.settings.threads)
            tok, model = load_base(self.base, "cpu")
            self._model = peft.PeftModel.from_pretrained(model, str(self.adapter.peft)).eval()
            self._tok = tok
        return self._tok, self._model

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None) -> Iterator[str]:
        import torch

        with self._lock:
            tok, model = self._load()
            ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, return_tensors="pt",
                                          return_dict=False)
            if not hasattr(ids, "shape"):
                ids = torch.tensor([ids])
            if ids.shape[1] + max_tokens > self.context_tokens:
                raise ModelError(f"{self.name}: the prompt ({ids.shape[1]} tokens) does not fit the context window")
            out: list[int] = []
            said = ""
            past, step_ids = None, ids
            with torch.no_grad():
                for _ in range(max_tokens):
                    res = model(input_ids=step_ids, past_key_values=past, use_cache=True)
                    past = res.past_key_values
                    nxt = int(res.logits[0, -1].argmax())
                    if nxt == tok.eos_token_id:
                        break
                    out.append(nxt)
                    step_ids = torch.tensor([[nxt]])
                    text = tok.decode(out, skip_special_tokens=True)
                    if stop and any(s in text for s in stop):
                        text = text[: min(text.index(s) for s in stop if s in text)]
                        if text[len(said):]:
                            yield text[len(said):]
                        return
                    if text[len(said):] and not text.endswith("\ufffd"):
                        yield text[len(said):]
                        said = text

    def count_tokens(self, text: str) -> int:
        tok, _ = self._load()
        return len(tok(text, add_special_tokens=False)["input_ids"])


def open_adapter_generator(settings: Settings, adapter: Adapter, runtime: str = "auto") -> Generator:
    """The generator with `adapter` applied: llama.cpp + GGUF LoRA when the adapter has one (runtime auto or
    llama.cpp), else transformers + peft. The echo fake stays the echo fake (tests)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown adapter_runtime {runtime!r}; valid values: {', '.join(RUNTIMES)}")
    if settings.generator == "echo":
        return EchoGenerator()
    if settings.generator == "openai":
        raise ConfigError("a fine-tuned adapter runs on the local model it was trained on, not on generator = "
                          "openai; use --model smollm2 (or the adapter's base model)")
    from .lora import base_model_for

    base = base_model_for(settings)
    trained_on = adapter.manifest.get("base_model", {})
    if trained_on.get("name") != base.name:
        raise ConfigError(f"adapter {adapter.id} was trained on {trained_on.get('name')}, but the generator is "
                          f"{base.name}; use the adapter's base model")
    if runtime in ("auto", "llama.cpp") and adapter.gguf is not None:
        return open_generator(settings, lora_path=adapter.gguf)
    if runtime == "llama.cpp":
        raise ModelError(f"adapter {adapter.id} has no GGUF conversion "
                         f"({adapter.manifest.get('files', {}).get('gguf_error') or 'not converted'}); "
                         "use adapter_runtime = transformers")
    return PeftGenerator(adapter, settings)


def adapter_info(store: Store, bot: Bot, adapter: Adapter) -> dict[str, Any]:
    """What an answer reports about its adapter: id, staleness and why."""
    status = adapter_status(adapter, current_documents(store, bot))
    return {"id": adapter.id, "stale": status["stale"], "stale_reason": status["reason"],
            "changed": status["changed"], "removed": status["removed"], "raft": adapter.raft,
            "created_at": adapter.manifest.get("created_at")}


class FinetuneStrategy(BaseStrategy):
    """The adapter alone: what the model learned, without retrieval, so no citations. The base strategy's
    generation with the prompt the adapter was trained on, and the adapter's id and staleness in each answer."""

    name = "finetune"
    system = FINETUNE_SYSTEM

    def __init__(self, generator: Generator, settings: Settings, info: dict[str, Any]) -> None:
        super().__init__(generator, settings, BotProfile())
        self.info = info

    def messages(self, question, history):
        return super().messages(question, [m for m in list(history)[-6:] if m.get("role") in ("user", "assistant")])

    def extra(self) -> dict:
        return {"adapter": self.info}


class HybridStrategy(RagStrategy):
    """The rag strategy (retrieval, abstention, grounded sentences, citations) generating with the adapter."""

    name = "hybrid"

    def __init__(self, store, bot, settings, embedder, generator, info: dict[str, Any],
                 profile: BotProfile | None = None) -> None:
        super().__init__(store, bot, settings, embedder, generator, profile)
        self.info = info

    def stream(self, question, history=()):
        for item in super().stream(question, history):
            if isinstance(item, Answer):
                item = dataclasses.replace(item, extra={**item.extra, "adapter": self.info})
            yield item


def open_adapter_strategy(name: str, store: Store, bot: Bot, settings: Settings, embedder: Embedder | None,
                          generator: Generator | None = None) -> Strategy:
    """`finetune` or `hybrid` with the bot's newest adapter (settings.adapter picks another; hybrid prefers the
    newest RAFT-trained one). NotFoundError when the bot has no adapter."""
    adapter = get_adapter(settings.home_path, bot.name, getattr(settings, "adapter", "") or None,
                          prefer_raft=(name == "hybrid"))
    info = adapter_info(store, bot, adapter)
    gen = open_adapter_generator(settings, adapter, getattr(settings, "adapter_runtime", "auto"))
    if name == "finetune":
        return FinetuneStrategy(gen, settings, info)
    if name == "hybrid":
        return HybridStrategy(store, bot, settings, embedder, gen, info)
    raise ConfigError(f"unknown adapter strategy {name!r}; valid values: {', '.join(ADAPTER_STRATEGIES)}")
