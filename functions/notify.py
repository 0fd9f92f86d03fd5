"""notify: document.indexed / document.failed / batch.completed in; signed
webhooks and e-mails out (functions/subscriptions.py), each delivery
recorded; batch.completed when a batch's last document is done.

A receiver that fails makes the event retry with back-off; receivers that
already took it, or refused it for good (an SMTP 5xx), are not called again
(deliveries are recorded per subscription and event id), so no subscription
gets one event twice."""

from __future__ import annotations

import uuid
from functools import cached_property, lru_cache

from cloudevents.http import CloudEvent

from doclane.events.envelope import child_traceparent, new_event
from doclane.functions import mailer, subscriptions
from doclane.functions.errors import Retryable
from doclane.functions.ports import DocumentRecord
from doclane.functions.runtime import Function
from doclane.functions.webhooks import Sender

_BATCH_NAMESPACE = uuid.UUID("5c8e1d2a-7b3f-4a6c-9e0d-1f2a3b4c5d6e")


@lru_cache(maxsize=4)
def _sender(timeout: float, allow: str) -> Sender:
    return Sender(timeout=timeout, allow=allow)


def short_name(type_: str) -> str:
    """io.doclane.document.indexed.v1 -> document.indexed"""
    return ".".join(type_.split(".")[2:-1])


def handle(event: CloudEvent, data, ctx) -> list[CloudEvent]:
    failures = _deliver(event, data, ctx)
    out = []
    batch_id = getattr(data, "batch_id", None)
    if batch_id and short_name(event["type"]) in ("document.indexed", "document.failed"):
        done = _batch_completed(event, batch_id, ctx)
        if done is not None:
            out.append(done)
    if failures:
        raise Retryable("delivery failed: " + "; ".join(failures))
    return out


class _Subject:
    """The event's document, read from the store once, and only when a
    subscription needs it (a category filter, an e-mail's details)."""

    def __init__(self, event: CloudEvent, data, ctx):
        self.event, self.data, self.ctx = event, data, ctx

    @cached_property
    def record(self) -> DocumentRecord | None:
        subject = self.event.get("subject")
        return self.ctx.metadata.get(subject) if subject else None

    @cached_property
    def category(self) -> str | None:
        return getattr(self.data, "category", None) or (self.record.category if self.record else None)

    @cached_property
    def field_order(self) -> tuple[str, ...]:
        """The category's fields in its schema's order (e-mails list them so)."""
        try:
            return tuple(f.name for f in self.ctx.categories.get(self.category or "").fields)
        except KeyError:
            return ()


def _deliver(event: CloudEvent, data, ctx) -> list[str]:
    """Send to every subscription that wants the event and has not settled
    it; returns the transient failures (the event is retried for those)."""
    name = short_name(event["type"])
    subject = _Subject(event, data, ctx)
    failures = []
    for sub in ctx.metadata.webhooks():
        if not subscriptions.wants(sub, name, subject.category if sub.categories else None):
            continue
        if ctx.metadata.settled(sub.id, event["id"]):
            continue
        attempt = 1 + len(ctx.metadata.deliveries(event["id"], webhook_id=sub.id))
        if sub.kind == "email":
            outcome = mailer.deliver(sub, event, subject.record, ctx.settings, field_order=subject.field_order)
            ok, status, error, permanent = outcome.ok, outcome.status, outcome.error, outcome.permanent
        else:
            ok, status, error = _sender(ctx.settings.webhook_timeout, ctx.settings.webhook_allow).send(sub, event)
            permanent = False
        ctx.metadata.record_delivery(sub.id, event["id"], ok=ok, status=status, error=error, attempt=attempt,
                                     permanent=permanent)
        if not ok and not permanent:
            failures.append(f"{sub.url}: {error}")
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
