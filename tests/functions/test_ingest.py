"""The ingest function with its objects in S3 (moto's server on loopback):
it reads from the bucket the notification names, and never takes doclane's
own artefacts for documents."""

from __future__ import annotations

import uuid

import pytest

from doclane.events.envelope import new_event, validate
from doclane.functions import ingest
from doclane.functions.adapters.s3_store import ARTEFACT_PREFIX, S3Store
from doclane.functions.common import document_id, save_parsed
from doclane.functions.context import Context
from doclane.functions.ports import ParsedDocument
from tests.e2e.harness import minio_record


@pytest.fixture
def s3_context(settings, moto, monkeypatch):
    for name, value in moto.env.items():
        monkeypatch.setenv(name, value)
    bucket = moto.bucket(f"docs-{uuid.uuid4().hex[:10]}")
    c = Context(settings.model_copy(update={"s3_endpoint_url": moto.endpoint, "s3_bucket": bucket}))
    yield c
    c.close()


def notify(bucket: str, key: str, **kw):
    payload = minio_record(bucket, key, **kw)
    return new_event("bucket.notification", {"Records": payload["Records"]}, subject=None, source="test")


def run(context, event):
    return ingest.handle(event, validate(event), context)


def test_an_object_in_another_bucket_of_the_endpoint_is_read_from_there(s3_context, moto):
    other = moto.bucket(f"other-{uuid.uuid4().hex[:10]}")
    put = moto.client().put_object(Bucket=other, Key="in/Q1 report.txt", Body=b"quarterly numbers")
    out = run(s3_context, notify(other, "in/Q1 report.txt", etag=put["ETag"].strip('"'), size=17))
    assert [e["type"] for e in out] == ["io.doclane.document.uploaded.v1"]
    data = out[0].data
    assert (data["bucket"], data["key"], data["size"]) == (other, "in/Q1 report.txt", 17)
    assert data["document_id"] == document_id(other, "in/Q1 report.txt")
    assert s3_context.metadata.get(data["document_id"]).bucket == other


def test_artefacts_in_the_bucket_never_loop_back_in(s3_context):
    assert isinstance(s3_context.artefacts, S3Store) and s3_context.artefacts.prefix == ARTEFACT_PREFIX
    save_parsed(s3_context, "doc1/abc.parsed.json", ParsedDocument(markdown="# x", text="x"))
    bucket = s3_context.bucket.bucket
    assert s3_context.bucket.head(ARTEFACT_PREFIX + "doc1/abc.parsed.json").size > 0  # really in the bucket
    out = run(s3_context, notify(bucket, ARTEFACT_PREFIX + "doc1/abc.parsed.json", size=10, etag="e"))
    assert out == []
    assert s3_context.metadata.list() == []


def test_a_separate_artefact_bucket_is_used_and_ignored(settings, moto, monkeypatch):
    for name, value in moto.env.items():
        monkeypatch.setenv(name, value)
    docs, parsed = moto.bucket(f"docs-{uuid.uuid4().hex[:10]}"), moto.bucket(f"parsed-{uuid.uuid4().hex[:10]}")
    c = Context(settings.model_copy(update={"s3_endpoint_url": moto.endpoint, "s3_bucket": docs,
                                            "s3_artefact_bucket": parsed}))
    save_parsed(c, "doc2/def.parsed.json", ParsedDocument(markdown="# y", text="y"))
    assert [o["Key"] for o in moto.client().list_objects_v2(Bucket=parsed)["Contents"]] == ["doc2/def.parsed.json"]
    assert run(c, notify(parsed, "doc2/def.parsed.json", size=10, etag="e")) == []
    c.close()


def test_each_refused_record_of_one_notification_gets_its_own_failed_event(settings):
    """Two bad keys in one notification: two document.failed events with
    distinct ids (a shared id would make the bus drop the second)."""
    records = minio_record("inbox", "../etc/passwd")["Records"] + minio_record("inbox", "a/../../b.pdf")["Records"]
    event = new_event("bucket.notification", {"Records": records}, subject=None, source="test")
    c = Context(settings)
    try:
        out = run(c, event)
    finally:
        c.close()
    assert [e["type"] for e in out] == ["io.doclane.document.failed.v1"] * 2
    assert {e.data["error_type"] for e in out} == {"bad_key"}
    assert len({e["id"] for e in out}) == 2 and len({e.data["document_id"] for e in out}) == 2
