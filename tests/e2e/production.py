"""`doclane up` on the production systems that run here, shared by the
end-to-end test of each production bus (test_rabbitmq_pipeline.py,
test_redis_pipeline.py): PostgreSQL for metadata (a fresh database per run),
Redis for live progress, moto's S3 server on loopback as the bucket, a
signed-webhook receiver. The invoices are put into the bucket with boto3 and
each bucket notification is sent twice, as MinIO does after a retry. The bus,
and the way MinIO's notifications reach doclane, are the test module's:
it gives `pipeline` its environment and a `notify`, provides a module-scoped
`run` fixture from it, and subclasses `PipelineChecks`."""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import psycopg
import pytest

from tests.conftest import require
from tests.e2e.harness import Doclane, MotoS3, Receiver, minio_record

INVOICES = sorted((Path(__file__).parents[1] / "fixtures" / "invoices").glob("*.pdf"))
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
BUCKET = "doclane-invoices"


@pytest.fixture(scope="module")
def database():
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        require(False, f"PostgreSQL at {PG_URL} is unreachable ({exc})")
    name = f"doclane_e2e_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def progress_listener(messages: list, ready: threading.Event, stop: threading.Event) -> None:
    import redis

    pubsub = redis.Redis.from_url(REDIS_URL).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("doclane:progress")
    ready.set()
    while not stop.is_set():
        msg = pubsub.get_message(timeout=0.5)
        if msg:
            messages.append(json.loads(msg["data"]))
    pubsub.close()


@contextmanager
def pipeline(root: Path, database: str, *, env: dict[str, str], notify: Callable[[Doclane, dict], None],
             bus: str) -> Iterator[SimpleNamespace]:
    """Run `doclane up` with `env` (the bus) over every invoice, each notified
    twice through `notify(doclane, notification)`, until all are done."""
    moto, receiver = MotoS3(), Receiver()
    moto.bucket(BUCKET)
    progress, ready, stop = [], threading.Event(), threading.Event()
    threading.Thread(target=progress_listener, args=(progress, ready, stop), daemon=True).start()
    assert ready.wait(10)
    doclane = Doclane(root, webhook=receiver.url, env={
        **moto.env, "DOCLANE_S3_BUCKET": BUCKET, "DOCLANE_DATABASE_URL": database, "DOCLANE_REDIS_URL": REDIS_URL,
        "DOCLANE_WEBHOOK_ALLOW": "127.0.0.1",  # the receiver listens on loopback
        **env})
    try:
        doclane.start()
        s3 = moto.client()
        for path in INVOICES:
            put = s3.put_object(Bucket=BUCKET, Key=f"in/{path.name}", Body=path.read_bytes(),
                                ContentType="application/pdf")
            note = minio_record(BUCKET, f"in/{path.name}", etag=put["ETag"].strip('"'), size=path.stat().st_size,
                                content_type="application/pdf")
            for _ in range(2):  # MinIO sends again when it did not see the confirm: changes nothing
                notify(doclane, note)
        started = time.monotonic()
        doclane.wait_done(len(INVOICES), timeout=400)
        print(f"\n{len(INVOICES)} invoices through {bus} in {time.monotonic() - started:.1f}s")
        time.sleep(1)  # the last webhooks and announcements
        yield SimpleNamespace(doclane=doclane, receiver=receiver, database=database, progress=progress)
    finally:
        doclane.stop()
        stop.set()
        receiver.close()
        moto.stop()


class PipelineChecks:
    """What every production bus must give (not collected itself: a module
    subclasses it as `Test...` beside its bus-specific checks)."""

    def test_every_invoice_ends_indexed_once_with_status_and_history_in_postgresql(self, run):
        docs = run.doclane.get("/documents", limit=100)["documents"]
        assert sorted(d["filename"] for d in docs) == sorted(p.name for p in INVOICES)  # each once, despite repeats
        assert {d["status"] for d in docs} == {"indexed"}
        with psycopg.connect(run.database) as db:
            rows = db.execute("SELECT status, count(*) FROM documents GROUP BY status").fetchall()
            assert rows == [("indexed", len(INVOICES))]
            history = db.execute("SELECT e.type FROM events e JOIN documents d ON d.document_id = e.document_id "
                                 "WHERE d.filename = %s", (INVOICES[0].name,)).fetchall()
        stages = {t.split(".")[-2] for (t,) in history}
        assert {"uploaded", "classified", "extracted", "indexed"} <= stages

    def test_a_signed_webhook_per_document(self, run):
        def delivered() -> list[str]:
            return sorted(e["data"]["filename"] for e in run.receiver.events("document.indexed.v1"))

        expected = sorted(p.name for p in INVOICES)
        deadline = time.monotonic() + 60  # notify may still be sending the last ones
        while delivered() != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        assert delivered() == expected, (delivered(), run.receiver.rejected, run.doclane.logs())

    def test_live_progress_was_announced_on_redis(self, run):
        docs = {d["document_id"] for d in run.doclane.get("/documents", limit=100)["documents"]}
        ours = [m for m in run.progress if m["document_id"] in docs]  # the channel is shared with anyone else
        assert {m["document_id"] for m in ours if m["type"] == "document.indexed"} == docs
        assert {"document.uploaded", "document.classified", "document.extracted"} <= {m["type"] for m in ours}
        assert all(set(m) == {"type", "document_id", "batch_id", "status", "time"} for m in run.progress)
