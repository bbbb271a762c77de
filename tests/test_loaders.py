"""Loaders: each format's happy path, each kind of bad input as a one-line SourceError,
and the real Poetry docs."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from ragtune.errors import SourceError
from ragtune.ingest.loaders import (SUPPORTED_SUFFIXES, JsonlError, hash_file, jsonl_rows, load_bytes, load_file,
                                   qa_keys)

MB = 1024 * 1024
POETRY_DOCS = Path("/work/shared/datasets/poetry-docs/2.4.1/docs")


def _load(tmp_path: Path, name: str, data: bytes | str):
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return load_file(path, 50 * MB)


def _error(tmp_path: Path, name: str, data: bytes | str) -> str:
    with pytest.raises(SourceError) as info:
        _load(tmp_path, name, data)
    msg = str(info.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def _full_text(doc) -> str:
    return "\n".join(s.text for s in doc.sections)


def _pdf_string(text: str) -> bytes:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF (Helvetica text, one content stream per page) with a correct xref."""
    n = len(pages)
    font_id = 3 + 2 * n
    objs: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{3 + 2 * i} 0 R".encode() for i in range(n))
        + f"] /Count {n} >>".encode(),
    ]
    for i, text in enumerate(pages):
        content_id = 4 + 2 * i
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        ops = b"BT /F1 12 Tf 72 720 Td 14 TL "
        for line in text.split("\n") if text else []:
            ops += b"(" + _pdf_string(line) + b") Tj T* "
        ops += b"ET"
        objs.append(b"<< /Length %d >>\nstream\n" % len(ops) + ops + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info_id = None
    if title is not None:
        objs.append(b"<< /Title (" + _pdf_string(title) + b") >>")
        info_id = len(objs)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer = f"<< /Size {len(objs) + 1} /Root 1 0 R"
    if info_id:
        trailer += f" /Info {info_id} 0 R"
    out += f"trailer\n{trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = ""
    document.add_heading("Employee Handbook", 0)
    document.add_paragraph("Welcome to the company.")
    document.add_heading("Leave", 1)
    document.add_paragraph("Everyone gets 25 days of paid leave.")
    document.add_heading("Sick leave", 2)
    document.add_paragraph("Tell your manager before 10am.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Plan"
    table.cell(0, 1).text = "Days"
    table.cell(1, 0).text = "Parental"
    table.cell(1, 1).text = "120"
    document.add_heading("Expenses", 1)
    document.add_paragraph("Submit receipts within 30 days.")
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- happy paths


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == {
        ".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx", ".csv", ".jsonl"
    }


def test_markdown_front_matter_headings_and_code(tmp_path):
    md = """---
title: "Refund policy"
draft: false
---

# Refunds

Intro paragraph with a [link](https://example.com/x "tip") and {{< relref "docs" >}} shortcode.

{{% note %}}
Noted text.
{{% /note %}}

## Eligibility

Within 30 days.

```bash
# not a heading
echo hi
```

~~~
## also not a heading
~~~

### Digital goods

No refunds on downloads.

## Process

Email support.

Setext heading
--------------

Under setext.
"""
    doc = _load(tmp_path, "refunds.md", md)
    assert doc.title == "Refund policy"
    headings = [s.heading for s in doc.sections]
    assert headings == [
        ("Refunds",),
        ("Refunds", "Eligibility"),
        ("Refunds", "Eligibility", "Digital goods"),
        ("Refunds", "Process"),
        ("Refunds", "Setext heading"),
    ]
    text = _full_text(doc)
    assert "# not a heading" in text and "## also not a heading" in text and "echo hi" in text
    assert "with a link and" in text
    assert "{{" not in text and "https://example.com" not in text and "title:" not in text
    assert "Noted text." in text
    assert doc.content_hash == hashlib.sha256(md.encode()).hexdigest()
    assert doc.metadata["format"] == "markdown"


def test_markdown_title_falls_back_to_h1_then_stem(tmp_path):
    assert _load(tmp_path, "a.md", "# Getting started\n\nHello.\n").title == "Getting started"
    doc = _load(tmp_path, "notes.markdown", "Just text.\n\n## Sub\n\nMore.\n")
    assert doc.title == "notes"
    assert [s.heading for s in doc.sections] == [(), ("Sub",)]


def test_text_utf8_bom_and_cp1252(tmp_path):
    doc = _load(tmp_path, "faq.txt", "\ufeffFirst paragraph.\r\n\r\nSecond — paragraph.\n".encode())
    assert doc.title == "faq"
    assert len(doc.sections) == 1 and doc.sections[0].heading == ()
    assert doc.sections[0].text == "First paragraph.\n\nSecond — paragraph."
    doc = _load(tmp_path, "old.txt", "Caf\u00e9 na\u00efve \u2013 r\u00e9sum\u00e9".encode("cp1252"))
    assert doc.sections[0].text == "Café naïve – résumé"
    doc = _load(tmp_path, "wide.txt", "Hello wide world.".encode("utf-16"))
    assert doc.sections[0].text == "Hello wide world."


def test_html_main_content_without_chrome(tmp_path):
    html = """<!doctype html><html><head><title>Pricing | Acme</title>
<style>.x{color:red}</style><script>var secret = "SCRIPTTEXT";</script></head>
<body>
<header><a href="/">HEADERTEXT</a></header>
<nav><ul><li>NAVTEXT</li></ul></nav>
<div role="navigation">ROLENAV</div>
<main>
  <h1>Pricing</h1>
  <p>Plans start at <b>$10</b> a month.</p>
  <div hidden>HIDDENTEXT</div>
  <div style="display: none">INVISIBLE</div>
  <h2>Enterprise</h2>
  <p>Contact sales.</p>
  <ul><li>SSO</li><li>Audit logs</li></ul>
  <h3>Discounts</h3>
  <table><tr><th>Seats</th><th>Off</th></tr><tr><td>100</td><td>10%</td></tr></table>
  <pre>line one
  line two</pre>
  <form><input name="q"><label>FORMTEXT</label></form>
</main>
<aside>ASIDETEXT</aside>
<footer>FOOTERTEXT</footer>
<noscript>NOSCRIPTTEXT</noscript>
</body></html>"""
    doc = _load(tmp_path, "pricing.html", html)
    assert doc.title == "Pricing | Acme"
    text = _full_text(doc)
    for bad in ("SCRIPTTEXT", "HEADERTEXT", "NAVTEXT", "ROLENAV", "HIDDENTEXT", "INVISIBLE",
                "FORMTEXT", "ASIDETEXT", "FOOTERTEXT", "NOSCRIPTTEXT", "color:red"):
        assert bad not in text, bad
    assert "Plans start at $10 a month." in text
    assert [s.heading for s in doc.sections] == [
        ("Pricing",), ("Pricing", "Enterprise"), ("Pricing", "Enterprise", "Discounts"),
    ]
    assert "- SSO" in text and "Seats | Off" in text and "line one\n  line two" in text


def test_html_without_main_uses_body_and_h1_title(tmp_path):
    html = (b"<html><body><svg><title>ICON</title></svg><nav>MENU</nav><h1>Hello</h1>"
            b"<p>World.</p><p>Line one<br>Line  two</p></body></html>")
    doc = _load(tmp_path, "page.htm", html)
    assert doc.title == "Hello"
    assert _full_text(doc) == "World.\n\nLine one\nLine two"
    assert "MENU" not in _full_text(doc)


def test_article_header_keeps_its_h1(tmp_path):
    html = b"""<html><body><header>SITE</header><article><header><h1>Post</h1></header>
<p>Body.</p></article></body></html>"""
    doc = _load(tmp_path, "post.html", html)
    assert doc.sections[0].heading == ("Post",)
    assert "SITE" not in _full_text(doc)


def test_load_bytes_from_url(tmp_path):
    doc = load_bytes(b"<html><head><title>Docs</title></head><body><p>Hi there.</p></body></html>",
                     "https://example.com/help/", 0.0)
    assert doc.title == "Docs" and doc.path == "https://example.com/help/"
    assert doc.metadata["format"] == "html"


def test_pdf_pages_and_title(tmp_path):
    data = make_pdf(["Refunds take five days.\nSecond line.", "", "Shipping is free."],
                    title="Support Guide")
    doc = _load(tmp_path, "guide.pdf", data)
    assert doc.title == "Support Guide"
    assert [s.heading for s in doc.sections] == [("Page 1",), ("Page 3",)]
    assert "Refunds take five days." in doc.sections[0].text
    assert "Shipping is free." in doc.sections[1].text
    assert doc.metadata["pages"] == 3
    assert _load(tmp_path, "manual.pdf", make_pdf(["Hello."])).title == "manual"


def test_docx_headings_and_tables(tmp_path):
    doc = _load(tmp_path, "handbook.docx", make_docx())
    assert doc.title == "Employee Handbook"
    assert [s.heading for s in doc.sections] == [
        (), ("Leave",), ("Leave", "Sick leave"), ("Expenses",),
    ]
    sick = doc.sections[2].text
    assert "Tell your manager" in sick and "Plan | Days" in sick and "Parental | 120" in sick


def test_csv_qa_pairs(tmp_path):
    data = 'Question,Answer,id\n"How do I reset my password?","Use the link, then log in.",1\n' \
           "Where are you?,Berlin,2\n,,\n"
    doc = _load(tmp_path, "faq.csv", data)
    assert doc.title == "faq"
    assert [s.heading for s in doc.sections] == [("How do I reset my password?",), ("Where are you?",)]
    assert doc.sections[0].text == "Q: How do I reset my password?\nA: Use the link, then log in."


def test_csv_semicolon_and_q_a_columns(tmp_path):
    doc = _load(tmp_path, "faq2.csv", "q;a\nOpen on Sunday?;No\nOpen on Monday?;Yes\n")
    assert [s.text for s in doc.sections] == ["Q: Open on Sunday?\nA: No", "Q: Open on Monday?\nA: Yes"]


def test_jsonl_qa_pairs(tmp_path):
    lines = [{"Prompt": "What is ragtune?", "response": "A chatbot builder."},
             {"question": "Is it free?", "answer": "Yes.", "tags": ["x"]}]
    data = "\n".join(json.dumps(x) for x in lines) + "\n\n"
    doc = _load(tmp_path, "qa.jsonl", data)
    assert [s.heading for s in doc.sections] == [("What is ragtune?",), ("Is it free?",)]
    assert doc.sections[1].text == "Q: Is it free?\nA: Yes."


def test_hash_file_matches_content_hash(tmp_path):
    path = tmp_path / "x.md"
    path.write_text("# T\n\nbody\n")
    assert hash_file(path) == load_file(path, MB).content_hash
    assert load_file(path, MB).mtime == os.stat(path).st_mtime


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["e.md", "e.txt", "e.pdf", "e.docx", "e.csv", "e.jsonl", "e.html"])
@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n"])
def test_empty_files(tmp_path, name, data):
    assert _error(tmp_path, name, data) == "empty file"


def test_corrupt_pdf(tmp_path):
    garbage = bytes((i * 97 + 13) % 256 for i in range(4096))
    assert "not a valid PDF" in _error(tmp_path, "bad.pdf", garbage)
    msg = _error(tmp_path, "bad2.pdf", b"%PDF-1.4\n" + garbage)
    assert "PDF" in msg


def test_truncated_pdf(tmp_path):
    data = make_pdf(["Some text here."])
    msg = _error(tmp_path, "cut.pdf", data[: len(data) // 2])
    assert "PDF" in msg or "no text" in msg


def test_pdf_without_text(tmp_path):
    assert _error(tmp_path, "scan.pdf", make_pdf([""])) == "no text found (scanned PDF?)"


def test_encrypted_pdf(tmp_path):
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf(["Secret."]))))
    try:
        writer.encrypt(user_password="pw", owner_password="owner", algorithm="RC4-128")
    except Exception as exc:  # no crypto provider for this algorithm
        pytest.skip(f"cannot encrypt: {exc}")
    buf = io.BytesIO()
    writer.write(buf)
    assert "encrypted PDF" in _error(tmp_path, "locked.pdf", buf.getvalue())


