"""`doclane up` on the production systems that run here: RabbitMQ as the bus
(a broker name of its own: DOCLANE_BROKER), PostgreSQL for metadata (a fresh
database per run), Redis for live progress, and moto's S3 server on loopback
as the bucket. The invoices are put into the bucket with boto3 and MinIO's
AMQP target is played exactly as MinIO sends (its exchange re-declared,
one message per record, every message twice as after a retry), so the
documents come in through functions/adapters/minio_amqp.py. MinIO itself
cannot run here; moto stores objects but sends no notifications."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pika
import psycopg
import pytest

from doclane.events.bus import dead_letter_queue_name, exchange_name, queue_name
from doclane.functions import minio
from doclane.functions.runtime import STAGES, triggers
from tests.amqp_support import AMQP_URL, delete_broker, minio_publish, queue_exists, require_rabbitmq
from tests.conftest import require
from tests.e2e.harness import Doclane, MotoS3, Receiver, minio_record

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

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


@pytest.fixture(scope="module")
def run(tmp_path_factory, database):
    require_rabbitmq()
    broker = f"e2e-{uuid.uuid4().hex[:8]}"
    target = minio.AmqpTarget(exchange=f"{broker}.minio", queue=f"{broker}.minio-notifications")
    moto, receiver = MotoS3(), Receiver()
    moto.bucket(BUCKET)
    progress, ready, stop = [], threading.Event(), threading.Event()
    threading.Thread(target=progress_listener, args=(progress, ready, stop), daemon=True).start()
    assert ready.wait(10)
    doclane = Doclane(tmp_path_factory.mktemp("e2e-rabbitmq"), webhook=receiver.url, env={
        **moto.env, "DOCLANE_S3_BUCKET": BUCKET, "DOCLANE_AMQP_URL": AMQP_URL, "DOCLANE_BROKER": broker,
        "DOCLANE_DATABASE_URL": database, "DOCLANE_REDIS_URL": REDIS_URL,
        "DOCLANE_MINIO_AMQP_EXCHANGE": target.exchange, "DOCLANE_MINIO_AMQP_QUEUE": target.queue})
    try:
        doclane.start()
        s3 = moto.client()
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        for path in INVOICES:
            put = s3.put_object(Bucket=BUCKET, Key=f"in/{path.name}", Body=path.read_bytes(),
                                ContentType="application/pdf")
            note = minio_record(BUCKET, f"in/{path.name}", etag=put["ETag"].strip('"'), size=path.stat().st_size,
                                content_type="application/pdf")
            for _ in range(2):  # MinIO sends again when it did not see the confirm: changes nothing
                minio_publish(conn.channel(), target, note)
        conn.close()
        started = time.monotonic()
        doclane.wait_done(len(INVOICES), timeout=400)
        print(f"\n{len(INVOICES)} invoices through RabbitMQ in {time.monotonic() - started:.1f}s")
        time.sleep(1)  # the last webhooks and announcements
        yield SimpleNamespace(doclane=doclane, receiver=receiver, broker=broker, database=database,
                              progress=progress, target=target)
    finally:
        doclane.stop()
        stop.set()
        receiver.close()
        moto.stop()
        settings = SimpleNamespace(max_attempts=5, retry_backoff=1.0, parse_timeout=60.0)  # doclane up's defaults
        delete_broker(broker, triggers(settings), extra_queues=[target.queue, dead_letter_queue_name("minio", broker)])
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        conn.channel().exchange_delete(target.exchange)
        conn.close()


def test_every_invoice_ends_indexed_once_with_status_and_history_in_postgresql(run):
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


def test_a_signed_webhook_per_document(run):
    indexed = run.receiver.events("document.indexed.v1")
    assert sorted(e["data"]["filename"] for e in indexed) == sorted(p.name for p in INVOICES)


def test_the_rabbitmq_topology_is_in_place_and_nothing_was_dead_lettered(run):
    for stage in STAGES:
        assert queue_exists(queue_name(stage, run.broker)) and queue_exists(dead_letter_queue_name(stage, run.broker))
    assert queue_exists(run.target.queue)
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    conn.channel().exchange_declare(exchange_name(run.broker), passive=True)
    conn.close()
    queues = run.doclane.get("/stats")["queues"]
    assert set(STAGES) <= set(queues) and all(q["dead"] == 0 and q["ready"] == 0 for q in queues.values())


def test_live_progress_was_announced_on_redis(run):
    docs = {d["document_id"] for d in run.doclane.get("/documents", limit=100)["documents"]}
    ours = [m for m in run.progress if m["document_id"] in docs]  # the channel is shared with anyone else
    assert {m["document_id"] for m in ours if m["type"] == "document.indexed"} == docs
    assert {"document.uploaded", "document.classified", "document.extracted"} <= {m["type"] for m in ours}
    assert all(set(m) == {"type", "document_id", "batch_id", "status", "time"} for m in run.progress)
