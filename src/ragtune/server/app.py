"""The HTTP server: `create_app(settings)` builds the FastAPI app — models and store opened once in its
lifespan, auth/limits in front (auth.py), the REST API (rest.py), the OpenAI-compatible API (openai_api.py),
and the chat, admin and widget pages (static/), each with a Content-Security-Policy."""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from string import Template
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ConfigError, NotFoundError, RagtuneError
from ..models.embedders import Embedder
from ..models.generators import GENERATORS, Generator
from ..settings import Settings
from ..store import Bot, Store
from .auth import AuthMiddleware, Principal, error_body, unknown_bot

STATIC = Path(__file__).with_name("static")
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, served from the fastapi-offline package
CHAT_WORKERS = 128  # streams answered at once; beyond that requests wait for a worker

# No inline script or style, nothing from another origin: an answer that smuggles markup cannot run or load.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
FRAME_CSP = PAGE_CSP.replace("frame-ancestors 'none'", "frame-ancestors *")  # the widget's frame, on any site


class Services:
    """What the routes share: settings, the store, the models (loaded once), the chat workers, sync jobs."""

    def __init__(self, settings: Settings, store: Store, embedder: Embedder, generator: Generator) -> None:
        from .jobs import SyncJobs

        self.settings, self.store, self.embedder = settings, store, embedder
        self.default_generator = generator
        self._generators: dict[str, Generator] = {}
        self._generators_lock = threading.Lock()
        self.chat_pool = ThreadPoolExecutor(max_workers=CHAT_WORKERS, thread_name_prefix="ragtune-chat")
        self.jobs = SyncJobs(settings, store, embedder)

    # bots ------------------------------------------------------------------------------------------------
    def bot(self, principal: Principal, name: str) -> Bot:
        """The bot `name` if this caller may reach it; a foreign bot answers exactly like a missing one."""
        principal.check_bot(name)
        try:
            return self.store.get_bot(name)
        except NotFoundError:
            raise NotFoundError(unknown_bot(name)) from None

    def bots(self, principal: Principal) -> list[Bot]:
        return [b for b in self.store.list_bots() if principal.bot in (None, b.name)]

    # models ----------------------------------------------------------------------------------------------
    def generator_for(self, bot: Bot) -> Generator:
        """The bot's model setting (a generator name), else the server's generator; each loaded once."""
        name = bot.settings.get("model") or ""
        if not name or name == self.settings.generator:
            return self.default_generator
        if name not in GENERATORS:
            raise ConfigError(f"bot {bot.name!r} has unknown model {name!r}; valid values: {', '.join(GENERATORS)}")
        with self._generators_lock:
            if name not in self._generators:
                from ..models.generators import open_generator

                self._generators[name] = open_generator(self.settings.replace(generator=name))
            return self._generators[name]

    def strategy_for(self, bot: Bot, name: str | None = None, max_tokens: int | None = None):
        from ..strategies import BotProfile, open_strategy

        settings = self.settings
        if max_tokens is not None and max_tokens != settings.max_tokens:
            settings = settings.replace(max_tokens=max_tokens)
        name = name or BotProfile.of(bot).strategy
        return open_strategy(name, self.store, bot, settings, self.embedder, self.generator_for(bot))

    def close(self) -> None:
        self.jobs.close()
        self.chat_pool.shutdown(wait=False, cancel_futures=True)
        for g in [self.default_generator, *self._generators.values()]:
            g.close()
        self.store.close()


