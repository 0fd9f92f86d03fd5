"""Autoscaling on one machine: each function's process count follows its
backlog, ceil(waiting events / target) within the function's min..max
(settings: DOCLANE_MIN_PROCESSES, DOCLANE_MAX_PROCESSES, DOCLANE_TARGET_BACKLOG,
per function DOCLANE_PROCESSES), the way KEDA scales a Deployment on queue
length. More processes than the backlog needs for DOCLANE_SCALE_DOWN_SECONDS:
the newest is asked to leave at its next poll that finds no work (never in the
middle of a delivery); the last one leaves after DOCLANE_IDLE_SECONDS without
work (scale to zero) unless the minimum keeps it. Several processes of one
function share its queue safely: the SQLite bus leases each delivery to one
owner, RabbitMQ hands each message to one consumer (prefetch 1).

The leases of a process that died are handed back so its deliveries go to the
next one at once (the attempt still counts, so a document that kills every
worker ends dead-lettered, then failed)."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from doclane.functions.errors import Retryable
from doclane.functions.observability import metrics
from doclane.functions.runtime import Function

log = logging.getLogger("doclane.supervisor")


@dataclass
class Worker:
    function: str
    owner: str
    started: float
    process: subprocess.Popen | None = None
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    drain: threading.Event = field(default_factory=threading.Event)  # in-process: leave at the next empty poll
    resident: bool = False  # kept for the function's minimum: never leaves for being idle
    retiring: bool = False

    def retire(self) -> None:
        """Leave at the next poll that finds no work: a delivery in hand is finished first."""
        self.retiring = True
        self.drain.set()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)  # local/worker.py: drain

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.thread is not None and self.thread.is_alive()

    def exit_code(self) -> int | None:
        return self.process.returncode if self.process is not None else 0


def _die_with_parent() -> None:
    """Linux: a function process gets SIGTERM when `doclane up` dies, even by
    SIGKILL, so no orphan keeps working on leases the next run hands out."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _child_setup() -> None:
    """Before the function process runs: die with the parent, and ignore a
    drain request (SIGUSR1, whose default action kills) until the worker has
    its handler, so an early one is at worst lost, never a crash."""
    _die_with_parent()
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


@dataclass(frozen=True)
class Bounds:
    """A function's process count: at least `min`, at most `max`, one process
    per `target` waiting events (KEDA's minReplicaCount, maxReplicaCount and
    QueueLength value)."""
    min: int
    max: int
    target: int

    def desired(self, backlog: int) -> int:
        return max(self.min, min(self.max, math.ceil(backlog / self.target)))


