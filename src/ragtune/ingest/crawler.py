"""Website sources: crawl one site — robots.txt respected, sitemap.xml used, same host and start folder only —
within limits on depth, pages, bytes and time. Conditional requests (ETag / Last-Modified) and content hashes
make a re-crawl cost a 304 or a hash for unchanged pages; pages that now answer 404/410 are reported gone.
Every request goes through the SSRF guard (netguard) and every page is parsed by the caller's `parse`
(the isolated worker in sync), so nothing a site sends is parsed in this process except robots.txt and
sitemaps (the latter with defusedxml: no DTDs, no entities)."""

from __future__ import annotations

import dataclasses
import email.utils
import gzip
import hashlib
import io
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Mapping
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import httpx

from .. import __version__
from ..errors import ConfigError, SourceError
from ..settings import Settings
from ..store import DocumentState
from ..types import LoadedDocument
from .isolation import ParsedPage
from .netguard import Resolver, guarded_client

USER_AGENT = f"ragtune/{__version__}"
ROBOTS_AGENT = "ragtune"
MAX_REDIRECTS = 5
MAX_SITEMAPS = 20
ROBOTS_MAX_BYTES = 512 * 1024
SITEMAP_MAX_BYTES = 10 * 1024 * 1024
_MB = 1024 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}
_KIND_BY_TYPE = {
    "text/html": "html", "application/xhtml+xml": "html", "application/pdf": "pdf", "text/plain": "text",
    "text/markdown": "markdown", "text/x-markdown": "markdown",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}
# links to these are never fetched: no loader reads them
_SKIP_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".ico", ".css", ".js", ".mjs", ".json",
                  ".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".mp3", ".mp4", ".webm", ".mov", ".avi",
                  ".woff", ".woff2", ".ttf", ".eot", ".exe", ".dmg", ".iso", ".xml", ".rss", ".atom")


@dataclass(frozen=True)
class CrawlLimits:
    max_pages: int = 200  # page requests per crawl (robots.txt and sitemaps not counted)
    max_depth: int = 5  # link hops from the start URL (sitemap entries count as depth 1)
    max_bytes: int = 50 * _MB  # bytes downloaded per crawl, all pages together
    page_bytes: int = 50 * _MB  # bytes one page may have
    seconds: float = 600.0  # wall-clock time for the whole crawl
    request_timeout: float = 30.0  # connect / read timeout of one request

    def __post_init__(self) -> None:
        if self.max_pages < 1 or self.max_depth < 0 or self.max_bytes < 1 or self.seconds <= 0:
            raise ConfigError("crawl limits must be positive (crawl_max_pages, crawl_max_depth, crawl_max_mb, "
                              "crawl_timeout)")

    @classmethod
    def from_settings(cls, settings: Settings) -> "CrawlLimits":
        return cls(max_pages=settings.crawl_max_pages, max_depth=settings.crawl_max_depth,
                   max_bytes=int(settings.crawl_max_mb * _MB), page_bytes=int(settings.max_file_mb * _MB),
                   seconds=settings.crawl_timeout, request_timeout=min(settings.request_timeout, 30.0))


ParseFn = Callable[[bytes, str, float, str], ParsedPage]  # (data, url, mtime, kind)


@dataclass
class PageEvent:
    """One outcome of a crawl. changed: `document` must be (re)indexed; unchanged: the stored one is current;
    gone: a stored page now answers 404/410 or robots.txt forbids it; failed: reported, stored page kept."""

    url: str
    outcome: Literal["changed", "unchanged", "gone", "failed"]
    document: LoadedDocument | None = None
    error: str = ""


@dataclass
class CrawlStats:
    requests: int = 0  # every HTTP request made, robots.txt and sitemaps included
    pages: int = 0  # page requests (what max_pages bounds)
    bytes: int = 0  # body bytes downloaded
    stopped: str = ""  # the limit that ended the crawl early, if one did
    requested: list[str] = field(default_factory=list)


