"""The REST API under /api: bots and their settings, sources (list with last sync, add, remove, re-sync),
uploads, sync jobs with progress, search, chat (SSE), conversations with feedback, cited passages, keys.
Every route is scoped to one bot; the caller's key decides which bots it reaches (auth.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..errors import ConfigError, InputError, NotFoundError, RagtuneError
from ..models.generators import GENERATORS
from ..store import Bot, Source
from ..types import Answer
from .auth import KEY_KINDS, Principal, create_key
from .chat import (Saved, answer_and_save, chat_events, check_question, clamp_history, clamp_max_tokens, collect,
                   event_stream)

router = APIRouter(prefix="/api")


class Forbidden(RagtuneError):
    exit_code = 2
    http_status = 403


def services(request: Request):
    return request.app.state.services


def principal(request: Request) -> Principal:
    return request.state.principal


def require_admin(who: Principal, what: str) -> None:
    if not who.is_admin:
        raise Forbidden(f"only the admin key may {what}")


def bot_json(services, bot: Bot) -> dict[str, Any]:
    adapters = adapters_json(services, bot)
    return {"name": bot.name, **services.store.count(bot), "settings": public_settings(bot), "adapters": adapters,
            "adapter_stale": bool(adapters and adapters[-1]["stale"])}


ADAPTER_FIELDS = ("id", "created_at", "base_model", "raft", "runtime", "documents", "held_out_loss", "stale",
                  "stale_reason", "changed", "removed")


def adapters_json(services, bot: Bot) -> list[dict[str, Any]]:
    """The bot's fine-tuned adapters, oldest first, each with its `stale` flag and why (a learned document
    changed, was removed or erased); `adapter_stale` in bot_json is the newest one's. No paths on disk."""
    from ..train.adapters import describe_all

    return [{k: row[k] for k in ADAPTER_FIELDS} for row in describe_all(services.store, bot,
                                                                       services.settings.home_path)]


SETTING_NAMES = ("model", "strategy", "system_prompt", "handoff")


def public_settings(bot: Bot) -> dict[str, Any]:
    from ..strategies import BotProfile

    profile = BotProfile.of(bot)
    return {"model": bot.settings.get("model") or "", "strategy": profile.strategy,
            "system_prompt": profile.system_prompt, "handoff": profile.handoff,
            "redact_pii": bool(bot.settings.get("redact_pii")), "min_support": profile.min_support}


def source_json(s: Source) -> dict[str, Any]:
    return {"id": s.id, "uri": s.uri, "kind": s.kind, "added_at": s.added_at, "synced_at": s.synced_at,
            "uploads": bool(s.options.get("uploads"))}


# ------------------------------------------------------------------------------------------------ bots
_BOT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class BotCreate(BaseModel):
    name: str = Field(pattern=_BOT_NAME, description="letters, digits, _ . -; at most 64")


class BotSettings(BaseModel):
    model: str | None = Field(None, description=f"generator for this bot: {', '.join(GENERATORS)}; '' = server's")
    strategy: str | None = Field(None, description="answering strategy, e.g. rag or base")
    system_prompt: str | None = Field(None, max_length=4000)
    handoff: str | None = Field(None, max_length=1000, description="what the bot says when it doesn't know")
    min_support: float | None = Field(None, ge=0, le=1, description="the bot's own hand-off bar: evidence scoring "
                                      "below it gets the handoff (`ragtune calibrate` sets it from labelled questions)")


@router.get("/bots", tags=["bots"], summary="bots this key reaches, with document and chunk counts")
def list_bots(s=Depends(services), who=Depends(principal)):
    return [bot_json(s, b) for b in s.bots(who)]


@router.post("/bots", tags=["bots"], status_code=201, summary="create a bot (admin)")
def create_bot(body: BotCreate, s=Depends(services), who=Depends(principal)):
    require_admin(who, "create bots")
    return bot_json(s, s.store.ensure_bot(body.name))


@router.get("/bots/{bot}", tags=["bots"])
def get_bot(bot: str, s=Depends(services), who=Depends(principal)):
    return bot_json(s, s.bot(who, bot))


