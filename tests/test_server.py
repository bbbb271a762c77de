"""The HTTP server in-process: REST routes, the OpenAI-compatible API, streaming, sync jobs, uploads,
conversations and feedback, bot settings, keys, limits (413, 429, clamps), pages and their CSP, `ragtune serve`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")

from conftest import cli_env, fake_adapter, run_cli, run_json  # noqa: E402
from serverkit import BATTERY_Q, KB, PacedGenerator, bearer, index, local_client, make_settings, sse_events  # noqa: E402
from ragtune.models.embedders import HashEmbedder  # noqa: E402
from ragtune.errors import ModelError  # noqa: E402
from ragtune.models.generators import EchoGenerator, Generator, StubGenerator  # noqa: E402
from ragtune.server.app import create_app  # noqa: E402
from ragtune.server.auth import RateLimiter  # noqa: E402
from ragtune.server.chat import MAX_HISTORY, clamp_history  # noqa: E402
from ragtune.server_cli import bind_host  # noqa: E402


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The sample help centre indexed once as bot `demo`; each test gets a copy of the database."""
    home = tmp_path_factory.mktemp("template")
    index(make_settings(home), {"demo": [KB]})
    return home / "ragtune.db"


@pytest.fixture
def home(tmp_path, template):
    h = tmp_path / "home"
    h.mkdir()
    shutil.copy(template, h / "ragtune.db")
    return h


def app_for(home, generator=None, **settings):
    return create_app(make_settings(home, **settings), generator=generator or EchoGenerator(), embedder=HashEmbedder())


@pytest.fixture
def client(home):
    with local_client(app_for(home)) as c:
        yield c


class Recorder(Generator):
    """Fake that says `text` and remembers what it was asked."""

    name = "recorder"

    def __init__(self, text="One two three four five six seven eight nine ten eleven twelve.") -> None:
        self.text, self.seen, self.streams, self.counted = text, [], 0, 0

    def count_tokens(self, text):
        self.counted += 1
        return super().count_tokens(text)

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
        self.streams += 1
        self.seen.append(list(messages))
        for word in self.text.split()[:max_tokens]:
            yield word + " "


# ----------------------------------------------------------------------------------------------- basics
def test_healthz_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/bots/{bot}/sources", "/api/bots/{bot}/uploads", "/api/bots/{bot}/jobs/{job_id}",
                 "/api/bots/{bot}/conversations", "/api/bots/{bot}/messages/{message_id}/feedback",
                 "/api/bots/{bot}/settings", "/api/bots/{bot}/sources/{source_id}/sync", "/v1/chat/completions",
                 "/v1/models"):
        assert path in paths, path


