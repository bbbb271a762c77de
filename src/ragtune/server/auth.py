"""Who is calling, checked before anything else: bot keys and widget tokens (random secrets, stored as sha256),
the admin key, local trust when no admin key is set; plus the request-size limit and the per-key rate limit.

`AuthMiddleware` is plain ASGI so that it runs before routing, body parsing or any model is touched."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from starlette.exceptions import HTTPException

from ..errors import NotFoundError
from ..store import ApiKey, Bot, Store

KEY_PREFIX = {"key": "rt_", "widget": "rtw_"}
KEY_KINDS = tuple(KEY_PREFIX)


def new_secret(kind: str) -> str:
    """A fresh random secret (256 bits): nothing about it is derived from the bot or another key."""
    return KEY_PREFIX[kind] + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    # The secrets are 256-bit random strings, so an unsalted hash cannot be brute-forced.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(store: Store, bot: Bot, kind: str = "key", label: str = "") -> tuple[str, ApiKey]:
    """Make a key (or widget token) for `bot`: returns the secret, shown once, and its stored record."""
    secret = new_secret(kind)
    return secret, store.add_key(bot, kind, digest(secret), secret[: len(KEY_PREFIX[kind]) + 4] + "…", label)


@dataclass(frozen=True)
class Principal:
    """The caller: `admin` (the admin key), `local` (no admin key set, loopback request), `key` (one bot's
    API), `widget` (chat with one bot only)."""

    kind: str
    bot: str | None = None  # the only bot a key or widget token reaches; None = every bot
    key_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind in ("admin", "local")

    def check_bot(self, name: str) -> None:
        """A foreign bot reads exactly like a missing one."""
        if self.bot is not None and name != self.bot:
            raise NotFoundError(unknown_bot(name))


def unknown_bot(name: str) -> str:
    return f"unknown bot {name!r}"


# ------------------------------------------------------------------------------------------ rate limiting
class RateLimiter:
    """Token bucket per caller: `per_minute` requests, refilled continuously; 0 disables it."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.clock = per_minute, clock
        self._buckets: dict[Any, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: Any) -> float:
        """0 when allowed, else the seconds to wait before the next request."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(who, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[who] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[who] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:  # forget callers whose bucket is full again
                full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * rate >= self.per_minute]
                for k in full:
                    del self._buckets[k]
        return 0.0


# ------------------------------------------------------------------------------------------ middleware
# Pages and docs anyone may load (they hold no data; the API calls they make are authenticated).
_PUBLIC = re.compile(r"^/(healthz|chat|admin|widget\.js|widget/frame|static/[\w.-]+|docs|docs/oauth2-redirect|"
                     r"docs-assets/[\w.-]+|openapi\.json|favicon\.ico)?$")
# Bot-scoped API paths carry the bot name here.
_BOT_PATH = re.compile(r"^/api/bots/([^/]+)(/.*)?$")
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class BodyTooLarge(HTTPException):
    """Raised while the app reads a body that outgrows the limit (a body sent without Content-Length);
    an HTTPException so that FastAPI's body parsing passes it on as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the {limit // 1024} KB limit")


