"""A RabbitmqSource's dev.knative.rabbitmq.event carrying MinIO's AMQP
notification becomes a doclane bucket notification that ingest takes."""

import json

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from doclane.events.envelope import InvalidEvent
from doclane.functions.context import Context
from doclane.functions.http import function_app
from doclane.functions.runtime import load
from doclane.functions.sources import RABBITMQ_SOURCE_TYPE, normalise

SOURCE = "/apis/v1/namespaces/doclane/rabbitmqsources/minio-notifications#doclane.minio-notifications"


def rabbit_event(body: bytes, id_: str = "m-1") -> CloudEvent:
    # binary mode, as the source sends it: the AMQP body is the data, as bytes
    return CloudEvent({"type": RABBITMQ_SOURCE_TYPE, "source": SOURCE, "id": id_,
                       "datacontenttype": "application/json"}, body)


def test_minio_message_becomes_a_bucket_notification(fixtures):
    body = (fixtures / "minio-notifications" / "01_minio-docs-amqp-rabbitmq.json").read_bytes()
    event = normalise(rabbit_event(body))
    assert event["type"] == "io.doclane.bucket.notification.v1"
    assert event.get_data()["Records"][0]["s3"]["object"]["key"] == "myphoto.jpg"
    assert normalise(rabbit_event(body))["id"] == event["id"]  # a redelivery is the same event
    assert normalise(rabbit_event(body, "m-2"))["id"] != event["id"]


def test_doclane_events_pass_through():
    event = CloudEvent({"type": "io.doclane.document.indexed.v1", "source": "/x", "id": "1"}, {"document_id": "d"})
    assert normalise(event) is event


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"Records": "nope"}'])
def test_bad_messages_are_refused(body):
    with pytest.raises(InvalidEvent):
        normalise(rabbit_event(body))


def test_ingest_takes_the_source_event_over_http(settings):
    settings.inbox.mkdir(parents=True)
    (settings.inbox / "note.txt").write_text("hello")
    record = json.loads((__import__("tests.conftest", fromlist=["FIXTURES"]).FIXTURES
                         / "minio-notifications" / "01_minio-docs-amqp-rabbitmq.json").read_text())
    record["Records"][0]["s3"]["bucket"]["name"] = "inbox"
    record["Records"][0]["s3"]["object"].update(key="note.txt", size=5)
    headers, body = to_binary(rabbit_event(json.dumps(record).encode()))
    context = Context(settings)
    try:
        resp = function_app(load("ingest"), context).test_client().post("/", headers=dict(headers), data=body)
    finally:
        context.close()
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["ce-type"] == "io.doclane.document.uploaded.v1"
    assert resp.get_json()["filename"] == "note.txt"