@router.get("/bots/{bot}/settings", tags=["bots"], summary="model, strategy, system prompt, handoff text")
def get_settings(bot: str, s=Depends(services), who=Depends(principal)):
    return public_settings(s.bot(who, bot))


@router.patch("/bots/{bot}/settings", tags=["bots"], summary="change model, strategy, system prompt or handoff")
def update_settings(bot: str, body: BotSettings, s=Depends(services), who=Depends(principal)):
    from ..strategies import STRATEGIES

    b = s.bot(who, bot)
    changes = body.model_dump(exclude_none=True)
    if "model" in changes and changes["model"] != (b.settings.get("model") or ""):
        require_admin(who, "change a bot's model (it loads on the server)")
    if changes.get("model") and changes["model"] not in GENERATORS:
        raise ConfigError(f"unknown model {changes['model']!r}; valid values: {', '.join(GENERATORS)}")
    if changes.get("strategy") and changes["strategy"] not in STRATEGIES:
        raise ConfigError(f"unknown strategy {changes['strategy']!r}; valid values: {', '.join(STRATEGIES)}")
    return public_settings(s.store.update_bot_settings(b, changes))


# ------------------------------------------------------------------------------------------------ sources
class SourceAdd(BaseModel):
    uri: str = Field(min_length=1, max_length=2000, description="http(s) URL (crawled), or a file or folder "
                     "on the server (admin key only)")
    sync: bool = Field(True, description="start a sync job for it at once")
    include: str | None = Field(None, max_length=500, description="comma-separated globs (folders)")
    exclude: str | None = Field(None, max_length=500)
    allow_private: bool = Field(False, description="let the crawler reach private addresses (admin key only)")


@router.get("/bots/{bot}/sources", tags=["sources"], summary="sources with their last sync time")
def list_sources(bot: str, s=Depends(services), who=Depends(principal)):
    return [source_json(x) for x in s.store.list_sources(s.bot(who, bot))]


@router.post("/bots/{bot}/sources", tags=["sources"], status_code=201,
             summary="add a source (and start its sync job)")
def add_source(bot: str, body: SourceAdd, s=Depends(services), who=Depends(principal)):
    from ..ingest.sync import register_sources

    b = s.bot(who, bot)
    is_url = body.uri.startswith(("http://", "https://"))
    if not is_url:
        require_admin(who, "add files or folders of the server as sources")
    if body.allow_private:
        require_admin(who, "let the crawler reach private addresses")
    settings = s.settings.replace(include=body.include or "", exclude=body.exclude or "",
                                  allow_private=body.allow_private)
    source = register_sources(s.store, b, [body.uri], settings)[0]
    job = s.jobs.submit(b, [source.id]) if body.sync else None
    return {"source": source_json(source), "job": job}


@router.delete("/bots/{bot}/sources/{source_id}", tags=["sources"], summary="remove a source with its documents")
def remove_source(bot: str, source_id: int, s=Depends(services), who=Depends(principal)):
    s.store.remove_source(s.bot(who, bot), source_id)
    return {"removed": source_id}


@router.post("/bots/{bot}/sources/{source_id}/sync", tags=["sources"], status_code=202,
             summary="re-sync one source (a job)")
def resync_source(bot: str, source_id: int, s=Depends(services), who=Depends(principal)):
    b = s.bot(who, bot)
    if not any(x.id == source_id for x in s.store.list_sources(b)):
        raise NotFoundError(f"no source {source_id} in bot {b.name!r}")
    return s.jobs.submit(b, [source_id])


@router.post("/bots/{bot}/sync", tags=["sources"], status_code=202, summary="re-sync every source (a job)")
def sync_all(bot: str, s=Depends(services), who=Depends(principal)):
    return s.jobs.submit(s.bot(who, bot))


# ------------------------------------------------------------------------------------------------ uploads
_SAFE_NAME = re.compile(r"[^\w.\- ]+")


def uploads_dir(s, bot: Bot) -> Path:
    return s.settings.home_path / "uploads" / f"bot-{bot.id}"


