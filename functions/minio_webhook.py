"""MinIO's webhook target, served by the ingest function (and the gateway):

  POST /notifications/minio   Authorization: Bearer <DOCLANE_MINIO_WEBHOOK_TOKEN>

Configure MinIO with MINIO_NOTIFY_WEBHOOK_ENDPOINT_<ID>=http://<doclane>/notifications/minio
and MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_<ID>=<the same token> (infra/minio/README.md).

Answers: 200 once every record is durably on the bus (MinIO retries anything
else, so nothing is lost); 401 without the right token; 400 for a body that
is not a notification (retrying will not help); 503 when no token is
configured or the bus is unreachable.
"""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request

from doclane.functions import minio, notifications
from doclane.functions.http import ctx, problem

log = logging.getLogger("doclane.minio_webhook")
PATH = "/notifications/minio"
bp = Blueprint("minio_webhook", __name__)


@bp.post(PATH)
def minio_webhook():
    context = ctx()
    expected = context.settings.minio_webhook_token
    if not expected:
        # Refusing is safer than accepting anything; 503 keeps MinIO retrying
        # until the operator sets the token, so no notification is lost.
        return problem(503, "Webhook not configured",
                       "set DOCLANE_MINIO_WEBHOOK_TOKEN to the token MinIO sends "
                       "(MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_<ID>) and restart doclane")
    if not minio.token_matches(request.headers.get("Authorization"), expected):
        resp = problem(401, "Unauthorized", "send Authorization: Bearer <DOCLANE_MINIO_WEBHOOK_TOKEN>")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="doclane"'
        return resp
    payload = request.get_json(force=True, silent=True)  # whatever the Content-Type says
    try:
        events = minio.notification_events(payload, source="minio-webhook")
    except notifications.NotNotification as exc:
        return problem(400, "Not a bucket notification", str(exc))
    published = 0
    for event in events:
        try:
            published += bool(context.bus.publish(event))
        except Exception as exc:  # the bus is down: MinIO keeps the event and retries
            log.warning("could not publish %s: %s", event["id"], exc)
            return problem(503, "Bus unavailable", f"the notification was not stored: {exc}")
    return jsonify({"records": len(events), "published": published,
                    "duplicates": len(events) - published}), 200
