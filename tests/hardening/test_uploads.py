"""Bad files, every way in (functions/limits.py): HTTP uploads are refused
with problem details before anything is stored; files that arrive by a
bucket notification (the folder store, S3 on moto's server) become
document.failed with the reason; no key leads outside the folder store.
Zip bombs are generated here, small on disk and huge unpacked."""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from pathlib import Path

import pytest

from doclane.events.envelope import new_event, validate
from doclane.functions import ingest, limits
from doclane.functions.adapters.folder_store import FolderStore
from doclane.functions.context import Context
from doclane.functions.errors import Permanent
from doclane.functions.notifications import record_for
from doclane.local.gateway import create_app
from tests.conftest import FIXTURES

ADMIN = "uploads-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
DOCX = (FIXTURES / "docs" / "simple.docx").read_bytes()
PDF = (FIXTURES / "docs" / "minimal-document.pdf").read_bytes()
ENCRYPTED_XLSX = (FIXTURES / "docs" / "password_protected.xlsx").read_bytes()
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 120
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU"


def windows_exe() -> bytes:
    """The smallest thing that is a PE file: 'MZ', and at 0x3c the offset of 'PE\\0\\0'."""
    data = bytearray(256)
    data[0:2], data[0x3C:0x40], data[0x80:0x84] = b"MZ", (0x80).to_bytes(4, "little"), b"PE\x00\x00"
    return bytes(data)