@router.post("/bots/{bot}/uploads", tags=["sources"], status_code=201,
             summary="upload files (md, txt, html, pdf, docx, csv, jsonl) and sync them")
def upload(bot: str, files: list[UploadFile] = File(...), s=Depends(services), who=Depends(principal)):
    from ..ingest.loaders import SUPPORTED_SUFFIXES
    from ..ingest.sync import register_sources

    b = s.bot(who, bot)
    folder = uploads_dir(s, b)
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for f in files:
        name = _SAFE_NAME.sub("_", Path(f.filename or "").name).strip(" .")
        if not name or Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise InputError(f"{f.filename!r}: not a supported file; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
        target = folder / name
        with open(target, "wb") as out:
            while block := f.file.read(1 << 20):
                out.write(block)
        saved.append(name)
    source = next((x for x in s.store.list_sources(b) if x.options.get("uploads")), None)
    if source is None:
        source = register_sources(s.store, b, [str(folder)], s.settings.replace(include="", exclude=""))[0]
        source = s.store.add_source(b, source.uri, source.kind, {**source.options, "uploads": True})
    job = s.jobs.submit(b, [source.id])
    return {"files": saved, "source": source_json(source), "job": job}


@router.delete("/bots/{bot}/uploads/{name}", tags=["sources"], summary="delete an uploaded file and sync")
def delete_upload(bot: str, name: str, s=Depends(services), who=Depends(principal)):
    b = s.bot(who, bot)
    target = uploads_dir(s, b) / Path(name).name
    source = next((x for x in s.store.list_sources(b) if x.options.get("uploads")), None)
    if source is None or not target.is_file():
        raise NotFoundError(f"no uploaded file {name!r} in bot {b.name!r}")
    target.unlink()
    return s.jobs.submit(b, [source.id])


# ------------------------------------------------------------------------------------------------ jobs
@router.get("/bots/{bot}/jobs", tags=["sources"], summary="sync jobs, newest first")
def list_jobs(bot: str, s=Depends(services), who=Depends(principal)):
    return s.jobs.list(s.bot(who, bot))


@router.get("/bots/{bot}/jobs/{job_id}", tags=["sources"], summary="one sync job's progress and report")
def get_job(bot: str, job_id: str, s=Depends(services), who=Depends(principal)):
    return s.jobs.get(s.bot(who, bot), job_id)


# ------------------------------------------------------------------------------------------------ search
@router.get("/bots/{bot}/search", tags=["chat"], summary="hybrid search of the bot's documents")
def search(bot: str, q: str = Query(..., min_length=1, max_length=4000), k: int = Query(5, ge=1, le=50),
           s=Depends(services), who=Depends(principal)):
    from ..retrieval import Retriever

    b = s.bot(who, bot)
    result = Retriever(s.store, s.settings, s.embedder).search(b, q, k=k)
    return {"query": q, "ms": round(result.ms, 1), "hits": [
        {"chunk_id": h.chunk_id, "score": round(h.score, 5), "source": h.source, "title": h.title,
         "heading": list(h.heading), "text": h.text} for h in result.hits]}


@router.get("/bots/{bot}/passages/{chunk_id}", tags=["chat"], summary="the source passage a citation points to")
def passage(bot: str, chunk_id: str, s=Depends(services), who=Depends(principal)):
    b = s.bot(who, bot)
    hits = s.store.get_hits(b, [(chunk_id, 0.0)])
    if not hits:
        raise NotFoundError(f"no passage {chunk_id!r} in bot {b.name!r}")
    h = hits[0]
    return {"chunk_id": h.chunk_id, "source": h.source, "title": h.title, "heading": list(h.heading), "text": h.text}


# ------------------------------------------------------------------------------------------------ chat
class ChatBody(BaseModel):
    message: str = Field(min_length=1, max_length=16000, description="the question")
    conversation_id: str | None = Field(None, max_length=64, description="continue this conversation")
    stream: bool = Field(True, description="server-sent events: token…, then done (or error)")
    strategy: str | None = Field(None, description="override the bot's strategy (not for widget tokens)")
    max_tokens: int | None = Field(None, description="clamped to the server's max_tokens")


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/bots/{bot}/chat", tags=["chat"],
             summary="ask the bot; streamed as server-sent events (token, done) unless stream is false")
