"""Prometheus metrics at /metrics: what the HTTP shim, the bus binding, the
webhook sender and the scrape-time collectors count, on the real embedded
bus, RabbitMQ, and function processes in multiprocess mode."""

from __future__ import annotations

import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from prometheus_client.parser import text_string_to_metric_families

from doclane.events.envelope import new_event
from doclane.functions import binding
from doclane.functions.context import Context
from doclane.functions.http import function_app
from doclane.functions.observability import metrics
from doclane.functions.ports import DocumentRecord
from doclane.functions.runtime import STAGES, load, triggers
from doclane.functions.webhooks import Sender, new_webhook
from tests.amqp_support import AMQP_URL, delete_broker, require_rabbitmq, unique_broker
from tests.e2e.harness import serve_loopback

KEY = "metrics-test-admin-key"


def scrape(source=None) -> str:
    """The text a scrape would get: an app's /metrics, or this process's collectors."""
    if source is None:
        from prometheus_client import generate_latest

        return generate_latest(metrics.collectors()).decode()
    resp = source.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.content_type.startswith("text/plain")
    return resp.get_data(as_text=True)


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels (0 when there is none)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


@pytest.fixture
def context(settings):
    c = Context(settings.model_copy(update={"api_key": KEY}))
    c.bus.declare(triggers(settings))
    yield c
    c.close()


def indexed(doc_id: str) -> CloudEvent:
    return new_event("document.indexed", {"document_id": doc_id, "filename": "a.txt", "category": "letter",
                                          "chunks": 1, "fields": {}}, subject=doc_id, source="index")


def uploaded(doc_id: str) -> CloudEvent:
    return new_event("document.uploaded", {"document_id": doc_id, "bucket": "inbox", "key": f"{doc_id}.pdf",
                                           "filename": f"{doc_id}.pdf", "size": 3, "sha256": "0" * 64},
                     subject=doc_id, source="test")


def register(context, doc_id: str) -> None:
    context.metadata.register(DocumentRecord(document_id=doc_id, bucket="inbox", key=f"{doc_id}.pdf",
                                             filename=f"{doc_id}.pdf", content_type="application/pdf", size=3,
                                             sha256="0" * 64, status="uploaded"))


def test_a_stage_app_counts_what_it_handles_and_what_it_refuses(context):
    client = function_app(load("notify"), context).test_client()
    before = scrape(client)
    doc_id = "doc-7f3a9c-not-a-label"
    headers, body = to_binary(indexed(doc_id))
    assert client.post("/", headers=dict(headers), data=body).status_code == 202
    bad = CloudEvent({"type": "io.doclane.made-up.v1", "source": "/x", "id": "bad-1"}, {"a": 1})
    headers, body = to_structured(bad)
    assert client.post("/", headers=dict(headers), data=body).status_code == 400
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("doclane_events_consumed_total", function="notify", type="document.indexed") == 1
    assert delta("doclane_handler_duration_seconds_count", function="notify") == 2
    assert delta("doclane_events_failed_total", function="notify", type="unknown", kind="invalid") == 1
    assert delta("doclane_events_failed_total", function="notify", type="document.indexed", kind="invalid") == 0
    assert value(after, "doclane_handlers_in_progress", function="notify") == 0
    # bounded labels: never a document id, never a type a sender made up
    label_values = {v for s in samples(after) for v in s.labels.values()}
    assert doc_id not in label_values and "io.doclane.made-up.v1" not in label_values


def test_the_binding_counts_retries_dead_letters_and_failures_once(context):
    register(context, "d1")
    context.bus.publish(uploaded("d1"))
    before = scrape()

    def explode(*_):
        raise ConnectionError("store went away")

    fn = load("classify")
    flaky = type(fn)(**{**fn.__dict__, "handle": explode})
    binding.consume(context.bus, flaky, context, idle_seconds=1.0, max_attempts=3)
    after = scrape()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # three attempts: two retries, then dead-lettered; each attempt counted once (binding + invoke = one hop)
    assert delta("doclane_events_consumed_total", function="classify", type="document.uploaded") == 3
    assert delta("doclane_events_failed_total", function="classify", type="document.uploaded", kind="error") == 3
    assert delta("doclane_retries_total", function="classify") == 2
    assert delta("doclane_dead_lettered_total", function="classify") == 1
    assert delta("doclane_events_emitted_total", function="classify", type="document.failed") == 1
    assert delta("doclane_handler_duration_seconds_count", function="classify") == 3


