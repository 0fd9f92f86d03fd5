"""functions-framework entry points: one HTTP function per stage.

  functions-framework --source "$(python -c 'import doclane.functions.main as m; print(m.__file__)')" --target classify

or, with the health routes the platforms probe (`/healthz`, `/_/health`):

  python -m doclane.functions.main classify --port 8080
"""

from __future__ import annotations

import argparse
from functools import lru_cache

import functions_framework
from flask import Request

from doclane.functions.context import Context
from doclane.functions.http import handle_cloudevent, health_blueprint
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


def create_app(target: str):
    if target not in STAGES:
        raise SystemExit(f"unknown function {target!r}; choose one of {', '.join(STAGES)}")
    app = functions_framework.create_app(target=target, source=__file__)
    app.register_blueprint(health_blueprint(lambda: {"function": target}))
    app.config["doclane.ctx"] = _context()
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve one doclane function over HTTP (CloudEvents).")
    parser.add_argument("target", choices=STAGES)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    from waitress import serve

    serve(create_app(args.target), host=args.host, port=args.port, threads=4)


if __name__ == "__main__":
    main()
