"""The bus binding's acknowledgement policy, on the embedded bus with the
real ingest/classify functions and embedded adapters."""

import threading
import time

import pytest

from doclane.events import codec
from doclane.events.envelope import new_event
from doclane.functions import binding
from doclane.functions.context import Context
from doclane.functions.ports import DocumentRecord
from doclane.functions.runtime import load, triggers


@pytest.fixture
def context(settings):
    c = Context(settings)
    c.bus.declare(triggers(settings))
    yield c
    c.close()


def register(context, doc_id="d1", sha="0" * 64):
    context.metadata.register(DocumentRecord(document_id=doc_id, bucket="inbox", key="a.pdf", filename="a.pdf",
                                             content_type="application/pdf", size=3, sha256=sha, status="uploaded"))


def test_garbage_on_the_queue_is_dead_lettered_and_the_worker_goes_on(context):
    bus = context.bus
    bus.enqueue_raw("ingest", b'{"specversion": "1.0", "id": ')  # truncated JSON
    bus.enqueue_raw("ingest", b'{"specversion":"1.0","id":"x","source":"/t","type":"io.doclane.nope.v1"}')
    settled = binding.consume(bus, load("ingest"), context, idle_seconds=0.2)
    assert settled == 2
    reasons = [d.reason for d in bus.dead_letters("ingest")]
    assert any("not valid JSON" in r for r in reasons) and any("unknown event type" in r for r in reasons)


def test_a_failing_handler_is_retried_then_the_document_fails_with_the_reason(context):
    register(context)
    event = new_event("document.uploaded", {"document_id": "d1", "bucket": "inbox", "key": "a.pdf",
                                            "filename": "a.pdf", "size": 3, "sha256": "0" * 64},
                      subject="d1", source="test")
    context.bus.publish(event)
    calls = []

    def explode(*args, **kwargs):
        calls.append(1)
        raise ConnectionError("store went away")

    fn = load("classify")
    flaky = type(fn)(**{**fn.__dict__, "handle": explode})
    binding.consume(context.bus, flaky, context, idle_seconds=1.0, max_attempts=3)
    assert len(calls) == 3  # max_attempts
    (dead,) = context.bus.dead_letters("classify")
    assert "ConnectionError: store went away" in dead.reason
    record = context.metadata.get("d1")
    assert record.status == "failed" and "store went away" in record.error
    # ... and notify gets a document.failed saying why
    (delivery,) = context.bus.receive("notify", wait_seconds=0)
    failed = codec.loads(delivery.body)
    assert failed["type"] == "io.doclane.document.failed.v1"
    assert failed.get_data()["stage"] == "classify" and "store went away" in failed.get_data()["reason"]


def test_exhausted_deliveries_are_not_run_again(context):
    """A message whose workers kept dying arrives with attempt > max: it is
    dead-lettered without running the handler a fourth time."""
    register(context)
    context.bus.publish(new_event("document.uploaded", {"document_id": "d1", "bucket": "inbox", "key": "a.pdf",
                                                        "filename": "a.pdf", "size": 3, "sha256": "0" * 64},
                                  subject="d1", source="test"))
    for _ in range(3):  # three workers took it and died
        context.bus.receive("classify", wait_seconds=0, owner="w")
        context.bus.release_owner("w")
    fn = load("classify")
    ran = []
    guarded = type(fn)(**{**fn.__dict__, "handle": lambda *a: ran.append(1) or []})
    binding.consume(context.bus, guarded, context, idle_seconds=0.2, max_attempts=3)
    assert ran == []
    assert "gave up after 3 attempts" in context.bus.dead_letters("classify")[0].reason
    assert context.metadata.get("d1").status == "failed"


def test_a_repeated_delivery_of_a_handled_event_does_not_run_it_again(context):
    """Delivery is at least once: here the same uploaded event (same id)
    arrives again after its document went on to be indexed, as when a
    publisher could not record its publish while the store was down and
    published again (seen in the PostgreSQL chaos scenario). Running the
    handler again would set the document back to "classified", and its
    outputs, already published, would be dropped as duplicates: stuck.
    The second delivery is acknowledged without running the handler."""
    register(context)
    event = new_event("document.uploaded", {"document_id": "d1", "bucket": "inbox", "key": "a.pdf",
                                            "filename": "a.pdf", "size": 3, "sha256": "0" * 64},
                      subject="d1", source="test")
    ran = []

    def classify(event, data, ctx):
        ran.append(event["id"])
        ctx.metadata.update("d1", status="classified")
        return []

    fn = load("classify")
    probe = type(fn)(**{**fn.__dict__, "handle": classify})
    context.bus.enqueue_raw("classify", codec.dumps(event))
    assert binding.consume(context.bus, probe, context, idle_seconds=0.2) == 1
    context.metadata.update("d1", status="indexed")  # the rest of the pipeline ran
    context.bus.enqueue_raw("classify", codec.dumps(event))  # the same event again
    assert binding.consume(context.bus, probe, context, idle_seconds=0.2) == 1  # settled (acknowledged)
    assert ran == [event["id"]]
    assert context.metadata.get("d1").status == "indexed"
    assert context.bus.dead_letters("classify") == []
    # another function handling the same event id is not affected
    assert not context.metadata.seen("handled:extract", event["id"])


def test_consume_stops_when_asked(context):
    stop = threading.Event()
    t = threading.Thread(target=binding.consume, args=(context.bus, load("ingest"), context), kwargs={"stop": stop})
    t.start()
    stop.set()
    t.join(5)
    assert not t.is_alive()


def test_a_missing_parsed_document_fails_the_document_at_once(context):
    register(context)
    context.bus.publish(new_event("document.classified", {
        "document_id": "d1", "filename": "a.pdf", "category": "invoice", "confidence": 0.9,
        "classifier": "embedded", "parsed_key": "d1/gone.parsed.json"}, subject="d1", source="test"))
    binding.consume(context.bus, load("extract"), context, idle_seconds=0.2, max_attempts=3)
    (dead,) = context.bus.dead_letters("extract")
    assert dead.attempts == 1 and "missing from the artefact store" in dead.reason
    record = context.metadata.get("d1")
    assert record.status == "failed" and "d1/gone.parsed.json" in record.error


class _Unreachable:
    """The embedded bus behind a broker that is down for its first `receives`
    calls (chaos: a RabbitMQ restart; tests/chaos has the real one)."""

    def __init__(self, bus, receives: int):
        self.bus, self.down_for = bus, receives

    def receive(self, *args, **kwargs):
        if self.down_for:
            self.down_for -= 1
            from doclane.functions.errors import Retryable

            raise Retryable("RabbitMQ at 127.0.0.1:5672 is unreachable")
        return self.bus.receive(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.bus, name)


def test_consume_rides_out_a_bus_outage_then_serves_again(context):
    context.bus.enqueue_raw("ingest", b"not an event")
    flaky, stop, settled = _Unreachable(context.bus, receives=2), threading.Event(), []
    worker = threading.Thread(target=lambda: settled.append(binding.consume(flaky, load("ingest"), context, stop=stop)))
    worker.start()
    deadline = time.monotonic() + 30
    while not context.bus.dead_letters("ingest") and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    worker.join(10)
    assert flaky.down_for == 0 and settled == [1]  # no exception: it asked again, then settled the delivery
