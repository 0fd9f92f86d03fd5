"""RabbitMQ-specific behaviour of RabbitBus, against the server running here
(the shared bus contract runs in tests/local/test_bus.py): the topology,
back-off that really waits, dead letters with the reason in their headers,
redelivery after SIGKILL, poison and malformed messages, lost connections."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time

import pika
import pytest

from doclane.events import amqp, codec
from doclane.events.bus import (Trigger, dead_letter_exchange_name, dead_letter_queue_name, delay_queue_name,
                                exchange_name, queue_name, retry_exchange_name)
from doclane.events.envelope import new_event
from doclane.functions.errors import ConfigError, Retryable
from tests.amqp_support import AMQP_URL, delete_broker, queue_exists, require_rabbitmq, unique_broker

UPLOADED = "io.doclane.document.uploaded.v1"
TRIGGERS = [Trigger("classify", (UPLOADED,), max_attempts=3, backoff_seconds=0.3)]


@pytest.fixture
def broker():
    require_rabbitmq()
    name = unique_broker("rabbit")
    yield name
    delete_broker(name, TRIGGERS)


@pytest.fixture
def bus(broker):
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus

    b = RabbitBus(AMQP_URL, broker)
    b.declare(TRIGGERS)
    yield b
    b.close()


@pytest.fixture
def channel():
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    yield conn.channel()
    conn.close()


def uploaded(i: int = 1):
    data = {"document_id": f"d{i}", "bucket": "inbox", "key": f"{i}.pdf", "filename": f"{i}.pdf", "size": 3,
            "sha256": "0" * 64}
    return new_event("document.uploaded", data, subject=f"d{i}", source="test")


def test_topology_is_declared_and_declaring_again_changes_nothing(bus, broker, channel):
    bus.declare(TRIGGERS)  # idempotent
    for x in (exchange_name(broker), dead_letter_exchange_name(broker), retry_exchange_name(broker)):
        channel.exchange_declare(x, passive=True)
    queues = [queue_name("classify", broker), dead_letter_queue_name("classify", broker),
              delay_queue_name("classify", 0.3, broker), delay_queue_name("classify", 0.6, broker)]
    assert all(queue_exists(q) for q in queues)
    # Re-declaring with exactly these arguments is accepted, so these are the queue's settings:
    # a quorum queue, an explicit delivery limit, a dead-letter exchange, at-least-once dead-lettering.
    from doclane.functions.adapters.rabbitmq_topology import DELIVERY_LIMIT

    args = {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT, "x-overflow": "reject-publish",
            "x-dead-letter-exchange": dead_letter_exchange_name(broker), "x-dead-letter-routing-key": "classify",
            "x-dead-letter-strategy": "at-least-once"}
    channel.queue_declare(queue_name("classify", broker), durable=True, arguments=args)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="x-queue-type"):
        channel.queue_declare(queue_name("classify", broker), durable=True, arguments={**args, "x-queue-type": "classic"})


def test_a_queue_with_other_settings_is_a_clear_config_error(broker, channel):
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus

    channel.queue_declare(queue_name("classify", broker), durable=True)  # a classic queue in the way
    with pytest.raises(ConfigError, match="DOCLANE_BROKER"):
        RabbitBus(AMQP_URL, broker).declare(TRIGGERS)


def test_retry_backoff_really_waits_then_dead_letters_with_the_reason_in_headers(bus, broker, channel):
    bus.publish(uploaded())
    (d,) = bus.receive("classify", wait_seconds=1)
    t0 = time.monotonic()  # before the nack: the delay's TTL starts when the copy is enqueued
    assert bus.nack(d, "boom 1", retryable=True) is False
    assert bus.receive("classify", wait_seconds=0.1) == []  # still waiting in the 0.3 s delay queue
    (d,) = bus.receive("classify", wait_seconds=3)
    assert d.attempt == 2 and 0.3 <= time.monotonic() - t0 < 2.5
    t0 = time.monotonic()
    bus.nack(d, "boom 2", retryable=True)
    (d,) = bus.receive("classify", wait_seconds=3)
    assert d.attempt == 3 and time.monotonic() - t0 >= 0.6  # doubled
    assert bus.nack(d, "boom 3", retryable=True) is True
    method, props, body = channel.basic_get(dead_letter_queue_name("classify", broker), auto_ack=True)
    assert props.headers["x-doclane-reason"] == "boom 3" and props.headers["x-doclane-attempts"] == 3
    assert props.headers["cloudEvents:subject"] == "d1" and amqp.from_message(
        amqp.AmqpMessage(props.headers, props.content_type, body))["type"] == UPLOADED
    assert bus.backlog("classify") == 0


def _hold_then_die(broker: str, ready) -> None:
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus

    bus, held = RabbitBus(AMQP_URL, broker, prefetch=3), []
    deadline = time.monotonic() + 10
    while len(held) < 3 and time.monotonic() < deadline:
        held += bus.receive("classify", max_messages=3, wait_seconds=1)
    if len(held) == 3:
        ready.set()
    time.sleep(60)  # "handling" when SIGKILL comes


def test_sigkill_mid_handling_redelivers_everything_it_held(bus, broker):
    events = [uploaded(i) for i in range(3)]
    for event in events:
        bus.publish(event)
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, as a real worker is
    ready = spawn.Event()
    proc = spawn.Process(target=_hold_then_die, args=(broker, ready))
    proc.start()
    assert ready.wait(30), "the consumer did not get the three messages"
    assert bus.ready_now("classify") == 0
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    got = []
    while len(got) < 3:
        batch = bus.receive("classify", max_messages=3, wait_seconds=5)
        assert batch, f"lost: {len(got)} of 3 redelivered"
        got += batch
    assert {d.attempt for d in got} == {2}
    assert sorted(codec.loads(d.body)["id"] for d in got) == sorted(e["id"] for e in events)
    for d in got:
        bus.ack(d)
    assert bus.backlog("classify") == 0


def test_consumers_that_keep_dying_count_as_attempts(bus, broker):
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus

    bus.publish(uploaded())
    for attempt in (1, 2, 3):
        worker = RabbitBus(AMQP_URL, broker, triggers=TRIGGERS)
        (d,) = worker.receive("classify", wait_seconds=2)
        assert d.attempt == attempt  # x-delivery-count: the binding gives up past max_attempts
        worker.close()  # dies without settling


def test_poison_and_malformed_messages_do_not_block_the_queue(bus, broker):
    bus.enqueue_raw("classify", b'{"specversion": "1.0", "id": ', content_type="application/cloudevents+json")
    bus.enqueue_raw("classify", b"\x00junk")  # not a CloudEvent in either mode
    bus.publish(uploaded(1))
    bus.publish(uploaded(2))
    (poison,) = bus.receive("classify", wait_seconds=2)
    assert b'"d1"' in poison.body  # the malformed ones went to the DLQ, never to the function
    bus.nack(poison, "poison", retryable=True)
    (good,) = bus.receive("classify", wait_seconds=0.2)
    assert b'"d2"' in good.body
    bus.ack(good)
    reasons = sorted(dl.reason for dl in bus.dead_letters("classify"))
    assert len(reasons) == 2 and all(r.startswith("InvalidEvent: ") for r in reasons)
    assert len(bus.dead_letters("classify")) == 2  # peeking does not consume


def test_structured_mode_messages_are_accepted(bus, broker, channel):
    event = uploaded(7)
    msg = amqp.to_structured(event)
    channel.basic_publish(retry_exchange_name(broker), "classify", msg.body,
                          pika.BasicProperties(content_type=msg.content_type))
    (d,) = bus.receive("classify", wait_seconds=2)
    assert d.attempt == 1 and f'"{event["id"]}"'.encode() in d.body


def test_without_a_dedup_store_every_publish_goes_out(bus):
    ev = uploaded()
    assert bus.publish(ev) is True and bus.publish(ev) is True
    assert bus.backlog("classify") == 2


def test_a_lost_connection_is_reopened(bus):
    bus.publish(uploaded(1))
    bus._local.state.conn._impl._transport._sock.shutdown(socket.SHUT_RDWR)  # the network goes away
    assert bus.publish(uploaded(2)) is True
    assert bus.backlog("classify") == 2


def test_an_unreachable_broker_is_retryable():
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus

    with pytest.raises(Retryable, match="unreachable"):
        RabbitBus("amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1").publish(uploaded())
