"""A tiny OpenAI-compatible stub server (stdlib only) for testing the remote code paths offline:
/v1/chat/completions (streamed or not), /v1/embeddings (deterministic vectors) and /v1/models."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

from .generators import EchoGenerator, _pieces


def stub_embedding(text: str, dim: int = 384) -> list[float]:
    """Deterministic unit vector: hashed bag of lower-cased words, so texts sharing words are similar."""
    vec = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        h = hashlib.sha256(word.encode("utf-8")).digest()
        vec[int.from_bytes(h[:4], "little") % dim] += 1.0 if h[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0:
        vec[0], norm = 1.0, 1.0
    return [v / norm for v in vec]


class StubOpenAIServer:
    """Serves on 127.0.0.1 (port 0 = a free one) in a daemon thread; use as a context manager.

    `url` is the base URL to configure (`http://127.0.0.1:PORT/v1`). Chat replies are `reply` when given,
    else what `EchoGenerator` answers for the messages, one word per SSE chunk. Options: `api_key` (requests
    without `Authorization: Bearer <api_key>` get 401), `fail_status` (every POST answers this HTTP status),
    `delay_s` (sleep before answering), `dim` (embedding size). `requests` records each request as
    {"path", "headers", "body"}."""

    def __init__(self, reply: str | None = None, *, api_key: str | None = None, fail_status: int | None = None,
                 delay_s: float = 0.0, dim: int = 384, host: str = "127.0.0.1", port: int = 0) -> None:
        self.reply, self.api_key, self.fail_status = reply, api_key, fail_status
        self.delay_s, self.dim = delay_s, dim
        self.requests: list[dict[str, Any]] = []
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    def start(self) -> "StubOpenAIServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                            name="stub-openai", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "StubOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def chat_text(self, messages: Sequence[dict]) -> str:
        return self.reply if self.reply is not None else EchoGenerator().answer(messages)


def _handler(server: StubOpenAIServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet
            pass

        def _send_json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send_json(status, {"error": {"message": message, "type": "stub_error", "code": status}})

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send_json(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if server.delay_s:
                time.sleep(server.delay_s)
            if server.fail_status:
                return self._error(server.fail_status, "stub failure")
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                return self._error(401, "invalid api key")
            if not isinstance(body, dict):
                return self._error(400, "body is not a JSON object")
            path = self.path.rstrip("/")
            if path == "/v1/chat/completions":
                return self._chat(body)
            if path == "/v1/embeddings":
                return self._embeddings(body)
            self._error(404, f"no route {self.path}")

        def _chat(self, body: dict) -> None:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return self._error(400, "messages must be a non-empty list")
            model = body.get("model") or "stub"
            stop = body.get("stop")
            stop = [stop] if isinstance(stop, str) else stop
            pieces = _pieces(server.chat_text(messages), int(body.get("max_tokens") or 10**6), stop)
            base = {"id": "chatcmpl-stub", "created": int(time.time()), "model": model}
            if not body.get("stream"):
                text = "".join(pieces)
                return self._send_json(200, {**base, "object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": len(pieces), "total_tokens": len(pieces)}})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
            for i, delta in enumerate(deltas + [{}]):
                finish = "stop" if i == len(deltas) else None
                event = {**base, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self._chunk(f"data: {json.dumps(event)}\n\n")
            self._chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, text: str) -> None:
            data = text.encode("utf-8")
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _embeddings(self, body: dict) -> None:
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
                return self._error(400, "input must be a string or a list of strings")
            data = [{"object": "embedding", "index": i, "embedding": stub_embedding(t, server.dim)}
                    for i, t in enumerate(inputs)]
            tokens = sum(len(t.split()) for t in inputs)
            self._send_json(200, {"object": "list", "data": data, "model": body.get("model") or "stub",
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return Handler


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible stub server for offline tests")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--reply", default=None, help="fixed chat reply (default: EchoGenerator's answer)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args(argv)
    server = StubOpenAIServer(args.reply, api_key=args.api_key, dim=args.dim, port=args.port)
    print(f"stub OpenAI-compatible server at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
