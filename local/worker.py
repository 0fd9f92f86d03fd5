"""A function process: serve one trigger of the bus.

- Started by the supervisor of `doclane up` (`python -m doclane.local.worker
  <function> <owner>`): exits after DOCLANE_IDLE_SECONDS without work (scale
  to zero) unless `--resident` (the function's minimum keeps it); SIGUSR1
  asks it to leave at its next poll that finds no work (scale down).
- A worker Deployment's container (`doclane worker <function>`, infra/helm):
  never exits for being idle, because the platform (KEDA, an HPA) sets the
  replica count; answers /healthz for the probes.

Either way SIGTERM finishes the delivery in hand, then exits."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading

from doclane.functions.binding import consume
from doclane.functions.context import Context
from doclane.functions.errors import Retryable
from doclane.functions.observability import logs, metrics
from doclane.functions.runtime import load, triggers
from doclane.functions.settings import load as load_settings

log = logging.getLogger("doclane.worker")


def serve(name: str, owner: str, settings=None, stop: threading.Event | None = None, context=None, *,
          drain: threading.Event | None = None, resident: bool = False) -> int:
    settings = settings or load_settings()
    fn = load(name)
    stop = stop or threading.Event()
    own_context = context is None  # a context handed in is shared: its owner closes it
    context = context or Context(settings)
    try:
        bus = _bus(context, stop)
        if bus is None:  # asked to stop while waiting for it
            return 0
        return consume(bus, fn, context, stop=stop, idle_seconds=None if resident else settings.idle_seconds,
                       max_attempts=settings.max_attempts, owner=owner, drain=drain)
    finally:
        if own_context:
            context.close()


def _bus(context, stop: threading.Event):
    """The context's bus, waiting with back-off while it, or the metadata
    store it de-duplicates with (RabbitMQ), is unreachable: a process started
    during a restart of either rides it out, as consume() does mid-run,
    instead of crash-looping under the supervisor. None when stopped first."""
    backoff = 0.5
    while True:
        try:
            return context.bus
        except Retryable as exc:
            log.warning("cannot open the bus yet (%s); trying again in %.1fs", exc, backoff)
        if stop.wait(backoff):
            return None
        backoff = min(backoff * 2, 5.0)


def _stop_on_signals(stop: threading.Event) -> None:
    # SIGTERM: finish the delivery in hand, then exit.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


def _log_format(name: str) -> str:
    return f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s"


def run(name: str, *, host: str = "0.0.0.0", port: int = 8080, settings=None) -> int:
    """A worker Deployment's process: declare the bus topology (idempotent, so
    no event published before the first worker started is lost for want of a
    queue), serve /healthz on `port` (0: none), consume until SIGTERM."""
    settings = settings or load_settings()
    load(name)  # an unknown function fails here, before anything connects
    stop = threading.Event()
    _stop_on_signals(stop)
    context = Context(settings)
    server = None
    try:
        context.bus.declare(triggers(settings))
        if port:
            server = _health_server(name, host, port)
            threading.Thread(target=server.run, name="health", daemon=True).start()
            log.info("%s worker: /healthz on %s:%s", name, host, server.effective_port)
        return serve(name, f"{name}-{socket.gethostname()}", settings, stop, context, resident=True)
    finally:
        if server is not None:
            server.close()
        context.close()


def _health_server(name: str, host: str, port: int):
    """/healthz and /_/health, the same answer as the HTTP functions give.
    The consume loop is the main thread: when it ends, so does the process."""
    from flask import Flask
    from waitress.server import create_server

    from doclane.functions.http import health_blueprint

    app = Flask(f"doclane.{name}.worker")
    app.register_blueprint(health_blueprint(lambda: {"function": name, "role": "worker"}))
    app.register_blueprint(metrics.bp)  # this process's own: a Deployment's replicas are scraped one by one
    return create_server(app, host=host, port=port, threads=2, ident="doclane-worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m doclane.local.worker",
                                     description="One function process of `doclane up` (started by its supervisor).")
    parser.add_argument("function")
    parser.add_argument("owner", help="lease owner: the supervisor hands back its leases when it dies")
    parser.add_argument("--resident", action="store_true", help="kept for the minimum: no exit when idle")
    args = parser.parse_args(argv)
    logs.configure(logging.INFO, text_format=_log_format(args.function))  # text or json (DOCLANE_LOG_FORMAT)
    stop, drain = threading.Event(), threading.Event()
    _stop_on_signals(stop)
    signal.signal(signal.SIGUSR1, lambda *_: drain.set())  # the supervisor scales down: leave when idle
    serve(args.function, args.owner, stop=stop, drain=drain, resident=args.resident)
    return 0


if __name__ == "__main__":
    sys.exit(main())
