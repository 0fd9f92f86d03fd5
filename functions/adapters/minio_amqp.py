"""MinIO's AMQP notification target, consumed: MinIO publishes one message per
record (body `{"EventName", "Key", "Records": [record]}`, headers
`minio-bucket` and `minio-event`, content type application/json) to its
exchange; this consumer binds a queue of its own to that exchange and puts a
`bucket.notification` event on the bus for each record, for ingest.

- MinIO re-declares its exchange before every publish, so we declare it
  exactly as MinIO is configured to (type, durable, auto-delete: the
  `AmqpTarget` of functions/minio.py, overridable by DOCLANE_MINIO_AMQP_*);
  a mismatch is refused at start with the setting to change.
- Event ids derive from the record (event name, bucket, key, eTag,
  sequencer: functions/minio.notification_events), so a redelivered message,
  or the same record through the webhook target too, is dropped by the bus.
- A message is acked only once its events are on the bus (publisher
  confirms). One that is not a notification is moved to `<broker>.minio.dlq`
  with the reason in `x-doclane-reason`; s3:TestEvent is acked and ignored.
- The queue is a durable quorum queue with an explicit delivery limit and a
  dead-letter exchange, like the trigger queues: nothing is dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace

import pika
from pika.exceptions import AMQPChannelError, AMQPConnectionError, ChannelClosedByBroker, ChannelWrongStateError

from doclane.events.bus import BROKER, dead_letter_exchange_name
from doclane.functions import minio, notifications
from doclane.functions.adapters import rabbitmq_topology as topology
from doclane.functions.errors import ConfigError, Permanent

log = logging.getLogger("doclane.minio_amqp")
TRIGGER = "minio"  # its dead letters go to <broker>.minio.dlq
SOURCE = "minio-amqp"


def target_from_settings(settings) -> minio.AmqpTarget | None:
    """MinIO's AMQP target as configured, or None when not configured."""
    if not (settings.amqp_url and settings.minio_amqp_exchange):
        return None
    return replace(minio.AMQP, exchange=settings.minio_amqp_exchange, exchange_type=settings.minio_amqp_exchange_type,
                   durable=settings.minio_amqp_durable, routing_key=settings.minio_amqp_routing_key,
                   queue=settings.minio_amqp_queue or f"{settings.broker}.minio-notifications")


def events_of(body: bytes):
    """The bucket.notification events of one MinIO message (none for
    s3:TestEvent). Raises Permanent for anything that is not a notification."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Permanent(f"MinIO message is not JSON: {exc}") from None
    try:
        return minio.notification_events(payload, source=SOURCE)
    except notifications.NotNotification as exc:
        raise Permanent(f"not a bucket notification: {exc}") from None


class MinioAmqpConsumer:
    def __init__(self, url: str, bus, target: minio.AmqpTarget, *, broker: str = BROKER):
        self.url = url
        self.bus = bus
        self.target = target
        self.broker = broker

    @classmethod
    def from_settings(cls, settings, bus) -> "MinioAmqpConsumer | None":
        target = target_from_settings(settings)
        return cls(settings.amqp_url, bus, target, broker=settings.broker) if target else None

    def declare(self, ch=None) -> None:
        """MinIO's exchange as MinIO declares it; our queue bound to it; a DLQ."""
        conn = None
        if ch is None:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
            ch = conn.channel()
        t = self.target
        try:
            ch.exchange_declare(t.exchange, t.exchange_type, durable=t.durable, auto_delete=t.auto_deleted,
                                internal=t.internal)
            topology.declare_dlq(ch, self.broker, TRIGGER)
            ch.queue_declare(t.queue, durable=True,
                             arguments=topology.quorum_args(dead_letter_exchange_name(self.broker), TRIGGER))
            ch.queue_bind(t.queue, t.exchange, routing_key=t.routing_key)
        except ChannelClosedByBroker as exc:
            raise ConfigError(
                f"RabbitMQ refused MinIO's exchange {t.exchange!r} or queue {t.queue!r}: {exc.reply_text}. "
                "DOCLANE_MINIO_AMQP_EXCHANGE_TYPE and DOCLANE_MINIO_AMQP_DURABLE must equal MinIO's "
                "MINIO_NOTIFY_AMQP_EXCHANGE_TYPE and MINIO_NOTIFY_AMQP_DURABLE (auto-delete off)") from None
        finally:
            if conn is not None and conn.is_open:
                conn.close()

    def handle(self, ch, method, props, body: bytes) -> None:
        """Settle one MinIO message: events on the bus then ack; not a
        notification: to the DLQ with the reason; bus down: back in the queue."""
        try:
            events = events_of(body)
            if events:
                self.bus.publish_many(events)
            log.info("MinIO %s %s: %d event(s) for ingest", (props.headers or {}).get("minio-event", "?"),
                     (props.headers or {}).get("minio-bucket", "?"), len(events))
        except Permanent as exc:
            log.error("MinIO message dead-lettered: %s", exc)
            headers = {**(props.headers or {}), "x-doclane-reason": str(exc)[:4000]}
            ch.basic_publish(dead_letter_exchange_name(self.broker), TRIGGER, body, pika.BasicProperties(
                content_type=props.content_type, headers=headers, delivery_mode=2))
        except Exception as exc:  # the bus is unavailable, or a bug: try again (the delivery limit ends a loop)
            log.warning("MinIO message goes back to its queue: %r", exc)
            ch.basic_nack(method.delivery_tag, requeue=True)
            time.sleep(1.0)  # not a hot loop while the bus is down
            return
        ch.basic_ack(method.delivery_tag)

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set, reconnecting with back-off when the
        connection is lost."""
        pause = 0.5
        while not stop.is_set():
            try:
                conn = pika.BlockingConnection(pika.URLParameters(self.url))
                try:
                    ch = conn.channel()
                    ch.confirm_delivery()  # a dead letter is confirmed before the ack
                    self.declare(ch)
                    ch.basic_qos(prefetch_count=16)
                    for method, props, body in ch.consume(self.target.queue, inactivity_timeout=0.5):
                        if stop.is_set():
                            break
                        if method is not None:
                            self.handle(ch, method, props, body)
                            pause = 0.5
                    ch.cancel()
                finally:
                    if conn.is_open:
                        conn.close()  # anything not acked goes back to the queue
            except (AMQPConnectionError, AMQPChannelError, ChannelWrongStateError) as exc:
                log.warning("MinIO notification consumer: %r; reconnecting in %.1f s", exc, pause)
                stop.wait(pause)
                pause = min(pause * 2, 30)