def test_every_http_entry_point_serves_metrics(context, monkeypatch):
    from doclane.functions import main
    from doclane.local.gateway import create_app

    for var in ("DOCLANE_DATA_DIR", "DOCLANE_INBOX"):
        monkeypatch.setenv(var, str(getattr(context.settings, var.split("_", 1)[1].lower())))
    main._context.cache_clear()
    try:
        stage = main.create_app("classify").test_client()
        assert "# TYPE doclane_events_consumed_total counter" in scrape(stage)
    finally:
        main._context.cache_clear()
    gateway = create_app(context).test_client()
    assert gateway.get("/metrics").status_code == 401  # like every API route: a key or a session
    assert "doclane_documents" in scrape(gateway)


def test_the_api_shows_documents_by_status_and_each_triggers_backlog(context):
    from doclane.local.gateway import create_app

    app = create_app(context)
    client = app.test_client()
    for doc_id in ("a", "b"):
        register(context, doc_id)
        context.bus.publish(uploaded(doc_id))
    context.metadata.update("b", status="failed", error="test")
    text = scrape(client)
    assert value(text, "doclane_documents", status="uploaded") == 1
    assert value(text, "doclane_documents", status="failed") == 1
    assert value(text, "doclane_documents", status="indexed") == 0 and 'status="indexed"' in text
    assert "doclane_queue_backlog" not in text  # the API of a cluster has no embedded bus to report
    app.config["doclane.metrics"]["backlog"] = True  # as `doclane up` does for its bus
    text = scrape(client)
    assert value(text, "doclane_queue_backlog", trigger="classify") == 2
    assert {s.labels["trigger"] for s in samples(text) if s.name == "doclane_queue_backlog"} == set(STAGES)


def test_the_backlog_on_rabbitmq_is_each_queues_message_count(settings):
    require_rabbitmq()
    broker = unique_broker("metrics")
    context = Context(settings.model_copy(update={"amqp_url": AMQP_URL, "broker": broker}))
    try:
        context.bus.declare(triggers(context.settings))
        for doc_id in ("r1", "r2", "r3"):
            context.bus.publish(uploaded(doc_id))
        from prometheus_client import generate_latest

        text = generate_latest(metrics.collectors(context, backlog=True, triggers=STAGES)).decode()
        assert value(text, "doclane_queue_backlog", trigger="classify") == 3
        assert value(text, "doclane_queue_backlog", trigger="ingest") == 0
    finally:
        context.close()
        delete_broker(broker, triggers(settings))


