"""Redis-specific behaviour of RedisBus, against the server running here (the
shared bus contract runs in tests/local/test_bus.py): a SIGKILLed consumer's
deliveries taken over by another (XAUTOCLAIM), a poison message through the
real binding into the dead-letter stream and the document failed, retention
that never cuts an unsettled entry, batching and blocking reads, and how the
bus is chosen from settings. Each test has a broker name (key prefix) of its
own, deleted after."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest
import redis

from doclane.events import codec
from doclane.events.bus import Trigger
from doclane.events.envelope import new_event
from doclane.functions import binding
from doclane.functions.errors import ConfigError, Retryable
from tests.e2e.harness import free_port
from tests.redis_support import REDIS_URL, broker_keys, delete_broker, require_redis, unique_broker

UPLOADED = "io.doclane.document.uploaded.v1"
TRIGGERS = [Trigger("classify", (UPLOADED,), max_attempts=3, backoff_seconds=0.05, lease_seconds=1.0)]


@pytest.fixture
def broker():
    require_redis()
    name = unique_broker("redis")
    yield name
    delete_broker(name)


@pytest.fixture
def make_bus(broker):
    from doclane.functions.adapters.redis_bus import RedisBus

    made = []

    def make(**kw):
        b = RedisBus(REDIS_URL, broker, **kw)
        b.declare(TRIGGERS)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def bus(make_bus):
    return make_bus()


@pytest.fixture
def client():
    c = redis.Redis.from_url(REDIS_URL)
    yield c
    c.close()


def uploaded(i: int = 1):
    data = {"document_id": f"d{i}", "bucket": "inbox", "key": f"{i}.pdf", "filename": f"{i}.pdf", "size": 3,
            "sha256": "0" * 64}
    return new_event("document.uploaded", data, subject=f"d{i}", source="test")


def stream(broker: str, suffix: str = "") -> str:
    return "{" + broker + "}.classify" + suffix


# --------------------------------------------------------------------------- keys
def test_every_key_carries_the_broker_hash_tag_and_ids_expire(bus, broker, client):
    event = uploaded()
    assert bus.publish(event) is True and bus.publish(event) is False
    keys = {k.decode() for k in broker_keys(broker)}
    tag = "{" + broker + "}"
    assert keys == {f"{tag}:triggers", f"{tag}.classify", f"{tag}:seen:{event['id']}"}
    assert 0 < client.ttl(f"{tag}:seen:{event['id']}") <= 7 * 86400  # remembered a week, then forgotten
    (group,) = client.xinfo_groups(stream(broker))
    assert group["name"] == b"classify" and group["lag"] == 1


# --------------------------------------------------------------------------- consumers that die
def _hold_then_die(broker: str, ready) -> None:
    """A worker in a fresh interpreter: takes three deliveries in one batch, then is SIGKILLed."""
    from doclane.functions.adapters.redis_bus import RedisBus

    bus = RedisBus(REDIS_URL, broker, triggers=TRIGGERS)
    held = []
    deadline = time.monotonic() + 20
    while len(held) < 3 and time.monotonic() < deadline:
        held += bus.receive("classify", max_messages=3, wait_seconds=1, owner="doomed")
    if len(held) == 3:
        ready.set()
    time.sleep(60)  # "handling" when SIGKILL comes


def test_a_sigkilled_consumer_s_deliveries_are_taken_over_after_the_lease(bus, broker, client):
    events = [uploaded(i) for i in range(4)]
    for event in events[:3]:
        bus.publish(event)
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, as a real worker is
    ready = spawn.Event()
    proc = spawn.Process(target=_hold_then_die, args=(broker, ready))
    proc.start()
    try:
        assert ready.wait(60), "the consumer did not get the three messages"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    bus.publish(events[3])  # published after the death: delivered as usual
    assert client.xpending(stream(broker), "classify")["consumers"] == [{"name": b"doomed", "pending": 3}]
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 4 and time.monotonic() < deadline:  # no supervisor: only the lease brings them back
        batch = bus.receive("classify", max_messages=4, wait_seconds=2, owner="rescuer")
        for d in batch:
            bus.ack(d)  # handled within the lease
        got += batch
    assert sorted(codec.loads(d.body)["id"] for d in got) == sorted(e["id"] for e in events)  # nothing lost
    attempts = {codec.loads(d.body)["id"]: d.attempt for d in got}
    assert [attempts[e["id"]] for e in events] == [2, 2, 2, 1]  # the dead consumer's delivery counts
    assert bus.backlog("classify") == 0
    assert client.xpending(stream(broker), "classify")["pending"] == 0


def test_a_consumer_whose_delivery_was_taken_over_cannot_settle_it_twice(make_bus, broker, client):
    slow, other = make_bus(), make_bus()
    slow.publish(uploaded())
    (late,) = slow.receive("classify", wait_seconds=0, owner="slow")
    (taken,) = other.receive("classify", wait_seconds=10, owner="other")  # after the 1 s lease
    assert taken.attempt == 2 and taken.body == late.body
    assert slow.nack(late, "too late", retryable=True) is False  # the other consumer settles it
    assert client.zcard(stream(broker, ".retry")) == 0 and slow.dead_letters() == []
    other.ack(taken)
    assert other.backlog("classify") == 0


def test_expired_deliveries_behind_many_live_ones_are_found(make_bus, broker, client):
    """XAUTOCLAIM looks at count * 10 pending entries per call: the scan goes
    on from where it stopped, so live deliveries at the head of the pending
    list do not hide a dead consumer's behind them."""
    bus = make_bus()
    bus.declare([Trigger("classify", (UPLOADED,), max_attempts=3, lease_seconds=3.0)])
    for i in range(25):
        bus.publish(uploaded(i))
    live = bus.receive("classify", max_messages=20, wait_seconds=0, owner="live")
    dead = bus.receive("classify", max_messages=5, wait_seconds=0, owner="dead")
    deadline = time.monotonic() + 30
    while bus.ready_now("classify") < 25 and time.monotonic() < deadline:  # every lease ran out
        time.sleep(0.2)
    # the live consumer is still at work: its deliveries' idle time starts again
    client.xclaim(stream(broker), "classify", "live", 0, [d.tag.split("|")[0] for d in live])
    taken = []
    for _ in range(10):  # ten receives of one: a scan from the start each time would only see live ones
        taken += bus.receive("classify", max_messages=1, wait_seconds=0, owner="rescuer")
    assert sorted(d.body for d in taken) == sorted(d.body for d in dead)


