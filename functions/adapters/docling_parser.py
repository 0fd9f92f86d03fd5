"""Parser adapter: bytes in, `ParsedDocument` out, through Docling.

PDFs go through Docling's model-free native pipeline (nothing is downloaded);
DOCX, PPTX, XLSX, HTML and Markdown through Docling's own backends. Plain text
and e-mail are read with the standard library and built into a
`DoclingDocument` directly, so every later stage sees one shape.

Real-world files crash, hang and eat memory inside native PDF code. So by
default every parse runs in a warm worker process (pebble `ProcessPool`) with a
timeout, a memory cap (RLIMIT_AS) and recycling after `max_tasks` parses; a
dead or stuck worker becomes a `ParseError` and the pool starts a fresh one.
"""

from __future__ import annotations

import codecs
import contextlib
import email
import email.policy
import io
import multiprocessing
import os
import re
import resource
import signal
import threading
import zipfile
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from doclane.functions.errors import ParseError
from doclane.functions.ports import ParsedDocument

DEFAULT_TIMEOUT = 60.0
DEFAULT_MEMORY_LIMIT = 3 * 2**30
DEFAULT_MAX_TASKS = 50

OOXML = {"word/": "docx", "ppt/": "pptx", "xl/": "xlsx"}
TEXT_EXTENSIONS = {"txt", "text", "csv", "tsv", "log", "json", "ndjson", "xml", "yaml", "yml",
                   "ini", "cfg", "conf", "rst", "org", "tex", "py", "go", "js", "sql", "srt"}
LEGACY = {"doc": "legacy Word .doc", "xls": "legacy Excel .xls", "ppt": "legacy PowerPoint .ppt",
          "msg": "Outlook .msg"}
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
EMAIL_HEADER = re.compile(r"^(Return-Path|Received|From|To|Subject|Date|MIME-Version|Message-ID|"
                          r"Delivered-To|X-[\w-]+):", re.I | re.M)


# --------------------------------------------------------------------------- public adapter
class DoclingParser:
    """The `Parser` port. Thread-safe; `close()` stops the worker."""

    def __init__(self, *, isolate: bool = True, timeout: float | None = None,
                 memory_limit: int | None = DEFAULT_MEMORY_LIMIT, max_tasks: int = DEFAULT_MAX_TASKS,
                 workers: int = 1, warm: bool = True, start_method: str = "spawn"):
        self.isolate = isolate
        self.timeout = float(timeout if timeout is not None
                             else os.environ.get("DOCLANE_PARSE_TIMEOUT", DEFAULT_TIMEOUT))
        self.memory_limit = memory_limit
        self._pool = None
        if isolate:
            import pebble

            # spawn, not fork: the caller may hold threads (torch, tokenizers, HTTP
            # servers) whose locks a forked child would inherit mid-flight. The price:
            # a script that creates a parser needs the `if __name__ == "__main__":` guard.
            self._pool = pebble.ProcessPool(
                max_workers=workers, max_tasks=max_tasks, initializer=_init_worker,
                initargs=(memory_limit,), context=multiprocessing.get_context(start_method))
            if warm:  # start the worker now: its initializer imports Docling (seconds)
                self._pool.schedule(os.getpid)

    def parse(self, data: bytes, filename: str, content_type: str | None = None) -> ParsedDocument:
        if not self.isolate:
            return parse_bytes(data, filename, content_type)
        return ParsedDocument.from_json(self._call(_parse_to_json, data, filename, content_type))

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in the worker; failures of the worker become ParseError.
        Tests call it with a sleeping or crashing `fn`."""
        from pebble import ProcessExpired

        if self._pool is None:
            raise RuntimeError("DoclingParser is closed (or not isolated)")
        future = self._pool.schedule(fn, args=args, timeout=self.timeout)
        try:
            return future.result()
        except FutureTimeout:
            raise ParseError(f"parse timed out after {self.timeout:g}s") from None
        except ProcessExpired as exc:
            raise ParseError(_crash_reason(exc.exitcode)) from None
        except MemoryError:
            limit = f" of {self.memory_limit / 2**30:.1f} GiB" if self.memory_limit else ""
            raise ParseError(f"parser ran out of memory (limit{limit})") from None
        except ParseError:
            raise
        except Exception as exc:  # noqa: BLE001 - the same input would fail the same way again
            raise ParseError(f"parser failed: {type(exc).__name__}: {str(exc)[:300]}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "DoclingParser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _crash_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else "?"
        hint = "; out of memory?" if -exitcode in (signal.SIGKILL, signal.SIGABRT) else ""
        return f"parser crashed (signal {-exitcode}, {name}{hint})"
    return f"parser crashed (exit code {exitcode})"


# --------------------------------------------------------------------------- worker side
def _init_worker(memory_limit: int | None) -> None:
    """Cap the worker's address space so a memory bomb raises MemoryError (or
    kills only this worker) instead of starving the machine; then load Docling.
    Loading here, not in the first task, keeps it out of that task's timeout
    (pebble starts the clock when a worker takes the task)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if memory_limit:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit if hard == resource.RLIM_INFINITY
                                                else min(memory_limit, hard), hard))
    with contextlib.suppress(Exception):  # a failing initializer kills the pool; the parse reports it
        _converter()