class AuthMiddleware:
    """Authenticate, rate-limit and size-limit every API request before the app sees it.

    - A bearer secret must be the admin key or a live bot key / widget token; a wrong, empty or revoked
      one is 401, whatever the server mode.
    - No secret: 401 when an admin key is set; otherwise (the server then listens on loopback only) the
      request is trusted as the local operator if its Host is a loopback name and, for writes, its Origin
      (when sent) is this server — so a web page cannot drive the API through the user's browser.
    - Widget tokens reach only `POST /api/bots/{their bot}/chat`; a key reaches only its bot's routes.
    """

    def __init__(self, app, *, store_getter: Callable[[], Store], admin_key: str, rate_limit: int,
                 max_body: int, max_upload: int) -> None:
        self.app = app
        self.store_getter = store_getter
        self.admin_key = admin_key
        self.limiter = RateLimiter(rate_limit)
        self.max_body, self.max_upload = max_body, max_upload

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if scope["method"] in ("GET", "HEAD") and _PUBLIC.match(path):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        openai = path.startswith("/v1/")
        try:
            principal = self._authenticate(scope, headers)
        except _Deny as deny:
            return await _error(send, deny.status, deny.message, openai, deny.headers)
        wait = 0.0 if principal.is_admin else self.limiter.take(
            (principal.key_id, _client(scope)) if principal.kind == "widget" else principal.key_id)
        if wait:
            return await _error(send, 429, f"rate limit: at most {self.limiter.per_minute} requests a minute; "
                                f"retry in {math.ceil(wait)}s", openai, {"retry-after": str(math.ceil(wait))})
        limit = self.max_upload if path.endswith("/uploads") else self.max_body
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _error(send, 413, f"request body over the {limit // 1024} KB limit", openai)
        scope.setdefault("state", {})["principal"] = principal

        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _error(send, 413, f"request body over the {limit // 1024} KB limit", openai)

    def _authenticate(self, scope, headers: dict[str, str]) -> Principal:
        auth = headers.get("authorization")
        path, method = scope["path"], scope["method"]
        if auth is not None:
            scheme, _, secret = auth.partition(" ")
            secret = secret.strip()
            if scheme.lower() != "bearer" or not secret:
                raise _Deny(401, "invalid Authorization header; send `Authorization: Bearer KEY`")
            principal = self._lookup(secret)
        elif self.admin_key:
            raise _Deny(401, "missing API key; send `Authorization: Bearer KEY`")
        else:
            principal = self._local(scope, headers)
        match = _BOT_PATH.match(path)
        if principal.kind == "widget":
            allowed = match and match.group(2) == "/chat" and method == "POST"
            if not allowed:
                if match and match.group(1) != principal.bot:
                    raise _Deny(404, unknown_bot(_unquote(match.group(1))))
                raise _Deny(403, "a widget token can only chat with its bot")
        if principal.bot is not None and match and _unquote(match.group(1)) != principal.bot:
            raise _Deny(404, unknown_bot(_unquote(match.group(1))))
        return principal

    def _lookup(self, secret: str) -> Principal:
        if self.admin_key and hmac.compare_digest(secret.encode(), self.admin_key.encode()):
            return Principal("admin")
        if not secret.startswith(tuple(KEY_PREFIX.values())) or len(secret) > 200:
            raise _Deny(401, "invalid API key")
        key = self.store_getter().find_key(digest(secret))
        if key is None:
            raise _Deny(401, "invalid API key")
        return Principal(key.kind, key.bot, key.id)

    def _local(self, scope, headers: dict[str, str]) -> Principal:
        host = headers.get("host", "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        client = _client(scope)
        if hostname not in _LOOPBACK_NAMES or not _is_loopback(client):
            raise _Deny(401, "missing API key; send `Authorization: Bearer KEY`")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin not in (None, "null") and \
                origin.split("://", 1)[-1].lower() != host:
            raise _Deny(403, "cross-site request refused")
        return Principal("local")


class _Deny(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.message = status, message
        self.headers = headers or ({"www-authenticate": "Bearer"} if status == 401 else {})


def _client(scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


def error_body(message: str, status: int, openai: bool) -> dict[str, Any]:
    """Our JSON error shape; OpenAI's ({"error": {"message", "type", "code"}}) under /v1."""
    if openai:
        kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                413: "invalid_request_error", 429: "rate_limit_error"}.get(
            status, "invalid_request_error" if status < 500 else "server_error")
        return {"error": {"message": message, "type": kind, "code": status}}
    return {"error": message}


async def _error(send, status: int, message: str, openai: bool, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(message, status, openai)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"x-content-type-options", b"nosniff")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
