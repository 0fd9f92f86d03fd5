"""One HTTP port for everything `doclane up` serves: the HTTP functions
(search, upload, documents, stats, schemas, webhooks), health, and each stage
function's CloudEvents endpoint at POST /functions/{name}."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from doclane.events.http import bp as schemas_bp
from doclane.functions import admin, deadletter, minio_webhook, search, status, upload
from doclane.functions import auth, dashboard, openapi
from doclane.functions.adapters.http_bus import BrokerRefused, BrokerUnavailable, PublishOnly
from doclane.functions.http import handle_cloudevent, health_blueprint, problem
from doclane.functions.observability import metrics
from doclane.functions.runtime import STAGES, load

log = logging.getLogger("doclane.gateway")


def create_app(context) -> Flask:
    app = Flask("doclane", static_folder=None)  # the dashboard serves its own
    app.config["doclane.ctx"] = context
    app.config["MAX_CONTENT_LENGTH"] = int(context.settings.max_file_mb * 1024 * 1024 * 4)
    app.json.sort_keys = False
    for bp in (health_blueprint(), search.bp, status.bp, upload.bp, admin.bp, schemas_bp, minio_webhook.bp,
               deadletter.bp, dashboard.bp, openapi.bp, metrics.bp):
        app.register_blueprint(bp)
    # /metrics here also shows documents by status and, on a shared bus (RabbitMQ,
    # Redis), each trigger's backlog (`doclane up` turns it on for its embedded bus;
    # the publish-only HTTP bus has none to show: Knative's broker holds the queues).
    app.config["doclane.metrics"] = {"documents": True,
                                     "backlog": context.settings.bus_kind in ("rabbitmq", "redis")}
    # Every route but health, login and static files needs a key, a JWT or the session cookie.
    auth.install(app, context, secret=_session_secret(context.settings))

    @app.post("/functions/<name>")
    def function_endpoint(name: str):
        if name not in STAGES:
            return problem(404, "No such function", f"functions: {', '.join(STAGES)}")
        return handle_cloudevent(load(name), context)

    @app.get("/api")
    def api_index():
        return jsonify({"service": "doclane", "endpoints": sorted(
            {str(r.rule) for r in app.url_map.iter_rules() if r.endpoint != "static"})})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return problem(exc.code or 500, exc.name, exc.description or exc.name)

    # The broker ingress of DOCLANE_BUS=http (functions/adapters/http_bus.py): an event
    # the API meant to publish was not taken, so the request did not do its work.
    @app.errorhandler(BrokerUnavailable)
    def broker_unavailable(exc: BrokerUnavailable):
        resp = problem(503, "Broker unavailable", str(exc))
        resp.headers["Retry-After"] = "5"
        return resp

    @app.errorhandler(BrokerRefused)
    def broker_refused(exc: BrokerRefused):
        return problem(502, "Broker refused the event", str(exc))

    @app.errorhandler(PublishOnly)
    def publish_only(exc: PublishOnly):
        return problem(501, "Not supported by this bus", str(exc))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return problem(500, "Internal error", f"{type(exc).__name__}: {exc}")

    return app


def _session_secret(settings) -> str:
    """DOCLANE_SESSION_SECRET, else one generated once into the data dir, so
    dashboard sessions survive a restart."""
    from doclane.local.up import _persistent_secret

    if settings.session_secret:
        return settings.session_secret
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return _persistent_secret(settings.data_dir / "session-secret")
