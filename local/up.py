"""`doclane up`: the whole pipeline on one machine with embedded defaults.

  inbox folder --(watcher)--> bus --> ingest --> classify --> extract --> index --> notify
                                       each function a process started on demand, stopped when idle
  one HTTP port: search, upload, documents, stats, schemas, webhooks, health
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from waitress.server import create_server

from doclane.functions.context import Context
from doclane.functions.errors import ConfigError, Retryable
from doclane.functions.observability import metrics
from doclane.functions.runtime import all_functions, triggers
from doclane.functions.settings import Settings
from doclane.functions.subscriptions import from_url as subscription
from doclane.local.console import Progress
from doclane.local.gateway import create_app
from doclane.local.supervisor import Supervisor
from doclane.local.watcher import FolderWatcher

log = logging.getLogger("doclane.up")


class Runtime:
    def __init__(self, settings: Settings, *, in_process: bool = False, webhooks: tuple[str, ...] = ()):
        self.settings = settings
        self.in_process = in_process
        self.stop_event = threading.Event()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.inbox.mkdir(parents=True, exist_ok=True)
        self._lock = _exclusive(settings.data_dir / "up.lock")
        # Function processes (started later, they inherit the variable) write
        # their metrics here; the gateway's /metrics adds them to its own.
        self.metrics_dir = metrics.prepare_multiprocess(settings.data_dir / "metrics")
        _export(settings)  # function processes read the same settings
        self.context = Context(settings)
        self.bus = self.context.bus
        self.bus.declare(triggers(settings))
        # No worker of ours is alive yet: whatever was in flight when the last
        # run stopped is delivered again (its outputs' ids make repeats no-ops).
        released = self.bus.release_all() if hasattr(self.bus, "release_all") else 0
        if released:
            log.info("%d deliveries were in flight when doclane last stopped; they run again", released)
        self.webhook_secret = self._register_webhooks(webhooks)
        # With S3/MinIO the bucket notifies by itself (webhook or AMQP): no folder to watch.
        self.watcher = None if settings.s3 else FolderWatcher(settings.inbox, self.bus,
                                                               settings.data_dir / "watcher.sqlite")
        self.minio = _minio_consumer(settings, self.bus)  # MinIO's AMQP target, when configured
        log_dir = settings.data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        self.supervisor = Supervisor(
            self.bus, all_functions(), in_process=in_process, log_dir=log_dir, settings=settings,
            # threads share this process's adapters (each is thread-safe), so the
            # model loads once and only when a function first needs it
            context_factory=(lambda: self.context) if in_process else None,
        )
        self.app = create_app(self.context)
        self.app.config["doclane.metrics"].update(backlog=True, multiprocess_dir=self.metrics_dir)
        # 16 threads: each open dashboard page holds one for its event stream (at most 30 s at a time).
        self.server = create_server(self.app, host=settings.host, port=settings.port, threads=16, ident="doclane")
        self.first_key = _first_admin_key(self.context)
        self.ws = self._websocket()

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.server.effective_port}"

    def _register_webhooks(self, urls: tuple[str, ...]) -> str | None:
        urls = tuple(urls) + tuple(u.strip() for u in self.settings.webhook_urls.split(",") if u.strip())
        if not urls:
            return None
        secret = self.settings.webhook_secret or _persistent_secret(self.settings.data_dir / "webhook-secret")
        for url in urls:
            try:
                # mailto: subscribes e-mail (DOCLANE_SMTP_URL), anything else is a webhook
                self.context.metadata.add_webhook(subscription(url, secret, allow=self.settings.webhook_allow))
            except ValueError as exc:
                raise ConfigError(f"--webhook {url}: {exc}") from None
        return secret

    def _websocket(self):
        """The WebSocket server beside waitress (functions/dashboard/ws.py says why),
        on DOCLANE_WS_PORT, else on the HTTP port + 1, else (that one is taken:
        with an ephemeral HTTP port, by anything on the machine) on any free
        port: the pages learn it from `doclane.ws_url`. Only a DOCLANE_WS_PORT
        that is taken turns the WebSocket off (pages fall back to Server-Sent Events)."""
        from doclane.functions.dashboard.ws import websocket_server

        port = self.settings.ws_port or int(self.server.effective_port) + 1
        try:
            server = websocket_server(self.app, self.context, self.settings.host, port)
        except OSError as exc:
            if self.settings.ws_port:
                log.warning("no WebSocket on DOCLANE_WS_PORT %d (%s); pages use Server-Sent Events", port, exc)
                return None
            server = websocket_server(self.app, self.context, self.settings.host, 0)
            log.info("WebSocket on port %d: the HTTP port + 1 (%d) is taken (%s)",
                     server.socket.getsockname()[1], port, exc)
        self.app.config["doclane.ws_url"] = f"ws://{self.settings.host}:{server.socket.getsockname()[1]}"
        return server

    def start(self) -> None:
        threading.Thread(target=self.server.run, name="http", daemon=True).start()
        if self.ws is not None:
            threading.Thread(target=self.ws.serve_forever, name="websocket", daemon=True).start()
        if self.watcher is not None:
            threading.Thread(target=self._watch, name="watcher", daemon=True).start()
        if self.minio is not None:
            threading.Thread(target=self.minio.run, args=(self.stop_event,), name="minio-amqp", daemon=True).start()

    def _watch(self) -> None:
        self.watcher.run(self.stop_event)

    def run(self, console: bool = True) -> None:
        self.start()
        progress = Progress()
        live = None
        if console and sys.stdout.isatty():
            from rich.live import Live

            live = Live(refresh_per_second=4, transient=False)
            live.start()
        last_line, last_print = "", 0.0
        try:
            while not self.stop_event.is_set():
                self.supervisor.tick()
                if console:
                    try:
                        snap = progress.snapshot(self.context.metadata, self.bus, self.supervisor)
                    except Retryable:  # the metadata store or the bus is restarting: skip this refresh
                        self.stop_event.wait(0.2)
                        continue
                    if live is not None:
                        live.update(progress.render(snap))
                    else:
                        line = progress.line(snap)
                        if line != last_line and time.monotonic() - last_print > 2:
                            print(line, flush=True)
                            last_line, last_print = line, time.monotonic()
                self.stop_event.wait(0.2)
        finally:
            if live is not None:
                live.stop()
            self.shutdown()

    def shutdown(self) -> None:
        self.stop_event.set()
        self.supervisor.stop()
        self.server.close()
        metrics.end_multiprocess(self.metrics_dir)
        if self.ws is not None:
            self.ws.shutdown()
        if self.watcher is not None:
            self.watcher.close()
        self.context.close()


def _first_admin_key(context) -> str | None:
    """On the first start (no key stored yet) make an admin key, to be shown once."""
    from doclane.functions.adapters.sql_keys import ApiKeys

    keys = ApiKeys(context.metadata)
    if keys.count():
        return None
    return keys.create("first admin", "admin")[1]


def _minio_consumer(settings: Settings, bus):
    """With DOCLANE_AMQP_URL and DOCLANE_MINIO_AMQP_EXCHANGE: consume MinIO's
    notifications; declared now, so a mismatch with MinIO stops start-up."""
    from doclane.functions.adapters.minio_amqp import MinioAmqpConsumer

    consumer = MinioAmqpConsumer.from_settings(settings, bus)
    if consumer is not None:
        consumer.declare()
    return consumer


def _exclusive(path: Path):
    fh = open(path, "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"another doclane up is already running with data dir {path.parent}; "
                          "stop it or pass a different --data-dir") from None
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def _export(settings: Settings) -> None:
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        var = "OLLAMA_HOST" if name == "ollama_host" else f"DOCLANE_{name.upper()}"
        os.environ[var] = str(value.resolve() if isinstance(value, Path) else value)


def _persistent_secret(path: Path) -> str:
    from doclane.functions.webhooks import new_secret

    if path.exists():
        return path.read_text().strip()
    secret = new_secret()
    path.write_text(secret)
    path.chmod(0o600)
    return secret


def install_signal_handlers(runtime: Runtime) -> None:
    def stop(*_):
        runtime.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
