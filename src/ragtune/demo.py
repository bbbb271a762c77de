"""`make demo`: index the sample help centre shipped in examples/ into a `demo` bot and answer a few questions
with citations (one of them unanswerable, to show the honest "I don't know")."""

from __future__ import annotations

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
