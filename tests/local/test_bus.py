"""The event bus contract, run against every bus adapter: the embedded SQLite
bus, RabbitMQ and Redis Streams (the servers running here; each test on a
broker name of its own, deleted after). Lease tests run on the buses that
lease (SQLite, and Redis through XAUTOCLAIM and release_owner): RabbitMQ
redelivers what a closed connection held, which
tests/functions/adapters/test_rabbitmq_bus.py checks."""

import multiprocessing
import os
import signal
import time

import pytest

from doclane.events.bus import Trigger
from doclane.events.envelope import InvalidEvent, new_event
from doclane.local.bus import SqliteBus
from tests import redis_support
from tests.amqp_support import AMQP_URL, delete_broker, require_rabbitmq, unique_broker

UPLOADED = {"document_id": "d1", "bucket": "inbox", "key": "a.pdf", "filename": "a.pdf", "size": 3, "sha256": "0" * 64}
TRIGGERS = [
    Trigger("classify", ("io.doclane.document.uploaded.v1",), max_attempts=3, backoff_seconds=0.05, lease_seconds=30),
    Trigger("notify", ("io.doclane.document.uploaded.v1", "io.doclane.document.failed.v1"), max_attempts=3,
            backoff_seconds=0.05),
]


def sqlite_bus(tmp_path):
    """A factory of SqliteBus objects on one file (another process opens the same)."""
    return lambda: SqliteBus(tmp_path / "bus.sqlite"), lambda: None


def rabbitmq_bus(tmp_path):
    """A factory of RabbitBus objects on one broker name, with publish-side
    de-duplication in a metadata store (as `doclane up` wires it)."""
    require_rabbitmq()
    from doclane.functions.adapters.metadata import open_metadata
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus

    broker = unique_broker("contract")
    dedup = open_metadata(str(tmp_path / "dedup.sqlite"))
    return (lambda: RabbitBus(AMQP_URL, broker, triggers=TRIGGERS, dedup=dedup),
            lambda: delete_broker(broker, TRIGGERS))


def redis_bus(tmp_path):
    """A factory of RedisBus objects on one broker name (a key prefix of its own)."""
    redis_support.require_redis()
    from doclane.functions.adapters.redis_bus import RedisBus

    broker = redis_support.unique_broker("contract")
    return (lambda: RedisBus(redis_support.REDIS_URL, broker, triggers=TRIGGERS),
            lambda: redis_support.delete_broker(broker))


BUSES = [sqlite_bus, rabbitmq_bus, redis_bus]
LEASING = [sqlite_bus, redis_bus]  # a delivery is a lease that runs out, or that release_owner hands back


@pytest.fixture(params=BUSES, ids=lambda f: f.__name__)
def make_bus(request, tmp_path):
    factory, cleanup = request.param(tmp_path)
    yield factory
    cleanup()


@pytest.fixture(params=LEASING, ids=lambda f: f.__name__)
def make_leasing_bus(request, tmp_path):
    factory, cleanup = request.param(tmp_path)
    yield factory
    cleanup()


@pytest.fixture
def bus(make_bus):
    b = make_bus()
    b.declare(TRIGGERS)
    yield b
    b.close()


def uploaded(i=1, **kw):
    return new_event("document.uploaded", {**UPLOADED, "document_id": f"d{i}"}, subject=f"d{i}", source="test", **kw)


def test_publish_routes_by_type_to_every_trigger(bus):
    bus.publish(uploaded())
    assert bus.backlog("classify") == 1 and bus.backlog("notify") == 1
    (d,) = bus.receive("classify", wait_seconds=0)
    assert d.attempt == 1 and b'"io.doclane.document.uploaded.v1"' in d.body
    bus.ack(d)
    assert bus.backlog("classify") == 0 and bus.backlog("notify") == 1


def test_same_event_id_is_delivered_once_even_after_ack(bus):
    ev = uploaded()
    assert bus.publish(ev) is True
    (d,) = bus.receive("classify", wait_seconds=0)
    bus.ack(d)
    assert bus.publish(ev) is False
    assert bus.receive("classify", wait_seconds=0) == []


