"""Malformed CloudEvents and bus messages, every way in: a stage's HTTP
endpoint (structured and binary mode, its own app and the gateway's
/functions/{name}), the embedded SQLite bus and RabbitMQ (raw bytes and
headers published with pika). Each is refused with a 4xx problem-details
reason or dead-lettered with a reason: never a 5xx, never a crashed worker."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pika
import pytest

from doclane.events.bus import dead_letter_queue_name, retry_exchange_name
from doclane.functions.binding import consume, handle_delivery
from doclane.functions.context import Context
from doclane.functions.http import function_app
from doclane.functions.ports import DocumentRecord
from doclane.functions.runtime import load, triggers
from doclane.local.gateway import create_app
from tests.amqp_support import AMQP_URL, delete_broker, require_rabbitmq, unique_broker

NOTIFICATION = "io.doclane.bucket.notification.v1"
GOOD = {"specversion": "1.0", "id": "good-1", "source": "/test", "type": NOTIFICATION,
        "datacontenttype": "application/json", "data": {"Records": []}}
ADMIN = "events-admin-key"
LIMIT_KB = 64


def event_with(**changes) -> bytes:
    """GOOD with attributes changed (a value of ... removes the attribute)."""
    body = {k: v for k, v in GOOD.items() if changes.get(k, None) is not ...}
    body.update({k: v for k, v in changes.items() if v is not ...})
    return json.dumps(body).encode()


def record(**s3) -> dict:
    return {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": s3}]}


# (name, structured-mode body, a phrase of the reason)
STRUCTURED = [
    ("truncated JSON", json.dumps(GOOD).encode()[:37], "JSON"),
    ("not UTF-8", b"\xff\xfe\x00\x01garbage", "JSON"),
    ("a JSON array", b"[1, 2, 3]", ""),
    ("no specversion", event_with(specversion=...), "specversion"),
    ("no id", event_with(id=...), "id"),
    ("no source", event_with(source=...), "source"),
    ("no type", event_with(type=...), "type"),
    ("specversion 0.3", event_with(specversion="0.3"), "specversion"),
    ("specversion 2.0", event_with(specversion="2.0"), "specversion"),
    ("specversion a number", event_with(specversion=1.0), "specversion"),
    ("unknown type", event_with(type="com.example.unknown.v1"), "unknown event type"),
    ("type a number", event_with(type=42), "type"),
    ("type a list", event_with(type=[NOTIFICATION]), "type"),
    ("type an object", event_with(type={"x": 1}), "type"),
    ("id a number", event_with(id=7), "'id' must be a string"),
    ("source a list", event_with(source=["/a"]), "'source' must be a string"),
    ("subject an object", event_with(subject={"a": 1}), "'subject' must be a string"),
    ("time not a timestamp", event_with(time="yesterday at noon"), "RFC 3339"),
    ("time a number", event_with(time=1700000000), "'time' must be a string"),
    ("datacontenttype a number", event_with(datacontenttype=5), "'datacontenttype' must be a string"),
    ("datacontenttype XML", event_with(datacontenttype="application/xml"), "must be JSON"),
    ("dataschema of another type", event_with(dataschema="urn:doclane:schema:io.doclane.document.indexed.v1"),
     "dataschema"),
    ("extension an object", event_with(traceparent={"x": 1}), "extension attribute"),
    ("extension a float", event_with(priority=0.5), "extension attribute"),
    ("extension name not [a-z0-9]", event_with(my_ext="x"), "extension attribute name"),
    ("data a string", event_with(data="hello"), "not a JSON object"),
    ("data a list", event_with(data=[1, 2]), "schema"),
    ("data missing", event_with(data=...), "schema"),
    ("Records not a list", event_with(data={"Records": "all of them"}), "Records"),
    ("a record not an object", event_with(data={"Records": [7]}), "Records"),
    ("s3 not an object", event_with(data={"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": "x"}]}), "s3"),
    ("size not a number", event_with(data=record(bucket={"name": "inbox"}, object={"key": "a.txt", "size": "big"})),
     "size"),
    ("key a number", event_with(data=record(bucket={"name": "inbox"}, object={"key": 12})), "object key"),
    ("bucket a list", event_with(data=record(bucket=["inbox"], object={"key": "a.txt"})), "s3.bucket"),
    ("data_base64 garbage", event_with(data=..., data_base64="!!not base64!!"), ""),
]


@pytest.fixture
def context(settings):
    c = Context(settings.model_copy(update={"max_event_kb": LIMIT_KB, "api_key": ADMIN}))
    c.bus.declare(triggers(c.settings))
    yield c
    c.close()


def assert_refused(resp, phrase: str) -> None:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True))
    assert resp.content_type == "application/problem+json"
    assert phrase.lower() in resp.json["detail"].lower(), resp.json


@pytest.mark.parametrize("name, body, phrase", STRUCTURED, ids=[c[0] for c in STRUCTURED])
def test_structured_mode_over_http_is_refused_with_a_reason(context, name, body, phrase):
    own = function_app(load("ingest"), context).test_client()
    gateway = create_app(context).test_client()
    headers = {"content-type": "application/cloudevents+json"}
    assert_refused(own.post("/", data=body, headers=headers), phrase)
    assert_refused(gateway.post("/functions/ingest", data=body, headers={**headers, "Authorization": f"Bearer {ADMIN}"}),
                   phrase)


BINARY_HEADERS = {"ce-specversion": "1.0", "ce-id": "bin-1", "ce-source": "/test", "ce-type": NOTIFICATION,
                  "content-type": "application/json"}
OK_DATA = json.dumps({"Records": []}).encode()


def binary(drop: str = "", **changes) -> dict:
    headers = {k: v for k, v in BINARY_HEADERS.items() if k != drop}
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return headers


BINARY = [
    ("no ce-specversion", binary("ce-specversion"), OK_DATA, "ce-specversion"),
    ("no ce-id", binary("ce-id"), OK_DATA, "ce-id"),
    ("no ce-source", binary("ce-source"), OK_DATA, "ce-source"),
    ("no ce-type", binary("ce-type"), OK_DATA, "ce-type"),
    ("ce-specversion 9.9", binary(ce_specversion="9.9"), OK_DATA, "specversion"),
    ("ce-specversion 0.3", binary(ce_specversion="0.3"), OK_DATA, "specversion"),
    ("unknown ce-type", binary(ce_type="com.example.unknown.v1"), OK_DATA, "unknown event type"),
    ("ce-time garbage", binary(ce_time="the day after"), OK_DATA, "RFC 3339"),
    ("truncated JSON data", binary(), OK_DATA[:6], "not a JSON object"),
    ("XML data", binary(content_type="application/xml"), b"<Records/>", "must be JSON"),
    ("empty data", binary(), b"", "schema"),
    ("data a list", binary(), b"[1, 2]", "schema"),
    ("no CloudEvents headers at all", {"content-type": "application/json"}, OK_DATA, "specversion"),
]


@pytest.mark.parametrize("name, headers, body, phrase", BINARY, ids=[c[0] for c in BINARY])
def test_binary_mode_over_http_is_refused_with_a_reason(context, name, headers, body, phrase):
    client = function_app(load("ingest"), context).test_client()
    assert_refused(client.post("/", data=body, headers=headers), phrase)


def test_the_well_formed_event_is_taken(context):
    """The batteries above differ from this one in one thing each."""
    client = function_app(load("ingest"), context).test_client()
    assert client.post("/", data=event_with(), headers={"content-type": "application/cloudevents+json"}).status_code == 202
    assert client.post("/", data=OK_DATA, headers=BINARY_HEADERS).status_code == 202


def huge() -> bytes:
    return event_with(data={"Records": [], "padding": "x" * (LIMIT_KB * 1024 + 1)})


def test_an_event_over_the_size_limit_is_413_with_the_setting(context):
    client = function_app(load("ingest"), context).test_client()
    resp = client.post("/", data=huge(), headers={"content-type": "application/cloudevents+json"})
    assert resp.status_code == 413 and "DOCLANE_MAX_EVENT_KB" in resp.json["detail"]


def test_a_chunked_oversized_event_is_read_no_further_than_the_limit(context):
    """Over a real server (waitress, as in production): no Content-Length, so
    the body is read up to the limit and then refused."""
    from waitress.server import create_server

    server = create_server(function_app(load("ingest"), context), host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        body = huge()
        chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))
        resp = httpx.post(f"http://127.0.0.1:{server.effective_port}/", content=chunks, timeout=30,
                          headers={"content-type": "application/cloudevents+json"})
        assert resp.status_code == 413 and "DOCLANE_MAX_EVENT_KB" in resp.json()["detail"]
    finally:
        server.close()


# --------------------------------------------------------------------------- the embedded bus
def test_malformed_messages_on_the_embedded_bus_are_dead_lettered_and_the_worker_goes_on(context):
    bus, fn = context.bus, load("ingest")
    bodies = [body for _, body, _ in STRUCTURED] + [huge()]
    for body in bodies:
        bus.enqueue_raw("ingest", body)
    bus.enqueue_raw("ingest", event_with(id="good-after-the-bad"))
    settled = consume(bus, fn, context, idle_seconds=1.5, max_attempts=context.settings.max_attempts)
    assert settled == len(bodies) + 1  # one pass each: nothing retried, nothing left behind
    dead = bus.dead_letters("ingest")
    assert len(dead) == len(bodies) and all(d.reason for d in dead)
    reasons = {d.reason for d in dead}
    assert any("DOCLANE_MAX_EVENT_KB" in r for r in reasons) and any("RFC 3339" in r for r in reasons)
    assert all(d.attempts == 1 for d in dead)  # refused at once, never retried


def test_a_document_event_with_bad_data_fails_its_document(context):
    """The reason reaches the document (status failed) and document.failed,
    even though the event's own data (a number as batch_id) is what was wrong."""
    bus = context.bus
    context.metadata.register(DocumentRecord(document_id="doc-1", bucket="inbox", key="a.txt", filename="a.txt",
                                             content_type="text/plain", size=3, sha256="0" * 64, status="uploaded",
                                             batch_id="batch-1"))
    body = json.dumps({
        "specversion": "1.0", "id": "up-1", "source": "/test", "type": "io.doclane.document.uploaded.v1",
        "subject": "doc-1", "datacontenttype": "application/json",
        "data": {"document_id": "doc-1", "bucket": "inbox", "key": "a.txt", "filename": "a.txt", "size": "three",
                 "sha256": "0" * 64, "batch_id": 123}}).encode()
    bus.enqueue_raw("classify", body)
    (delivery,) = bus.receive("classify", wait_seconds=2)
    assert handle_delivery(bus, load("classify"), delivery, context, context.settings.max_attempts) == "dead"
    record = context.metadata.get("doc-1")
    assert record.status == "failed" and "does not match its schema" in record.error
    (failed,) = bus.receive("notify", wait_seconds=2)
    data = json.loads(failed.body)["data"]
    assert data["batch_id"] == "batch-1" and "schema" in data["reason"]


