"""Load benchmark of `ragtune serve`: concurrent streaming clients on loopback against /v1/chat/completions.
Prints JSON.

Stub mode (default): the generator is a stub with a fixed time-to-first-token and per-token delay, so what is
measured is the server, retrieval (BM25 + dense + evidence checks) and the store. The stub's own delay is the
baseline, measured in the same run: the rag strategy shows a sentence once it is complete and grounded, so
the earliest a client can see text is TTFT + (words of the first sentence - 1) x per-token delay.

    .venv/bin/python benchmarks/load.py [--clients 50] [--duration 60] [--ttft 0.5] [--per-token 0.03]

Real-model mode: the default generator (SmolLM2 via llama.cpp, one generation at a time per model) with the real
embedder, at increasing numbers of concurrent chats, reporting how many one machine holds at p95 <= 5 s.

    .venv/bin/python benchmarks/load.py --model smollm2 --embedder minilm --levels 1,2,3,4,6 --duration 60

Every client has its own bot key, and the server's default per-key rate limit stays on. Traffic goes only to
127.0.0.1; each level stops by itself after --duration seconds (plus the requests then in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KB = ROOT / "examples" / "helpcenter" / "v1"
STUB_TEXT = ("A full charge from empty takes about 4.5 hours with the supplied 4A charger. For everyday riding, "
             "keeping the battery between 20% and 80% is best for its lifespan. Do not charge the battery below "
             "0°C or above 40°C.")
STUB_QUESTIONS = [
    "How long does a full battery charge take from empty?",
    "How many hours does a full charge from empty take with the supplied charger?",
    "How long does it take to fully charge an empty battery?",
    "With the supplied 4A charger, how long is a full charge from empty?",
]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    s = sorted(values)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))] * 1000, 1)

    return {"p50": q(50), "p95": q(95), "p99": q(99)}


# ------------------------------------------------------------------------------------------------ server side
def serve(args) -> None:
    """Internal: run the server (in its own process, so the clients do not share its interpreter)."""
    import uvicorn

    from ragtune.models.generators import StubGenerator
    from ragtune.server.app import create_app
    from ragtune.settings import Settings

    overrides = {"home": args.home, "embedder": args.embedder, "progress": False, "max_tokens": args.max_tokens,
                 "answer_mode": args.answer_mode, "context_tokens": args.context_tokens}
    if args.model != "stub":
        overrides["generator"] = args.model
    settings = Settings.load(overrides=overrides, env={k: v for k, v in os.environ.items()
                                                        if k in ("RAGTUNE_THREADS",)})
    generator = StubGenerator(args.ttft, args.per_token, STUB_TEXT) if args.model == "stub" else None
    app = ServerClock(create_app(settings, generator=generator), Path(args.home) / "server-times.jsonl")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


class ServerClock:
    """ASGI wrapper: for each completion, the server's own time from the request's arrival to the first chunk
    carrying text, and to the last byte (so the client's share of the latency can be told apart)."""

    def __init__(self, app, path: Path) -> None:
        self.app, self.out = app, open(path, "a", buffering=1)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/completions"):
            return await self.app(scope, receive, send)
        started, first = time.perf_counter(), None

        async def timed_send(message):
            nonlocal first
            if first is None and message["type"] == "http.response.body" and b'"content": "' in message.get(
                    "body", b"") and b'"content": ""' not in message.get("body", b""):
                first = time.perf_counter() - started
            await send(message)

        await self.app(scope, receive, timed_send)
        self.out.write(json.dumps({"ttft": first, "total": time.perf_counter() - started}) + "\n")


def prepare(home: Path, embedder: str, clients: int) -> list[str]:
    """Index the sample help centre as bot `bench` and make one key per client."""
    from ragtune.ingest.sync import register_sources, sync_bot
    from ragtune.server.auth import create_key
    from ragtune.settings import Settings
    from ragtune.store import open_store

    settings = Settings.load(overrides={"home": str(home), "embedder": embedder, "progress": False}, env={})
    with open_store(settings) as store:
        bot = store.ensure_bot("bench")
        register_sources(store, bot, [str(KB)], settings)
        sync_bot(store, settings, bot)
        return [create_key(store, bot, "key", f"client {i}")[0] for i in range(clients)]


def start_server(args, home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", "--home", str(home), "--port", str(port), "--model", args.model,
           "--embedder", args.embedder, "--ttft", str(args.ttft), "--per-token", str(args.per_token),
           "--max-tokens", str(args.max_tokens), "--answer-mode", args.answer_mode,
           "--context-tokens", str(args.context_tokens)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


# ------------------------------------------------------------------------------------------------ client side
async def one_request(client, url: str, key: str, question: str, max_tokens: int) -> dict:
    payload = {"model": "bench", "stream": True, "max_tokens": max_tokens,
               "messages": [{"role": "user", "content": question}]}
    started = time.perf_counter()
    first = None
    done = abstained = False
    server = {}
    error = None
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=payload,
                                 headers={"Authorization": f"Bearer {key}"}) as resp:
            if resp.status_code != 200:
                error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
            else:
                async for line in resp.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        break
                    obj = json.loads(data)
                    if "error" in obj:
                        error = obj["error"].get("message", "error")
                        continue
                    if obj["choices"][0]["delta"].get("content") and first is None:
                        first = time.perf_counter() - started
                    if "ragtune" in obj:
                        abstained = obj["ragtune"]["abstained"]
                        server = obj["ragtune"]["timings_ms"]
                if not done and error is None:
                    error = "stream ended without [DONE]"
    except Exception as exc:  # counted, never hidden
        error = f"{type(exc).__name__}: {exc}"
    return {"ttft": first, "total": time.perf_counter() - started, "error": error, "abstained": abstained,
            "retrieve": server.get("retrieve", 0) / 1000, "server_total": server.get("total", 0) / 1000}


async def run_level(url: str, keys: list[str], clients: int, duration: float, questions: list[str],
                    max_tokens: int, ramp: float = 2.0) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    results: list[dict] = []
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as client:
        deadline = time.perf_counter() + duration
        ramp = min(ramp, duration / 10)

        async def worker(i: int) -> None:
            # clients arrive spread over a ramp instead of all in the same millisecond: synchronised clients
            # would stay in lock-step (every answer takes as long) and measure a burst, not a load
            await asyncio.sleep(ramp * i / clients)
            n = 0
            while time.perf_counter() < deadline:
                q = questions[(i + n) % len(questions)]
                results.append(await one_request(client, url, keys[i % len(keys)], q, max_tokens))
                n += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    ok = [r for r in results if r["error"] is None]
    errors = [r["error"] for r in results if r["error"] is not None]
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": len(results), "errors": len(errors),
        "error_samples": sorted(set(errors))[:5], "abstained": sum(r["abstained"] for r in ok),
        "requests_per_s": round(len(ok) / elapsed, 2),
        "ttft_ms": percentiles([r["ttft"] for r in ok if r["ttft"] is not None]),
        "total_ms": percentiles([r["total"] for r in ok]),
        # inside the server: retrieval + evidence scoring before generation starts, and the whole answer
        "server_retrieve_ms": percentiles([r["retrieve"] for r in ok]),
        "server_answer_ms": percentiles([r["server_total"] for r in ok]),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to report the server's cost per request."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def real_questions() -> list[str]:
    path = ROOT / "examples" / "helpcenter" / "questions-v1.jsonl"
    return [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50, help="concurrent streaming clients (stub mode)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds each load level runs")
    ap.add_argument("--ttft", type=float, default=0.5, help="stub: seconds before the first token")
    ap.add_argument("--per-token", type=float, default=0.03, help="stub: seconds before each later token")
    ap.add_argument("--model", default="stub", help="stub, or a generator name (smollm2, qwen-0.5b, …)")
    ap.add_argument("--embedder", default=None, help="hash (stub default) or minilm (real-model default)")
    ap.add_argument("--levels", default="1,2,3,4,6,8", help="real model: concurrent chats to try, in order")
    ap.add_argument("--target-s", type=float, default=5.0, help="real model: the p95 latency a level must meet")
    ap.add_argument("--max-tokens", type=int, default=160, help="answer length limit sent with each request")
    ap.add_argument("--context-tokens", type=int, default=2048, help="the generator's window: prompt + answer "
                    "(the prompt's sources dominate a small model's time on CPU)")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds over which the clients' first requests are "
                    "spread (0 = all at once: a burst, and clients then stay in lock-step)")
    ap.add_argument("--answer-mode", default=None, help="rag answer mode; stub default generate (the first text "
                    "is the stub's first sentence, so the stub's own delay is the baseline), else the setting's default")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.embedder = args.embedder or ("hash" if args.model == "stub" else "minilm")
    if args.answer_mode is None:
        from ragtune.settings import Settings

        args.answer_mode = "generate" if args.model == "stub" else Settings().answer_mode
    if args.serve:
        return serve(args)

    stub = args.model == "stub"
    levels = [args.clients] if stub else [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        keys = prepare(home, args.embedder, max(levels))
        proc, url = start_server(args, home)
        try:
            questions = STUB_QUESTIONS if stub else real_questions()
            asyncio.run(run_level(url, keys, 4 if stub else 1, 3.0, questions, args.max_tokens))  # warm-up
            results = []
            for clients in levels:
                clock = home / "server-times.jsonl"
                seen = len(clock.read_text().splitlines()) if clock.exists() else 0
                cpu0 = cpu_seconds(proc.pid)
                level = asyncio.run(run_level(url, keys, clients, args.duration, questions, args.max_tokens, args.ramp))
                cpu = cpu_seconds(proc.pid) - cpu0
                level["server_cpu_ms_per_request"] = round(cpu * 1000 / max(1, level["requests"]), 1)
                level["machine_load_avg_1m"] = os.getloadavg()[0]
                times = [json.loads(x) for x in clock.read_text().splitlines()[seen:]] if clock.exists() else []
                level["server_side_ttft_ms"] = percentiles([t["ttft"] for t in times if t["ttft"] is not None])
                level["server_side_total_ms"] = percentiles([t["total"] for t in times])
                results.append(level)
                print(json.dumps(level), file=sys.stderr, flush=True)
                if not stub and (level["total_ms"]["p95"] or 0) > 3 * args.target_s * 1000:
                    break  # far past the target: higher levels only take longer
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = {"benchmark": "serve-load", "model": args.model, "embedder": args.embedder, "answer_mode": args.answer_mode,
           "duration_s": args.duration, "ramp_s": args.ramp, "max_tokens": args.max_tokens,
           "context_tokens": args.context_tokens, "threads": os.environ.get("RAGTUNE_THREADS", "0 (all cores)"),
           "cpus": os.cpu_count(), "endpoint": "/v1/chat/completions (stream)", "levels": results}
    if stub:
        words = re.findall(r"\S+", re.split(r"(?<=[.!?])\s", STUB_TEXT)[0])
        baseline = args.ttft + (len(words) - 1) * args.per_token
        level = results[0]
        overhead = {k: (round(v - baseline * 1000, 1) if v is not None else None) for k, v in level["ttft_ms"].items()}
        out.update({
            "stub": {"ttft_s": args.ttft, "per_token_s": args.per_token, "first_sentence_words": len(words),
                     "baseline_first_text_ms": round(baseline * 1000, 1)},
            "ttft_overhead_ms": overhead,
            "pass": level["errors"] == 0 and overhead["p95"] is not None and overhead["p95"] <= 150,
        })
    else:
        def holds(metric: str) -> int:
            ok = [lv["clients"] for lv in results if lv["errors"] == 0 and lv[metric]["p95"] is not None
                  and lv[metric]["p95"] <= args.target_s * 1000]
            return max(ok) if ok else 0

        out["holds_at_p95"] = {"target_s": args.target_s, "first_token": holds("ttft_ms"),
                               "completion": holds("total_ms")}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