def _parse_to_json(data: bytes, filename: str, content_type: str | None) -> dict:
    return parse_bytes(data, filename, content_type).to_json()


_converter_lock = threading.Lock()
_converter_instance = None


def _converter():
    """One Docling converter per process; the PDF pipeline is initialised eagerly."""
    global _converter_instance
    with _converter_lock:
        if _converter_instance is None:
            from docling.datamodel.base_models import InputFormat
            from docling.datamodel.pipeline_options import NativePdfPipelineOptions
            from docling.document_converter import DocumentConverter, NativePdfFormatOption

            # No page or picture images: we only want text, and rasterising costs
            # more than parsing. One parser thread: parallelism comes from workers.
            options = NativePdfPipelineOptions(generate_page_images=False,
                                               generate_picture_images=False, parser_threads=1)
            _converter_instance = DocumentConverter(
                allowed_formats=[InputFormat.PDF, InputFormat.DOCX, InputFormat.PPTX,
                                 InputFormat.XLSX, InputFormat.HTML, InputFormat.MD],
                format_options={InputFormat.PDF: NativePdfFormatOption(pipeline_options=options)})
            _converter_instance.initialize_pipeline(InputFormat.PDF)
        return _converter_instance


# --------------------------------------------------------------------------- parsing (in process)
def parse_bytes(data: bytes, filename: str, content_type: str | None = None) -> ParsedDocument:
    """Detect the format and parse; raises ParseError. Runs in the worker."""
    kind = detect_format(data, filename, content_type)
    if kind == "pdf":
        parsed = _parse_pdf(data, filename)
    elif kind in ("docx", "pptx", "xlsx", "html"):
        parsed = _parse_with_docling(data, kind, filename)
    elif kind == "md":
        parsed = _parse_with_docling(decode_text(data).encode("utf-8"), "md", filename)
    elif kind == "eml":
        parsed = _parse_email(data, filename)
    else:
        parsed = _document_from_parts(filename, None, [], decode_text(data).split("\n\n"))
    if not _has_words(parsed.text):
        raise ParseError("no text could be extracted (scanned image without OCR?)")
    return parsed


def detect_format(data: bytes, filename: str, content_type: str | None = None) -> str:
    """Magic bytes first, the file name's extension second. Returns one of
    pdf, docx, pptx, xlsx, html, md, eml, text; raises ParseError otherwise."""
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if not data.strip():
        raise ParseError("empty file: there is nothing to parse")
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith(OLE2_MAGIC):
        if b"E\x00n\x00c\x00r\x00y\x00p\x00t\x00e\x00d\x00P\x00a\x00c\x00k" in data:
            raise ParseError("password-protected Office document: remove the password and upload again")
        what = LEGACY.get(ext, "legacy Office binary (OLE2) file")
        instead = "an .eml file" if ext == "msg" else "DOCX, XLSX or PPTX"
        raise ParseError(f"unsupported format: {what}; save it as {instead}")
    if data.startswith(b"PK\x03\x04"):
        return _ooxml_kind(data)
    if ext == "pdf" or ctype == "application/pdf":
        raise ParseError("corrupt PDF: no %PDF header found")
    import filetype

    guess = filetype.guess(data)
    if guess is not None and guess.mime.split("/")[0] in ("image", "audio", "video", "application"):
        detail = " (images are not OCRed)" if guess.mime.startswith("image/") else ""
        raise ParseError(f"unsupported format: {guess.mime}{detail}")
    if data.lstrip()[:5] == b"{\\rtf":
        raise ParseError("unsupported format: RTF; save it as DOCX or PDF")
    text_head = decode_text(data[:4096]).lstrip().lower()
    if ext in ("html", "htm", "xhtml") or ctype in ("text/html", "application/xhtml+xml") \
            or text_head.startswith(("<!doctype html", "<html")):
        return "html"
    if ext == "eml" or ctype == "message/rfc822" or _looks_like_email(text_head):
        return "eml"
    if ext in ("md", "markdown") or ctype == "text/markdown":
        return "md"
    if ext in TEXT_EXTENSIONS or ctype.startswith("text/") or not ext:
        return "text"
    raise ParseError(f"unsupported format: .{ext} files are not supported")


