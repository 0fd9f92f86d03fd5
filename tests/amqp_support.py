"""RabbitMQ for tests: the server running here (DOCLANE_TEST_AMQP_URL), a
broker name of its own per test, and its queues and exchanges deleted after.
Unreachable: the tests skip on a laptop and fail when CI is set."""

from __future__ import annotations

import functools
import os
import uuid
from typing import Sequence

import pika

from doclane.events.bus import (Trigger, dead_letter_exchange_name, dead_letter_queue_name, delay_queue_name,
                                exchange_name, queue_name, retry_exchange_name)
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
    """Delete what a RabbitBus declared for `broker` (a queue already gone is fine)."""
    queues = list(extra_queues)
    for t in triggers:
        queues += [queue_name(t.name, broker), dead_letter_queue_name(t.name, broker)]
        queues += [delay_queue_name(t.name, t.retry_delay(a), broker) for a in range(1, t.max_attempts + 1)]
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        for name in queues:
            ch = conn.channel()
            ch.queue_delete(name)
            ch.close()
        ch = conn.channel()
        for name in (exchange_name(broker), dead_letter_exchange_name(broker), retry_exchange_name(broker)):
            ch.exchange_delete(name)
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
