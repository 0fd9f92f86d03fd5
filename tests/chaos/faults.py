"""The faults the chaos scenarios inject, on the real services of the machine
the tests run on: restart RabbitMQ or PostgreSQL, SIGKILL one function
process of `doclane up`, a webhook receiver that fails, hangs, then recovers.

Every outage restores its service in a `finally` and waits until it accepts
connections again, even when the test fails, so later tests (and everyone
else sharing the server) find it running. A scenario that cannot restart a
service (not root, no rabbitmqctl, a remote server) skips on a laptop and
fails in CI (`require`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import psutil

from tests.conftest import require

RABBITMQ_PORT = 5672
POSTGRES_PORT = 5432
# Long enough that clients notice (connections fail, calls time out), short
# enough not to break the other users of the shared servers for long.
OUTAGE_SECONDS = 3.0


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not within {timeout:.0f}s")


# --------------------------------------------------------------------------- RabbitMQ
def require_rabbitmq_control() -> None:
    """Root and a local node that rabbitmqctl can stop and start."""
    require(os.geteuid() == 0, "restarting RabbitMQ needs root")
    require(bool(shutil.which("rabbitmqctl") and shutil.which("rabbitmq-server")),
            "rabbitmqctl/rabbitmq-server are not installed: RabbitMQ cannot be restarted here")
    status = _run(["rabbitmqctl", "-q", "status"])
    require(status.returncode == 0, f"rabbitmqctl cannot reach the local node: {status.stderr.strip()[:200]}")


def _rabbitmq_ready() -> bool:
    return port_open(RABBITMQ_PORT) and _run(["rabbitmqctl", "-q", "await_startup", "--timeout", "5"]).returncode == 0


def start_rabbitmq(timeout: float = 90) -> None:
    """Start the node when it is not running, and wait until it takes AMQP connections."""
    if _rabbitmq_ready():
        return
    if _run(["rabbitmqctl", "-q", "ping"]).returncode != 0:  # the node is not running at all
        _run(["rabbitmq-server", "-detached"])
    wait_until(_rabbitmq_ready, timeout, "RabbitMQ accepting connections", interval=1.0)


@contextmanager
def rabbitmq_down(seconds: float = OUTAGE_SECONDS) -> Iterator[None]:
    """Stop the RabbitMQ node (every connection drops, nothing listens),
    hold the outage for `seconds`, and start it again whatever happens."""
    try:
        stopped = _run(["rabbitmqctl", "-q", "shutdown"])
        if stopped.returncode != 0:
            raise RuntimeError(f"rabbitmqctl shutdown failed: {stopped.stderr.strip()[:300]}")
        wait_until(lambda: not port_open(RABBITMQ_PORT), 30, "RabbitMQ to stop listening")
        time.sleep(seconds)
        yield
    finally:
        start_rabbitmq()


def restart_rabbitmq(down_seconds: float = OUTAGE_SECONDS) -> None:
    with rabbitmq_down(down_seconds):
        pass


def rabbitmq_queues(prefix: str) -> dict[str, tuple[int, int]]:
    """(ready, unacknowledged) of every queue whose name starts with `prefix`,
    as the broker counts them: in-flight deliveries of every process."""
    import json

    out = _run(["rabbitmqctl", "-q", "list_queues", "--formatter", "json",
                "name", "messages_ready", "messages_unacknowledged"])
    if out.returncode != 0:
        raise RuntimeError(f"rabbitmqctl list_queues failed: {out.stderr.strip()[:300]}")
    return {q["name"]: (int(q["messages_ready"]), int(q["messages_unacknowledged"]))
            for q in json.loads(out.stdout) if q["name"].startswith(prefix)}


def broker_busy(broker: str) -> dict[str, tuple[int, int]]:
    """The queues of `broker` with a message waiting or un-acked (dead-letter
    queues aside: what they hold is settled)."""
    return {name: counts for name, counts in rabbitmq_queues(broker + ".").items()
            if sum(counts) and not name.endswith(".dlq")}


# --------------------------------------------------------------------------- PostgreSQL
def _postgres_cluster() -> tuple[str, str] | None:
    """(version, name) of the local cluster on port 5432, from pg_lsclusters."""
    if not shutil.which("pg_lsclusters"):
        return None
    for line in _run(["pg_lsclusters", "--no-header"]).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == str(POSTGRES_PORT):
            return parts[0], parts[1]
    return None


def require_postgres_control() -> tuple[str, str]:
    require(os.geteuid() == 0, "restarting PostgreSQL needs root")
    cluster = _postgres_cluster() if shutil.which("pg_ctlcluster") else None
    require(cluster is not None, f"no local PostgreSQL cluster on port {POSTGRES_PORT} that pg_ctlcluster controls")
    return cluster  # type: ignore[return-value]


def _pg_ctl(cluster: tuple[str, str], action: str, *extra: str) -> subprocess.CompletedProcess:
    return _run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action, *extra], timeout=120)


def _postgres_ready(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def start_postgres(cluster: tuple[str, str], url: str, timeout: float = 90) -> None:
    if not _postgres_ready(url):
        _pg_ctl(cluster, "start")
    wait_until(lambda: _postgres_ready(url), timeout, "PostgreSQL accepting connections", interval=0.5)


@contextmanager
def postgres_down(cluster: tuple[str, str], url: str, seconds: float = OUTAGE_SECONDS) -> Iterator[None]:
    """Stop the cluster in fast mode (every session is disconnected, open
    transactions roll back), hold the outage, start it again whatever happens."""
    try:
        stopped = _pg_ctl(cluster, "stop", "-m", "fast")
        if stopped.returncode != 0:
            raise RuntimeError(f"pg_ctlcluster stop failed: {stopped.stderr.strip()[:300]}")
        time.sleep(seconds)
        yield
    finally:
        start_postgres(cluster, url)


# --------------------------------------------------------------------------- function processes
def function_processes(up_pid: int) -> dict[str, list[psutil.Process]]:
    """The function processes of one `doclane up`, by function: its children
    started as `python -m doclane.local.worker <function> <owner>`."""
    found: dict[str, list[psutil.Process]] = {}
    try:
        children = psutil.Process(up_pid).children()
    except psutil.NoSuchProcess:
        return found
    for child in children:
        try:
            cmd = child.cmdline()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if "doclane.local.worker" in cmd and child.status() != psutil.STATUS_ZOMBIE:
            name = cmd[cmd.index("doclane.local.worker") + 1]
            found.setdefault(name, []).append(child)
    return found


def sigkill(process: psutil.Process) -> None:
    """SIGKILL, the worst case: no handler runs, nothing is settled or closed."""
    process.send_signal(signal.SIGKILL)
    try:
        process.wait(10)
    except psutil.TimeoutExpired:
        raise RuntimeError(f"process {process.pid} survived SIGKILL") from None


def leased(bus_path: Path, trigger: str) -> int:
    """Deliveries of `trigger` a function process holds right now on the
    embedded bus (read-only: the scenario only looks)."""
    import sqlite3

    db = sqlite3.connect(f"file:{bus_path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT count(*) FROM messages WHERE trigger = ? AND state = 'leased'",
                          (trigger,)).fetchone()[0]
    finally:
        db.close()


# --------------------------------------------------------------------------- webhook receiver
class FaultSchedule:
    """What a failing webhook receiver answers, call by call: `errors`
    answers of HTTP 500/503, then `hangs` requests held past the sender's
    timeout (then 503: the receiver never took them), then it recovers.
    Counted, not timed, so every phase happens however fast the machine.
    For `Receiver(fault=...)` in tests/e2e/harness.py."""

    def __init__(self, errors: int, hangs: int, hang_seconds: float):
        self.plan: list[tuple[int, float]] = [(500 if i % 2 == 0 else 503, 0.0) for i in range(errors)]
        self.plan += [(503, hang_seconds)] * hangs
        self.served: list[tuple[int, float]] = []
        self._lock = threading.Lock()

    def __call__(self) -> tuple[int, float] | None:
        with self._lock:
            if len(self.served) == len(self.plan):
                return None
            fault = self.plan[len(self.served)]
            self.served.append(fault)
            return fault

    @property
    def done(self) -> bool:
        return len(self.served) == len(self.plan)


class HoldFirst:
    """Holds the first webhook delivery in flight (the receiver neither
    answers nor takes it) until `release` is set, then answers 503. A test
    kills notify while `holding`: mid-send, before the receiver took the
    event. (Killed after the receiver took it and before notify recorded
    it, a repeat would be unavoidable: at-least-once, which is why Standard
    Webhooks receivers de-duplicate by webhook-id.)"""

    def __init__(self, timeout: float = 120):
        self.holding, self.release = threading.Event(), threading.Event()
        self.timeout = timeout
        self._used = False
        self._lock = threading.Lock()

    def __call__(self) -> tuple[int, float] | None:
        with self._lock:
            if self._used:
                return None
            self._used = True
        self.holding.set()
        self.release.wait(self.timeout)
        return 503, 0.0