def zipped(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def bomb(megabytes: int = 16) -> bytes:
    """A DOCX-shaped zip bomb: one part of zeros, about a thousand times its packed size."""
    return zipped({"[Content_Types].xml": b"<Types/>", "word/document.xml": bytes(megabytes << 20)})


def nested(depth: int, inner: bytes) -> bytes:
    for i in range(depth):
        inner = zipped({f"level{i}.zip": inner})
    return inner


@pytest.fixture
def gateway(settings):
    made: list[Context] = []

    def make(**changes):
        context = Context(settings.model_copy(update={"api_key": ADMIN, **changes}))
        made.append(context)
        return context, create_app(context).test_client()

    yield make
    for context in made:
        context.close()


def upload(client, name: str, data: bytes, path: str = "/upload", content_type: str | None = None):
    file = (io.BytesIO(data), name, content_type) if content_type else (io.BytesIO(data), name)
    return client.post(path, data={"file": file}, headers={**AUTH, "Accept": "application/json"},
                       content_type="multipart/form-data")


def stored(context) -> list[Path]:
    return [p for p in Path(context.settings.inbox).rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- HTTP uploads
@pytest.mark.parametrize("name, data, status, says", [
    ("report.pdf", ELF, 415, "ELF executable"),
    ("setup.txt", windows_exe(), 415, "Windows executable"),
    ("invoice.pdf", zipped({"a.txt": b"hello"}), 415, "named as PDF but its content is a ZIP archive"),
    ("invoice.pdf", DOCX, 415, "named as PDF but its content is a DOCX document"),
    ("scan.pdf", PNG, 415, "image/png"),
    ("letter.docx", PDF, 415, "named as DOCX but its content is a PDF"),
    ("big.docx", bomb(), 422, "DOCLANE_MAX_ZIP_RATIO"),
    ("deep.zip", nested(3, zipped({"word/document.xml": b"<w/>"})), 422, "nested more than 2 deep"),
    ("../../etc/cron.d/x.txt", b"hello", 400, "is a path"),
    ("scans/2024/a.txt", b"hello", 400, "is a path"),
    ("a\tb.txt", b"hello", 400, "control characters"),
    ("invoice\u202efdp.exe", b"hello", 400, "control characters"),
    ("x" * 300 + ".txt", b"hello", 400, "at most 255 bytes"),
])
def test_bad_uploads_are_refused_with_the_reason_and_nothing_is_stored(gateway, name, data, status, says):
    context, client = gateway()
    for path in ("/upload", "/batch-upload", "/ui/upload"):
        resp = upload(client, name, data, path)
        assert resp.status_code == status, (path, resp.get_data(as_text=True))
        assert resp.content_type == "application/problem+json"
        assert says in resp.json["detail"], resp.json
    assert stored(context) == [] and context.metadata.list() == []


def test_one_bad_file_refuses_the_whole_request(gateway):
    context, client = gateway()
    resp = client.post("/upload", headers=AUTH, content_type="multipart/form-data", data={
        "file": [(io.BytesIO(b"first, a fine note"), "note.txt"), (io.BytesIO(ELF), "tool.pdf")]})
    assert resp.status_code == 415 and "tool.pdf" in resp.json["detail"]
    assert stored(context) == [] and context.metadata.list() == []


def test_the_size_limit_is_a_setting_and_answers_413(gateway):
    context, client = gateway(max_file_mb=0.01)  # 10 KiB
    resp = upload(client, "notes.txt", b"x" * 20_000)
    assert resp.status_code == 413 and "DOCLANE_MAX_FILE_MB" in resp.json["detail"]
    assert upload(client, "notes.txt", b"x" * 5_000).status_code == 202


def test_the_unpacked_size_and_entry_count_are_settings(gateway):
    _, client = gateway(max_unpacked_mb=1, max_zip_entries=50)
    # ~1.2 MB of hex text: compresses about 2:1, so no ratio alarm, only the total
    text = os.urandom(320_000).hex().encode()
    resp = upload(client, "sheet.xlsx", zipped({"xl/a.xml": text, "xl/b.xml": text[::-1]}))
    assert resp.status_code == 413 and "DOCLANE_MAX_UNPACKED_MB" in resp.json["detail"]
    many = zipped({"[Content_Types].xml": b"<Types/>", **{f"ppt/slides/s{i}.xml": b"<s/>" for i in range(60)}})
    resp = upload(client, "deck.pptx", many)
    assert resp.status_code == 422 and "DOCLANE_MAX_ZIP_ENTRIES" in resp.json["detail"]


def test_a_bomb_inside_a_nested_archive_is_found(gateway):
    _, client = gateway()
    resp = upload(client, "report.docx", zipped({"word/document.xml": b"<w/>", "word/embeddings/chart.xlsx": bomb(8)}))
    assert resp.status_code == 422 and "DOCLANE_MAX_ZIP_RATIO" in resp.json["detail"]


@pytest.mark.parametrize("name, data, content_type", [
    ("simple.docx", DOCX, None),
    ("minimal.pdf", PDF, "application/pdf"),
    ("secret.xlsx", ENCRYPTED_XLSX, None),  # OLE2 under an Office name: the parser says it is encrypted
    ("notes", b"plain words without an extension", None),
    ("chart.docx", zipped({"word/document.xml": b"<w/>", "word/embeddings/book.xlsx": zipped({"xl/s.xml": b"1"})}),
     None),  # one level of nesting is what Office does
    ("MZ-report.txt", b"MZ-1 quarterly report: all good", None),  # starts with MZ, is no program
    # what Office itself opens under these names is no mismatch
    ("saved-by-office.doc", DOCX, None),
    ("budget.xls", ENCRYPTED_XLSX, None),
    ("letter.odt", zipped({"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"}), None),
])
def test_good_files_pass(gateway, name, data, content_type):
    context, client = gateway()
    resp = upload(client, name, data, content_type=content_type)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert len(stored(context)) == 1


def test_a_declared_type_is_checked_when_the_name_says_nothing(gateway):
    _, client = gateway()
    resp = upload(client, "download", zipped({"a.txt": b"x"}), content_type="application/pdf")
    assert resp.status_code == 415 and "named as PDF" in resp.json["detail"]


# --------------------------------------------------------------------------- bucket drops
def notification(key: str, bucket: str = "inbox", size: int | None = None):
    try:
        record = record_for("created", bucket, key, size=size)
    except UnicodeEncodeError:  # not URL-escapable (a lone surrogate): as raw JSON text
        record = {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
    return new_event("bucket.notification", {"Records": [record]}, subject=None, source="test")


def ingest_key(context, key: str, bucket: str = "inbox"):
    event = notification(key, bucket)
    return ingest.handle(event, validate(event), context)


def failed(out) -> dict:
    (event,) = out
    assert event["type"] == "io.doclane.document.failed.v1", event["type"]
    assert event.data["stage"] == "ingest" and event.data["reason"]
    return event.data


@pytest.fixture
def folder(settings):
    context = Context(settings.model_copy(update={"max_file_mb": 1}))
    context.settings.inbox.mkdir(parents=True, exist_ok=True)
    yield context
    context.close()


@pytest.mark.parametrize("name, data, error_type, says", [
    ("invoice.pdf", ELF, "refused_type", "ELF executable"),
    ("invoice.pdf", zipped({"a.txt": b"x"}), "type_mismatch", "ZIP archive"),
    ("big.docx", bomb(), "zip_bomb", "DOCLANE_MAX_ZIP_RATIO"),
    ("huge.txt", b"x" * (2 << 20), "too_large", "DOCLANE_MAX_FILE_MB"),
])
def test_a_bad_file_dropped_in_the_inbox_fails_with_the_reason(folder, name, data, error_type, says):
    (folder.settings.inbox / name).write_bytes(data)
    info = failed(ingest_key(folder, name))
    assert info["error_type"] == error_type and says in info["reason"]
    record = folder.metadata.get(info["document_id"])
    assert record.status == "failed" and says in record.error  # listed with its reason, not lost


@pytest.mark.parametrize("key, says", [
    ("../outside.txt", "without '..'"),
    ("a/../../outside.txt", "without '..'"),
    ("/etc/passwd", "absolute path"),
    ("..\\outside.txt", "backslash"),
    ("a\x00b.txt", "control characters"),
    ("line\nbreak.txt", "control characters"),
    ("x" * 1100, "longer than 1024 bytes"),
    ("a//b.txt", "empty folder names"),
    ("\ud800.txt", "not valid UTF-8"),
])
def test_bad_keys_in_notifications_fail_and_touch_nothing(folder, tmp_path, key, says):
    secret = tmp_path / "outside.txt"  # beside the inbox: what '../outside.txt' would reach
    secret.write_text("not for doclane")
    before = sorted(p for p in tmp_path.rglob("*"))
    info = failed(ingest_key(folder, key))
    assert info["error_type"] == "bad_key" and says in info["reason"]
    assert folder.metadata.list() == []  # nothing registered, nothing read
    assert sorted(p for p in tmp_path.rglob("*") if "data" not in p.parts) == \
        [p for p in before if "data" not in p.parts]


def test_a_symlink_out_of_the_inbox_is_not_followed(folder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the neighbour's diary")
    (folder.settings.inbox / "innocent.txt").symlink_to(secret)
    info = failed(ingest_key(folder, "innocent.txt"))
    assert info["error_type"] == "bad_key" and "outside the store" in info["reason"]
    assert folder.metadata.list() == []


def test_the_folder_store_writes_nothing_outside_its_root(tmp_path):
    root, outside = tmp_path / "store", tmp_path / "elsewhere"
    outside.mkdir()
    store = FolderStore(root)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    for key in ("../escape.txt", "/tmp/escape.txt", "a/../../escape.txt", "linked/escape.txt", "a\x00.txt"):
        with pytest.raises(Permanent):
            store.put(key, b"x")
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_minio_notifications_with_bad_keys_fail_on_the_bus(settings):
    """MinIO's webhook target takes the notification (it is well-formed), and
    the ingest function fails the object on the bus: nothing is lost, nothing
    is read."""
    from doclane.functions.binding import handle_delivery
    from doclane.functions.runtime import load as load_function, triggers

    token = "minio-token-for-hardening"
    context = Context(settings.model_copy(update={"api_key": ADMIN, "minio_webhook_token": token}))
    try:
        context.bus.declare(triggers(context.settings))
        client = create_app(context).test_client()
        record = record_for("created", "inbox", "../../etc/shadow", size=10)
        resp = client.post("/notifications/minio", json={"EventName": "s3:ObjectCreated:Put", "Records": [record]},
                           headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200 and resp.json["published"] == 1
        (delivery,) = context.bus.receive("ingest", wait_seconds=2)
        assert handle_delivery(context.bus, load_function("ingest"), delivery, context, 3) == "ok"
        (fail_delivery,) = context.bus.receive("notify", wait_seconds=2)
        event = json.loads(fail_delivery.body)
        assert event["type"].endswith("document.failed.v1") and "without '..'" in event["data"]["reason"]
    finally:
        context.close()


def test_s3_drops_are_checked_like_folder_drops(settings, moto, monkeypatch):
    for name, value in moto.env.items():
        monkeypatch.setenv(name, value)
    bucket = moto.bucket(f"hard-{uuid.uuid4().hex[:10]}")
    context = Context(settings.model_copy(update={"s3_endpoint_url": moto.endpoint, "s3_bucket": bucket}))
    try:
        moto.client().put_object(Bucket=bucket, Key="in/payroll.pdf", Body=windows_exe())
        info = failed(ingest_key(context, "in/payroll.pdf", bucket))
        assert info["error_type"] == "refused_type" and "Windows executable" in info["reason"]
        moto.client().put_object(Bucket=bucket, Key="in/../payroll.pdf", Body=b"%PDF-1.4")
        info = failed(ingest_key(context, "in/../payroll.pdf", bucket))
        assert info["error_type"] == "bad_key"
    finally:
        context.close()


def test_sniffing_names_what_the_content_is():
    assert limits.sniff(PDF)[0] == "pdf"
    assert limits.sniff(DOCX)[0] == "docx"
    assert limits.sniff(ENCRYPTED_XLSX)[0] == "ole2"
    assert limits.sniff(ELF)[0] == "executable"
    assert limits.sniff(windows_exe())[0] == "executable"
    assert limits.sniff(b"MZ is a fine start for a memo")[0] is None
    assert limits.sniff(PNG)[0] == "png"
    assert limits.sniff(b"just text")[0] is None



def test_badly_named_files_in_the_inbox_fail_and_the_watcher_goes_on(folder):
    """A file name that is not UTF-8 (Linux allows any bytes) or has a
    newline used to stop every scan of the inbox at that file; now each
    fails with its reason and the files beside it flow on."""
    from doclane.functions.binding import handle_delivery
    from doclane.functions.runtime import load as load_function, triggers
    from doclane.local.watcher import FolderWatcher

    bus, inbox = folder.bus, folder.settings.inbox
    bus.declare(triggers(folder.settings))
    (Path(os.fsdecode(bytes(inbox) + b"/bad\xff.txt"))).write_bytes(b"latin-1 named")
    (inbox / "two\nlines.txt").write_text("a newline in the name")
    (inbox / "fine.txt").write_text("an ordinary note")
    watcher = FolderWatcher(inbox, bus, folder.settings.data_dir / "watcher.sqlite", settle_seconds=0)
    try:
        watcher.scan()  # sees the files
        assert watcher.scan() == 3  # notifies each, none stops the others
    finally:
        watcher.close()
    while deliveries := bus.receive("ingest", wait_seconds=0.5):
        assert handle_delivery(bus, load_function("ingest"), deliveries[0], folder, 3) == "ok"
    reasons = []
    while deliveries := bus.receive("notify", wait_seconds=0.5):
        reasons.append(json.loads(deliveries[0].body)["data"]["reason"])
        bus.ack(deliveries[0])
    assert sorted(reasons) == ["object key 'bad\\udcff.txt' is not valid UTF-8 text",
                               "object key 'two\\nlines.txt' has control characters (NUL, newline, bidi overrides, ...)"]
    (uploaded,) = bus.receive("classify", wait_seconds=1)
    assert json.loads(uploaded.body)["data"]["filename"] == "fine.txt"
