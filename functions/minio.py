"""MinIO's notification targets, as pure helpers: turning a notification
payload (webhook body or AMQP message) into `bucket.notification` events for
the ingest function, and checking the webhook's Bearer token; and the AMQP target's exchange, which MinIO and doclane's
consumer must declare identically.

An event is made per record, with an id derived from what identifies the
object version (event name, bucket, key, eTag, sequencer): MinIO retries a
target until it answers (and may deliver through both webhook and AMQP), so
the same record always becomes the same event and the bus drops the repeat.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from typing import Any

from cloudevents.http import CloudEvent

from doclane.events.envelope import new_event
from doclane.functions import notifications

_NAMESPACE = uuid.UUID("5c2e8f41-7b6d-4a39-9e0f-2d8b1a6c4e73")


@dataclass(frozen=True)
class AmqpTarget:
    """MinIO's AMQP target as doclane expects it. MinIO re-declares its
    exchange before every publish: a type, durability or auto-delete that
    differs from what the consumer declared closes MinIO's channel
    (PRECONDITION_FAILED) and notifications pile up in its queue_dir.
    Fanout: every bound queue gets every notification whatever the routing
    key, so a consumer cannot miss records by binding with another key."""

    exchange: str = "minio"
    exchange_type: str = "fanout"
    durable: bool = True
    auto_deleted: bool = False
    internal: bool = False
    routing_key: str = "bucketevents"
    queue: str = "doclane.minio-notifications"  # doclane's consumer queue, bound to the exchange
    delivery_mode: int = 2  # persistent: a broker restart keeps what MinIO sent


AMQP = AmqpTarget()


def minio_amqp_env(target: AmqpTarget = AMQP, *, target_id: str = "DOCLANE", url: str) -> dict[str, str]:
    """MinIO's MINIO_NOTIFY_AMQP_*_<ID> settings for `target`."""
    on = {True: "on", False: "off"}
    values = {
        "ENABLE": "on", "URL": url, "EXCHANGE": target.exchange, "EXCHANGE_TYPE": target.exchange_type,
        "ROUTING_KEY": target.routing_key, "DURABLE": on[target.durable], "AUTO_DELETED": on[target.auto_deleted],
        "INTERNAL": on[target.internal], "DELIVERY_MODE": str(target.delivery_mode), "MANDATORY": "off",
        "PUBLISHING_CONFIRMS": "on", "QUEUE_DIR": "/data/.minio-events/amqp",
    }
    return {f"MINIO_NOTIFY_AMQP_{name}_{target_id}": value for name, value in values.items()}


def notification_events(payload: Any, *, source: str) -> list[CloudEvent]:
    """One bucket.notification per object record of `payload`. Raises
    notifications.NotNotification for anything that is not a notification;
    s3:TestEvent and non-object records (replication, ILM, ...) give none."""
    notifications.parse(payload)  # validates the whole payload first: all or nothing
    events = []
    for record in payload.get("Records") or []:
        parsed = notifications.parse({"Records": [record]})
        if not parsed:
            continue
        obj = parsed[0]
        seed = "|".join((obj.event_name, obj.bucket, obj.key, obj.etag or "",
                         obj.sequencer or str(record.get("eventTime") or "")))
        events.append(new_event("bucket.notification", {"Records": [record]}, subject=None, source=source,
                                id=str(uuid.uuid5(_NAMESPACE, seed))))
    return events


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(authorization: str | None, expected: str) -> bool:
    """Constant-time comparison, so the answer time says nothing about the token."""
    given = bearer_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
