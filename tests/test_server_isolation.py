"""Bot isolation over HTTP: bot A holds a canary fact; bot B's key must never see it — not through chat, the
OpenAI endpoint, search, sources, passages, jobs or conversations — and a foreign id answers exactly like a
missing one. Wrong, empty, malformed, revoked or absent keys get 401."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from serverkit import KB, bearer, index, local_client, make_settings, sse_events  # noqa: E402
from ragtune.models.embedders import HashEmbedder  # noqa: E402
from ragtune.models.generators import EchoGenerator  # noqa: E402
from ragtune.server.app import create_app  # noqa: E402

CANARY = "ZEBRA-7731-CANARY"
ADMIN = "admin-" + "k" * 40
QUESTION = "What is the launch code for Project Orion?"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("iso")
    docs_a = root / "a"
    docs_a.mkdir()
    (docs_a / "orion.md").write_text(f"# Project Orion\n\nThe launch code for Project Orion is {CANARY}. "
                                     "Only the launch team may use it.\n")
    home = root / "home"
    settings = make_settings(home, admin_key=ADMIN, rate_limit=0)
    index(settings, {"alpha": [docs_a], "beta": [KB]})
    app = create_app(settings, generator=EchoGenerator(), embedder=HashEmbedder())
    with local_client(app) as c:
        admin = bearer(ADMIN)
        key_a = c.post("/api/bots/alpha/keys", json={}, headers=admin).json()["key"]
        key_b = c.post("/api/bots/beta/keys", json={}, headers=admin).json()["key"]
        widget_b = c.post("/api/bots/beta/keys", json={"kind": "widget"}, headers=admin).json()["key"]
        # alpha's own traffic: a conversation with feedback, a job, a cited chunk
        done = c.post("/api/bots/alpha/chat", json={"message": QUESTION, "stream": False}, headers=bearer(key_a)).json()
        assert CANARY in done["answer"], "positive control: alpha's key gets the canary"
        c.post(f"/api/bots/alpha/messages/{done['message_id']}/feedback", json={"rating": "up"}, headers=bearer(key_a))
        job = c.post("/api/bots/alpha/sync", headers=bearer(key_a)).json()
        app.state.services.jobs.wait()
        source_a = c.get("/api/bots/alpha/sources", headers=bearer(key_a)).json()[0]
        yield {"client": c, "a": key_a, "b": key_b, "wb": widget_b, "conv": done["conversation_id"],
               "msg": done["message_id"], "chunk": done["citations"][0]["chunk_id"], "job": job["id"],
               "source": source_a["id"]}


def _routes(bot: str, w) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"/api/bots/{bot}", None),
        ("GET", f"/api/bots/{bot}/settings", None),
        ("PATCH", f"/api/bots/{bot}/settings", {"handoff": "x"}),
        ("GET", f"/api/bots/{bot}/sources", None),
        ("POST", f"/api/bots/{bot}/sources", {"uri": "https://example.org/"}),
        ("DELETE", f"/api/bots/{bot}/sources/{w['source']}", None),
        ("POST", f"/api/bots/{bot}/sources/{w['source']}/sync", None),
        ("POST", f"/api/bots/{bot}/sync", None),
        ("GET", f"/api/bots/{bot}/jobs", None),
        ("GET", f"/api/bots/{bot}/jobs/{w['job']}", None),
        ("GET", f"/api/bots/{bot}/search?q=launch+code+Orion", None),
        ("GET", f"/api/bots/{bot}/passages/{w['chunk']}", None),
        ("POST", f"/api/bots/{bot}/chat", {"message": QUESTION}),
        ("POST", f"/api/bots/{bot}/chat", {"message": QUESTION, "stream": False}),
        ("GET", f"/api/bots/{bot}/conversations", None),
        ("GET", f"/api/bots/{bot}/conversations/{w['conv']}", None),
        ("POST", f"/api/bots/{bot}/messages/{w['msg']}/feedback", {"rating": "down"}),
        ("GET", f"/api/bots/{bot}/keys", None),
        ("DELETE", f"/api/bots/{bot}/uploads/orion.md", None),
    ]


def test_foreign_bot_reads_exactly_like_a_missing_one(world):
    c = world["client"]
    for method, path, body in _routes("alpha", world):
        foreign = c.request(method, path, json=body, headers=bearer(world["b"]))
        missing = c.request(method, path.replace("/alpha", "/nosuchbot", 1), json=body, headers=bearer(world["b"]))
        assert foreign.status_code == missing.status_code == 404, (method, path, foreign.text)
        assert foreign.json()["error"].replace("alpha", "X") == missing.json()["error"].replace("nosuchbot", "X")
        assert CANARY not in foreign.text
    # uploads are multipart
    r = c.post("/api/bots/alpha/uploads", files=[("files", ("a.md", b"# x\n\ny\n"))], headers=bearer(world["b"]))
    assert r.status_code == 404
    # the OpenAI endpoint: alpha is not a model for beta's key
    for model in ("alpha", "alpha:rag", "alpha:base"):
        r = c.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": QUESTION}]},
                   headers=bearer(world["b"]))
        missing = c.post("/v1/chat/completions", json={"model": "nosuchbot", "messages": [
            {"role": "user", "content": QUESTION}]}, headers=bearer(world["b"]))
        assert r.status_code == missing.status_code == 404 and CANARY not in r.text
        assert r.json()["error"]["message"].replace("alpha", "X") == missing.json()["error"]["message"].replace(
            "nosuchbot", "X")


def test_foreign_ids_in_own_bot_read_like_missing_ones(world):
    c, h = world["client"], bearer(world["b"])
    pairs = [
        (f"/api/bots/beta/conversations/{world['conv']}", "/api/bots/beta/conversations/AAAAAAAAAAAAAAAAAAAAAA", "GET", None),
        (f"/api/bots/beta/passages/{world['chunk']}", "/api/bots/beta/passages/000000000000000000000000", "GET", None),
        (f"/api/bots/beta/jobs/{world['job']}", "/api/bots/beta/jobs/nojobhere", "GET", None),
        (f"/api/bots/beta/sources/{world['source']}", "/api/bots/beta/sources/987654", "DELETE", None),
        (f"/api/bots/beta/sources/{world['source']}/sync", "/api/bots/beta/sources/987654/sync", "POST", None),
        (f"/api/bots/beta/messages/{world['msg']}/feedback", "/api/bots/beta/messages/987654/feedback", "POST",
         {"rating": "down"}),
    ]
    for foreign_path, missing_path, method, body in pairs:
        foreign = c.request(method, foreign_path, json=body, headers=h)
        missing = c.request(method, missing_path, json=body, headers=h)
        assert foreign.status_code == missing.status_code == 404, foreign_path
        normal = lambda r, ident: r.json()["error"].replace(str(ident), "ID")  # noqa: E731
        ident_f = foreign_path.rstrip("/").split("/")[-2 if foreign_path.endswith(("/sync", "/feedback")) else -1]
        ident_m = missing_path.rstrip("/").split("/")[-2 if missing_path.endswith(("/sync", "/feedback")) else -1]
        assert normal(foreign, ident_f) == normal(missing, ident_m), (foreign.text, missing.text)
    # continuing alpha's conversation from beta is refused the same way
    r = c.post("/api/bots/beta/chat", json={"message": "and?", "conversation_id": world["conv"]}, headers=h)
    assert r.status_code == 404 and CANARY not in r.text
    r = c.post("/v1/chat/completions", json={"model": "beta", "conversation_id": world["conv"],
                                             "messages": [{"role": "user", "content": "and?"}]}, headers=h)
    assert r.status_code == 404 and CANARY not in r.text


def test_bot_b_never_sees_the_canary(world):
    c, h = world["client"], bearer(world["b"])
    seen = []

    def get(path):
        r = c.get(path, headers=h)
        assert r.status_code == 200, (path, r.text)
        seen.append(r.text)
        return r

    assert [b["name"] for b in get("/api/bots").json()] == ["beta"]
    assert {m["id"].split(":")[0] for m in get("/v1/models").json()["data"]} == {"beta"}
    get("/api/bots/beta/sources")
    get("/api/bots/beta/search?q=launch+code+Orion+ZEBRA+7731+CANARY&k=50")
    for q in (QUESTION, f"Is {CANARY} the Orion launch code?", "launch code"):
        seen.append(c.post("/api/bots/beta/chat", json={"message": q}, headers=h).text)
        seen.append(c.post("/api/bots/beta/chat", json={"message": q, "stream": False}, headers=h).text)
        for stream in (False, True):
            r = c.post("/v1/chat/completions", headers=h, json={
                "model": "beta", "stream": stream, "messages": [{"role": "user", "content": q}]})
            assert r.status_code == 200
            seen.append(r.text)
    # conversations only hold beta's turns: the question (which the user typed) but no answer with the canary
    for conv in get("/api/bots/beta/conversations?limit=500").json():
        text = get(f"/api/bots/beta/conversations/{conv['id']}").text
        assert world["conv"] != conv["id"]
        assistant = [m for m in json.loads(text)["messages"] if m["role"] == "assistant"]
        assert not any(CANARY in m["content"] or CANARY in json.dumps(m["citations"]) for m in assistant)
    for text in seen:
        if "Is ZEBRA" in text:  # the user's own question is echoed back in conversations; answers must not be
            continue
        assert CANARY not in text


def test_widget_token_of_b_reaches_only_b_chat(world):
    c, h = world["client"], bearer(world["wb"])
    r = c.post("/api/bots/alpha/chat", json={"message": QUESTION}, headers=h)
    assert r.status_code == 404 and CANARY not in r.text
    r = c.post("/api/bots/beta/chat", json={"message": QUESTION}, headers=h)
    assert r.status_code == 200 and CANARY not in r.text
    done = [d for e, d in sse_events(r.text) if e == "done"][0]
    assert not done["abstained"] or done["citations"] == []
    for method, path, body in _routes("beta", world):
        if path.endswith("/chat"):
            continue
        assert c.request(method, path, json=body, headers=h).status_code == 403, path


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "},
    {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer rt_" + "x" * 43},
    {"Authorization": "Bearer rtw_" + "x" * 43}, {"Authorization": "Basic YWRtaW46YWRtaW4="},
    {"Authorization": "Token " + ADMIN}, {"Authorization": "Bearer " + ADMIN + "x"},
], ids=["absent", "empty", "bearer-only", "bearer-empty", "wrong", "fake-key", "fake-widget", "basic", "token-scheme",
        "admin-plus-one"])
def test_wrong_empty_or_absent_keys_get_401(world, headers):
    c = world["client"]
    paths = [("GET", "/api/bots", None), ("GET", "/v1/models", None),
             ("POST", "/v1/chat/completions", {"model": "alpha", "messages": [{"role": "user", "content": QUESTION}]}),
             ("POST", "/api/bots/alpha/chat", {"message": QUESTION}), ("GET", "/api/bots/alpha/sources", None),
             ("GET", f"/api/bots/alpha/conversations/{world['conv']}", None),
             ("GET", "/api/bots/alpha/search?q=launch", None), ("POST", "/api/bots", {"name": "intruder"})]
    for method, path, body in paths:
        r = c.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (method, path, r.text)
        assert CANARY not in r.text


def test_revoked_key_gets_401(world):
    c = world["client"]
    admin = bearer(ADMIN)
    made = c.post("/api/bots/beta/keys", json={}, headers=admin).json()
    assert c.get("/api/bots/beta/sources", headers=bearer(made["key"])).status_code == 200
    c.delete(f"/api/bots/beta/keys/{made['id']}", headers=admin)
    assert c.get("/api/bots/beta/sources", headers=bearer(made["key"])).status_code == 401