def test_function_processes_are_added_up_and_dead_ones_leave_no_live_gauge(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by an earlier run")
    path = metrics.prepare_multiprocess(directory)
    assert list(directory.iterdir()) == []  # cleaned at start
    script = ("from doclane.functions.observability import metrics as m\n"
              "m.EVENTS_CONSUMED.labels('classify', 'document.uploaded').inc()\n"
              "m.IN_PROGRESS.labels('classify').inc()\n"
              "print(__import__('os').getpid())\n")
    try:
        before = scrape()
        pids = []
        for _ in range(2):  # two function processes, each with its own file
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            pids.append(int(out.stdout))
        from prometheus_client import generate_latest

        def gateway() -> str:
            return generate_latest(metrics.collectors(multiprocess_dir=path)).decode()

        text = gateway()
        assert (value(text, "doclane_events_consumed_total", function="classify", type="document.uploaded")
                - value(before, "doclane_events_consumed_total", function="classify", type="document.uploaded")) == 2
        assert value(text, "doclane_handlers_in_progress", function="classify") == 2  # they died mid-event
        for pid in pids:  # the supervisor reaps them
            metrics.process_exited(pid)
        text = gateway()
        assert value(text, "doclane_handlers_in_progress", function="classify") == 0
        assert (value(text, "doclane_events_consumed_total", function="classify", type="document.uploaded")
                - value(before, "doclane_events_consumed_total", function="classify", type="document.uploaded")) == 2
        assert text.count("# TYPE doclane_events_consumed_total counter") == 1  # one family, merged
    finally:
        metrics.end_multiprocess(path)


def test_every_family_is_declared_before_any_process_has_a_sample(tmp_path):
    """A gateway started with PROMETHEUS_MULTIPROC_DIR already set keeps its
    own samples in files too, so its /metrics shows only what was written: a
    family nobody touched yet (no dead letter so far) must still be declared,
    once, and a family with samples must keep them."""
    import os

    directory = tmp_path / "metrics"
    directory.mkdir()
    script = ("from prometheus_client import generate_latest\n"
              "from doclane.functions.observability import metrics as m\n"
              "assert m._records_to_files()\n"
              "m.RETRIES.labels('index').inc()\n"
              f"print(generate_latest(m.collectors(multiprocess_dir={str(directory)!r})).decode())\n")
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for family in ("doclane_dead_lettered_total counter", "doclane_handlers_in_progress gauge",
                   "doclane_retries_total counter", "doclane_handler_duration_seconds histogram"):
        assert text.count(f"# TYPE {family}") == 1, family
    assert value(text, "doclane_retries_total", function="index") == 1
    assert "doclane_dead_lettered_total{" not in text  # declared, not invented


class Answering:
    """A webhook receiver on loopback answering `status`."""

    def __init__(self, status: int):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server, self.url = serve_loopback(Handler)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_webhook_deliveries_are_counted_by_outcome():
    ok, failing = Answering(204), Answering(500)
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    closed_url = f"http://127.0.0.1:{closed.server_address[1]}/hook"
    closed.server_close()  # nothing listens there any more
    sender = Sender(timeout=5, allow="127.0.0.1")
    event = indexed("w1")
    before = scrape()
    try:
        for url in (ok.url, failing.url, closed_url):
            sender.send(new_webhook(url, (), None, allow="127.0.0.1"), event)
        blocked = new_webhook(ok.url, (), None, allow="127.0.0.1")
        Sender(timeout=5).send(blocked, event)  # no allow-list: loopback is refused before any request
    finally:
        sender.close()
        ok.close()
        failing.close()
    after = scrape()
    for outcome in metrics.WEBHOOK_OUTCOMES:
        assert (value(after, "doclane_webhook_deliveries_total", outcome=outcome)
                - value(before, "doclane_webhook_deliveries_total", outcome=outcome)) == 1, outcome


def test_label_values_come_from_fixed_sets():
    assert metrics.type_label("io.doclane.document.indexed.v1") == "document.indexed"
    assert metrics.type_label("io.doclane.anything-a-sender-likes.v1") == "unknown"
    assert metrics.type_label(None) == "unknown"
    with pytest.raises(ValueError):
        metrics.webhook_delivered("whatever")


def test_an_event_with_attributes_of_the_wrong_types_is_refused_at_once_and_counted(context):
    """The hop reads attributes before validation: wrong types there must not
    turn a bad event into a retried crash."""
    context.bus.enqueue_raw("classify", b'{"specversion":"1.0","id":"odd-1","source":"/t","type":{"a":1},'
                                        b'"traceparent":5,"subject":["x"]}')
    before = scrape()
    binding.consume(context.bus, load("classify"), context, idle_seconds=0.3, max_attempts=3)
    after = scrape()
    (dead,) = context.bus.dead_letters("classify")
    assert dead.attempts == 1
    assert (value(after, "doclane_events_failed_total", function="classify", type="unknown", kind="invalid")
            - value(before, "doclane_events_failed_total", function="classify", type="unknown", kind="invalid")) == 1
    assert (value(after, "doclane_dead_lettered_total", function="classify")
            - value(before, "doclane_dead_lettered_total", function="classify")) == 1