def _ooxml_kind(data: bytes) -> str:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        raise ParseError("corrupt file: a damaged ZIP/Office container") from None
    for prefix, kind in OOXML.items():
        if any(n.startswith(prefix) for n in names):
            return kind
    if "mimetype" in names:  # OpenDocument, EPUB: the container names its type
        mime = zipfile.ZipFile(io.BytesIO(data)).read("mimetype").decode("ascii", "replace").strip()
        raise ParseError(f"unsupported format: {mime}; convert it to DOCX, XLSX, PPTX or PDF")
    raise ParseError("unsupported format: a ZIP archive (unpack it and upload the files)")


def _looks_like_email(head: str) -> bool:
    return bool(EMAIL_HEADER.match(head)) and len(EMAIL_HEADER.findall(head)) >= 3


def decode_text(data: bytes) -> str:
    """Bytes to str: BOMs first (UTF-32 before UTF-16: their BOMs overlap),
    then strict UTF-8, then charset-normalizer's best guess."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    sample = data[:4096]
    if sample.count(0) > len(sample) // 4:  # BOM-less UTF-16: every other byte of ASCII is NUL
        even_nuls = sample[0::2].count(0)
        return data.decode("utf-16-be" if even_nuls > sample[1::2].count(0) else "utf-16-le",
                            errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise ParseError("unsupported format: binary data that is not a known document type")
    return str(best)


def _parse_pdf(data: bytes, filename: str) -> ParsedDocument:
    """pypdfium2 first, because it tells an encrypted PDF from a broken one and
    reads the metadata title; then Docling's native pipeline for the content."""
    import pypdfium2

    title, pages, pdfium_problem = None, None, None
    try:
        pdf = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pypdfium2.raw.FPDF_ERR_PASSWORD:
            raise ParseError("encrypted PDF: it needs a password to open") from None
        found = re.search(r"PDFium: ([^)]+)", str(exc))
        problem = found.group(1) if found and found.group(1) != "Success" else "cannot open it"
        pdfium_problem = f"PDFium: {problem}".rstrip(". ")
    else:
        try:
            pages = len(pdf)
            title = (pdf.get_metadata_value("Title") or "").strip() or None
        finally:
            pdf.close()
    try:
        parsed = _parse_with_docling(data, "pdf", filename)
    except ParseError as exc:
        parsed = None if pdfium_problem else _pdfium_fallback(data, filename, title)
        if parsed is None:
            detail = pdfium_problem or re.sub(r"docling-parse could not load document \w+:.*",
                                              "docling-parse could not load it", str(exc))
            raise ParseError(f"corrupt PDF: {detail.removeprefix('could not parse PDF: ')}") from None
    if not _has_words(parsed.text) and not pdfium_problem:
        parsed = _pdfium_fallback(data, filename, title) or parsed
    return ParsedDocument(markdown=parsed.markdown, text=parsed.text, docling=parsed.docling,
                          pages=parsed.pages or pages, title=parsed.title or title, meta=parsed.meta)