# --------------------------------------------------------------------------- RabbitMQ
@pytest.fixture
def rabbit(context):
    require_rabbitmq()
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus

    broker = unique_broker("hardening")
    trigs = [t for t in triggers(context.settings) if t.name == "ingest"]
    bus = RabbitBus(AMQP_URL, broker)
    bus.declare(trigs)
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    yield bus, broker, conn.channel()
    conn.close()
    bus.close()
    delete_broker(broker, trigs)


def test_raw_rabbitmq_messages_are_dead_lettered_with_a_reason(context, rabbit):
    bus, broker, channel = rabbit

    def publish(body: bytes, content_type: str | None = None, headers: dict | None = None) -> None:
        channel.basic_publish(retry_exchange_name(broker), "ingest", body,
                              pika.BasicProperties(content_type=content_type, headers=headers, delivery_mode=2))

    structured = "application/cloudevents+json"
    bad = 0
    for _, body, _ in STRUCTURED:  # structured mode
        publish(body, structured)
        bad += 1
    ce = {"cloudEvents:specversion": "1.0", "cloudEvents:id": "amqp-1", "cloudEvents:source": "/test",
          "cloudEvents:type": NOTIFICATION}
    for headers, content_type, body in [  # binary mode: application properties of every AMQP type
        ({**ce, "cloudEvents:type": 42}, "application/json", OK_DATA),
        ({**ce, "cloudEvents:subject": {"nested": "table"}}, "application/json", OK_DATA),
        ({**ce, "cloudEvents:specversion": "0.3"}, "application/json", OK_DATA),
        ({**ce, "cloudEvents:type": "com.example.unknown.v1"}, "application/json", OK_DATA),
        ({k: v for k, v in ce.items() if k != "cloudEvents:id"}, "application/json", OK_DATA),
        (ce, "application/json", OK_DATA[:5]),  # truncated JSON data
        (ce, "text/plain", b"Records: none"),
        ({"x-unrelated": "1"}, None, b"\x00\x01 not a CloudEvent in either mode"),
        ({**ce, "cloudEvents:time": "soon"}, "application/json", OK_DATA),
    ]:
        publish(body, content_type, headers)
        bad += 1
    publish(huge(), structured)
    bad += 1
    publish(event_with(id="good-after-the-bad"), structured)

    settled = consume(bus, load("ingest"), context, idle_seconds=3, max_attempts=context.settings.max_attempts)
    assert settled >= 1  # the good one (the worst were dead-lettered by the bus before reaching the function)
    deadline = time.monotonic() + 30  # dead-lettering is a publish the broker confirms: poll for it
    while len(bus.dead_letters("ingest")) < bad and time.monotonic() < deadline:
        time.sleep(0.2)
    dead = bus.dead_letters("ingest")
    assert len(dead) == bad, [d.reason for d in dead]
    assert all(d.reason for d in dead)
    assert any("DOCLANE_MAX_EVENT_KB" in d.reason for d in dead)
    assert bus.ready_now("ingest") == 0  # nothing stuck, nothing requeued
    channel.queue_declare(dead_letter_queue_name("ingest", broker), passive=True)
