"""Tracing: a span per handled event, linked hop to hop by the events'
traceparent. A real document goes through the real functions on the embedded
bus with the SDK's in-memory exporter; one test exports over OTLP/HTTP to a
receiver on loopback that decodes the protobuf the way a collector does."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from cloudevents.conversion import to_binary
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from doclane.events.envelope import new_event, new_traceparent
from doclane.functions import binding
from doclane.functions.context import Context
from doclane.functions.http import function_app
from doclane.functions.observability import tracing
from doclane.functions.runtime import STAGES, load, triggers
from doclane.local.watcher import FolderWatcher
from tests.otlp_support import OtlpReceiver

LETTER = ("Dear Ms Smith,\n\nThank you for your letter of 3 March about the garden fence.\n\n"
          "Yours sincerely,\nJohn Brown")


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.reset()
    provider.shutdown()


@pytest.fixture
def context(settings):
    c = Context(settings)
    c.bus.declare(triggers(settings))
    yield c
    c.close()


class Recording:
    """The bus as the watcher sees it, keeping what it publishes."""

    def __init__(self, bus):
        self.bus, self.published = bus, []

    def publish(self, event):
        self.published.append(event)
        return self.bus.publish(event)


def drop_and_notify(context, name: str = "letter.txt", text: str = LETTER):
    """A file in the inbox, and the watcher's bucket.notification on the bus (returned)."""
    settings = context.settings
    settings.inbox.mkdir(parents=True, exist_ok=True)
    (settings.inbox / name).write_text(text)
    bus = Recording(context.bus)
    watcher = FolderWatcher(settings.inbox, bus, settings.data_dir / "watcher.sqlite", settle_seconds=0)
    try:
        deadline = time.monotonic() + 30
        while not watcher.scan():
            assert time.monotonic() < deadline, "the watcher never published the file"
            time.sleep(0.05)
    finally:
        watcher.close()
    (notification,) = bus.published
    return notification


def run_stages(context) -> None:
    """Each stage drains its queue in pipeline order, in this thread."""
    for name in STAGES:
        binding.consume(context.bus, load(name), context, idle_seconds=0.3, max_attempts=context.settings.max_attempts)


def test_a_documents_hops_share_one_trace_and_form_a_parent_chain(spans, context):
    notification = drop_and_notify(context)
    run_stages(context)
    (doc,) = context.metadata.list()
    assert doc.status == "indexed", doc.error

    finished = spans.get_finished_spans()
    by_function = {s.attributes["doclane.function"]: s for s in finished}
    assert sorted(by_function) == sorted(STAGES) and len(finished) == len(STAGES)
    chain = [by_function[name] for name in STAGES]
    assert len({s.context.trace_id for s in chain}) == 1
    for parent, child in zip(chain, chain[1:]):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id, child.name
        assert child.parent.trace_id == parent.context.trace_id
    # ingest's parent is the span named in the watcher's event (a remote parent: no span of ours)
    assert chain[0].parent is not None and chain[0].parent.is_remote
    _, trace_id, parent_id, _ = notification["traceparent"].split("-")
    assert f"{chain[0].parent.span_id:016x}" == parent_id and f"{chain[0].context.trace_id:032x}" == trace_id

    history = {e["type"]: e for e in context.metadata.history(doc.document_id)}
    for span in chain:
        attrs = span.attributes
        assert attrs["doclane.document_id"] == doc.document_id  # ingest learns it from what it emits
        assert attrs["doclane.attempt"] == 1 and attrs["doclane.outcome"] == "ok"
        assert attrs["cloudevents.event_type"].startswith("io.doclane.")
        if attrs["cloudevents.event_type"] in history:  # the event the stage took is in the history
            assert history[attrs["cloudevents.event_type"]]["id"] == attrs["cloudevents.event_id"]
        assert span.status.status_code != StatusCode.ERROR


