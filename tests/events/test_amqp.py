"""The CloudEvents AMQP binding: round trips in binary and structured mode,
foreign spellings and AMQP-typed values accepted, malformed messages refused
with InvalidEvent (and nothing else)."""

import json
from datetime import datetime, timezone

import pytest
from cloudevents.http import CloudEvent

from doclane.events import amqp, codec
from doclane.events.envelope import InvalidEvent, new_event

DATA = {"document_id": "d1", "bucket": "inbox", "key": "a b.pdf", "filename": "a b.pdf", "size": 3,
        "sha256": "0" * 64, "batch_id": "b1"}


@pytest.fixture
def event():
    return new_event("document.uploaded", DATA, subject="d1", source="test")


def test_binary_mode_puts_attributes_in_prefixed_properties_and_data_in_the_body(event):
    msg = amqp.to_binary(event)
    assert msg.content_type == "application/json"
    assert msg.headers["cloudEvents:id"] == event["id"] and msg.headers["cloudEvents:specversion"] == "1.0"
    assert msg.headers["cloudEvents:traceparent"] == event["traceparent"]
    assert "cloudEvents:datacontenttype" not in msg.headers  # it is the content type
    assert json.loads(msg.body) == event.get_data()


@pytest.mark.parametrize("mode", [amqp.to_binary, amqp.to_structured])
def test_round_trip(event, mode):
    back = amqp.from_message(mode(event))
    assert codec.dumps(back) == codec.dumps(event)


def test_structured_mode_is_the_json_format(event):
    msg = amqp.to_structured(event)
    assert msg.content_type == "application/cloudevents+json" and msg.headers == {}
    assert amqp.is_structured("application/cloudevents+json; charset=utf-8")
    assert amqp.from_message(amqp.AmqpMessage({}, "application/cloudevents+json; charset=utf-8", msg.body))["id"] == event["id"]


def test_non_json_data_travels_as_bytes():
    ev = CloudEvent({"type": "t", "source": "/s", "id": "1", "datacontenttype": "application/pdf"}, b"%PDF-1.7")
    msg = amqp.to_binary(ev)
    assert msg.body == b"%PDF-1.7" and msg.content_type == "application/pdf"
    assert amqp.from_message(msg).get_data() == b"%PDF-1.7"


def test_foreign_spellings_and_amqp_types_are_accepted():
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    msg = amqp.AmqpMessage({"cloudEvents_id": b"42", "cloudEvents_source": "/minio", "cloudEvents:type": "x.y",
                            "cloudEvents:specversion": "1.0", "cloudEvents:time": when, "minio-bucket": "b"},
                           "application/json", b'{"k": 1}')
    ev = amqp.from_message(msg)
    assert (ev["id"], ev["source"], ev["time"]) == ("42", "/minio", "2026-01-02T03:04:05Z")
    assert ev.get_data() == {"k": 1} and "minio-bucket" not in ev.get_attributes()


def test_an_empty_body_is_no_data():
    msg = amqp.AmqpMessage({"cloudEvents:id": "1", "cloudEvents:source": "/s", "cloudEvents:type": "t",
                            "cloudEvents:specversion": "1.0"}, None, b"")
    assert amqp.from_message(msg).get_data() is None


@pytest.mark.parametrize("msg, says", [
    (amqp.AmqpMessage({}, "application/json", b"{}"), "no cloudEvents:"),
    (amqp.AmqpMessage({"minio-bucket": "b"}, None, b"\x00"), "no cloudEvents:"),
    (amqp.AmqpMessage({"cloudEvents:id": "1", "cloudEvents:type": "t", "cloudEvents:specversion": "1.0"},
                      "application/json", b"{}"), "cloudEvents:source"),
    (amqp.AmqpMessage({"cloudEvents:id": "1", "cloudEvents:source": "/s", "cloudEvents:type": "t",
                       "cloudEvents:specversion": "1.0"}, "application/json", b"{not json"), "not the JSON"),
    (amqp.AmqpMessage({"cloudEvents:id": b"\xff", "cloudEvents:source": "/s", "cloudEvents:type": "t",
                       "cloudEvents:specversion": "1.0"}, None, b""), "UTF-8"),
    (amqp.AmqpMessage({}, "application/cloudevents+json", b'{"specversion": "1.0", "id": '), "not valid JSON"),
    (amqp.AmqpMessage({}, "application/cloudevents-batch+json", b"[]"), "batched"),
])
def test_malformed_messages_are_invalid_events(msg, says):
    with pytest.raises(InvalidEvent, match=says):
        amqp.from_message(msg)
