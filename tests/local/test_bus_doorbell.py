"""The embedded bus's doorbells: an idle consumer sleeps in select() on a
datagram socket and a publisher wakes it after committing, instead of the
consumer polling. Checked by their effects (the socket is rung, a stale
doorbell is forgotten), not by timing."""

import functools
import multiprocessing
import select
import sqlite3
import threading

import pytest

from doclane.events.bus import Trigger
from doclane.events.envelope import new_event
from doclane.local import bus as bus_mod
from doclane.local.bench_bus import hop_latency
from doclane.local.bus import SqliteBus

pytestmark = pytest.mark.skipif(not bus_mod.DOORBELLS, reason="doorbells need Linux abstract sockets")

T = Trigger("classify", ("io.doclane.document.uploaded.v1",), max_attempts=3, backoff_seconds=0.05)
UPLOADED = {"document_id": "d1", "bucket": "inbox", "key": "a.pdf", "filename": "a.pdf", "size": 3, "sha256": "0" * 64}


def _event(i):
    return new_event("document.uploaded", {**UPLOADED, "document_id": f"d{i}"}, subject=f"d{i}", source="test")


def _waiters(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT address, trigger FROM waiters").fetchall()


def test_an_empty_receive_registers_a_doorbell_and_a_publish_rings_it(tmp_path):
    path = tmp_path / "bus.sqlite"
    consumer, producer = SqliteBus(path), SqliteBus(path)
    consumer.declare([T])
    assert consumer.receive("classify", wait_seconds=0.05) == []
    ((address, trigger),) = _waiters(path)
    assert trigger == "classify"
    bell = consumer._doorbell("classify")
    assert bytes(address) == bell.address
    assert select.select([bell.sock], [], [], 0)[0] == []  # nothing rung yet
    producer.publish(_event(1))
    assert select.select([bell.sock], [], [], 5)[0] == [bell.sock]
    (d,) = consumer.receive("classify", wait_seconds=1)
    consumer.ack(d)
    consumer.close()
    assert _waiters(path) == []  # close unregisters
    producer.close()


def test_a_waiting_consumer_in_another_thread_gets_the_event(tmp_path):
    path = tmp_path / "bus.sqlite"
    producer = SqliteBus(path)
    producer.declare([T])
    got = []

    def consume():
        b = SqliteBus(path)
        got.extend(b.receive("classify", wait_seconds=60))
        for d in got:
            b.ack(d)
        b.close()

    thread = threading.Thread(target=consume)
    thread.start()
    for _ in range(500):  # until the consumer has gone to sleep on its doorbell
        if _waiters(path):
            break
        threading.Event().wait(0.01)
    producer.publish(_event(2))
    thread.join(60)
    assert not thread.is_alive() and len(got) == 1 and b'"d2"' in got[0].body
    producer.close()


def _register_and_exit(path):
    b = SqliteBus(path)
    b.receive("classify", wait_seconds=0.05)  # registers, then the process exits without close()


def test_a_dead_process_doorbell_is_forgotten_on_the_next_ring(tmp_path):
    path = tmp_path / "bus.sqlite"
    producer = SqliteBus(path)
    producer.declare([T])
    p = multiprocessing.get_context("spawn").Process(target=_register_and_exit, args=(str(path),))
    p.start()
    p.join(60)
    assert p.exitcode == 0 and len(_waiters(path)) == 1
    producer.publish(_event(3))  # the send is refused: the socket died with its process
    assert _waiters(path) == []
    assert producer.backlog("classify") == 1  # the event itself is kept
    producer.close()


def test_polling_consumers_ring_nobody_and_still_receive(tmp_path):
    path = tmp_path / "bus.sqlite"
    b = SqliteBus(path, doorbells=False)
    b.declare([T])
    assert b.receive("classify", wait_seconds=0.05) == [] and _waiters(path) == []
    b.publish(_event(4))
    assert len(b.receive("classify", wait_seconds=1)) == 1
    b.close()


def test_hop_latency_round_trips_through_another_process(tmp_path):
    figures = hop_latency(functools.partial(SqliteBus, tmp_path / "bus.sqlite"), 20, label="test")
    assert figures["n"] == 20 and 0 < figures["hop_ms_p50"] <= figures["hop_ms_p95"] <= figures["hop_ms_max"]
