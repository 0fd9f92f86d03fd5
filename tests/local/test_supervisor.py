"""Scale to zero on one machine: a function's process starts on the first
event for it and exits after an idle period; a crashed one hands its work
back."""

import os
import time

import pytest

from doclane.events.envelope import new_event
from doclane.functions.notifications import record_for
from doclane.functions.runtime import load, triggers
from doclane.local.bus import SqliteBus
from doclane.local.supervisor import Supervisor
from doclane.local.up import _export


@pytest.fixture
def bus(settings, monkeypatch):
    settings.inbox.mkdir(parents=True)
    settings.data_dir.mkdir(parents=True)
    for name in ("DOCLANE_DATA_DIR", "DOCLANE_INBOX", "DOCLANE_IDLE_SECONDS"):
        monkeypatch.setenv(name, "")
    _export(settings)  # the worker process reads the same settings
    b = SqliteBus(settings.bus_path)
    b.declare(triggers(settings))
    return b


def notify(bus, settings, name="a.txt"):
    (settings.inbox / name).write_text("Dear Anna, kind regards, Bob")
    bus.publish(new_event("bucket.notification", {"Records": [record_for("created", "inbox", name, size=28)]},
                          subject=None, source="test"))


def wait(predicate, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_starts_on_first_event_and_scales_to_zero(bus, settings):
    sup = Supervisor(bus, [load("ingest")], log_dir=settings.data_dir)
    sup.tick()
    assert sup.running() == {"ingest": 0}  # nothing to do: nothing runs
    notify(bus, settings)
    sup.tick()
    assert sup.running() == {"ingest": 1} and sup.starts["ingest"] == 1
    assert wait(lambda: bus.counts().get("ingest", {}).get("done") == 1)
    # idle_seconds=2 in the test settings: the process exits by itself
    assert wait(lambda: sup.running() == {"ingest": 0}, timeout=30)
    sup.tick()
    assert sup.workers["ingest"] == [] and sup.crashes["ingest"] == 0
    sup.stop()


def test_a_killed_process_hands_its_delivery_back(bus, settings):
    sup = Supervisor(bus, [load("ingest")], log_dir=settings.data_dir)
    (settings.inbox / "x.txt").write_text("x")
    # leased by a "worker" that is about to die
    notify(bus, settings)
    (d,) = bus.receive("ingest", wait_seconds=0, owner="ghost")
    assert bus.ready_now("ingest") == 0
    from doclane.local.supervisor import Worker

    class Dead:
        returncode = -9
        pid = 4_194_304  # above Linux's pid_max: no such process

        def poll(self):
            return -9

    sup.workers["ingest"].append(Worker("ingest", "ghost", time.monotonic(), process=Dead()))
    sup.tick()  # reaps the dead one, releases its lease, starts a fresh process
    assert sup.crashes["ingest"] == 1
    assert wait(lambda: bus.counts().get("ingest", {}).get("done") == 1)
    sup.stop()


def test_a_bus_that_cannot_answer_stops_nothing_and_starts_nothing(bus, settings):
    from doclane.functions.errors import Retryable

    class Restarting:  # the bus while its broker restarts: every question fails
        down = True

        def ready_now(self, trigger):
            if self.down:
                raise Retryable("RabbitMQ at 127.0.0.1:5672 is unreachable")
            return bus.ready_now(trigger)

        def __getattr__(self, name):
            return getattr(bus, name)

    flaky = Restarting()
    sup = Supervisor(flaky, [load("ingest")], log_dir=settings.data_dir)
    notify(bus, settings)
    sup.tick()  # no exception: `doclane up` goes on
    assert sup.running() == {"ingest": 0}
    flaky.down = False
    sup.tick()
    assert sup.running() == {"ingest": 1}
    assert wait(lambda: bus.counts().get("ingest", {}).get("done") == 1)
    sup.stop()