def normalize_url(url: str) -> str:
    """Absolute http(s) URL without fragment, lower-case scheme and host, no default port, '/' for no path."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == {"http": 80, "https": 443}.get(scheme) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


class SiteCrawler:
    """Crawl the site of `start_url`. `states` are the stored pages of this source (path = URL); `is_current`
    says whether a stored page needs nothing but an unchanged body (same embedder, same redaction) — only
    then are conditional requests sent and equal hashes taken as unchanged."""

    def __init__(self, start_url: str, limits: CrawlLimits, parse: ParseFn, *,
                 states: Mapping[str, DocumentState] | None = None,
                 is_current: Callable[[DocumentState], bool] = lambda s: True,
                 allow_private: bool = False, resolver: Resolver | None = None,
                 skip: Callable[[str], bool] = lambda url: False, client: httpx.Client | None = None) -> None:
        self.start = normalize_url(start_url)
        parts = urlsplit(self.start)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"not an http(s) URL: {start_url}")
        self.host = parts.hostname.lower()
        self.port = parts.port
        self.scope = parts.path[: parts.path.rfind("/") + 1] or "/"
        self.limits = limits
        self.parse = parse
        self.states = dict(states or {})
        self.is_current = is_current
        self.skip = skip  # URLs never to fetch (pages erased with `ragtune forget`)
        self.client = client or guarded_client(allow_private, resolver, limits.request_timeout, USER_AGENT)
        self._own_client = client is None
        self.stats = CrawlStats()
        self._deadline = time.monotonic() + limits.seconds
        self.robots: RobotFileParser | None = None

    # ------------------------------------------------------------------ scope
    def same_site(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() != self.host:
            return False
        try:
            port = parts.port
        except ValueError:
            return False
        defaults = (None, 80, 443)
        return port == self.port or (port in defaults and self.port in defaults)

    def in_scope(self, url: str) -> bool:
        return self.same_site(url) and (urlsplit(url).path or "/").startswith(self.scope)

    def allowed(self, url: str) -> bool:
        return self.robots is None or self.robots.can_fetch(ROBOTS_AGENT, url)

    # ------------------------------------------------------------------ crawl
    def crawl(self) -> Iterator[PageEvent]:
        try:
            yield from self._crawl()
        finally:
            if self._own_client:
                self.client.close()

    def _crawl(self) -> Iterator[PageEvent]:
        try:
            self._follow_start()
            self.robots = self._read_robots()
        except SourceError as exc:  # refused by the guard, unreachable, 5xx: nothing is fetched
            yield PageEvent(self.start, "failed", error=str(exc))
            return
        queue: deque[tuple[str, int]] = deque([(self.start, 0)])
        seen = {self.start}
        sitemap_urls, sitemap_errors = self._read_sitemaps()
        for url, error in sitemap_errors:
            yield PageEvent(url, "failed", error=error)
        for url in sitemap_urls if self.limits.max_depth >= 1 else ():
            if url not in seen:
                seen.add(url)
                queue.append((url, 1))
        for url, state in sorted(self.states.items()):  # revisit what we hold, so deletions are noticed
            depth = int((state.metadata or {}).get("depth", 1))
            if url not in seen and depth <= self.limits.max_depth:
                seen.add(url)
                queue.append((url, depth))
        done: set[str] = set()
        while queue:
            url, depth = queue.popleft()
            if self.skip(url) or url in done:
                continue
            if not self.allowed(url):
                if url in self.states:
                    yield PageEvent(url, "gone", error="disallowed by robots.txt")
                continue
            stop = self._limit_reached()
            if stop:
                self.stats.stopped = stop
                yield PageEvent(self.start, "failed", error=f"crawl stopped early: {stop}")
                return
            done.add(url)
            events, links = self._visit(url, depth, done)
            yield from events
            if depth < self.limits.max_depth:
                for link in links:
                    if link not in seen and self.in_scope(link) and not _skipped_suffix(link):
                        seen.add(link)
                        queue.append((link, depth + 1))

    def _follow_start(self) -> None:
        """When the start URL redirects to another host (example.com → www.example.com), crawl that site: the
        user named it. Only redirects are followed here, each hop through the guard; a page answer ends it."""
        url = self.start
        for _ in range(MAX_REDIRECTS):
            self.stats.requests += 1
            self.stats.requested.append(url)
            try:
                with self.client.stream("GET", url) as response:
                    location = response.headers.get("location") if response.status_code in _REDIRECTS else None
            except httpx.HTTPError as exc:
                raise SourceError(f"request failed: {type(exc).__name__}: {exc}") from None
            if not location:
                break
            url = normalize_url(urljoin(url, location))
        if url != self.start and not self.same_site(url):
            parts = urlsplit(url)
            self.start, self.host, self.port = url, (parts.hostname or "").lower(), parts.port
            self.scope = parts.path[: parts.path.rfind("/") + 1] or "/"

    def _limit_reached(self) -> str:
        if self.stats.pages >= self.limits.max_pages:
            return f"{self.limits.max_pages} pages fetched (crawl_max_pages)"
        if self.stats.bytes >= self.limits.max_bytes:
            return f"{self.limits.max_bytes / _MB:g} MB downloaded (crawl_max_mb)"
        if time.monotonic() >= self._deadline:
            return f"{self.limits.seconds:g} s spent (crawl_timeout)"
        return ""

    def _visit(self, url: str, depth: int, done: set[str]) -> tuple[list[PageEvent], list[str]]:
        state = self.states.get(url)
        current = state is not None and self.is_current(state)
        headers = {}
        if current and state.metadata:
            if state.metadata.get("etag"):
                headers["If-None-Match"] = state.metadata["etag"]
            if state.metadata.get("last_modified"):
                headers["If-Modified-Since"] = state.metadata["last_modified"]
        self.stats.pages += 1
        try:
            final, response, body = self._get(url, headers, self.limits.page_bytes, count_bytes=True, done=done)
        except SourceError as exc:
            return [PageEvent(url, "failed", error=str(exc))], []
        events = []
        if final != url and state is not None:  # a stored page that now redirects: its content moved
            events.append(PageEvent(url, "gone", error="now redirects elsewhere"))
        if final is None:  # redirected off the site: not ours to index
            return events, []
        if final != url:
            if final in done or self.skip(final) or not self.allowed(final):
                return events, []
            done.add(final)
            url, state = final, self.states.get(final)
            current = state is not None and self.is_current(state)
        status = response.status_code
        if status == 304 and current:
            return events + [PageEvent(url, "unchanged")], list(state.metadata.get("links", ()))
        if status in (404, 410):
            return events + ([PageEvent(url, "gone", error=f"HTTP {status}")] if state else []), []
        if status != 200:
            return events + [PageEvent(url, "failed", error=f"HTTP {status}")], []
        kind = _page_kind(url, response.headers.get("content-type", ""))
        if kind is None:
            return events, []  # an image, a feed, a download: no loader for it
        digest = hashlib.sha256(body).hexdigest()
        if current and state.content_hash == digest:
            return events + [PageEvent(url, "unchanged")], list(state.metadata.get("links", ()))
        mtime = _http_date(response.headers.get("last-modified")) or time.time()
        try:
            page = self.parse(body, url, mtime, kind)
        except SourceError as exc:
            return events + [PageEvent(url, "failed", error=str(exc))], []
        own = sorted({link for link in _absolute_links(url, page.links)
                      if self.in_scope(link) and not _skipped_suffix(link)})
        metadata: dict[str, Any] = {**page.document.metadata, "url": url, "depth": depth, "links": own,
                                    "fetched_at": time.time()}
        for name, header in (("etag", "etag"), ("last_modified", "last-modified")):
            if response.headers.get(header):
                metadata[name] = response.headers[header]
        doc = dataclasses.replace(page.document, path=url, content_hash=digest, mtime=mtime, metadata=metadata)
        return events + [PageEvent(url, "changed", document=doc)], own

    # ------------------------------------------------------------------ http
    def _get(self, url: str, headers: dict[str, str], cap: int, count_bytes: bool = False,
             done: set[str] = frozenset()) -> tuple[str | None, httpx.Response, bytes]:
        """GET with redirects followed here, one guarded request per hop, each hop kept on the site; the body
        is read up to `cap` bytes and the crawl's time limit. Returns (final URL, or None when a hop leaves the
        site; response; body). A hop to a URL in `done` (already fetched) stops there, without a request."""
        hops: list[str] = []
        while True:
            if len(hops) > MAX_REDIRECTS:
                raise SourceError(f"more than {MAX_REDIRECTS} redirects")
            if url in hops:
                raise SourceError("redirect loop")
            hops.append(url)
            self.stats.requests += 1
            self.stats.requested.append(url)
            try:
                request = self.client.build_request("GET", url, headers={"Accept-Encoding": "gzip", **headers})
                response = self.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise SourceError(f"request failed: {type(exc).__name__}: {exc}") from None
            try:
                if response.status_code in _REDIRECTS and response.headers.get("location"):
                    target = normalize_url(urljoin(url, response.headers["location"]))
                    if not self.same_site(target):
                        return None, response, b""
                    if target in hops:
                        raise SourceError("redirect loop")
                    if target in done:
                        return target, response, b""
                    url = target
                    continue
                if response.status_code != 200:
                    return url, response, b""
                return url, response, self._read_body(response, cap, count_bytes)
            finally:
                response.close()

    def _read_body(self, response: httpx.Response, cap: int, count_bytes: bool) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise SourceError(f"page is {int(declared) / _MB:.1f} MB, over the {cap / _MB:g} MB limit (max_file_mb)")
        buf = bytearray()
        try:
            for chunk in response.iter_raw():
                buf += chunk
                if count_bytes:
                    self.stats.bytes += len(chunk)
                if len(buf) > cap:
                    raise SourceError(f"page is over the {cap / _MB:g} MB limit (max_file_mb)")
                if count_bytes and self.stats.bytes > self.limits.max_bytes:
                    raise SourceError(f"crawl reached its {self.limits.max_bytes / _MB:g} MB limit (crawl_max_mb)")
                if time.monotonic() > self._deadline:
                    raise SourceError(f"crawl reached its {self.limits.seconds:g} s limit (crawl_timeout)")
        except httpx.HTTPError as exc:
            raise SourceError(f"download failed: {type(exc).__name__}: {exc}") from None
        data = bytes(buf)
        encoding = response.headers.get("content-encoding", "").lower().strip()
        if encoding in ("gzip", "x-gzip"):
            data = _gunzip(data, cap)
        elif encoding not in ("", "identity"):
            raise SourceError(f"unsupported content encoding {encoding!r}")
        return data

    # ------------------------------------------------------------------ robots and sitemaps
    def _origin(self) -> str:
        parts = urlsplit(self.start)
        return f"{parts.scheme}://{parts.netloc}"

    def _read_robots(self) -> RobotFileParser:
        """robots.txt per RFC 9309: 4xx → no rules; 5xx or unreachable → the crawl does not start."""
        rp = RobotFileParser()
        url = self._origin() + "/robots.txt"
        final, response, body = self._get(url, {}, ROBOTS_MAX_BYTES)
        status = response.status_code
        if final is None or 400 <= status < 500:
            rp.parse([])
        elif status != 200:
            raise SourceError(f"robots.txt answered HTTP {status}; not crawling")
        else:
            rp.parse(body.decode("utf-8", errors="replace").splitlines())
        return rp

    def _read_sitemaps(self) -> tuple[list[str], list[tuple[str, str]]]:
        """Page URLs from the sitemaps robots.txt lists (else /sitemap.xml), sitemap indexes followed at most
        MAX_SITEMAPS files deep in total; a sitemap that refers to itself is read once."""
        from defusedxml import ElementTree
        from defusedxml.common import DefusedXmlException

        listed = [normalize_url(u) for u in (self.robots.site_maps() or [])] if self.robots else []
        todo = deque([u for u in listed if self.same_site(u)] or [self._origin() + "/sitemap.xml"])
        seen_maps: set[str] = set()
        pages: list[str] = []
        errors: list[tuple[str, str]] = []
        while todo and len(seen_maps) < MAX_SITEMAPS and not self._limit_reached():
            url = todo.popleft()
            if url in seen_maps:
                continue
            seen_maps.add(url)
            try:
                final, response, body = self._get(url, {}, SITEMAP_MAX_BYTES)
            except SourceError as exc:
                errors.append((url, f"sitemap: {exc}"))
                continue
            if final is None or response.status_code != 200 or not body.strip():
                continue
            if body[:2] == b"\x1f\x8b":
                try:
                    body = _gunzip(body, SITEMAP_MAX_BYTES)
                except SourceError as exc:
                    errors.append((url, f"sitemap: {exc}"))
                    continue
            try:
                root = ElementTree.fromstring(body, forbid_dtd=True)
            except (DefusedXmlException, ElementTree.ParseError, ValueError) as exc:
                errors.append((url, f"sitemap refused: {type(exc).__name__}: {str(exc)[:120]}"))
                continue
            tag = root.tag.rsplit("}", 1)[-1]
            for loc in root.iter():
                if loc.tag.rsplit("}", 1)[-1] != "loc" or not (loc.text or "").strip():
                    continue
                target = normalize_url(urljoin(url, loc.text.strip()))
                if tag == "sitemapindex":
                    if self.same_site(target) and target not in seen_maps:
                        todo.append(target)
                elif self.in_scope(target) and not _skipped_suffix(target):
                    pages.append(target)
        return list(dict.fromkeys(pages)), errors


def _absolute_links(base: str, links: tuple[str, ...]) -> list[str]:
    out = []
    for href in links:
        href = href.strip()
        if not href or href.startswith(("#", "mailto:", "javascript:", "tel:", "data:")):
            continue
        try:
            out.append(normalize_url(urljoin(base, href)))
        except ValueError:
            continue
    return out


def _page_kind(url: str, content_type: str) -> str | None:
    """The loader kind for a response: from its Content-Type, or from the URL's suffix when the server only
    says "some bytes"."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("", "application/octet-stream", "binary/octet-stream"):
        suffix = urlsplit(url).path.lower().rsplit(".", 1)[-1]
        return {"pdf": "pdf", "docx": "docx", "md": "markdown", "markdown": "markdown", "txt": "text",
                "html": "html", "htm": "html"}.get(suffix)
    return _KIND_BY_TYPE.get(ctype)


def _skipped_suffix(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(_SKIP_SUFFIXES)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _gunzip(data: bytes, cap: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(cap + 1)
    except (OSError, EOFError) as exc:
        raise SourceError(f"bad gzip data: {exc}") from None
    if len(out) > cap:
        raise SourceError(f"inflates to over {cap / _MB:g} MB")
    return out
