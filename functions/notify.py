"""notify: document.indexed / document.failed / batch.completed in; signed
webhooks out, each delivery recorded; batch.completed when a batch's last
document is done.

A receiver that fails makes the event retry with back-off; receivers that
already took it are not called again (deliveries are recorded per webhook and
event id), so no webhook fires twice for one event."""

from __future__ import annotations

import uuid
from functools import lru_cache

from cloudevents.http import CloudEvent

from doclane.events.envelope import child_traceparent, new_event
from doclane.functions.errors import Retryable
from doclane.functions.runtime import Function
from doclane.functions.webhooks import Sender

_BATCH_NAMESPACE = uuid.UUID("5c8e1d2a-7b3f-4a6c-9e0d-1f2a3b4c5d6e")


@lru_cache(maxsize=4)
def _sender(timeout: float) -> Sender:
    return Sender(timeout=timeout)


def short_name(type_: str) -> str:
    """io.doclane.document.indexed.v1 -> document.indexed"""
    return ".".join(type_.split(".")[2:-1])


def handle(event: CloudEvent, data, ctx) -> list[CloudEvent]:
    failures = _deliver(event, ctx)
    out = []
    batch_id = getattr(data, "batch_id", None)
    if batch_id and short_name(event["type"]) in ("document.indexed", "document.failed"):
        done = _batch_completed(event, batch_id, ctx)
        if done is not None:
            out.append(done)
    if failures:
        raise Retryable("webhook delivery failed: " + "; ".join(failures))
    return out


def _deliver(event: CloudEvent, ctx) -> list[str]:
    name = short_name(event["type"])
    sender = _sender(ctx.settings.webhook_timeout)
    failures = []
    for hook in ctx.metadata.webhooks():
        if hook.event_types and name not in hook.event_types:
            continue
        if ctx.metadata.delivered(hook.id, event["id"]):
            continue
        attempt = 1 + sum(1 for d in ctx.metadata.deliveries(event["id"]) if d["webhook_id"] == hook.id)
        ok, status, error = sender.send(hook, event)
        ctx.metadata.record_delivery(hook.id, event["id"], ok=ok, status=status, error=error, attempt=attempt)
        if not ok:
            failures.append(f"{hook.url}: {error}")
    return failures


def _batch_completed(event: CloudEvent, batch_id: str, ctx) -> CloudEvent | None:
    info = ctx.metadata.batch(batch_id)
    if not info or info["pending"] > 0:
        return None
    # One id per batch: however many documents finish "last", the bus keeps one.
    return new_event("batch.completed", {
        "batch_id": batch_id, "total": info["total"], "indexed": info["indexed"], "failed": info["failed"],
        "status": "completed" if info["failed"] == 0 else "completed_with_failures",
    }, subject=None, source="notify", id=str(uuid.uuid5(_BATCH_NAMESPACE, batch_id)),
        traceparent=child_traceparent(event.get("traceparent")))


FUNCTION = Function(
    name="notify",
    consumes=("document.indexed", "document.failed", "batch.completed"),
    emits=("batch.completed",),
    handle=handle,
    fails_document=False,
    lease_seconds=120.0,
)
