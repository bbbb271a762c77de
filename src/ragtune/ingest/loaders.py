"""Turn one file's bytes (Markdown, text, HTML, PDF, DOCX, Q&A CSV/JSONL) into a LoadedDocument
of heading-path Sections. Every failure is a one-line SourceError, never a traceback."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Mapping, TypeVar
from urllib.parse import unquote, urlsplit

from ragtune.errors import SourceError
from ragtune.types import LoadedDocument, Section

SUPPORTED_SUFFIXES = frozenset(
    {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx", ".csv", ".jsonl"}
)
_KIND_BY_SUFFIX = {
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html",
    ".pdf": "pdf", ".docx": "docx", ".csv": "csv", ".jsonl": "jsonl",
}
_MB = 1024 * 1024
_T = TypeVar("_T")


# -- public API

def hash_file(path: Path) -> str:
    """sha256 hex of a file's bytes, read in blocks (sync uses it to skip unchanged files)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise _os_error(exc) from exc


def load_file(path: Path, max_bytes: int) -> LoadedDocument:
    """Check the size, read the file and parse it with `load_bytes`."""
    path = Path(path)
    try:
        st = path.stat()
        if not path.is_file():
            raise SourceError("not a regular file")
        _check_size(st.st_size, max_bytes)
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise _os_error(exc) from exc
    _check_size(len(data), max_bytes)
    return load_bytes(data, str(path), st.st_mtime)


def load_bytes(data: bytes, path: str, mtime: float, kind: str | None = None) -> LoadedDocument:
    """Parse raw bytes; the format comes from `path`'s suffix (a file path or URL) unless `kind`
    ("markdown", "text", "html", "pdf", "docx", "csv", "jsonl") is given."""
    kind = kind or _detect_kind(path, data)
    if kind not in _PARSERS:
        raise SourceError(f"unsupported format {kind!r}")
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        raise SourceError("empty file")
    stem = _stem(path)
    try:
        title, sections, metadata = _PARSERS[kind](data, stem)
    except (SourceError, MemoryError):  # KeyboardInterrupt/SystemExit are not Exceptions
        raise
    except Exception as exc:  # a parser bug or a file it chokes on: one line, not a traceback
        raise SourceError(f"could not parse {kind}: {_short(exc)}") from exc
    sections = tuple(s for s in sections if s.text.strip())
    if not sections:
        raise SourceError("no text found")
    return LoadedDocument(path=path, title=(title or "").strip() or stem, sections=sections,
                          content_hash=hashlib.sha256(data).hexdigest(), mtime=float(mtime),
                          metadata={"format": kind, **metadata})


# -- helpers

def _os_error(exc: OSError) -> SourceError:
    if isinstance(exc, FileNotFoundError):
        return SourceError("file not found")
    return SourceError(f"cannot read file: {exc.strerror or exc}")


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        limit = f"{max_bytes / _MB:.1f} MB limit (max_file_mb)"
        raise SourceError(f"file is {size / _MB:.1f} MB, over the {limit}")


