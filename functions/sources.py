"""Events from outside doclane, made doclane events at the door.

Knative's RabbitmqSource wraps every AMQP message that is not a CloudEvent in
a `dev.knative.rabbitmq.event` whose data is the message body; MinIO's AMQP
target publishes bucket notifications that way. `normalise` turns such an
event into an `io.doclane.bucket.notification.v1` (validated like any other),
so the ingest function takes MinIO's messages straight from the broker.
Doclane's own events pass through unchanged.
"""

from __future__ import annotations

import json
import uuid

from cloudevents.http import CloudEvent

from doclane.events.envelope import InvalidEvent, new_event

RABBITMQ_SOURCE_TYPE = "dev.knative.rabbitmq.event"
# foreign CloudEvents type -> the doclane event name it becomes
FOREIGN_TYPES = {RABBITMQ_SOURCE_TYPE: "bucket.notification"}
_NAMESPACE = uuid.UUID("6d0c4b9e-2f7a-4c1b-9e35-8a1f0b7d2c64")


def normalise(event: CloudEvent) -> CloudEvent:
    name = FOREIGN_TYPES.get(event["type"])
    if name is None:
        return event
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise InvalidEvent(f"{event['type']} data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"{event['type']} data must be a JSON object (a bucket notification)")
    # The id derives from the source's (the AMQP message id when MinIO sets one),
    # so a redelivered message is the same doclane event.
    return new_event(name, data, subject=None, source=event["source"],
                     id=str(uuid.uuid5(_NAMESPACE, f"{event['source']}|{event['id']}")),
                     traceparent=event.get("traceparent"))
