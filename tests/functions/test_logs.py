"""Structured logs: every line written while an event is handled carries the
hop's function, document_id, event_id, trace_id and span_id, as JSON when
DOCLANE_LOG_FORMAT=json."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from doclane.events import codec
from doclane.events.envelope import new_event, new_traceparent
from doclane.functions import binding
from doclane.functions.context import Context
from doclane.functions.errors import ConfigError
from doclane.functions.observability import logs, tracing
from doclane.functions.ports import DocumentRecord
from doclane.functions.runtime import invoke, load, triggers

IDS = ("function", "document_id", "event_id", "trace_id", "span_id")


@pytest.fixture
def json_lines(monkeypatch):
    """The root logger writing JSON to a buffer; `read()` gives the parsed lines."""
    monkeypatch.setenv("DOCLANE_LOG_FORMAT", "json")
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = logs.configure(logging.INFO, stream=stream)

    def read() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    yield read
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def context(settings):
    c = Context(settings)
    c.bus.declare(triggers(settings))
    yield c
    c.close()


def indexed(traceparent: str | None = None, doc_id: str = "d1"):
    return new_event("document.indexed", {"document_id": doc_id, "filename": "a.txt", "category": "letter",
                                          "chunks": 1, "fields": {}}, subject=doc_id, source="index",
                     traceparent=traceparent)


def test_a_line_logged_while_handling_is_json_with_the_hops_ids(json_lines, context):
    traceparent = new_traceparent()
    event = indexed(traceparent)
    logging.getLogger("doclane.test").info("before any event")
    invoke(load("notify"), event, context)
    lines = json_lines()
    before = next(line for line in lines if line["message"] == "before any event")
    assert not set(IDS) & set(before)  # outside a hop: no ids
    (handled,) = [line for line in lines if line["logger"] == "doclane.runtime"]
    assert handled["message"].startswith("notify handled io.doclane.document.indexed.v1")
    assert handled["level"] == "INFO" and handled["timestamp"]
    assert handled["function"] == "notify" and handled["document_id"] == "d1" and handled["event_id"] == event["id"]
    _, trace_id, parent_id, _ = traceparent.split("-")
    assert handled["trace_id"] == trace_id
    # the hop's own span id (made up when tracing is off), not the sender's
    assert len(handled["span_id"]) == 16 and handled["span_id"] != parent_id


def test_with_tracing_on_the_ids_are_the_spans(json_lines, context):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        invoke(load("notify"), indexed(), context)
    finally:
        tracing.reset()
    (span,) = exporter.get_finished_spans()
    (handled,) = [line for line in json_lines() if line["logger"] == "doclane.runtime"]
    assert handled["trace_id"] == f"{span.context.trace_id:032x}"
    assert handled["span_id"] == f"{span.context.span_id:016x}"


def test_the_bindings_own_lines_carry_the_ids_and_outputs_link_back(json_lines, context):
    """A retry warning is written by the binding, outside the handler: it still
    carries the hop's ids; and the events a hop emits name its span id, so
    logs link hop to hop even without a tracing backend."""
    context.metadata.register(DocumentRecord(
        document_id="d1", bucket="inbox", key="a.txt", filename="a.txt", content_type="text/plain", size=3,
        sha256="0" * 64, status="uploaded"))
    event = new_event("document.uploaded", {"document_id": "d1", "bucket": "inbox", "key": "a.txt",
                                            "filename": "a.txt", "size": 3, "sha256": "0" * 64},
                      subject="d1", source="test")
    context.bus.publish(event)

    def explode(*_):
        raise ConnectionError("store went away")

    fn = load("classify")
    flaky = type(fn)(**{**fn.__dict__, "handle": explode})
    binding.consume(context.bus, flaky, context, idle_seconds=1.0, max_attempts=2)
    lines = json_lines()
    warning = next(line for line in lines if line["logger"] == "doclane.binding" and line["level"] == "WARNING")
    assert "store went away" in warning["message"]
    assert {k: warning[k] for k in ("function", "document_id", "event_id")} == {
        "function": "classify", "document_id": "d1", "event_id": event["id"]}
    dead = next(line for line in lines if line["logger"] == "doclane.binding" and line["level"] == "ERROR")
    assert dead["event_id"] == event["id"] and dead["trace_id"] == warning["trace_id"]
    # the document.failed the binding sent on names the last attempt's span
    (delivery,) = context.bus.receive("notify", wait_seconds=0)
    failed = codec.loads(delivery.body)
    assert failed["traceparent"].split("-")[1:3] == [dead["trace_id"], dead["span_id"]]


def test_threads_keep_their_own_ids(json_lines):
    log = logging.getLogger("doclane.test")
    barrier = threading.Barrier(2)

    def work(event_id: str):
        with logs.bound(function="f", event_id=event_id):
            barrier.wait(10)  # both are inside their hop at once
            log.info("in %s", event_id)

    threads = [threading.Thread(target=work, args=(f"e{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    lines = [line for line in json_lines() if line["logger"] == "doclane.test"]
    assert sorted((line["message"], line["event_id"]) for line in lines) == [("in e0", "e0"), ("in e1", "e1")]


def test_text_is_the_default_and_a_bad_format_is_refused(monkeypatch):
    monkeypatch.delenv("DOCLANE_LOG_FORMAT", raising=False)
    assert logs.log_format() == "text"
    monkeypatch.setenv("DOCLANE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="DOCLANE_LOG_FORMAT='xml' is not valid: use text or json"):
        logs.configure()
    from doclane.functions.settings import load as load_settings

    with pytest.raises(ConfigError, match="DOCLANE_LOG_FORMAT"):
        load_settings()
