"""`doclane up` with its documents in S3: moto's server on loopback is the
bucket (a real HTTP S3 API), files are put with boto3 and MinIO-format
webhook notifications are POSTed to the gateway with the Bearer token, as
MinIO's webhook target would (moto stores objects but sends no notifications).
Artefacts live in the same bucket under .doclane/artefacts/ and never loop
back in; POST /upload writes to the bucket and its file comes back in through
the notification; an ObjectRemoved notification removes the document."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from doclane.functions.adapters.s3_store import ARTEFACT_PREFIX
from doclane.functions.minio_webhook import PATH
from tests.e2e.harness import AUTH, Doclane, MotoS3, minio_record

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIXTURES = Path(__file__).parents[1] / "fixtures"
INVOICES = [FIXTURES / "invoices" / n for n in ("AzureInterior.pdf", "FlipkartInvoice.pdf", "coolblue1.pdf")]
TOKEN = "minio-webhook-token-for-the-test"
BUCKET = "doclane-docs"


def key_of(path: Path) -> str:
    return f"incoming/2024 Q1/{path.stem} copy{path.suffix}"  # spaces: URL-escaped in the notification


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-s3")
    moto = MotoS3()
    moto.bucket(BUCKET)
    doclane = Doclane(root, env={**moto.env, "DOCLANE_S3_BUCKET": BUCKET, "DOCLANE_MINIO_WEBHOOK_TOKEN": TOKEN})
    doclane.start()
    (doclane.inbox / "ignored.txt").write_text("the inbox is not watched when S3 is configured")
    s3 = moto.client()
    for path in INVOICES:
        put = s3.put_object(Bucket=BUCKET, Key=key_of(path), Body=path.read_bytes(), ContentType="application/pdf")
        note = minio_record(BUCKET, key_of(path), etag=put["ETag"].strip('"'), size=path.stat().st_size,
                            content_type="application/pdf")
        for _ in range(2):  # MinIO retries until it sees a 2xx: the repeat must change nothing
            assert post(doclane, note).status_code == 200
    doclane.wait_done(len(INVOICES))
    yield doclane, moto
    doclane.stop()
    moto.stop()


def post(doclane: Doclane, payload: dict, token: str = TOKEN) -> httpx.Response:
    return httpx.post(doclane.url + PATH, json=payload, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def documents(doclane) -> dict[str, dict]:
    return {d["filename"]: d for d in doclane.get("/documents", limit=100)["documents"]}


def wait_for(predicate, what: str, doclane: Doclane, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen in {timeout}s\n{doclane.logs()}")


def test_objects_notified_by_webhook_end_indexed_once(run):
    doclane, _ = run
    docs = documents(doclane)
    assert set(docs) == {Path(key_of(p)).name for p in INVOICES}  # once each, and not the inbox file
    for doc in docs.values():
        assert doc["status"] == "indexed", doc
        assert doc["category"] == "invoice"
    hits = doclane.get("/search", q="invoice total amount due", mode="hybrid", limit=10)["results"]
    assert {h["filename"] for h in hits} == set(docs)
    assert doclane.get("/search", q="Flipkart", mode="keyword")["results"][0]["filename"] == "FlipkartInvoice copy.pdf"


def test_parsed_documents_are_kept_in_the_bucket_under_the_artefact_prefix(run):
    doclane, moto = run
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=BUCKET, Prefix=ARTEFACT_PREFIX)["Contents"]]
    ids = {d["document_id"] for d in documents(doclane).values()}
    assert {k[len(ARTEFACT_PREFIX):].split("/")[0] for k in keys} == ids


def test_a_wrong_token_is_refused(run):
    doclane, _ = run
    note = minio_record(BUCKET, "incoming/x.pdf", etag="0" * 32, size=1)
    assert post(doclane, note, token="not-the-token").status_code == 401
    assert httpx.post(doclane.url + PATH, json=note, timeout=10).status_code == 401


def test_an_upload_comes_back_through_the_notification_and_artefacts_do_not(run):
    doclane, moto = run
    before = len(documents(doclane))
    artefact = moto.client().list_objects_v2(Bucket=BUCKET, Prefix=ARTEFACT_PREFIX)["Contents"][0]
    # What MinIO would send for doclane's own write: ingest must ignore it.
    assert post(doclane, minio_record(BUCKET, artefact["Key"], etag=artefact["ETag"].strip('"'),
                                      size=artefact["Size"])).status_code == 200
    path = FIXTURES / "invoices" / "QualityHosting.pdf"
    resp = httpx.post(doclane.url + "/upload", files={"file": (path.name, path.read_bytes(), "application/pdf")},
                      headers=AUTH, timeout=60)
    assert resp.status_code == 202, resp.text
    upload = resp.json()["documents"][0]
    head = moto.client().head_object(Bucket=BUCKET, Key=upload["key"])  # the bytes are in the bucket
    assert head["ContentLength"] == path.stat().st_size
    assert post(doclane, minio_record(BUCKET, upload["key"], etag=head["ETag"].strip('"'),
                                      size=head["ContentLength"], content_type="application/pdf")).status_code == 200
    done = wait_for(lambda: doclane.get(f"/upload-status/{upload['document_id']}")["status"] == "indexed",
                    "the upload indexed", doclane)
    assert done
    assert len(documents(doclane)) == before + 1  # the upload, and no artefact taken for a document


def test_an_object_removed_notification_removes_the_document(run):
    doclane, moto = run
    path = INVOICES[0]
    doc = documents(doclane)[Path(key_of(path)).name]
    moto.client().delete_object(Bucket=BUCKET, Key=key_of(path))
    assert post(doclane, minio_record(BUCKET, key_of(path), removed=True)).status_code == 200
    wait_for(lambda: httpx.get(f"{doclane.url}/documents/{doc['document_id']}", headers=AUTH, timeout=10).status_code == 404,
             "the document removed", doclane)
    left = moto.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{ARTEFACT_PREFIX}{doc['document_id']}/")
    assert left.get("KeyCount", 0) == 0
