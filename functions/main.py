"""functions-framework entry points: one HTTP function per stage.

  functions-framework --source "$(python -c 'import doclane.functions.main as m; print(m.__file__)')" --target classify

or, with the health routes the platforms probe (`/healthz`, `/_/health`):

  python -m doclane.functions.main classify --port 8080

`api` serves the HTTP functions (search, documents/status, upload, webhooks,
schemas) as one deployable service, without the stage functions' extras:

  python -m doclane.functions.main api --port 8080
"""

from __future__ import annotations

import argparse
from functools import lru_cache

import functions_framework
from flask import Request

from doclane.functions.context import Context
from doclane.functions.http import handle_cloudevent, health_blueprint
from doclane.functions.observability import logs, metrics
from doclane.functions.runtime import STAGES, load
from doclane.functions.settings import load as load_settings


@lru_cache(maxsize=1)
def _context() -> Context:
    return Context(load_settings())


def _serve(name: str, request: Request):
    return handle_cloudevent(load(name), _context())


@functions_framework.http
def ingest(request: Request):
    return _serve("ingest", request)


@functions_framework.http
def classify(request: Request):
    return _serve("classify", request)


@functions_framework.http
def extract(request: Request):
    return _serve("extract", request)


@functions_framework.http
def index(request: Request):
    return _serve("index", request)


@functions_framework.http
def notify(request: Request):
    return _serve("notify", request)


TARGETS = (*STAGES, "api")


def create_app(target: str):
    if target == "api":
        from doclane.local.gateway import create_app as api_app  # health routes included

        return api_app(_context())
    if target not in STAGES:
        raise SystemExit(f"unknown function {target!r}; choose one of {', '.join(TARGETS)}")
    app = functions_framework.create_app(target=target, source=__file__)
    app.register_blueprint(health_blueprint(lambda: {"function": target}))
    app.register_blueprint(metrics.bp)  # GET /metrics
    if target == "notify":
        # The broker's dead-letter sink (infra/knative): the broker sends no
        # credentials, and the stage functions sit inside the cluster.
        from doclane.functions.deadletter import bp as dead_letters

        app.register_blueprint(dead_letters)
    if target == "ingest":  # ingest also takes MinIO's webhook target directly
        from doclane.functions.minio_webhook import bp as minio_webhook

        app.register_blueprint(minio_webhook)
    app.config["doclane.ctx"] = _context()
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve one doclane function over HTTP (CloudEvents).")
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    import logging
    import signal
    import sys

    from waitress import serve

    logs.configure(logging.INFO)  # DOCLANE_LOG_FORMAT: json in the images, text by default
    # As PID 1 in a container a signal without a handler is ignored: stop
    # promptly when the platform scales the function down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(create_app(args.target), host=args.host, port=args.port, threads=4)


if __name__ == "__main__":
    main()