def test_release_owner_hands_a_worker_s_deliveries_back_and_deletes_its_consumer(bus, broker, client):
    for i in range(2):
        bus.publish(uploaded(i))
    assert len(bus.receive("classify", max_messages=2, wait_seconds=0, owner="w1")) == 2
    assert bus.ready_now("classify") == 0
    assert bus.release_owner("w1") == 2
    assert bus.ready_now("classify") == 2  # due at once, before any lease ran out
    assert [c["name"] for c in client.xinfo_consumers(stream(broker), "classify")] == []
    again = bus.receive("classify", max_messages=2, wait_seconds=0, owner="w2")
    assert [d.attempt for d in again] == [2, 2]


# --------------------------------------------------------------------------- poison
@pytest.fixture
def context(settings, broker):
    from doclane.functions.context import Context
    from doclane.functions.runtime import triggers

    redis_settings = settings.model_copy(update={"bus": "redis", "redis_url": REDIS_URL, "broker": broker})
    c = Context(redis_settings)
    c.bus.declare(triggers(redis_settings))
    yield c
    c.close()


def test_a_poison_message_ends_in_the_dead_letter_stream_and_the_document_fails(context, broker, client):
    from doclane.functions.adapters.redis_bus import RedisBus
    from doclane.functions.ports import DocumentRecord
    from doclane.functions.runtime import load

    assert isinstance(context.bus, RedisBus)
    context.metadata.register(DocumentRecord(document_id="d1", bucket="inbox", key="1.pdf", filename="1.pdf",
                                             content_type="application/pdf", size=3, sha256="0" * 64,
                                             status="uploaded"))
    context.bus.publish(uploaded(1))
    calls = []

    def explode(*args, **kwargs):
        calls.append(1)
        raise ValueError("cannot read this one")

    fn = load("classify")
    poison = type(fn)(**{**fn.__dict__, "handle": explode})
    binding.consume(context.bus, poison, context, idle_seconds=1.0, max_attempts=3)
    assert len(calls) == 3  # max_attempts, with back-off between them
    ((_, fields),) = client.xrange(stream(broker, ".dlq"))  # the dead-letter stream as Redis holds it
    assert fields[b"reason"] == b"ValueError: cannot read this one" and fields[b"attempts"] == b"3"
    assert fields[b"subject"] == b"d1" and fields[b"type"] == UPLOADED.encode()
    (dead,) = context.bus.dead_letters("classify")
    assert dead.attempts == 3 and dead.subject == "d1" and "cannot read this one" in dead.reason
    record = context.metadata.get("d1")
    assert record.status == "failed" and "cannot read this one" in record.error
    (delivery,) = context.bus.receive("notify", wait_seconds=0)  # notify hears why
    failed = codec.loads(delivery.body)
    assert failed["type"] == "io.doclane.document.failed.v1" and failed.get_data()["stage"] == "classify"
    assert context.bus.backlog("classify") == 0


