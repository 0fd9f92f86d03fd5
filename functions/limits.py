"""What doclane accepts: object keys, file names, document contents and
event sizes. Every refusal says what is wrong and which setting moves the
limit; an HTTP upload answers it as problem details, a file that arrives by a
bucket notification becomes document.failed with it (functions/ingest.py).

Document contents (`inspect`), checked before any parser sees the bytes:

- Executables (ELF, Windows PE, Mach-O, Java class, DEX, WebAssembly) are
  refused whatever they are called: they are not documents.
- The content decides what a file is, and the name may not contradict it:
  the bytes are sniffed (magic numbers, the `filetype` package, and the ZIP
  directory for DOCX/XLSX/PPTX); when both the extension (or, without one
  that says anything, the declared Content-Type) and the content name a
  known format and they differ, the file is refused (a `.pdf` that is a
  ZIP, a `.docx` that is a PNG). What Office itself opens passes: a DOCX
  saved as `.doc` (and XLSX/.xls, PPTX/.ppt), an OLE2 container under any
  Office name (legacy or password-protected files: the parser names which),
  a ZIP under the name of a ZIP-based format (.odt, .epub). Content that is
  not recognised (text, a damaged file) goes on to the parser, which says
  what it makes of it.
- ZIP containers (DOCX, XLSX, PPTX and any other ZIP) are measured from
  their central directory before anything is unpacked: at most
  DOCLANE_MAX_ZIP_ENTRIES entries, DOCLANE_MAX_UNPACKED_MB in total
  (archives inside archives counted too, at most MAX_ZIP_DEPTH deep), and no
  entry over 1 MiB that unpacks to more than DOCLANE_MAX_ZIP_RATIO times its
  compressed size. Python's zipfile, which the Office parsers use, never
  returns more than an entry's declared size, so the directory's numbers
  bound what a parser can unpack.
"""

from __future__ import annotations

import io
import unicodedata
import zipfile
from pathlib import PurePosixPath

from doclane.events.envelope import InvalidEvent

MAX_KEY_BYTES = 1024  # S3's own limit for an object key
MAX_FILENAME_BYTES = 255  # what file systems allow for one name
MAX_ZIP_DEPTH = 2  # a ZIP in a document (a chart's workbook in a DOCX) is normal; deeper is not
# Bidi overrides and isolates make a name display as something else (an ".exe" shown as ".pdf").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_RATIO_FLOOR = 1 << 20  # small entries may compress extremely well (empty parts, repeated XML)
_MIB = 1024 * 1024

# The formats a name can claim, by extension (lower case, without the dot).
_OOXML = {"docx": "word/", "xlsx": "xl/", "pptx": "ppt/"}
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE2_NAMES = frozenset({"doc", "xls", "ppt", "msg", "docx", "xlsx", "pptx"})  # legacy or encrypted Office
_OFFICE_FAMILIES = (frozenset({"doc", "docx"}), frozenset({"xls", "xlsx"}), frozenset({"ppt", "pptx"}))
_ZIP_CONTAINERS = frozenset({"zip", "odt", "ods", "odp", "epub"})  # ZIP files by another name
_ALIASES = {"jpeg": "jpg", "tiff": "tif", "mpeg": "mpg", "htm": "html"}
_CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/zip": "zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
}
_EXECUTABLE_MAGIC = {
    b"\x7fELF": "an ELF executable",
    b"MZ": "a Windows executable",
    b"\xfe\xed\xfa\xce": "a Mach-O executable", b"\xfe\xed\xfa\xcf": "a Mach-O executable",
    b"\xce\xfa\xed\xfe": "a Mach-O executable", b"\xcf\xfa\xed\xfe": "a Mach-O executable",
    b"\xca\xfe\xba\xbe": "a Java class or Mach-O universal binary",
    b"dex\n": "an Android DEX executable",
    b"\x00asm": "a WebAssembly module",
}
_FILETYPE_EXECUTABLES = frozenset({"elf", "dex", "dey", "wasm"})  # what `filetype` calls them


class Refused(ValueError):
    """Input doclane will not take. `status` is the HTTP answer to an upload,
    `error_type` the document.failed error_type, `title` the problem title."""

    def __init__(self, reason: str, *, status: int, error_type: str, title: str):
        super().__init__(reason)
        self.status = status
        self.error_type = error_type
        self.title = title