async def chat(bot: str, body: ChatBody, s=Depends(services), who=Depends(principal)):
    b = s.bot(who, bot)
    question = check_question(body.message)
    history = []
    if body.conversation_id:
        history = clamp_history(s.store.get_conversation(b, body.conversation_id)["messages"])
    strategy = s.strategy_for(b, None if who.kind == "widget" else body.strategy,
                              clamp_max_tokens(body.max_tokens, s.settings.max_tokens))
    channel = "widget" if who.kind == "widget" else "chat"

    def run():
        return answer_and_save(s.store, b, strategy, question, history, body.conversation_id, channel)

    def result(final: Answer, saved: Saved) -> dict[str, Any]:
        return {**final.to_json(), "conversation_id": saved.conversation_id, "message_id": saved.message_id}

    if not body.stream:
        return result(*await collect(run, s.chat_pool))
    return event_stream(chat_events(run, s.chat_pool, token=lambda text: sse("token", {"text": text}),
                                    done=lambda final, saved: sse("done", result(final, saved)),
                                    error=lambda status, message: sse("error", {"error": message, "status": status})))


# ------------------------------------------------------------------------------------------------ conversations
class FeedbackBody(BaseModel):
    rating: Literal["up", "down"] = Field(description="thumbs up or down")
    comment: str = Field("", max_length=2000)


@router.get("/bots/{bot}/conversations", tags=["conversations"], summary="conversations, newest first")
def list_conversations(bot: str, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                       s=Depends(services), who=Depends(principal)):
    return s.store.list_conversations(s.bot(who, bot), limit, offset)


@router.get("/bots/{bot}/conversations/{conversation_id}", tags=["conversations"],
            summary="one conversation with its messages, citations and feedback")
def get_conversation(bot: str, conversation_id: str, s=Depends(services), who=Depends(principal)):
    return s.store.get_conversation(s.bot(who, bot), conversation_id)


@router.post("/bots/{bot}/messages/{message_id}/feedback", tags=["conversations"],
             summary="thumbs up/down and a comment on one answer")
def feedback(bot: str, message_id: int, body: FeedbackBody, s=Depends(services), who=Depends(principal)):
    s.store.set_feedback(s.bot(who, bot), message_id, 1 if body.rating == "up" else -1, body.comment)
    return {"message_id": message_id, "rating": body.rating, "comment": body.comment}


# ------------------------------------------------------------------------------------------------ keys
class KeyCreate(BaseModel):
    kind: Literal["key", "widget"] = Field("key", description="key: the bot's whole API; widget: chat only")
    label: str = Field("", max_length=100)


def key_json(k) -> dict[str, Any]:
    return {"id": k.id, "kind": k.kind, "hint": k.hint, "label": k.label, "created_at": k.created_at,
            "revoked_at": k.revoked_at}


@router.get("/bots/{bot}/keys", tags=["keys"], summary="the bot's keys and widget tokens (admin)")
def list_keys(bot: str, s=Depends(services), who=Depends(principal)):
    require_admin(who, "list keys")
    return [key_json(k) for k in s.store.list_keys(s.bot(who, bot))]


@router.post("/bots/{bot}/keys", tags=["keys"], status_code=201,
             summary="create a key or widget token (admin); the secret is shown only in this response")
def new_key(bot: str, body: KeyCreate, s=Depends(services), who=Depends(principal)):
    require_admin(who, "create keys")
    assert body.kind in KEY_KINDS
    secret, record = create_key(s.store, s.bot(who, bot), body.kind, body.label)
    return {"key": secret, **key_json(record)}


@router.delete("/bots/{bot}/keys/{key_id}", tags=["keys"], summary="revoke a key or widget token (admin)")
def revoke_key(bot: str, key_id: int, s=Depends(services), who=Depends(principal)):
    require_admin(who, "revoke keys")
    s.store.revoke_key(s.bot(who, bot), key_id)
    return JSONResponse({"revoked": key_id})
