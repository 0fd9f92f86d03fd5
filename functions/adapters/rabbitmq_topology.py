"""The RabbitMQ topology of a doclane broker, modelled on Knative's RabbitMQ
broker (names from the pure helpers in events/bus.py):

  <broker>.broker  headers exchange, durable. Each trigger's queue is bound
                   once per event type it takes: {x-match: all,
                   cloudEvents:type: <type>} (exact match, like a Knative
                   Trigger's attribute filter on the binary-mode header).
  <broker>.<fn>    quorum queue per trigger, with x-delivery-limit set
                   explicitly (RabbitMQ 4 defaults to 20 and drops past it
                   without a DLX) and <broker>.dlx as its dead-letter
                   exchange, so a message whose consumers keep dying ends in
                   the DLQ. At-least-once dead-lettering: nothing is dropped.
  <broker>.<fn>.retry.<ms>ms  a quorum queue per back-off step with that
                   TTL; expired messages dead-letter through <broker>.retry
                   back to the trigger's queue. A queue-wide TTL keeps expiry
                   in order (per-message TTLs wait behind the head).
  <broker>.<fn>.dlq  classic durable queue bound to <broker>.dlx by trigger
                   name. Classic on purpose: dead letters are peeked by get +
                   requeue, which a quorum queue counts towards its limit.
"""

from __future__ import annotations

from typing import Sequence

from pika.exceptions import ChannelClosedByBroker

from doclane.events import amqp
from doclane.events.bus import (Trigger, dead_letter_exchange_name, dead_letter_queue_name, delay_queue_name,
                                exchange_name, queue_name, retry_exchange_name)
from doclane.events.registry import REGISTRY
from doclane.functions.errors import ConfigError

DELIVERY_LIMIT = 20  # broker-side safety net; the binding gives up after Trigger.max_attempts


def quorum_args(dead_letter_exchange: str, routing_key: str, **extra) -> dict:
    """A durable quorum queue that dead-letters (at least once) to `dead_letter_exchange`."""
    return {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT, "x-overflow": "reject-publish",
            "x-dead-letter-strategy": "at-least-once", "x-dead-letter-exchange": dead_letter_exchange,
            "x-dead-letter-routing-key": routing_key, **extra}


def declare_dlq(ch, broker: str, name: str) -> None:
    ch.exchange_declare(dead_letter_exchange_name(broker), "direct", durable=True)
    ch.queue_declare(dead_letter_queue_name(name, broker), durable=True, arguments={"x-queue-type": "classic"})
    ch.queue_bind(dead_letter_queue_name(name, broker), dead_letter_exchange_name(broker), routing_key=name)


def declare(ch, broker: str, triggers: Sequence[Trigger]) -> None:
    """Idempotent. A queue or exchange of the same name with other settings
    is a ConfigError that says what to do."""
    try:
        ch.exchange_declare(exchange_name(broker), "headers", durable=True)
        ch.exchange_declare(retry_exchange_name(broker), "direct", durable=True)
        for t in triggers:
            declare_dlq(ch, broker, t.name)
            q = queue_name(t.name, broker)
            ch.queue_declare(q, durable=True, arguments=quorum_args(dead_letter_exchange_name(broker), t.name))
            for type_ in sorted({spec.type for spec in REGISTRY} | set(t.types)):  # replace what it took before
                args = {"x-match": "all", amqp.PREFIX + "type": type_}
                (ch.queue_bind if type_ in t.types else ch.queue_unbind)(q, exchange_name(broker), arguments=args)
            ch.queue_bind(q, retry_exchange_name(broker), routing_key=t.name)
            for delay in delays(t):
                declare_delay(ch, broker, t.name, delay)
    except ChannelClosedByBroker as exc:
        raise ConfigError(f"RabbitMQ refused the topology of broker {broker!r}: {exc.reply_text}. A queue or "
                          "exchange of that name exists with other settings: delete it, or set DOCLANE_BROKER "
                          "to another name") from None


def delays(t: Trigger) -> list[float]:
    return sorted({t.retry_delay(attempt) for attempt in range(1, t.max_attempts)})


def declare_delay(ch, broker: str, trigger: str, delay: float) -> str:
    name = delay_queue_name(trigger, delay, broker)
    ch.queue_declare(name, durable=True, arguments=quorum_args(
        retry_exchange_name(broker), trigger, **{"x-message-ttl": max(int(delay * 1000), 1)}))
    return name


def delete(conn, broker: str, triggers: Sequence[Trigger], extra_queues: Sequence[str] = ()) -> None:
    """Remove a broker's queues and exchanges (tests, benchmarks). Deleting
    what does not exist is fine."""
    queues = list(extra_queues)
    for t in triggers:
        queues += [queue_name(t.name, broker), dead_letter_queue_name(t.name, broker)]
        queues += [delay_queue_name(t.name, d, broker) for d in delays(t)]
    ch = conn.channel()
    for name in queues:
        ch.queue_delete(name)
    for name in (exchange_name(broker), dead_letter_exchange_name(broker), retry_exchange_name(broker)):
        ch.exchange_delete(name)
    ch.close()
