"""A function process started while the bus or the metadata store is
restarting waits for it with back-off instead of crashing (chaos scenario
(b) found the crash loop: tests/chaos/test_postgres_restart.py)."""

import threading

from doclane.functions.context import Context
from doclane.functions.errors import Retryable
from doclane.functions.runtime import triggers
from doclane.local.worker import serve


class _Restarting:
    """A context whose bus cannot be opened for its first `failures` tries,
    as when RabbitBus's de-duplication store (PostgreSQL) is restarting."""

    def __init__(self, context: Context, failures: int):
        self._context, self.failures = context, failures

    @property
    def bus(self):
        if self.failures:
            self.failures -= 1
            raise Retryable("PostgreSQL metadata store at 127.0.0.1:5432/doclane is unreachable")
        return self._context.bus

    def __getattr__(self, name):
        return getattr(self._context, name)


def test_a_worker_waits_for_its_bus_then_serves(settings):
    context = Context(settings)
    context.bus.declare(triggers(settings))
    context.bus.enqueue_raw("ingest", b"not an event")
    starting = _Restarting(context, failures=2)
    try:
        settled = serve("ingest", "ingest-test", settings, context=starting)  # idle_seconds=2: then it exits
        assert starting.failures == 0 and settled == 1
        assert len(context.bus.dead_letters("ingest")) == 1
    finally:
        context.close()


def test_a_worker_stopped_while_waiting_exits_cleanly(settings):
    context = Context(settings)
    stop = threading.Event()
    stop.set()
    try:
        assert serve("ingest", "ingest-test", settings, stop=stop, context=_Restarting(context, failures=10)) == 0
    finally:
        context.close()
