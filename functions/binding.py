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
from doclane.functions import limits, observability
from doclane.functions.adapters import redis_progress as progress
from doclane.functions.errors import NotFound, Permanent, Retryable
from doclane.functions.runtime import Function, invoke

log = logging.getLogger("doclane.binding")
_MAX_BUS_BACKOFF = 5.0  # seconds between asks while the bus is down: back soon after it is


def handle_delivery(bus: EventBus, fn: Function, delivery: Delivery, ctx, max_attempts: int) -> str:
    """Settle one delivery. Returns 'ok', 'retry' or 'dead'. Observed as one
    hop (functions/observability; invoke joins it), so its span, metrics and
    log ids cover publishing, settling and failing the document too."""
    with observability.hop(fn.name, attempt=delivery.attempt) as hop:
        outcome = _settle(bus, fn, delivery, ctx, max_attempts, hop)
        hop.settled(outcome)
        return outcome


def _settle(bus: EventBus, fn: Function, delivery: Delivery, ctx, max_attempts: int, hop: observability.Hop) -> str:
    event: CloudEvent | None = None
    try:
        limits.check_event_size(len(delivery.body), ctx.settings)  # before parsing it
        event = codec.loads(delivery.body)
        hop.begin(event)
        if _handled_before(fn, event, ctx):
            log.info("%s already handled %s (%s): duplicate delivery acknowledged", fn.name, event["type"], event["id"])
            bus.ack(delivery)
            return "ok"
        if delivery.attempt > max_attempts:
            raise _Exhausted(f"gave up after {delivery.attempt - 1} attempts (the worker died or timed out each time)")
        outputs = invoke(fn, event, ctx)
        if outputs:
            publish = getattr(bus, "publish_many", None)
            publish(outputs) if publish else [bus.publish(o) for o in outputs]
            progress.announce(ctx, outputs)  # live progress (Redis pub/sub when configured)
        _record_handled(fn, event, ctx)
        bus.ack(delivery)
        return "ok"
    except (InvalidEvent, Permanent, _Exhausted) as exc:
        hop.fail(exc)
        reason = f"{type(exc).__name__}: {exc}"
        retryable = False
    except Exception as exc:  # unknown failures may be transient: retry
        hop.fail(exc)
        reason = f"{type(exc).__name__}: {exc}"
        retryable = True
        log.warning("%s failed on attempt %d: %s\n%s", fn.name, delivery.attempt, reason, traceback.format_exc(limit=4))
    dead = bus.nack(delivery, reason, retryable=retryable)
    if dead:
        log.error("%s dead-lettered %s: %s", fn.name, event["id"] if event else delivery.tag, reason)
        _fail_document(bus, fn, event, reason, ctx, hop)
        return "dead"
    return "retry"


def _handled_before(fn: Function, event: CloudEvent, ctx) -> bool:
    """Whether `fn` already handled this event id to the end (outputs
    published). Delivery is at least once: a publisher that could not record
    its publish (the store was down) publishes again, and a broker redelivers
    what was not acked. Outputs have deterministic ids, so a repeat emits
    nothing new, but it would still redo the handler's writes, e.g. set a
    document that has since been indexed back to "classified", where it
    would stay. Asked of the metadata store (its `seen`); a store without
    that record (or a context without a store) treats every delivery as new."""
    seen = getattr(getattr(ctx, "metadata", None), "seen", None)
    return bool(seen and seen(f"handled:{fn.name}", event["id"]))


def _record_handled(fn: Function, event: CloudEvent, ctx) -> None:
    """After the outputs are published, before the ack: a crash in between
    means one more run of the handler (idempotent), never a lost event."""
    mark = getattr(getattr(ctx, "metadata", None), "mark_seen", None)
    if mark:
        mark(f"handled:{fn.name}", event["id"])


class _Exhausted(Exception):
    failure_kind = "exhausted"  # the label doclane_events_failed_total counts it under


def _fail_document(bus: EventBus, fn: Function, event: CloudEvent | None, reason: str, ctx,
                   hop: observability.Hop) -> None:
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
            # the dead event's own data may be what was wrong with it
            "batch_id": data.get("batch_id") if isinstance(data.get("batch_id"), str) else record.batch_id,
        }, source=fn.name, key="dead-letter")
        hop.emit([failed])
        ctx.metadata.record_event(failed, stage=fn.name)
        bus.publish(failed)
        progress.announce(ctx, [failed])
    except NotFound:
        pass


def consume(bus: EventBus, fn: Function, ctx, *, stop: threading.Event | None = None,
            idle_seconds: float | None = None, max_attempts: int = 5, owner: str | None = None,
            drain: threading.Event | None = None) -> int:
    """Serve one trigger until `stop` is set or nothing came for `idle_seconds`
    (scale to zero). Once `drain` is set, the first poll that finds nothing
    ends it: how a supervisor retires a surplus consumer without cutting a
    delivery short. A bus that is unreachable (Retryable from receiving or
    settling: a broker restarting) is asked again with back-off, so the
    process rides out the outage instead of dying with it. Returns the
    number of deliveries settled."""
    stop = stop or threading.Event()
    owner = owner or f"{fn.name}-{os.getpid()}-{threading.get_ident()}"
    settled = 0
    last_work = time.monotonic()
    backoff = 0.0  # > 0 while the bus is unreachable
    while not stop.is_set():
        try:
            deliveries = bus.receive(fn.name, max_messages=1, wait_seconds=0.5, owner=owner)
            for delivery in deliveries:
                handle_delivery(bus, fn, delivery, ctx, max_attempts)
                settled += 1
        except Retryable as exc:
            # An unsettled delivery is not lost: the broker redelivers what a lost connection held.
            if not backoff:
                log.warning("%s: the bus is unreachable (%s); asking again with back-off", fn.name, exc)
            backoff = min(max(backoff * 2, 0.5), _MAX_BUS_BACKOFF)
            stop.wait(backoff)
            deliveries = []
        else:
            if backoff:
                log.warning("%s: the bus is reachable again", fn.name)
            backoff = 0.0
        if not deliveries:
            if drain is not None and drain.is_set():
                break
            if idle_seconds is not None and time.monotonic() - last_work > idle_seconds:
                break
            continue
        last_work = time.monotonic()
    return settled
