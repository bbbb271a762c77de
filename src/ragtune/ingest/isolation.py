"""Safe parsing: every file or page is parsed by the loaders in a worker process with a wall-clock timeout and
an address-space limit, so a parser hang, crash or memory blow-up costs that one document (a SourceError the
sync reports in `failed`), never the batch. Before parsing, DOCX/zip inflation is capped (total uncompressed
bytes and entry count) and XML parts with a DTD are refused; in HTML, hidden text (display:none,
visibility:hidden, zero or tiny font, opacity 0, off-screen positioning, text the colour of its background)
is dropped and counted in the document's metadata under "hidden_text".

One worker is reused across documents and restarted after a failure. Protocol (stdin/stdout of the worker):
a 4-byte big-endian length, a JSON header, then `payload` raw bytes; the answer is a length and JSON."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..types import LoadedDocument, Section

DEFAULT_TIMEOUT = 30.0
DEFAULT_MEMORY_MB = 768
ZIP_MAX_ENTRIES = 2000
ZIP_MAX_UNCOMPRESSED = 256 * 1024 * 1024
_MB = 1024 * 1024
_LEN = 4
# Windows has neither select() on pipes nor rlimits: there the loaders run in-process (checks still apply,
# limits do not)
IN_PROCESS = os.name == "nt"
# how zlib, libxml2 and the C runtime word a failed allocation once a parser turns it into its own error
_ALLOC_FAILED = re.compile(r"unable to allocate|allocation failed|cannot allocate|out of memory", re.I)


@dataclass(frozen=True)
class ParsedPage:
    """What the parser makes of one file or page: the document, and for HTML the page's links (as written)."""

    document: LoadedDocument
    links: tuple[str, ...] = ()


# =========================================================================== the parent side
class ParserPool:
    """Parses in one worker process, reused across documents and restarted after a timeout or crash.
    Calls are serialised (one document at a time per pool)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB) -> None:
        if timeout <= 0 or memory_mb < 128:
            raise ValueError("parse_timeout must be > 0 and parse_memory_mb at least 128")
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.peak_rss_kb = 0  # the largest resident size any worker reached (kB)
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "ParserPool":
        return cls(timeout=settings.parse_timeout, memory_mb=settings.parse_memory_mb)

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        """Start the worker now (it imports while the caller does other work); calls start it anyway."""
        with self._lock:
            self._ensure()

    def load_file(self, path: Path | str, max_bytes: int) -> LoadedDocument:
        """Read and parse a file in the worker; FileNotFoundError when it vanished, SourceError otherwise."""
        return self._call({"op": "file", "path": str(path), "max_bytes": int(max_bytes)}, b"").document

    def load_bytes(self, data: bytes, path: str, mtime: float, kind: str | None = None) -> ParsedPage:
        """Parse bytes (a fetched page) in the worker; `kind` as in loaders.load_bytes."""
        return self._call({"op": "bytes", "path": path, "mtime": float(mtime), "kind": kind}, data)

    def close(self) -> None:
        with self._lock:
            self._stop(graceful=True)

    def __enter__(self) -> "ParserPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker management
    def _ensure(self) -> subprocess.Popen | None:
        if self._proc is None and not IN_PROCESS:
            root = str(Path(__file__).resolve().parents[2])  # the folder holding the ragtune package
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from ragtune.ingest.isolation import worker_main; worker_main()",
                 str(self.memory_mb), str(self.timeout)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0, env=env,
            )
        return self._proc

    def _stop(self, graceful: bool) -> str:
        """End the worker; returns how it ended (for the error message)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        self.peak_rss_kb = max(self.peak_rss_kb, _peak_rss_kb(proc.pid))
        if graceful:
            try:
                proc.stdin.close()
            except OSError:
                pass
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
                if pid:
                    return self._reaped(proc, status)
                time.sleep(0.01)
        try:  # not proc.kill(): it polls first, and a poll that reaps the worker would lose its exit status
            os.kill(proc.pid, signal.SIGKILL)  # the pid is ours until we reap it, even as a zombie
        except ProcessLookupError:
            pass
        _, status = os.waitpid(proc.pid, 0)
        return self._reaped(proc, status)

    def _reaped(self, proc: subprocess.Popen, status: int) -> str:
        proc.returncode = os.waitstatus_to_exitcode(status)
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        code = proc.returncode
        if code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"

    def _call(self, header: dict[str, Any], payload: bytes) -> ParsedPage:
        if IN_PROCESS:
            return _handle(header, payload)
        with self._lock:
            proc = self._ensure()
            deadline = time.monotonic() + self.timeout
            head = json.dumps({**header, "payload": len(payload)}).encode()
            try:
                _write_all(proc.stdin, len(head).to_bytes(_LEN, "big") + head)
                _write_all(proc.stdin, payload)
                size = int.from_bytes(_read_exact(proc.stdout, _LEN, deadline), "big")
                reply = json.loads(_read_exact(proc.stdout, size, deadline))
            except TimeoutError:
                self.restarts += 1
                self._stop(graceful=False)
                raise SourceError(f"parsing took longer than {self.timeout:g} s (parse_timeout); skipped") from None
            except (EOFError, BrokenPipeError, ConnectionResetError, ValueError):
                self.restarts += 1
                how = self._stop(graceful=False)
                raise SourceError(f"the parser crashed ({how}); skipped") from None
            self.peak_rss_kb = max(self.peak_rss_kb, int(reply.get("rss_kb", 0)))
            if reply.get("fatal"):  # the worker is exiting (e.g. after MemoryError): reap it now
                self.restarts += 1
                self._stop(graceful=True)
            if "error" in reply:
                if reply.get("errno") == "ENOENT":
                    raise FileNotFoundError(errno.ENOENT, reply["error"], header.get("path"))
                raise SourceError(reply["error"])
            return ParsedPage(_doc_from_json(reply["document"]), tuple(reply.get("links", ())))