def test_invalid_event_is_refused_on_publish(bus):
    ev = uploaded()
    ev.data["size"] = "big"
    with pytest.raises(InvalidEvent):
        bus.publish(ev)
    assert bus.backlog("classify") == 0


def test_retry_with_backoff_then_dead_letter(bus):
    bus.publish(uploaded())
    delays, t0 = [], time.monotonic()
    for attempt in (1, 2, 3):
        (d,) = bus.receive("classify", wait_seconds=2)
        delays.append(time.monotonic() - t0)
        assert d.attempt == attempt
        t0 = time.monotonic()  # the back-off starts inside nack
        dead = bus.nack(d, f"boom {attempt}", retryable=True)
        assert dead is (attempt == 3)
    assert delays[2] > delays[1] >= 0.04  # 0.05 s, then 0.1 s
    (dl,) = bus.dead_letters("classify")
    assert dl.reason == "boom 3" and dl.attempts == 3 and dl.subject == "d1"
    assert bus.backlog("classify") == 0


def test_permanent_failure_dead_letters_at_once(bus):
    bus.publish(uploaded())
    (d,) = bus.receive("classify", wait_seconds=0)
    assert bus.nack(d, "bad input", retryable=False) is True
    assert [x.reason for x in bus.dead_letters()] == ["bad input"]


def test_poison_message_does_not_block_the_queue(bus):
    bus.publish(uploaded(1))
    bus.publish(uploaded(2))
    (first,) = bus.receive("classify", wait_seconds=0)
    bus.nack(first, "poison", retryable=True)  # back-off: the next one goes first
    (second,) = bus.receive("classify", wait_seconds=0)
    assert second.body != first.body
    bus.ack(second)


def test_released_owner_redelivers_at_once(make_leasing_bus):
    bus = make_leasing_bus()
    bus.declare(TRIGGERS)
    bus.publish(uploaded())
    (d,) = bus.receive("classify", wait_seconds=0, owner="w1")
    assert bus.receive("classify", wait_seconds=0) == []  # leased
    assert bus.release_owner("w1") == 1
    (again,) = bus.receive("classify", wait_seconds=0, owner="w2")
    assert again.attempt == 2 and again.body == d.body


def test_expired_lease_is_redelivered(make_leasing_bus):
    bus = make_leasing_bus()
    bus.declare([Trigger("classify", ("io.doclane.document.uploaded.v1",), lease_seconds=0.2)])
    bus.publish(uploaded())
    bus.receive("classify", wait_seconds=0)
    assert bus.receive("classify", wait_seconds=0) == []
    (d,) = bus.receive("classify", wait_seconds=1)
    assert d.attempt == 2


def test_requeue_dead_letters(bus):
    bus.publish(uploaded())
    (d,) = bus.receive("classify", wait_seconds=0)
    bus.nack(d, "x", retryable=False)
    assert bus.requeue_dead("classify") == 1
    (d2,) = bus.receive("classify", wait_seconds=0)
    assert d2.attempt == 1


def _consume_then_die(make_bus, ready):
    bus = make_bus()
    bus.receive("classify", wait_seconds=5, owner="doomed")
    ready.set()
    time.sleep(60)


def test_sigkilled_consumer_loses_nothing(bus, make_bus):
    bus.publish(uploaded())
    ready = multiprocessing.Event()
    proc = multiprocessing.get_context("fork").Process(target=_consume_then_die, args=(make_bus, ready))
    proc.start()
    assert ready.wait(10)
    assert bus.ready_now("classify") == 0  # held by the doomed consumer
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    bus.release_owner("doomed")  # what the supervisor does when it reaps the process (RabbitMQ: nothing)
    (d,) = bus.receive("classify", wait_seconds=5)
    assert d.attempt == 2 and b'"d1"' in d.body
    bus.ack(d)
    assert bus.backlog("classify") == 0
