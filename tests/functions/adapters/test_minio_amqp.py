"""MinIO's AMQP target consumed from the RabbitMQ running here: messages
published exactly as MinIO publishes them (its exchange re-declared before
each send, headers minio-bucket/minio-event) become bucket.notification
events for ingest, once each; junk goes to the DLQ with the reason. MinIO
itself cannot run here: its payloads come from tests/fixtures/minio-notifications."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pika
import pytest

from doclane.events import codec
from doclane.events.bus import Trigger, dead_letter_queue_name
from doclane.functions import minio
from doclane.functions.adapters.minio_amqp import TRIGGER, MinioAmqpConsumer, events_of, target_from_settings
from doclane.functions.errors import ConfigError, Permanent
from tests.amqp_support import AMQP_URL, delete_broker, minio_publish, require_rabbitmq, unique_broker

SAMPLES = sorted((Path(__file__).parents[2] / "fixtures" / "minio-notifications").glob("*.json"))
INGEST = [Trigger("ingest", ("io.doclane.bucket.notification.v1",), max_attempts=3, backoff_seconds=0.1)]


def as_minio_sends(payload: dict) -> list[bytes]:
    """MinIO's AMQP target sends one message per record: {EventName, Key, Records: [record]}."""
    out = []
    for rec in payload["Records"]:
        key = f'{rec["s3"]["bucket"]["name"]}/{rec["s3"]["object"]["key"]}'
        out.append(json.dumps({"EventName": rec["eventName"], "Key": key, "Records": [rec]}).encode())
    return out


def test_every_sample_becomes_events_with_ids_derived_from_the_record():
    for path in SAMPLES:
        body = as_minio_sends(json.loads(path.read_text()))[0]
        first, again = events_of(body), events_of(body)
        assert len(first) == 1, path.name
        assert first[0]["id"] == again[0]["id"] and first[0]["type"] == "io.doclane.bucket.notification.v1"
    ids = {events_of(as_minio_sends(json.loads(p.read_text()))[0])[0]["id"] for p in SAMPLES}
    assert len(ids) == len(SAMPLES)  # different records, different ids (01 and 02: two uploads of one key)


def test_test_events_are_ignored_and_junk_is_permanent():
    assert events_of(b'{"Event": "s3:TestEvent", "Records": null}') == []
    for junk in (b"not json", b"[]", b'{"no": "records"}'):
        with pytest.raises(Permanent):
            events_of(junk)


def test_the_target_follows_the_settings(settings):
    assert target_from_settings(settings) is None  # not configured: no consumer
    configured = settings.model_copy(update={"amqp_url": AMQP_URL, "minio_amqp_exchange": "bucketevents"})
    target = target_from_settings(configured)
    assert (target.exchange, target.exchange_type, target.durable, target.auto_deleted) == \
        ("bucketevents", minio.AMQP.exchange_type, True, False)
    assert target.queue == "doclane.minio-notifications"


@pytest.fixture
def setup():
    require_rabbitmq()
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus
    from doclane.functions.adapters.metadata import open_metadata
    import tempfile

    broker = unique_broker("minio")
    target = minio.AmqpTarget(exchange=f"{broker}.minio", queue=f"{broker}.minio-notifications")
    with tempfile.TemporaryDirectory() as tmp:
        bus = RabbitBus(AMQP_URL, broker, triggers=INGEST, dedup=open_metadata(f"{tmp}/dedup.sqlite"))
        bus.declare(INGEST)
        consumer = MinioAmqpConsumer(AMQP_URL, bus, target, broker=broker)
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        yield consumer, bus, conn.channel()
        conn.close()
        bus.close()
    delete_broker(broker, INGEST, extra_queues=[target.queue, dead_letter_queue_name(TRIGGER, broker)])
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    conn.channel().exchange_delete(target.exchange)
    conn.close()


def test_minio_messages_reach_ingest_once_and_junk_is_dead_lettered(setup):
    consumer, bus, ch = setup
    consumer.declare()
    bodies = [as_minio_sends(json.loads(p.read_text()))[0] for p in SAMPLES]
    for body in bodies + bodies[:2]:  # MinIO retries: the same records again
        minio_publish(ch, consumer.target, body)
    minio_publish(ch, consumer.target, b"{not json")
    stop = threading.Event()
    worker = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    worker.start()
    got = []
    deadline = time.monotonic() + 15
    while len(got) < len(bodies) and time.monotonic() < deadline:
        for d in bus.receive("ingest", max_messages=10, wait_seconds=0.5):
            got.append(codec.loads(d.body))
            bus.ack(d)
    time.sleep(0.5)
    got += [codec.loads(d.body) for d in bus.receive("ingest", max_messages=10, wait_seconds=0.3)]
    stop.set()
    worker.join(5)
    assert len(got) == len(bodies) == len({e["id"] for e in got})  # the repeats were dropped
    keys = {e.get_data()["Records"][0]["s3"]["object"]["key"] for e in got}
    assert "myphoto.jpg" in keys and "test.txt" in keys
    method, props, body = ch.basic_get(dead_letter_queue_name(TRIGGER, consumer.broker), auto_ack=True)
    assert body == b"{not json" and "not JSON" in props.headers["x-doclane-reason"]
    assert props.headers["minio-bucket"] == "images"


def test_an_exchange_declared_otherwise_is_a_config_error(setup):
    consumer, _, ch = setup
    ch.exchange_declare(consumer.target.exchange, "direct", durable=False)  # MinIO's defaults, not ours
    with pytest.raises(ConfigError, match="MINIO_NOTIFY_AMQP_EXCHANGE_TYPE"):
        consumer.declare()
