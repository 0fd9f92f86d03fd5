"""The HTTP shim: CloudEvents over HTTP in (binary or structured mode), the
next event out in binary mode, with Knative's reply semantics:

  200 + event   handled; the body is the next event (the broker publishes it)
  202           handled; nothing follows
  400           a bad event: never retried (the broker dead-letters it)
  413           an event over DOCLANE_MAX_EVENT_KB (refused like a bad one)
  503           a retryable failure (the broker retries with back-off)

A function may emit several events; the first is the reply and the rest go
to K_SINK (set by a SinkBinding or the platform) when there is one.
With DOCLANE_REPLY_VIA_BUS (OpenFaaS, whose connectors drop replies) every
output is published to the bus instead and the answer is 202.
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Callable

import httpx
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import from_http
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from doclane.events import codec
from doclane.events.envelope import InvalidEvent, check_attributes
from doclane.functions import limits
from doclane.functions.errors import Permanent, Retryable
from doclane.functions.observability import metrics
from doclane.functions.runtime import Function, invoke
from doclane.functions.sources import normalise

log = logging.getLogger("doclane.http")


def problem(status: int, title: str, detail: str) -> Response:
    """RFC 9457 problem details: every error answer has the same shape."""
    resp = jsonify({"type": "about:blank", "title": title, "status": status, "detail": detail})
    resp.status_code = status
    resp.content_type = "application/problem+json"
    return resp


def ctx():
    return current_app.config["doclane.ctx"]


def handle_cloudevent(fn: Function, context) -> Response:
    limit = limits.max_event_bytes(context.settings)
    body = _body(limit)
    if body is None:
        return problem(413, "Event too large", f"the event is larger than {limit} bytes (DOCLANE_MAX_EVENT_KB)")
    try:
        event = from_http(dict(request.headers), body)
        check_attributes(event.get_attributes())  # before anything reads them (normalise, invoke)
    except Exception as exc:  # the SDK raises several types for malformed input
        return problem(400, "Bad CloudEvent", _why_not(exc, body))
    try:
        outputs = invoke(fn, normalise(event), context)  # foreign sources (e.g. RabbitmqSource) made doclane events
    except (InvalidEvent, Permanent) as exc:
        return problem(400, "Event refused", str(exc))
    except Retryable as exc:
        return problem(503, "Try again", str(exc))
    except Exception as exc:
        log.exception("%s failed", fn.name)
        return problem(500, "Function failed", f"{type(exc).__name__}: {exc}")
    if outputs and context.settings.reply_via_bus:
        for out in outputs:
            context.bus.publish(out)
        return Response(status=202)
    if not outputs:
        return Response(status=202)
    _send_rest(outputs[1:])
    headers, body = to_binary(outputs[0])
    headers = dict(headers)
    headers.setdefault("content-type", "application/json")
    return Response(body, status=200, headers=headers)


def _why_not(exc: Exception, body: bytes) -> str:
    """The SDK's reason, made plain: it reports a missing ce-id as a missing
    specversion, and a body that is not JSON as a codec error."""
    sent = {k.lower() for k in request.headers.keys() if k.lower().startswith("ce-")}
    missing = [h for h in ("ce-specversion", "ce-id", "ce-source", "ce-type") if h not in sent]
    if sent and missing:
        return f"a binary-mode CloudEvent needs the header(s) {', '.join(missing)}"
    if not sent:  # structured mode: the bus's parser says what is wrong in plain words
        try:
            codec.loads(body)
        except InvalidEvent as why:
            return str(why)
    return f"{type(exc).__name__}: {exc}"


def _body(limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes: a chunked body
    is read no further than that."""
    if request.content_length is not None:
        return None if request.content_length > limit else request.get_data()
    data = request.stream.read(limit + 1)
    return None if len(data) > limit else data


def _send_rest(events) -> None:
    if not events:
        return
    sink = os.environ.get("K_SINK")
    if not sink:
        raise Retryable("the function emitted several events but no K_SINK is set to send the others to")
    with httpx.Client(timeout=10) as client:
        for event in events:
            headers, body = to_structured(event)
            client.post(sink, content=body, headers=headers).raise_for_status()


def health_blueprint(ready: Callable[[], dict] | None = None) -> Blueprint:
    bp = Blueprint("health", __name__)

    def health():
        return jsonify({"status": "ok", **(ready() if ready else {})})

    bp.add_url_rule("/healthz", "healthz", health)
    bp.add_url_rule("/_/health", "of_health", health)  # what faas-netes probes
    return bp


def function_app(fn: Function, context) -> Flask:
    """A stage function as its own HTTP service (Knative, OpenFaaS, tests)."""
    app = Flask(f"doclane.{fn.name}")
    app.config["doclane.ctx"] = context
    app.register_blueprint(health_blueprint(lambda: {"function": fn.name}))
    app.register_blueprint(metrics.bp)  # GET /metrics, open like the probes: the stage sits inside the cluster
    app.add_url_rule("/", "cloudevent", _guarded(lambda: handle_cloudevent(fn, context), context), methods=["POST"])
    if fn.name == "ingest":  # ingest also takes MinIO's webhook target directly
        from doclane.functions.minio_webhook import bp as minio_webhook

        app.register_blueprint(minio_webhook)
    return app


def _guarded(view: Callable[[], Response], context) -> Callable[[], Response]:
    """A stage's own CloudEvents endpoint has no user auth: only the broker
    calls it, inside the cluster, and a broker sends no API key. With
    DOCLANE_FUNCTION_TOKEN set, a request must carry `Authorization: Bearer
    <token>` (401 otherwise, which a broker retries, so a misconfiguration
    loses nothing): for platforms whose caller can add a header (OpenFaaS
    connectors, a proxy). In Knative use the broker's OIDC identity or a
    NetworkPolicy instead (infra/gateway/README.md)."""
    token = getattr(context.settings, "function_token", None)
    if not token:
        return view

    def check() -> Response:
        sent = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(sent, f"Bearer {token}".encode()):
            resp = problem(401, "Unauthorized", "send Authorization: Bearer <DOCLANE_FUNCTION_TOKEN>")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="doclane-function"'
            return resp
        return view()

    return check
