"""The publish-only HTTP bus (DOCLANE_BUS=http, functions/adapters/http_bus.py):
events POSTed to a broker ingress in CloudEvents binary mode, retried on 5xx,
refused on 4xx; and the api publishing through it (POST /reprocess, batch
upload, MinIO's webhook), as on Knative.

The broker is not available here (no Kubernetes): a real HTTP server on
loopback (fake_http.FakeServer) stands in for the broker ingress, records
every request as it came over the wire and answers as Knative's ingress does
(202 taken, 4xx refused, 5xx failed). What the broker then does (Triggers
pushing to the functions) is played by hand in one test: the recorded
request is handed, unchanged, to the ingest function's app."""

from __future__ import annotations

import io
import json
import socket

import pytest
from click.testing import CliRunner
from cloudevents.http import CloudEvent, from_http

from doclane.events.envelope import InvalidEvent, new_event
from doclane.functions import main
from doclane.functions.adapters.http_bus import BrokerRefused, BrokerUnavailable, HttpBus, PublishOnly
from doclane.functions.context import Context
from doclane.functions.errors import ConfigError, Permanent, Retryable
from doclane.functions.http import function_app
from doclane.functions.minio_webhook import PATH as MINIO_WEBHOOK
from doclane.functions.ports import DocumentRecord
from doclane.functions.runtime import load
from doclane.functions.settings import load as load_settings
from doclane.local.cli import main as cli
from tests.functions.adapters.fake_http import FakeServer, Recorded
from tests.infra.manifests import load_kustomization

INGRESS = "/doclane/doclane"  # the path of a Knative broker's ingress URL: /<namespace>/<broker>
KEY = "http-bus-test-admin-key"
MINIO_TOKEN = "http-bus-test-minio-token"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def broker():
    server = FakeServer()
    server.route("POST", INGRESS, (202, None))  # Knative's ingress: 202 Accepted, no body
    yield server
    server.close()


def sent(broker: FakeServer) -> list[Recorded]:
    return broker.find("POST", INGRESS)


def headers_of(rec: Recorded) -> dict[str, str]:
    return {k.lower(): v for k, v in rec.headers.items()}


def as_event(rec: Recorded) -> CloudEvent:
    """The request parsed as the broker's ingress does: the SDK's HTTP binding."""
    return from_http(headers_of(rec), rec.body)


def uploaded(doc_id: str = "doc-1") -> CloudEvent:
    return new_event("document.uploaded", {"document_id": doc_id, "bucket": "inbox", "key": f"{doc_id}.pdf",
                                           "filename": f"{doc_id}.pdf", "size": 3, "sha256": "0" * 64},
                     subject=doc_id, source="reprocess")


def fast_bus(broker: FakeServer, **kw) -> HttpBus:
    return HttpBus(broker.url + INGRESS, backoff=0.01, **kw)


# --------------------------------------------------------------------------- the wire
def test_a_published_event_arrives_in_binary_mode_with_every_attribute(broker):
    event = uploaded()
    bus = fast_bus(broker)
    try:
        assert bus.publish(event) is True
    finally:
        bus.close()
    [rec] = sent(broker)
    headers = headers_of(rec)
    # binary content mode: each attribute a ce- header, the data alone the body
    attributes = event.get_attributes()
    for name, value in attributes.items():
        if name != "datacontenttype":
            assert headers[f"ce-{name}"] == str(value), name
    assert headers["content-type"] == "application/json" == attributes["datacontenttype"]
    assert headers["ce-specversion"] == "1.0" and headers["ce-traceparent"].startswith("00-")
    assert headers["traceparent"] == event["traceparent"]  # W3C trace context for the broker's own spans
    assert json.loads(rec.body) == event.data
    assert not any(k.startswith("ce-") for k in json.loads(rec.body))  # not a structured envelope
    parsed = as_event(rec)
    assert parsed.get_attributes() == attributes and parsed.data == event.data