def test_a_failing_handler_leaves_error_spans_one_per_attempt(spans, context):
    drop_and_notify(context)
    binding.consume(context.bus, load("ingest"), context, idle_seconds=0.3)

    def explode(*_):
        raise ConnectionError("store went away")

    fn = load("classify")
    flaky = type(fn)(**{**fn.__dict__, "handle": explode})
    binding.consume(context.bus, flaky, context, idle_seconds=1.0, max_attempts=context.settings.max_attempts)
    tries = sorted((s for s in spans.get_finished_spans() if s.attributes["doclane.function"] == "classify"),
                   key=lambda s: s.attributes["doclane.attempt"])
    assert [s.attributes["doclane.attempt"] for s in tries] == list(range(1, context.settings.max_attempts + 1))
    assert all(s.status.status_code == StatusCode.ERROR for s in tries)
    assert [s.attributes["doclane.outcome"] for s in tries][-1] == "dead"
    assert any(ev.name == "exception" and "store went away" in ev.attributes["exception.message"]
               for ev in tries[0].events)
    # every attempt is a child of the same ingest span
    ingest = next(s for s in spans.get_finished_spans() if s.attributes["doclane.function"] == "ingest")
    assert {s.parent.span_id for s in tries} == {ingest.context.span_id}


def test_an_event_without_a_usable_traceparent_starts_a_new_trace(spans, settings):
    context = Context(settings)
    try:
        app = function_app(load("notify"), context)
        event = new_event("document.indexed", {"document_id": "d1", "filename": "a.txt", "category": "letter",
                                               "chunks": 1, "fields": {}}, subject="d1", source="test",
                          traceparent="00-not-a-trace-01")
        headers, body = to_binary(event)
        resp = app.test_client().post("/", headers=dict(headers), data=body)
        assert resp.status_code == 202, resp.get_data(as_text=True)
    finally:
        context.close()
    (span,) = spans.get_finished_spans()
    assert span.parent is None and span.context.trace_id != 0


@pytest.fixture
def otlp():
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def test_spans_are_exported_over_otlp_http_when_the_endpoint_is_set(otlp, settings, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "doclane-notify-test")
    tracing.reset()  # decided again from this environment
    context = Context(settings)
    try:
        assert tracing.tracer() is not None
        app = function_app(load("notify"), context)
        traceparent = new_traceparent()
        event = new_event("document.indexed", {"document_id": "d1", "filename": "a.txt", "category": "letter",
                                               "chunks": 1, "fields": {}}, subject="d1", source="index",
                          traceparent=traceparent)
        headers, body = to_binary(event)
        assert app.test_client().post("/", headers=dict(headers), data=body).status_code == 202
        assert tracing.flush(10)
    finally:
        context.close()
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
        tracing.reset()
    ((resource, span),) = otlp.spans()
    assert otlp.content_types == ["application/x-protobuf"]
    assert resource["service.name"] == "doclane-notify-test"
    _, trace_id, parent_id, _ = traceparent.split("-")
    assert span.trace_id.hex() == trace_id and span.parent_span_id.hex() == parent_id
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["doclane.function"].string_value == "notify"
    assert attrs["doclane.document_id"].string_value == "d1"
    assert attrs["cloudevents.event_id"].string_value == event["id"]
    assert attrs["cloudevents.event_type"].string_value == "io.doclane.document.indexed.v1"
    assert span.name == "notify document.indexed"


def test_without_an_endpoint_the_sdk_is_not_even_loaded(tmp_path):
    """Tracing off costs nothing: handling an event imports no OpenTelemetry
    SDK and still links the outputs to the hop (a fresh interpreter, so no
    other test's imports count)."""
    script = f"""
import os, sys
for var in [v for v in os.environ if v.startswith(("OTEL_", "DOCLANE_"))]:
    del os.environ[var]
from doclane.events.envelope import new_event
from doclane.functions.context import Context
from doclane.functions.observability import tracing
from doclane.functions.runtime import invoke, load
from doclane.functions.settings import load as settings
ctx = Context(settings(data_dir={str(tmp_path / 'data')!r}, inbox={str(tmp_path / 'inbox')!r}))
event = new_event("document.indexed", {{"document_id": "d1", "filename": "a.txt", "category": "letter",
                  "chunks": 1, "fields": {{}}}}, subject="d1", source="index")
invoke(load("notify"), event, ctx)
print(tracing.tracer() is None, any(m.startswith("opentelemetry") for m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]