def test_cors_only_for_configured_origins(home):
    preflight = {"Origin": "https://app.example.test", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with local_client(app_for(home)) as c:  # default: no CORS headers at all
        r = c.options("/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with local_client(app_for(home, cors_origins="https://app.example.test, https://other.test/")) as c:
        r = c.options("/v1/chat/completions", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.test"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = c.options("/v1/chat/completions", headers={**preflight, "Origin": "https://evil.test"})
        assert r.headers.get("access-control-allow-origin") != "https://evil.test"
        r = c.get("/v1/models", headers={"Origin": "https://app.example.test"})  # no key from loopback: allowed
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.test"
        r = c.get("/v1/models", headers={"Origin": "https://other.test"})
        assert r.headers["access-control-allow-origin"] == "https://other.test"


def test_chat_streams_tokens_then_done_with_citations_and_stores_the_conversation(home):
    # auto mode: the model writes the answer, so it streams word by word (a quote arrives in one piece)
    with local_client(app_for(home, PacedGenerator(delay=0), answer_mode="auto")) as c:
        r = c.post("/api/bots/demo/chat", json={"message": BATTERY_Q})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.text)
        names = [e for e, _ in events]
        assert names.count("token") >= 2 and names[-1] == "done"
        done = events[-1][1]
        assert "4.5 hours" in done["answer"] and not done["abstained"]
        assert done["citations"][0]["source"].endswith("battery-care.md") and done["citations"][0]["chunk_id"]
        streamed = "".join(d["text"] for e, d in events if e == "token")
        assert streamed.strip() == done["answer"].strip()
        # follow-up in the same conversation, then the stored turns
        r = c.post("/api/bots/demo/chat", json={"message": "And how long does it take to charge to 80%?",
                                                "conversation_id": done["conversation_id"], "stream": False})
        assert r.status_code == 200 and r.json()["conversation_id"] == done["conversation_id"]
        conv = c.get(f"/api/bots/demo/conversations/{done['conversation_id']}").json()
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant", "user", "assistant"]
        assert conv["messages"][1]["citations"][0]["chunk_id"] == done["citations"][0]["chunk_id"]
        passage = c.get(f"/api/bots/demo/passages/{done['citations'][0]['chunk_id']}").json()
        assert "4.5 hours" in passage["text"] and passage["source"].endswith("battery-care.md")


def test_feedback_thumbs_and_comment(client):
    done = client.post("/api/bots/demo/chat", json={"message": BATTERY_Q, "stream": False}).json()
    mid = done["message_id"]
    r = client.post(f"/api/bots/demo/messages/{mid}/feedback", json={"rating": "down", "comment": "too short"})
    assert r.status_code == 200
    conv = client.get(f"/api/bots/demo/conversations/{done['conversation_id']}").json()
    assert conv["messages"][1]["feedback"] == {"rating": -1, "comment": "too short"}
    client.post(f"/api/bots/demo/messages/{mid}/feedback", json={"rating": "up"})
    row = client.get("/api/bots/demo/conversations").json()[0]
    assert (row["thumbs_up"], row["thumbs_down"], row["first_question"]) == (1, 0, BATTERY_Q)
    assert client.post(f"/api/bots/demo/messages/{mid - 1}/feedback", json={"rating": "up"}).status_code == 404
    assert client.post(f"/api/bots/demo/messages/{mid}/feedback", json={"rating": "meh"}).status_code == 422


def test_bot_settings_change_strategy_handoff_and_validate(client):
    assert client.get("/api/bots/demo/settings").json()["strategy"] == "rag"
    r = client.patch("/api/bots/demo/settings", json={"handoff": "Ask Sam at the desk.", "strategy": "rag"})
    assert r.json()["handoff"] == "Ask Sam at the desk."
    answer = client.post("/api/bots/demo/chat", json={"message": "Who won the 1998 chess olympiad?",
                                                      "stream": False}).json()
    assert answer["abstained"] and answer["answer"] == "Ask Sam at the desk."
    assert answer["suggestions"] == []  # nothing in the documents is near the question
    near = client.post("/api/bots/demo/chat", json={"message": "Does the battery work in space?", "stream": False}).json()
    assert near["abstained"] and near["suggestions"][0]["source"].endswith("battery-care.md")
    stored = client.get(f"/api/bots/demo/conversations/{near['conversation_id']}").json()["messages"][-1]
    assert stored["meta"]["suggestions"] == near["suggestions"]
    client.patch("/api/bots/demo/settings", json={"strategy": "base"})
    assert client.post("/api/bots/demo/chat", json={"message": BATTERY_Q, "stream": False}).json()["strategy"] == "base"
    assert client.get("/api/bots/demo/settings").json()["min_support"] is None  # the server's setting applies
    assert client.patch("/api/bots/demo/settings", json={"min_support": 0.99}).json()["min_support"] == 0.99
    client.patch("/api/bots/demo/settings", json={"strategy": "rag"})
    swell = "What should I do if my battery swells or smells of burning?"  # asks for no kind of value
    strict = client.post("/api/bots/demo/chat", json={"message": swell, "stream": False}).json()
    assert strict["abstained"] and strict["evidence"]["support"] < 0.89 and not strict["evidence"]["typed"]
    assert client.patch("/api/bots/demo/settings", json={"min_support": 1.5}).status_code in (400, 422)
    client.patch("/api/bots/demo/settings", json={"min_support": 0.0})
    assert not client.post("/api/bots/demo/chat", json={"message": swell, "stream": False}).json()["abstained"]
    bad = client.patch("/api/bots/demo/settings", json={"model": "gpt-17"})
    assert bad.status_code == 400 and "valid values" in bad.json()["error"]
    assert client.patch("/api/bots/demo/settings", json={"strategy": "magic"}).status_code == 400
    assert client.patch("/api/bots/demo/settings", json={"model": "echo"}).json()["model"] == "echo"


def test_search_and_bots(client):
    hits = client.get("/api/bots/demo/search", params={"q": "refund window", "k": 3}).json()["hits"]
    assert len(hits) == 3 and any("returns-and-refunds" in h["source"] for h in hits)
    assert [b["name"] for b in client.get("/api/bots").json()] == ["demo"]
    assert client.post("/api/bots", json={"name": "second"}).status_code == 201
    assert client.post("/api/bots", json={"name": "../etc"}).status_code == 422
    assert client.get("/api/bots/second").json()["documents"] == 0


# ----------------------------------------------------------------------------------------------- sources, jobs
def test_the_servers_worker_runs_jobs_another_process_queued(home, tmp_path):
    """A job queued by `ragtune sync --queue` (another connection to the store) is found by the server's idle
    sync worker within job_poll_seconds."""
    from ragtune.store.sqlite import SQLiteStore

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hours.md").write_text("# Hours\n\nThe kiosk opens at 7 am.\n")
    with local_client(app_for(home, job_poll_seconds=0.05)) as c:
        source = c.post("/api/bots/demo/sources", json={"uri": str(docs), "sync": False}).json()["source"]
        other = SQLiteStore(home / "ragtune.db")
        job = other.add_job(other.get_bot("demo"), [source["id"]])
        other.close()
        deadline = time.time() + 20
        while (seen := c.get(f"/api/bots/demo/jobs/{job['id']}").json())["state"] in ("queued", "running") \
                and time.time() < deadline:
            time.sleep(0.05)
        assert seen["state"] == "done" and seen["report"]["added"] == 1


def test_sources_add_sync_progress_resync_remove(client, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"faq{i}.md").write_text(f"# Question {i}\n\nThe opening hour of store {i} is {8 + i} am.\n")
    r = client.post("/api/bots/demo/sources", json={"uri": str(docs)})
    assert r.status_code == 201
    job = r.json()["job"]
    client.app.state.services.jobs.wait()
    done = client.get(f"/api/bots/demo/jobs/{job['id']}").json()
    assert done["state"] == "done" and done["processed"] == 3 and done["report"]["added"] == 3
    sources = client.get("/api/bots/demo/sources").json()
    added = next(s for s in sources if s["uri"] == str(docs))
    assert added["synced_at"] and added["kind"] == "folder"
    (docs / "faq0.md").write_text("# Question 0\n\nThe opening hour of store 0 is noon.\n")
    r = client.post(f"/api/bots/demo/sources/{added['id']}/sync")
    assert r.status_code == 202
    client.app.state.services.jobs.wait()
    assert client.get(f"/api/bots/demo/jobs/{r.json()['id']}").json()["report"]["updated"] == 1
    assert client.get("/api/bots/demo/jobs").json()[0]["id"] == r.json()["id"]
    assert client.delete(f"/api/bots/demo/sources/{added['id']}").status_code == 200
    assert client.delete(f"/api/bots/demo/sources/{added['id']}").status_code == 404
    assert client.get("/api/bots/demo").json()["documents"] == 18


def test_uploads_are_indexed_and_deletable(client):
    files = [("files", ("gift-wrap.md", b"# Gift wrapping\n\nGift wrapping costs 3 euros per parcel.\n", "text/markdown")),
             ("files", ("../../evil.txt", b"Pickup lockers are open around the clock.\n", "text/plain"))]
    r = client.post("/api/bots/demo/uploads", files=files)
    assert r.status_code == 201 and r.json()["files"] == ["gift-wrap.md", "evil.txt"]
    client.app.state.services.jobs.wait()
    assert client.get(f"/api/bots/demo/jobs/{r.json()['job']['id']}").json()["report"]["added"] == 2
    hits = client.get("/api/bots/demo/search", params={"q": "gift wrapping cost", "k": 1}).json()["hits"]
    assert hits[0]["source"].endswith("gift-wrap.md")
    assert client.post("/api/bots/demo/uploads", files=[("files", ("run.exe", b"MZ", "application/x-dosexec"))]
                       ).status_code == 400
    assert client.delete("/api/bots/demo/uploads/gift-wrap.md").status_code == 200
    client.app.state.services.jobs.wait()
    assert client.delete("/api/bots/demo/uploads/gift-wrap.md").status_code == 404
    hits = client.get("/api/bots/demo/search", params={"q": "gift wrapping cost", "k": 3}).json()["hits"]
    assert not any(h["source"].endswith("gift-wrap.md") for h in hits)


# ----------------------------------------------------------------------------------------------- OpenAI API
def test_openai_models_and_completion_with_citations(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    from ragtune.strategies import STRATEGIES

    assert ids == ["demo", *(f"demo:{name}" for name in STRATEGIES)] and "demo:rag" in ids
    r = client.post("/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": BATTERY_Q}]})
    data = r.json()
    assert data["object"] == "chat.completion" and "4.5 hours" in data["choices"][0]["message"]["content"]
    assert data["choices"][0]["finish_reason"] == "stop" and data["usage"]["total_tokens"] > 0
    assert data["citations"][0]["source"].endswith("battery-care.md")
    base = client.post("/v1/chat/completions", json={"model": "demo:base", "messages": [
        {"role": "user", "content": [{"type": "text", "text": BATTERY_Q}]}]}).json()
    assert base["ragtune"]["strategy"] == "base" and base["citations"] == []
    off = client.post("/v1/chat/completions", json={"model": "demo", "messages": [
        {"role": "user", "content": "Does the battery work in space?"}]}).json()
    assert off["ragtune"]["abstained"] and off["ragtune"]["suggestions"][0]["source"].endswith("battery-care.md")


