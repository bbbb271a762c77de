"""Website sources against a test site on 127.0.0.1: robots.txt, a self-referencing sitemap, a redirect loop,
a page that grows forever, limits, conditional re-sync, 404 removal, and the SSRF guard keeping a
loopback site untouched without --allow-private (the server's log shows no request)."""

import http.server
import threading
import time
from pathlib import Path

import pytest

from conftest import run_json
from ragtune.ingest.crawler import CrawlLimits, SiteCrawler, normalize_url
from ragtune.ingest.isolation import parse_bytes
from ragtune.store.sqlite import SQLiteStore

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>&lol3;</loc></url></urlset>"""


def page(title, body, links=()):
    nav = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    return (f"<html><head><title>{title}</title></head><body><nav>{nav}</nav>"
            f"<main><h1>{title}</h1><p>{body}</p></main><footer>© site</footer></body></html>").encode()


class Site:
    """A small website. pages: path → (status, headers, body); `log` records (path, status, request headers)."""

    def __init__(self):
        self.log = []
        self.pages = {}
        self.lock = threading.Lock()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                site.handle(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def handle(self, h):
        path = h.path
        if path == "/grow":  # a page that never ends (bounded here so the server always stops)
            self._record(path, 200, h)
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.end_headers()
            chunk = b"<p>" + b"more " * 13000 + b"</p>\n"  # 65 kB, about 6 MB/s
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline:
                    h.wfile.write(chunk)
                    time.sleep(0.01)
            except OSError:
                pass
            return
        status, headers, body = self.pages.get(path, (404, {}, b"not found"))
        etag = headers.get("ETag")
        if etag and h.headers.get("If-None-Match") == etag:
            status, body = 304, b""
        self._record(path, status, h)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _record(self, path, status, h):
        with self.lock:
            self.log.append((path, status, dict(h.headers)))

    def paths(self):
        with self.lock:
            return [p for p, _, _ in self.log]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = Site()
    b = s.base
    html = {"Content-Type": "text/html; charset=utf-8"}
    s.pages = {
        "/robots.txt": (200, {"Content-Type": "text/plain"},
                        f"User-agent: *\nDisallow: /private/\nSitemap: {b}/sitemap.xml\n".encode()),
        # an index that lists itself (read once) and a page sitemap
        "/sitemap.xml": (200, {"Content-Type": "application/xml"}, (
            '<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{b}/sitemap.xml</loc></sitemap><sitemap><loc>{b}/pages.xml</loc></sitemap>"
            "</sitemapindex>").encode()),
        "/pages.xml": (200, {"Content-Type": "application/xml"}, (
            '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            + "".join(f"<url><loc>{u}</loc></url>" for u in (
                f"{b}/", f"{b}/docs/a.html", f"{b}/docs/b.html", f"{b}/private/secret.html",
                "http://elsewhere.example/x")) + "</urlset>").encode()),
        "/": (200, html, page("Home", "Welcome to the help center.", [
            "/docs/a.html", "docs/c.html", "/loop1", "/grow", "/private/secret.html", "/old", "/docs/d.html",
            "http://elsewhere.example/", "/logo.png", "mailto:help@example.org", "#top"])),
        "/docs/a.html": (200, {**html, "ETag": '"a1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"},
                         page("Refunds", "The refund window is 30 days.")),
        "/docs/b.html": (200, html, page("Shipping", "Parcels ship within two days.")),
        "/docs/c.html": (200, html, page("Warranty", "The warranty lasts two years.")),
        "/docs/d.html": (200, html, page("Depth one", "Level one.", ["/docs/e.html"])),
        "/docs/e.html": (200, html, page("Depth two", "Level two.", ["/docs/f.html"])),
        "/docs/f.html": (200, html, page("Depth three", "Too deep to fetch.")),
        "/loop1": (302, {"Location": "/loop2"}, b""),
        "/loop2": (302, {"Location": "/loop1"}, b""),
        "/old": (301, {"Location": "/docs/b.html"}, b""),
        "/private/secret.html": (200, html, page("Secret", "SECRET must never be fetched")),
        "/logo.png": (200, {"Content-Type": "image/png"}, b"\x89PNG"),
    }
    yield s
    s.close()


EXPECTED = {"/", "/docs/a.html", "/docs/b.html", "/docs/c.html", "/docs/d.html", "/docs/e.html"}


def stored_paths(home: Path, base: str) -> set[str]:
    store = SQLiteStore(home / "ragtune.db")
    try:
        rows = store.db.execute("SELECT path FROM documents").fetchall()
    finally:
        store.close()
    return {r[0][len(base):] for r in rows}


def test_crawl_gets_exactly_the_allowed_pages_then_resyncs_incrementally(site, home):
    env = {"RAGTUNE_MAX_FILE_MB": "1"}
    r = run_json(home, "ingest", site.base + "/", "--allow-private", "--max-depth", "2", "--crawl-timeout", "60",
                 **env)
    assert stored_paths(home, site.base) == EXPECTED
    assert r["added"] == 6 and r["updated"] == 0 and r["removed"] == 0
    failed = {f["source"][len(site.base):]: f["error"] for f in r["failed"]}
    assert set(failed) == {"/loop1", "/grow"}, failed
    assert "redirect loop" in failed["/loop1"] and "over the 1 MB limit" in failed["/grow"]
    requested = site.paths()
    assert not any(p.startswith("/private/") for p in requested)  # robots.txt disallow obeyed
    assert "/docs/f.html" not in requested and "/logo.png" not in requested  # depth limit, no loader for images
    assert requested.count("/sitemap.xml") == 1  # the self-referencing sitemap is read once
    assert requested.count("/docs/b.html") == 1  # /old redirects to a page already fetched

    # second sync: validators sent, unchanged pages cost a 304 or a hash, nothing re-embedded
    site.log.clear()
    again = run_json(home, "sync", **env)
    assert (again["added"], again["updated"], again["removed"], again["unchanged"]) == (0, 0, 0, 6)
    assert again["chunks_embedded"] == 0
    a = [(status, headers) for path, status, headers in site.log if path == "/docs/a.html"]
    assert a and a[0][0] == 304 and a[0][1].get("If-None-Match") == '"a1"'

    # a page changes, another is deleted (404): one update, one removal
    site.pages["/docs/b.html"] = (200, {"Content-Type": "text/html"}, page("Shipping", "Parcels ship in one day."))
    del site.pages["/docs/c.html"]
    third = run_json(home, "sync", **env)
    assert (third["added"], third["updated"], third["removed"], third["unchanged"]) == (0, 1, 1, 4)
    assert stored_paths(home, site.base) == EXPECTED - {"/docs/c.html"}
    hits = run_json(home, "search", "parcels ship", "--mode", "bm25")["hits"]
    assert hits[0]["title"] == "Shipping" and "one day" in hits[0]["text"]
    assert "© site" not in hits[0]["text"] and "/loop1" not in hits[0]["text"]  # boilerplate dropped


def test_without_allow_private_nothing_is_requested(site, home):
    r = run_json(home, "ingest", site.base + "/")
    assert r["added"] == 0
    assert len(r["failed"]) == 1 and "loopback" in r["failed"][0]["error"]
    assert "--allow-private" in r["failed"][0]["error"]
    assert site.paths() == []


def _crawler(site, **limits):
    def parse(data, url, mtime, kind):
        return parse_bytes(data, url, mtime, kind)

    return SiteCrawler(site.base + "/", CrawlLimits(**{"request_timeout": 10, "page_bytes": 1 << 20, **limits}),
                       parse, allow_private=True)


def test_page_limit_stops_the_crawl(site):
    crawler = _crawler(site, max_pages=3)
    events = list(crawler.crawl())
    assert crawler.stats.pages == 3
    assert sum(e.outcome == "changed" for e in events) <= 3
    assert events[-1].outcome == "failed" and "3 pages fetched (crawl_max_pages)" in events[-1].error


def test_time_limit_bounds_a_page_that_grows_forever(site):
    site.pages["/"] = (200, {"Content-Type": "text/html"}, page("Home", "x", ["/grow"]))
    crawler = _crawler(site, seconds=1.5, page_bytes=1 << 40, max_bytes=1 << 40)
    started = time.monotonic()
    events = list(crawler.crawl())
    assert time.monotonic() - started < 10
    assert any(e.url.endswith("/grow") and "crawl_timeout" in e.error for e in events)


def test_billion_laughs_sitemap_is_refused_and_the_crawl_goes_on(site):
    site.pages["/pages.xml"] = (200, {"Content-Type": "application/xml"}, LAUGHS)
    events = list(_crawler(site).crawl())
    refused = [e for e in events if e.url.endswith("/pages.xml")]
    assert refused and "sitemap refused" in refused[0].error
    assert any(e.outcome == "changed" and e.url.endswith("/docs/a.html") for e in events)


def test_a_start_url_redirecting_to_another_host_crawls_that_site(site):
    """http://localhost:PORT/moved → http://127.0.0.1:PORT/ (like example.com → www.example.com)."""
    port = site.base.rsplit(":", 1)[1]
    site.pages["/moved"] = (301, {"Location": f"{site.base}/"}, b"")

    def parse(data, url, mtime, kind):
        return parse_bytes(data, url, mtime, kind)

    crawler = SiteCrawler(f"http://localhost:{port}/moved", CrawlLimits(max_depth=2, page_bytes=1 << 20), parse,
                          allow_private=True)
    changed = {e.url[len(site.base):] for e in crawler.crawl() if e.outcome == "changed"}
    assert changed == EXPECTED
    assert not any(p.startswith("/private/") for p in site.paths())


def test_normalize_url():
    assert normalize_url("HTTP://Example.COM:80/a#frag") == "http://example.com/a"
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("http://[::1]:8080/x?q=1") == "http://[::1]:8080/x?q=1"
