"""Helpers for the server tests: knowledge bases indexed with the hash embedder, fake generators, an in-process
client that looks local, and a real uvicorn server on a free loopback port (for the browser tests)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Iterable

from conftest import EXAMPLES
from ragtune.ingest.sync import register_sources, sync_bot
from ragtune.models.embedders import HashEmbedder
from ragtune.models.generators import EchoGenerator, Generator
from ragtune.settings import Settings
from ragtune.store import open_store

KB = EXAMPLES / "helpcenter" / "v1"
BATTERY_Q = "How long does a full battery charge take from empty?"


def make_settings(home: Path, **overrides) -> Settings:
    return Settings.load(overrides={"home": str(home), "embedder": "hash", "generator": "echo", "progress": False,
                                    **overrides}, env={})


def index(settings: Settings, bots: dict[str, Iterable[str | Path]], bot_settings: dict[str, dict] | None = None):
    """Create the bots and index their sources (hash embedder: fast and deterministic)."""
    store = open_store(settings)  # the SQLite file in home, or Postgres at store_url
    try:
        for name, sources in bots.items():
            bot = store.ensure_bot(name)
            if bot_settings and name in bot_settings:
                bot = store.update_bot_settings(bot, bot_settings[name])
            register_sources(store, bot, [str(s) for s in sources], settings)
            sync_bot(store, settings, bot, embedder=HashEmbedder())
    finally:
        store.close()


def local_client(app, **kw):
    """A TestClient that looks like a browser on this machine (loopback client and Host)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50123), **kw)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sse_events(text: str) -> list[tuple[str, object]]:
    """Parse a server-sent-event body into (event, data) pairs ('message' when unnamed; '[DONE]' kept raw)."""
    out = []
    for block in text.split("\n\n"):
        event, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            raw = "\n".join(data)
            out.append((event, raw if raw == "[DONE]" else json.loads(raw)))
    return out


class PacedGenerator(Generator):
    """Fake that answers with the first `sentences` sentences of source [1], one word every `delay` seconds (so a
    stream is visibly a stream); a question containing `probe` gets `probe_text` instead, verbatim."""

    name = "paced"

    def __init__(self, delay: float = 0.02, sentences: int = 2, probe: str = "", probe_text: str = "") -> None:
        self.delay, self.sentences, self.probe, self.probe_text = delay, sentences, probe, probe_text
        self.calls = 0

    def _text(self, messages) -> str:
        last = str(messages[-1].get("content") or "")
        if self.probe and self.probe in last:
            return self.probe_text
        echo = EchoGenerator()
        for message in reversed(list(messages)):
            content = str(message.get("content") or "")
            m = re.search(r"^\[1\][^\n]*\n(.*?)(?=^\[\d+\]|\Z)", content, re.MULTILINE | re.DOTALL)
            if m:
                sents = re.findall(r".+?[.!?](?=\s|$)", " ".join(m.group(1).split()))
                if sents:
                    return " ".join(sents[: self.sentences])
        return echo.answer(messages)

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
        self.calls += 1
        for i, word in enumerate(re.findall(r"\S+\s*", self._text(messages))[:max_tokens]):
            if i:
                time.sleep(self.delay)
            yield word


class LiveServer:
    """uvicorn serving `app` in a thread on a free 127.0.0.1 port; `with LiveServer(app) as url: ...`."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
