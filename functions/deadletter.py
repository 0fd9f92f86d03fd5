"""POST /deadletter: the dead-letter sink of the Knative broker's Triggers,
served by the notify function (functions/main.py).

When a Trigger gives up on an event (its retries spent, or a 400 from the
function), the broker sends the event here with `knativeerrorcode`,
`knativeerrordest` and `knativeerrordata` extensions. As with the local bus
(functions/binding.py), a document event dead-lettered by a function that
fails documents marks the document failed and emits document.failed with
the reason, sent to the broker (K_SINK), so no document stays stuck.
"""

from __future__ import annotations

import base64
import logging
from urllib.parse import urlsplit

from cloudevents.http import from_http
from flask import Blueprint, Response, request

from doclane.events.envelope import check_attributes
from doclane.events.registry import REGISTRY
from doclane.functions.common import fail
from doclane.functions.http import _send_rest, ctx, problem
from doclane.functions.runtime import STAGES, load

log = logging.getLogger("doclane.deadletter")
bp = Blueprint("deadletter", __name__)


def _stage(destination: str | None) -> str | None:
    """The function a dead letter was meant for: the first label of the
    subscriber's host (http://classify.doclane.svc.cluster.local -> classify)."""
    host = urlsplit(destination or "").hostname or ""
    name = host.split(".")[0]
    return name if name in STAGES else None


def _reason(event) -> str:
    code, data = event.get("knativeerrorcode"), event.get("knativeerrordata") or ""
    try:
        data = base64.b64decode(data).decode("utf-8", "replace")[:500]
    except ValueError:
        data = str(data)[:500]
    return f"dead-lettered by the broker (last answer HTTP {code or '?'}): {data}".rstrip(": ")


@bp.post("/deadletter")
def dead_letter():
    try:
        event = from_http(dict(request.headers), request.get_data())
        check_attributes(event.get_attributes())
    except Exception as exc:  # the SDK raises several types for malformed input
        return problem(400, "Bad CloudEvent", f"{type(exc).__name__}: {exc}")
    stage = _stage(event.get("knativeerrordest"))
    reason = _reason(event)
    log.error("dead letter %s (%s) for %s: %s", event["id"], event["type"], stage or "?", reason)
    subject = event.get("subject")
    if (stage is None or not load(stage).fails_document or not subject or event["type"] not in REGISTRY
            or event["type"] == REGISTRY.type_of("document.failed")):
        return Response(status=202)  # logged; nothing to fail
    failed = fail(event, ctx(), stage=stage, reason=reason, error_type="dead_lettered", document_id=subject)
    ctx().metadata.record_event(failed, stage=stage)
    _send_rest([failed])
    return Response(status=202)
