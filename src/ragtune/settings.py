"""The one typed Settings object: defaults < ragtune.toml < RAGTUNE_* environment < command-line flags.

Each field is declared once, with its help text and (where it has them) its valid choices; `ragtune config`
prints the effective values and where each came from, with secrets redacted. Nothing here reads the
environment at import time: `Settings.load()` is called once per command and the result passed down.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None, secret: bool = False):
    return field(default=default, metadata={"help": help, "choices": choices, "secret": secret})


@dataclass(frozen=True)
class Settings:
    home: str = _f("~/.ragtune", "state folder: the store, adapters and runs (env RAGTUNE_HOME)")
    bot: str = _f("default", "the bot (named knowledge base) a command works on")
    store_url: str = _f("", "a PostgreSQL database (postgresql://user@host/db, pgvector installed) that holds the "
                        "bots instead of the SQLite file in `home`, for several servers to share; needs the postgres "
                        "extra (the password is best left to PGPASSWORD or ~/.pgpass)", secret=True)
    store_vector_index: str = _f("exact", "Postgres dense search: exact (every vector of the bot compared) or hnsw "
                                 "(pgvector's approximate index: for millions of chunks; its recall depends on the "
                                 "data, see README)", ("exact", "hnsw"))
    store_ef_search: int = _f(100, "candidates an hnsw search keeps (pgvector's hnsw.ef_search): higher finds more "
                              "of the true nearest chunks, slower")
    sync_worker: bool = _f(True, "`ragtune serve` runs sync jobs itself; turn off where dedicated `ragtune worker` "
                           "processes take the jobs of a shared store")
    sources_shared: bool = _f(False, "file and folder sources are at the same path on every worker's machine (a "
                              "shared volume): their sync jobs may run on any worker, not only on the machine that "
                              "queued them")
    job_poll_seconds: float = _f(1.0, "how often an idle sync worker looks for jobs queued by other processes")
    job_stale_seconds: float = _f(600.0, "a running sync job whose worker sent no heartbeat (one per document) for "
                                  "this long is taken over by another worker")
    # embedding
    embedder: str = _f(
        "minilm",
        "embedding backend: minilm (all-MiniLM-L6-v2 int8 ONNX, no torch), minilm-torch (same model, "
        "sentence-transformers fp32), openai (any OpenAI-compatible /v1/embeddings), hash (fast fake for tests)",
        ("minilm", "minilm-torch", "openai", "hash"),
    )
    embedder_path: str = _f("", "a sentence-transformers model folder the minilm-torch embedder loads in place of the "
                            "packaged all-MiniLM-L6-v2 (one `ragtune tune-embedder` wrote, or any other, at its own "
                            "vector width); changing it "
                            "re-embeds each bot on its next sync")
    embedder_url: str = _f("", "base URL of an OpenAI-compatible embeddings endpoint, e.g. http://127.0.0.1:11434/v1")
    embedder_model: str = _f("", "model name sent to the embeddings endpoint")
    embedder_api_key_env: str = _f("OPENAI_API_KEY", "name of the environment variable holding the endpoint's key")
    embed_batch_size: int = _f(64, "texts per embedding batch")
    # generation
    generator: str = _f(
        "smollm2",
        "generator: smollm2 (SmolLM2-135M-Instruct GGUF, llama.cpp), qwen-0.5b (Qwen2.5-Coder-0.5B-Instruct, "
        "`make install-qwen`), gguf (any local GGUF file: generator_path), openai (any OpenAI-compatible chat "
        "endpoint), echo (fake for tests)",
        ("smollm2", "qwen-0.5b", "gguf", "openai", "echo"),
    )
    generator_path: str = _f("", "path of a local GGUF model file (generator = gguf)")
    generator_url: str = _f("", "base URL of an OpenAI-compatible chat endpoint, e.g. http://127.0.0.1:8000/v1")
    generator_model: str = _f("", "model name sent to the chat endpoint")
    generator_api_key_env: str = _f("OPENAI_API_KEY", "name of the environment variable holding the endpoint's key")
    threads: int = _f(0, "CPU threads for local models (0 = all cores)")
    generator_runtime: str = _f("llama.cpp", "engine for local GGUF models: llama.cpp, or torch (Llama-family "
                                "models; on CPUs with AMX reads long prompts ~1.4x faster, writes tokens slower)",
                                choices=("llama.cpp", "torch"))
    flash_attention: bool = _f(True, "llama.cpp reads prompts with flash attention (measured 1.3x faster on 1,000 "
                               "tokens on a 2-core CPU; same answers to within rounding)")
    max_tokens: int = _f(160, "most tokens a generated answer may have")
    context_tokens: int = _f(2048, "the generator's context window used for prompt + answer")
    request_timeout: float = _f(60.0, "seconds to wait for a remote endpoint")
    # ingestion
    chunk_tokens: int = _f(200, "most embedder tokens in one chunk (the embedder reads at most 256)")
    chunk_overlap: int = _f(32, "tokens repeated between neighbouring chunks of one section")
    embed_sentences: bool = _f(True, "embed each chunk's sentences and runs of up to evidence_window sentences at "
                                     "indexing time too, so answering embeds only the question (indexing takes "
                                     "several times as long; false = the passages it scores, at answer time)")
    max_file_mb: float = _f(50.0, "files larger than this are refused (reported in `failed`)")
    include: str = _f("", "comma-separated globs a folder source's files must match (empty = all supported)")
    exclude: str = _f("", "comma-separated globs of files to skip in folder sources")
    parse_timeout: float = _f(30.0, "seconds one file or page may take to parse (in a worker process) before it "
                              "is skipped and reported in `failed`")
    parse_memory_mb: int = _f(768, "address space (MB) of the parsing worker; a file needing more is skipped")
    redact_pii: bool = _f(False, "replace e-mails, phone numbers, card numbers, IBANs, national ids and IP "
                          "addresses with typed placeholders like <EMAIL_ADDRESS> before indexing (a bot setting "
                          "once given to ingest; needs the pii extra)")
    # website sources
    crawl_max_pages: int = _f(200, "most pages fetched per website source and sync")
    crawl_max_depth: int = _f(5, "most link hops from a website source's start URL")
    crawl_max_mb: float = _f(50.0, "most megabytes downloaded per website source and sync")
    crawl_timeout: float = _f(600.0, "most seconds one website source's crawl may take")
    allow_private: bool = _f(False, "let website sources reach loopback, private, link-local and other non-public "
                             "addresses (intranet sites, tests); off, such URLs are refused before any request")
    # retrieval
    top_k: int = _f(5, "chunks returned by search / given to the generator")
    candidates: int = _f(100, "candidates each retriever contributes before fusion")
    rrf_k: int = _f(60, "reciprocal-rank-fusion constant")
    retrieval: str = _f("hybrid", "retrieval mode", ("hybrid", "bm25", "dense"))
    # answering
    strategy: str = _f("rag", "answering strategy: base (generator alone), rag (retrieval + citations), finetune "
                       "(the bot's LoRA adapter, no retrieval) or hybrid (adapter + retrieval)",
                       ("base", "rag", "finetune", "hybrid"))
    adapter: str = _f("", "adapter id the finetune and hybrid strategies use (empty = the bot's newest; hybrid "
                      "prefers the newest RAFT-trained one)")
    adapter_runtime: str = _f("auto", "how an adapter is served: llama.cpp (its GGUF LoRA), transformers (peft, "
                              "slower) or auto (llama.cpp when the adapter has a GGUF conversion)",
                              ("auto", "llama.cpp", "transformers"))
    answer_mode: str = _f(
        "quote",
        "how a rag answer is composed: quote (the best evidence passages, streamed at once, then at most one "
        "sentence of the model's, which reads only the quoted passages and the sentence either side of each, kept "
        "when relevant sources support it and it adds to the quote), extract (the quote alone, no model), auto "
        "(supported model sentences, else the quote), generate (supported model sentences, else abstain)",
        ("auto", "generate", "extract", "quote"),
    )
    min_support: float = _f(0.6, "abstain when the best evidence passage scores below this (similarity to the "
                            "question blended with the share of its rare terms, 0..1); a bot's own bar (`ragtune "
                            "calibrate`) takes its place")
    min_support_agreed: float = _f(0.5, "the lower bar used instead of min_support when the best passage comes from "
                                   "the chunk that fused search ranks first and dense or BM25 search alone ranks first "
                                   "too (every signal points at the same place); a bot with its own bar gets it "
                                   "lowered by the same amount")
    min_support_value: float = _f(0.4, "the lower bar used instead of min_support when the question asks for a kind "
                                  "of value (a price, duration, time, version, command, setting, place, phone, "
                                  "e-mail) and the best passage states one; with min_support_agreed, both reliefs "
                                  "apply")
    conflict_margin: float = _f(0.05, "passages scoring within this of the best are checked for disagreeing facts")
    answer_type_bonus: float = _f(0.1, "evidence bonus for a passage holding the kind of value asked for "
                                  "(a duration for 'how long', a price for 'how much', ...)")
    evidence_window: int = _f(3, "most consecutive sentences quoted as one evidence passage")
    evidence_seeds: int = _f(4, "windows of more than one sentence are scored only around this many best "
                             "sentences")
    echo_penalty: float = _f(0.1, "evidence score taken off a passage that adds fewer than echo_new_terms content "
                             "words to the question's own (\"See Activating the virtual environment.\" echoes the "
                             "question and tells nothing)")
    echo_new_terms: int = _f(2, "content words a passage must add to the question's to escape echo_penalty")
    evidence_semantic_weight: float = _f(0.7, "weight of embedding similarity (vs rare-term overlap) in evidence scores")
    min_support_when_model_declines: float = _f(
        0.75, "when the model says it doesn't know, quote evidence only if it covers this much of the question")
    relevance_margin: float = _f(0.1, "evidence that may support a generated sentence scores within this of the best")
    min_groundedness: float = _f(0.6, "a generated sentence is kept only if an evidence sentence holds this share of its words")
    evidence_hits: int = _f(4, "top hits whose sentences are candidate evidence")
    evidence_rescue: int = _f(2, "chunks that dense or BM25 search alone ranks this high are candidate evidence "
                              "even when fusion ranks them lower (0 = fused hits only)")
    answer_sentences: int = _f(2, "most supported sentences a generated answer keeps before the model is stopped "
                               "(answer_mode = auto/generate; 0 = up to max_tokens)")
    quote_context: str = _f("quoted", "what the model reads in quote mode: quoted (the quoted passages and the "
                            "sentence either side: short prompts) or retrieved (every retrieved chunk, as in auto)",
                            choices=("quoted", "retrieved"))
    quote_max_tokens: int = _f(48, "most tokens the model may add after a quote (answer_mode = quote): one sentence")
    quote_passages: int = _f(2, "most evidence passages quoted when they score within quote_margin of the best")
    quote_margin: float = _f(0.15, "a further passage is quoted only when it scores within this of the best")
    quote_other_documents: bool = _f(True, "a further quoted passage may come from another document than the "
                                     "best one (passages that disagree with it make the bot hand off instead)")
    suggest_pages: int = _f(2, "when the bot hands off, at most this many pages it searched are offered as places to "
                            "look (`suggestions` in answers; 0 = none)")
    suggest_min_support: float = _f(0.4, "a page is suggested on hand-off only when its best passage scores at least "
                                          "this (see min_support)")
    progress: bool = _f(True, "show progress bars on long work (RAGTUNE_NO_PROGRESS=1 turns them off)")
    # serving
    admin_key: str = _f("", "key that reaches every bot and the admin routes of `ragtune serve` (env "
                        "RAGTUNE_ADMIN_KEY); unset, the server binds to 127.0.0.1 only and trusts local requests",
                        secret=True)
    rate_limit: int = _f(120, "requests per minute one key (or one widget visitor) may make to `ragtune serve`; "
                         "0 = unlimited")
    max_request_kb: int = _f(256, "largest request body `ragtune serve` accepts, in KB (uploads: max_file_mb)")
    cors_origins: str = _f("", "comma-separated web origins whose pages may call `ragtune serve`'s API from the "
                           "browser (CORS), e.g. https://app.example.com; * = any; empty = none (the widget "
                           "needs none)")

    def __post_init__(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"unknown {f.name} {value!r}; valid values: {', '.join(choices)}")
        if self.chunk_tokens < 16 or self.chunk_tokens > 512:
            raise ConfigError(f"chunk_tokens must be between 16 and 512, not {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise ConfigError("chunk_overlap must be >= 0 and less than half of chunk_tokens")
        if self.top_k < 1:
            raise ConfigError("top_k must be at least 1")

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: str | Path | None = None,
    ) -> "Settings":
        """Build the effective settings; `overrides` are command-line flags (None values are ignored)."""
        settings, _ = cls.load_with_origins(overrides, env, config_file)
        return settings

    @classmethod
    def load_with_origins(cls, overrides=None, env=None, config_file=None) -> tuple["Settings", dict[str, str]]:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        origins: dict[str, str] = {f.name: "default" for f in fields(cls)}
        path = Path(config_file or env.get("RAGTUNE_CONFIG") or "ragtune.toml")
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
            data = data.get("ragtune", data)
            for key, value in data.items():
                _check_name(key, f"in {path}")
                values[key] = value
                origins[key] = str(path)
        elif config_file:
            raise ConfigError(f"config file {config_file} does not exist")
        for f in fields(cls):
            name = "RAGTUNE_" + f.name.upper()
            if name in env:
                values[f.name] = env[name]
                origins[f.name] = f"env {name}"
        if env.get("RAGTUNE_NO_PROGRESS", "") not in ("", "0"):
            values["progress"] = False
            origins["progress"] = "env RAGTUNE_NO_PROGRESS"
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            _check_name(key, "as a flag")
            values[key] = value
            origins[key] = "flag"
        typed = {k: _coerce(k, v) for k, v in values.items()}
        return cls(**typed), origins

    # ------------------------------------------------------------------ helpers
    @property
    def home_path(self) -> Path:
        return Path(os.path.expanduser(self.home))

    @property
    def n_threads(self) -> int:
        return self.threads or (os.cpu_count() or 2)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def describe(self, origins: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            out.append({"name": f.name, "value": value, "origin": (origins or {}).get(f.name, "default"),
                        "help": f.metadata["help"], "choices": f.metadata.get("choices")})
        return out


_FIELDS = {f.name: f for f in fields(Settings)}


def _check_name(key: str, where: str) -> None:
    if key not in _FIELDS:
        raise ConfigError(f"unknown setting {key!r} {where}; valid settings: {', '.join(sorted(_FIELDS))}")


def _coerce(key: str, value: Any) -> Any:
    kind = type(_FIELDS[key].default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {key} must be a {kind.__name__}, not {value!r}") from None
