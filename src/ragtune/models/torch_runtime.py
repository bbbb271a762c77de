"""The `torch` runtime for local GGUF models of the Llama family (SmolLM2, Qwen2): a second engine beside
llama.cpp for the same weights, for CPUs with matrix units. Measured on a 2-core Xeon with AMX (bf16): a
1,000-token prompt is read in ~0.4 s in bf16, against 2.1 s for llama.cpp (AVX-512, flash attention), and tokens
are written at llama.cpp's pace with int8 weights (per-channel, fbgemm), where bf16 matrix-vector products are slow.

The weights come from the GGUF through transformers' reader (dequantised; the model's own tokenizer and chat
template kept); the forward pass is written out here, a plain decoder of ~40 lines, because the transformers
model spends ~20 ms a token in Python bookkeeping, twice llama.cpp's whole step. Everything else (chat template,
tokenizer) stays transformers'. The system turn's keys and values are kept between answers and the rest of the
prompt is always read after them, so the same messages give the same text whether cached or not."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import MissingExtraError, ModelError
from .generators import (Generator, Message, _cache_key, _read_cache, _remember, sha256_file, system_prefix,
                         verify_sha256)

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")


class _Weights:
    """One model's tensors, twice: bf16 for reading prompts (batched matmuls) and int8 for writing tokens."""

    def __init__(self, cfg, sd: dict, torch) -> None:
        arch = (cfg.architectures or ["?"])[0]
        if arch not in ARCHITECTURES:
            raise ModelError(f"the torch runtime runs {', '.join(ARCHITECTURES)} models, not {arch}; "
                             "use generator_runtime = llama.cpp")
        self.layers = cfg.num_hidden_layers
        self.hidden = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or self.hidden // self.heads
        self.inter = cfg.intermediate_size
        self.eps = float(cfg.rms_norm_eps)
        rope = getattr(cfg, "rope_parameters", None) or {}
        self.theta = float(rope.get("rope_theta") or getattr(cfg, "rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            raise ModelError(f"the torch runtime supports plain RoPE only, not {rope.get('rope_type')}")
        bf16 = torch.bfloat16
        self.prefill, self.decode = [], []
        for i in range(self.layers):
            def w(name: str, _i=i):
                return sd[f"model.layers.{_i}.{name}"]

            def b(name: str, size: int, _i=i):
                t = sd.get(f"model.layers.{_i}.{name}.bias")
                return t if t is not None else torch.zeros(size)

            qkv = torch.cat([w("self_attn.q_proj.weight"), w("self_attn.k_proj.weight"), w("self_attn.v_proj.weight")])
            qkv_bias = torch.cat([b("self_attn.q_proj", self.heads * self.head_dim),
                                  b("self_attn.k_proj", self.kv_heads * self.head_dim),
                                  b("self_attn.v_proj", self.kv_heads * self.head_dim)])
            gate_up = torch.cat([w("mlp.gate_proj.weight"), w("mlp.up_proj.weight")])
            norms = (w("input_layernorm.weight").float(), w("post_attention_layernorm.weight").float())
            mats = (qkv, w("self_attn.o_proj.weight"), gate_up, w("mlp.down_proj.weight"))
            self.prefill.append((*norms, qkv_bias.to(bf16), *[m.to(bf16).contiguous() for m in mats]))
            self.decode.append((*norms, qkv_bias.float(), *[_int8(m, torch) for m in mats]))
        self.has_bias = any(k.endswith("_proj.bias") for k in sd)
        self.embed = sd["model.embed_tokens.weight"].float()
        self.norm = sd["model.norm.weight"].float()
        head = sd.get("lm_head.weight", self.embed)
        self.head_bf16 = head.to(bf16).contiguous()
        self.head_int8 = _int8(head, torch)


def _int8(weight, torch):
    """Per-output-channel symmetric int8, pre-packed for fbgemm's dynamic linear (fp32 in, fp32 out); falls
    back to the fp32 matrix where the quantized kernels are missing."""
    weight = weight.float().contiguous()
    try:
        scale = (weight.abs().amax(1) / 127.0).clamp(min=1e-8).double()
        with warnings.catch_warnings():  # quantized tensors are deprecated, but still the fastest int8 GEMV here
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight, scale, torch.zeros(weight.shape[0], dtype=torch.long), 0,
                                           torch.qint8)
            return torch.ops.quantized.linear_prepack(q, None)
    except (RuntimeError, AttributeError):
        return weight


class TorchGGUFGenerator(Generator):
    """A Llama-family GGUF model run in PyTorch (see the module notes). Loads on first use."""

    def __init__(self, model_path: str | Path, name: str, n_ctx: int = 2048, n_threads: int = 0, *,
                 sha256: str | None = None, verify_cache: str | Path | None = None, seed: int = 0,
                 cache_dir: str | Path | None = None) -> None:
        self.model_path = Path(model_path)
        self.cache_dir = Path(cache_dir) if cache_dir else None  # where the converted weights are kept
        self.name = name
        self.context_tokens = n_ctx
        self.n_threads = n_threads
        self.sha256 = sha256
        self.verify_cache = verify_cache
        self.seed = seed
        self._model = self._parts = None  # (tokenizer, _Weights, torch)
        self._cache = None  # keys and values, bf16 (half the reading per token): [layers, 2, kv_heads, n_ctx, head_dim]
        self._cached: list[int] = []  # the tokens whose keys and values are in the cache (the system turn)
        self._prefixes: dict[tuple, list[int]] = {}
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def runtime(self) -> str:
        import torch

        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()  # oneDNN reads bf16 prompts on it
        return f"torch {torch.__version__} ({'AMX' if amx else torch.backends.cpu.get_cpu_capability()})"

    # ------------------------------------------------------------------ loading
    def _loaded(self):
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self):
        if not self.model_path.is_file():
            raise ModelError(f"model file {self.model_path} does not exist")
        if self.sha256:
            verify_sha256(self.model_path, self.sha256, self.verify_cache)
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise MissingExtraError("torch", "torch") from exc
        if self.n_threads:
            torch.set_num_threads(self.n_threads)
        tok, cfg, sd = self._read(torch, transformers)
        weights = _Weights(cfg, sd, torch)
        del sd
        hd = weights.head_dim
        inv = 1.0 / (weights.theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        angles = torch.outer(torch.arange(self.context_tokens, dtype=torch.float64), inv)
        angles = torch.cat([angles, angles], -1)
        self._rope = (angles.cos().float(), angles.sin().float())
        self._cache = torch.zeros(weights.layers, 2, weights.kv_heads, self.context_tokens, hd, dtype=torch.bfloat16)
        self._stops = {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"),
                                   tok.convert_tokens_to_ids("<|endoftext|>")) if isinstance(i, int) and i >= 0}
        self._parts = tok, weights, torch  # what _forward uses; _model (the loaded flag) is set after warming up
        with torch.inference_mode():  # the first products of each kind pay for kernel set-up: not the first answer
            self._forward(list(range(16)), 0)
            self._forward([0], 16)
        return tok, weights, torch

    def _read(self, torch, transformers):
        """Tokenizer, config and fp16 tensors: from the converted copy in `cache_dir` when there is one (0.5 s),
        else from the GGUF (transformers' GGUF reader: ~20 s for SmolLM2, mostly parsing the vocabulary), then
        saved there for next time, under the GGUF's sha256."""
        sidecar = Path(self.verify_cache) if self.verify_cache else None
        digest = self.sha256 or _read_cache(sidecar).get(_cache_key(self.model_path))
        if not digest:
            digest = sha256_file(self.model_path)
            _remember(sidecar, self.model_path, digest)
        folder = self.cache_dir / f"{self.model_path.stem}-{digest[:16]}" if self.cache_dir else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if folder is not None and (folder / "weights.pt").is_file():
                try:
                    return (transformers.AutoTokenizer.from_pretrained(str(folder)),
                            transformers.AutoConfig.from_pretrained(str(folder)),
                            torch.load(folder / "weights.pt", mmap=True, weights_only=True))
                except Exception:  # a damaged copy is made again from the GGUF
                    pass
            where, file = str(self.model_path.parent), self.model_path.name
            try:
                tok = transformers.AutoTokenizer.from_pretrained(where, gguf_file=file)
                model = transformers.AutoModelForCausalLM.from_pretrained(where, gguf_file=file,
                                                                          dtype=torch.float32)
            except Exception as exc:  # transformers reports unknown files and architectures in many ways
                raise ModelError(f"could not load GGUF model {self.model_path} with transformers: {exc}") from exc
        cfg = model.config
        cfg.architectures = cfg.architectures or [type(model).__name__]
        sd = {k: v.half() for k, v in model.state_dict().items()}  # the 4-bit weights fit fp16 to ~1e-3
        if folder is not None:
            try:
                import shutil
                import tempfile

                folder.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
                tok.save_pretrained(str(tmp))
                cfg.save_pretrained(str(tmp))
                torch.save(sd, tmp / "weights.pt")
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)  # complete or absent
            except OSError:  # a read-only home: convert again next time
                pass
        return tok, cfg, sd

    # ------------------------------------------------------------------ the decoder
    def _step(self, token: int, pos: int):
        """One token at `pos`: int8 matmuls, attention over the bf16 cache, fp32 everything else, with as few
        tensor operations as will do."""
        tok, w, torch = self._parts
        F = torch.nn.functional
        hq, hkv, hd = w.heads, w.kv_heads, w.head_dim
        cos, sin = self._rope[0][pos], self._rope[1][pos]
        x = w.embed[token].unsqueeze(0)  # [1, hidden]
        for i, (n1, n2, qkv_bias, qkv, o, gate_up, down) in enumerate(w.decode):
            h = _linear(F.rms_norm(x, (w.hidden,), n1, w.eps), qkv)
            if w.has_bias:
                h = h + qkv_bias
            qk = h[0, : (hq + hkv) * hd].view(hq + hkv, hd)
            a, b = qk.chunk(2, -1)
            qk = qk * cos + torch.cat([-b, a], -1) * sin
            self._cache[i, 0, :, pos] = qk[hq:]
            self._cache[i, 1, :, pos] = h[0, (hq + hkv) * hd:].view(hkv, hd)
            keys, values = self._cache[i, 0, :, : pos + 1], self._cache[i, 1, :, : pos + 1]  # [hkv, n, hd]
            att = F.scaled_dot_product_attention(qk[:hq].view(1, hq, 1, hd).to(keys.dtype), keys.unsqueeze(0),
                                                 values.unsqueeze(0), enable_gqa=True).view(1, hq * hd).float()
            x = x + _linear(att, o)
            g, u = _linear(F.rms_norm(x, (w.hidden,), n2, w.eps), gate_up).chunk(2, -1)
            x = x + _linear(F.silu(g) * u, down)
        return _linear(F.rms_norm(x, (w.hidden,), w.norm, w.eps), w.head_int8)[0]

    def _forward(self, ids: list[int], pos: int):
        """Read `ids` at positions pos.. into the cache; return the logits of the last one. Several tokens: bf16
        matmuls (the CPU's matrix units); one token: `_step`."""
        if len(ids) == 1:
            return self._step(ids[0], pos)
        tok, w, torch = self._parts
        F = torch.nn.functional
        n, dtype = len(ids), torch.bfloat16
        x = w.embed[torch.tensor(ids)].unsqueeze(0)  # [1, n, hidden], fp32 residual stream
        cos, sin = (t[pos:pos + n].to(dtype) for t in self._rope)
        mask = None
        if pos:  # queries at pos.. see every cached key and the new ones up to their own
            mask = torch.ones(n, pos + n, dtype=torch.bool).tril(pos)
        hq, hkv, hd = w.heads, w.kv_heads, w.head_dim

        def norm(t, weight):
            return (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + w.eps) * weight).to(dtype)

        def rotate(t):
            a, b = t.chunk(2, -1)
            return t * cos + torch.cat([-b, a], -1) * sin

        for i, (n1, n2, qkv_bias, qkv, o, gate_up, down) in enumerate(w.prefill):
            h = F.linear(norm(x, n1), qkv, qkv_bias)
            q, k, v = h.split([hq * hd, hkv * hd, hkv * hd], -1)
            q = rotate(q.view(1, n, hq, hd).transpose(1, 2))
            k = rotate(k.view(1, n, hkv, hd).transpose(1, 2))
            self._cache[i, 0, :, pos:pos + n] = k[0]
            self._cache[i, 1, :, pos:pos + n] = v.view(1, n, hkv, hd).transpose(1, 2)[0]
            keys = self._cache[i, 0, :, : pos + n].unsqueeze(0).to(dtype)
            values = self._cache[i, 1, :, : pos + n].unsqueeze(0).to(dtype)
            a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=not pos, enable_gqa=True)
            x = x + F.linear(a.transpose(1, 2).reshape(1, n, hq * hd), o).float()
            g, u = F.linear(norm(x, n2), gate_up).chunk(2, -1)
            x = x + F.linear(F.silu(g) * u, down).float()
        return F.linear(norm(x[:, -1], w.norm), w.head_bf16).float()[0]

    # ------------------------------------------------------------------ prompts
    def _prompt(self, tok, messages: Sequence[Message]) -> list[int]:
        text = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False).input_ids

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None) -> Iterator[str]:
        tok, _, torch = self._loaded()
        with self._run_lock, torch.inference_mode():
            prompt = self._prompt(tok, messages)
            if len(prompt) + 1 > self.context_tokens:
                raise ModelError(f"{self.name}: the prompt has {len(prompt)} tokens, more than the context window "
                                 f"of {self.context_tokens}")
            max_tokens = min(max_tokens, self.context_tokens - len(prompt))
            prefix = system_prefix(messages, lambda msgs: self._prompt(tok, msgs), self._prefixes)
            if not prefix or prompt[: len(prefix)] != prefix or len(prefix) >= len(prompt):
                prefix = []
            if self._cached != prefix:  # the system turn is read as a batch of its own, then kept
                self._cached = []
                if prefix:
                    self._forward(prefix, 0)
                self._cached = list(prefix)
            logits = self._forward(prompt[len(prefix):], len(prefix))
            rng = torch.Generator().manual_seed(self.seed)
            out: list[int] = []
            shown, text = 0, ""
            stops = [s for s in stop or () if s]
            for step in range(max_tokens):
                if temperature and temperature > 0:
                    token = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=rng))
                else:
                    token = int(logits.argmax())
                if token in self._stops:
                    break
                out.append(token)
                text = tok.decode(out, skip_special_tokens=True)
                cut = min((text.find(s) for s in stops if s in text), default=-1)
                if cut >= 0:
                    if cut > shown:
                        yield text[shown:cut]
                    return
                ready = _ready(text, stops)
                if ready > shown:
                    yield text[shown:ready]
                    shown = ready
                if step + 1 < max_tokens:
                    logits = self._forward([token], len(prompt) + step)
            rest = text.rstrip("\ufffd")[shown:]
            if rest:
                yield rest

    def count_tokens(self, text: str) -> int:
        tok = self._loaded()[0]
        return len(tok(text, add_special_tokens=False).input_ids)

    def close(self) -> None:
        with self._load_lock:
            self._model, self._parts, self._cache, self._cached = None, None, None, []


def _ready(text: str, stops: Sequence[str]) -> int:
    """How much of `text` can be shown: not half a UTF-8 character (decoded as U+FFFD), nor an ending that may
    be the start of a stop string."""
    end = len(text.rstrip("\ufffd"))
    held = max((k for s in stops for k in range(1, len(s)) if text[:end].endswith(s[:k])), default=0)
    return end - held


def _linear(x, packed):
    """x @ W.T with an int8 pre-packed matrix (or an fp32 one where quantized kernels are missing)."""
    import torch

    if isinstance(packed, torch.Tensor):
        return torch.nn.functional.linear(x, packed)
    return torch.ops.quantized.linear_dynamic(x, packed)
