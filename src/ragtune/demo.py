"""`make demo`: index the sample help centre shipped in examples/ into a `demo` bot, answer a few questions
with citations (one of them unanswerable, to show the honest "I don't know"), then serve the bot and print
the chat page's URL (RAGTUNE_DEMO_SERVE=0 stops before serving)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .cli import main as cli_main

QUESTIONS = [
    "How long does the battery take to charge from empty?",
    "Until what time can I reach your support team in Europe?",
    "Can I add a helmet or a phone mount to my order?",
]


def main() -> int:
    kb = Path(__file__).resolve().parents[2] / "examples" / "helpcenter" / "v1"
    if not kb.is_dir():
        print(f"demo: the sample knowledge base is missing ({kb}); run from a ragtune checkout", file=sys.stderr)
        return 2
    print(f"== ragtune ingest {kb} --bot demo")
    if rc := cli_main(["ingest", str(kb), "--bot", "demo"]):
        return rc
    print("\n== ragtune search 'refund window' --bot demo -k 2")
    cli_main(["search", "refund window", "--bot", "demo", "-k", "2"])
    for q in QUESTIONS:
        print(f"\n== ragtune ask {q!r} --bot demo")
        if rc := cli_main(["ask", q, "--bot", "demo"]):
            return rc
    print("\nTry: ragtune chat --bot demo   (state lives in $RAGTUNE_HOME, default ~/.ragtune)")
    if os.environ.get("RAGTUNE_DEMO_SERVE", "1") in ("0", "false", "no"):
        return 0
    port = _free_port(8000)
    print(f"\n== ragtune serve --bot demo --port {port}")
    print(f"open http://127.0.0.1:{port}/chat?bot=demo   (admin page: http://127.0.0.1:{port}/admin; Ctrl-C stops)",
          flush=True)
    return cli_main(["serve", "--bot", "demo", "--port", str(port)])


def _free_port(first: int, tries: int = 20) -> int:
    """The first port from `first` that nothing listens on (so a second demo does not collide with the first)."""
    import socket

    for port in range(first, first + tries):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return first


if __name__ == "__main__":
    sys.exit(main())