class Supervisor:
    def __init__(self, bus, functions: list[Function], *, in_process: bool = False, log_dir=None,
                 context_factory=None, settings=None):
        from doclane.functions.settings import load as load_settings

        self.bus = bus
        self.functions = functions
        self.in_process = in_process
        self.log_dir = log_dir
        self.context_factory = context_factory
        self.settings = settings or load_settings()
        self.bounds: dict[str, Bounds] = {fn.name: Bounds(*self.settings.process_bounds(fn.name)) for fn in functions}
        self.desired: dict[str, int] = {fn.name: 0 for fn in functions}
        self.workers: dict[str, list[Worker]] = {fn.name: [] for fn in functions}
        self.starts: dict[str, int] = {fn.name: 0 for fn in functions}
        self.crashes: dict[str, int] = {fn.name: 0 for fn in functions}
        self._surplus_since: dict[str, float] = {}
        self._shortage_since: dict[str, float] = {}
        self._outage_logged = -math.inf  # when "the bus is unreachable" was last logged

    def tick(self) -> None:
        for fn in self.functions:
            live = self.workers[fn.name] = self._reap(fn.name)
            bounds = self.bounds[fn.name]
            try:
                backlog = self.bus.ready_now(fn.name)
            except Retryable as exc:
                self._bus_unreachable(exc)
                continue
            desired = self.desired[fn.name] = bounds.desired(backlog)
            active = [w for w in live if not w.retiring]
            if len(active) < desired:
                self._surplus_since.pop(fn.name, None)
                wanted = self._wanted(fn.name, desired, len(active), bounds)
                # a retiring process counts against the maximum until it has gone
                for _ in range(min(wanted - len(active), bounds.max - len(live))):
                    resident = sum(w.resident for w in active) < bounds.min
                    worker = self._start(fn, resident=resident)
                    live.append(worker)
                    active.append(worker)
            elif len(active) > max(desired, 1):  # the last one leaves by its own idle timeout
                self._shortage_since.pop(fn.name, None)
                self._scale_down(fn.name, active)
            else:
                self._surplus_since.pop(fn.name, None)
                self._shortage_since.pop(fn.name, None)
            self.workers[fn.name] = live

    def _bus_unreachable(self, exc: Retryable) -> None:
        """The bus cannot say what waits (a broker restarting): leave the
        processes as they are (they reconnect by themselves: binding.consume)
        and ask again next tick, so `doclane up` rides out the outage.
        Logged once a minute, not every tick."""
        now = time.monotonic()
        if now - self._outage_logged > 60:
            log.warning("the bus is unreachable (%s); processes left as they are until it answers", exc)
            self._outage_logged = now

    def _reap(self, name: str) -> list[Worker]:
        """The live workers; a dead one's leases go back to the queue."""
        live = []
        for w in self.workers[name]:
            if w.alive():
                live.append(w)
                continue
            released = self.bus.release_owner(w.owner)
            if w.process is not None:
                metrics.process_exited(w.process.pid)  # its live gauges go, its counters stay
            code = w.exit_code()
            if code not in (0, None):
                self.crashes[name] += 1
                log.warning("%s worker %s exited with %s; %d deliveries released", name, w.owner, code, released)
        return live

    def _wanted(self, name: str, desired: int, active: int, bounds: Bounds) -> int:
        """How many processes to have now: the first and the minimum at once;
        more only once the backlog has needed them for `scale_up_seconds`
        (a burst shorter than a cold start is served faster by the warm one)."""
        now = time.monotonic()
        at_once = max(1, bounds.min)
        if desired <= at_once or now - self._shortage_since.setdefault(name, now) >= self.settings.scale_up_seconds:
            return desired
        return max(at_once, active)

    def _scale_down(self, name: str, active: list[Worker]) -> None:
        """Too many processes for the backlog since `scale_down_seconds` ago:
        retire the newest that the minimum does not keep, one at a time."""
        now = time.monotonic()
        since = self._surplus_since.setdefault(name, now)
        if now - since < self.settings.scale_down_seconds:
            return
        spare = [w for w in active if not w.resident]
        if spare:
            newest = max(spare, key=lambda w: w.started)
            newest.retire()
            log.info("%s: %d processes for the backlog; %s leaves when idle", name, len(active) - 1, newest.owner)
        self._surplus_since[name] = now

    def running(self) -> dict[str, int]:
        return {name: sum(1 for w in ws if w.alive()) for name, ws in self.workers.items()}

    def _start(self, fn: Function, *, resident: bool = False) -> Worker:
        owner = f"{fn.name}-{uuid.uuid4().hex[:8]}"
        self.starts[fn.name] += 1
        worker = Worker(fn.name, owner, time.monotonic(), resident=resident)
        if self.in_process:
            from doclane.local.worker import serve

            worker.thread = threading.Thread(
                target=serve, name=owner, daemon=True,
                kwargs=dict(name=fn.name, owner=owner, settings=self.settings, stop=worker.stop,
                            context=self.context_factory() if self.context_factory else None,
                            drain=worker.drain, resident=resident),
            )
            worker.thread.start()
        else:
            out = open(self.log_dir / f"{fn.name}.log", "ab") if self.log_dir else subprocess.DEVNULL
            worker.process = subprocess.Popen(
                [sys.executable, "-m", "doclane.local.worker", fn.name, owner, *(["--resident"] if resident else [])],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ.copy(),
                preexec_fn=_child_setup,
            )
            if out is not subprocess.DEVNULL:
                out.close()  # the child has its own descriptor; ours would leak one per start
        log.info("started %s (%s%s)", fn.name, owner, ", resident" if resident else "")
        return worker

    def stop(self, timeout: float = 15.0) -> None:
        workers = [w for ws in self.workers.values() for w in ws]
        for w in workers:
            w.stop.set()
            if w.process is not None and w.process.poll() is None:
                w.process.terminate()
        deadline = time.monotonic() + timeout
        for w in workers:
            if w.process is not None:
                try:
                    w.process.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    w.process.kill()
                    w.process.wait()
            elif w.thread is not None:
                w.thread.join(max(deadline - time.monotonic(), 0.1))
            self.bus.release_owner(w.owner)
