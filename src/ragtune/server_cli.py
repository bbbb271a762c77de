"""Serving commands: `ragtune serve` (HTTP API, OpenAI-compatible endpoint, pages, widget) and
`ragtune keys create|list|revoke` (per-bot API keys and widget tokens). Registered into the CLI."""

from __future__ import annotations

import socket
import time

from . import cli
from .errors import ConfigError, RagtuneError
from .settings import Settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _add_parsers(sub, bench, common) -> None:
    p = sub.add_parser("serve", parents=[common], help="web chat, admin page, widget, REST and OpenAI-compatible API",
                       description="Serve every bot over HTTP: /chat and /admin pages, /widget.js, the REST API "
                       "under /api (OpenAPI docs at /docs) and an OpenAI-compatible API under /v1. Clients send "
                       "`Authorization: Bearer KEY` (a bot key from `ragtune keys create`, or RAGTUNE_ADMIN_KEY). "
                       "Without RAGTUNE_ADMIN_KEY the server listens on 127.0.0.1 only and trusts local requests.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; another address "
                   "needs RAGTUNE_ADMIN_KEY)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model", help=cli.MODEL_HELP)
    p.add_argument("--runtime", choices=cli.RUNTIMES, help=cli.RUNTIME_HELP)

    k = sub.add_parser("keys", help="API keys and widget tokens of a bot",
                       description="A bot key reaches only its bot's API; a widget token (--widget) only chats with "
                       "its bot. Secrets are random and shown once; the store keeps only their sha256.")
    keys = k.add_subparsers(dest="keys_command", metavar="ACTION")
    c = keys.add_parser("create", parents=[common], help="create a key and print it once: {\"key\": \"…\"} with --json")
    c.add_argument("--widget", action="store_true", help="a widget token (chat with the bot, nothing else)")
    c.add_argument("--label", default="", help="a note to tell keys apart")
    keys.add_parser("list", parents=[common], help="list a bot's keys (hints only, never the secrets)")
    r = keys.add_parser("revoke", parents=[common], help="revoke a key by its id")
    r.add_argument("key_id", type=int, metavar="ID")


cli._EXTENSIONS.append(_add_parsers)


@cli.command("keys")
def cmd_keys(args, settings: Settings) -> int:
    from .server.auth import create_key
    from .store import open_store

    action = getattr(args, "keys_command", None)
    if action is None:
        raise ConfigError("usage: ragtune keys {create,list,revoke} --bot NAME (see ragtune keys --help)")
    with open_store(settings) as store:
        bot = store.get_bot(settings.bot)
        if action == "create":
            secret, key = create_key(store, bot, "widget" if args.widget else "key", args.label)
            cli.emit(args, {"key": secret, "id": key.id, "bot": bot.name, "kind": key.kind}, lambda: (
                f"{secret}\n({'widget token' if key.kind == 'widget' else 'key'} {key.id} for bot {bot.name!r}; "
                "shown once — only its hash is stored)"))
        elif action == "list":
            keys = store.list_keys(bot)
            data = [{"id": k.id, "kind": k.kind, "hint": k.hint, "label": k.label, "created_at": k.created_at,
                     "revoked_at": k.revoked_at} for k in keys]
            cli.emit(args, data, lambda: "\n".join(
                f"{k.id}\t{k.kind}\t{k.hint}\t{k.label}\t{'revoked' if k.revoked_at else 'active'}" for k in keys)
                or "no keys")
        else:
            store.revoke_key(bot, args.key_id)
            cli.emit(args, {"revoked": args.key_id}, f"revoked key {args.key_id}")
    return 0


def bind_host(requested: str, admin_key: str) -> tuple[str, str | None]:
    """The address to listen on, and a note when it differs from the one asked for."""
    if admin_key or requested in LOOPBACK:
        return requested, None
    return "127.0.0.1", (f"no RAGTUNE_ADMIN_KEY set: listening on 127.0.0.1 only, not {requested} "
                         "(local requests are trusted); set RAGTUNE_ADMIN_KEY to serve other machines")


@cli.command("serve")
def cmd_serve(args, settings: Settings) -> int:
    from .answer_cli import answer_settings
    from .errors import require

    require("fastapi", "server")
    uvicorn = require("uvicorn", "server")
    from .server.app import create_app

    settings = answer_settings(args, settings)
    host, note = bind_host(args.host, settings.admin_key)
    if note:
        print(note, flush=True)
    elif not settings.admin_key:
        print("no RAGTUNE_ADMIN_KEY set: listening on 127.0.0.1 only; local requests are trusted", flush=True)
    _check_port(host, args.port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{args.port}"
    from .models.embedders import open_embedder
    from .models.generators import open_generator

    open_generator(settings), open_embedder(settings)  # a missing model or bad setting: one line, before uvicorn
    page = _chat_page(settings)
    print(f"loading models ({settings.generator}, {settings.embedder}) …", flush=True)
    app = create_app(settings)
    started = time.perf_counter()

    config = uvicorn.Config(app, host=host, port=args.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets=sockets)
        if server.started:
            print(f"ready in {time.perf_counter() - started:.1f}s — open {url}{page}\n"
                  f"  admin: {url}/admin   API docs: {url}/docs   OpenAI base URL: {url}/v1   (Ctrl-C stops)",
                  flush=True)

    server.startup = startup
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise RagtuneError(f"the server did not start on {url} (see the message above)")
    return 0


def _chat_page(settings: Settings) -> str:
    """The chat page of the bot asked for, else of the first bot (and a hint when there is none yet)."""
    from urllib.parse import quote

    from .store import open_store

    with open_store(settings) as store:
        names = [b.name for b in store.list_bots()]
    if not names:
        print("no bots yet: add documents with `ragtune ingest PATH --bot NAME` or on the admin page", flush=True)
        return "/admin"
    return f"/chat?bot={quote(settings.bot if settings.bot in names else names[0])}"


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise RagtuneError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --port") from None