def _short(exc: BaseException, limit: int = 200) -> str:
    raw = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(raw.split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _stem(path: str) -> str:
    if "://" in path:
        parts = urlsplit(path)
        return PurePosixPath(unquote(parts.path)).stem or parts.netloc or path
    return Path(path).stem or path


def _detect_kind(path: str, data: bytes) -> str:
    is_url = "://" in path
    name = unquote(urlsplit(path).path) if is_url else path.replace("\\", "/")
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in _KIND_BY_SUFFIX:
        return _KIND_BY_SUFFIX[suffix]
    if is_url:  # a web page without a file suffix: sniff the content
        head = data[:1024].lstrip().lower()
        return "pdf" if head.startswith(b"%pdf") else "html" if head.startswith(b"<") else "text"
    supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
    raise SourceError(f"unsupported file type {suffix or '(none)'}; supported: {supported}")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")


def _decode_text(data: bytes) -> str:
    """UTF-8 (BOM allowed; UTF-16 with a BOM), else cp1252 when the bytes still look like text."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            raise SourceError("not a text file (binary content)") from None
    if b"\x00" in data[:65536]:
        raise SourceError("not a text file (binary content)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    sample = text[:65536]
    if sample and len(_CONTROL.findall(sample)) / len(sample) > 0.05:
        raise SourceError("not a text file (binary content)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _clean_ws(text: str) -> str:
    """Strip trailing spaces and collapse runs of blank lines into one."""
    lines = [ln.rstrip() for ln in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


class _SectionBuilder:
    """Collects text under a moving heading path."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.parts: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))

    def add(self, *texts: str) -> None:
        self.parts.extend(texts)

    def flush(self) -> None:
        text = _clean_ws("\n".join(self.parts))
        if text.strip():
            self.sections.append(Section(tuple(h for _, h in self.stack), text))
        self.parts = []

    def done(self) -> list[Section]:
        self.flush()
        return self.sections


# -- markdown
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_SHORTCODE = re.compile(r"\{\{[<%].*?[>%]\}\}")
_IMAGE = re.compile(r"!\[([^\]]*)\]\((?:[^()]|\([^()]*\))*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()]|\([^()]*\))*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+.*$")
_HEADING_ID = re.compile(r"\s*\{#[^}]*\}\s*$")
_COMMENT = re.compile(r"<!--.*?-->")


def _md_inline(line: str) -> str:
    line = _SHORTCODE.sub("", line)
    line = _IMAGE.sub(r"\1", line)
    line = _LINK.sub(r"\1", line)
    return _REF_LINK.sub(r"\1", line)


def _md_heading_text(raw: str) -> str:
    text = _HEADING_ID.sub("", _md_inline(raw))
    text = text.replace("`", "").replace("**", "")
    return " ".join(text.split())


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    m = re.match(r"\A(---|\+\+\+)[ \t]*\n(.*?)\n\1[ \t]*(?:\n|\Z)", text, re.S)
    if not m:
        return {}, text
    meta = {}
    for ln in m.group(2).split("\n"):
        kv = re.match(r"^([A-Za-z_][\w-]*)\s*[:=]\s*(.*?)\s*$", ln)
        if kv and kv.group(2) and kv.group(2) not in ("|", ">", "|-", ">-", "|+", ">+"):
            value = kv.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            meta[kv.group(1).lower()] = value
    return meta, text[m.end():]


def _parse_markdown(data: bytes, stem: str) -> tuple[str, list[Section], dict]:
    meta, body = _front_matter(_decode_text(data))
    title = meta.get("title", "")
    out = _SectionBuilder()
    fence: str | None = None
    in_comment = False
    para_lines = 0  # lines in the current paragraph (a setext underline needs exactly one)
    for line in body.split("\n"):
        if fence is not None:  # inside a code block: keep verbatim
            out.add(line)
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.lstrip(fence[0]):
                fence = None
            continue
        m = _FENCE.match(line)
        if m and not (m.group(1)[0] == "`" and "`" in line.strip()[len(m.group(1)):]):
            fence = m.group(1)
            out.add(line)
            para_lines = 0
            continue
        if in_comment:
            if "-->" not in line:
                continue
            line, in_comment = line.split("-->", 1)[1], False
        line = _COMMENT.sub("", line)
        if "<!--" in line:
            line, in_comment = line.split("<!--", 1)[0], True
        atx, setext = _ATX.match(line), _SETEXT.match(line)
        if setext and not (para_lines == 1 and (setext.group(1)[0] == "=" or len(line.strip()) > 1)):
            setext = None  # a thematic break, not an underline
        if atx or setext:
            if atx:
                level, text = len(atx.group(1)), _md_heading_text(atx.group(2) or "")
            else:
                level, text = (1 if line.strip()[0] == "=" else 2), _md_heading_text(out.parts.pop())
            if text:
                title = title or (text if level == 1 else "")
                out.heading(level, text)
            para_lines = 0
            continue
        if _LINK_DEF.match(line):
            continue
        had_text = bool(line.strip())
        line = _md_inline(line)
        if had_text and not line.strip():  # a line that was only shortcodes: a paragraph break
            out.add("")
            para_lines = 0
            continue
        out.add(line)
        para_lines = para_lines + 1 if line.strip() else 0
    return title, out.done(), {}


# -- text

def _parse_text(data: bytes, stem: str) -> tuple[str, list[Section], dict]:
    return stem, [Section((), _clean_ws(_decode_text(data)))], {}


# -- html
_DROP_TAGS = ("script", "style", "nav", "aside", "form", "noscript", "template", "iframe",
              "svg", "canvas", "button", "select", "dialog")
_BLOCK = {"p", "div", "section", "article", "main", "ul", "ol", "dl", "dt", "dd", "li", "table",
          "thead", "tbody", "tfoot", "tr", "blockquote", "figure", "figcaption", "details",
          "summary", "address", "hr", "body", "header", "footer", "caption"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def _decode_html(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    m = re.search(rb"""<meta[^>]+charset\s*=\s*["']?([\w-]+)""", data[:4096], re.I)
    for enc in (m.group(1).decode("ascii") if m else None, "utf-8"):
        if enc:
            try:
                return data.decode(enc)
            except (UnicodeDecodeError, LookupError):
                pass
    return data.decode("cp1252", errors="replace")


def _html_drop(tree) -> None:
    doomed = []
    for sel in _DROP_TAGS + ("[hidden]", "[role=navigation]", "[aria-hidden=true]", "[style]"):
        for node in tree.css(sel):
            if sel == "[style]" and not _HIDDEN_STYLE.search(node.attributes.get("style") or ""):
                continue
            doomed.append(node)
    # site-wide header/footer go; an article's own header (often holding its h1) stays
    for node in tree.css("header, footer, [role=banner], [role=contentinfo]"):
        parent = node.parent
        while parent is not None and parent.tag not in ("article", "main"):
            parent = parent.parent
        if parent is None:
            doomed.append(node)
    for node in doomed:
        try:
            node.decompose()
        except Exception:  # already removed with an ancestor
            pass


def _node_text(node) -> str:
    return " ".join((node.text(deep=True, separator=" ") or "").split())


def _parse_html(data: bytes, stem: str) -> tuple[str, list[Section], dict]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_decode_html(data))
    title_node = tree.css_first("head > title")
    title = _node_text(title_node) if title_node is not None else ""
    _html_drop(tree)
    root = tree.css_first("main") or tree.css_first("[role=main]") or tree.css_first("article")
    root = root or tree.body or tree.root
    if root is None:
        raise SourceError("no text found")
    if not title:
        h1 = tree.css_first("h1")
        title = _node_text(h1) if h1 is not None else ""

    out = _SectionBuilder()
    line: list[str] = []

    def end_line() -> None:  # "\n" in `line` comes only from <br>
        text = "\n".join(" ".join(part.split()) for part in "".join(line).split("\n")).strip()
        if text:
            out.add(text, "")
        line.clear()

    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:  # explicit stack: deep markup must not hit the recursion limit
        node, leaving = stack.pop()
        tag = node.tag
        if leaving:
            if tag in _BLOCK:
                end_line()
            continue
        if tag == "-text":
            line.append((node.text(deep=False) or "").replace("\n", " "))
            continue
        if not tag or tag.startswith(("-", "_", "!")):
            continue  # comments, doctype
        if tag in _HEADINGS:
            end_line()
            text = _node_text(node)
            if text:
                out.heading(_HEADINGS[tag], text)
            continue
        if tag == "pre":
            end_line()
            out.add((node.text(deep=True) or "").strip("\n"), "")
            continue
        if tag == "br":
            line.append("\n")
            continue
        if tag in ("td", "th") and "".join(line).strip():
            line.append(" | ")
        elif tag == "li":
            end_line()
            line.append("- ")
        elif tag in _BLOCK:
            end_line()
        elif tag == "img":
            alt = (node.attributes.get("alt") or "").strip()
            if alt:
                line.append(f" {alt} ")
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(list(node.iter(include_text=True))))
    end_line()
    return title, out.done(), {}


# -- pdf

def _parse_pdf(data: bytes, stem: str) -> tuple[str, list[Section], dict]:
    import logging

    import pypdf

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns loudly about odd files
    if b"%PDF" not in data[:1024]:
        raise SourceError("not a valid PDF (no %PDF header)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception as exc:
                raise SourceError(f"encrypted PDF (cannot decrypt: {_short(exc)})") from exc
            if not ok:
                raise SourceError("encrypted PDF (password required)")
        pages = list(reader.pages)
    except SourceError:
        raise
    except Exception as exc:  # PdfReadError and whatever a broken xref makes pypdf raise
        raise SourceError(f"not a valid PDF ({_short(exc)})") from exc
    sections = []
    for number, page in enumerate(pages, 1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:
            raise SourceError(f"could not read PDF page {number} ({_short(exc)})") from exc
        text = _clean_ws(text.replace("\r\n", "\n").replace("\x00", ""))
        if text.strip():
            sections.append(Section((f"Page {number}",), text))
    if not sections:
        raise SourceError("no text found (scanned PDF?)")
    try:
        title = reader.metadata.title if reader.metadata is not None else ""
    except Exception:  # broken metadata is no reason to reject readable pages
        title = ""
    return " ".join(title.split()) if isinstance(title, str) else "", sections, {"pages": len(pages)}


# -- docx
_DOCX_HEADING = re.compile(r"^heading\s*(\d)$", re.I)


def _docx_table_text(table) -> str:
    rows = []
    for row in table.rows:  # keyed by the cell element: a merged cell repeats across its span
        cells = {cell._tc: " ".join(cell.text.split()) for cell in row.cells}
        rows.append(" | ".join(text for text in cells.values() if text))
    return "\n".join(row for row in rows if row)


def _parse_docx(data: bytes, stem: str) -> tuple[str, list[Section], dict]:
    import docx
    from docx.table import Table

    try:  # zip, package and XML errors alike
        document = docx.Document(io.BytesIO(data))
        title = document.core_properties.title or ""
    except Exception as exc:
        raise SourceError(f"not a valid DOCX ({_short(exc)})") from exc
    out = _SectionBuilder()
    first_h1 = ""
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            out.add(_docx_table_text(block), "")
            continue
        text = block.text.strip()
        if not text:
            continue
        style = ((block.style.name if block.style is not None else "") or "").strip()
        m = _DOCX_HEADING.match(style)
        if style.lower() == "title":
            title = title or " ".join(text.split())
            continue
        if m:
            heading = " ".join(text.split())
            first_h1 = first_h1 or (heading if m.group(1) == "1" else "")
            out.heading(max(1, int(m.group(1))), heading)
            continue
        out.add(text, "")
    return title or first_h1, out.done(), {}


# -- Q&A csv / jsonl (the readers here are shared with fine-tuning's curated files and the question benchmarks)
QUESTION_KEYS = ("question", "q", "prompt")  # a Q&A file's question column or key, first found wins
ANSWER_KEYS = ("answer", "a", "response")
_NEED = "need 'question' and 'answer' (or q/a, prompt/response)"


def qa_keys(keys: Mapping[str, _T]) -> tuple[_T | None, _T | None]:
    """The question and answer entries of `keys` (lower-cased column names or JSON keys mapped to a column
    index or the original key); None for one that is missing."""
    return _pick(keys, QUESTION_KEYS), _pick(keys, ANSWER_KEYS)


def _pick(keys: Mapping[str, _T], names: tuple[str, ...]) -> _T | None:
    return next((keys[name] for name in names if name in keys), None)


class JsonlError(ValueError):
    """A line of a JSONL text that is not valid JSON: its 1-based number and the parser's message. Each reader
    words it for its own users (SourceError when indexing, InputError for a file given on the command line)."""

    def __init__(self, line: int, msg: str) -> None:
        super().__init__(f"line {line}: {msg}")
        self.line, self.msg = line, msg


def jsonl_rows(text: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of JSONL text. Lines are split at "\n" only: a JSON
    string may hold U+2028 and other characters that str.splitlines breaks at. JsonlError at a line that is
    not JSON, when the reader reaches it (the rows before it are yielded first)."""
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JsonlError(number, exc.msg) from exc
        yield number, value


def _qa_section(question: str, answer: str) -> Section | None:
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        return None
    return Section((" ".join(question.split()),), f"Q: {question}\nA: {answer}")


def _parse_csv(data: bytes, stem: str) -> tuple[str, list[Section], dict]:
    text = _decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError("empty file") from None
    except csv.Error as exc:
        raise SourceError(f"malformed CSV on line 1: {_short(exc)}") from exc
    keys = {h.strip().lower(): i for i, h in enumerate(header) if h.strip()}
    qi, ai = qa_keys(keys)
    if qi is None or ai is None:
        found = ", ".join(repr(h.strip()) for h in header if h.strip()) or "none"
        raise SourceError(f"missing question/answer columns: found {found}; {_NEED}")
    sections, skipped = [], 0
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            get = lambda i: row[i] if i < len(row) else ""  # noqa: E731
            section = _qa_section(get(qi), get(ai))
            skipped += section is None
            sections += [section] if section else []
    except csv.Error as exc:
        raise SourceError(f"malformed CSV on line {reader.line_num}: {_short(exc)}") from exc
    if not sections:
        raise SourceError("no question/answer pairs found")
    return stem, sections, {"pairs": len(sections), "skipped_rows": skipped}


def _parse_jsonl(data: bytes, stem: str) -> tuple[str, list[Section], dict]:
    sections, skipped = [], 0
    try:
        for number, obj in jsonl_rows(_decode_text(data)):
            if not isinstance(obj, dict):
                raise SourceError(f"line {number} is not a JSON object")
            qk, ak = qa_keys({str(k).strip().lower(): k for k in obj})
            if qk is None or ak is None:
                found = ", ".join(repr(str(k)) for k in obj) or "none"
                raise SourceError(f"line {number} lacks question/answer keys: found {found}; {_NEED}")
            q, a = obj[qk], obj[ak]
            section = _qa_section("" if q is None else str(q), "" if a is None else str(a))
            skipped += section is None
            sections += [section] if section else []
    except JsonlError as exc:
        raise SourceError(f"malformed JSON on line {exc.line}: {exc.msg}") from exc
    if not sections:
        raise SourceError("no question/answer pairs found")
    return stem, sections, {"pairs": len(sections), "skipped_rows": skipped}


_PARSERS: dict[str, Callable[[bytes, str], tuple[str, list[Section], dict]]] = {
    "markdown": _parse_markdown, "text": _parse_text, "html": _parse_html, "pdf": _parse_pdf,
    "docx": _parse_docx, "csv": _parse_csv, "jsonl": _parse_jsonl,
}
