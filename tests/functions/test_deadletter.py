"""The Knative dead-letter sink: a document event the broker gave up on marks
the document failed and sends document.failed to K_SINK (the broker)."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from cloudevents.conversion import to_binary

from doclane.events.envelope import new_event
from doclane.functions.context import Context
from doclane.functions.ports import DocumentRecord
from doclane.functions import main


class _Sink(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        _Sink.received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sink(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("K_SINK", f"http://127.0.0.1:{server.server_port}/")
    _Sink.received = []
    yield _Sink.received
    server.shutdown()


@pytest.fixture
def client(settings, monkeypatch):
    context = Context(settings)
    monkeypatch.setattr(main, "_context", lambda: context)
    context.metadata.register(DocumentRecord(document_id="doc-1", bucket="inbox", key="a.pdf", filename="a.pdf",
                                             content_type="application/pdf", size=3, sha256="0" * 64,
                                             status="uploaded", batch_id=None))
    yield context, main.create_app("notify").test_client()  # what the notify image serves
    context.close()


def dead(event, dest: str, code: int = 500, data: bytes = b"boom") -> tuple[dict, bytes]:
    event["knativeerrordest"] = dest
    event["knativeerrorcode"] = str(code)
    event["knativeerrordata"] = base64.b64encode(data).decode()
    headers, body = to_binary(event)
    return dict(headers), body


def uploaded():
    return new_event("document.uploaded", {"document_id": "doc-1", "bucket": "inbox", "key": "a.pdf",
                                           "filename": "a.pdf", "size": 3, "sha256": "0" * 64},
                     subject="doc-1", source="ingest")


def test_a_dead_document_event_fails_the_document(client, sink):
    context, http = client
    headers, body = dead(uploaded(), "http://classify.doclane.svc.cluster.local")
    resp = http.post("/deadletter", headers=headers, data=body)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    record = context.metadata.get("doc-1")
    assert record.status == "failed" and "classify" in record.error and "boom" in record.error
    assert [e["type"] for e in sink] == ["io.doclane.document.failed.v1"]
    assert sink[0]["data"]["stage"] == "classify" and sink[0]["data"]["error_type"] == "dead_lettered"


def test_a_dead_webhook_delivery_does_not_fail_the_document(client, sink):
    context, http = client
    event = new_event("document.indexed", {"document_id": "doc-1", "filename": "a.pdf", "category": "invoice",
                                           "chunks": 1, "fields": {}}, subject="doc-1", source="index")
    headers, body = dead(event, "http://notify.doclane.svc.cluster.local")
    assert http.post("/deadletter", headers=headers, data=body).status_code == 202
    assert context.metadata.get("doc-1").status == "uploaded" and sink == []


def test_garbage_is_400(client):
    _, http = client
    assert http.post("/deadletter", data=b"{}", headers={"content-type": "application/json"}).status_code == 400