@pytest.mark.parametrize("first", [500, 503, 429])
def test_a_failed_attempt_is_retried_once_and_delivered(broker, first):
    answers = iter([(first, {"error": "not ready"}), (202, None)])
    broker.route("POST", INGRESS, lambda rec: next(answers))
    bus = fast_bus(broker)
    try:
        assert bus.publish(uploaded()) is True
    finally:
        bus.close()
    first_try, second_try = sent(broker)  # exactly two requests
    assert first_try.body == second_try.body
    assert headers_of(first_try)["ce-id"] == headers_of(second_try)["ce-id"]  # the same event, not a new one


def test_a_broker_that_keeps_failing_is_retryable_after_the_bounded_attempts(broker):
    broker.route("POST", INGRESS, (503, {"error": "overloaded"}))
    bus = fast_bus(broker, attempts=3)
    try:
        with pytest.raises(BrokerUnavailable) as err:
            bus.publish(uploaded())
    finally:
        bus.close()
    assert isinstance(err.value, Retryable)
    assert len(sent(broker)) == 3
    assert "3 attempts" in str(err.value) and "HTTP 503" in str(err.value) and "overloaded" in str(err.value)


def test_an_unreachable_broker_is_retryable():
    with socket.socket() as s:  # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bus = HttpBus(f"http://127.0.0.1:{port}{INGRESS}", backoff=0.01, attempts=2, timeout=5)
    try:
        with pytest.raises(BrokerUnavailable, match="ConnectError"):
            bus.publish(uploaded())
    finally:
        bus.close()


def test_a_4xx_is_surfaced_at_once_with_the_brokers_answer(broker):
    broker.route("POST", INGRESS, (400, {"error": "event has no ce-source"}))
    bus = fast_bus(broker)
    try:
        with pytest.raises(BrokerRefused) as err:
            bus.publish(uploaded())
    finally:
        bus.close()
    assert isinstance(err.value, Permanent)
    assert len(sent(broker)) == 1  # never retried: it would be refused again
    assert "HTTP 400" in str(err.value) and "no ce-source" in str(err.value)


def test_an_invalid_event_is_refused_before_anything_is_sent(broker):
    bad = CloudEvent({"type": "io.doclane.document.uploaded.v1", "source": "/doclane/test", "id": "x-1"},
                     {"document_id": "doc-1"})  # the registered schema wants more
    bus = fast_bus(broker)
    try:
        with pytest.raises(InvalidEvent):
            bus.publish_many([uploaded(), bad])
    finally:
        bus.close()
    assert sent(broker) == []  # all or nothing: the valid one did not go either


@pytest.mark.parametrize("call", [
    lambda b: b.receive("classify"), lambda b: b.backlog("classify"), lambda b: b.ready_now("classify"),
    lambda b: b.dead_letters(), lambda b: b.requeue_dead("classify"),
])
def test_consuming_is_not_this_buses_business(broker, call):
    bus = fast_bus(broker)
    try:
        with pytest.raises(PublishOnly) as err:
            call(bus)
    finally:
        bus.close()
    assert isinstance(err.value, ConfigError)  # the CLI prints it as one line
    assert "Triggers" in str(err.value) and "deadLetterSink" in str(err.value)