def _pdfium_fallback(data: bytes, filename: str, title: str | None) -> ParsedDocument | None:
    """PDFium's text layer, for the few PDFs (2% of the pdf.js corpus) that it
    reads and docling-parse does not; None if it finds no words either."""
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(data)
        try:
            pages = [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
        finally:
            pdf.close()
    except pypdfium2.PdfiumError:
        return None
    if not _has_words("".join(pages)):
        return None
    parsed = _document_from_parts(filename, None, [], pages, {"text_source": "pdfium"})
    return ParsedDocument(markdown=parsed.markdown, text=parsed.text, docling=parsed.docling,
                          pages=len(pages), title=title, meta=parsed.meta)


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _parse_with_docling(data: bytes, kind: str, filename: str) -> ParsedDocument:
    from docling.datamodel.base_models import ConversionStatus, DocumentStream
    from docling.exceptions import ConversionError

    # Name the stream by the detected kind, so Docling picks the same backend.
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "document"
    stream = DocumentStream(name=f"{stem}.{kind}", stream=io.BytesIO(data))
    try:
        result = _converter().convert(stream, raises_on_error=False)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a backend choking on this input will choke again
        detail = str(exc) if isinstance(exc, ConversionError) else f"{type(exc).__name__}: {exc}"
        raise ParseError(f"could not parse {kind.upper()}: {detail[:300]}") from None
    if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
        reason = "; ".join(e.error_message for e in result.errors) or str(result.status.value)
        raise ParseError(f"could not parse {kind.upper()}: {reason[:300]}")
    return _from_docling(result.document)


def _from_docling(doc) -> ParsedDocument:
    from docling_core.types.doc import ContentLayer, DocItemLabel

    layers = {ContentLayer.BODY, ContentLayer.FURNITURE}  # page headers can hold invoice numbers
    title = next((item.text for item, _ in doc.iterate_items() if item.label == DocItemLabel.TITLE
                  and getattr(item, "text", "").strip()), None)
    return ParsedDocument(
        markdown=doc.export_to_markdown(), text=doc.export_to_text(included_content_layers=layers),
        pages=doc.num_pages() or None, docling=doc.export_to_dict(), title=title)


def _document_from_parts(filename: str, title: str | None, header_lines: list[str],
                         paragraphs: list[str], meta: dict | None = None) -> ParsedDocument:
    """Text and e-mail: build the DoclingDocument directly (feeding plain text to
    the Markdown backend would turn a leading '#' or '*' into markup)."""
    from docling_core.types.doc import DocItemLabel, DoclingDocument

    doc = DoclingDocument(name=filename.rsplit("/", 1)[-1] or "document")
    if title:
        doc.add_title(text=title)
    for line in header_lines:
        doc.add_text(label=DocItemLabel.TEXT, text=line)
    for para in paragraphs:
        para = "\n".join(line.rstrip() for line in para.strip("\r\n").splitlines()).strip()
        if para:
            doc.add_text(label=DocItemLabel.TEXT, text=para)
    parsed = _from_docling(doc)
    return ParsedDocument(markdown=parsed.markdown, text=parsed.text, docling=parsed.docling,
                          title=title, meta=meta or {})


def _parse_email(data: bytes, filename: str) -> ParsedDocument:
    if data[:4].count(0) or data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # A mail saved as UTF-16 text: the email package only reads ASCII-compatible bytes.
        msg = email.message_from_string(decode_text(data).lstrip("\ufeff"), policy=email.policy.default)
    else:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    meta: dict[str, Any] = {}
    for name in ("From", "To", "Cc", "Subject", "Date"):
        try:
            value = msg.get(name)
        except Exception:  # noqa: BLE001 - a malformed header must not fail the whole mail
            value = msg.get_all(name, failobj=[None])[0] if hasattr(msg, "get_all") else None
        if value is not None and str(value).strip():
            meta[name.lower()] = str(value).strip()
    body = _email_body(msg)
    attachments = [part.get_filename() or "(unnamed)" for part in msg.iter_attachments()] \
        if msg.is_multipart() else []
    if attachments:
        meta["attachments"] = attachments
    header_lines = [f"{k.capitalize()}: {v}" for k, v in meta.items() if k in ("from", "to", "cc", "date")]
    paragraphs = re.split(r"\n\s*\n", body.replace("\r\n", "\n"))
    if attachments:
        paragraphs.append("Attachments: " + ", ".join(attachments))
    return _document_from_parts(filename, meta.get("subject"), header_lines, paragraphs, meta)


def _email_body(msg: email.message.EmailMessage) -> str:
    """text/plain if there is one, else the HTML part as text."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, AssertionError):  # unknown or lying charset
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", errors="replace")
    content = decode_text(content) if isinstance(content, bytes) else content
    if part.get_content_subtype() == "html":
        from bs4 import BeautifulSoup

        content = BeautifulSoup(content, "html.parser").get_text("\n\n")
    return content