def test_garbage_on_the_stream_is_dead_lettered_at_once_and_the_worker_goes_on(context):
    from doclane.functions.runtime import load

    context.bus.enqueue_raw("ingest", b'{"specversion": "1.0", "id": ')  # truncated JSON
    context.bus.enqueue_raw("ingest", b"\x00\xffjunk")
    assert binding.consume(context.bus, load("ingest"), context, idle_seconds=0.3) == 2
    letters = context.bus.dead_letters("ingest")
    assert [dl.attempts for dl in letters] == [1, 1] and all("InvalidEvent" in dl.reason for dl in letters)
    assert letters[1].body == b"\x00\xffjunk"  # kept byte for byte


# --------------------------------------------------------------------------- retention
def test_retention_trims_history_but_never_an_unsettled_entry(make_bus, broker, client):
    bus = make_bus(maxlen=50)
    for i in range(300):
        bus.publish(uploaded(i))
    assert client.xlen(stream(broker)) == 300  # nothing was delivered yet: nothing may go
    done = []
    while len(done) < 200:
        done += bus.receive("classify", max_messages=50, wait_seconds=0)
    for d in done:
        bus.ack(d)
    held = bus.receive("classify", max_messages=20, wait_seconds=0)  # pending, not acked
    bus.publish(uploaded(300))  # publishing trims
    length = client.xlen(stream(broker))
    assert 101 <= length < 301  # trimmed, but never below the 80 waiting + 20 pending (+ the new one)
    oldest = client.xrange(stream(broker), count=1)[0][0]
    assert oldest <= held[0].tag.split("|")[0].encode()
    rest = held + bus.receive("classify", max_messages=200, wait_seconds=0)
    assert len(rest) == 101 and len({d.body for d in rest}) == 101  # everything unsettled is still there
    for d in rest:
        bus.ack(d)
    bus.publish(uploaded(301))
    assert client.xlen(stream(broker)) <= 50 + 100  # about maxlen: `~` trims whole stream nodes


def test_retention_by_age(make_bus, broker, client):
    bus = make_bus(maxlen=0, max_age_seconds=1)
    for i in range(20):
        bus.publish(uploaded(i))
    for d in bus.receive("classify", max_messages=20, wait_seconds=0):
        bus.ack(d)
    first = client.xrange(stream(broker), count=1)[0][0]
    deadline, i = time.monotonic() + 20, 100
    while client.xrange(stream(broker), count=1)[0][0] == first and time.monotonic() < deadline:
        i += 1
        bus.publish(uploaded(i))  # each publish trims what is older than a second
        for d in bus.receive("classify", max_messages=5, wait_seconds=0.2):
            bus.ack(d)
    assert client.xrange(stream(broker), count=1)[0][0] != first
    assert bus.backlog("classify") == 0


# --------------------------------------------------------------------------- batching and blocking
def test_receive_batches_up_to_max_messages(bus):
    for i in range(10):
        bus.publish(uploaded(i))
    first = bus.receive("classify", max_messages=4, wait_seconds=0)
    rest = bus.receive("classify", max_messages=10, wait_seconds=0)
    assert len(first) == 4 and len(rest) == 6
    assert len({d.tag for d in first + rest}) == 10 and {d.attempt for d in first + rest} == {1}
    assert bus.receive("classify", max_messages=10, wait_seconds=0) == []
    for d in first + rest:
        bus.ack(d)
    assert bus.backlog("classify") == 0


