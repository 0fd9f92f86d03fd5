"""`doclane up` scales each function's processes with its backlog: up to the
bound while events wait, back to zero when the queue drains, every event
handled exactly once, on the SQLite bus and on RabbitMQ."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from doclane.events.envelope import new_event
from doclane.functions.context import Context
from doclane.functions.errors import ConfigError
from doclane.functions.notifications import record_for
from doclane.functions.runtime import load, triggers
from doclane.functions.settings import load as load_settings
from doclane.local.bus import SqliteBus
from doclane.local.cli import main as doclane_cli
from doclane.local.supervisor import Bounds, Supervisor
from doclane.local.up import _export
from tests.amqp_support import AMQP_URL, delete_broker, queue_exists, require_rabbitmq, unique_broker

EVENTS = 24  # with a target of 5 per process this wants 5 processes: the bound (2) must hold
HANDLED = re.compile(r"^\S+ \S+ ingest\[(\d+)\] INFO ingest handled ", re.M)


@pytest.fixture(params=["sqlite", "rabbitmq"])
def setup(request, settings, monkeypatch, tmp_path):
    """Settings the worker processes read too (exported), and the bus they share."""
    overrides = dict(max_processes=2, target_backlog=5, scale_down_seconds=1.0, scale_up_seconds=0.0, idle_seconds=2.0)
    broker = None
    if request.param == "rabbitmq":
        require_rabbitmq()
        broker = unique_broker("autoscale")
        overrides |= dict(amqp_url=AMQP_URL, broker=broker)
    settings = export(settings.model_copy(update=overrides), monkeypatch)
    context = Context(settings)
    context.bus.declare(triggers(settings))
    yield request.param, settings, context
    context.close()
    if broker:
        delete_broker(broker, triggers(settings))


def export(settings, monkeypatch):
    """Make the folders, and put the settings in the environment, where the
    function processes read them (as `doclane up` does); undone after the test."""
    settings.inbox.mkdir(parents=True, exist_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for name in settings.model_dump():
        monkeypatch.setenv("OLLAMA_HOST" if name == "ollama_host" else f"DOCLANE_{name.upper()}", "")
    _export(settings)
    return settings


def publish_files(bus, settings, count: int, prefix: str = "doc") -> None:
    """`count` distinct files in the inbox, then a bucket notification for
    each, published together so the whole backlog is there at once."""
    events = []
    for i in range(count):
        name = f"{prefix}-{i:03d}.txt"
        body = f"Dear Anna, this is {prefix} letter {i}. Kind regards, Bob"
        (settings.inbox / name).write_text(body)
        events.append(new_event("bucket.notification", {"Records": [record_for("created", "inbox", name, size=len(body))]},
                                subject=None, source="test"))
    bus.publish_many(events)


def run_until(sup: Supervisor, predicate, timeout: float = 120) -> int:
    """Tick like `doclane up` does until `predicate()`; the most processes seen running at once."""
    peak = 0
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sup.tick()
        peak = max(peak, sup.running()["ingest"])
        if predicate():
            return peak
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout} s; running {sup.running()}, queue {sup.bus.ready_now('ingest')}")


def test_processes_follow_the_backlog_up_to_the_bound_and_back_to_zero(setup):
    kind, settings, context = setup
    publish_files(context.bus, settings, EVENTS)
    sup = Supervisor(context.bus, [load("ingest")], log_dir=settings.data_dir, settings=settings)
    try:
        sup.tick()
        # ceil(24 / 5) = 5 processes wanted, 2 allowed: both start at once
        assert sup.desired["ingest"] == 2 and sup.running() == {"ingest": 2} and sup.starts["ingest"] == 2

        def drained_and_idle():
            return context.metadata.stats()["status"].get("uploaded", 0) == EVENTS and sup.running()["ingest"] == 0

        peak = run_until(sup, drained_and_idle)
        sup.tick()
        assert peak == 2 and sup.workers["ingest"] == [] and sup.crashes["ingest"] == 0
        assert sup.desired["ingest"] == 0 and context.bus.ready_now("ingest") == 0
    finally:
        sup.stop()
    # Exactly once: one "handled" line per event over all processes' logs, and
    # (SQLite) each delivery leased once and settled.
    log = (settings.data_dir / "ingest.log").read_text()
    assert len(HANDLED.findall(log)) == EVENTS, log[-3000:]
    if kind == "sqlite":
        counts = context.bus.counts()["ingest"]
        assert counts.get("done") == EVENTS and counts.get("dead", 0) == 0
        rows = context.bus._db().execute("SELECT attempts FROM messages WHERE trigger='ingest'").fetchall()
        assert [r[0] for r in rows] == [1] * EVENTS


def _threads(settings, **overrides):
    """In-process workers on the SQLite bus (fast: no interpreter start-up).
    Extra processes start at once unless a test asks for scale_up_seconds."""
    settings = settings.model_copy(update={"scale_up_seconds": 0.0, **overrides})
    settings.inbox.mkdir(parents=True, exist_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    bus = SqliteBus(settings.bus_path)
    bus.declare(triggers(settings))
    return settings, bus, Supervisor(bus, [load("ingest")], in_process=True, settings=settings)


def test_surplus_processes_leave_when_idle_and_the_last_waits_for_its_idle_timeout(settings):
    # A long idle timeout: only the supervisor's scale-down can end a thread here.
    settings, bus, sup = _threads(settings, max_processes=3, target_backlog=2, idle_seconds=600,
                                  scale_down_seconds=0.5)
    try:
        publish_files(bus, settings, 12)
        sup.tick()
        assert sup.running() == {"ingest": 3}
        run_until(sup, lambda: bus.counts()["ingest"].get("done") == 12)
        # the backlog is gone: the two newest are retired one at a time, each at an empty poll
        run_until(sup, lambda: sup.running()["ingest"] == 1)
        (last,) = [w for w in sup.workers["ingest"] if w.alive()]
        assert not last.retiring and last is min(sup.workers["ingest"], key=lambda w: w.started)
        assert sup.crashes["ingest"] == 0
        # a new backlog scales up again from the one left
        publish_files(bus, settings, 12, prefix="more")
        peak = run_until(sup, lambda: bus.counts()["ingest"].get("done") == 24)
        assert sup.starts["ingest"] >= 4 and peak <= 3
        assert [r[0] for r in bus._db().execute("SELECT attempts FROM messages WHERE trigger='ingest'")] == [1] * 24
        assert sup.crashes["ingest"] == 0
    finally:
        sup.stop()


def test_the_minimum_stays_when_idle_and_is_replaced_when_it_dies(settings):
    settings, bus, sup = _threads(settings, processes="ingest=1-2", idle_seconds=0.5, scale_down_seconds=0.5)
    try:
        sup.tick()
        (resident,) = sup.workers["ingest"]
        assert resident.resident and sup.desired["ingest"] == 1
        # several idle timeouts later it is still there, and no other was started
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            sup.tick()
            time.sleep(0.2)
        assert sup.workers["ingest"] == [resident] and resident.alive() and sup.starts["ingest"] == 1
        resident.stop.set()  # it leaves (as if it died): the next tick restores the minimum
        run_until(sup, lambda: sup.starts["ingest"] == 2)
        assert [w.resident for w in sup.workers["ingest"]] == [True]
    finally:
        sup.stop()


@pytest.mark.parametrize(("backlog", "expected"), [(0, 1), (1, 1), (10, 1), (11, 2), (30, 3), (1000, 4)])
def test_desired_is_the_backlog_over_the_target_within_the_bounds(backlog, expected):
    assert Bounds(min=1, max=4, target=10).desired(backlog) == expected


def test_per_function_overrides_and_their_errors(monkeypatch):
    monkeypatch.setenv("DOCLANE_PROCESSES", "classify=0-4/10, index=1")
    monkeypatch.setenv("DOCLANE_MIN_PROCESSES", "1")
    s = load_settings()
    assert s.process_bounds("classify") == (0, 4, 10)
    assert s.process_bounds("index") == (1, 1, 5)  # the global minimum, capped by its maximum
    assert s.process_bounds("ingest") == (1, 2, 5)
    for bad, says in [("classify=5-4", "min <= max"), ("classifier=2", "no function 'classifier'"),
                      ("classify:2", "function=max")]:
        monkeypatch.setenv("DOCLANE_PROCESSES", bad)
        with pytest.raises(ConfigError, match="DOCLANE_PROCESSES") as err:
            load_settings()
        assert says in str(err.value)
    monkeypatch.setenv("DOCLANE_PROCESSES", "")
    monkeypatch.setenv("DOCLANE_MIN_PROCESSES", "3")
    with pytest.raises(ConfigError, match="DOCLANE_MAX_PROCESSES"):
        load_settings()


def test_the_deployment_worker_declares_serves_health_and_stays_until_sigterm(settings, monkeypatch):
    """`doclane worker ingest` as a worker Deployment runs it (infra/helm), on RabbitMQ."""
    require_rabbitmq()
    broker = unique_broker("worker")
    settings = export(settings.model_copy(update=dict(amqp_url=AMQP_URL, broker=broker, idle_seconds=1.0)),
                      monkeypatch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "from doclane.local.cli import main; main()",
                             "worker", "ingest", "--port", str(port)],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = Context(settings)
    try:
        def healthy():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
            except httpx.HTTPError:
                return None

        end = time.monotonic() + 60
        while (health := healthy()) is None and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert health == {"status": "ok", "function": "ingest", "role": "worker"}, proc.poll()
        # it declared the whole topology before consuming: every function's queue exists
        assert all(queue_exists(f"{broker}.{t.name}") for t in triggers(settings))
        publish_files(context.bus, settings, 3)
        end = time.monotonic() + 60
        while context.metadata.stats()["status"].get("uploaded", 0) < 3 and time.monotonic() < end:
            time.sleep(0.2)
        assert context.metadata.stats()["status"].get("uploaded") == 3
        # idle for several DOCLANE_IDLE_SECONDS: a Deployment's worker does not leave (KEDA decides)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        context.close()
        delete_broker(broker, triggers(settings))
    # and `doclane declare` (the api's init container) makes the topology on its own
    try:
        result = CliRunner().invoke(doclane_cli, ["declare"])
        assert result.exit_code == 0 and f"RabbitMQ broker {broker}" in result.output, result.output
        assert queue_exists(f"{broker}.classify")
    finally:
        delete_broker(broker, triggers(settings))


def test_extra_processes_wait_for_a_backlog_that_lasts(settings):
    """Scale from zero starts one process at once; a second one only when the
    backlog still needs it `scale_up_seconds` later (a cold process loads its
    models on the same cores: a short burst is served faster by the warm one)."""
    settings, bus, sup = _threads(settings, max_processes=2, target_backlog=2, idle_seconds=600,
                                  scale_up_seconds=3600.0)
    try:
        publish_files(bus, settings, 12)
        sup.tick()
        assert sup.desired["ingest"] == 2 and sup.running() == {"ingest": 1}
        sup.tick()
        assert sup.running() == {"ingest": 1}  # the backlog has not lasted long enough
        bounds = sup.bounds["ingest"]
        assert sup._wanted("ingest", 2, 1, bounds) == 1
        sup._shortage_since["ingest"] -= 3600.0  # as if the backlog had lasted an hour
        assert sup._wanted("ingest", 2, 1, bounds) == 2
        run_until(sup, lambda: bus.counts()["ingest"].get("done") == 12)
    finally:
        sup.stop()
        bus.close()
