"""The bus binding: pull a delivery, invoke the function, publish what it
emits, then ack. Acknowledgement is policy here, not code in each handler:

- success: publish outputs, ack (a crash in between redelivers; the outputs'
  deterministic ids make the repeat a no-op);
- InvalidEvent / Permanent: dead-letter at once with the reason;
- anything else: retry with back-off, dead-letter after max attempts;
- a delivery that already used up its attempts (its workers kept dying) is
  dead-lettered without running it again.

When a document's event is dead-lettered by a function that `fails_document`,
the document is marked failed and a document.failed event says why, so
nothing is ever left stuck.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback

from cloudevents.http import CloudEvent

from doclane.events import codec
from doclane.events.bus import Delivery, EventBus
from doclane.events.envelope import InvalidEvent, derive
from doclane.functions.adapters import redis_progress as progress
from doclane.functions.errors import NotFound, Permanent
from doclane.functions.runtime import Function, invoke

log = logging.getLogger("doclane.binding")


def handle_delivery(bus: EventBus, fn: Function, delivery: Delivery, ctx, max_attempts: int) -> str:
    """Settle one delivery. Returns 'ok', 'retry' or 'dead'."""
    event: CloudEvent | None = None
    try:
        event = codec.loads(delivery.body)
        if delivery.attempt > max_attempts:
            raise _Exhausted(f"gave up after {delivery.attempt - 1} attempts (the worker died or timed out each time)")
        outputs = invoke(fn, event, ctx)
        if outputs:
            publish = getattr(bus, "publish_many", None)
            publish(outputs) if publish else [bus.publish(o) for o in outputs]
            progress.announce(ctx, outputs)  # live progress (Redis pub/sub when configured)
        bus.ack(delivery)
        return "ok"
    except (InvalidEvent, Permanent, _Exhausted) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        retryable = False
    except Exception as exc:  # unknown failures may be transient: retry
        reason = f"{type(exc).__name__}: {exc}"
        retryable = True
        log.warning("%s failed on attempt %d: %s\n%s", fn.name, delivery.attempt, reason, traceback.format_exc(limit=4))
    dead = bus.nack(delivery, reason, retryable=retryable)
    if dead:
        log.error("%s dead-lettered %s: %s", fn.name, event["id"] if event else delivery.tag, reason)
        _fail_document(bus, fn, event, reason, ctx)
        return "dead"
    return "retry"


class _Exhausted(Exception):
    pass


def _fail_document(bus: EventBus, fn: Function, event: CloudEvent | None, reason: str, ctx) -> None:
    if event is None or not fn.fails_document or not event.get("subject"):
        return
    if event["type"].endswith(".document.failed.v1"):
        return
    document_id = event["subject"]
    data = event.get_data() if isinstance(event.get_data(), dict) else {}
    try:
        record = ctx.metadata.get(document_id)
        if record is None:
            return
        ctx.metadata.update(document_id, status="failed", error=f"{fn.name}: {reason}")
        failed = derive(event, "document.failed", {
            "document_id": document_id, "stage": fn.name, "reason": reason[:2000],
            "error_type": "dead_lettered", "filename": record.filename,
            "batch_id": data.get("batch_id") or record.batch_id,
        }, source=fn.name, key="dead-letter")
        ctx.metadata.record_event(failed, stage=fn.name)
        bus.publish(failed)
        progress.announce(ctx, [failed])
    except NotFound:
        pass


def consume(bus: EventBus, fn: Function, ctx, *, stop: threading.Event | None = None,
            idle_seconds: float | None = None, max_attempts: int = 5, owner: str | None = None) -> int:
    """Serve one trigger until `stop` is set or nothing came for `idle_seconds`
    (scale to zero). Returns the number of deliveries settled."""
    stop = stop or threading.Event()
    owner = owner or f"{fn.name}-{os.getpid()}-{threading.get_ident()}"
    settled = 0
    last_work = time.monotonic()
    while not stop.is_set():
        deliveries = bus.receive(fn.name, max_messages=1, wait_seconds=0.5, owner=owner)
        if not deliveries:
            if idle_seconds is not None and time.monotonic() - last_work > idle_seconds:
                break
            continue
        for delivery in deliveries:
            handle_delivery(bus, fn, delivery, ctx, max_attempts)
            settled += 1
        last_work = time.monotonic()
    return settled
