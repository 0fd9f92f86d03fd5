"""RabbitMQ for tests: the server running here (DOCLANE_TEST_AMQP_URL), a
broker name of its own per test, and its queues and exchanges deleted after.
Unreachable: the tests skip on a laptop and fail when CI is set."""

from __future__ import annotations

import functools
import os
import uuid
from typing import Sequence

import pika

from doclane.events.bus import Trigger
from doclane.functions.adapters import rabbitmq_topology as topology
from tests.conftest import require

AMQP_URL = os.environ.get("DOCLANE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@functools.cache
def _problem() -> str | None:
    try:
        params = pika.URLParameters(AMQP_URL)
        params.connection_attempts, params.socket_timeout = 1, 3
        pika.BlockingConnection(params).close()
        return None
    except Exception as exc:  # any failure to connect means "not here"
        return repr(exc)


def require_rabbitmq() -> None:
    problem = _problem()
    require(problem is None, f"RabbitMQ at {AMQP_URL} is unreachable ({problem}); set DOCLANE_TEST_AMQP_URL")


def unique_broker(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def delete_broker(broker: str, triggers: Sequence[Trigger], extra_queues: Sequence[str] = ()) -> None:
    """Delete what a RabbitBus declared for `broker`."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        topology.delete(conn, broker, triggers, extra_queues)
    finally:
        conn.close()


def queue_exists(name: str) -> bool:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        conn.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        conn.close()


def minio_publish(ch, target, payload: bytes | dict) -> None:
    """What MinIO's AMQP target does on every send (internal/event/target/amqp.go):
    re-declare its exchange, then publish with minio-bucket/minio-event headers."""
    import json

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        record = json.loads(body)["Records"][0]
        headers = {"minio-bucket": record["s3"]["bucket"]["name"], "minio-event": record["eventName"]}
    except (ValueError, KeyError, IndexError, TypeError):
        headers = {"minio-bucket": "images", "minio-event": "s3:ObjectCreated:Put"}
    ch.exchange_declare(target.exchange, target.exchange_type, durable=target.durable,
                        auto_delete=target.auto_deleted, internal=target.internal)
    ch.basic_publish(target.exchange, target.routing_key, body, pika.BasicProperties(
        headers=headers, content_type="application/json", delivery_mode=target.delivery_mode))