def test_truncated_docx(tmp_path):
    data = make_docx()
    assert _error(tmp_path, "cut.docx", data[: len(data) // 2]).startswith("not a valid DOCX (")


def test_docx_that_is_not_a_zip(tmp_path):
    assert _error(tmp_path, "fake.docx", b"hello, this is plain text").startswith("not a valid DOCX (")


def test_binary_text_file(tmp_path):
    assert _error(tmp_path, "bin.txt", os.urandom(2048) + b"\x00") == "not a text file (binary content)"
    no_nul = bytes(range(1, 32)) * 40 + b"abc"
    assert _error(tmp_path, "ctl.txt", no_nul) == "not a text file (binary content)"
    assert _error(tmp_path, "bin.md", b"\x00\x01\x02abc") == "not a text file (binary content)"



def test_jsonl_rows_is_the_one_jsonl_reader():
    """Shared by Q&A loading, fine-tuning's curated files and the question benchmarks: line numbers count blank
    lines, a line ends at "\n" only (U+2028 inside a JSON string is not a line break), a bad line names itself."""
    text = '{"q": "a\u2028b"}\r\n\n  \n[1]\n{"q": 2}'
    assert list(jsonl_rows(text)) == [(1, {"q": "a\u2028b"}), (4, [1]), (5, {"q": 2})]
    rows = jsonl_rows('{"ok": 1}\n\n{broken\n')
    assert next(rows) == (1, {"ok": 1})
    with pytest.raises(JsonlError) as err:
        next(rows)
    assert err.value.line == 3 and err.value.msg and str(err.value).startswith("line 3: ")
    assert qa_keys({"prompt": "P", "q": "Q", "response": "R"}) == ("Q", "R") and qa_keys({"x": 1}) == (None, None)

def test_malformed_jsonl(tmp_path):
    data = '{"question": "a", "answer": "b"}\n{"question": "c", "answer": \n'
    msg = _error(tmp_path, "bad.jsonl", data)
    assert msg.startswith("malformed JSON on line 2")


def test_jsonl_missing_keys_and_non_objects(tmp_path):
    msg = _error(tmp_path, "k.jsonl", '{"question": "a", "answer": "b"}\n{"title": "x", "body": "y"}\n')
    assert "line 2" in msg and "'title'" in msg and "'question'" in msg
    assert "line 1 is not a JSON object" in _error(tmp_path, "l.jsonl", "[1, 2]\n")


def test_csv_without_question_column(tmp_path):
    msg = _error(tmp_path, "bad.csv", "title,answer\nx,y\n")
    assert "found 'title', 'answer'" in msg and "'question'" in msg


def test_csv_with_no_pairs(tmp_path):
    assert _error(tmp_path, "none.csv", "question,answer\n,\n") == "no question/answer pairs found"


def test_too_large_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        f.truncate(200 * MB)  # sparse: costs no disk
    with pytest.raises(SourceError) as info:
        load_file(path, 50 * MB)
    assert str(info.value) == "file is 200.0 MB, over the 50.0 MB limit (max_file_mb)"


def test_unsupported_and_missing(tmp_path):
    msg = _error(tmp_path, "image.png", b"\x89PNG....")
    assert msg.startswith("unsupported file type .png")
    with pytest.raises(SourceError, match="^file not found$"):
        load_file(tmp_path / "nope.md", MB)
    with pytest.raises(SourceError, match="^file not found$"):
        hash_file(tmp_path / "nope.md")
    with pytest.raises(SourceError, match="not a regular file"):
        load_file(tmp_path, MB)


def test_parser_crash_becomes_source_error(tmp_path, monkeypatch):
    from ragtune.ingest import loaders

    def boom(data, stem):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setitem(loaders._PARSERS, "markdown", boom)
    assert _error(tmp_path, "x.md", "# hi\n") == "could not parse markdown: kaboom second line"


def test_memory_error_is_not_swallowed(tmp_path, monkeypatch):
    from ragtune.ingest import loaders

    def boom(data, stem):
        raise MemoryError

    monkeypatch.setitem(loaders._PARSERS, "markdown", boom)
    with pytest.raises(MemoryError):
        _load(tmp_path, "x.md", "# hi\n")


# ----------------------------------------------------------------------------- real docs


@pytest.mark.skipif(not POETRY_DOCS.is_dir(), reason="Poetry docs dataset not present")
def test_real_poetry_docs_load_with_heading_paths():
    files = sorted(POETRY_DOCS.glob("*.md"))
    assert len(files) >= 10
    for path in files:
        doc = load_file(path, 50 * MB)
        assert doc.title and doc.title != path.stem, path  # every page has a front-matter title
        assert len(doc.sections) >= 2 or path.name == "community.md", path  # one "## Badge"
        assert all(s.heading and s.heading[0] == doc.sections[0].heading[0] for s in doc.sections), path
        text = _full_text(doc)
        assert "{{<" not in text and "{{%" not in text, path
        assert not text.startswith("---"), path
    basic = load_file(POETRY_DOCS / "basic-usage.md", 50 * MB)
    assert basic.title == "Basic usage"
    headings = {s.heading for s in basic.sections}
    assert ("Basic usage", "Project setup") in headings
    assert any(len(h) >= 3 for h in headings)
    assert "poetry new poetry-demo" in _full_text(basic)
    assert "refer to the Introduction chapter" in _full_text(basic)
