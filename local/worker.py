"""A function process: serve one trigger of the embedded bus until idle,
then exit (scale to zero). Started by the supervisor of `doclane up`."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from doclane.functions.binding import consume
from doclane.functions.context import Context
from doclane.functions.runtime import load
from doclane.functions.settings import load as load_settings


def serve(name: str, owner: str, settings=None, stop: threading.Event | None = None, context=None) -> int:
    settings = settings or load_settings()
    fn = load(name)
    stop = stop or threading.Event()
    own_context = context is None  # a context handed in is shared: its owner closes it
    context = context or Context(settings)
    try:
        return consume(context.bus, fn, context, stop=stop, idle_seconds=settings.idle_seconds,
                       max_attempts=settings.max_attempts, owner=owner)
    finally:
        if own_context:
            context.close()


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    name, owner = argv[0], argv[1]
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s")
    stop = threading.Event()
    # SIGTERM: finish the delivery in hand, then exit.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serve(name, owner, stop=stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
