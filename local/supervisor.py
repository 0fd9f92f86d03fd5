"""Scale to zero on one machine: start a function's process when its queue
has work, let it exit when idle, and hand back the leases of a process that
died so its deliveries go to the next one at once (the attempt still counts,
so a document that kills every worker ends dead-lettered, then failed)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

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


class Supervisor:
    def __init__(self, bus, functions: list[Function], *, in_process: bool = False, log_dir=None,
                 context_factory=None, settings=None):
        self.bus = bus
        self.functions = functions
        self.in_process = in_process
        self.log_dir = log_dir
        self.context_factory = context_factory
        self.settings = settings
        self.workers: dict[str, list[Worker]] = {fn.name: [] for fn in functions}
        self.starts: dict[str, int] = {fn.name: 0 for fn in functions}
        self.crashes: dict[str, int] = {fn.name: 0 for fn in functions}

    def tick(self) -> None:
        for fn in self.functions:
            live = []
            for w in self.workers[fn.name]:
                if w.alive():
                    live.append(w)
                    continue
                released = self.bus.release_owner(w.owner)
                code = w.exit_code()
                if code not in (0, None):
                    self.crashes[fn.name] += 1
                    log.warning("%s worker %s exited with %s; %d deliveries released", fn.name, w.owner, code, released)
            self.workers[fn.name] = live
            ready = self.bus.ready_now(fn.name)
            if ready and len(live) < fn.max_processes:
                # one more process per tick at most: a cold start is seconds
                self.workers[fn.name].append(self._start(fn))

    def running(self) -> dict[str, int]:
        return {name: sum(1 for w in ws if w.alive()) for name, ws in self.workers.items()}

    def _start(self, fn: Function) -> Worker:
        owner = f"{fn.name}-{uuid.uuid4().hex[:8]}"
        self.starts[fn.name] += 1
        worker = Worker(fn.name, owner, time.monotonic())
        if self.in_process:
            from doclane.local.worker import serve

            worker.thread = threading.Thread(
                target=serve, name=owner, daemon=True,
                kwargs=dict(name=fn.name, owner=owner, settings=self.settings, stop=worker.stop,
                            context=self.context_factory() if self.context_factory else None),
            )
            worker.thread.start()
        else:
            out = open(self.log_dir / f"{fn.name}.log", "ab") if self.log_dir else subprocess.DEVNULL
            worker.process = subprocess.Popen(
                [sys.executable, "-m", "doclane.local.worker", fn.name, owner],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ.copy(),
                preexec_fn=_die_with_parent,
            )
        log.info("started %s (%s)", fn.name, owner)
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