def create_app(settings: Settings, generator: Generator | None = None, embedder: Embedder | None = None) -> FastAPI:
    """The app. Models (the given fakes, or the ones `settings` names) are loaded in the lifespan, once."""
    holder: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..models.embedders import open_embedder
        from ..models.generators import open_generator
        from ..store import open_store

        store = open_store(settings)
        try:
            emb = embedder or open_embedder(settings)
            gen = generator or open_generator(settings)
            # load now, not on the first question: embed a word, count tokens (llama.cpp loads its model)
            await asyncio.to_thread(emb.embed_query, "ready")
            await asyncio.to_thread(gen.count_tokens, "ready")
        except BaseException:
            store.close()
            raise
        services = Services(settings, store, emb, gen)
        holder["services"] = app.state.services = services
        try:
            yield
        finally:
            services.close()
            holder.clear()

    from fastapi_offline import FastAPIOffline  # /docs with its assets served here (no CDN)

    app = FastAPIOffline(title="ragtune", version=__version__, lifespan=lifespan, static_url=DOCS_ASSETS,
                         redoc_url=None,  # ReDoc fetches its logo from a CDN; Swagger UI is fully local
                  description="Support bots over your documents: REST, OpenAI-compatible chat, pages and widget. "
                  "Send `Authorization: Bearer KEY` (a bot key from `ragtune keys create`, or the admin key).")

    def store_getter() -> Store:
        services = holder.get("services")
        if services is None:
            raise RagtuneError("the server is starting")
        return services.store

    mb = 1024 * 1024
    app.add_middleware(AuthMiddleware, store_getter=store_getter, admin_key=settings.admin_key,
                       rate_limit=settings.rate_limit, max_body=settings.max_request_kb * 1024,
                       max_upload=int(settings.max_file_mb * mb) + mb)
    origins = [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]
    if origins:  # outermost, so a browser's preflight is answered before authentication (it carries no key)
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "PUT", "PATCH",
                           "DELETE"], allow_headers=["Authorization", "Content-Type"], max_age=600)
    _errors(app)
    from .openai_api import router as openai_router
    from .rest import router as rest_router

    app.include_router(rest_router)
    app.include_router(openai_router)
    from .compare_api import router as compare_router  # the latest comparison and recommendation (admin page)

    app.include_router(compare_router)
    _pages(app)

    @app.get("/healthz", tags=["server"], summary="200 once the models are loaded")
    def healthz() -> dict[str, Any]:
        services = holder.get("services")
        if services is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return {"status": "ok", "version": __version__, "generator": services.default_generator.name,
                "embedder": services.embedder.identity}

    return app


def _errors(app: FastAPI) -> None:
    def respond(request: Request, status: int, message: str, headers=None) -> JSONResponse:
        return JSONResponse(error_body(message, status, request.url.path.startswith("/v1/")), status_code=status,
                            headers=headers)

    @app.exception_handler(RagtuneError)
    async def ragtune_error(request: Request, exc: RagtuneError):
        return respond(request, exc.http_status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return respond(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return respond(request, 422, "invalid request: " + "; ".join(problems))


# Each page is its file in static/ (what it includes resolved) inside the shared head and body of page.html,
# with its title and body attributes: the chat page and the widget's frame share the conversation, the chat
# and admin pages the key box.
PAGES = {
    "chat.html": ("ragtune · chat", 'data-mode="page" class="chat-page"'),
    "widget-frame.html": ("chat", 'data-mode="widget" class="widget-frame"'),
    "admin.html": ("ragtune · admin", 'class="admin-page"'),
}
_INCLUDE = re.compile(r"^<!-- include ([\w.-]+\.html) -->$", re.MULTILINE)


def render_page(name: str) -> str:
    """The HTML of page `name` (a key of PAGES): its includes inlined (one level), inside page.html."""
    def read(file: str) -> str:
        return (STATIC / file).read_text(encoding="utf-8").rstrip("\n")

    title, body = PAGES[name]
    content = _INCLUDE.sub(lambda m: read(m.group(1)), read(name))
    return Template(read("page.html") + "\n").substitute(title=title, body=body, content=content)


def _pages(app: FastAPI) -> None:
    files = {p.name for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else set()
    common = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
    html = {name: render_page(name).encode("utf-8") for name in PAGES}  # put together once, served from memory

    def page(name: str, csp: str = PAGE_CSP) -> Response:
        extra = {} if csp is FRAME_CSP else {"x-frame-options": "DENY"}
        return Response(html[name], media_type="text/html; charset=utf-8",
                        headers={**common, **extra, "content-security-policy": csp, "cache-control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index():
        return Response(status_code=307, headers={"location": "/chat"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/chat", include_in_schema=False)
    def chat_page():
        return page("chat.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page():
        return page("admin.html")

    @app.get("/widget/frame", include_in_schema=False)
    def widget_frame():
        return page("widget-frame.html", FRAME_CSP)

    @app.get("/widget.js", include_in_schema=False)
    def widget_js():
        return FileResponse(STATIC / "widget.js", media_type="text/javascript; charset=utf-8",
                            headers={**common, "cross-origin-resource-policy": "cross-origin",
                                     "cache-control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in files or name.endswith(".html"):
            raise NotFoundError(f"no static file {name!r}")
        kind = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}.get(name.rsplit(".", 1)[-1],
                                                                                     "application/octet-stream")
        return FileResponse(STATIC / name, media_type=f"{kind}; charset=utf-8",
                            headers={**common, "cache-control": "no-cache"})
