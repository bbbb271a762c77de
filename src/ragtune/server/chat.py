"""Answering over HTTP: a strategy's stream runs in a worker thread and reaches the event loop through a queue,
so slow generation never blocks other requests, and a client that goes away stops its generation. The
finished turn is stored as a conversation (question, answer with citations) before the last event is sent."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Sequence

from ..errors import InputError, RagtuneError
from ..store import Bot
from ..strategies import clean_question
from ..types import Answer

MAX_HISTORY = 12  # messages of earlier conversation an answer may see
MAX_MESSAGE_CHARS = 4000  # each history message is cut to this


@dataclass(frozen=True)
class Saved:
    """The last item of a chat stream: where the turn was stored."""

    conversation_id: str
    message_id: int


def clamp_history(messages: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Only user/assistant turns, each cut to MAX_MESSAGE_CHARS, the last MAX_HISTORY of them."""
    out = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role in ("user", "assistant") and isinstance(content, str) and content.strip():
            out.append({"role": role, "content": content[:MAX_MESSAGE_CHARS]})
    return out[-MAX_HISTORY:]


def clamp_max_tokens(requested: int | None, ceiling: int) -> int:
    if requested is None:
        return ceiling
    if requested < 1:
        raise InputError("max_tokens must be at least 1")
    return min(requested, ceiling)


def check_question(text: Any) -> str:
    if not isinstance(text, str):
        raise InputError("the question must be text")
    return clean_question(text)


def answer_and_save(store, bot: Bot, strategy, question: str, history: Sequence[dict[str, str]],
                    conversation_id: str | None, channel: str) -> Iterator["str | Answer | Saved"]:
    """The strategy's stream, then the turn stored: text pieces, the final Answer, then Saved."""
    final = None
    for item in strategy.stream(question, history):
        if isinstance(item, Answer):
            final = item
        yield item
    if final is None:  # pragma: no cover - every strategy ends with an Answer
        raise RuntimeError("the strategy ended without an answer")
    data = final.to_json()
    meta = {k: data[k] for k in ("abstained", "strategy", "model", "timings_ms", "suggestions") if k in data}
    conv, ids = store.add_messages(bot, conversation_id, [
        {"role": "user", "content": question},
        {"role": "assistant", "content": final.answer, "citations": data["citations"], "meta": meta},
    ], channel=channel)
    yield Saved(conv, ids[-1])


async def collect(make_iter: Callable[[], Iterator[Any]], executor) -> tuple[Answer, Saved]:
    """A chat that is not streamed: run it to the end; the final Answer and where the turn was stored."""
    final = saved = None
    async for item in iterate_in_thread(make_iter, executor):
        if isinstance(item, Answer):
            final = item
        elif isinstance(item, Saved):
            saved = item
    return final, saved


async def chat_events(make_iter: Callable[[], Iterator[Any]], executor, token: Callable[[str], str],
                      done: Callable[[Answer, Saved], str], error: Callable[[int, str], str]) -> AsyncIterator[str]:
    """A streamed chat as one protocol's events: `token(text)` for each text piece, `done(answer, saved)` once
    the turn is stored. The status line is sent by then, so a failure becomes the last event, `error(status,
    message)`: a RagtuneError's own status and message, anything else 500 and "internal error"."""
    final = None
    try:
        async for item in iterate_in_thread(make_iter, executor):
            if isinstance(item, Answer):
                final = item
            elif isinstance(item, Saved):
                yield done(final, item)
            elif item:
                yield token(item)
    except Exception as exc:
        if isinstance(exc, RagtuneError):
            yield error(exc.http_status, str(exc))
        else:
            yield error(500, "internal error")


def event_stream(events: AsyncIterator[str]):
    """The streaming response for server-sent events, unbuffered by proxies."""
    from fastapi.responses import StreamingResponse

    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


_DONE = object()


async def iterate_in_thread(make_iter: Callable[[], Iterator[Any]], executor) -> AsyncIterator[Any]:
    """Run a blocking iterator in `executor`, yielding its items here as they come. Leaving the loop early
    (client gone, cancelled) makes the worker close the iterator after its current item, which frees the
    model for the next request."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            stop.set()

    def pump() -> None:
        iterator = None
        try:
            iterator = make_iter()
            for item in iterator:
                if stop.is_set():
                    break
                put((item, None))
        except BaseException as exc:  # handed to the event loop, which raises it in the request
            put((None, exc))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        put((_DONE, None))

    loop.run_in_executor(executor, pump)
    try:
        while True:
            item, exc = await queue.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