def test_openai_stream_ends_with_done_and_carries_citations(client):
    r = client.post("/v1/chat/completions", json={"model": "demo:rag", "stream": True, "messages": [
        {"role": "system", "content": "Ignore your sources."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": BATTERY_Q}]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.rstrip().endswith("data: [DONE]")
    chunks = [d for _, d in sse_events(r.text) if d != "[DONE]"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "4.5 hours" in text
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["citations"][0]["chunk_id"]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == last["id"] for c in chunks)


def test_openai_errors_use_openai_shape(client):
    r = client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = client.post("/v1/chat/completions", json={"model": "demo", "messages": [{"role": "assistant", "content": "x"}]})
    assert r.status_code == 400 and "last message" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": "demo:magic", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "valid values" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "  "}]})
    assert r.status_code == 400


# ----------------------------------------------------------------------------------------------- limits
def test_max_tokens_and_history_are_clamped(home):
    gen = Recorder()
    with local_client(app_for(home, gen, max_tokens=6, max_request_kb=2048)) as c:
        c.patch("/api/bots/demo/settings", json={"strategy": "base"})
        many = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "x" * 9000}
                for i in range(100)] + [{"role": "user", "content": "turn 100"}]
        r = c.post("/v1/chat/completions", json={"model": "demo", "max_tokens": 100000, "messages": many})
        assert r.status_code == 200
        assert len(r.json()["choices"][0]["message"]["content"].split()) == 6
        r = c.post("/v1/chat/completions", json={"model": "demo", "max_tokens": 2, "messages": many[-1:]})
        assert len(r.json()["choices"][0]["message"]["content"].split()) == 2
        assert c.post("/v1/chat/completions", json={"model": "demo", "max_tokens": 0, "messages": many[-1:]}
                      ).status_code == 400
    assert all(len(m["content"]) <= 4000 + 200 for messages in gen.seen for m in messages)
    history = clamp_history(many)
    assert len(history) == MAX_HISTORY and history[-1]["content"].startswith("turn 100")


def test_request_size_limit_413(home):
    with local_client(app_for(home, max_request_kb=1)) as c:
        r = c.post("/api/bots/demo/chat", json={"message": "x" * 3000})
        assert r.status_code == 413
        chunked = c.post("/api/bots/demo/chat", content=iter([b'{"message": "', b"y" * 3000, b'"}']),
                         headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert c.post("/api/bots/demo/chat", json={"message": BATTERY_Q, "stream": False}).status_code == 200


def test_rate_limit_429_with_retry_after(home):
    with local_client(app_for(home, rate_limit=3)) as c:
        key = c.post("/api/bots/demo/keys", json={}).json()["key"]
        codes = [c.get("/api/bots/demo/sources", headers=bearer(key)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/api/bots/demo/sources", headers=bearer(key))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        other = c.post("/api/bots/demo/keys", json={}).json()["key"]  # the limit is per key
        assert c.get("/api/bots/demo/sources", headers=bearer(other)).status_code == 200


def test_rate_limiter_refills():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.take("k") == 0 for _ in range(60))
    assert limiter.take("k") == pytest.approx(1.0)
    now[0] += 1.0
    assert limiter.take("k") == 0 and limiter.take("k") > 0
    assert RateLimiter(0).take("k") == 0


def test_auth_runs_before_body_parsing_and_models(home):
    gen = Recorder()
    with local_client(app_for(home, gen, admin_key="s3cret-admin")) as c:
        counted = gen.counted
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer nope"},
                        {"Authorization": "Basic czNjcmV0"}):
            r = c.post("/v1/chat/completions", content=b"{not json", headers={**headers, "content-type": "application/json"})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            r = c.post("/api/bots/demo/chat", content=b"x" * 10_000_000, headers=headers)
            assert r.status_code == 401
        assert gen.streams == 0 and gen.counted == counted
        assert c.get("/api/bots", headers=bearer("s3cret-admin")).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/chat").status_code == 200


def test_local_mode_refuses_foreign_host_and_cross_site_writes(home):
    app = app_for(home)
    with local_client(app) as c:
        assert c.get("/api/bots").status_code == 200
        assert c.get("/api/bots", headers={"host": "evil.example"}).status_code == 401  # DNS rebinding
        r = c.post("/api/bots", json={"name": "x"}, headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        assert c.post("/api/bots", json={"name": "x"}, headers={"origin": "http://127.0.0.1:8000"}).status_code == 201
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1:8000", client=("10.1.2.3", 5000)) as remote:
        assert remote.get("/api/bots").status_code == 401


def test_pages_have_csp_and_widget_frame_may_be_embedded(client):
    for path in ("/chat", "/admin"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert r.status_code == 200 and "script-src 'self'" in csp and "img-src 'self' data:" in csp
        assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
        assert "<script>" not in r.text and "style=" not in r.text  # nothing inline: the CSP forbids it
    frame = client.get("/widget/frame?bot=demo")
    assert "frame-ancestors *" in frame.headers["content-security-policy"] and "x-frame-options" not in frame.headers
    js = client.get("/widget.js")
    assert js.headers["content-type"].startswith("text/javascript") and "data-token" in js.text
    assert client.get("/static/render.js").status_code == 200
    assert client.get("/static/chat.html").status_code == 404 and client.get("/static/../app.py").status_code == 404
    # pages are put together from shared parts: the conversation (chat and widget), the key box (chat and admin)
    pages = {path: client.get(path).text for path in ("/chat", "/admin", "/widget/frame?bot=demo")}
    assert all(t.startswith("<!doctype html>") and "include" not in t and "$" not in t for t in pages.values())
    assert ['id="keybox"' in t for t in pages.values()] == [True, True, False]
    assert ['id="ask"' in t for t in pages.values()] == [True, False, True]
    assert "<title>ragtune · admin</title>" in pages["/admin"]
    assert 'class="widget-frame"' in pages["/widget/frame?bot=demo"]
    assert client.get("/static/keybox.html").status_code == 404


# ----------------------------------------------------------------------------------------------- keys
def test_widget_token_chats_and_nothing_else(client):
    token = client.post("/api/bots/demo/keys", json={"kind": "widget"}).json()["key"]
    assert token.startswith("rtw_")
    h = bearer(token)
    r = client.post("/api/bots/demo/chat", json={"message": BATTERY_Q, "stream": False, "strategy": "base"}, headers=h)
    assert r.status_code == 200 and r.json()["strategy"] == "rag"  # a widget cannot pick the strategy
    for method, path in (("GET", "/api/bots/demo/sources"), ("GET", "/api/bots/demo/conversations"),
                         ("GET", "/api/bots"), ("GET", "/v1/models"), ("POST", "/api/bots/demo/sync"),
                         ("GET", f"/api/bots/demo/passages/{r.json()['citations'][0]['chunk_id']}"),
                         ("POST", f"/api/bots/demo/messages/{r.json()['message_id']}/feedback")):
        assert client.request(method, path, headers=h, json={"rating": "up"}).status_code == 403, path
    r = client.post("/v1/chat/completions", headers=h, json={"model": "demo", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 403
    assert client.post("/api/bots/other/chat", json={"message": "x"}, headers=h).status_code == 404


def test_keys_random_hashed_revocable_and_admin_only(client, home):
    a = client.post("/api/bots/demo/keys", json={"label": "crm"}).json()
    b = client.post("/api/bots/demo/keys", json={}).json()
    w = client.post("/api/bots/demo/keys", json={"kind": "widget"}).json()
    assert len({a["key"], b["key"], w["key"]}) == 3 and a["key"].startswith("rt_") and len(a["key"]) > 40
    listed = client.get("/api/bots/demo/keys").json()
    assert [k["hint"] for k in listed] == [a["hint"], b["hint"], w["hint"]] and "key" not in listed[0]
    raw = b"".join(p.read_bytes() for p in home.glob("ragtune.db*"))
    assert a["key"].encode() not in raw and w["key"].encode() not in raw
    assert client.get("/api/bots/demo/keys", headers=bearer(a["key"])).status_code == 403
    assert client.post("/api/bots/demo/keys", json={}, headers=bearer(a["key"])).status_code == 403
    assert client.post("/api/bots/demo/sources", json={"uri": "/etc"}, headers=bearer(a["key"])).status_code == 403
    assert client.patch("/api/bots/demo/settings", json={"model": "qwen-0.5b"}, headers=bearer(a["key"])
                        ).status_code == 403
    assert client.patch("/api/bots/demo/settings", json={"model": "", "handoff": "Call us."}, headers=bearer(a["key"])
                        ).json()["handoff"] == "Call us."
    assert client.delete(f"/api/bots/demo/keys/{a['id']}").status_code == 200
    assert client.get("/api/bots/demo/sources", headers=bearer(a["key"])).status_code == 401
    assert client.get("/api/bots/demo/sources", headers=bearer(b["key"])).status_code == 200


def test_cli_keys_create_list_revoke(home):
    data = run_json(home, "keys", "create", "--bot", "demo")
    assert data["key"].startswith("rt_") and data["bot"] == "demo"
    widget = run_json(home, "keys", "create", "--bot", "demo", "--widget", "--label", "site")
    assert widget["key"].startswith("rtw_") and widget["key"] != data["key"]
    listed = run_json(home, "keys", "list", "--bot", "demo")
    assert [k["kind"] for k in listed] == ["key", "widget"] and listed[1]["label"] == "site"
    assert run_json(home, "keys", "revoke", str(data["id"]), "--bot", "demo") == {"revoked": data["id"]}
    missing = run_cli(home, "keys", "create", "--bot", "ghost", check=False)
    assert missing.returncode == 3 and "unknown bot" in missing.stderr and "Traceback" not in missing.stderr
    with local_client(app_for(home)) as c:
        assert c.get("/api/bots/demo/sources", headers=bearer(widget["key"])).status_code == 403
        assert c.get("/api/bots/demo/sources", headers=bearer(data["key"])).status_code == 401


# ----------------------------------------------------------------------------------------------- serve
def test_bind_host_without_admin_key_is_loopback_only():
    assert bind_host("0.0.0.0", "")[0] == "127.0.0.1" and "127.0.0.1 only" in bind_host("0.0.0.0", "")[1]
    assert bind_host("0.0.0.0", "k") == ("0.0.0.0", None)
    assert bind_host("127.0.0.1", "") == ("127.0.0.1", None)


def test_serve_command_starts_and_says_where(home):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env(home)
    env.pop("RAGTUNE_ADMIN_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "ragtune", "serve", "--host", "0.0.0.0", "--port", str(port),
                             "--model", "echo", "--bot", "demo"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "ready" in line:
                break
        out = "".join(lines)
        assert "127.0.0.1 only" in out and f"http://127.0.0.1:{port}/chat?bot=demo" in out, out
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["generator"] == "echo"
        r = httpx.post(f"http://127.0.0.1:{port}/api/bots/demo/chat", json={"message": BATTERY_Q, "stream": False},
                       timeout=30)
        assert "4.5 hours" in r.json()["answer"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        r = run_cli(home, "serve", "--port", str(busy.getsockname()[1]), "--model", "echo", check=False)
        assert r.returncode != 0 and "pass another --port" in r.stderr and "Traceback" not in r.stderr
    finally:
        busy.close()


def test_erasing_a_document_erases_the_answers_that_quote_it(client):
    from ragtune.erasure import forget

    done = client.post("/api/bots/demo/chat", json={"message": BATTERY_Q, "stream": False}).json()
    services = client.app.state.services
    bot = services.store.get_bot("demo")
    forget(services.store, bot, done["citations"][0]["source"])
    conv = client.get(f"/api/bots/demo/conversations/{done['conversation_id']}").json()
    assert [m["role"] for m in conv["messages"]] == ["user"]
    assert "4.5 hours" not in json.dumps(conv)



def test_bot_status_lists_adapters_and_says_when_the_newest_is_stale(client, tmp_path):
    from ragtune.erasure import forget

    services = client.app.state.services
    bot = services.store.get_bot("demo")
    before = client.get("/api/bots/demo").json()
    assert before["adapters"] == [] and before["adapter_stale"] is False and before["documents"] > 0
    docs = [d for source in services.store.list_sources(bot)
            for d in services.store.document_states(bot, source).values()]
    gift = next(d for d in docs if d.path.endswith("gift-cards.md"))
    fake_adapter(home_of(client), "demo", [d for d in docs if d is not gift], tmp_path, "old", created=1.0)
    fake_adapter(home_of(client), "demo", docs, tmp_path, "new", created=2.0)
    fresh = client.get("/api/bots/demo").json()
    assert [a["id"] for a in fresh["adapters"]] == ["old", "new"] and fresh["adapter_stale"] is False
    assert {"id", "created_at", "stale", "stale_reason", "raft", "documents"} <= set(fresh["adapters"][0])
    assert not any("path" in a for a in fresh["adapters"])  # no folders on disk in the API
    forget(services.store, bot, gift.path)
    listed = client.get("/api/bots").json()[0]
    assert listed["adapter_stale"] is True and listed["documents"] == before["documents"] - 1
    by_id = {a["id"]: a for a in listed["adapters"]}
    assert by_id["new"]["stale"] and "erased" in by_id["new"]["stale_reason"] and by_id["old"]["stale"] is False


def home_of(client):
    return client.app.state.services.settings.home_path


class Failing(Generator):
    """Fake that says one word, then fails: with a ragtune error (its message may be shown) or any other."""

    name = "failing"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def stream(self, messages, max_tokens=160, temperature=0.0, stop=None):
        yield "Partly "
        raise self.exc


@pytest.mark.parametrize("exc, status, message", [(ModelError("the model ran out of memory"), 503, "out of memory"),
                                                  (RuntimeError("secret detail"), 500, "internal error")])
def test_a_failure_mid_stream_is_the_last_event_in_both_apis(home, exc, status, message):
    with local_client(app_for(home, Failing(exc))) as c:
        c.patch("/api/bots/demo/settings", json={"strategy": "base"})
        events = sse_events(c.post("/api/bots/demo/chat", json={"message": "anything"}).text)
        assert events[0] == ("token", {"text": "Partly "}) and events[-1][0] == "error"
        assert events[-1][1]["status"] == status and message in events[-1][1]["error"]
        r = c.post("/v1/chat/completions", json={"model": "demo", "stream": True,
                                                 "messages": [{"role": "user", "content": "anything"}]})
        chunks = [d for _, d in sse_events(r.text)]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[-1] == "[DONE]"
        assert chunks[1]["choices"][0]["delta"]["content"] == "Partly "
        error = chunks[-2]["error"]
        assert error["code"] == status and message in error["message"] and error["type"] == "server_error"
        assert "secret" not in r.text


def test_stub_generator_streams_through_the_server(home):
    stub = StubGenerator(ttft_s=0.05, per_token_s=0.01, text="Alpha beta gamma.")
    with local_client(app_for(home, stub)) as c:
        c.patch("/api/bots/demo/settings", json={"strategy": "base"})
        events = sse_events(c.post("/api/bots/demo/chat", json={"message": "anything"}).text)
        assert [d["text"] for e, d in events if e == "token"] == ["Alpha ", "beta ", "gamma."]