def test_a_blocking_receive_wakes_when_an_event_is_published(bus):
    publisher = threading.Timer(0.5, lambda: bus.publish(uploaded()))
    publisher.start()
    started = time.monotonic()
    (d,) = bus.receive("classify", wait_seconds=30)
    assert time.monotonic() - started < 25  # woken by the event, not by the end of the wait
    assert b'"d1"' in d.body
    publisher.join(10)  # its reply may still be on the way


def test_counts_show_ready_delayed_leased_and_dead(bus):
    bus.declare([Trigger("classify", (UPLOADED,), max_attempts=3, backoff_seconds=60)])  # retries wait a minute
    for i in range(3):
        bus.publish(uploaded(i))
    a, b = bus.receive("classify", max_messages=2, wait_seconds=0)
    bus.nack(a, "later", retryable=True)
    assert bus.counts()["classify"] == {"ready": 1, "delayed": 1, "leased": 1, "dead": 0}
    assert bus.backlog("classify") == 3 and bus.ready_now("classify") == 1
    bus.nack(b, "never", retryable=False)
    assert bus.counts()["classify"] == {"ready": 1, "delayed": 1, "leased": 0, "dead": 1}
    assert bus.backlog("classify") == 2


# --------------------------------------------------------------------------- configuration and failures
def test_the_bus_is_chosen_by_settings(settings, broker):
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus
    from doclane.functions.adapters.redis_bus import RedisBus
    from doclane.functions.context import Context
    from doclane.functions.settings import load
    from doclane.local.bus import SqliteBus

    def bus_of(**kw):
        c = Context(load(data_dir=str(settings.data_dir), **kw))
        try:
            return type(c.bus)
        finally:
            c.close()

    assert bus_of() is SqliteBus
    assert bus_of(amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F") is RabbitBus  # as before DOCLANE_BUS
    assert bus_of(bus="redis", redis_url=REDIS_URL, broker=broker) is RedisBus
    assert bus_of(bus="redis", redis_url=REDIS_URL, broker=broker,
                  amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F") is RedisBus  # DOCLANE_BUS wins
    assert bus_of(bus="sqlite", amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F") is SqliteBus
    with pytest.raises(ConfigError, match=r"^DOCLANE_BUS='redis' is not valid: needs DOCLANE_REDIS_URL"):
        load(bus="redis")


def test_an_unreachable_server_is_retryable():
    from doclane.functions.adapters.redis_bus import RedisBus

    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(Retryable, match="unreachable"):
        bus.publish(uploaded())


def test_a_bad_url_is_a_config_error():
    from doclane.functions.adapters.redis_bus import RedisBus

    with pytest.raises(ConfigError, match="not a Redis URL"):
        RedisBus("http://127.0.0.1:6379")


def test_doctor_names_redis_as_the_bus(settings, broker):
    from doclane.local import doctor

    s = settings.model_copy(update={"bus": "redis", "redis_url": REDIS_URL, "broker": broker})
    line = doctor.redis(s, 3.0)
    assert line.status == "ok" and f"the event bus (Redis Streams, broker {broker})" in line.text
    off = doctor.rabbitmq(s, 3.0)
    assert off.status == "off" and "DOCLANE_BUS=redis" in off.text and not doctor.failed([line, off])


def test_the_binding_bench_runs_on_redis_and_leaves_no_key():
    require_redis()
    from doclane.local import bench_bus

    before = {k for k in redis.Redis.from_url(REDIS_URL).scan_iter(match="{bench-*", count=1000)}
    figures = bench_bus.bench_redis(REDIS_URL, 200)
    assert figures["label"] == "RedisBus binding" and figures["n"] == 200 and figures["end_to_end_per_s"] > 0
    after = {k for k in redis.Redis.from_url(REDIS_URL).scan_iter(match="{bench-*", count=1000)}
    assert after <= before  # another run's keys may come and go; none of ours stays