# --------------------------------------------------------------------------- choosing the bus
def test_the_bus_follows_k_sink_unless_told_otherwise(settings, monkeypatch):
    monkeypatch.setenv("K_SINK", "http://broker-ingress.example/doclane/doclane")
    chosen = load_settings(data_dir=settings.data_dir)
    assert chosen.bus_kind == "http" and chosen.broker_ingress == "http://broker-ingress.example/doclane/doclane"
    context = Context(chosen)
    try:
        assert isinstance(context.bus, HttpBus) and context.bus.url == chosen.broker_ingress
    finally:
        context.close()
    monkeypatch.setenv("DOCLANE_BROKER_URL", "http://other-ingress.example/")
    assert load_settings().broker_ingress == "http://other-ingress.example/"  # the explicit setting wins
    monkeypatch.setenv("DOCLANE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    assert load_settings().bus_kind == "rabbitmq"  # a configured bus stays the bus


def test_http_without_a_broker_url_stops_start_up(settings, monkeypatch):
    monkeypatch.delenv("K_SINK", raising=False)
    monkeypatch.setenv("DOCLANE_BUS", "http")
    with pytest.raises(ConfigError, match="needs K_SINK .* or DOCLANE_BROKER_URL"):
        load_settings()
    monkeypatch.setenv("DOCLANE_BROKER_URL", "broker:8080")
    with pytest.raises(ConfigError, match="DOCLANE_BROKER_URL='broker:8080'.*http://"):
        load_settings()


def test_knative_binds_the_api_to_the_broker_and_picks_the_http_bus():
    docs = load_kustomization()
    binding = next(d for d in docs if d["kind"] == "SinkBinding")
    assert binding["spec"]["sink"]["ref"]["kind"] == "Broker"
    selector = binding["spec"]["subject"]["selector"]["matchLabels"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    covered = {name for name, svc in services.items() if selector.items() <= svc["metadata"]["labels"].items()}
    assert covered == set(services) and "api" in covered  # every function and the api get K_SINK
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "doclane-config")
    assert config["data"]["DOCLANE_BUS"] == "http"
    api = services["api"]["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": "doclane-config"}} in api["envFrom"]


# --------------------------------------------------------------------------- the api on Knative
@pytest.fixture
def api(settings, broker, monkeypatch):
    """The api image's app (functions/main.py `api`) with DOCLANE_BUS=http."""
    context = Context(settings.model_copy(update={
        "bus": "http", "broker_url": broker.url + INGRESS, "api_key": KEY, "minio_webhook_token": MINIO_TOKEN}))
    monkeypatch.setattr(main, "_context", lambda: context)
    yield context, main.create_app("api").test_client()
    context.close()


def add_failed(context, doc_id: str) -> None:
    context.metadata.register(DocumentRecord(
        document_id=doc_id, bucket="inbox", key=f"{doc_id}.pdf", filename=f"{doc_id}.pdf", content_type=None,
        size=3, sha256="1" * 64, status="failed", error="parse timed out"))


def test_post_reprocess_sends_document_uploaded_to_the_broker(api, broker):
    context, client = api
    add_failed(context, "doc-7")
    resp = client.post("/reprocess", json={"status": "failed"}, headers=AUTH)
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["documents"] == [{"document_id": "doc-7", "outcome": "queued"}]
    [rec] = sent(broker)
    event = as_event(rec)
    assert event["type"] == "io.doclane.document.uploaded.v1" and event["subject"] == "doc-7"
    assert event["source"] == "/doclane/reprocess" and event.data["key"] == "doc-7.pdf"
    assert headers_of(rec)["traceparent"] == event["traceparent"]
    assert context.metadata.get("doc-7").status == "uploaded"


def test_post_reprocess_answers_503_when_the_broker_is_down_and_the_document_stays_selectable(api, broker):
    context, client = api
    add_failed(context, "doc-8")
    broker.route("POST", INGRESS, (503, {"error": "no ready pods"}))
    resp = client.post("/reprocess", json={"status": "failed"}, headers=AUTH)
    assert resp.status_code == 503 and resp.content_type == "application/problem+json"
    assert "no ready pods" in resp.get_json()["detail"] and resp.headers["Retry-After"]
    record = context.metadata.get("doc-8")
    assert record.status == "failed" and record.error == "parse timed out"  # as it was: a retry finds it
    broker.route("POST", INGRESS, (202, None))  # the broker is back: the same request now does it
    again = client.post("/reprocess", json={"status": "failed"}, headers=AUTH)
    assert again.status_code == 202 and again.get_json()["count"] == 1
    assert context.metadata.get("doc-8").status == "uploaded"


def test_a_refused_event_is_a_502(api, broker):
    context, client = api
    add_failed(context, "doc-9")
    broker.route("POST", INGRESS, (404, {"error": "broker doclane/doclane not found"}))
    resp = client.post("/reprocess", json={"document_ids": ["doc-9"]}, headers=AUTH)
    assert resp.status_code == 502 and resp.content_type == "application/problem+json"
    assert "not found" in resp.get_json()["detail"]