# --------------------------------------------------------------------------- names
def key_problem(key: object) -> str | None:
    """Why an object key is not a plain relative path, or None if it is. One
    rule for every store: a key reaches file systems (the folder store), logs
    and pages, so it may not climb out of its root or carry control characters."""
    if not isinstance(key, str) or not key:
        return "the object key is empty"
    shown = repr(key[:200]) + ("…" if len(key) > 200 else "")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return f"object key {shown} is not valid UTF-8 text"
    if any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in key):
        return f"object key {shown} has control characters (NUL, newline, bidi overrides, ...)"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return f"object key {shown} is longer than {MAX_KEY_BYTES} bytes"
    if "\\" in key:
        return f"object key {shown} has a backslash; use '/' between folders"
    if key.startswith("/"):
        return f"object key {shown} is an absolute path"
    if any(part in ("..", "") for part in key.split("/")[:-1]) or key.split("/")[-1] in ("..", ""):
        return f"object key {shown} must be a relative path without '..' or empty folder names"
    return None


def check_key(key: str) -> str:
    problem = key_problem(key)
    if problem:
        raise Refused(problem, status=400, error_type="bad_key", title="Bad object key")
    return key


def check_filename(name: str) -> str:
    """An uploaded file's name: one name, not a path (a browser sends only the
    name; '../x' or 'C:\\x' is a client trying to choose where the file goes)."""
    if "/" in name or "\\" in name:
        raise Refused(f"the file name {name[:200]!r} is a path; send the file's name only",
                      status=400, error_type="bad_key", title="Bad file name")
    problem = key_problem(name)
    if problem:
        raise Refused(problem.replace("object key", "file name"), status=400, error_type="bad_key",
                      title="Bad file name")
    if name in (".", "..") or len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        raise Refused(f"the file name {name[:200]!r} is not a usable name (at most {MAX_FILENAME_BYTES} bytes)",
                      status=400, error_type="bad_key", title="Bad file name")
    return name


# --------------------------------------------------------------------------- sizes
def max_event_bytes(settings) -> int:
    """DOCLANE_MAX_EVENT_KB in bytes; its default for a caller without
    settings (the bus benchmark's bare binding)."""
    from doclane.functions.settings import Settings

    kb = getattr(settings, "max_event_kb", None) or Settings.model_fields["max_event_kb"].default
    return int(kb) * 1024


def check_event_size(size: int, settings) -> None:
    """An event over DOCLANE_MAX_EVENT_KB is refused before it is parsed."""
    limit = max_event_bytes(settings)
    if size > limit:
        raise InvalidEvent(f"the event is {size} bytes; the limit is {limit} (DOCLANE_MAX_EVENT_KB)")


def check_file_size(size: int, settings, name: str = "the file") -> None:
    limit = int(settings.max_file_mb * _MIB)
    if size > limit:
        raise Refused(f"{name} is {size} bytes; the limit is {limit} (DOCLANE_MAX_FILE_MB)",
                      status=413, error_type="too_large", title="Too large")


# --------------------------------------------------------------------------- contents
def sniff(data: bytes) -> tuple[str | None, str]:
    """(kind, description) of the content by its bytes; kind None when not
    recognised. Kinds are extensions (pdf, docx, zip, png, ...), 'ole2' or
    'executable'."""
    head = data[:4096]
    for magic, what in _EXECUTABLE_MAGIC.items():
        if head.startswith(magic) and (magic != b"MZ" or _is_pe(data)):
            return "executable", what
    if b"%PDF-" in data[:1024]:  # what the PDF parser accepts too
        return "pdf", "a PDF"
    if head.startswith(_OLE2):
        return "ole2", "a legacy or password-protected Office file (OLE2)"
    if head.startswith(b"PK\x03\x04"):
        names = _zip_names(data)
        for ext, prefix in _OOXML.items():
            if names and any(n.startswith(prefix) for n in names):
                return ext, f"a {ext.upper()} document"
        return "zip", "a ZIP archive"
    import filetype  # pure Python, no native library: magic numbers of common formats

    guess = filetype.guess(head)
    if guess is None or guess.extension == "exe":  # 'MZ' without a PE header (above): text, not a program
        return None, "unrecognised content"
    if guess.extension in _FILETYPE_EXECUTABLES:
        return "executable", f"an executable ({guess.mime})"
    return _ALIASES.get(guess.extension, guess.extension), f"{guess.mime} content"