def _write_all(stream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = stream.write(view)
        view = view[n:]


def _read_exact(stream, n: int, deadline: float) -> bytes:
    fd = stream.fileno()
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _doc_to_json(doc: LoadedDocument) -> dict[str, Any]:
    return {"path": doc.path, "title": doc.title, "sections": [[list(s.heading), s.text] for s in doc.sections],
            "content_hash": doc.content_hash, "mtime": doc.mtime, "metadata": doc.metadata}


def _doc_from_json(data: dict[str, Any]) -> LoadedDocument:
    return LoadedDocument(path=data["path"], title=data["title"],
                          sections=tuple(Section(tuple(h), t) for h, t in data["sections"]),
                          content_hash=data["content_hash"], mtime=data["mtime"], metadata=data["metadata"])


# =========================================================================== the worker side
def worker_main() -> None:
    """Entry point of the worker process: argv = [memory_mb, timeout]."""
    memory_mb, timeout = int(sys.argv[1]), float(sys.argv[2])
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # a parser that prints must not corrupt the protocol
    proto_in = os.fdopen(0, "rb", buffering=0)
    import resource

    limit = memory_mb * _MB
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):  # e.g. macOS: the wall-clock timeout still applies
        pass
    while True:
        head = _read_frame_or_eof(proto_in)
        if head is None:
            return
        request = json.loads(head)
        payload = _recv(proto_in, request["payload"])
        _cpu_backstop(resource, timeout)
        reply: dict[str, Any]
        fatal = False
        try:
            page = _handle(request, payload)
            reply = {"document": _doc_to_json(page.document), "links": list(page.links)}
        except FileNotFoundError:
            reply = {"error": "file disappeared during sync", "errno": "ENOENT"}
        except SourceError as exc:
            reply = {"error": str(exc)}
        except MemoryError:
            payload = b""
            reply = {"error": f"the parser ran out of memory (over {memory_mb} MB, parse_memory_mb); skipped"}
            fatal = True
        except RecursionError:
            reply = {"error": "the document is nested too deeply to parse; skipped"}
        except Exception as exc:  # a parser bug on a hostile file: one line for `failed`, the worker lives on
            reply = {"error": f"could not parse: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
        rss_kb = _peak_rss_kb(os.getpid())
        if "error" in reply and (rss_kb * 1024 > 0.85 * limit or _ALLOC_FAILED.search(reply["error"])):
            # C parsers (libxml2, lexbor) report a failed allocation as some other error: name the real cause,
            # and start a fresh worker, since this one's heap stays large
            reply = {"error": f"the parser ran out of memory (over {memory_mb} MB, parse_memory_mb); skipped"}
            fatal = True
        reply["rss_kb"] = rss_kb
        reply["fatal"] = fatal
        body = json.dumps(reply).encode()
        proto_out.write(len(body).to_bytes(_LEN, "big") + body)
        if fatal:
            return


def _peak_rss_kb(pid: int) -> int:
    """Peak resident size of a process since its exec (VmHWM). Not ru_maxrss: Linux carries that over from
    the parent through fork and exec, so a worker of a large process would look large."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    if pid != os.getpid():
        return 0
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, kB elsewhere


def _read_frame_or_eof(stream) -> bytes | None:
    first = stream.read(_LEN)
    while first is not None and 0 < len(first) < _LEN:
        more = stream.read(_LEN - len(first))
        if not more:
            return None
        first += more
    if not first:
        return None
    return _recv(stream, int.from_bytes(first, "big"))


def _recv(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(n - len(buf), 1 << 20))
        if not chunk:
            raise SystemExit(0)  # the parent went away
        buf += chunk
    return bytes(buf)


def _cpu_backstop(resource, timeout: float) -> None:
    """Kill the worker by SIGXCPU if one parse spins far past its timeout (the parent may be gone)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(spent + 4 * timeout + 10)
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    except (ValueError, OSError):
        pass


def _handle(request: dict[str, Any], payload: bytes) -> ParsedPage:
    if request["op"] == "file":
        path = Path(request["path"])
        data, mtime = _read_file(path, request["max_bytes"])
        return parse_bytes(data, str(path), mtime)
    return parse_bytes(payload, request["path"], request["mtime"], request.get("kind"))


def _read_file(path: Path, max_bytes: int) -> tuple[bytes, float]:
    try:
        st = path.stat()
        if not path.is_file():
            raise SourceError("not a regular file")
        if st.st_size > max_bytes:
            raise SourceError(
                f"file is {st.st_size / _MB:.1f} MB, over the {max_bytes / _MB:.1f} MB limit (max_file_mb)")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SourceError(f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise SourceError(f"file grew over the {max_bytes / _MB:.1f} MB limit (max_file_mb)")
    return data, st.st_mtime


def parse_bytes(data: bytes, path: str, mtime: float, kind: str | None = None) -> ParsedPage:
    """The checks and the parse the worker runs (callable in-process too, e.g. by tests): zip/DOCX limits,
    hidden-text removal for HTML, then loaders.load_bytes. The content hash stays that of the raw bytes."""
    from .loaders import load_bytes

    suffix = Path(path.split("?", 1)[0].split("#", 1)[0]).suffix.lower()
    kind = kind or {".docx": "docx", ".html": "html", ".htm": "html"}.get(suffix)
    if kind is None and "://" in path and data[:1024].lstrip().lower().startswith((b"<!doctype html", b"<html")):
        kind = "html"
    if kind == "docx":
        check_zip(data)
    links: tuple[str, ...] = ()
    hidden: dict[str, Any] = {}
    parsed = data
    if kind == "html":
        parsed, hidden, links = clean_html(data)
    doc = load_bytes(parsed, path, mtime, kind)
    metadata = dict(doc.metadata)
    if hidden:
        metadata["hidden_text"] = hidden
    raw_hash = hashlib.sha256(data).hexdigest()
    if raw_hash != doc.content_hash or metadata != doc.metadata:
        doc = dataclasses.replace(doc, content_hash=raw_hash, metadata=metadata)
    return ParsedPage(doc, links)


# --------------------------------------------------------------------------- zip / DOCX
def check_zip(data: bytes, max_entries: int = ZIP_MAX_ENTRIES, max_total: int = ZIP_MAX_UNCOMPRESSED) -> None:
    """Refuse a zip container (DOCX) whose entries or declared uncompressed size exceed the caps, or whose XML
    parts carry a DTD (entity declarations: billion laughs, external entities). zipfile never inflates a member
    past its declared size, so checking the declared sizes bounds the real ones."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # not a zip at all: the DOCX loader says so in its own words
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise SourceError(f"DOCX has {len(infos)} zip entries, over the limit of {max_entries} (zip bomb?)")
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise SourceError(f"DOCX inflates to {total / _MB:.0f} MB, over the {max_total / _MB:.0f} MB limit "
                          "(zip bomb?)")
    for info in infos:
        if not info.filename.lower().endswith((".xml", ".rels")):
            continue
        try:
            with zf.open(info) as member:
                head = member.read(8192)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError) as exc:
            raise SourceError(f"not a valid DOCX ({type(exc).__name__}: {exc})") from None
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            head = head.decode("utf-16", errors="ignore").encode("ascii", errors="ignore")
        if b"<!DOCTYPE" in head.upper() or b"<!ENTITY" in head.upper():
            raise SourceError(f"DOCX part {info.filename} declares a DTD (XML entities are refused)")


# --------------------------------------------------------------------------- hidden text in HTML
_DECL = re.compile(r"([a-z-]+)\s*:\s*([^;]+)", re.I)
_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_SIMPLE_SELECTOR = re.compile(r"^\s*[a-z0-9]*(?:[.#][\w-]+)*\s*$", re.I)
_LENGTH = re.compile(r"^(-?\d*\.?\d+)\s*(px|pt|em|rem|%|vw|vh)?$", re.I)
_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0), "transparent": None, "#fff": (255, 255, 255),
          "#ffffff": (255, 255, 255), "#000": (0, 0, 0), "#000000": (0, 0, 0)}
_DEFAULT_BG = (255, 255, 255)
_MAX_RULES = 1000
_MAX_ANCESTORS = 100


def _decls(style: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2).strip().lower().replace("!important", "").strip()
            for m in _DECL.finditer(style or "")}


def _length(value: str) -> tuple[float, str] | None:
    m = _LENGTH.match(value.strip())
    return (float(m.group(1)), (m.group(2) or "px").lower()) if m else None


def _colour(value: str) -> tuple[int, int, int] | None:
    value = value.strip().lower()
    if value in _NAMED:
        return _NAMED[value]
    m = re.match(r"^#([0-9a-f]{3}|[0-9a-f]{6})$", value)
    if m:
        h = m.group(1)
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    m = re.match(r"^rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*([\d.]+)\s*)?\)$", value)
    if m:
        if m.group(4) is not None and float(m.group(4)) == 0:
            return None
        return int(m.group(1)), int(m.group(2)), int(m.group(3))
    return None


def _background(decls: dict[str, str]) -> tuple[int, int, int] | None:
    for name in ("background-color", "background"):
        if name in decls:
            for token in re.split(r"\s+(?![^(]*\))", decls[name]):
                colour = _colour(token)
                if colour is not None:
                    return colour
    return None


def hidden_reason(decls: dict[str, str]) -> str | None:
    """Why declarations make an element's text invisible to a reader (colour is checked separately)."""
    if decls.get("display") == "none":
        return "display:none"
    if decls.get("visibility") in ("hidden", "collapse"):
        return "visibility:hidden"
    if decls.get("opacity", "").strip() in ("0", "0.0", "0%", ".0"):
        return "opacity:0"
    size = _length(decls.get("font-size", ""))
    if size is not None and (size[0] <= 0 or (size[1] in ("px", "pt") and size[0] < 2)):
        return "zero-size font"
    offsets = [decls.get(k, "") for k in ("left", "top", "right", "margin-left", "margin-top", "text-indent")]
    for value in offsets:
        length = _length(value)
        if length is not None and length[1] in ("px", "pt", "em", "rem") and length[0] <= -500 / (
                16 if length[1] in ("em", "rem") else 1):
            return "off-screen"
    if re.search(r"translate[xy]?\(\s*-\d{3,}", decls.get("transform", "")):
        return "off-screen"
    clip = decls.get("clip", "") + decls.get("clip-path", "")
    if re.search(r"rect\(\s*0(px)?[\s,]+0(px)?[\s,]+0(px)?[\s,]+0(px)?\s*\)|inset\(\s*(50|100)%", clip):
        return "clipped away"
    if decls.get("overflow") == "hidden":
        for dim in ("width", "height"):
            length = _length(decls.get(dim, ""))
            if length is not None and length[0] <= 1 and length[1] in ("px", "pt"):
                return "zero-size box"
    return None


def clean_html(data: bytes) -> tuple[bytes, dict[str, Any], tuple[str, ...]]:
    """Drop hidden elements from an HTML page; return (HTML for the loader, what was dropped, the page's links).
    Inline styles and simple <style> rules (tag, .class, #id) are read; no external stylesheet is fetched."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_decode_html(data))
    styled: dict[int, tuple[Any, dict[str, str]]] = {}
    rules = 0
    for block in tree.css("style"):
        for m in _RULE.finditer(block.text(deep=True) or ""):
            rules += 1
            if rules > _MAX_RULES:
                break
            decls = _decls(m.group(2))
            if not decls:
                continue
            for selector in m.group(1).split(","):
                if not _SIMPLE_SELECTOR.match(selector) or not selector.strip():
                    continue
                try:
                    nodes = tree.css(selector.strip())
                except Exception:  # a selector lexbor rejects
                    continue
                for node in nodes:
                    styled.setdefault(node.mem_id, (node, {}))[1].update(decls)
    for node in tree.css("[style]"):
        styled.setdefault(node.mem_id, (node, {}))[1].update(_decls(node.attributes.get("style") or ""))
    doomed: dict[int, tuple[Any, str]] = {}
    for node in tree.css("[hidden]"):
        doomed[node.mem_id] = (node, "hidden attribute")
    for mem_id, (node, decls) in styled.items():
        reason = hidden_reason(decls)
        if reason is None and "color" in decls:
            text_colour = _colour(decls["color"])
            if text_colour is not None and _close(text_colour, _effective_background(node, decls, styled)):
                reason = "text colour matches its background"
        if reason:
            doomed.setdefault(mem_id, (node, reason))
    elements, chars, reasons = 0, 0, set()
    for mem_id, (node, reason) in doomed.items():
        if _inside(node, doomed):
            continue
        elements += 1
        chars += len(" ".join((node.text(deep=True, separator=" ") or "").split()))
        reasons.add(reason)
    for node, _ in doomed.values():
        try:
            node.decompose()
        except Exception:  # removed already with a hidden ancestor
            pass
    links = tuple(a.attributes.get("href") or "" for a in tree.css("a[href]"))[:10000]
    hidden = {"elements": elements, "chars": chars, "reasons": sorted(reasons)} if elements else {}
    html = tree.html or ""
    return b"\xef\xbb\xbf" + html.encode("utf-8", errors="replace"), hidden, tuple(h for h in links if h)


def _close(a: tuple[int, int, int], b: tuple[int, int, int] | None) -> bool:
    return b is not None and all(abs(x - y) <= 16 for x, y in zip(a, b))


def _effective_background(node, decls: dict[str, str], styled) -> tuple[int, int, int]:
    own = _background(decls)
    if own is not None:
        return own
    parent, steps = node.parent, 0
    while parent is not None and steps < _MAX_ANCESTORS:
        entry = styled.get(parent.mem_id)
        if entry is not None:
            colour = _background(entry[1])
            if colour is not None:
                return colour
        parent, steps = parent.parent, steps + 1
    return _DEFAULT_BG


def _inside(node, doomed: dict[int, Any]) -> bool:
    parent, steps = node.parent, 0
    while parent is not None and steps < _MAX_ANCESTORS:
        if parent.mem_id in doomed:
            return True
        parent, steps = parent.parent, steps + 1
    return False


def _decode_html(data: bytes) -> str:
    """The loaders' order: BOM, <meta charset>, UTF-8, then cp1252."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    m = re.search(rb"""<meta[^>]+charset\s*=\s*["']?([\w-]+)""", data[:4096], re.I)
    for enc in ((m.group(1).decode("ascii", "replace") if m else None), "utf-8"):
        if enc:
            try:
                return data.decode(enc)
            except (UnicodeDecodeError, LookupError):
                pass
    return data.decode("cp1252", errors="replace")
