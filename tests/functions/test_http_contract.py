"""The CloudEvents HTTP contract every function keeps (Knative reply
semantics), shown on the ingest function with real embedded adapters."""

import json

import pytest
from cloudevents.conversion import to_binary, to_structured

from doclane.events.envelope import new_event
from doclane.functions.context import Context
from doclane.functions.errors import Retryable
from doclane.functions.http import function_app
from doclane.functions.notifications import record_for
from doclane.functions.runtime import load


@pytest.fixture
def context(settings):
    settings.inbox.mkdir(parents=True)
    (settings.inbox / "note.txt").write_text("Dear Anna, the invoice is attached. Kind regards, Bob")
    c = Context(settings)
    yield c
    c.close()


@pytest.fixture
def client(context):
    return function_app(load("ingest"), context).test_client()


def notification(key="note.txt", size=53):
    return new_event("bucket.notification", {"Records": [record_for("created", "inbox", key, size=size)]},
                     subject=None, source="test")


def test_binary_mode_answers_with_the_next_event_in_binary_mode(client):
    headers, body = to_binary(notification())
    resp = client.post("/", headers=dict(headers), data=body)
    assert resp.status_code == 200
    assert resp.headers["ce-type"] == "io.doclane.document.uploaded.v1"
    assert resp.headers["ce-specversion"] == "1.0"
    assert resp.headers["ce-source"] == "/doclane/ingest"
    assert resp.headers["ce-id"] and resp.headers["ce-subject"] and resp.headers["ce-traceparent"]
    assert resp.headers["content-type"].startswith("application/json")
    data = resp.get_json()
    assert data["filename"] == "note.txt" and data["size"] == 53 and len(data["sha256"]) == 64


def test_structured_mode_is_accepted(client):
    headers, body = to_structured(notification())
    assert headers["content-type"] == "application/cloudevents+json"
    resp = client.post("/", headers=dict(headers), data=body)
    assert resp.status_code == 200 and resp.headers["ce-type"] == "io.doclane.document.uploaded.v1"


def test_the_same_notification_gives_the_same_event(client):
    first = client.post("/", headers=dict(to_binary(notification())[0]), data=to_binary(notification())[1])
    second = client.post("/", headers=dict(to_binary(notification())[0]), data=to_binary(notification())[1])
    assert first.headers["ce-id"] == second.headers["ce-id"]


def test_no_output_is_202(client):
    headers, body = to_binary(notification(key="missing.pdf"))
    assert client.post("/", headers=dict(headers), data=body).status_code == 202


@pytest.mark.parametrize("headers,body,why", [
    ({"content-type": "application/json"}, b"{}", "no ce- headers"),
    ({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": ', "truncated JSON"),
    ({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/x", "ce-type": "io.doclane.nope.v1",
      "content-type": "application/json"}, b"{}", "unknown type"),
    ({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/x", "ce-type": "io.doclane.document.indexed.v1",
      "content-type": "application/json"}, b'{"document_id": "x"}', "type this function does not take"),
    ({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/x", "ce-type": "io.doclane.bucket.notification.v1",
      "content-type": "application/json"}, b'{"Records": "nope"}', "data against its schema"),
])
def test_bad_events_are_400_and_not_retried(client, headers, body, why):
    resp = client.post("/", headers=headers, data=body)
    assert resp.status_code == 400, why
    assert resp.content_type == "application/problem+json"
    assert resp.get_json()["detail"]


class _DownMetadata:
    def __getattr__(self, name):
        def down(*a, **k):
            raise Retryable("metadata store unreachable")
        return down


def test_retryable_failure_is_5xx(settings):
    settings.inbox.mkdir(parents=True)
    (settings.inbox / "note.txt").write_text("x" * 53)
    app = function_app(load("ingest"), Context(settings, metadata=_DownMetadata()))
    headers, body = to_binary(notification())
    resp = app.test_client().post("/", headers=dict(headers), data=body)
    assert resp.status_code == 503
    assert "unreachable" in resp.get_json()["detail"]


def test_health_routes(client):
    for path in ("/healthz", "/_/health"):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.get_json()["function"] == "ingest"