def _is_pe(data: bytes) -> bool:
    """'MZ' starts plain text too ('MZ-1 report'): a PE file points at its 'PE\\0\\0' header."""
    if len(data) < 64:
        return False
    offset = int.from_bytes(data[60:64], "little")
    return data[offset:offset + 4] == b"PE\x00\x00"


def _zip_names(data: bytes) -> list[str] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return None


def claimed_kind(filename: str, content_type: str | None) -> str | None:
    """The format the name (or else the declared type) says the file is,
    when it names one the sniffer knows."""
    import filetype

    known = {t.extension for t in filetype.types} | set(_OOXML) | {"pdf", "zip"}
    ext = PurePosixPath(filename).suffix.lower().lstrip(".")
    ext = _ALIASES.get(ext, ext)
    if ext in known or ext in _OLE2_NAMES:
        return ext
    return _CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())


def _compatible(kind: str, claimed: str) -> bool:
    """Content of `kind` under a name claiming `claimed`: the same format, or
    what Office itself opens under that name (a DOCX saved as .doc, an OLE2
    file under any Office name), or a ZIP under the name of a ZIP-based format."""
    if kind == claimed:
        return True
    if kind == "ole2":
        return claimed in _OLE2_NAMES
    if kind == "zip":
        return claimed in _ZIP_CONTAINERS
    return any(kind in family and claimed in family for family in _OFFICE_FAMILIES)


def inspect(data: bytes, filename: str, content_type: str | None, settings) -> None:
    """Refuse content doclane must not hand to a parser (module docstring)."""
    kind, what = sniff(data)
    if kind == "executable":
        raise Refused(f"{filename} is {what}; doclane takes documents, not programs",
                      status=415, error_type="refused_type", title="Unsupported content")
    claimed = claimed_kind(filename, content_type)
    if kind and claimed and not _compatible(kind, claimed):
        raise Refused(f"{filename} is named as {claimed.upper()} but its content is {what}; "
                      "give the file the extension of what it is", status=415, error_type="type_mismatch",
                      title="Content does not match the file name")
    if data.startswith(b"PK\x03\x04"):
        check_zip(data, filename, settings)


def check_zip(data: bytes, filename: str, settings) -> None:
    """Refuse a ZIP container that unpacks to too much (module docstring)."""
    budget = _ZipBudget(settings, filename)
    budget.walk(data, depth=1)


class _ZipBudget:
    def __init__(self, settings, filename: str):
        self.max_total = int(settings.max_unpacked_mb * _MIB)
        self.max_entries = int(settings.max_zip_entries)
        self.max_ratio = float(settings.max_zip_ratio)
        self.filename = filename
        self.total = 0
        self.entries = 0

    def _refuse(self, reason: str, status: int = 422) -> Refused:
        return Refused(f"{self.filename}: {reason}", status=status, error_type="zip_bomb",
                       title="Archive refused" if status == 422 else "Unpacks too large")

    def walk(self, data: bytes, depth: int) -> None:
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            return  # not a readable ZIP: the parser reports the damage
        with zf:
            infos = zf.infolist()
            self.entries += len(infos)
            if self.entries > self.max_entries:
                raise self._refuse(f"has more than {self.max_entries} entries (DOCLANE_MAX_ZIP_ENTRIES)")
            for info in infos:
                self.total += info.file_size
                if self.total > self.max_total:
                    raise self._refuse(f"unpacks to more than {self.max_total} bytes (DOCLANE_MAX_UNPACKED_MB)",
                                       status=413)
                if info.file_size > _RATIO_FLOOR and info.file_size > self.max_ratio * max(info.compress_size, 1):
                    ratio = info.file_size / max(info.compress_size, 1)
                    raise self._refuse(f"entry {info.filename[:100]!r} unpacks {ratio:.0f} times its packed size "
                                       f"(the limit is {self.max_ratio:g}, DOCLANE_MAX_ZIP_RATIO): a zip bomb?")
            for info in infos:
                if not info.is_dir() and self._is_archive(zf, info):
                    if depth >= MAX_ZIP_DEPTH:
                        raise self._refuse(f"has archives nested more than {MAX_ZIP_DEPTH} deep "
                                           f"({info.filename[:100]!r})")
                    try:
                        inner = zf.read(info)  # its declared size is already within the budget
                    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
                        continue  # damaged or encrypted: nothing a parser will unpack either
                    self.walk(inner, depth + 1)

    @staticmethod
    def _is_archive(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
        try:
            with zf.open(info) as fh:
                return fh.read(4) == b"PK\x03\x04"
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError):
            return False