def test_dead_letters_are_refused_before_anything_is_sent(api, broker):
    context, client = api
    add_failed(context, "doc-10")
    resp = client.post("/reprocess", json={"status": "failed", "dead_letters": True}, headers=AUTH)
    assert resp.status_code == 501 and resp.content_type == "application/problem+json"
    assert "deadLetterSink" in resp.get_json()["detail"]
    assert sent(broker) == [] and context.metadata.get("doc-10").status == "failed"


def test_the_cli_says_the_same_for_dead_letters(settings, broker):
    env = {"DOCLANE_BUS": "http", "DOCLANE_BROKER_URL": broker.url + INGRESS}
    out = CliRunner(env=env).invoke(cli, ["--data-dir", str(settings.data_dir), "reprocess", "--dead-letters"])
    assert out.exit_code == 2 and "deadLetterSink" in out.output, out.output
    declared = CliRunner(env=env).invoke(cli, ["--data-dir", str(settings.data_dir), "declare"])
    assert declared.exit_code == 0 and "nothing to declare" in declared.output
    assert sent(broker) == []


def test_observers_see_no_queues_rather_than_an_error(api, broker, caplog):
    _, client = api
    metrics = client.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200 and "doclane_documents" in metrics.get_data(as_text=True)
    assert "doclane_queue_backlog" not in metrics.get_data(as_text=True)
    assert "backlog unavailable" not in caplog.text
    stats = client.get("/stats", headers=AUTH)
    assert stats.status_code == 200 and "queues" not in stats.get_json()


def test_a_batch_upload_reaches_the_broker_and_its_documents_follow(api, broker, settings):
    """batch.uploaded comes from the api itself. The documents' document.uploaded
    come, as on Knative, from ingest: the bucket notifies (here MinIO's webhook
    on the api, which publishes through the same bus), the broker's Trigger
    pushes the notification to ingest, and ingest replies with document.uploaded."""
    context, client = api
    files = [(io.BytesIO(b"Invoice number: INV-1\nTotal: 12.50\n"), "a.txt"),
             (io.BytesIO(b"Receipt\nPaid: 3.20\n"), "b.txt")]
    resp = client.post("/batch-upload", data={"file": files}, headers=AUTH, content_type="multipart/form-data")
    assert resp.status_code == 202, resp.get_json()
    batch = resp.get_json()
    [rec] = sent(broker)
    event = as_event(rec)
    assert event["type"] == "io.doclane.batch.uploaded.v1" and event["source"] == "/doclane/upload"
    assert event.data == {"batch_id": batch["batch_id"],
                          "document_ids": [d["document_id"] for d in batch["documents"]]}

    # MinIO's webhook, one record per stored object
    records = [{"eventName": "s3:ObjectCreated:Put", "eventTime": "2024-05-01T09:00:00.000Z",
                "s3": {"bucket": {"name": "inbox"}, "object": {"key": d["key"], "size": 1}}}
               for d in batch["documents"]]
    hook = client.post(MINIO_WEBHOOK, json={"Records": records}, headers={"Authorization": f"Bearer {MINIO_TOKEN}"})
    assert hook.status_code == 200 and hook.get_json()["published"] == 2
    notifications = sent(broker)[1:]
    assert [as_event(r)["type"] for r in notifications] == ["io.doclane.bucket.notification.v1"] * 2

    # the broker's ingest Trigger: each notification, as received, to ingest
    ingest = function_app(load("ingest"), context).test_client()
    replies = []
    for rec in notifications:
        reply = ingest.post("/", headers=headers_of(rec), data=rec.body)
        assert reply.status_code == 200, reply.get_data(as_text=True)
        replies.append(from_http(dict(reply.headers), reply.get_data()))
    assert {r["type"] for r in replies} == {"io.doclane.document.uploaded.v1"}
    assert sorted(r.data["document_id"] for r in replies) == sorted(d["document_id"] for d in batch["documents"])
    assert {r.data["batch_id"] for r in replies} == {batch["batch_id"]}
