"""The Docling parser on real documents: every supported format, the ways
documents fail (encrypted, damaged, unsupported, empty), and the isolation of
the worker process (timeouts, crashes, memory bombs)."""

from __future__ import annotations

import faulthandler
import io
import time
import zipfile
from pathlib import Path

import pytest

from doclane.functions.adapters.docling_parser import DoclingParser, decode_text, detect_format
from doclane.functions.errors import ParseError
from doclane.functions.ports import ParsedDocument

DOCS = Path(__file__).parent.parent.parent / "fixtures" / "docs"


def read(name: str) -> bytes:
    return (DOCS / name).read_bytes()


@pytest.fixture(scope="module")
def parser():
    with DoclingParser(isolate=False) as p:
        yield p


@pytest.fixture(scope="module")
def isolated():
    with DoclingParser(timeout=20) as p:
        yield p


# --------------------------------------------------------------------------- good documents
@pytest.mark.parametrize("name, expected", [
    ("simple.docx", ["These are a few of my favorite things", "DOYLESTOWN, PA 18901"]),
    ("fake-power-point.pptx", ["Adding a Bullet Slide", "Here is some text in a text box!"]),
    ("stanley-cups.xlsx", ["Maple Leafs", "TOR", "13"]),
    ("fake-html.html", ["My First Heading", "Row 2, Cell 1"]),
    ("fake-text-utf-16.txt", ["This is a test document to use for unit tests.", "Doylestown, PA 18901"]),
    ("minimal-document.pdf", ["Lorem ipsum dolor sit amet", "sanctus est Lorem ipsum"]),
    ("fake-memo.pdf", ["May 5, 2023", "20,000 bottles of water", "January 23"]),
])
def test_formats_parse_to_text_markdown_and_docling(parser, name, expected):
    doc = parser.parse(read(name), name)
    for phrase in expected:
        assert phrase in doc.text
    assert expected[0] in doc.markdown
    assert doc.docling and doc.docling["name"]
    assert "\x00" not in doc.text


def test_pdf_reports_pages_and_metadata_title(parser):
    doc = parser.parse(read("fake-memo.pdf"), "memo.pdf")
    assert doc.pages == 1
    assert doc.title == "fake-memo"


def test_email_headers_go_to_meta_and_body_prefers_plain_text(parser):
    doc = parser.parse(read("fake-email-attachment.eml"), "mail.eml")
    assert doc.meta["subject"] == "Fake email with attachment"
    assert doc.meta["from"] == "Mallori Harrell <mallori@unstructured.io>"
    assert doc.meta["date"] == "Fri, 23 Dec 2022 12:08:48 -0600"
    assert doc.meta["attachments"] == ["fake-attachment.txt"]
    assert doc.title == "Fake email with attachment"
    assert "Lots of whitespace" in doc.text
    assert "<div" not in doc.text and "=3D" not in doc.text  # not the HTML alternative
    assert "fake-attachment.txt" in doc.text


def test_html_only_email_is_turned_into_text(parser):
    mail = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Offer\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b"<html><body><p>Total due: <b>1.234,50 EUR</b></p></body></html>\r\n")
    doc = parser.parse(mail, "offer", "message/rfc822")
    assert "Total due:" in doc.text and "1.234,50 EUR" in doc.text
    assert "<b>" not in doc.text


def test_plain_text_keeps_markup_characters_literal(parser):
    doc = parser.parse("# not a heading\n\n* 3 × 4 = 12 €\n".encode("utf-8"), "notes.txt")
    assert "# not a heading" in doc.text
    assert "12 €" in doc.text


def test_parsed_document_survives_the_json_round_trip(parser):
    doc = parser.parse(read("stanley-cups.xlsx"), "cups.xlsx")
    assert ParsedDocument.from_json(doc.to_json()) == doc


@pytest.mark.parametrize("data, encoding", [
    ("Grüße aus Köln".encode("utf-16"), "BOM UTF-16"),
    ("Grüße aus Köln".encode("utf-32"), "BOM UTF-32"),
    ("Grüße aus Köln".encode("utf-16-le"), "BOM-less UTF-16 LE"),
    ("Grüße aus Köln".encode("utf-16-be"), "BOM-less UTF-16 BE"),
    ("Grüße aus Köln".encode("utf-8-sig"), "UTF-8 with BOM"),
])
def test_text_encodings_are_detected(data, encoding):
    assert decode_text(data).lstrip("\ufeff") == "Grüße aus Köln", encoding


