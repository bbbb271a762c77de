"""The OpenAI-compatible API, so existing clients and chat UIs work unchanged: `GET /v1/models` (each bot, and
`bot:strategy`, is a model) and `POST /v1/chat/completions`, streamed as server-sent events ending in
`data: [DONE]`. Citations ride in an extra `citations` field (and, streamed, in the last chunk)."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError
from ..types import Answer
from .chat import (Saved, answer_and_save, chat_events, check_question, clamp_history, clamp_max_tokens, collect,
                   event_stream)
from .rest import Forbidden, principal, services

router = APIRouter(prefix="/v1", tags=["openai"])


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(description="a bot name, or bot:strategy (e.g. support:rag)")
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    stream: bool = False
    max_tokens: int | None = Field(None, description="clamped to the server's max_tokens")
    max_completion_tokens: int | None = None
    temperature: float | None = Field(None, description="ignored: answers are deterministic")
    conversation_id: str | None = Field(None, max_length=64, description="ragtune extra: continue this "
                                        "stored conversation (its history is used instead of `messages`)")


def _text(content) -> str:
    if isinstance(content, list):  # content parts: only the text ones count
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def _strategies() -> tuple[str, ...]:
    from ..strategies import STRATEGIES

    return STRATEGIES


@router.get("/models", summary="each bot this key reaches, and each bot:strategy, as a model")
def models(s=Depends(services), who=Depends(principal)):
    if who.kind == "widget":
        raise Forbidden("a widget token can only chat with its bot")
    data = []
    for bot in s.bots(who):
        for name in (bot.name, *(f"{bot.name}:{st}" for st in _strategies())):
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "ragtune"})
    return {"object": "list", "data": data}


@router.post("/chat/completions", summary="answer the last user message with the bot's documents")
async def chat_completions(body: ChatCompletionRequest, s=Depends(services), who=Depends(principal)):
    if who.kind == "widget":
        raise Forbidden("a widget token can only chat with its bot")
    name, _, strategy_name = body.model.partition(":")
    bot = s.bot(who, name)
    last = body.messages[-1]
    if last.role != "user":
        raise InputError("the last message must be the user's question")
    question = check_question(_text(last.content))
    if body.conversation_id:
        history = clamp_history(s.store.get_conversation(bot, body.conversation_id)["messages"])
    else:
        history = clamp_history({"role": m.role, "content": _text(m.content)} for m in body.messages[:-1])
    limit = clamp_max_tokens(body.max_completion_tokens or body.max_tokens, s.settings.max_tokens)
    strategy = s.strategy_for(bot, strategy_name or None, limit)
    created = int(time.time())
    completion_id = "chatcmpl-" + secrets.token_hex(12)

    def run():
        return answer_and_save(s.store, bot, strategy, question, history, body.conversation_id, "api")

    def extras(final: Answer, saved: Saved) -> dict[str, Any]:
        data = final.to_json()
        return {"citations": data["citations"],
                "ragtune": {"abstained": final.abstained, "suggestions": data.get("suggestions", []),
                            "strategy": final.strategy, "model": final.model,
                            "timings_ms": data["timings_ms"], "conversation_id": saved.conversation_id,
                            "message_id": saved.message_id}}

    def usage(text: str) -> dict[str, int]:  # approximate: the strategy's prompt is not exposed
        prompt = max(1, (len(question) + sum(len(m["content"]) for m in history)) // 4)
        done = max(1, len(text) // 4)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    if not body.stream:
        final, saved = await collect(run, s.chat_pool)
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": final.answer},
                             "finish_reason": "stop"}],
                "usage": usage(final.answer), **extras(final, saved)}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def error(status: int, message: str) -> str:  # the last event before [DONE]
        return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': status}})}\n\n"

    async def events():
        yield chunk({"role": "assistant", "content": ""})
        async for event in chat_events(run, s.chat_pool, token=lambda text: chunk({"content": text}), error=error,
                                       done=lambda final, saved: chunk({}, "stop", usage=usage(final.answer),
                                                                       **extras(final, saved))):
            yield event
        yield "data: [DONE]\n\n"

    return event_stream(events())