def test_magic_bytes_win_over_the_extension():
    assert detect_format(read("minimal-document.pdf"), "invoice.txt") == "pdf"
    assert detect_format(read("simple.docx"), "upload.bin") == "docx"
    assert detect_format(read("fake-email-attachment.eml"), "message") == "eml"


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize("name, reason", [
    ("password.pdf", "encrypted PDF"),
    ("issue6010_1.pdf", "encrypted PDF"),
    ("issue15590.pdf", "corrupt PDF"),
    ("password_protected.xlsx", "password-protected Office document"),
    ("simple.doc", "unsupported format: legacy Word .doc"),
])
def test_broken_encrypted_and_legacy_files_fail_with_a_reason(parser, name, reason):
    with pytest.raises(ParseError, match=reason):
        parser.parse(read(name), name)


def _zip_with(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(name, "hello")
    return buf.getvalue()


@pytest.mark.parametrize("data, filename, reason", [
    (b"", "empty.pdf", "empty file"),
    (b"  \n\t ", "blank.txt", "empty file"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "scan.png", "unsupported format: image/png"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32, "memo.wav", "unsupported format: audio"),
    (_zip_with("notes.txt"), "bundle.zip", "unsupported format: a ZIP archive"),
    (b"\x00\x01\x02\x03\xff\xfe\xfd" * 100, "blob.bin", "unsupported format"),
    (b"this is not a pdf at all", "report.pdf", "corrupt PDF: no %PDF header"),
])
def test_unsupported_and_empty_inputs_fail_with_a_reason(parser, data, filename, reason):
    with pytest.raises(ParseError, match=reason):
        parser.parse(data, filename)


def test_pdf_without_text_layer_is_an_error_not_an_empty_document(parser):
    # A valid one-page PDF whose only content is a filled rectangle.
    stream = b"0 0 1 rg 10 10 100 100 re f"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)]
    pdf, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    pdf += b"trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    with pytest.raises(ParseError, match="no text could be extracted"):
        parser.parse(pdf, "scan.pdf")


def test_pdfium_text_layer_is_the_fallback_when_docling_finds_none(parser):
    doc = parser.parse(read("issue17848.pdf"), "hello.pdf")
    assert "Hello World" in doc.text
    assert doc.meta["text_source"] == "pdfium"
    assert doc.pages == 1


# --------------------------------------------------------------------------- isolation
def test_isolated_parse_gives_the_same_document(parser, isolated):
    assert isolated.parse(read("fake-memo.pdf"), "memo.pdf") == parser.parse(read("fake-memo.pdf"), "memo.pdf")


def test_isolated_errors_keep_their_reason(isolated):
    with pytest.raises(ParseError, match="encrypted PDF"):
        isolated.parse(read("password.pdf"), "password.pdf")


def test_a_hanging_parse_times_out_and_the_parser_recovers():
    with DoclingParser(timeout=2) as parser:
        started = time.monotonic()
        with pytest.raises(ParseError, match=r"parse timed out after 2s"):
            parser._call(time.sleep, 60)
        assert time.monotonic() - started < 20
        assert "Lorem ipsum" in parser.parse(read("minimal-document.pdf"), "a.pdf").text


def test_a_segfaulting_worker_becomes_a_parse_error_and_is_replaced(isolated):
    with pytest.raises(ParseError, match=r"parser crashed \(signal 11, SIGSEGV"):
        isolated._call(faulthandler._sigsegv)
    assert "20,000 bottles" in isolated.parse(read("fake-memo.pdf"), "memo.pdf").text


def test_a_memory_bomb_hits_the_worker_limit_not_the_machine(isolated):
    with pytest.raises(ParseError, match="out of memory"):
        isolated._call(bytearray, 8 * 2**30)  # beyond the default 3 GiB cap
    assert "Lorem ipsum" in isolated.parse(read("minimal-document.pdf"), "a.pdf").text


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DOCLANE_PARSE_TIMEOUT", "7.5")
    parser = DoclingParser(isolate=False)
    assert parser.timeout == 7.5
